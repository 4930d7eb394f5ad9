//! `resolve`: the context and the image facts in, a validated [`Config`] (with warnings and the
//! plan `check` prints) out, or every problem at once.

use super::model::*;
use super::reader::{Problem, Reader, Source};
use super::{ImageFacts, NodeConfig, values};
use crate::vocab::{Framework, LogLevel, Role, Strategy, UseCase};
use crate::context::Context;
use crate::secret::Secret;
use super::{OperatorPem, OperatorVar};
use crate::vocab::San;
use crate::vars::{self, Applies};
use serde_json::{Value as Json, json};
use std::path::Path;
use std::time::Duration;

/// A valid configuration, what is doubtful about it, and the plan `check` prints.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: Config,
    /// Not fatal, but worth an operator's attention (log them at boot).
    pub warnings: Vec<String>,
    /// Role, every effective value with its source, network plan, OneGate, warnings (JSON).
    pub plan: Json,
}

/// Problems a refusal shows at most; one more line counts the rest.
pub const MAX_PROBLEMS_SHOWN: usize = 50;

/// Why the context was refused: every problem, plus the warnings found on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    /// What could be validated of the rest, so a refused VM can still come up on the network
    /// and publish FL_ERROR (best effort): the role, the network plan (entries that failed
    /// validation are left out) and OneGate.
    pub role: Option<Role>,
    pub network: crate::net::Plan,
    pub onegate: OneGate,
}

impl std::fmt::Display for Rejected {
    /// One problem per line (what `check` prints and what boot publishes as FL_ERROR): the
    /// first [`MAX_PROBLEMS_SHOWN`], then one line counting the rest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.problems.iter().take(MAX_PROBLEMS_SHOWN).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        if self.problems.len() > MAX_PROBLEMS_SHOWN {
            write!(f, "\nand {} more problems (not shown)", self.problems.len() - MAX_PROBLEMS_SHOWN)?;
        }
        Ok(())
    }
}

/// Ports Flower itself listens on (SuperLink HTTP API; SuperNode Runtime API on loopback).
const FLOWER_PORTS: [u16; 2] = [8000, 9094];

/// Validate every variable for the role: `role_override` (`check --role`) > FL_ROLE /
/// ONEAPP_FL_ROLE > the image's role.
#[allow(clippy::result_large_err)] // once per boot or `check`: the size of Rejected does not matter
pub fn resolve(ctx: &Context, image: &ImageFacts, role_override: Option<Role>) -> Result<Resolved, Rejected> {
    let mut r = Reader::new(ctx);
    let role = role(&mut r, image, role_override);
    let common = common(&mut r, image);
    let onegate = onegate(&mut r);
    let role_config = match (role, &common) {
        (Some(Role::SuperLink), _) => superlink(&mut r, &onegate).map(RoleConfig::SuperLink),
        (Some(Role::SuperNode), Some(c)) => supernode(&mut r, &onegate, c.use_case).map(RoleConfig::SuperNode),
        (Some(Role::SuperNode), None) => supernode(&mut r, &onegate, UseCase::None).map(RoleConfig::SuperNode),
        (None, _) => None,
    };
    let join = role_config.as_ref().and_then(RoleConfig::supernode).and_then(|s| s.join.clone());
    let tls = role.and_then(|role| tls(&mut r, role, &onegate, join.as_ref()));
    let gpu = match role {
        Some(Role::SuperNode) => gpu(&mut r),
        _ => Some(Gpu { enabled: false, devices: CudaDevices::All, memory_fraction: 1.0 }),
    };
    let network = super::network::plan(&mut r, onegate.endpoint.as_ref());
    let wireguard = super::wireguard::wireguard(&mut r);
    let mut role_config = role_config;
    if let (Some(RoleConfig::SuperLink(sl)), Some(tls)) = (&mut role_config, &tls) {
        node_auth_needs_tls(&mut r, sl, tls);
    }
    if let (Some(RoleConfig::SuperNode(sn)), Some(tls)) = (&role_config, &tls) {
        plaintext_across_sites(&mut r, sn, tls, &network);
    }
    if let Some(role) = role {
        unused_for_role(&mut r, role);
    }
    unknown_variables(&mut r);

    let onegate_json = json!({
        "usable": onegate.is_usable(),
        "endpoint": onegate.endpoint.as_ref().map(|e| &e.url),
        "vmid": onegate.vmid,
        "token": onegate.token.as_ref().map(|t| t.to_string()),
        "report_ready": onegate.report_ready,
    });
    let plan = json!({
        "role": role.map(|r| r.as_str()),
        "image": image,
        "values": r.values_json(),
        "network": &network,
        "wireguard": wireguard.as_ref().ok().and_then(Option::as_ref).map(|w| json!({
            "interface": "wg0",
            "address": format!("{}/{}", w.address, w.prefix),
            "listen_port": w.listen_port,
            "private_key": if w.private_key.is_some() { "FL_WG_PRIVATE_KEY" } else { "the state disk's (made at first boot)" },
            "peers": w.peers.iter().map(|p| json!({
                "public_key": p.public_key.to_base64(),
                "allowed_ips": p.allowed_ips.iter().map(|(ip, n)| format!("{ip}/{n}")).collect::<Vec<_>>(),
                "endpoint": p.endpoint.map(|e| e.to_string()),
                "keepalive": p.keepalive,
            })).collect::<Vec<_>>(),
        })),
        "onegate": onegate_json,
        "warnings": &r.warnings,
    });
    match (role_config, common, tls, gpu, wireguard) {
        (Some(role), Some(common), Some(tls), Some(gpu), Ok(wireguard)) if r.problems.is_empty() => {
            Ok(Resolved { config: Config { common, role, tls, gpu, network, wireguard, onegate }, warnings: r.warnings, plan })
        }
        _ => {
            if r.problems.is_empty() {
                // Defensive: a part failed without saying why.
                r.problem("context", None, "invalid configuration");
            }
            Err(Rejected { problems: r.problems, warnings: r.warnings, role, network, onegate })
        }
    }
}

