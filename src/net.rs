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
