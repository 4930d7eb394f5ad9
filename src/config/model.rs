//! The validated configuration every other module takes its inputs from, grouped by concern.
//! Built only by [`super::resolve`]; nothing here needs parsing again.

use crate::vocab::{Framework, LogLevel, Role, Strategy, UseCase};
use super::OperatorPem;
use crate::net;
use crate::secret::Secret;
use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// Everything a VM of one role needs, validated together.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: Common,
    /// The role and its own settings.
    pub role: RoleConfig,
    pub tls: Tls,
    pub gpu: Gpu,
    /// Addresses, routes, DNS and host name (applied by `net`).
    pub network: net::Plan,
    /// FL_WG_*: the WireGuard overlay, when FL_WG_ADDRESS is set.
    pub wireguard: Option<super::WireGuard>,
    pub onegate: OneGate,
}

impl Config {
    /// The role this configuration is for.
    pub fn role(&self) -> Role {
        self.role.role()
    }
}

/// Settings of both roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// FLOWER_VERSION: equal to the image's (checked).
    pub flower_version: String,
    /// ML_FRAMEWORK: equal to the image's (checked).
    pub framework: Framework,
    pub use_case: UseCase,
    pub log_level: LogLevel,
    pub isolation: Isolation,
    /// FL_HEALTH_PORT.
    pub health_port: u16,
    /// FL_STATUS_ALLOW (default: FL_CONTROL_ALLOW's list): who besides loopback may read
    /// `/status`.
    pub status_allow: Vec<crate::vocab::Cidr>,
    /// SSH_PUBLIC_KEY, one key per line (recorded only: there is no sshd).
    pub ssh_public_keys: Vec<String>,
}

/// FL_ISOLATION, Flower's `--isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    Subprocess,
    Process,
}

/// The role with its own settings.
#[derive(Debug, Clone)]
pub enum RoleConfig {
    SuperLink(SuperLink),
    SuperNode(SuperNode),
}

impl RoleConfig {
    /// Which role the settings are for.
    pub fn role(&self) -> Role {
        match self {
            RoleConfig::SuperLink(_) => Role::SuperLink,
            RoleConfig::SuperNode(_) => Role::SuperNode,
        }
    }

    /// The SuperLink settings, if this is a SuperLink.
    pub fn superlink(&self) -> Option<&SuperLink> {
        match self {
            RoleConfig::SuperLink(s) => Some(s),
            RoleConfig::SuperNode(_) => None,
        }
    }

    /// The SuperNode settings, if this is a SuperNode.
    pub fn supernode(&self) -> Option<&SuperNode> {
        match self {
            RoleConfig::SuperNode(s) => Some(s),
            RoleConfig::SuperLink(_) => None,
        }
    }
}

/// SuperLink: training run settings (run-config of the bundled app) and Flower's state.
/// Strategy parameters are all present (defaults when unset); only those of `strategy` matter.
#[derive(Debug, Clone, PartialEq)]
pub struct SuperLink {
    pub num_rounds: u32,
    pub strategy: Strategy,
    pub min_fit_clients: u32,
    pub min_evaluate_clients: u32,
    pub min_available_clients: u32,
    /// FedProx μ (> 0).
    pub proximal_mu: f64,
    /// FedAdam η (> 0).
    pub server_lr: f64,
    /// Krum/Bulyan f (bounds checked against `min_fit_clients`).
    pub num_malicious: u32,
    /// FedTrimmedAvg β in [0, 0.5).
    pub trim_beta: f64,
    /// `None` when FL_CHECKPOINT_ENABLED=NO.
    pub checkpoint: Option<Checkpoint>,
    pub database: Database,
    /// FL_CONTROL_ALLOW: sources that may reach the Control API through the gateway's Control
    /// port; empty = loopback only.
    pub control_allow: Vec<crate::vocab::Cidr>,
    /// FL_SUPERNODE_AUTH (default YES): Flower's `--enable-supernode-auth` and the key
    /// registration (docs/node-auth.md). Already false when TLS is off (a warning said so).
    pub node_auth: bool,
    /// FL_SUPERNODE_KEYS: the entries as given (one OpenSSH public key each), with their
    /// 1-based position; parsed and checked by `tls::nodekey` (`check` and the boot warn about
    /// a bad one and go on with the others).
    pub node_keys: Vec<(usize, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Rounds between checkpoints.
    pub interval: u32,
    /// Directory on the state disk.
    pub path: PathBuf,
}

/// FL_DATABASE, Flower's `--database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// `:flwr-in-memory:` (SuperNodes must re-register after a SuperLink restart).
    InMemory,
    /// An SQLite file on the state disk.
    File(PathBuf),
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::InMemory => f.write_str(":flwr-in-memory:"),
            Database::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// SuperNode: where the SuperLink is and how to connect.
#[derive(Debug, Clone, PartialEq)]
pub struct SuperNode {
    /// FL_SUPERLINK_ADDRESS, or FL_JOIN's first endpoint; `None`: discover it through OneGate
    /// (then `onegate.is_usable()`).
    pub superlink: Option<Address>,
    /// FL_JOIN, decoded: the address above, and the CA and TLS flag in [`Tls`] come from it.
    pub join: Option<super::Join>,
    /// FL_NODE_CONFIG; `None`: compute `partition-id`/`num-partitions` from the OneFlow role.
    pub node_config: Option<super::NodeConfig>,
    /// `--max-retries`; `None` = unlimited (FL_MAX_RETRIES=0).
    pub max_retries: Option<u32>,
    /// `--max-wait-time`; `None` = unlimited (FL_MAX_WAIT_TIME=0).
    pub max_wait_time: Option<Duration>,
    /// OneGate look-ups for the SuperLink before giving up.
    pub discovery_retries: u32,
    pub discovery_interval: Duration,
    /// FL_SUPERNODE_AUTH as given; `None`: follow the SuperLink (its OneGate FL_NODE_AUTH or
    /// FL_JOIN's), else YES.
    pub node_auth: Option<bool>,
}

/// TLS inputs for `crate::tls`.
#[derive(Debug, Clone)]
pub struct Tls {
    /// FL_TLS_ENABLED as given; `None` when unset. The SuperLink defaults to YES
    /// ([`Tls::superlink_enabled`]); a SuperNode passes it to `tls::decide_supernode`, where
    /// `None` means "follow the SuperLink's OneGate FL_TLS".
    pub enabled: Option<bool>,
    /// SuperLink: FL_SSL_CA_CERTFILE, FL_SSL_CERTFILE, FL_SSL_KEYFILE resolved to PEM text
    /// (all three, or `None`: generate). Still to be validated by `tls::validate_operator`
    /// (`check` does). Ignored when [`Tls::superlink_enabled`] is false (a warning says so).
    pub operator: Option<OperatorPem>,
    /// SuperNode: FL_SSL_CA_CERTFILE resolved to PEM text (the CA to trust).
    pub ca_pem: Option<String>,
    /// SuperLink: FL_CERT_EXTRA_SANS.
    pub extra_sans: Vec<crate::vocab::San>,
    /// SuperNode: FL_ALLOW_PLAINTEXT_WAN=YES: plain text to a SuperLink that is not on this
    /// VM's networks is accepted (with a warning) instead of refused.
    pub allow_plaintext_wan: bool,
}

impl Tls {
    /// Whether a SuperLink serves TLS: FL_TLS_ENABLED, default YES.
    pub fn superlink_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

/// GPU inputs for `crate::gpu` (SuperNode; `enabled` is false on a SuperLink).
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub enabled: bool,
    pub devices: CudaDevices,
    /// In (0, 1].
    pub memory_fraction: f64,
}

/// FL_CUDA_VISIBLE_DEVICES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaDevices {
    All,
    Indices(Vec<u32>),
}