/// `--role` > FL_ROLE > the image's role; a disagreement is a warning.
fn role(r: &mut Reader, image: &ImageFacts, flag: Option<Role>) -> Option<Role> {
    let ctx_role = r.lookup("FL_ROLE");
    let parsed = match &ctx_role {
        Some((text, _)) => match text.trim().parse::<Role>() {
            Ok(role) => Some(role),
            Err(msg) => {
                r.problem("FL_ROLE", Some(text), msg);
                None
            }
        },
        None => None,
    };
    let chosen = match (flag, parsed, ctx_role) {
        (Some(f), p, _) => {
            if let Some(p) = p.filter(|p| *p != f) {
                r.warn(format!("--role {f} overrides FL_ROLE={p}"));
            }
            Some((f, Source::Flag))
        }
        (None, Some(p), Some((_, src))) => {
            if let Some(img) = image.role.filter(|i| *i != p) {
                r.warn(format!("FL_ROLE={p} overrides this image's role ({img})"));
            }
            Some((p, src))
        }
        (None, _, Some(_)) => return None, // invalid FL_ROLE: already a problem
        (None, _, None) => match image.role {
            Some(img) => Some((img, Source::Image)),
            None => {
                r.problem(
                    "FL_ROLE",
                    None,
                    "unset, and this image does not fix a role: set FL_ROLE=superlink or FL_ROLE=supernode",
                );
                return None;
            }
        },
    };
    let (role, source) = chosen?;
    r.record("FL_ROLE", json!(role.as_str()), source);
    Some(role)
}

/// A variable that must equal the image's value; unset means the image's.
fn image_value<T: PartialEq + std::fmt::Display>(
    r: &mut Reader,
    name: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
    image: T,
    what: &str,
) -> Option<T> {
    let given_as = r.lookup(name).map(|(_, s)| Reader::given_name(name, &s)).unwrap_or_else(|| name.to_string());
    match r.value(name, parse, |v| json!(v.to_string())) {
        Ok(Some(v)) if v == image => Some(v),
        Ok(Some(v)) => {
            let given = v.to_string();
            r.problem(&given_as, Some(&given), format!("must equal this image's {what} ({image}); nothing is downloaded at boot: use an image built for {given}"));
            None
        }
        Ok(None) => {
            r.record(name, json!(image.to_string()), Source::Image);
            Some(image)
        }
        Err(()) => None,
    }
}

