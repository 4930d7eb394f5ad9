//! The table of every context variable flower-init reads: names, aliases, roles, defaults, rules
//! and documentation. The README reference is generated from it. Issue #2.
//!
//! One row per variable; `config` takes defaults and rules from here (a default is a string
//! parsed by the same rule as a context value), `check` prints it, and [`render_markdown`]
//! writes the README section between `<!-- vars:begin -->` and `<!-- vars:end -->`
//! (`make readme`; a unit test fails when README.md is out of date).

use serde::Serialize;

/// Which role reads a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Applies {
    Both,
    SuperLink,
    SuperNode,
}

impl Applies {
    /// Whether a VM of `role` reads the variable.
    pub fn to(self, role: crate::vocab::Role) -> bool {
        use crate::vocab::Role;
        matches!(
            (self, role),
            (Applies::Both, _) | (Applies::SuperLink, Role::SuperLink) | (Applies::SuperNode, Role::SuperNode)
        )
    }

    /// The README's role column.
    pub fn as_str(self) -> &'static str {
        match self {
            Applies::Both => "both",
            Applies::SuperLink => "SuperLink",
            Applies::SuperNode => "SuperNode",
        }
    }
}

/// The README groups variables by concern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Flower,
    Training,
    Tls,
    Gpu,
    Network,
    OneGate,
    OpenNebula,
}

impl Group {
    pub const ALL: [Group; 7] =
        [Group::Flower, Group::Training, Group::Tls, Group::Gpu, Group::Network, Group::OneGate, Group::OpenNebula];

    /// The README heading of the group.
    pub fn title(self) -> &'static str {
        match self {
            Group::Flower => "Flower and the appliance",
            Group::Training => "Training (SuperLink)",
            Group::Tls => "TLS",
            Group::Gpu => "GPU (SuperNode)",
            Group::Network => "Network (OpenNebula, `NETWORK=YES`)",
            Group::OneGate => "OneGate",
            Group::OpenNebula => "Other OpenNebula keys",
        }
    }
}

/// A bound of a float range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    None,
    Incl(f64),
    Excl(f64),
}

/// How a value is checked and typed. [`Rule::describe`] is both the README's rule column and
/// the text after "must be" in a problem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// `YES` or `NO`, any case.
    YesNo,
    /// One of these words, any case.
    Words(&'static [&'static str]),
    Int {
        min: i64,
        max: i64,
    },
    Float {
        lo: Bound,
        hi: Bound,
    },
    /// `X.Y.Z`.
    Semver,
    /// `host:port`, IPv6 in brackets.
    HostPort,
    /// A join value `flwr1:…` (`config::Join`).
    Join,
    /// Flower's `--node-config`: space-separated `key=value`, TOML values.
    NodeConfig,
    /// Base64 of a PEM file, or the name of a FILES_DS file on the context CD.
    PemOrFile,
    /// IP addresses and DNS names, separated by commas or spaces.
    SanList,
    /// IPv4/IPv6 networks (`10.0.0.0/24`, `2001:db8::/64`, or single addresses), by commas or spaces.
    CidrList,
    /// OpenSSH ECDSA public keys (NIST curves), one per line or separated by commas.
    PublicKeys,
    /// An IPv4 address with its prefix length (`10.99.0.1/24`).
    Ipv4Cidr,
    /// A WireGuard key: 32 bytes in base64, as `wg genkey` / `wg pubkey` print them.
    WgKey,
    /// WireGuard peers, one per line or separated by `;`: a public key, then `allowed=`,
    /// `endpoint=`, `keepalive=` (`config::wireguard`).
    WgPeers,
    /// `all` or a comma list of GPU indices.
    CudaDevices,
    /// An absolute path on the state disk (under `/var/lib/flower`).
    StatePath,
    /// A path on the state disk, or `:flwr-in-memory:`.
    Database,
    /// `http(s)://host[:port][/path]`.
    Url,
    /// `xx:xx:xx:xx:xx:xx`.
    Mac,
    Ipv4,
    Ipv6,
    /// Dotted netmask (contiguous) or prefix length 0-32.
    Netmask,
    /// IPv4/IPv6 addresses separated by spaces or commas.
    IpList,
    /// `dst via gw, …` or the legacy `dst mask gw, …`.
    Routes,
    /// DNS domains separated by spaces or commas.
    DomainList,
    /// Any text; sanitised as one-context does.
    Hostname,
    /// Free text, kept as is.
    Text,
    /// Read but not acted on (a warning says so).
    Ignored,
}

