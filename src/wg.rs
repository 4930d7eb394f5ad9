//! WireGuard over netlink (issue #20): the optional encrypted overlay between the SuperLink (the
//! hub) and SuperNodes at other sites. What `ip link add wg0 type wireguard`, `wg set` and
//! `wg show` do, without the tools: an `RTM_NEWLINK` of kind `wireguard` on the route socket,
//! then the `wireguard` generic-netlink family's `WG_CMD_SET_DEVICE` / `WG_CMD_GET_DEVICE`
//! (<linux/wireguard.h>; the kernel module `wireguard.ko`, in the initramfs).
//!
//! The private key is a [`Key`] whose `Debug` shows nothing; the kernel derives the public key,
//! which [`show`] reads back.

use crate::acpi::{GENL_HDRLEN, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, Reply, attrs, build_get_family, messages, parse_family_reply};
use crate::error::{Ctx, Error, Result};
use crate::net::{Netlink, add_rtattr as attr};
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

/// The generic-netlink family (`WG_GENL_NAME`) and its version.
pub const FAMILY_NAME: &str = "wireguard";
const WG_GENL_VERSION: u8 = 1;
const WG_CMD_GET_DEVICE: u8 = 0;
const WG_CMD_SET_DEVICE: u8 = 1;
// enum wgdevice_attribute
const WGDEVICE_A_IFNAME: u16 = 2;
const WGDEVICE_A_PRIVATE_KEY: u16 = 3;
const WGDEVICE_A_PUBLIC_KEY: u16 = 4;
const WGDEVICE_A_FLAGS: u16 = 5;
const WGDEVICE_A_LISTEN_PORT: u16 = 6;
const WGDEVICE_A_PEERS: u16 = 8;
const WGDEVICE_F_REPLACE_PEERS: u32 = 1;
// enum wgpeer_attribute
const WGPEER_A_PUBLIC_KEY: u16 = 1;
const WGPEER_A_FLAGS: u16 = 3;
const WGPEER_A_ENDPOINT: u16 = 4;
const WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL: u16 = 5;
const WGPEER_A_LAST_HANDSHAKE_TIME: u16 = 6;
const WGPEER_A_RX_BYTES: u16 = 7;
const WGPEER_A_TX_BYTES: u16 = 8;
const WGPEER_A_ALLOWEDIPS: u16 = 9;
const WGPEER_F_REPLACE_ALLOWEDIPS: u32 = 2;
// enum wgallowedip_attribute
const WGALLOWEDIP_A_FAMILY: u16 = 1;
const WGALLOWEDIP_A_IPADDR: u16 = 2;
const WGALLOWEDIP_A_CIDR_MASK: u16 = 3;
// <linux/netlink.h> (the header constants both netlink users share come from `acpi`)
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;

/// A Curve25519 key (private or public), 32 bytes; base64 in the context, as `wg` prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// From the 44-character base64 form (`wg genkey`, `wg pubkey`).
    pub fn from_base64(s: &str) -> std::result::Result<Key, String> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD.decode(s.trim()).map_err(|_| "is not base64".to_string())?;
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| format!("is {} bytes, a WireGuard key is 32", raw.len()))?;
        Ok(Key(bytes))
    }

    pub fn to_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// A new private key: 32 random bytes, clamped as Curve25519 wants (what `wg genkey` does).
    pub fn generate() -> Result<Key> {
        let mut k = [0u8; 32];
        getrandom(&mut k)?;
        k[0] &= 248;
        k[31] = (k[31] & 127) | 64;
        Ok(Key(k))
    }
}

/// Never the bytes: a private key must not reach a log through `{:?}`.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<32 bytes>)")
    }
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most `len` bytes into the live slice it is given.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return Err(Errno::last()).ctx("getrandom for a WireGuard key");
        }
        filled += n as usize;
    }
    Ok(())
}

/// A peer as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: Key,
    /// Addresses routed to this peer and accepted from it: (network, prefix length).
    pub allowed_ips: Vec<(IpAddr, u8)>,
    /// Where to send the first packet; a hub leaves it to the peers (they roam).
    pub endpoint: Option<SocketAddr>,
    /// Seconds between keepalives (for a peer behind NAT); `None`: off.
    pub keepalive: Option<u16>,
}

