//! Flower command lines for the pinned version and the readiness probe on `/health`. Issue #6.
//!
//! The command lines are argument vectors built from plain, validated inputs: no shell ever
//! sees them, so a context value (a node-config string, a path) reaches Flower as one literal
//! argument whatever characters it holds. Every flag was checked against `--help` of
//! flwr 1.42.0 (`flower-superlink`, `flower-supernode`; research/flower.md §1-2).

pub mod control;
pub mod probe;

pub use probe::{ProbeError, ProbeTls, Prober, probe};

use crate::config::Isolation;
use crate::container::{CERTS_DIR, CONTAINER_STATE_DIR, VENV_BIN};
use std::time::Duration;

/// Flower's HTTP port (Fleet, Control, Runtime APIs and `/health`).
pub const SUPERLINK_PORT: u16 = 8000;
/// The SuperNode's local Runtime API port (loopback; its `/health` too).
pub const SUPERNODE_RUNTIME_PORT: u16 = 9094;
/// The SQLite state of the SuperLink on the state directory (as the container sees it).
pub fn default_database() -> String {
    format!("{CONTAINER_STATE_DIR}/state.db")
}

/// TLS files of the SuperLink, as paths inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub ca_cert: String,
    pub cert: String,
    pub key: String,
}

impl ServerTls {
    /// `/certs/ca.crt`, `/certs/server.pem`, `/certs/server.key`: where
    /// `tls::ContainerFiles::bind_mounts(CERTS_DIR)` puts the files `tls` writes.
    pub fn in_certs_dir() -> ServerTls {
        use crate::tls::{CA_CERT, SERVER_CERT, SERVER_KEY};
        ServerTls {
            ca_cert: format!("{CERTS_DIR}/{CA_CERT}"),
            cert: format!("{CERTS_DIR}/{SERVER_CERT}"),
            key: format!("{CERTS_DIR}/{SERVER_KEY}"),
        }
    }

}

/// Where a SuperNode's authentication key is bound in the container (read-only).
pub const NODE_KEY_PATH: &str = "/certs/node.key";

/// `/certs/ca.crt`: where a SuperNode's trusted CA (`--root-certificates`) is bound.
pub fn supernode_ca_path() -> String {
    format!("{CERTS_DIR}/{}", crate::tls::CA_CERT)
}

/// Inputs of `flower-superlink`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperLinkArgs {
    /// `--host`: `0.0.0.0` in a VM (SuperNodes connect from other VMs).
    pub host: String,
    pub port: u16,
    /// `None`: `--insecure`.
    pub tls: Option<ServerTls>,
    /// `--database`: a file on the state directory, or `:flwr-in-memory:`.
    pub database: String,
    pub isolation: Isolation,
    /// `--enable-supernode-auth`: only SuperNodes whose public key is registered (Control
    /// API RegisterNode) may connect; Flower requires TLS for it.
    pub supernode_auth: bool,
}

/// Inputs of `flower-supernode`.
#[derive(Debug, Clone, PartialEq)]
pub struct SuperNodeArgs {
    /// `--superlink host:port` (IPv6 in brackets, no scheme).
    pub superlink: String,
    /// `--root-certificates` (path inside the container); `None`: `--insecure`.
    pub root_certificates: Option<String>,
    /// `--auth-supernode-private-key` (path inside the container): the node's OpenSSH EC
    /// key, so its requests are signed and a SuperLink with authentication accepts it.
    pub auth_private_key: Option<String>,
    /// `--node-config`, e.g. `partition-id=0 num-partitions=2` (TOML values), as one argument.
    pub node_config: Option<String>,
    /// `--max-retries`; `None`: unlimited (Flower's default).
    pub max_retries: Option<u32>,
    /// `--max-wait-time` (seconds); `None`: unlimited.
    pub max_wait_time: Option<Duration>,
    /// `--port` of the local Runtime API.
    pub runtime_port: u16,
    pub isolation: Isolation,
}

fn isolation_word(i: Isolation) -> &'static str {
    match i {
        Isolation::Subprocess => "subprocess",
        Isolation::Process => "process",
    }
}

/// `--flag=value` as one argument: argparse then takes the value literally even when it starts
/// with `-` (a separate `--node-config -h` would be read as another option).
fn opt(flag: &str, value: impl std::fmt::Display) -> String {
    format!("{flag}={value}")
}

/// `flower-superlink …`: serve on `host:port`, TLS or `--insecure`, persistent state, and no
/// per-run `uv sync` (the appliance is offline; the app's dependencies are in the image).
pub fn superlink_args(a: &SuperLinkArgs) -> Vec<String> {
    let mut v = vec![format!("{VENV_BIN}/flower-superlink")];
    match &a.tls {
        Some(t) => v.extend([
            opt("--ssl-ca-certfile", &t.ca_cert),
            opt("--ssl-certfile", &t.cert),
            opt("--ssl-keyfile", &t.key),
        ]),
        None => v.push("--insecure".into()),
    }
    v.extend([
        opt("--host", &a.host),
        opt("--port", a.port),
        opt("--database", &a.database),
        opt("--isolation", isolation_word(a.isolation)),
        "--disable-runtime-dependency-installation".into(),
    ]);
    if a.supernode_auth {
        v.push("--enable-supernode-auth".into());
    }
    v
}

/// `flower-supernode …`: connect to the SuperLink (TLS trusting the given CA, or
/// `--insecure`), with its node config and retry bounds; the Runtime API stays on loopback.
pub fn supernode_args(a: &SuperNodeArgs) -> Vec<String> {
    let mut v = vec![format!("{VENV_BIN}/flower-supernode"), opt("--superlink", &a.superlink)];
    match &a.root_certificates {
        Some(ca) => v.push(opt("--root-certificates", ca)),
        None => v.push("--insecure".into()),
    }
    if let Some(k) = &a.auth_private_key {
        v.push(opt("--auth-supernode-private-key", k));
    }
    if let Some(nc) = &a.node_config {
        v.push(opt("--node-config", nc));
    }
    if let Some(n) = a.max_retries {
        v.push(opt("--max-retries", n));
    }
    if let Some(d) = a.max_wait_time {
        v.push(opt("--max-wait-time", format_seconds(d)));
    }
    v.extend([
        opt("--host", "127.0.0.1"),
        opt("--port", a.runtime_port),
        opt("--isolation", isolation_word(a.isolation)),
    ]);
    v
}

/// Seconds as Flower's float argument: `30`, `2.5`.
fn format_seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 { d.as_secs().to_string() } else { format!("{}", d.as_secs_f64()) }
}

#[cfg(test)]
mod tests;