/// Settings of both roles; `None` when any is invalid (problems recorded).
fn common(r: &mut Reader, image: &ImageFacts) -> Option<Common> {
    let flower_version = image_value(
        r,
        "FLOWER_VERSION",
        |s| crate::vocab::semver(s).map(|_| s.trim().to_string()),
        image.flower_version.clone(),
        "Flower version",
    );
    let framework = image_value(r, "ML_FRAMEWORK", |s| s.trim().parse::<Framework>(), image.framework, "framework");
    let use_case = r.word::<UseCase>("FL_USE_CASE").ok().flatten();
    if let (Some(uc), Some(fw)) = (use_case, framework) {
        if !uc.frameworks().contains(&fw) {
            let need: Vec<&str> = uc.frameworks().iter().map(|f| f.as_str()).collect();
            r.problem(
                "FL_USE_CASE",
                Some(uc.as_str()),
                format!("needs ML_FRAMEWORK {}; this image's framework is {fw}", need.join(" or ")),
            );
        } else if uc != UseCase::None && !image.use_cases.contains(&uc) {
            let has: Vec<&str> = image.use_cases.iter().map(|u| u.as_str()).collect();
            r.problem(
                "FL_USE_CASE",
                Some(uc.as_str()),
                format!("is not shipped by this image (it has: none, {})", has.join(", ")),
            );
        }
    }
    let log_level = r.word::<LogLevel>("FL_LOG_LEVEL").ok().flatten();
    let isolation = r
        .value(
            "FL_ISOLATION",
            |s| match s.trim().to_ascii_lowercase().as_str() {
                "subprocess" => Ok(Isolation::Subprocess),
                "process" => Ok(Isolation::Process),
                _ => Err(format!("must be {}", Reader::rule("FL_ISOLATION"))),
            },
            |v| json!(v),
        )
        .ok()
        .flatten();
    let health_port = match r.int("FL_HEALTH_PORT") {
        Ok(Some(p)) if FLOWER_PORTS.contains(&(p as u16)) => {
            r.problem("FL_HEALTH_PORT", Some(&p.to_string()), "must not be 8000 or 9094: Flower listens there");
            None
        }
        Ok(Some(p)) => u16::try_from(p).ok(),
        _ => None,
    };
    let status_allow = status_allow(r);
    let ssh_public_keys = r
        .value(
            "SSH_PUBLIC_KEY",
            |s| Ok(s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect::<Vec<_>>()),
            |v| json!(v),
        )
        .ok()
        .flatten()
        .unwrap_or_default();
    for name in ["START_SCRIPT", "START_SCRIPT_BASE64"] {
        if r.is_set(name) {
            r.record(name, json!("(set, not run)"), Source::Context);
            r.warn(format!(
                "{name} is set but cannot run: the appliance has no shell; use a custom image or Flower app instead"
            ));
        }
    }
    Some(Common {
        flower_version: flower_version?,
        framework: framework?,
        use_case: use_case?,
        log_level: log_level?,
        isolation: isolation?,
        health_port: health_port?,
        status_allow: status_allow?,
        ssh_public_keys,
    })
}

