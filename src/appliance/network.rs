//! The network step: the context's plan applied over netlink (PID 1 always; service mode with
//! `--configure-network`), or the host's own addresses as they are.

use super::steps::{Boot, Failed, Note};
use crate::net;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// How long PID 1 waits for the NICs named in the context to appear (drivers load async).
const LINK_WAIT: Duration = Duration::from_secs(10);

/// This VM's non-loopback addresses: the plan's, applied now when this mode configures the
/// network, else the host's.
pub fn addresses(boot: &mut Boot, plan: &net::Plan) -> std::result::Result<Vec<IpAddr>, Failed> {
    if boot.pid1.is_some() || boot.layout.configure_network {
        return Ok(step(boot, plan)?.addresses());
    }
    let a = host_addresses();
    log::info!("network: using the host's addresses {a:?} (no --configure-network)");
    Ok(a)
}

/// Bring the network up from a plan.
pub fn step(boot: &mut Boot, plan: &net::Plan) -> std::result::Result<net::Applied, Failed> {
    boot.step("network", |b| {
        let sys = Path::new("/sys");
        let missing = {
            let mut sleep = b.sleeper();
            net::wait_for_links_at(sys, plan, LINK_WAIT, &mut sleep)
        };
        let mut nl = net::RouteSocket::open()?;
        net::loopback_up(&mut nl, sys)?;
        let mut applied = net::apply_at(&mut nl, sys, plan)?;
        if !missing.is_empty() {
            applied.warnings.push(format!("no interface after {}s for {}", LINK_WAIT.as_secs(), missing.join(", ")));
        }
        net::write_files(&b.layout.run_dir, plan, &applied, b.pid1.is_some())?;
        for w in &applied.warnings {
            log::warn!("network: {w}");
        }
        let ifs: Vec<String> = applied.interfaces.iter().map(|(c, i, a)| format!("{c}={i} {}", a.join(","))).collect();
        let note = if ifs.is_empty() { "loopback only".to_string() } else { ifs.join("; ") };
        b.report.network = Some(applied.clone());
        b.show();
        let warn = !applied.warnings.is_empty();
        Ok((applied, if warn { Note::Warn(note) } else { Note::Ok(note) }))
    })
}

/// Addresses already configured on this host's interfaces (service mode without
/// --configure-network: the host's own network is used as it is).
fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let ip = a.address.as_ref().and_then(|s| {
                s.as_sockaddr_in().map(|v| IpAddr::V4(v.ip())).or_else(|| s.as_sockaddr_in6().map(|v| IpAddr::V6(v.ip())))
            });
            if let Some(ip) = ip.filter(|ip| !ip.is_loopback() && !is_link_local(ip)) {
                out.push(ip);
            }
        }
    }
    out
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
    }
}
