//! Who is on the other end of a loopback connection: the uid owning the client's socket, read
//! from `/proc/net/tcp` and `/proc/net/tcp6` (issue #14: Flower's container shares the VM's
//! network, so "from loopback" alone cannot tell the VM's own processes from the app code of a
//! FAB running as uid 49999).
//!
//! Each line of those files is one socket: `sl local rem st queues timer retr uid …`. The
//! client's socket is the one whose local address is our peer and whose remote address is our
//! own end; its `uid` column is its owner in the initial user namespace (the container has no
//! user namespace of its own).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The uid owning the socket at `peer` connected to `local`, from the `proc/net` files under
/// `root` (`/` in production); `None` when no such socket is listed (it closed meanwhile).
pub fn owner_uid_at(root: &Path, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    ["proc/net/tcp", "proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(root.join(f)).ok())
        .find_map(|text| owner_uid(&text, peer, local))
}

/// The owner of the socket whose local address is `peer` and remote address `local`, in the
/// text of a `/proc/net/tcp` or `tcp6` file.
pub fn owner_uid(text: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    text.lines().skip(1).find_map(|line| {
        let mut f = line.split_whitespace();
        let (_sl, l, r) = (f.next()?, f.next()?, f.next()?);
        let uid = f.nth(4)?; // st, tx:rx queues, tr:when, retrnsmt, then uid
        (same(parse_addr(l)?, peer) && same(parse_addr(r)?, local)).then(|| uid.parse().ok()).flatten()
    })
}

/// Equal addresses, an IPv4-mapped IPv6 address being its IPv4 one.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && crate::vocab::canonical(a.ip()) == crate::vocab::canonical(b.ip())
}

/// `0100007F:1F91` (IPv4) or 32 hex digits `:PORT` (IPv6): the kernel prints each 32-bit
/// word of the address as a native-endian integer, the port as a number.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| ip.get(i * 8..i * 8 + 8).and_then(|w| u32::from_str_radix(w, 16).ok()).map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn finds_the_client_side_of_a_connection_in_proc_text() {
        // A listener on 127.0.0.1:8081, our accepted end, and the client's end (uid 49999).
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0 100 0 0 10 0\n\
   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 101 1 0 20 4 30 10 -1\n\
   2: 0100007F:D431 0100007F:1F91 01 00000000:00000000 00:00000000 00000000 49999        0 102 1 0 20 4 30 10 -1\n";
        let lo = |p| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), p);
        assert_eq!(owner_uid(text, lo(0xD431), lo(8081)), Some(49999));
        assert_eq!(owner_uid(text, lo(8081), lo(0xD431)), Some(0), "our own end is root's");
        assert_eq!(owner_uid(text, lo(1234), lo(8081)), None);
    }

    #[test]
    fn parses_ipv6_and_mapped_addresses() {
        // ::1 port 443, and ::ffff:127.0.0.1 port 80, as x86_64's /proc/net/tcp6 prints them.
        assert_eq!(parse_addr("00000000000000000000000001000000:01BB"), Some("[::1]:443".parse().unwrap()));
        let mapped = parse_addr("0000000000000000FFFF00000100007F:0050").unwrap();
        assert!(same(mapped, "127.0.0.1:80".parse().unwrap()));
        assert_eq!(parse_addr("zz:0050"), None);
    }

    /// Against the real kernel: a connection we make ourselves is ours.
    #[test]
    fn a_real_loopback_connection_is_found_with_our_uid() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server_end, peer) = l.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let uid = owner_uid_at(Path::new("/"), peer, server_end.local_addr().unwrap());
        assert_eq!(uid, Some(nix::unistd::geteuid().as_raw()));
    }
}