impl fmt::Display for CudaDevices {
    /// The `CUDA_VISIBLE_DEVICES` value (`all` is written as such; the gpu module maps it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaDevices::All => f.write_str("all"),
            CudaDevices::Indices(v) => f.write_str(&v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
        }
    }
}

/// OneGate client inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneGate {
    /// ONEGATE_ENDPOINT.
    pub endpoint: Option<Endpoint>,
    /// VMID (`X-ONEGATE-VMID`).
    pub vmid: Option<u64>,
    /// token.txt (trimmed), else ONEGATE_TOKEN (`X-ONEGATE-TOKEN`).
    pub token: Option<Secret>,
    /// REPORT_READY=YES: publish READY=YES.
    pub report_ready: bool,
}

impl OneGate {
    /// Endpoint, VMID and token are all known: OneGate can be called.
    pub fn is_usable(&self) -> bool {
        self.endpoint.is_some() && self.vmid.is_some() && self.token.is_some()
    }

    /// "ONEGATE_ENDPOINT and the token (…) are missing": what keeps OneGate from being usable;
    /// `None` when it is usable.
    pub fn missing(&self) -> Option<String> {
        let mut m = Vec::new();
        if self.endpoint.is_none() {
            m.push("ONEGATE_ENDPOINT");
        }
        if self.vmid.is_none() {
            m.push("VMID");
        }
        if self.token.is_none() {
            m.push("the token (token.txt or ONEGATE_TOKEN)");
        }
        match m.as_slice() {
            [] => None,
            [one] => Some(format!("{one} is missing")),
            [init @ .., last] => Some(format!("{} and {last} are missing", init.join(", "))),
        }
    }

    /// Why READY=YES cannot be reported although REPORT_READY=YES asks for it (OneGate is
    /// best-effort: a warning, Flower runs); `None` when it can, or is not asked for.
    pub fn ready_unreportable(&self) -> Option<String> {
        if !self.report_ready {
            return None;
        }
        self.missing().map(|m| {
            format!(
                "REPORT_READY='YES': READY=YES cannot be reported: {m} (TOKEN=YES in the VM template provides them); \
                 Flower runs anyway, but OneFlow's ready gate will not see this VM as ready"
            )
        })
    }
}

/// A parsed `http(s)://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// As given, without a trailing `/`.
    pub url: String,
    pub https: bool,
    pub host: Host,
    /// Explicit, else 80/443.
    pub port: u16,
    /// Path prefix, without a trailing `/` (usually empty).
    pub path: String,
}

impl Endpoint {
    /// A link-local (169.254.x.x) IPv4 host: it needs a link route (one-context does the same).
    pub fn link_local_v4(&self) -> Option<Ipv4Addr> {
        match self.host {
            Host::Ip(IpAddr::V4(a)) if a.is_link_local() => Some(a),
            _ => None,
        }
    }
}

/// An IP address or a DNS name (lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

impl Serialize for Host {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// `host:port`; displays IPv6 in brackets, as Flower's `--superlink` wants it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub host: Host,
    pub port: u16,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}
