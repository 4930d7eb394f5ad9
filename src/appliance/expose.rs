//! The SuperLink's gateway: Flower's Fleet API exposed on the NIC addresses (Flower itself
//! listens on loopback only), the Control API only to FL_CONTROL_ALLOW. Issue #10.
//!
//! The gateway parses untrusted HTTP and TLS, so it runs as a supervised child process of the
//! same binary (`flower-init gateway …`, issue #14 item 6): a parser bug ends that process,
//! which is restarted with back-off, never PID 1 (whose panic powers the VM off). Everything
//! it needs is on its command line, paths and addresses only: it reads the certificate and key
//! from the runtime directory itself, at start and on SIGHUP ([`GatewayProc::reload`]), so no
//! key material is on argv or in the environment (both readable in /proc). Its stderr is
//! logged; its stdout says `listening PORT ADDR` once bound and `stats JSON` every
//! [`STATS_EVERY`], kept for `/status`.

use super::Node;
use super::steps::{Boot, Failed, Note};
use crate::error::Error;
use crate::gateway::{self, GatewayConfig};
use super::helper::Helper;
use crate::supervisor::{Event, Stream, Supervisor};
use crate::vocab::Cidr;
use crate::{flower, tls};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How often the child prints its counters (what `/status` shows under `"gateway"`).
const STATS_EVERY: Duration = Duration::from_secs(2);
/// How long the boot waits for the child to bind its ports.
const BIND_WITHIN: Duration = Duration::from_secs(20);
/// Grace between SIGTERM and SIGKILL at shutdown (the gateway's own stop grace is 5 s).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The gateway's Control port on the VM: only when FL_CONTROL_ALLOW names sources, on the NIC
/// addresses. With it empty there is none, not even on loopback: Flower's container shares
/// the VM's network namespace, so on the VM loopback's only clients are Flower (and the app
/// code of every FAB it runs) and flower-init itself, and loopback must not get rights a host
/// on the network does not have (issue #14; docs/container.md "Network").
pub(super) fn control_port(allow: Vec<Cidr>, nic_addrs: &[IpAddr]) -> Option<gateway::ControlConfig> {
    (!allow.is_empty()).then(|| gateway::ControlConfig::from_allow(allow, nic_addrs, gateway::DEFAULT_CONTROL_PORT))
}

/// The child's command line for `cfg` (after the program): addresses, paths, the allow list.
pub(super) fn gateway_argv(cfg: &GatewayConfig) -> Vec<String> {
    let join = |v: &[SocketAddr]| v.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(",");
    let mut a = vec!["gateway".to_string(), "--listen".into(), join(&cfg.listen), "--upstream".into(), cfg.upstream.to_string()];
    if let Some(t) = &cfg.tls {
        a.extend(["--cert".into(), t.cert.display().to_string(), "--key".into(), t.key.display().to_string()]);
    }
    if let Some(ca) = &cfg.upstream_ca {
        a.extend(["--upstream-ca".into(), ca.display().to_string()]);
    }
    if let Some(c) = &cfg.control {
        a.extend(["--control-listen".into(), join(&c.listen)]);
        if !c.allow.is_empty() {
            a.extend(["--control-allow".into(), c.allow.iter().map(Cidr::to_string).collect::<Vec<_>>().join(",")]);
        }
    }
    a.extend(["--stats-every".into(), STATS_EVERY.as_secs().to_string(), "--log-level".into(), "info".into()]);
    a
}

/// A log line of the child (`[  12.345678] flower-init: warning: gateway: …`, crate::logger's
/// format) as its level and message, so that it is logged once, at its own level.
fn child_log_line(line: &str) -> (log::Level, &str) {
    let rest = line.strip_prefix('[').and_then(|r| r.split_once("] ")).map_or(line, |(_, r)| r);
    let rest = rest.strip_prefix("flower-init: ").unwrap_or(rest);
    for (word, level) in [("error: ", log::Level::Error), ("warning: ", log::Level::Warn), ("info: ", log::Level::Info), ("debug: ", log::Level::Debug)] {
        if let Some(msg) = rest.strip_prefix(word) {
            return (level, msg);
        }
    }
    (log::Level::Info, rest)
}

/// The gateway child: the helper process and its last counters.
pub(super) struct GatewayProc {
    pub(super) proc: Helper,
    stats: Option<serde_json::Value>,
    info: serde_json::Value,
}