impl Rule {
    /// Human description: "an integer >= 1", "YES or NO", …
    pub fn describe(&self) -> String {
        match self {
            Rule::YesNo => "YES or NO".into(),
            Rule::Words(w) => format!("one of {}", w.join(", ")),
            Rule::Int { min, max } if *max == i64::MAX => format!("an integer >= {min}"),
            Rule::Int { min, max } => format!("an integer from {min} to {max}"),
            Rule::Float { lo, hi } => {
                let lo = match lo {
                    Bound::None => None,
                    Bound::Incl(v) => Some(format!(">= {v}")),
                    Bound::Excl(v) => Some(format!("> {v}")),
                };
                let hi = match hi {
                    Bound::None => None,
                    Bound::Incl(v) => Some(format!("<= {v}")),
                    Bound::Excl(v) => Some(format!("< {v}")),
                };
                match (lo, hi) {
                    (Some(l), Some(h)) => format!("a number {l} and {h}"),
                    (Some(b), None) | (None, Some(b)) => format!("a number {b}"),
                    (None, None) => "a number".into(),
                }
            }
            Rule::Semver => "a version X.Y.Z".into(),
            Rule::HostPort => "host:port (IPv6 in brackets: [2001:db8::1]:8000)".into(),
            Rule::Join => "a join value flwr1:… as the SuperLink shows it (its /status `join`, or its OneGate attribute FL_JOIN)".into(),
            Rule::NodeConfig => {
                "space-separated key=value pairs, values in TOML: 1, 0.5, true, \"text\" (as flower-supernode --node-config)"
                    .into()
            }
            Rule::PemOrFile => "base64 of a PEM file, or the name of a FILES_DS file on the context CD".into(),
            Rule::SanList => "IP addresses and DNS names, separated by commas or spaces".into(),
            Rule::PublicKeys => "OpenSSH ECDSA public keys on a NIST curve (`ecdsa-sha2-nistp256 AAAA… comment`, as `ssh-keygen` writes them; the base64 blob alone, as SuperNodes publish it in FL_NODE_PUBKEY, works too), one per line or separated by commas".into(),
            Rule::CidrList => "IPv4/IPv6 networks in CIDR notation (or single addresses), separated by commas or spaces".into(),
            Rule::Ipv4Cidr => "an IPv4 address with its prefix length, 1-32 (10.99.0.1/24)".into(),
            Rule::WgKey => "a WireGuard key: 32 bytes in base64, 44 characters (as `wg genkey` prints it)".into(),
            Rule::WgPeers => "WireGuard peers, one per line or separated by `;`: the peer's public key, then `allowed=NET[,NET…]` (required: the addresses routed to it, CIDR), `endpoint=IP:PORT` (where it listens; IPv6 in brackets) and `keepalive=SECONDS` (1-65535), each optional".into(),
            Rule::CudaDevices => "all, or a comma-separated list of GPU indices (0,1)".into(),
            Rule::StatePath => "an absolute path under /var/lib/flower (the state disk)".into(),
            Rule::Database => "a file path under /var/lib/flower (absolute, or relative to it), or :flwr-in-memory:".into(),
            Rule::Url => "a URL http://host:port".into(),
            Rule::Mac => "a MAC address xx:xx:xx:xx:xx:xx".into(),
            Rule::Ipv4 => "an IPv4 address".into(),
            Rule::Ipv6 => "an IPv6 address".into(),
            Rule::Netmask => "a netmask like 255.255.255.0 (contiguous) or a prefix length 0-32".into(),
            Rule::IpList => "IP addresses separated by spaces or commas".into(),
            Rule::Routes => "routes \"DST via GW, …\" (DST an address or CIDR) or \"DST MASK GW, …\"".into(),
            Rule::DomainList => "DNS domains separated by spaces or commas".into(),
            Rule::Hostname => "a host name (characters other than letters, digits, '-' and '.' become '-')".into(),
            Rule::Text => "text".into(),
            Rule::Ignored => "anything (not used: see the description)".into(),
        }
    }
}

/// A default: a value parsed by the variable's rule, or a description of where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    Value(&'static str),
    /// Taken from the image manifest.
    Image,
    /// No value; the text says what that means.
    Unset(&'static str),
}

/// One context variable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Var {
    /// Canonical name; `ETH<n>_…` rows stand for every NIC (`ETH0_IP`, `ETH1_IP`, …).
    pub name: &'static str,
    /// Other accepted names. Giving two of them with different values is an error.
    pub aliases: &'static [&'static str],
    pub applies: Applies,
    pub default: DefaultValue,
    pub rule: Rule,
    pub group: Group,
    /// Never printed (check's plan shows `<redacted N bytes>`).
    pub secret: bool,
    pub doc: &'static str,
}

/// Rows in README order. `v!` fills the common fields.
macro_rules! v {
    ($name:literal, [$($alias:literal),*], $applies:ident, $default:expr, $rule:expr, $group:ident, $doc:literal) => {
        Var { name: $name, aliases: &[$($alias),*], applies: Applies::$applies, default: $default, rule: $rule,
              group: Group::$group, secret: false, doc: $doc }
    };
    ($name:literal, [$($alias:literal),*], $applies:ident, $default:expr, $rule:expr, $group:ident, secret, $doc:literal) => {
        Var { name: $name, aliases: &[$($alias),*], applies: Applies::$applies, default: $default, rule: $rule,
              group: Group::$group, secret: true, doc: $doc }
    };
}

use self::DefaultValue::{Image, Unset, Value};

const fn int(min: i64, max: i64) -> Rule {
    Rule::Int { min, max }
}
const MAX: i64 = i64::MAX;

/// Strategy words, in `config::Strategy` order (a test keeps them equal).
pub const STRATEGIES: &[&str] = &["FedAvg", "FedProx", "FedAdam", "Krum", "Bulyan", "FedTrimmedAvg"];
pub const USE_CASES: &[&str] = &["none", "image-classification", "tabular-classification", "llm-fine-tuning"];
pub const FRAMEWORKS: &[&str] = &["pytorch", "tensorflow", "sklearn"];
pub const LOG_LEVELS: &[&str] = &["DEBUG", "INFO", "WARNING", "ERROR"];
pub const ROLES: &[&str] = &["superlink", "supernode"];
pub const ISOLATIONS: &[&str] = &["subprocess", "process"];
pub const METHODS: &[&str] = &["static", "skip", "dhcp"];
pub const METHODS6: &[&str] = &["static", "auto", "dhcp", "disable", "skip"];

