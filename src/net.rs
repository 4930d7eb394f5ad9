//! Network configuration from `ETHx_*` over rtnetlink: addresses, routes, MTU, loopback,
//! resolv.conf, hosts, hostname. Issue #3.
//!
//! [`Plan`] is the validated input (built by `config` from the context); applying it is this
//! module's job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What to configure, fully validated: no string parsing happens past this point.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    /// One entry per `ETHn_MAC`, in numeric order of n.
    pub interfaces: Vec<Interface>,
    /// Name servers for resolv.conf: global `DNS` first, then each `ETHn_DNS`, duplicates removed.
    pub dns: Vec<IpAddr>,
    /// `search` list: `SEARCH_DOMAIN`, then each `ETHn_SEARCH_DOMAIN`.
    pub search: Vec<String>,
    /// Host name to set (`SET_HOSTNAME`, else `HOSTNAME`), already sanitised as one-context does.
    pub hostname: Option<String>,
    /// A link-local (169.254.x.x) OneGate endpoint gets a /32 scope-link route on the first
    /// statically configured interface, as one-context does.
    pub onegate_link_route: Option<Ipv4Addr>,
}

/// One NIC, matched by MAC.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Interface {
    /// Context name, e.g. `ETH0` (for messages).
    pub context_name: String,
    /// `ETHn_MAC`.
    pub mac: [u8; 6],
    /// `ETHn_METHOD`: `static` (or empty) configures addresses; `skip` leaves the NIC alone.
    pub method: Method,
    pub ipv4: Option<Ipv4Net>,
    /// Default route via this gateway; none when `ETHn_GATEWAY` is empty.
    pub gateway4: Option<Ipv4Addr>,
    /// `ETHn_METRIC` for the default route.
    pub metric: Option<u32>,
    pub mtu: Option<u32>,
    /// Static IPv6 (`ETHn_IP6`/`ETHn_IP6_PREFIX_LENGTH`, default /64), plus `ETHn_IP6_ULA`.
    pub ipv6: Vec<Ipv6Net>,
    pub gateway6: Option<Ipv6Addr>,
    /// `ETHn_ROUTES`: "dst via gw, …" (or the legacy "dst mask gw").
    pub routes: Vec<Route4>,
}

/// `ETHn_METHOD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Static,
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Ipv6Net {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Route4 {
    pub dst: Ipv4Net,
    pub via: Ipv4Addr,
}

// ---------------------------------------------------------------------------------------------
// Applying a plan: rtnetlink messages (pure builders), a socket behind a trait, and the files.
// Message layouts are the kernel's (include/uapi/linux/{netlink,rtnetlink,if_link,if_addr}.h);
// libc does not define ifinfomsg/ifaddrmsg/rtmsg, so they are written field by field, like
// libkrun's init/src/dhcp.rs.
// ---------------------------------------------------------------------------------------------

use crate::error::{Ctx, Error, Result};
use std::path::Path;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// `IFA_F_NODAD` (if_addr.h): no duplicate address detection, so a static IPv6 address is usable
/// at once instead of after ~1 s of DAD (Fly's init does the same).
const IFA_F_NODAD: u8 = 0x02;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RT_TABLE_MAIN: u8 = 254;
/// `RTPROT_BOOT`: routes installed at boot, as `ip route add` marks them.
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const IFF_UP: u32 = 0x1;
const NLM_F_EXCL: u16 = 0x200;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_NET_NS_FD: u16 = 28;

/// Append an attribute (`struct rtattr` + payload), keeping 4-byte alignment (RTA_ALIGN).
pub(crate) fn add_rtattr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// Prefix `body` with a `struct nlmsghdr` of the right length.
fn nl_msg(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// RTM_NEWLINK: set the link up, and its MTU when given.
pub fn msg_link_up(seq: u32, ifindex: u32, mtu: Option<u32>) -> Vec<u8> {
    let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    b.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    b.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    b.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change: only IFF_UP
    if let Some(mtu) = mtu {
        add_rtattr(&mut b, IFLA_MTU, &mtu.to_ne_bytes());
    }
    nl_msg(RTM_NEWLINK, 0, seq, &b)
}

/// RTM_NEWLINK creating a virtual link (`ip link add NAME type KIND`), down.
pub fn msg_new_link(seq: u32, name: &str, kind: &str) -> Vec<u8> {
    let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    b.extend_from_slice(&0i32.to_ne_bytes()); // ifi_index: the kernel picks
    b.extend_from_slice(&0u32.to_ne_bytes()); // ifi_flags
    b.extend_from_slice(&0u32.to_ne_bytes()); // ifi_change
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    add_rtattr(&mut b, IFLA_IFNAME, &n);
    let mut info = Vec::new();
    add_rtattr(&mut info, IFLA_INFO_KIND, kind.as_bytes());
    add_rtattr(&mut b, IFLA_LINKINFO, &info);
    nl_msg(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, seq, &b)
}

/// RTM_NEWLINK moving link `ifindex` into the network namespace that `ns_fd` refers to.
pub fn msg_link_netns(seq: u32, ifindex: u32, ns_fd: i32) -> Vec<u8> {
    let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    b.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    add_rtattr(&mut b, IFLA_NET_NS_FD, &(ns_fd as u32).to_ne_bytes());
    nl_msg(RTM_NEWLINK, 0, seq, &b)
}

/// RTM_NEWADDR for an IPv4 or IPv6 address (replacing an existing one: idempotent).
pub fn msg_addr(seq: u32, ifindex: u32, addr: IpAddr, prefix: u8) -> Vec<u8> {
    let (family, flags, bytes) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, 0, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, IFA_F_NODAD, a.octets().to_vec()),
    };
    let mut b = vec![family, prefix, flags, RT_SCOPE_UNIVERSE];
    b.extend_from_slice(&ifindex.to_ne_bytes());
    add_rtattr(&mut b, IFA_LOCAL, &bytes);
    add_rtattr(&mut b, IFA_ADDRESS, &bytes);
    nl_msg(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq, &b)
}