impl GatewayProc {
    /// `/status`'s `"gateway"`: the last counters, the configuration, the process.
    pub(super) fn stats_json(&self) -> serde_json::Value {
        section(self.stats.clone(), &self.info, self.proc.pid.map(|p| p.as_raw()), self.proc.restarts)
    }

    /// A line of the child: counters are kept, the rest logged. False if not the gateway's.
    pub(super) fn on_line(&mut self, pid: Pid, stream: Stream, line: &str) -> bool {
        if self.proc.pid != Some(pid) {
            return false;
        }
        match (stream, line.strip_prefix("stats ").or_else(|| line.strip_prefix("stats-final "))) {
            (Stream::Stdout, Some(json)) => self.stats = serde_json::from_str(json).ok(),
            _ => {
                let (level, msg) = child_log_line(line);
                log::log!(level, "gateway[{pid}]: {msg}");
            }
        }
        true
    }

    /// The child exited: restart it after the back-off. False if not the gateway's pid.
    pub(super) fn on_exit(&mut self, sv: &mut Supervisor, pid: Pid, status: nix::sys::wait::WaitStatus) -> bool {
        if self.proc.pid != Some(pid) {
            return false;
        }
        // Its counters died with it; the next process starts from zero.
        self.stats = None;
        self.proc.on_exit(sv, status, "the gateway process");
        true
    }

    /// Re-read the certificate (SIGHUP); a gateway being restarted reads the new files anyway.
    pub(super) fn reload(&self) {
        if let Some(pid) = self.proc.pid {
            if let Err(e) = kill(pid, Signal::SIGHUP) {
                log::error!("gateway: SIGHUP to pid {pid}: {e}");
            }
        }
    }
}

/// `/status`'s `"gateway"` (and what `/metrics` reads): the child's last counters (none while
/// it starts or restarts), the configuration `info`, the process.
pub(super) fn section(stats: Option<serde_json::Value>, info: &serde_json::Value, pid: Option<i32>, restarts: u32) -> serde_json::Value {
    let mut v = stats.unwrap_or_else(|| serde_json::json!({}));
    if let (Some(obj), Some(info)) = (v.as_object_mut(), info.as_object()) {
        for (k, val) in info {
            obj.insert(k.clone(), val.clone());
        }
        obj.insert("process".into(), serde_json::json!({"pid": pid, "restarts": restarts}));
    }
    v
}