/// FL_STATUS_ALLOW, else FL_CONTROL_ALLOW's networks (its own problems are reported where the
/// SuperLink reads it), else nobody but loopback.
fn status_allow(r: &mut Reader) -> Option<Vec<crate::vocab::Cidr>> {
    let parse = |v: &str| crate::vocab::parse_cidr_list(v).map_err(|e| e.trim_start_matches("FL_CONTROL_ALLOW: ").to_string());
    let show = |l: &Vec<crate::vocab::Cidr>| json!(l.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    match r.value("FL_STATUS_ALLOW", parse, show) {
        Ok(Some(list)) => Some(list),
        Ok(None) => {
            let names = ["FL_CONTROL_ALLOW", "ONEAPP_FL_CONTROL_ALLOW"];
            let given = names.iter().find_map(|n| r.ctx.get(n)).and_then(|v| parse(v).ok()).unwrap_or_default();
            if !given.is_empty() {
                r.record("FL_STATUS_ALLOW", show(&given), Source::Default);
            }
            Some(given)
        }
        Err(()) => None,
    }
}

/// OneGate inputs; whether they suffice is checked where they are needed.
fn onegate(r: &mut Reader) -> OneGate {
    let endpoint = r.value("ONEGATE_ENDPOINT", values::url, |e| json!(e.url)).ok().flatten();
    let vmid = r.int("VMID").ok().flatten().and_then(|v| u64::try_from(v).ok());
    let token_flag = r.yes_no("TOKEN").ok().flatten().unwrap_or(false);
    let from_var = r.value("ONEGATE_TOKEN", |s| Ok(Secret::new(s.trim())), |_| json!(null)).ok().flatten();
    let token = r.ctx.token().cloned().or(from_var);
    let report_ready = r.yes_no("REPORT_READY").ok().flatten().unwrap_or(false);
    let og = OneGate { endpoint, vmid, token, report_ready };
    if token_flag && og.token.is_none() {
        r.warn(
            "TOKEN=YES but there is no token.txt next to context.sh (nor ONEGATE_TOKEN): OneGate calls will be refused",
        );
    }
    // Best-effort (issue #13 point 5): a warning, never a refusal; only what cannot work
    // without OneGate (a SuperNode that must discover its SuperLink) is a problem.
    if let Some(w) = og.ready_unreportable() {
        r.warn(w);
    }
    og
}

/// "ONEGATE_ENDPOINT and the token are missing" — what keeps OneGate from being usable.
fn missing_onegate(og: &OneGate) -> String {
    og.missing().unwrap_or_else(|| "nothing is missing".into())
}

/// Table ranges keep integers within u32; saturate rather than panic.
fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// SuperLink settings with the strategy rules; `None` when any is invalid.
fn superlink(r: &mut Reader, onegate: &OneGate) -> Option<SuperLink> {
    let num_rounds = r.int("FL_NUM_ROUNDS").ok().flatten().map(u32_of);
    let strategy = r.word::<Strategy>("FL_STRATEGY").ok().flatten();
    let fit = r.int("FL_MIN_FIT_CLIENTS").ok().flatten().map(u32_of);
    let eval = r.int("FL_MIN_EVALUATE_CLIENTS").ok().flatten().map(u32_of);
    let avail = r.int("FL_MIN_AVAILABLE_CLIENTS").ok().flatten().map(u32_of);
    for (name, v) in [("FL_MIN_FIT_CLIENTS", fit), ("FL_MIN_EVALUATE_CLIENTS", eval)] {
        if let (Some(v), Some(a)) = (v, avail) {
            if v > a {
                r.warn(format!(
                    "{name}={v} is above FL_MIN_AVAILABLE_CLIENTS={a}: rounds wait for {v} SuperNodes anyway"
                ));
            }
        }
    }
    // Strategy parameters: validated for their strategy, a warning for any other.
    let s = strategy.unwrap_or(Strategy::FedAvg);
    let param = |r: &mut Reader, name: &'static str, used_by: &[Strategy]| -> Option<f64> {
        if strategy.is_none() || used_by.contains(&s) {
            return r.float(name).ok().flatten();
        }
        if r.is_set(name) {
            let by: Vec<&str> = used_by.iter().map(|s| s.as_str()).collect();
            r.warn(format!("{name} applies to {} only; FL_STRATEGY is {s}: ignored", by.join(" and ")));
        }
        vars::var(name).and_then(|v| match v.default {
            vars::DefaultValue::Value(d) => d.parse().ok(),
            _ => None,
        })
    };
    let proximal_mu = param(r, "FL_PROXIMAL_MU", &[Strategy::FedProx]);
    let server_lr = param(r, "FL_SERVER_LR", &[Strategy::FedAdam]);
    let trim_beta = param(r, "FL_TRIM_BETA", &[Strategy::FedTrimmedAvg]);
    let byzantine = [Strategy::Krum, Strategy::Bulyan];
    let num_malicious = if strategy.is_none() || byzantine.contains(&s) {
        r.int("FL_NUM_MALICIOUS").ok().flatten().map(u32_of)
    } else {
        if r.is_set("FL_NUM_MALICIOUS") {
            r.warn(format!("FL_NUM_MALICIOUS applies to Krum and Bulyan only; FL_STRATEGY is {s}: ignored"));
        }
        Some(0)
    };
    if let (Some(st @ (Strategy::Krum | Strategy::Bulyan)), Some(n), Some(f)) = (strategy, fit, num_malicious) {
        let (k, need) = if st == Strategy::Krum { (2, 2 * f + 3) } else { (4, 4 * f + 3) };
        if n < need {
            r.problem(
                "FL_STRATEGY",
                Some(st.as_str()),
                format!(
                    "{st} needs n >= {k}f+3 = {need} SuperNodes per round, with n = FL_MIN_FIT_CLIENTS = {n} and f = \
                     FL_NUM_MALICIOUS = {f}: raise FL_MIN_FIT_CLIENTS or lower FL_NUM_MALICIOUS"
                ),
            );
        }
    }
    let checkpoint = match r.yes_no("FL_CHECKPOINT_ENABLED") {
        Ok(Some(true)) => {
            let interval = r.int("FL_CHECKPOINT_INTERVAL").ok().flatten().map(u32_of);
            let path = r.value("FL_CHECKPOINT_PATH", values::state_path, |p| json!(p)).ok().flatten();
            Some(interval.zip(path).map(|(interval, path)| Checkpoint { interval, path }))
        }
        Ok(_) => {
            for name in ["FL_CHECKPOINT_INTERVAL", "FL_CHECKPOINT_PATH"] {
                if r.is_set(name) {
                    r.warn(format!("{name} is ignored: FL_CHECKPOINT_ENABLED is NO"));
                }
            }
            Some(None)
        }
        Err(()) => None,
    };
    let database = r.value("FL_DATABASE", values::database, |d| json!(d.to_string())).ok().flatten();
    let control_allow = r
        .value(
            "FL_CONTROL_ALLOW",
            |v| crate::vocab::parse_cidr_list(v).map_err(|e| e.trim_start_matches("FL_CONTROL_ALLOW: ").to_string()),
            |l| json!(l.iter().map(|c| c.to_string()).collect::<Vec<_>>()),
        )
        .map(Option::unwrap_or_default);
    let node_auth = r.yes_no("FL_SUPERNODE_AUTH");
    let node_keys = r.value("FL_SUPERNODE_KEYS", |v| Ok(split_keys(v)), |k| json!(format!("{} key(s)", k.len()))).map(Option::unwrap_or_default);
    if !onegate.is_usable() {
        r.warn(format!(
            "OneGate is not usable ({}): the SuperLink cannot publish FL_ENDPOINT and FL_CA_CERT, so every SuperNode needs FL_JOIN (this SuperLink's join value, in /status) or FL_SUPERLINK_ADDRESS (and FL_SSL_CA_CERTFILE for TLS)",
            missing_onegate(onegate)
        ));
    }
    Some(SuperLink {
        num_rounds: num_rounds?,
        strategy: strategy?,
        min_fit_clients: fit?,
        min_evaluate_clients: eval?,
        min_available_clients: avail?,
        proximal_mu: proximal_mu?,
        server_lr: server_lr?,
        num_malicious: num_malicious?,
        trim_beta: trim_beta?,
        checkpoint: checkpoint?,
        database: database?,
        control_allow: control_allow.ok()?,
        node_auth: node_auth.ok()?.unwrap_or(true),
        node_keys: node_keys.ok()?,
    })
}

