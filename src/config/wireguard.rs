//! FL_WG_*: the WireGuard overlay (issue #20). Validated like every variable: each peer entry
//! is checked on its own and named by its position, every problem reported at once.

use super::reader::Reader;
use crate::wg::{Key, Peer};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The overlay as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireGuard {
    /// FL_WG_ADDRESS: this VM's tunnel address and prefix length.
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// FL_WG_PRIVATE_KEY; `None`: the key on the state disk (made at first boot).
    pub private_key: Option<Key>,
    pub listen_port: u16,
    pub peers: Vec<Peer>,
}

const OTHERS: [&str; 3] = ["FL_WG_PRIVATE_KEY", "FL_WG_LISTEN_PORT", "FL_WG_PEERS"];

/// The overlay, `Ok(None)` when FL_WG_ADDRESS is unset; `Err(())` when a problem was recorded.
pub fn wireguard(r: &mut Reader) -> Result<Option<WireGuard>, ()> {
    let mut ok = true;
    let address = r.value("FL_WG_ADDRESS", ipv4_cidr, |(a, p)| json!(format!("{a}/{p}")));
    let address_invalid = address.is_err();
    let address = address.map_err(|()| ok = false).ok().flatten();
    let private_key = r.value("FL_WG_PRIVATE_KEY", Key::from_base64, |_| json!(null)).map_err(|()| ok = false).ok().flatten();
    let port = r.int("FL_WG_LISTEN_PORT").map_err(|()| ok = false).ok().flatten();
    let peers = r.value("FL_WG_PEERS", peers, |p| json!(format!("{} peer(s)", p.len()))).map_err(|()| ok = false).ok().flatten();
    let Some((address, prefix)) = address else {
        if address_invalid {
            return Err(()); // FL_WG_ADDRESS's own problem says it all
        }
        for name in OTHERS {
            if let Some((text, _)) = r.lookup(name) {
                // The key is a secret: named, never shown.
                let shown = (name != "FL_WG_PRIVATE_KEY").then_some(text);
                r.problem(name, shown.as_deref(), "is set but FL_WG_ADDRESS is not: the WireGuard overlay needs this VM's tunnel address");
                ok = false;
            }
        }
        return if ok { Ok(None) } else { Err(()) };
    };
    let peers = peers.unwrap_or_default();
    if peers.is_empty() {
        r.warn("FL_WG_ADDRESS is set but FL_WG_PEERS is empty: wg0 comes up with no peer, so nothing crosses it");
    }
    if !ok {
        return Err(());
    }
    let listen_port = port.and_then(|p| u16::try_from(p).ok()).unwrap_or(51820);
    Ok(Some(WireGuard { address, prefix, private_key, listen_port, peers }))
}

/// `10.99.0.1/24`: an IPv4 address (not the network's own with a prefix under 31) and 1-32.
pub fn ipv4_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let rule = "must be an IPv4 address with its prefix length, 1-32 (10.99.0.1/24)";
    let (a, p) = s.trim().split_once('/').ok_or_else(|| format!("has no /PREFIX: {rule}"))?;
    let addr: Ipv4Addr = a.parse().map_err(|_| format!("{a:?} is not an IPv4 address: {rule}"))?;
    let prefix: u8 = p.parse().ok().filter(|p| (1..=32).contains(p)).ok_or_else(|| format!("/{p} is not a prefix length: {rule}"))?;
    let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    if prefix < 31 && u32::from(addr) & host_bits == 0 {
        return Err(format!("{addr} is the network's own address, not a host's: {rule}"));
    }
    Ok((addr, prefix))
}

/// A network for `allowed=`: `10.99.0.0/24`, `fd00::/64`, or a single address.
fn network(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        None => max,
        Some(p) => p.parse().ok().filter(|p| *p <= max).ok_or_else(|| format!("/{p} is not a prefix length (0-{max})"))?,
    };
    Ok((ip, prefix))
}