/// Every variable flower-init reads.
#[rustfmt::skip]
pub const VARS: &[Var] = &[
    // Flower and the appliance.
    v!("FL_ROLE", ["ONEAPP_FL_ROLE"], Both, Image, Rule::Words(ROLES), Flower,
       "Which Flower component this VM runs. `flower-init check --role` overrides it; else the image's role; one of them must say."),
    v!("FLOWER_VERSION", ["ONEAPP_FLOWER_VERSION"], Both, Image, Rule::Semver, Flower,
       "Must equal the Flower version baked into the image: nothing is downloaded at boot."),
    v!("ML_FRAMEWORK", ["ONEAPP_ML_FRAMEWORK", "ONEAPP_FL_FRAMEWORK"], Both, Image, Rule::Words(FRAMEWORKS), Flower,
       "Must equal the image variant's framework (no fallback to another variant). `ONEAPP_FL_FRAMEWORK` is the existing public appliance's name."),
    v!("FL_USE_CASE", ["ONEAPP_FL_USE_CASE"], Both, Value("none"), Rule::Words(USE_CASES), Flower,
       "Bundled use case to run; `none` leaves the SuperLink idle for `flwr run`. Must be shipped by the image and fit its framework (tabular: sklearn; LLM: pytorch)."),
    v!("FL_LOG_LEVEL", ["ONEAPP_FL_LOG_LEVEL"], Both, Value("INFO"), Rule::Words(LOG_LEVELS), Flower,
       "Log level of flower-init and Flower (`FLWR_LOG_LEVEL`)."),
    v!("FL_ISOLATION", ["ONEAPP_FL_ISOLATION"], Both, Value("subprocess"), Rule::Words(ISOLATIONS), Flower,
       "Flower's `--isolation`: `subprocess` runs the ServerApp/ClientApp inside the Flower container; `process` expects a separate SuperExec."),
    v!("FL_HEALTH_PORT", ["ONEAPP_FL_HEALTH_PORT"], Both, Value("8081"), int(1, 65535), Flower,
       "TCP port of flower-init's health endpoint (`GET /health`, `/status`, `/metrics`); not 8000 or 9094 (Flower's)."),
    v!("FL_STATUS_ALLOW", ["ONEAPP_FL_STATUS_ALLOW"], Both, Unset("FL_CONTROL_ALLOW's networks (loopback only when that is empty)"), Rule::CidrList, Flower,
       "Sources allowed to read `/status` and `/metrics` on the health port (boot timeline, container output, allow lists, versions; Prometheus metrics): add your Prometheus host here. Loopback always may, others get 403. `/health` stays open to every source (short body)."),
    v!("FL_DATABASE", ["ONEAPP_FL_DATABASE"], SuperLink, Value("state.db"), Rule::Database, Flower,
       "SuperLink `--database`: persistent state, so SuperNodes survive a SuperLink restart. Relative paths are under /var/lib/flower."),
    // Training.
    v!("FL_NUM_ROUNDS", ["ONEAPP_FL_NUM_ROUNDS"], SuperLink, Value("3"), int(1, 1_000_000), Training,
       "Federated rounds of the bundled use case."),
    v!("FL_STRATEGY", ["ONEAPP_FL_STRATEGY"], SuperLink, Value("FedAvg"), Rule::Words(STRATEGIES), Training,
       "Aggregation strategy (Flower's Message-API class of that name), any case."),
    v!("FL_MIN_FIT_CLIENTS", ["ONEAPP_FL_MIN_FIT_CLIENTS"], SuperLink, Value("2"), int(1, 100_000), Training,
       "SuperNodes sampled for training per round (n of the Krum/Bulyan bounds)."),
    v!("FL_MIN_EVALUATE_CLIENTS", ["ONEAPP_FL_MIN_EVALUATE_CLIENTS"], SuperLink, Value("2"), int(1, 100_000), Training,
       "SuperNodes sampled for evaluation per round."),
    v!("FL_MIN_AVAILABLE_CLIENTS", ["ONEAPP_FL_MIN_AVAILABLE_CLIENTS"], SuperLink, Value("2"), int(1, 100_000), Training,
       "SuperNodes that must be connected before a round starts; fit or evaluate above it is a warning."),
    v!("FL_PROXIMAL_MU", ["ONEAPP_FL_PROXIMAL_MU"], SuperLink, Value("0.1"), Rule::Float { lo: Bound::Excl(0.0), hi: Bound::None }, Training,
       "FedProx proximal term μ."),
    v!("FL_SERVER_LR", ["ONEAPP_FL_SERVER_LR"], SuperLink, Value("0.1"), Rule::Float { lo: Bound::Excl(0.0), hi: Bound::None }, Training,
       "FedAdam server learning rate η."),
    v!("FL_NUM_MALICIOUS", ["ONEAPP_FL_NUM_MALICIOUS"], SuperLink, Value("0"), int(0, 100_000), Training,
       "Krum/Bulyan: tolerated malicious SuperNodes f. Krum needs n >= 2f+3, Bulyan n >= 4f+3 (n = FL_MIN_FIT_CLIENTS); Flower does not check, flower-init does."),
    v!("FL_TRIM_BETA", ["ONEAPP_FL_TRIM_BETA"], SuperLink, Value("0.2"), Rule::Float { lo: Bound::Incl(0.0), hi: Bound::Excl(0.5) }, Training,
       "FedTrimmedAvg: fraction cut from each end."),
    v!("FL_CHECKPOINT_ENABLED", ["ONEAPP_FL_CHECKPOINT_ENABLED"], SuperLink, Value("NO"), Rule::YesNo, Training,
       "Save the global model as .npz after every FL_CHECKPOINT_INTERVAL rounds, plus checkpoint_latest.npz and checkpoint_latest.json."),
    v!("FL_CHECKPOINT_INTERVAL", ["ONEAPP_FL_CHECKPOINT_INTERVAL"], SuperLink, Value("1"), int(1, 1_000_000), Training,
       "Rounds between checkpoints."),
    v!("FL_CHECKPOINT_PATH", ["ONEAPP_FL_CHECKPOINT_PATH"], SuperLink, Value("/var/lib/flower/checkpoints"), Rule::StatePath, Training,
       "Checkpoint directory, on the state disk."),
    // TLS.
    v!("FL_TLS_ENABLED", ["ONEAPP_FL_TLS_ENABLED"], Both, Unset("SuperLink: YES; SuperNode: follow the SuperLink's OneGate FL_TLS"), Rule::YesNo, Tls,
       "SuperLink: serve TLS (default YES). SuperNode: YES requires TLS, NO forces plain text, unset follows the SuperLink (a CA in FL_SSL_CA_CERTFILE also means TLS)."),
    v!("FL_SSL_CA_CERTFILE", ["ONEAPP_FL_SSL_CA_CERTFILE"], Both, Unset("SuperLink: self-generated CA; SuperNode: OneGate FL_CA_CERT"), Rule::PemOrFile, Tls,
       "CA certificate. SuperLink: with FL_SSL_CERTFILE and FL_SSL_KEYFILE (all three or none). SuperNode: the CA to trust."),
    v!("FL_SSL_CERTFILE", ["ONEAPP_FL_SSL_CERTFILE"], SuperLink, Unset("self-generated"), Rule::PemOrFile, Tls,
       "SuperLink server certificate (chain), signed by FL_SSL_CA_CERTFILE."),
    v!("FL_SSL_KEYFILE", ["ONEAPP_FL_SSL_KEYFILE"], SuperLink, Unset("self-generated"), Rule::PemOrFile, Tls, secret,
       "SuperLink server private key."),
    v!("FL_ALLOW_PLAINTEXT_WAN", ["ONEAPP_FL_ALLOW_PLAINTEXT_WAN"], SuperNode, Value("NO"), Rule::YesNo, Tls,
       "Without TLS, a SuperNode refuses a SuperLink address that is not on one of its own networks (the `ETH<n>_IP`/`ETH<n>_MASK` and IPv6 prefixes of the context; a DNS name counts as elsewhere): plain text would cross sites. YES accepts it, with a loud warning."),
    v!("FL_CERT_EXTRA_SANS", ["ONEAPP_FL_CERT_EXTRA_SANS"], SuperLink, Unset("none"), Rule::SanList, Tls,
       "Extra names for the generated server certificate (floating IPs, VPN addresses, DNS names) besides the NIC addresses, 127.0.0.1, ::1 and localhost."),
    v!("FL_CONTROL_ALLOW", ["ONEAPP_FL_CONTROL_ALLOW"], SuperLink, Unset("no Control port"), Rule::CidrList, Tls,
       "Sources allowed to use Flower's Control API (start/stop runs) on port 9093 of the NIC addresses; empty: no Control port at all (not even on loopback, which Flower's container shares). The Fleet port (8000) never serves Control."),
    v!("FL_SUPERNODE_AUTH", ["ONEAPP_FL_SUPERNODE_AUTH"], Both, Unset("SuperLink: YES (with TLS); SuperNode: follow the SuperLink's OneGate FL_NODE_AUTH or FL_JOIN, else YES"), Rule::YesNo, Tls,
       "SuperNode authentication (docs/node-auth.md). SuperLink: YES runs Flower with `--enable-supernode-auth`: only SuperNodes whose public key is registered may join; flower-init registers the keys of its OneFlow service's SuperNodes (their FL_NODE_PUBKEY) and FL_SUPERNODE_KEYS, and unregisters VMs that left the service. NO lets any host that reaches the Fleet port join (a loud warning). Needs TLS: with FL_TLS_ENABLED=NO it is off. SuperNode: YES signs its requests with its own key (made at first boot, kept on the state disk, published as FL_NODE_PUBKEY); a SuperLink that publishes FL_NODE_AUTH decides."),
    v!("FL_SUPERNODE_KEYS", ["ONEAPP_FL_SUPERNODE_KEYS"], SuperLink, Unset("none"), Rule::PublicKeys, Tls,
       "Public keys of SuperNodes outside this OneFlow service (other sites, VMs elsewhere) to register as well: their FL_NODE_PUBKEY, or `/status` `node_auth.public_key`. A malformed entry is skipped with a warning naming it; the others are registered."),
    // SuperNode.
    v!("FL_SUPERLINK_ADDRESS", ["ONEAPP_FL_SUPERLINK_ADDRESS"], SuperNode, Unset("discovered through OneGate"), Rule::HostPort, Flower,
       "The SuperLink's address; skips OneGate discovery."),
    v!("FL_JOIN", ["ONEAPP_FL_JOIN"], SuperNode, Unset("FL_SUPERLINK_ADDRESS, FL_SSL_CA_CERTFILE and FL_TLS_ENABLED, or OneGate discovery"), Rule::Join, Flower,
       "Everything needed to join a SuperLink at another site in one value: its endpoint, its CA certificate (with the SHA-256) and whether it serves TLS. Copy it from the SuperLink (`/status` `join`, or its OneGate FL_JOIN). Replaces FL_SUPERLINK_ADDRESS, FL_SSL_CA_CERTFILE and FL_TLS_ENABLED (giving FL_SUPERLINK_ADDRESS or FL_SSL_CA_CERTFILE as well is an error, FL_TLS_ENABLED may only agree) and skips OneGate discovery of the SuperLink (OneGate still gives the partition)."),
    v!("FL_NODE_CONFIG", ["ONEAPP_FL_NODE_CONFIG"], SuperNode, Unset("partition-id/num-partitions from the OneFlow role"), Rule::NodeConfig, Flower,
       "Flower `--node-config`, e.g. `partition-id=0 num-partitions=2 name=\"site-a\"`."),
    v!("FL_MAX_RETRIES", ["ONEAPP_FL_MAX_RETRIES"], SuperNode, Value("0"), int(0, MAX), Flower,
       "flower-supernode `--max-retries` on connection failures; 0 = unlimited."),
    v!("FL_MAX_WAIT_TIME", ["ONEAPP_FL_MAX_WAIT_TIME"], SuperNode, Value("0"), int(0, MAX), Flower,
       "flower-supernode `--max-wait-time` in seconds; 0 = unlimited."),
    v!("FL_DISCOVERY_RETRIES", ["ONEAPP_FL_DISCOVERY_RETRIES"], SuperNode, Value("30"), int(1, 100_000), Flower,
       "OneGate look-ups for the SuperLink's FL_ENDPOINT before giving up."),
    v!("FL_DISCOVERY_INTERVAL", ["ONEAPP_FL_DISCOVERY_INTERVAL"], SuperNode, Value("10"), int(1, 3600), Flower,
       "Seconds between OneGate look-ups."),
    // GPU.
    v!("FL_GPU_ENABLED", ["ONEAPP_FL_GPU_ENABLED"], SuperNode, Value("NO"), Rule::YesNo, Gpu,
       "Give the Flower container the passed-through GPUs; none found is a warning (CPU fallback)."),
    v!("FL_CUDA_VISIBLE_DEVICES", ["ONEAPP_FL_CUDA_VISIBLE_DEVICES"], SuperNode, Value("all"), Rule::CudaDevices, Gpu,
       "Which GPUs the container sees (`CUDA_VISIBLE_DEVICES`)."),
    v!("FL_GPU_MEMORY_FRACTION", ["ONEAPP_FL_GPU_MEMORY_FRACTION"], SuperNode, Value("1.0"), Rule::Float { lo: Bound::Excl(0.0), hi: Bound::Incl(1.0) }, Gpu,
       "Fraction of each GPU's memory the framework may use."),
    // WireGuard overlay (issue #20, docs/multisite.md).
    v!("FL_WG_ADDRESS", ["ONEAPP_FL_WG_ADDRESS"], Both, Unset("no WireGuard overlay"), Rule::Ipv4Cidr, Network,
       "This VM's address in a WireGuard overlay between the sites (interface `wg0`, set up before Flower starts). The SuperLink is the hub: its tunnel address joins its certificate's SANs and its join value; a SuperNode then uses it as FL_SUPERLINK_ADDRESS (TLS stays on inside the tunnel). Every other FL_WG_* variable needs this one."),
    v!("FL_WG_PRIVATE_KEY", ["ONEAPP_FL_WG_PRIVATE_KEY"], Both, Unset("made at first boot, kept on the state disk"), Rule::WgKey, Network, secret,
       "The overlay's private key. Unset: flower-init makes one at first boot and keeps it on the state disk; either way the public key is in `/status` (`wireguard.public_key`) and the console, to give to the peers."),
    v!("FL_WG_LISTEN_PORT", ["ONEAPP_FL_WG_LISTEN_PORT"], Both, Value("51820"), int(1, 65535), Network,
       "UDP port of the overlay (the hub's must be reachable by the peers: forward it through NAT)."),
    v!("FL_WG_PEERS", ["ONEAPP_FL_WG_PEERS"], Both, Unset("none"), Rule::WgPeers, Network,
       "The overlay's peers. The SuperLink lists each SuperNode (`allowed=` its tunnel address/32); a SuperNode lists the SuperLink with `endpoint=` its public address and port, `allowed=` the overlay's network, and `keepalive=25` when it is behind NAT."),
    // Network.
    v!("NETWORK", [], Both, Unset("no ETH<n>_* keys"), Rule::YesNo, Network,
       "OpenNebula writes the ETH<n>_* keys only with NETWORK=YES; flower-init uses whatever ETH<n>_* keys are present."),
    v!("ETH<n>_MAC", [], Both, Unset("NIC not configured"), Rule::Mac, Network,
       "Matches the NIC (by MAC, any case). Every other ETH<n>_* key needs it."),
    v!("ETH<n>_METHOD", [], Both, Value("static"), Rule::Words(METHODS), Network,
       "`static` configures ETH<n>_IP; `skip` leaves the NIC alone; `dhcp`: there is no DHCP client, so the address OpenNebula leased (ETH<n>_IP) is configured statically with a warning, and without ETH<n>_IP it is an error."),
    v!("ETH<n>_IP", [], Both, Unset("no IPv4 address"), Rule::Ipv4, Network, "IPv4 address."),
    v!("ETH<n>_MASK", [], Both, Value("255.255.255.0"), Rule::Netmask, Network, "IPv4 netmask."),
    v!("ETH<n>_GATEWAY", [], Both, Unset("no default route"), Rule::Ipv4, Network, "IPv4 default gateway."),
    v!("ETH<n>_METRIC", [], Both, Unset("kernel default"), int(0, u32::MAX as i64), Network,
       "Metric of the default route."),
    v!("ETH<n>_MTU", [], Both, Unset("kernel default"), int(68, 65535), Network, "Link MTU."),
    v!("ETH<n>_ROUTES", [], Both, Unset("none"), Rule::Routes, Network, "Static IPv4 routes."),
    v!("ETH<n>_DNS", [], Both, Unset("none"), Rule::IpList, Network, "Name servers, after the global DNS."),
    v!("ETH<n>_SEARCH_DOMAIN", [], Both, Unset("none"), Rule::DomainList, Network,
       "Search domains, after the global SEARCH_DOMAIN."),
    v!("ETH<n>_IP6", ["ETH<n>_IPV6"], Both, Unset("no static IPv6"), Rule::Ipv6, Network,
       "Static IPv6 address (ETH<n>_IPV6 is the legacy name)."),
    v!("ETH<n>_IP6_PREFIX_LENGTH", [], Both, Value("64"), int(0, 128), Network,
       "Prefix length of ETH<n>_IP6 and ETH<n>_IP6_ULA."),
    v!("ETH<n>_IP6_ULA", [], Both, Unset("none"), Rule::Ipv6, Network, "Unique local IPv6 address."),
    v!("ETH<n>_IP6_GATEWAY", ["ETH<n>_GATEWAY6"], Both, Unset("no IPv6 default route"), Rule::Ipv6, Network,
       "IPv6 default gateway."),
    v!("ETH<n>_IP6_METHOD", [], Both, Unset("ETH<n>_METHOD"), Rule::Words(METHODS6), Network,
       "`static` configures ETH<n>_IP6; `auto` leaves SLAAC to the kernel; `skip` and `disable` configure no IPv6 address; `dhcp` configures ETH<n>_IP6 statically when given, with a warning (no DHCPv6 client; otherwise SLAAC only)."),
    v!("DNS", [], Both, Unset("none"), Rule::IpList, Network, "Name servers for resolv.conf, before every ETH<n>_DNS."),
    v!("SEARCH_DOMAIN", [], Both, Unset("none"), Rule::DomainList, Network,
       "resolv.conf search list, before every ETH<n>_SEARCH_DOMAIN."),
    v!("SET_HOSTNAME", [], Both, Unset("HOSTNAME"), Rule::Hostname, Network,
       "Host name, sanitised as one-context does; a domain part (after the first '.') joins the search list."),
    v!("HOSTNAME", [], Both, Unset("unchanged"), Rule::Hostname, Network, "Host name when SET_HOSTNAME is unset."),
    // OneGate.
    v!("ONEGATE_ENDPOINT", [], Both, Unset("OneGate not used"), Rule::Url, OneGate,
       "OneGate server (written with TOKEN=YES). A 169.254.x.x host gets a link route on the first static NIC."),
    v!("VMID", [], Both, Unset("none"), int(0, MAX), OneGate, "This VM's ID, the `X-ONEGATE-VMID` header."),
    v!("TOKEN", [], Both, Value("NO"), Rule::YesNo, OneGate, "YES puts token.txt (the OneGate token) on the CD."),
    v!("ONEGATE_TOKEN", [], Both, Unset("token.txt"), Rule::Text, OneGate, secret,
       "OneGate token when there is no token.txt (vCenter)."),
    v!("REPORT_READY", [], Both, Value("NO"), Rule::YesNo, OneGate,
       "Publish READY=YES (with the FL_* attributes) once Flower answers; OneFlow's ready gate waits for it. Best-effort: without a usable OneGate (e.g. TOKEN=YES but no token) a warning, Flower still runs."),
    // Other OpenNebula keys.
    v!("SSH_PUBLIC_KEY", [], Both, Unset("none"), Rule::Text, OpenNebula,
       "Recorded (shown by `check`); there is no sshd in the appliance."),
    v!("START_SCRIPT", [], Both, Unset("none"), Rule::Ignored, OpenNebula,
       "Cannot run: the appliance has no shell. A warning says so."),
    v!("START_SCRIPT_BASE64", [], Both, Unset("none"), Rule::Ignored, OpenNebula,
       "Cannot run: the appliance has no shell. A warning says so."),
];