/// A device's wanted state: `WG_CMD_SET_DEVICE` replaces every peer with these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub private_key: Key,
    pub listen_port: u16,
    pub peers: Vec<Peer>,
}

/// What the kernel says about a device (`wg show`), nothing secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Shown {
    pub public_key: String,
    pub listen_port: u16,
    pub peers: Vec<ShownPeer>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShownPeer {
    pub public_key: String,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Seconds since the Unix epoch of the last handshake; `None`: never.
    pub last_handshake_unix: Option<i64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Append a nested attribute built by `f`.
fn nested(buf: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    f(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// A generic-netlink message: nlmsghdr + genlmsghdr + `body`.
fn genl_msg(family: u16, flags: u16, seq: u32, cmd: u8, body: &[u8]) -> Vec<u8> {
    let total = NLMSG_HDRLEN + GENL_HDRLEN + body.len();
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&family.to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[cmd, WG_GENL_VERSION, 0, 0]);
    m.extend_from_slice(body);
    m
}

/// `struct sockaddr_in` / `sockaddr_in6` as the kernel reads `WGPEER_A_ENDPOINT`.
fn sockaddr(a: &SocketAddr) -> Vec<u8> {
    match a {
        SocketAddr::V4(v) => {
            let mut b = (libc::AF_INET as u16).to_ne_bytes().to_vec();
            b.extend_from_slice(&v.port().to_be_bytes());
            b.extend_from_slice(&v.ip().octets());
            b.extend_from_slice(&[0; 8]);
            b
        }
        SocketAddr::V6(v) => {
            let mut b = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
            b.extend_from_slice(&v.port().to_be_bytes());
            b.extend_from_slice(&v.flowinfo().to_be_bytes());
            b.extend_from_slice(&v.ip().octets());
            b.extend_from_slice(&v.scope_id().to_ne_bytes());
            b
        }
    }
}

fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    if family == libc::AF_INET as u16 {
        let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::from((ip, port)))
    } else if family == libc::AF_INET6 as u16 {
        let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
        Some(SocketAddr::from((ip, port)))
    } else {
        None
    }
}

/// `WG_CMD_SET_DEVICE` for `dev` (every peer replaced, each peer's allowed IPs replaced).
pub fn msg_set_device(family: u16, seq: u32, dev: &Device) -> Vec<u8> {
    let mut b = Vec::new();
    let mut name = dev.name.as_bytes().to_vec();
    name.push(0);
    attr(&mut b, WGDEVICE_A_IFNAME, &name);
    attr(&mut b, WGDEVICE_A_PRIVATE_KEY, &dev.private_key.0);
    attr(&mut b, WGDEVICE_A_LISTEN_PORT, &dev.listen_port.to_ne_bytes());
    attr(&mut b, WGDEVICE_A_FLAGS, &WGDEVICE_F_REPLACE_PEERS.to_ne_bytes());
    nested(&mut b, WGDEVICE_A_PEERS, |b| {
        for (i, p) in dev.peers.iter().enumerate() {
            nested(b, i as u16, |b| {
                attr(b, WGPEER_A_PUBLIC_KEY, &p.public_key.0);
                attr(b, WGPEER_A_FLAGS, &WGPEER_F_REPLACE_ALLOWEDIPS.to_ne_bytes());
                if let Some(e) = &p.endpoint {
                    attr(b, WGPEER_A_ENDPOINT, &sockaddr(e));
                }
                attr(b, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, &p.keepalive.unwrap_or(0).to_ne_bytes());
                nested(b, WGPEER_A_ALLOWEDIPS, |b| {
                    for (j, (ip, cidr)) in p.allowed_ips.iter().enumerate() {
                        nested(b, j as u16, |b| {
                            let (fam, octets) = match ip {
                                IpAddr::V4(a) => (libc::AF_INET as u16, a.octets().to_vec()),
                                IpAddr::V6(a) => (libc::AF_INET6 as u16, a.octets().to_vec()),
                            };
                            attr(b, WGALLOWEDIP_A_FAMILY, &fam.to_ne_bytes());
                            attr(b, WGALLOWEDIP_A_IPADDR, &octets);
                            attr(b, WGALLOWEDIP_A_CIDR_MASK, &[*cidr]);
                        });
                    }
                });
            });
        }
    });
    genl_msg(family, NLM_F_ACK, seq, WG_CMD_SET_DEVICE, &b)
}

