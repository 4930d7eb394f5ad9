//! OneGate: the one owner of the publisher and of what a failure is published as (role,
//! Flower version). Started as soon as the context says where OneGate is, kept until
//! power-off, so a step that fails after READY (the run, a restart) is published too.

use super::steps::{Boot, Failed, Note};
use super::{Node, network};
use crate::config::{self, Address, Host};
use crate::error::Result;
use crate::onegate::{self, Publisher};
use crate::vocab::{Role, San};
use std::net::IpAddr;

/// Start publishing when the context configures OneGate; otherwise `/status` says why not
/// (`missing` when the context does not say), and why READY=YES cannot be reported when
/// REPORT_READY=YES asks for it: best-effort, the boot goes on.
pub fn start(boot: &mut Boot, og: &config::OneGate, missing: &str, role: Option<Role>, flower_version: Option<&str>) {
    boot.onegate.role = role;
    boot.onegate.flower_version = flower_version.map(str::to_string);
    let Some(client) = onegate::client_from_config(og) else {
        let reason = og.missing().map_or_else(|| missing.to_string(), |m| format!("OneGate is not usable: {m}"));
        boot.report.onegate_off(&reason, og.ready_unreportable());
        boot.show();
        return;
    };
    let started = boot.sv.waker().and_then(|w| Publisher::start(client, Some(std::sync::Arc::new(move || w.wake()))));
    match started {
        Ok(p) => boot.onegate.publisher = Some(p),
        Err(e) => log::warn!("OneGate publisher: {e}"),
    }
}

/// A refused context: bring the network up if the context allows it and publish FL_ERROR, so
/// the operator sees why in OneGate as well as on the health port. Best effort throughout.
pub fn refusal(boot: &mut Boot, rej: &config::Rejected) {
    if boot.pid1.is_some() || boot.layout.configure_network {
        let _ = network::step(boot, &rej.network);
    }
    start(boot, &rej.onegate, "OneGate is not configured in the context", rej.role, None);
    if let Some(p) = boot.onegate.publisher() {
        p.set(&onegate::failure_attributes(rej.role, None, &rej.to_string()));
    }
}

/// Publish FL_ERROR (and FL_READY=NO) for a failed step, when OneGate is set up.
pub fn failure(boot: &Boot, f: &Failed) {
    let og = &boot.onegate;
    if let Some(p) = og.publisher() {
        p.set(&onegate::failure_attributes(og.role, og.flower_version.as_deref(), &format!("{}: {}", f.step, f.reason)));
    }
}

/// FL_* and READY=YES in one PUT (the publisher retries in the background: never fatal).
pub fn ready(boot: &mut Boot, node: &Node) -> std::result::Result<(), Failed> {
    if node.role() == Role::SuperLink {
        // For the operator, with or without OneGate: the value a SuperNode elsewhere is given.
        boot.report.join = join(node).map(|j| super::report::Join::of(&j));
        boot.show();
    }
    boot.step("publish", |b| -> Result<((), Note)> {
        let Some(p) = b.onegate.publisher() else {
            // Best-effort (issue #13): REPORT_READY=YES without a usable OneGate is a warning
            // in the timeline, on the console and in /status's `onegate`; Flower runs.
            return Ok(match node.cfg.onegate.ready_unreportable() {
                Some(why) => ((), Note::Warn(why)),
                None => ((), Note::Skip("OneGate not configured".into())),
            });
        };
        let v = node.cfg.common.flower_version.clone();
        let attrs = match node.role() {
            Role::SuperLink => {
                let ip = node.addrs.iter().find(|a| a.is_ipv4()).or(node.addrs.first()).copied().unwrap_or(IpAddr::from([127, 0, 0, 1]));
                let endpoint = Address { host: Host::Ip(ip), port: crate::flower::SUPERLINK_PORT };
                let join = join_value(node);
                let mut a = onegate::superlink_attributes(
                    &onegate::SuperLinkFacts { flower_version: &v, endpoint: &endpoint, ca_pem: node.tls.as_ref().map(|(c, _)| c.as_str()), join: join.as_deref(), ready: true, error: None },
                    node.cfg.onegate.report_ready,
                );
                // SuperNodes follow it (admit.rs): they sign with their key only when it is YES.
                a.set(crate::nodeauth::AUTH_ATTR, if superlink_auth(node) { "YES" } else { "NO" });
                a
            }
            Role::SuperNode => onegate::supernode_attributes(
                &onegate::SuperNodeFacts {
                    flower_version: &v,
                    partition_id: node.partition_id,
                    gpu_available: b.gpus.as_ref().is_some_and(|g| g.available),
                    ready: true,
                    error: None,
                },
                node.cfg.onegate.report_ready,
            ),
        };
        p.set(&attrs);
        p.delete("FL_ERROR");
        let keys = attrs.keys().join(" ");
        Ok(((), Note::Ok(format!("queued {keys} (one PUT, retried in the background)"))))
    })
}