/// Where the OneFlow service template (`flower-init oneflow-template`) offers a variable as a
/// user input. Service-level inputs reach every VM of the service; role-level ones only that
/// role's VMs (OneFlow 7 `Service#generate_template_contents`: the role's value wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Service,
    SuperLink,
    SuperNode,
}

/// The template's user inputs, in template order. Variables not listed are not offered (OpenNebula
/// keys, FL_ROLE which each role's CONTEXT fixes, advanced knobs such as FL_DATABASE); they can
/// still be added to a VM template's CONTEXT. FL_USE_CASE is service-level because both roles
/// need the same value (the SuperLink submits the app, the SuperNodes run its ClientApp).
pub const OFFERS: &[(&str, Offer)] = &[
    ("FLOWER_VERSION", Offer::Service),
    ("FL_TLS_ENABLED", Offer::Service),
    ("FL_LOG_LEVEL", Offer::Service),
    ("FL_USE_CASE", Offer::Service),
    ("FL_NUM_ROUNDS", Offer::SuperLink),
    ("FL_STRATEGY", Offer::SuperLink),
    ("FL_MIN_FIT_CLIENTS", Offer::SuperLink),
    ("FL_MIN_EVALUATE_CLIENTS", Offer::SuperLink),
    ("FL_MIN_AVAILABLE_CLIENTS", Offer::SuperLink),
    ("FL_PROXIMAL_MU", Offer::SuperLink),
    ("FL_SERVER_LR", Offer::SuperLink),
    ("FL_NUM_MALICIOUS", Offer::SuperLink),
    ("FL_TRIM_BETA", Offer::SuperLink),
    ("FL_CHECKPOINT_ENABLED", Offer::SuperLink),
    ("FL_CHECKPOINT_INTERVAL", Offer::SuperLink),
    ("FL_CHECKPOINT_PATH", Offer::SuperLink),
    ("FL_SSL_CA_CERTFILE", Offer::SuperLink),
    ("FL_SSL_CERTFILE", Offer::SuperLink),
    ("FL_SSL_KEYFILE", Offer::SuperLink),
    ("FL_CERT_EXTRA_SANS", Offer::SuperLink),
    ("FL_CONTROL_ALLOW", Offer::SuperLink),
    ("ML_FRAMEWORK", Offer::SuperNode),
    ("FL_NODE_CONFIG", Offer::SuperNode),
    ("FL_SUPERLINK_ADDRESS", Offer::SuperNode),
    ("FL_JOIN", Offer::SuperNode),
    ("FL_MAX_RETRIES", Offer::SuperNode),
    ("FL_MAX_WAIT_TIME", Offer::SuperNode),
    ("FL_DISCOVERY_RETRIES", Offer::SuperNode),
    ("FL_DISCOVERY_INTERVAL", Offer::SuperNode),
    ("FL_GPU_ENABLED", Offer::SuperNode),
    ("FL_CUDA_VISIBLE_DEVICES", Offer::SuperNode),
    ("FL_GPU_MEMORY_FRACTION", Offer::SuperNode),
];