/// SuperNode authentication needs TLS (Flower refuses `--enable-supernode-auth` with
/// `--insecure`): FL_SUPERNODE_AUTH=YES given together with FL_TLS_ENABLED=NO is a problem;
/// the default YES turns off with a warning. Off, for whatever reason, is said loudly.
fn node_auth_needs_tls(r: &mut Reader, sl: &mut SuperLink, tls: &Tls) {
    if tls.superlink_enabled() {
        if !sl.node_auth {
            r.warn("FL_SUPERNODE_AUTH=NO: SUPERNODE AUTHENTICATION IS OFF: any host that reaches the Fleet port (8000) can join the federation, receive the model and send updates");
        }
        return;
    }
    if sl.node_auth && r.is_set("FL_SUPERNODE_AUTH") {
        r.problem(
            "FL_SUPERNODE_AUTH",
            Some("YES"),
            "needs TLS, and FL_TLS_ENABLED is NO (Flower refuses --enable-supernode-auth over plain text): turn TLS on, or set FL_SUPERNODE_AUTH=NO",
        );
        return;
    }
    sl.node_auth = false;
    r.warn("SuperNode authentication is off because FL_TLS_ENABLED is NO: any host that reaches the Fleet port (8000) can join the federation");
    if !sl.node_keys.is_empty() {
        r.warn("FL_SUPERNODE_KEYS is ignored: SuperNode authentication is off (FL_TLS_ENABLED is NO)");
    }
}

/// FL_SUPERNODE_KEYS split into its entries (newlines or commas; blank entries dropped), each
/// with its 1-based position for messages.
pub fn split_keys(v: &str) -> Vec<(usize, String)> {
    v.split(['\n', ',']).map(str::trim).filter(|e| !e.is_empty()).enumerate().map(|(i, e)| (i + 1, e.to_string())).collect()
}

/// SuperNode settings; a missing SuperLink address needs a usable OneGate.
fn supernode(r: &mut Reader, onegate: &OneGate, use_case: UseCase) -> Option<SuperNode> {
    let join = r.value("FL_JOIN", super::Join::decode, super::Join::summary);
    if r.is_set("FL_JOIN") {
        // FL_JOIN carries what these would: two sources of one fact are a mistake, not a precedence.
        for other in ["FL_SUPERLINK_ADDRESS", "FL_SSL_CA_CERTFILE"] {
            if r.is_set(other) {
                r.problem(
                    "FL_JOIN",
                    None,
                    format!(
                        "given together with {other}: FL_JOIN carries the SuperLink's address, CA certificate and TLS setting; give FL_JOIN alone, or FL_SUPERLINK_ADDRESS (with FL_SSL_CA_CERTFILE) without it"
                    ),
                );
            }
        }
    }
    let superlink = r.value("FL_SUPERLINK_ADDRESS", values::host_port, |a| json!(a.to_string()));
    let superlink = match (&join, superlink) {
        (Ok(Some(j)), Ok(None)) => {
            let a = j.address().cloned();
            r.record("FL_SUPERLINK_ADDRESS", json!(a.as_ref().map(|a| a.to_string())), Source::Join);
            Ok(a)
        }
        (_, s) => s,
    };
    let node_config = r.value("FL_NODE_CONFIG", NodeConfig::parse, |c| json!(c.to_arg()));
    let max_retries = r.int("FL_MAX_RETRIES").ok().flatten().map(|v| (v > 0).then(|| u32_of(v)));
    let max_wait = r.int("FL_MAX_WAIT_TIME").ok().flatten().map(|v| (v > 0).then(|| Duration::from_secs(v as u64)));
    let retries = r.int("FL_DISCOVERY_RETRIES").ok().flatten().map(u32_of);
    let interval = r.int("FL_DISCOVERY_INTERVAL").ok().flatten().map(|v| Duration::from_secs(v as u64));
    let node_auth = r.yes_no("FL_SUPERNODE_AUTH");
    if matches!(superlink, Ok(None)) && !r.is_set("FL_JOIN") && !onegate.is_usable() {
        r.problem(
            "FL_SUPERLINK_ADDRESS",
            None,
            format!(
                "unset, and the SuperLink cannot be discovered: OneGate is not usable ({}); give FL_JOIN (copied from the SuperLink), FL_SUPERLINK_ADDRESS=host:port, or TOKEN=YES in the VM template",
                missing_onegate(onegate)
            ),
        );
    }
    if matches!(node_config, Ok(None)) && use_case != UseCase::None && !onegate.is_usable() {
        r.warn("FL_NODE_CONFIG is empty and OneGate is not usable: partition-id/num-partitions cannot be computed from the OneFlow role; give FL_NODE_CONFIG");
    }
    Some(SuperNode {
        superlink: superlink.ok()?,
        join: join.ok()?,
        node_config: node_config.ok()?,
        max_retries: max_retries?,
        max_wait_time: max_wait?,
        discovery_retries: retries?,
        discovery_interval: interval?,
        node_auth: node_auth.ok()?,
    })
}