/// SuperLink: the Fleet-only gateway on the NIC addresses (issue #10), as a child process.
pub(super) fn start(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    let sl = node.cfg.role.superlink().cloned();
    let gw = boot.step("gateway", |b| {
        let listen: Vec<SocketAddr> = node.addrs.iter().map(|ip| SocketAddr::new(*ip, flower::SUPERLINK_PORT)).collect();
        if listen.is_empty() {
            return Ok((None, Note::Skip("no NIC address: Flower is reachable on loopback only".into())));
        }
        let allow = sl.map(|s| s.control_allow).unwrap_or_default();
        let runtime = b.layout.run_dir.join("tls");
        let tls_files = node.tls.as_ref().map(|_| gateway::ServerTlsFiles { cert: runtime.join(tls::SERVER_CERT), key: runtime.join(tls::SERVER_KEY) });
        let upstream_ca = node.tls.as_ref().map(|_| runtime.join(tls::CA_CERT));
        let cfg = GatewayConfig {
            listen: listen.clone(),
            control: control_port(allow, &node.addrs),
            tls: tls_files,
            upstream: SocketAddr::from(([127, 0, 0, 1], flower::SUPERLINK_PORT)),
            upstream_ca,
            limits: gateway::Limits::default(),
        };
        let ports = cfg.listen.len() + cfg.control.as_ref().map_or(0, |c| c.listen.len());
        let info = serde_json::json!({
            "tls": cfg.tls.is_some(),
            "upstream": cfg.upstream.to_string(),
            "upstream_tls": cfg.upstream_ca.is_some(),
            "control_allow": cfg.control.as_ref().map(|c| c.allow.iter().map(Cidr::to_string).collect::<Vec<_>>()),
        });
        let mut g = GatewayProc { proc: Helper::new("gateway", gateway_argv(&cfg), STOP_GRACE), stats: None, info };
        let pid = g.proc.spawn(&mut b.sv)?;
        // Bound, or exited: read its first lines without taking them (the loop logs them).
        let listening = |sv: &Supervisor| {
            sv.pending().filter(|e| matches!(e, Event::Line { pid: p, stream: Stream::Stdout, line, .. } if *p == pid && line.starts_with("listening "))).count()
        };
        let exited = |sv: &Supervisor| sv.pending().any(|e| matches!(e, Event::Exited { pid: p, .. } if *p == pid));
        b.sv.run_until(Instant::now() + BIND_WITHIN, |sv| listening(sv) >= ports || exited(sv));
        let addrs: Vec<String> = b
            .sv
            .pending()
            .filter_map(|e| match e {
                Event::Line { pid: p, stream: Stream::Stdout, line, .. } if *p == pid => line.strip_prefix("listening ").map(str::to_string),
                _ => None,
            })
            .collect();
        if addrs.len() < ports {
            let why: Vec<String> = b
                .sv
                .pending()
                .filter_map(|e| match e {
                    Event::Line { pid: p, stream: Stream::Stderr, line, .. } if *p == pid => Some(line.clone()),
                    _ => None,
                })
                .collect();
            let _ = kill(pid, Signal::SIGKILL);
            return Err(Error::msg("start the gateway process", format!("it did not bind its {ports} ports within {}s: {}", BIND_WITHIN.as_secs(), why.join(" | "))));
        }
        Ok((Some(g), Note::Ok(format!("pid {pid}: {}", addrs.join(", ")))))
    })?;
    node.gateway = gw;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{control_port, gateway_argv};
    use crate::gateway::{GatewayConfig, Limits, ServerTlsFiles};
    use crate::vocab::parse_cidr_list;
    use std::net::{IpAddr, SocketAddr};

    #[test]
    fn no_control_port_for_loopback_and_the_allowed_sources_on_the_nics() {
        let nic: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(control_port(Vec::new(), &[nic]), None, "FL_CONTROL_ALLOW empty: no Control port, not even on loopback");
        let allow = parse_cidr_list("10.0.0.0/24").unwrap();
        let c = control_port(allow.clone(), &[nic]).unwrap();
        assert_eq!(c.listen, vec![SocketAddr::new(nic, crate::gateway::DEFAULT_CONTROL_PORT)]);
        assert_eq!(c.allow, allow);
    }

    #[test]
    fn child_log_lines_keep_their_level_and_lose_the_prefix() {
        use super::child_log_line;
        assert_eq!(child_log_line("[ 8327.524763] flower-init: warning: gateway: slow client"), (log::Level::Warn, "gateway: slow client"));
        assert_eq!(child_log_line("[    1.000000] flower-init: error: gateway: x"), (log::Level::Error, "gateway: x"));
        assert_eq!(child_log_line("listening fleet 10.0.0.5:8000"), (log::Level::Info, "listening fleet 10.0.0.5:8000"));
    }

    #[test]
    fn the_gateway_child_gets_paths_and_addresses_never_key_material() {
        let nic: IpAddr = "10.0.0.5".parse().unwrap();
        let cfg = GatewayConfig {
            listen: vec![SocketAddr::new(nic, 8000)],
            control: control_port(parse_cidr_list("10.0.0.0/24, 2001:db8::/48").unwrap(), &[nic]),
            tls: Some(ServerTlsFiles { cert: "/run/flower-init/tls/server.pem".into(), key: "/run/flower-init/tls/server.key".into() }),
            upstream: "127.0.0.1:8000".parse().unwrap(),
            upstream_ca: Some("/run/flower-init/tls/ca.crt".into()),
            limits: Limits::default(),
        };
        let a = gateway_argv(&cfg);
        assert_eq!(
            a.join(" "),
            "gateway --listen 10.0.0.5:8000 --upstream 127.0.0.1:8000 --cert /run/flower-init/tls/server.pem \
             --key /run/flower-init/tls/server.key --upstream-ca /run/flower-init/tls/ca.crt \
             --control-listen 10.0.0.5:9093 --control-allow 10.0.0.0/24,2001:db8::/48 --stats-every 2 --log-level info"
        );
        // What the child parses back is the same configuration.
        let mut args = crate::args::Args::new(a[1..].to_vec());
        let (parsed, every, _) = crate::gateway::cli_parse(&mut args).unwrap();
        assert_eq!(parsed, cfg);
        assert_eq!(every, Some(std::time::Duration::from_secs(2)));
    }
}