/// Where the template offers `v`, if at all.
pub fn offer(v: &Var) -> Option<Offer> {
    OFFERS.iter().find(|(n, _)| *n == v.name).map(|(_, o)| *o)
}

/// The row for a concrete name: exact names, aliases, and `ETH<n>_…` patterns (`ETH12_IP`).
/// Returns the row and the pattern's NIC number when it matched one.
pub fn lookup(name: &str) -> Option<(&'static Var, Option<u32>)> {
    if let Some(v) = VARS.iter().find(|v| v.name == name || v.aliases.contains(&name)) {
        return Some((v, None));
    }
    let (n, suffix) = split_eth(name)?;
    VARS.iter()
        .find(|v| {
            v.name.strip_prefix("ETH<n>_") == Some(suffix)
                || v.aliases.iter().any(|a| a.strip_prefix("ETH<n>_") == Some(suffix))
        })
        .map(|v| (v, Some(n)))
}

/// `ETH12_IP6_GATEWAY` → (12, "IP6_GATEWAY").
pub fn split_eth(name: &str) -> Option<(u32, &str)> {
    let rest = name.strip_prefix("ETH")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let n = rest[..digits].parse().ok()?;
    Some((n, rest[digits..].strip_prefix('_')?))
}

/// The row of a name (canonical, alias or `ETH<n>_…`), without the NIC number.
pub fn var(name: &str) -> Option<&'static Var> {
    lookup(name).map(|(v, _)| v)
}