/// Whether this SuperLink runs Flower with `--enable-supernode-auth` (spec.rs's rule).
fn superlink_auth(node: &Node) -> bool {
    node.cfg.role.superlink().is_some_and(|s| s.node_auth) && node.tls.is_some()
}

/// The SuperLink's join value (`config::Join`) from what it runs with; `None` (logged) when
/// none can be made.
fn join(node: &Node) -> Option<config::Join> {
    let tls = &node.cfg.tls;
    // The extra names are in the certificate only when it is the generated one.
    let sans = if node.tls.is_some() && tls.operator.is_none() { tls.extra_sans.as_slice() } else { &[] };
    let endpoints = join_endpoints(sans, &node.addrs, crate::flower::SUPERLINK_PORT);
    match config::Join::new(endpoints, node.tls.as_ref().map(|(c, _)| c.as_str())) {
        Ok(j) => Some(j.with_node_auth(superlink_auth(node))),
        Err(e) => {
            log::warn!("join value: none made ({e}): SuperNodes elsewhere need FL_SUPERLINK_ADDRESS and FL_SSL_CA_CERTFILE");
            None
        }
    }
}

/// Where the SuperLink is reached, in preference order: FL_CERT_EXTRA_SANS first (the names
/// other sites use: a public address, a DNS name), then its IPv4, then its IPv6 NIC addresses;
/// loopback and `localhost` left out, each once, all on Flower's Fleet `port`.
fn join_endpoints(extra_sans: &[San], addrs: &[IpAddr], port: u16) -> Vec<Address> {
    let sans = extra_sans.iter().filter_map(|san| match san {
        San::Ip(ip) => Some(Host::Ip(*ip)),
        San::Dns(n) if !n.eq_ignore_ascii_case("localhost") => Some(Host::Name(n.clone())),
        San::Dns(_) => None,
    });
    let v4 = addrs.iter().filter(|a| a.is_ipv4());
    let v6 = addrs.iter().filter(|a| a.is_ipv6());
    let nics = v4.chain(v6).map(|a| Host::Ip(*a));
    let mut endpoints: Vec<Address> = Vec::new();
    for host in sans.chain(nics) {
        let loopback = matches!(host, Host::Ip(ip) if ip.is_loopback() || ip.is_unspecified());
        let a = Address { host, port };
        if !loopback && !endpoints.contains(&a) {
            endpoints.push(a);
        }
    }
    endpoints
}

/// [`join`], encoded.
fn join_value(node: &Node) -> Option<String> {
    join(node).map(|j| j.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_endpoints_put_the_names_other_sites_use_first() {
        let sans = [
            San::parse("203.0.113.7").unwrap(),
            San::parse("fl.example.org").unwrap(),
            San::parse("localhost").unwrap(),
            San::parse("127.0.0.1").unwrap(),
            San::parse("10.0.0.5").unwrap(),
        ];
        let addrs: Vec<IpAddr> = ["2001:db8::5", "10.0.0.5", "127.0.0.1", "10.1.0.5"].iter().map(|a| a.parse().unwrap()).collect();
        let got: Vec<String> = join_endpoints(&sans, &addrs, 8000).iter().map(Address::to_string).collect();
        assert_eq!(got, ["203.0.113.7:8000", "fl.example.org:8000", "10.0.0.5:8000", "10.1.0.5:8000", "[2001:db8::5]:8000"]);
        assert!(join_endpoints(&[], &[], 8000).is_empty());
    }
}