/// Whether the table marks `name` secret (its value never appears in a message).
fn row_is_secret(name: &str) -> bool {
    crate::vars::lookup(name).is_some_and(|(v, _)| v.secret)
}

/// An FL_SSL_* value resolved to PEM text by `tls`'s own rules (so `check` and boot agree).
fn pem(r: &mut Reader, var: OperatorVar, dir: &Path) -> Result<Option<Secret>, ()> {
    let name: &'static str = var.name();
    let Some((text, source)) = r.lookup(name) else {
        r.record(name, Json::Null, Source::Default);
        return Ok(None);
    };
    match super::operator_value(&text, dir, row_is_secret(name)) {
        Ok(pem) => {
            let t = text.trim();
            let shown = if var == OperatorVar::Key {
                format!("<redacted {} bytes>", t.len())
            } else if crate::context::valid_file_name(t) && t.len() <= 100 && !t.starts_with("LS0tLS") {
                format!("file {t}")
            } else {
                format!("<PEM, {} bytes>", pem.expose().len())
            };
            r.record(name, json!(shown), source);
            Ok(Some(pem))
        }
        Err(msg) => {
            r.problem(name, Some(&text), msg);
            Err(())
        }
    }
}

/// TLS inputs for the role (DESIGN.md's SuperNode decision order needs `enabled` as given).
fn tls(r: &mut Reader, role: Role, onegate: &OneGate, join: Option<&super::Join>) -> Option<Tls> {
    let explicit = r.yes_no("FL_TLS_ENABLED");
    let enabled = explicit.unwrap_or_default();
    if matches!(explicit, Ok(None)) {
        let v = if role == Role::SuperLink { json!("YES") } else { Json::Null };
        r.record("FL_TLS_ENABLED", v, Source::Default);
    }
    let dir = r.ctx.dir().map(Path::to_path_buf).unwrap_or_else(|| Path::new("/nonexistent").to_path_buf());
    let mut ok = explicit.is_ok();
    let mut tls = Tls { enabled, operator: None, ca_pem: None, extra_sans: Vec::new(), allow_plaintext_wan: false };
    match role {
        Role::SuperLink => {
            let vars = [OperatorVar::CaCert, OperatorVar::Cert, OperatorVar::Key];
            let given: Vec<&str> = vars.iter().map(|v| v.name()).filter(|n| r.is_set(n)).collect();
            if !given.is_empty() && given.len() < 3 {
                for v in vars.iter().map(|v| v.name()).filter(|n| !given.contains(n)) {
                    r.problem(v, None, format!(
                        "unset, but {} {} set: FL_SSL_CA_CERTFILE, FL_SSL_CERTFILE and FL_SSL_KEYFILE go together (all three, or none to let the SuperLink generate its own)",
                        given.join(" and "), if given.len() == 1 { "is" } else { "are" }
                    ));
                }
                ok = false;
            }
            let pems: Vec<Result<Option<Secret>, ()>> = vars.iter().map(|v| pem(r, *v, &dir)).collect();
            if let [Ok(Some(ca)), Ok(Some(cert)), Ok(Some(key))] = pems.as_slice() {
                tls.operator = Some(OperatorPem {
                    ca: ca.expose().to_string(),
                    cert: cert.expose().to_string(),
                    key: key.clone(),
                });
            }
            ok &= pems.iter().all(Result::is_ok);
            let sans =
                r.value("FL_CERT_EXTRA_SANS", parse_sans, |v| json!(v.iter().map(San::to_string).collect::<Vec<_>>()));
            tls.extra_sans = sans.map_err(|()| ok = false).ok().flatten().unwrap_or_default();
            if enabled == Some(false) && (tls.operator.is_some() || !tls.extra_sans.is_empty()) {
                r.warn("FL_SSL_* and FL_CERT_EXTRA_SANS are ignored: FL_TLS_ENABLED is NO");
            } else if tls.operator.is_some() && !tls.extra_sans.is_empty() {
                r.warn("FL_CERT_EXTRA_SANS is ignored: it applies to the generated certificate, and FL_SSL_* give the operator's");
            }
        }
        Role::SuperNode => {
            tls.allow_plaintext_wan = r.yes_no("FL_ALLOW_PLAINTEXT_WAN").map_err(|()| ok = false).ok().flatten().unwrap_or(false);
            tls.ca_pem = pem(r, OperatorVar::CaCert, &dir)
                .map_err(|()| ok = false)
                .ok()
                .flatten()
                .map(|p| p.expose().to_string());
            if let Some(j) = join {
                // FL_JOIN decides TLS and the CA; FL_TLS_ENABLED may only agree with it.
                if let Some(e) = enabled.filter(|e| *e != j.tls()) {
                    let (given, theirs) = if e { ("YES", "plain text (TLS off)") } else { ("NO", "TLS") };
                    r.problem(
                        "FL_TLS_ENABLED",
                        Some(given),
                        format!("contradicts FL_JOIN, whose SuperLink serves {theirs}: remove FL_TLS_ENABLED (FL_JOIN decides), or copy a join value from the SuperLink as it runs now"),
                    );
                    ok = false;
                }
                tls.enabled = Some(j.tls());
                tls.ca_pem = j.ca_pem();
                r.record("FL_TLS_ENABLED", json!(if j.tls() { "YES" } else { "NO" }), Source::Join);
                if !r.is_set("FL_SSL_CA_CERTFILE") {
                    let shown = tls.ca_pem.as_ref().map(|p| format!("<PEM from FL_JOIN, {} bytes>", p.len()));
                    r.record("FL_SSL_CA_CERTFILE", json!(shown), Source::Join);
                }
                return ok.then_some(tls);
            }
            match (enabled, &tls.ca_pem, onegate.is_usable()) {
                (Some(true), None, false) => {
                    r.problem("FL_TLS_ENABLED", Some("YES"), "no CA certificate to trust: give FL_SSL_CA_CERTFILE, or make OneGate usable (TOKEN=YES) so the SuperLink's FL_CA_CERT can be fetched");
                    ok = false;
                }
                (None, None, false) => r.warn(
                    "FL_TLS_ENABLED is unset, there is no FL_SSL_CA_CERTFILE and OneGate is not usable: this SuperNode will connect WITHOUT TLS; set FL_TLS_ENABLED=YES with FL_SSL_CA_CERTFILE, or FL_TLS_ENABLED=NO to make it explicit",
                ),
                (Some(false), Some(_), _) => r.warn("FL_SSL_CA_CERTFILE is ignored: FL_TLS_ENABLED is NO"),
                _ => {}
            }
        }
    }
    ok.then_some(tls)
}

