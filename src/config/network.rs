//! `net::Plan` from NETWORK / `ETH<n>_*` / DNS / SEARCH_DOMAIN / SET_HOSTNAME, with
//! one-context's defaults (research/opennebula.md §3): interfaces by MAC in numeric order,
//! MASK 255.255.255.0, METHOD static, IP6_PREFIX_LENGTH 64, IP6_METHOD = METHOD, global DNS and
//! search first, the hostname sanitised, and a link route to a 169.254.x.x OneGate.
//!
//! There is no DHCP client: `METHOD=dhcp` with an `IP` (OpenNebula always leases one from the
//! address range) configures that address statically with a warning; without an `IP` it is an
//! error, since the NIC would stay unconfigured.

use super::model::Endpoint;
use super::reader::Reader;
use super::values;
use crate::net::{Interface, Ipv4Net, Ipv6Net, Method, Plan};
use crate::vars::{nic_name, split_eth};
use serde_json::json;
use std::collections::BTreeSet;

/// Per-NIC keys that mean "configure something", so a missing MAC is an error, not silence.
const CONFIG_KEYS: &[&str] = &["IP", "IP6", "IPV6", "IP6_ULA", "GATEWAY", "ROUTES", "MTU"];

/// Build the plan; problems and warnings go to the resolver.
pub fn plan(r: &mut Reader, onegate: Option<&Endpoint>) -> Plan {
    let _ = r.yes_no("NETWORK");
    let ctx = r.ctx;
    let mut nics = BTreeSet::new();
    let mut aliases = BTreeSet::new();
    for (key, value) in ctx.iter() {
        if let Some((n, suffix)) = split_eth(key) {
            nics.insert(n);
            if suffix.starts_with("ALIAS") && (suffix.ends_with("_IP") || suffix.ends_with("_IP6")) && !value.is_empty()
            {
                aliases.insert(format!("ETH{n}_{}", suffix.split('_').next().unwrap_or(suffix)));
            }
        }
    }
    for a in aliases {
        r.warn(format!("{a}_*: NIC alias addresses are not configured by flower-init"));
    }
    let mut plan = Plan::default();
    let mut dns = r.value("DNS", values::ip_list, |v| json!(v)).ok().flatten().unwrap_or_default();
    let mut search = r.value("SEARCH_DOMAIN", values::domains, |v| json!(v)).ok().flatten().unwrap_or_default();
    for n in nics {
        let name = |s: &str| nic_name(&format!("ETH<n>_{s}"), n);
        let mac = match r.nic(&name("MAC"), values::mac) {
            Ok(Some(m)) => m,
            Ok(None) => {
                let set: Vec<String> = CONFIG_KEYS.iter().map(|k| name(k)).filter(|k| ctx.get(k).is_some()).collect();
                if !set.is_empty() {
                    r.problem(
                        &name("MAC"),
                        None,
                        format!("unset, but {} is set: a NIC is found by its MAC", set.join(", ")),
                    );
                }
                continue;
            }
            Err(()) => continue,
        };
        if let Ok(Some(iface)) = interface(r, n, mac) {
            if iface.method == Method::Static {
                dns.extend(r.nic(&name("DNS"), values::ip_list).ok().flatten().unwrap_or_default());
                search.extend(r.nic(&name("SEARCH_DOMAIN"), values::domains).ok().flatten().unwrap_or_default());
            }
            plan.interfaces.push(iface);
        }
    }
    let mut seen = BTreeSet::new();
    dns.retain(|d| seen.insert(*d));
    plan.dns = dns;
    plan.hostname = hostname(r, &mut search);
    let mut seen = BTreeSet::new();
    search.retain(|d| seen.insert(d.clone()));
    plan.search = search;
    plan.onegate_link_route = onegate.and_then(Endpoint::link_local_v4);
    plan
}