/// `WG_CMD_GET_DEVICE` (a dump) for the device named `name`.
pub fn msg_get_device(family: u16, seq: u32, name: &str) -> Vec<u8> {
    let mut b = Vec::new();
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    attr(&mut b, WGDEVICE_A_IFNAME, &n);
    genl_msg(family, NLM_F_DUMP, seq, WG_CMD_GET_DEVICE, &b)
}

/// The device in a `WG_CMD_GET_DEVICE` reply (its peers may span several messages).
pub fn parse_device(msgs: &[Vec<u8>], family: u16) -> std::result::Result<Shown, String> {
    let mut shown: Option<Shown> = None;
    for m in msgs {
        for (ty, _, payload) in messages(m) {
            if ty != family || payload.len() < GENL_HDRLEN {
                continue;
            }
            let s = shown.get_or_insert_with(|| Shown { public_key: String::new(), listen_port: 0, peers: Vec::new() });
            for (at, v) in attrs(&payload[GENL_HDRLEN..]) {
                match at {
                    WGDEVICE_A_PUBLIC_KEY if v.len() == 32 => s.public_key = Key(v.try_into().unwrap_or([0; 32])).to_base64(),
                    WGDEVICE_A_LISTEN_PORT if v.len() >= 2 => s.listen_port = u16::from_ne_bytes([v[0], v[1]]),
                    WGDEVICE_A_PEERS => {
                        for (_, peer) in attrs(v) {
                            s.peers.push(parse_peer(peer));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    shown.ok_or_else(|| "no device in the reply".to_string())
}

fn parse_peer(b: &[u8]) -> ShownPeer {
    let mut p = ShownPeer { public_key: String::new(), endpoint: None, allowed_ips: Vec::new(), last_handshake_unix: None, rx_bytes: 0, tx_bytes: 0 };
    let u64_of = |v: &[u8]| v.get(0..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes).unwrap_or(0);
    for (at, v) in attrs(b) {
        match at {
            WGPEER_A_PUBLIC_KEY if v.len() == 32 => p.public_key = Key(v.try_into().unwrap_or([0; 32])).to_base64(),
            WGPEER_A_ENDPOINT => p.endpoint = parse_sockaddr(v).map(|a| a.to_string()),
            WGPEER_A_LAST_HANDSHAKE_TIME => {
                // struct __kernel_timespec { s64 tv_sec; s64 tv_nsec; }
                let secs = u64_of(v) as i64;
                p.last_handshake_unix = (secs > 0).then_some(secs);
            }
            WGPEER_A_RX_BYTES => p.rx_bytes = u64_of(v),
            WGPEER_A_TX_BYTES => p.tx_bytes = u64_of(v),
            WGPEER_A_ALLOWEDIPS => {
                for (_, a) in attrs(v) {
                    let (mut ip, mut cidr) = (None, None);
                    for (t, x) in attrs(a) {
                        match t {
                            WGALLOWEDIP_A_IPADDR if x.len() == 4 => ip = Some(IpAddr::from(<[u8; 4]>::try_from(x).unwrap_or([0; 4]))),
                            WGALLOWEDIP_A_IPADDR if x.len() == 16 => ip = Some(IpAddr::from(<[u8; 16]>::try_from(x).unwrap_or([0; 16]))),
                            WGALLOWEDIP_A_CIDR_MASK if !x.is_empty() => cidr = Some(x[0]),
                            _ => {}
                        }
                    }
                    if let (Some(ip), Some(c)) = (ip, cidr) {
                        p.allowed_ips.push(format!("{ip}/{c}"));
                    }
                }
            }
            _ => {}
        }
    }
    p
}

/// A generic-netlink socket with the `wireguard` family resolved.
pub struct Genl {
    sock: OwnedFd,
    family: u16,
    seq: u32,
}

impl Genl {
    /// Open and resolve the family; an error naming the module when the kernel has none.
    pub fn open() -> Result<Genl> {
        let sock = socket::socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkGeneric)
            .ctx("open generic netlink socket")?;
        socket::bind(sock.as_raw_fd(), &NetlinkAddr::new(0, 0)).ctx("bind generic netlink socket")?;
        let tv = nix::sys::time::TimeVal::new(5, 0);
        socket::setsockopt(&sock, socket::sockopt::ReceiveTimeout, &tv).ctx("set netlink timeout")?;
        let mut g = Genl { sock, family: 0, seq: 0 };
        g.seq += 1;
        let replies = g.exchange(&build_get_family(g.seq, FAMILY_NAME), false)?;
        let joined: Vec<u8> = replies.concat();
        g.family = match parse_family_reply(&joined, g.seq) {
            Ok(f) => f.id,
            Err(Reply::Errno(Errno::ENOENT)) => {
                return Err(Error::msg("configure WireGuard", "the kernel has no wireguard family (wireguard.ko not loaded)"));
            }
            Err(Reply::Errno(e)) => return Err(e).ctx("look up generic netlink family wireguard"),
            Err(Reply::Malformed(m)) => return Err(Error::msg("look up generic netlink family wireguard", m)),
        };
        Ok(g)
    }

    /// Send `msg`, collect datagrams until the ACK (or, for a dump, `NLMSG_DONE`). An error
    /// answer becomes the errno.
    fn exchange(&mut self, msg: &[u8], dump: bool) -> Result<Vec<Vec<u8>>> {
        socket::send(self.sock.as_raw_fd(), msg, socket::MsgFlags::empty()).ctx("send generic netlink request")?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match socket::recv(self.sock.as_raw_fd(), &mut buf, socket::MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                r => r.ctx("receive generic netlink reply")?,
            };
            let dgram = buf[..n].to_vec();
            let mut finished = false;
            for (ty, seq, payload) in messages(&dgram) {
                if seq != self.seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => {
                        let code = payload.get(0..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(-libc::EPROTO);
                        if code != 0 {
                            return Err(Errno::from_raw(-code)).ctx("WireGuard netlink request");
                        }
                        finished = true;
                    }
                    NLMSG_DONE => finished = true,
                    _ if !dump => finished = true, // a single reply (the family lookup)
                    _ => {}
                }
            }
            out.push(dgram);
            if finished {
                return Ok(out);
            }
        }
    }

    /// `wg set`: key, port, peers (all replaced).
    pub fn set(&mut self, dev: &Device) -> Result<()> {
        self.seq += 1;
        let msg = msg_set_device(self.family, self.seq, dev);
        self.exchange(&msg, false).with_ctx(|| format!("configure WireGuard device {}", dev.name)).map(|_| ())
    }

    /// `wg show`: the kernel's view of the device.
    pub fn show(&mut self, name: &str) -> Result<Shown> {
        self.seq += 1;
        let msg = msg_get_device(self.family, self.seq, name);
        let replies = self.exchange(&msg, true).with_ctx(|| format!("read WireGuard device {name}"))?;
        parse_device(&replies, self.family).map_err(|e| Error::msg(format!("read WireGuard device {name}"), e))
    }
}

/// `ip link add NAME type wireguard`: errno from the kernel (0 = created, EEXIST = there).
pub fn create_link(nl: &mut dyn Netlink, seq: u32, name: &str) -> Result<()> {
    match nl.request(&crate::net::msg_new_link(seq, name, "wireguard"), seq)? {
        0 | libc::EEXIST => Ok(()),
        libc::EOPNOTSUPP => Err(Error::msg(format!("create WireGuard interface {name}"), "this kernel has no WireGuard (wireguard.ko not loaded, or not built)")),
        errno => Err(Errno::from_raw(errno)).with_ctx(|| format!("create WireGuard interface {name}")),
    }
}

#[cfg(test)]
mod tests;