/// "Never plain text across sites": a SuperNode that will connect without TLS to a SuperLink
/// address (FL_SUPERLINK_ADDRESS or FL_JOIN's) that is not on one of its own networks is
/// refused, unless FL_ALLOW_PLAINTEXT_WAN=YES (then a loud warning). Without TLS means
/// FL_TLS_ENABLED=NO or a join value with TLS off. A SuperLink found through OneGate that
/// publishes FL_TLS=NO is checked at boot the same way ([`plaintext_refusal`]).
fn plaintext_across_sites(r: &mut Reader, sn: &SuperNode, tls: &Tls, plan: &crate::net::Plan) {
    let Some(addr) = &sn.superlink else { return };
    // TLS off said explicitly (FL_TLS_ENABLED=NO, or the join value). Nothing saying TLS at
    // all keeps its own "WITHOUT TLS" warning.
    if tls.enabled != Some(false) {
        return;
    }
    let var = if sn.join.is_some() { "FL_JOIN" } else { "FL_TLS_ENABLED" };
    match plaintext_refusal(addr, tls.allow_plaintext_wan, plan) {
        Ok(Some(w)) => r.warn(w),
        Ok(None) => {}
        Err(why) => {
            let shown = if sn.join.is_some() { None } else { Some("NO") };
            r.problem(var, shown, why);
        }
    }
}