/// Substitute the NIC number into a pattern name (`ETH<n>_IP`, 1 → `ETH1_IP`).
pub fn nic_name(pattern: &str, n: u32) -> String {
    pattern.replace("<n>", &n.to_string())
}

/// Levenshtein distance, for "did you mean" on unknown FL_* variables.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known name closest to `name` (case-insensitive), if close enough to be a typo.
pub fn closest(name: &str) -> Option<&'static str> {
    let up = name.to_ascii_uppercase();
    VARS.iter()
        .filter(|v| !v.name.contains('<'))
        .flat_map(|v| std::iter::once(v.name).chain(v.aliases.iter().copied()))
        .map(|cand| (distance(&up, cand), cand))
        .filter(|(d, cand)| *d <= (cand.len() / 4).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, cand)| cand)
}

/// Markdown for a table cell: `|` escaped, and `ETH<n>_…` words put in code spans outside
/// them (a bare `<n>` would be read as an HTML tag).
fn cell(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.replace('|', "\\|").replace('\n', " ").split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 {
            out.push_str(part);
            continue;
        }
        let words: Vec<String> = part
            .split(' ')
            .map(|w| {
                let core = w.trim_end_matches(['.', ',', ';', ':', ')']);
                let lead = core.len() - core.trim_start_matches('(').len();
                if core.contains("<n>") {
                    format!("{}`{}`{}", &core[..lead], &core[lead..], &w[core.len()..])
                } else {
                    w.to_string()
                }
            })
            .collect();
        out.push_str(&words.join(" "));
    }
    out
}