/// A route to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination and prefix length; prefix 0 is the default route.
    pub dst: IpAddr,
    pub dst_len: u8,
    pub gateway: Option<IpAddr>,
    pub ifindex: u32,
    pub metric: Option<u32>,
    /// A directly connected destination (scope link, no gateway).
    pub link_scope: bool,
}

/// RTM_NEWROUTE in the main table (replacing an existing route to the same destination).
pub fn msg_route(seq: u32, r: &RouteSpec) -> Vec<u8> {
    let family = if r.dst.is_ipv4() { libc::AF_INET as u8 } else { libc::AF_INET6 as u8 };
    let scope = if r.link_scope { RT_SCOPE_LINK } else { RT_SCOPE_UNIVERSE };
    let mut b = vec![family, r.dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST];
    b.extend_from_slice(&0u32.to_ne_bytes()); // rtm_flags
    let octets = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    if r.dst_len > 0 {
        add_rtattr(&mut b, RTA_DST, &octets(r.dst));
    }
    if let Some(gw) = r.gateway {
        add_rtattr(&mut b, RTA_GATEWAY, &octets(gw));
    }
    add_rtattr(&mut b, RTA_OIF, &r.ifindex.to_ne_bytes());
    if let Some(m) = r.metric {
        add_rtattr(&mut b, RTA_PRIORITY, &m.to_ne_bytes());
    }
    nl_msg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq, &b)
}

/// Result of one request: the errno of the kernel's ACK (0 = success), checked against `seq`.
pub fn parse_ack(buf: &[u8], seq: u32) -> std::result::Result<i32, String> {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().map_err(|_| "short header")?) as usize;
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let mseq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().map_err(|_| "short header")?);
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(format!("malformed netlink message (length {len})"));
        }
        if kind == NLMSG_ERROR && mseq == seq {
            let body = &buf[off + NLMSG_HDRLEN..off + len];
            let err = i32::from_ne_bytes(body.get(..4).ok_or("short NLMSG_ERROR")?.try_into().map_err(|_| "short NLMSG_ERROR")?);
            return Ok(-err);
        }
        off += len.next_multiple_of(4);
    }
    Err(format!("no acknowledgement for request {seq}"))
}