/// Whether plain text to the SuperLink at `addr` may go ahead: `Ok(None)` when it is on one
/// of `plan`'s networks, `Ok(Some(warning))` when it is not but FL_ALLOW_PLAINTEXT_WAN=YES
/// (`allow`), `Err(why)` otherwise.
pub fn plaintext_refusal(addr: &Address, allow: bool, plan: &crate::net::Plan) -> Result<Option<String>, String> {
    if super::on_own_network(&addr.host, plan) {
        return Ok(None);
    }
    let nets = super::own_networks(plan);
    if allow {
        return Ok(Some(format!(
            "PLAIN TEXT ACROSS SITES: the SuperLink {addr} is not on this VM's networks ({nets}) and TLS is off; FL_ALLOW_PLAINTEXT_WAN=YES accepts it: model updates cross the network unencrypted and the SuperLink's identity is not checked"
        )));
    }
    Err(format!(
        "the SuperLink {addr} is not on this VM's networks ({nets}) and the connection would be plain text: TLS is required across sites; turn TLS on at the SuperLink and use its FL_JOIN value (or FL_SSL_CA_CERTFILE), or set FL_ALLOW_PLAINTEXT_WAN=YES to accept plain text anyway (not recommended)"
    ))
}

/// FL_CERT_EXTRA_SANS by [`San::parse`]'s rules; every bad entry is named.
fn parse_sans(s: &str) -> Result<Vec<San>, String> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for w in s.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()) {
        match San::parse(w) {
            Ok(san) => out.push(san),
            Err(reason) => bad.push(format!("{w:?}: {reason}")),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(format!("{} (must be {})", bad.join("; "), Reader::rule("FL_CERT_EXTRA_SANS")))
    }
}

/// SuperNode GPU settings; the details only matter when FL_GPU_ENABLED=YES.
fn gpu(r: &mut Reader) -> Option<Gpu> {
    let enabled = r.yes_no("FL_GPU_ENABLED").ok().flatten()?;
    if !enabled {
        for name in ["FL_CUDA_VISIBLE_DEVICES", "FL_GPU_MEMORY_FRACTION"] {
            // Its default (what OneFlow's templates send when nobody chose) says nothing.
            if r.is_set_to_other_than_default(name) {
                r.warn(format!("{name} is ignored: FL_GPU_ENABLED is NO"));
            }
        }
        return Some(Gpu { enabled, devices: CudaDevices::All, memory_fraction: 1.0 });
    }
    let devices = r.value("FL_CUDA_VISIBLE_DEVICES", values::cuda_devices, |d| json!(d.to_string())).ok().flatten();
    let memory_fraction = r.float("FL_GPU_MEMORY_FRACTION").ok().flatten();
    Some(Gpu { enabled, devices: devices?, memory_fraction: memory_fraction? })
}

/// Variables of the other role: a warning naming them (they are not validated).
fn unused_for_role(r: &mut Reader, role: Role) {
    let other: Vec<String> = vars::VARS
        .iter()
        .filter(|v| !v.applies.to(role) && v.applies != Applies::Both)
        .flat_map(|v| std::iter::once(v.name).chain(v.aliases.iter().copied()))
        .filter(|n| r.ctx.get(n).is_some())
        .map(String::from)
        .collect();
    if !other.is_empty() {
        let other_role = if role == Role::SuperLink { Role::SuperNode } else { Role::SuperLink };
        let verb = if other.len() == 1 { "applies" } else { "apply" };
        r.warn(format!("{} {verb} to the {other_role} only: ignored on this {role}", other.join(", ")));
    }
}

/// Unknown FL_* names warned about one by one at most.
const MAX_UNKNOWN_WARNINGS: usize = 20;

/// `FL_*`-looking keys that are not in the table: probably typos.
fn unknown_variables(r: &mut Reader) {
    let keys: Vec<String> = r.ctx.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| k.to_string()).collect();
    let unknown: Vec<String> = keys
        .into_iter()
        .filter(|k| {
            let up = k.to_ascii_uppercase();
            let flowerish = ["FL_", "ONEAPP_FL", "ONEAPP_FLOWER", "FLOWER_", "ML_"].iter().any(|p| up.starts_with(p));
            flowerish && vars::lookup(k).is_none()
        })
        .collect();
    // Bounded: a context of thousands of made-up names gives a few lines and a count.
    if unknown.len() > MAX_UNKNOWN_WARNINGS {
        r.warn(format!(
            "{} more names starting FL_/FLOWER_/ML_ are not flower-init variables: ignored",
            unknown.len() - MAX_UNKNOWN_WARNINGS
        ));
    }
    for k in unknown.into_iter().take(MAX_UNKNOWN_WARNINGS) {
        match vars::closest(&k) {
            Some(c) => r.warn(format!("{k} is not a flower-init variable (did you mean {c}?): ignored")),
            None => r.warn(format!("{k} is not a flower-init variable: ignored")),
        }
    }
}
