//! OneGate: the one owner of the publisher and of what a failure is published as (role,
//! Flower version). Started as soon as the context says where OneGate is, kept until
//! power-off, so a step that fails after READY (the run, a restart) is published too.

use super::steps::{Boot, Failed, Note};
use super::{Node, network};
use crate::config::{self, Address, Host};
use crate::error::Result;
use crate::onegate::{self, Publisher};
use crate::vocab::Role;
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
                onegate::superlink_attributes(
                    &onegate::SuperLinkFacts { flower_version: &v, endpoint: &endpoint, ca_pem: node.tls.as_ref().map(|(c, _)| c.as_str()), join: join.as_deref(), ready: true, error: None },
                    node.cfg.onegate.report_ready,
                )
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

/// The SuperLink's join value (`config::Join`): where it is reached, in preference order
/// (FL_CERT_EXTRA_SANS first when its generated certificate carries them: the names other
/// sites use, such as a public address or DNS name; then its IPv4, then IPv6 NIC addresses),
/// on Flower's Fleet port, and its CA when TLS is on. `None` (logged) when none can be made.
fn join(node: &Node) -> Option<config::Join> {
    let port = crate::flower::SUPERLINK_PORT;
    let mut hosts: Vec<Host> = Vec::new();
    let tls = &node.cfg.tls;
    if node.tls.is_some() && tls.operator.is_none() {
        for san in &tls.extra_sans {
            let h = match san {
                crate::vocab::San::Ip(ip) if !ip.is_loopback() => Host::Ip(*ip),
                crate::vocab::San::Dns(n) if !n.eq_ignore_ascii_case("localhost") => Host::Name(n.clone()),
                _ => continue,
            };
            hosts.push(h);
        }
    }
    let v4 = node.addrs.iter().filter(|a| a.is_ipv4());
    let v6 = node.addrs.iter().filter(|a| a.is_ipv6());
    hosts.extend(v4.chain(v6).filter(|a| !a.is_loopback()).map(|a| Host::Ip(*a)));
    let mut endpoints: Vec<Address> = Vec::new();
    for host in hosts {
        let a = Address { host, port };
        if !endpoints.contains(&a) {
            endpoints.push(a);
        }
    }
    match config::Join::new(endpoints, node.tls.as_ref().map(|(c, _)| c.as_str())) {
        Ok(j) => Some(j),
        Err(e) => {
            log::warn!("join value: none made ({e}): SuperNodes elsewhere need FL_SUPERLINK_ADDRESS and FL_SSL_CA_CERTFILE");
            None
        }
    }
}

/// [`join`], encoded.
fn join_value(node: &Node) -> Option<String> {
    join(node).map(|j| j.encode())
}