/// A netlink route socket: the seam tests replace with a recorder (youki's FakeNetlinkClient).
pub trait Netlink {
    /// Send one request and wait for its ACK; returns the kernel's errno (0 on success).
    fn request(&mut self, msg: &[u8], seq: u32) -> Result<i32>;
}

/// The real `NETLINK_ROUTE` socket.
pub struct RouteSocket {
    fd: std::os::fd::OwnedFd,
}

impl RouteSocket {
    pub fn open() -> Result<RouteSocket> {
        use nix::sys::socket::{AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, socket};
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute).ctx("open netlink socket")?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &NetlinkAddr::new(0, 0)).ctx("bind netlink socket")?;
        // A kernel that never answers must not hang boot.
        let tv = nix::sys::time::TimeVal::new(5, 0);
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv).ctx("set netlink timeout")?;
        Ok(RouteSocket { fd })
    }
}

impl Netlink for RouteSocket {
    fn request(&mut self, msg: &[u8], seq: u32) -> Result<i32> {
        use std::os::fd::AsRawFd;
        let kernel = nix::sys::socket::NetlinkAddr::new(0, 0);
        nix::sys::socket::sendto(self.fd.as_raw_fd(), msg, &kernel, nix::sys::socket::MsgFlags::empty()).ctx("send netlink request")?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = nix::sys::socket::recv(self.fd.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty()).ctx("receive netlink ack")?;
            match parse_ack(&buf[..n], seq) {
                Ok(errno) => return Ok(errno),
                // Replies to someone else (or multipart noise): keep reading until our ACK.
                Err(e) if e.starts_with("no acknowledgement") => continue,
                Err(e) => return Err(Error::msg("read netlink ack", e)),
            }
        }
    }
}

/// A link found by MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
}

/// `/sys/class/net/*/address` → name and ifindex of the interface with this MAC (any case).
pub fn link_by_mac_at(sys: &Path, mac: &[u8; 6]) -> Option<Link> {
    let want = format_mac(mac);
    let mut names: Vec<String> =
        std::fs::read_dir(sys.join("class/net")).ok()?.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let dir = sys.join("class/net").join(&n);
        let addr = std::fs::read_to_string(dir.join("address")).ok()?;
        if !addr.trim().eq_ignore_ascii_case(&want) {
            return None;
        }
        let index = std::fs::read_to_string(dir.join("ifindex")).ok()?.trim().parse().ok()?;
        Some(Link { name: n, index })
    })
}

/// `02:00:0a:00:00:05`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// What was configured, for the log and `/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Applied {
    /// (context name, interface name, addresses with prefix)
    pub interfaces: Vec<(String, String, Vec<String>)>,
    pub routes: Vec<String>,
    pub hostname: Option<String>,
    pub warnings: Vec<String>,
}

impl Applied {
    /// Every IPv4/IPv6 address configured (for certificate SANs and the published endpoint).
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.interfaces.iter().flat_map(|(_, _, a)| a.iter()).filter_map(|a| a.split('/').next()?.parse().ok()).collect()
    }
}

/// Sends numbered requests and turns the kernel's errno into an error naming the step.
struct Requester<'a> {
    nl: &'a mut dyn Netlink,
    seq: u32,
}

impl Requester<'_> {
    fn send(&mut self, what: impl Fn() -> String, build: impl FnOnce(u32) -> Vec<u8>) -> Result<()> {
        self.seq += 1;
        request(self.nl, &build(self.seq), self.seq, what)
    }
}

/// Send one request; the kernel's errno becomes an error naming `what` was being done.
pub fn request(nl: &mut dyn Netlink, msg: &[u8], seq: u32, what: impl Fn() -> String) -> Result<()> {
    match nl.request(msg, seq)? {
        0 => Ok(()),
        errno => Err(nix::errno::Errno::from_raw(errno)).with_ctx(what),
    }
}

/// Bring `lo` up (the kernel creates it down; 127.0.0.1/8 comes with it).
pub fn loopback_up(nl: &mut dyn Netlink, sys: &Path) -> Result<()> {
    let index = std::fs::read_to_string(sys.join("class/net/lo/ifindex")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1);
    Requester { nl, seq: 0 }.send(|| "set lo up".into(), |seq| msg_link_up(seq, index, None))
}