/// The README's variable reference: one table per [`Group`].
pub fn render_markdown() -> String {
    let mut out = String::from(
        "Generated from `src/vars.rs` (`make readme`). Empty values count as unset. Each `FL_*` variable is also \
         accepted as `ONEAPP_FL_*` (the one-apps convention of the existing public appliance); giving two names of \
         one variable with different values is an error. `ETH<n>_*` stands for every NIC (`ETH0_IP`, `ETH1_IP`, …). \
         Unknown `FL_*` variables are warnings naming the closest known one.\n",
    );
    for g in Group::ALL {
        out.push_str(&format!(
            "\n### {}\n\n| variable | role | default | rule | description |\n|---|---|---|---|---|\n",
            g.title()
        ));
        for v in VARS.iter().filter(|v| v.group == g) {
            let mut names = format!("`{}`", v.name);
            if !v.aliases.is_empty() {
                let a: Vec<String> = v.aliases.iter().map(|a| format!("`{a}`")).collect();
                names.push_str(&format!(" ({})", a.join(", ")));
            }
            let default = match v.default {
                Value(s) => format!("`{s}`"),
                Image => "the image's".into(),
                Unset(s) => s.to_string(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                cell(&names),
                v.applies.as_str(),
                cell(&default),
                cell(&v.rule.describe()),
                cell(v.doc)
            ));
        }
    }
    out
}

pub const README_BEGIN: &str = "<!-- vars:begin -->";
pub const README_END: &str = "<!-- vars:end -->";