/// FL_WG_PEERS: entries by line or `;`; all problems, each named by its entry number.
pub fn peers(s: &str) -> Result<Vec<Peer>, String> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let entries = s.split(['\n', ';']).map(str::trim).filter(|e| !e.is_empty() && !e.starts_with('#'));
    for (i, e) in entries.enumerate() {
        match peer(e) {
            Ok(p) if out.iter().any(|q: &Peer| q.public_key == p.public_key) => {
                problems.push(format!("peer {}: the same public key as an earlier peer", i + 1))
            }
            Ok(p) => out.push(p),
            Err(why) => problems.push(format!("peer {}: {why}", i + 1)),
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems.join("; ")) }
}

fn peer(e: &str) -> Result<Peer, String> {
    let mut words = e.split_whitespace();
    let key = words.next().unwrap_or_default();
    let public_key = Key::from_base64(key).map_err(|why| format!("the public key {why}"))?;
    let (mut allowed, mut endpoint, mut keepalive) = (None, None, None);
    for w in words {
        let (k, v) = w.split_once('=').ok_or_else(|| format!("{w:?} is not allowed=, endpoint= or keepalive="))?;
        match k {
            "allowed" => {
                let nets = v.split(',').filter(|n| !n.is_empty()).map(network).collect::<Result<Vec<_>, _>>().map_err(|why| format!("allowed: {why}"))?;
                allowed = Some(nets);
            }
            "endpoint" => {
                endpoint = Some(v.parse::<SocketAddr>().map_err(|_| format!("endpoint {v:?} is not IP:PORT (IPv6 in brackets; names are not resolved)"))?);
            }
            "keepalive" => {
                keepalive = Some(v.parse::<u16>().ok().filter(|k| *k >= 1).ok_or_else(|| format!("keepalive {v:?} is not 1-65535 seconds"))?);
            }
            other => return Err(format!("unknown field {other:?} (allowed=, endpoint=, keepalive=)")),
        }
    }
    let allowed_ips = allowed.filter(|a| !a.is_empty()).ok_or("allowed= is missing: the addresses routed to this peer")?;
    Ok(Peer { public_key, allowed_ips, endpoint, keepalive })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const K2: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    #[test]
    fn addresses_need_a_host_and_a_prefix() {
        assert_eq!(ipv4_cidr("10.99.0.1/24").unwrap(), (Ipv4Addr::new(10, 99, 0, 1), 24));
        assert_eq!(ipv4_cidr("10.99.0.7/32").unwrap().1, 32);
        assert!(ipv4_cidr("10.99.0.1").unwrap_err().contains("no /PREFIX"));
        assert!(ipv4_cidr("10.99.0.0/24").unwrap_err().contains("network's own address"));
        assert!(ipv4_cidr("10.99.0.1/33").unwrap_err().contains("/33"));
        assert!(ipv4_cidr("fd00::1/64").unwrap_err().contains("not an IPv4"));
    }

    #[test]
    fn peers_parse_and_every_bad_entry_is_named() {
        let p = peers(&format!("{K1} allowed=10.99.0.2/32,fd00:99::2 keepalive=25\n{K2} allowed=10.99.0.0/24 endpoint=203.0.113.10:51820")).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].allowed_ips, [("10.99.0.2".parse().unwrap(), 32), ("fd00:99::2".parse().unwrap(), 128)]);
        assert_eq!((p[0].keepalive, p[0].endpoint), (Some(25), None));
        assert_eq!(p[1].endpoint, Some("203.0.113.10:51820".parse().unwrap()));
        assert_eq!(peers(&format!("{K1} allowed=10.99.0.2/32; {K2} allowed=10.99.0.3/32")).unwrap().len(), 2, "; separates too");
        let e = peers(&format!("nope! allowed=10.0.0.1\n{K1}\n{K2} allowed=10.99.0.3/32 endpoint=vpn.example.org:51820\n{K2} allowed=1.2.3.4/40 color=red")).unwrap_err();
        assert!(e.contains("peer 1: the public key is not base64"), "{e}");
        assert!(e.contains("peer 2: allowed= is missing"), "{e}");
        assert!(e.contains("peer 3: endpoint \"vpn.example.org:51820\" is not IP:PORT"), "{e}");
        assert!(e.contains("peer 4: allowed: /40 is not a prefix length"), "{e}");
        let dup = peers(&format!("{K1} allowed=10.99.0.2/32\n{K1} allowed=10.99.0.3/32")).unwrap_err();
        assert!(dup.contains("peer 2: the same public key"), "{dup}");
    }
}