/// Apply the interfaces and routes of `plan` (links must exist: see [`wait_for_links_at`]).
/// A NIC whose MAC is not present is a warning, not an error: OpenNebula keeps detached NICs in
/// the context (OpenNebula/one#4130).
pub fn apply_at(nl: &mut dyn Netlink, sys: &Path, plan: &Plan) -> Result<Applied> {
    let mut r = Requester { nl, seq: 100 };
    let mut out = Applied { hostname: plan.hostname.clone(), ..Applied::default() };
    let mut first_static: Option<u32> = None;
    for nic in &plan.interfaces {
        let Some(link) = link_by_mac_at(sys, &nic.mac) else {
            out.warnings.push(format!("{}: no interface has MAC {}: not configured", nic.context_name, format_mac(&nic.mac)));
            continue;
        };
        if nic.method == Method::Skip {
            out.interfaces.push((nic.context_name.clone(), link.name.clone(), vec![]));
            continue;
        }
        let i = link.index;
        r.send(|| format!("set {} ({}) up", link.name, nic.context_name), |s| msg_link_up(s, i, nic.mtu))?;
        let mut addrs = Vec::new();
        if let Some(v4) = nic.ipv4 {
            r.send(|| format!("add {}/{} to {}", v4.addr, v4.prefix, link.name), |s| msg_addr(s, i, IpAddr::V4(v4.addr), v4.prefix))?;
            addrs.push(format!("{}/{}", v4.addr, v4.prefix));
            first_static.get_or_insert(i);
        }
        for v6 in &nic.ipv6 {
            r.send(|| format!("add {}/{} to {}", v6.addr, v6.prefix, link.name), |s| msg_addr(s, i, IpAddr::V6(v6.addr), v6.prefix))?;
            addrs.push(format!("{}/{}", v6.addr, v6.prefix));
        }
        for rt in &nic.routes {
            let spec = RouteSpec { dst: IpAddr::V4(rt.dst.addr), dst_len: rt.dst.prefix, gateway: Some(IpAddr::V4(rt.via)), ifindex: i, metric: None, link_scope: false };
            r.send(|| format!("add route {}/{} via {} on {}", rt.dst.addr, rt.dst.prefix, rt.via, link.name), |s| msg_route(s, &spec))?;
            out.routes.push(format!("{}/{} via {} dev {}", rt.dst.addr, rt.dst.prefix, rt.via, link.name));
        }
        if let Some(gw) = nic.gateway4 {
            let spec = RouteSpec { dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED), dst_len: 0, gateway: Some(IpAddr::V4(gw)), ifindex: i, metric: nic.metric, link_scope: false };
            r.send(|| format!("add default route via {gw} on {}", link.name), |s| msg_route(s, &spec))?;
            out.routes.push(format!("default via {gw} dev {}", link.name));
        }
        if let Some(gw) = nic.gateway6 {
            let spec = RouteSpec { dst: IpAddr::V6(Ipv6Addr::UNSPECIFIED), dst_len: 0, gateway: Some(IpAddr::V6(gw)), ifindex: i, metric: nic.metric, link_scope: false };
            r.send(|| format!("add default route via {gw} on {}", link.name), |s| msg_route(s, &spec))?;
            out.routes.push(format!("default via {gw} dev {}", link.name));
        }
        out.interfaces.push((nic.context_name.clone(), link.name.clone(), addrs));
    }
    if let (Some(og), Some(i)) = (plan.onegate_link_route, first_static) {
        let spec = RouteSpec { dst: IpAddr::V4(og), dst_len: 32, gateway: None, ifindex: i, metric: None, link_scope: true };
        r.send(|| format!("add link route to OneGate {og}"), |s| msg_route(s, &spec))?;
        out.routes.push(format!("{og}/32 scope link (OneGate)"));
    }
    Ok(out)
}

/// Wait (bounded, through the caller's sleep so boot keeps serving health) until every MAC in
/// `plan` has an interface. Returns the MACs still missing at the deadline.
pub fn wait_for_links_at(sys: &Path, plan: &Plan, timeout: std::time::Duration, sleep: &mut dyn FnMut(std::time::Duration)) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let missing: Vec<String> = plan
            .interfaces
            .iter()
            .filter(|n| n.method != Method::Skip && link_by_mac_at(sys, &n.mac).is_none())
            .map(|n| format!("{} ({})", n.context_name, format_mac(&n.mac)))
            .collect();
        if missing.is_empty() || start.elapsed() >= timeout {
            return missing;
        }
        sleep(std::time::Duration::from_millis(50));
    }
}