/// README text with the section between the markers replaced by [`render_markdown`]; the
/// markers are appended (under a "Context variables" heading) when missing.
pub fn update_readme(readme: &str) -> String {
    let body = format!("{README_BEGIN}\n{}{README_END}", render_markdown());
    match (readme.find(README_BEGIN), readme.find(README_END)) {
        (Some(b), Some(e)) if b < e => format!("{}{body}{}", &readme[..b], &readme[e + README_END.len()..]),
        _ => format!("{}\n\n## Context variables\n\n{body}\n", readme.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{Framework, LogLevel, Strategy, UseCase};

    #[test]
    fn word_lists_match_the_enums() {
        assert_eq!(STRATEGIES, Strategy::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        assert_eq!(USE_CASES, UseCase::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        assert_eq!(FRAMEWORKS, Framework::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        assert_eq!(LOG_LEVELS, LogLevel::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    }

    #[test]
    fn names_are_unique_and_every_fl_var_has_its_oneapp_alias() {
        let mut all: Vec<&str> =
            VARS.iter().flat_map(|v| std::iter::once(v.name).chain(v.aliases.iter().copied())).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a name appears twice");
        for v in VARS.iter().filter(|v| v.name.starts_with("FL_") || v.name == "FLOWER_VERSION") {
            assert!(v.aliases.contains(&format!("ONEAPP_{}", v.name).as_str()), "{}", v.name);
        }
    }

    #[test]
    fn every_design_md_variable_is_in_the_table() {
        for name in [
            "FLOWER_VERSION",
            "FL_TLS_ENABLED",
            "FL_LOG_LEVEL",
            "FL_USE_CASE",
            "FL_NUM_ROUNDS",
            "FL_STRATEGY",
            "FL_MIN_FIT_CLIENTS",
            "FL_MIN_EVALUATE_CLIENTS",
            "FL_MIN_AVAILABLE_CLIENTS",
            "FL_PROXIMAL_MU",
            "FL_SERVER_LR",
            "FL_NUM_MALICIOUS",
            "FL_TRIM_BETA",
            "FL_CHECKPOINT_ENABLED",
            "FL_CHECKPOINT_INTERVAL",
            "FL_CHECKPOINT_PATH",
            "FL_SSL_CA_CERTFILE",
            "FL_SSL_CERTFILE",
            "FL_SSL_KEYFILE",
            "FL_CERT_EXTRA_SANS",
            "FL_CONTROL_ALLOW",
            "FL_ISOLATION",
            "FL_DATABASE",
            "ML_FRAMEWORK",
            "FL_NODE_CONFIG",
            "FL_SUPERLINK_ADDRESS",
            "FL_MAX_RETRIES",
            "FL_MAX_WAIT_TIME",
            "FL_DISCOVERY_RETRIES",
            "FL_DISCOVERY_INTERVAL",
            "FL_GPU_ENABLED",
            "FL_CUDA_VISIBLE_DEVICES",
            "FL_GPU_MEMORY_FRACTION",
            "FL_ROLE",
            "FL_HEALTH_PORT",
            "NETWORK",
            "DNS",
            "SEARCH_DOMAIN",
            "SET_HOSTNAME",
            "HOSTNAME",
            "ONEGATE_ENDPOINT",
            "VMID",
            "TOKEN",
            "ONEGATE_TOKEN",
            "REPORT_READY",
            "SSH_PUBLIC_KEY",
            "START_SCRIPT",
            "START_SCRIPT_BASE64",
            "ONEAPP_FL_FRAMEWORK",
            "ETH0_MAC",
            "ETH3_IP6_GATEWAY",
            "ETH10_GATEWAY6",
            "ETH1_IPV6",
        ] {
            assert!(lookup(name).is_some(), "{name}");
        }
    }

    #[test]
    fn template_offers_name_rows_and_fit_their_roles() {
        let mut seen = std::collections::HashSet::new();
        for (name, o) in OFFERS {
            let v = VARS.iter().find(|v| v.name == *name).unwrap_or_else(|| panic!("{name} is not a canonical row"));
            assert!(seen.insert(*name), "{name} offered twice");
            let fits = match o {
                Offer::Service => v.applies == Applies::Both,
                Offer::SuperLink => v.applies != Applies::SuperNode,
                Offer::SuperNode => v.applies != Applies::SuperLink,
            };
            assert!(fits, "{name} ({:?}) offered at {o:?}", v.applies);
        }
        // Every training and GPU knob reaches its role: a new row cannot be forgotten.
        for v in VARS.iter().filter(|v| matches!(v.group, Group::Training | Group::Gpu)) {
            assert!(offer(v).is_some(), "{} is not offered by the OneFlow template", v.name);
        }
    }

    #[test]
    fn lookup_resolves_aliases_and_nic_patterns() {
        assert_eq!(lookup("ONEAPP_FL_FRAMEWORK").unwrap().0.name, "ML_FRAMEWORK");
        let (v, n) = lookup("ETH12_IP6_GATEWAY").unwrap();
        assert_eq!((v.name, n), ("ETH<n>_IP6_GATEWAY", Some(12)));
        assert_eq!(lookup("ETH1_GATEWAY6").unwrap().0.name, "ETH<n>_IP6_GATEWAY");
        assert_eq!(lookup("ETH0_IP").unwrap().0.name, "ETH<n>_IP");
        assert!(lookup("ETH0_VLAN_ID").is_none() && lookup("ETHX_IP").is_none() && lookup("ETH_IP").is_none());
        assert_eq!(nic_name("ETH<n>_MASK", 3), "ETH3_MASK");
        assert_eq!(split_eth("ETH0_ALIAS1_IP"), Some((0, "ALIAS1_IP")));
    }

    #[test]
    fn closest_finds_typos_only() {
        assert_eq!(closest("FL_NUM_ROUND"), Some("FL_NUM_ROUNDS"));
        assert_eq!(closest("fl_strategy"), Some("FL_STRATEGY"));
        assert_eq!(closest("FL_STRATEGIE"), Some("FL_STRATEGY"));
        assert_eq!(closest("ONEAPP_FL_NUM_ROUNDZ"), Some("ONEAPP_FL_NUM_ROUNDS"));
        assert_eq!(closest("FL_COMPLETELY_DIFFERENT"), None);
    }

    #[test]
    fn rules_describe_themselves() {
        assert_eq!(int(1, MAX).describe(), "an integer >= 1");
        assert_eq!(int(1, 65535).describe(), "an integer from 1 to 65535");
        assert_eq!(Rule::Float { lo: Bound::Incl(0.0), hi: Bound::Excl(0.5) }.describe(), "a number >= 0 and < 0.5");
        assert_eq!(Rule::Float { lo: Bound::Excl(0.0), hi: Bound::None }.describe(), "a number > 0");
        assert_eq!(Rule::Words(&["a", "b"]).describe(), "one of a, b");
    }

    #[test]
    fn readme_section_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        if std::env::var_os("FI_BLESS").is_some() {
            std::fs::write(path, update_readme(&readme)).unwrap(); // `make readme`
            return;
        }
        assert!(
            readme.contains(README_BEGIN) && readme.contains(README_END),
            "README.md lacks the vars markers: run `make readme`"
        );
        assert!(update_readme(&readme) == readme, "README.md's variable reference is out of date: run `make readme`");
    }

    #[test]
    fn markdown_cells_keep_placeholders_in_code() {
        assert_eq!(cell("the ETH<n>_* keys, and `ETH<n>_IP` | x"), "the `ETH<n>_*` keys, and `ETH<n>_IP` \\| x");
        assert_eq!(cell("(ETH<n>_IPV6 is legacy)"), "(ETH<n>_IPV6 is legacy)".replace("ETH<n>_IPV6", "`ETH<n>_IPV6`"));
    }

    #[test]
    fn update_readme_replaces_only_the_section() {
        let r = format!("# T\n\nintro\n\n{README_BEGIN}\nold\n{README_END}\n\n## After\n");
        let u = update_readme(&r);
        assert!(u.starts_with("# T\n\nintro\n\n<!-- vars:begin -->\nGenerated from"));
        assert!(u.ends_with("<!-- vars:end -->\n\n## After\n"));
        assert_eq!(update_readme(&u), u);
        let fresh = update_readme("# T\n");
        assert!(fresh.starts_with("# T\n\n## Context variables\n\n<!-- vars:begin -->"));
    }
}