/// One NIC; `Err` when something is invalid (problems recorded).
fn interface(r: &mut Reader, n: u32, mac: [u8; 6]) -> Result<Option<Interface>, ()> {
    let name = |s: &str| nic_name(&format!("ETH<n>_{s}"), n);
    let mut ok = true;
    let method_word = r.nic(&name("METHOD"), |s| word(s, crate::vars::METHODS)).map_err(|()| ok = false).ok().flatten();
    let mut iface = Interface {
        context_name: format!("ETH{n}"),
        mac,
        method: Method::Static,
        ipv4: None,
        gateway4: None,
        metric: None,
        mtu: None,
        ipv6: Vec::new(),
        gateway6: None,
        routes: Vec::new(),
    };
    if method_word.as_deref() == Some("skip") {
        iface.method = Method::Skip;
        return Ok(Some(iface));
    }
    let ip = r.nic(&name("IP"), values::ipv4).map_err(|()| ok = false).ok().flatten();
    if method_word.as_deref() == Some("dhcp") {
        match ip {
            Some(ip) => r.warn(format!(
                "{}=dhcp: flower-init has no DHCP client; configuring the address OpenNebula leased ({}={ip}) statically",
                name("METHOD"),
                name("IP")
            )),
            None => {
                r.problem(&name("METHOD"), Some("dhcp"), format!("flower-init has no DHCP client and {} is unset: give a static address or METHOD=skip", name("IP")));
                ok = false;
            }
        }
    }
    let prefix = r.nic(&name("MASK"), values::netmask).map_err(|()| ok = false).ok().flatten().unwrap_or(24);
    iface.ipv4 = ip.map(|addr| Ipv4Net { addr, prefix });
    iface.gateway4 = r.nic(&name("GATEWAY"), values::ipv4).map_err(|()| ok = false).ok().flatten();
    iface.metric = int::<u32>(r, &name("METRIC")).map_err(|()| ok = false).ok().flatten();
    iface.mtu = int::<u32>(r, &name("MTU")).map_err(|()| ok = false).ok().flatten();
    iface.routes = r.nic(&name("ROUTES"), values::routes).map_err(|()| ok = false).ok().flatten().unwrap_or_default();
    // IPv6: IP6_METHOD defaults to METHOD.
    let m6_given =
        r.nic(&name("IP6_METHOD"), |s| word(s, crate::vars::METHODS6)).map_err(|()| ok = false).ok().flatten();
    let explicit6 = m6_given.is_some();
    let m6 = m6_given.or(method_word).unwrap_or_else(|| "static".into());
    let plen = int::<u8>(r, &name("IP6_PREFIX_LENGTH")).map_err(|()| ok = false).ok().flatten().unwrap_or(64);
    let ip6 = r.nic(&name("IP6"), values::ipv6).map_err(|()| ok = false).ok().flatten();
    let ula = r.nic(&name("IP6_ULA"), values::ipv6).map_err(|()| ok = false).ok().flatten();
    let gw6 = r.nic(&name("IP6_GATEWAY"), values::ipv6).map_err(|()| ok = false).ok().flatten();
    match m6.as_str() {
        "static" | "dhcp" => {
            if m6 == "dhcp" && (explicit6 || ip6.is_some()) {
                r.warn(match ip6 {
                    Some(a) => format!(
                        "{}=dhcp: no DHCPv6 client; configuring {}={a} statically",
                        name("IP6_METHOD"),
                        name("IP6")
                    ),
                    None => format!("{}=dhcp: no DHCPv6 client; IPv6 comes from SLAAC only", name("IP6_METHOD")),
                });
            }
            iface.ipv6 = ip6.into_iter().chain(ula).map(|addr| Ipv6Net { addr, prefix: plen }).collect();
            iface.gateway6 = gw6;
        }
        "auto" => {} // SLAAC: the kernel does it (accept_ra)
        "disable" => r.warn(format!(
            "{}=disable: flower-init does not turn IPv6 off; no IPv6 address is configured",
            name("IP6_METHOD")
        )),
        _ => {} // skip
    }
    if ok { Ok(Some(iface)) } else { Err(()) }
}

/// A method word (any case) from `allowed`.
fn word(s: &str, allowed: &[&str]) -> Result<String, String> {
    let w = s.trim().to_ascii_lowercase();
    if allowed.contains(&w.as_str()) { Ok(w) } else { Err(format!("must be one of {}", allowed.join(", "))) }
}

/// A NIC integer by the table's range.
fn int<T: TryFrom<i64>>(r: &mut Reader, name: &str) -> Result<Option<T>, ()> {
    let (min, max) = match crate::vars::var(name).map(|v| v.rule) {
        Some(crate::vars::Rule::Int { min, max }) => (min, max),
        _ => (0, i64::MAX),
    };
    let rule = Reader::rule(name);
    r.nic(name, |s| values::int(s, min, max, &rule).and_then(|i| T::try_from(i).map_err(|_| format!("must be {rule}"))))
}

/// SET_HOSTNAME, else HOSTNAME, sanitised as one-context does; a domain part joins `search`.
fn hostname(r: &mut Reader, search: &mut Vec<String>) -> Option<String> {
    let name = if r.is_set("SET_HOSTNAME") { "SET_HOSTNAME" } else { "HOSTNAME" };
    let raw = r.value(name, |s| Ok(s.to_string()), |s| json!(values::sanitize_hostname(s))).ok().flatten()?;
    let clean = values::sanitize_hostname(&raw);
    let (host, domain) = match clean.split_once('.') {
        Some((h, d)) => (h.to_string(), Some(d.trim_matches('.').to_string())),
        None => (clean.clone(), None),
    };
    if host.is_empty() || host.len() > 63 {
        r.problem(name, Some(&raw), "must give a host name of 1 to 63 letters, digits and '-' (after sanitising)");
        return None;
    }
    if let Some(d) = domain.filter(|d| !d.is_empty()) {
        search.push(d.to_ascii_lowercase());
    }
    Some(host)
}