/// resolv.conf content: `nameserver` lines (glibc and musl read at most 3) and `search`.
pub fn resolv_conf(plan: &Plan) -> String {
    let mut s = String::from("# written by flower-init from the OpenNebula context\n");
    for ns in &plan.dns {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    if !plan.search.is_empty() {
        s.push_str(&format!("search {}\n", plan.search.join(" ")));
    }
    s
}

/// /etc/hosts content: loopback names and this host's name on its first address.
pub fn hosts(hostname: Option<&str>, addrs: &[IpAddr]) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(h) = hostname {
        let short = h.split('.').next().unwrap_or(h);
        let ip = addrs.first().map(|a| a.to_string()).unwrap_or_else(|| "127.0.1.1".into());
        if short == h {
            s.push_str(&format!("{ip}\t{h}\n"));
        } else {
            s.push_str(&format!("{ip}\t{h} {short}\n"));
        }
    }
    s
}

/// Write resolv.conf and hosts into `dir` (the image's /etc entries are symlinks there; the
/// container gets them read-only) and set the kernel host name.
pub fn write_files(dir: &Path, plan: &Plan, applied: &Applied, set_hostname: bool) -> Result<()> {
    std::fs::create_dir_all(dir).with_ctx(|| format!("create {}", dir.display()))?;
    let write = |name: &str, data: String| {
        let p = dir.join(name);
        crate::fsutil::write_atomic(&p, data.as_bytes(), 0o644, None).with_ctx(|| format!("write {}", p.display()))
    };
    write("resolv.conf", resolv_conf(plan))?;
    write("hosts", hosts(plan.hostname.as_deref(), &applied.addresses()))?;
    if let (true, Some(h)) = (set_hostname, &plan.hostname) {
        nix::unistd::sethostname(h.split('.').next().unwrap_or(h)).with_ctx(|| format!("set host name {h}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_up_with_mtu_is_the_kernel_layout() {
        let m = msg_link_up(7, 2, Some(1450));
        assert_eq!(m.len(), 16 + 16 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 40);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWLINK);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(i32::from_ne_bytes(m[20..24].try_into().unwrap()), 2);
        assert_eq!(&m[32..36], &[8, 0, 4, 0]); // rtattr len 8, IFLA_MTU
        assert_eq!(u32::from_ne_bytes(m[36..40].try_into().unwrap()), 1450);
    }

    #[test]
    fn ipv6_address_skips_dad_and_routes_carry_attributes() {
        let m = msg_addr(1, 3, "2001:db8::5".parse().unwrap(), 64);
        assert_eq!(m[16], libc::AF_INET6 as u8);
        assert_eq!(m[17], 64);
        assert_eq!(m[18], IFA_F_NODAD);
        assert_eq!(m.len(), 16 + 8 + 2 * (4 + 16));
        let r = RouteSpec { dst: "169.254.16.9".parse().unwrap(), dst_len: 32, gateway: None, ifindex: 3, metric: None, link_scope: true };
        let m = msg_route(2, &r);
        assert_eq!(m[16 + 6], RT_SCOPE_LINK);
        assert_eq!(&m[28..32], &[8, 0, RTA_DST as u8, 0]);
        assert_eq!(&m[32..36], &[169, 254, 16, 9]);
        let d = RouteSpec { dst: "0.0.0.0".parse().unwrap(), dst_len: 0, gateway: Some("10.0.0.1".parse().unwrap()), ifindex: 3, metric: Some(100), link_scope: false };
        let m = msg_route(3, &d);
        // No RTA_DST for a default route: gateway, oif, priority.
        assert_eq!(m.len(), 16 + 12 + 8 * 3);
        assert_eq!(&m[28..30], &[8, 0]);
        assert_eq!(u16::from_ne_bytes([m[30], m[31]]), RTA_GATEWAY);
    }

    #[test]
    fn acks_are_matched_by_sequence() {
        let ack = |seq: u32, err: i32| {
            let mut b = Vec::new();
            b.extend_from_slice(&36u32.to_ne_bytes());
            b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            b.extend_from_slice(&0u16.to_ne_bytes());
            b.extend_from_slice(&seq.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&err.to_ne_bytes());
            b.extend_from_slice(&[0u8; 16]);
            b
        };
        assert_eq!(parse_ack(&ack(5, 0), 5), Ok(0));
        assert_eq!(parse_ack(&ack(5, -17), 5), Ok(17));
        let mut two = ack(4, -1);
        two.extend(ack(5, 0));
        assert_eq!(parse_ack(&two, 5), Ok(0));
        assert!(parse_ack(&ack(4, 0), 5).is_err());
        assert!(parse_ack(&[1, 2, 3], 5).is_err());
    }

    struct Fake(Vec<Vec<u8>>);
    impl Netlink for Fake {
        fn request(&mut self, msg: &[u8], _seq: u32) -> Result<i32> {
            self.0.push(msg.to_vec());
            Ok(0)
        }
    }

    fn fake_sys(d: &Path) {
        for (n, mac, idx) in [("lo", "00:00:00:00:00:00", 1), ("eth0", "02:00:0A:00:00:05", 2)] {
            let p = d.join("class/net").join(n);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("address"), format!("{mac}\n")).unwrap();
            std::fs::write(p.join("ifindex"), format!("{idx}\n")).unwrap();
        }
    }

    fn plan() -> Plan {
        Plan {
            interfaces: vec![
                Interface {
                    context_name: "ETH0".into(),
                    mac: [2, 0, 10, 0, 0, 5],
                    method: Method::Static,
                    ipv4: Some(Ipv4Net { addr: "10.0.0.5".parse().unwrap(), prefix: 24 }),
                    gateway4: Some("10.0.0.1".parse().unwrap()),
                    metric: None,
                    mtu: Some(1450),
                    ipv6: vec![],
                    gateway6: None,
                    routes: vec![],
                },
                Interface {
                    context_name: "ETH1".into(),
                    mac: [2, 0, 10, 0, 1, 5],
                    method: Method::Static,
                    ipv4: None,
                    gateway4: None,
                    metric: None,
                    mtu: None,
                    ipv6: vec![],
                    gateway6: None,
                    routes: vec![],
                },
            ],
            dns: vec!["10.0.0.1".parse().unwrap()],
            search: vec!["example.org".into()],
            hostname: Some("sl.example.org".into()),
            onegate_link_route: Some("169.254.16.9".parse().unwrap()),
        }
    }

    #[test]
    fn apply_matches_by_mac_and_warns_on_detached_nics() {
        let d = tempfile::tempdir().unwrap();
        fake_sys(d.path());
        let mut nl = Fake(vec![]);
        let a = apply_at(&mut nl, d.path(), &plan()).unwrap();
        // up+mtu, address, default route, OneGate link route
        assert_eq!(nl.0.len(), 4);
        assert_eq!(a.interfaces, vec![("ETH0".to_string(), "eth0".to_string(), vec!["10.0.0.5/24".to_string()])]);
        assert_eq!(a.addresses(), vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert!(a.warnings[0].contains("ETH1: no interface has MAC 02:00:0a:00:01:05"));
        assert_eq!(a.routes.last().unwrap(), "169.254.16.9/32 scope link (OneGate)");
        let missing = wait_for_links_at(d.path(), &plan(), std::time::Duration::ZERO, &mut |_| {});
        assert_eq!(missing, vec!["ETH1 (02:00:0a:00:01:05)"]);
    }

    #[test]
    fn resolv_conf_and_hosts() {
        let p = plan();
        assert_eq!(resolv_conf(&p), "# written by flower-init from the OpenNebula context\nnameserver 10.0.0.1\nsearch example.org\n");
        let h = hosts(p.hostname.as_deref(), &["10.0.0.5".parse().unwrap()]);
        assert!(h.ends_with("10.0.0.5\tsl.example.org sl\n"));
        assert!(hosts(None, &[]).starts_with("127.0.0.1\tlocalhost\n"));
    }
}
