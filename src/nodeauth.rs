//! SuperNode authentication, the SuperLink's side (issue #19, docs/node-auth.md): with
//! `--enable-supernode-auth` Flower 1.42 lets a SuperNode in only when its public key was
//! registered through the Control API. This module keeps Flower's registry equal to what the
//! deployment says:
//!
//! - the keys the SuperNode VMs of the SuperLink's own OneFlow service publish
//!   (`FL_NODE_PUBKEY`, read with `GET /service`, then `GET /vms/<id>` once per new VM);
//! - the keys of FL_SUPERNODE_KEYS (other sites, VMs outside the service);
//!
//! registering what is missing and unregistering the keys it registered for VMs that left the
//! service (scale down, terminate). Keys an operator registered by hand (`flwr supernode
//! register`) are never touched: what was registered for which VM is recorded on the state
//! disk, and only those records are ever unregistered.
//!
//! OneGate's answers hold what other VMs wrote into their own templates, so this runs as a
//! supervised child process of PID 1 (`flower-init node-auth …`), like the gateway: a bug in
//! reading them ends this process, never PID 1. Every cycle prints one `state {json}` line
//! (what `/status`'s `node_auth` shows); a bad key is skipped with its source named, never
//! blocking the others.

use crate::args::{Args, EXIT_USAGE};
use crate::error::{Error, Result};
use crate::flower::control::{Control, ControlError};
use crate::flower::ProbeTls;
use crate::onegate::{self, OneGateError};
use crate::secret::Secret;
use crate::tls::nodekey::NodePublicKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The OneFlow role whose VMs are the service's SuperNodes.
pub const SUPERNODE_ROLE: &str = "supernode";
/// The attribute a SuperNode publishes its OpenSSH public key in.
pub const PUBKEY_ATTR: &str = "FL_NODE_PUBKEY";
/// The attribute a SuperLink says whether it requires authentication in.
pub const AUTH_ATTR: &str = "FL_NODE_AUTH";
/// Flower's code for "public key already in use" (RegisterNode).
const CODE_KEY_IN_USE: i64 = 23;
/// Unregistrations kept for `/status`.
const HISTORY: usize = 20;
/// One Control call may take this long.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a key to register comes from, for every message about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeySource {
    /// A SuperNode VM of the service (its FL_NODE_PUBKEY).
    Vm(u64),
    /// FL_SUPERNODE_KEYS, entry n (1-based).
    Context(usize),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Vm(id) => write!(f, "VM {id}'s {PUBKEY_ATTR}"),
            KeySource::Context(n) => write!(f, "FL_SUPERNODE_KEYS entry {n}"),
        }
    }
}

/// A key the deployment wants registered.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub source: KeySource,
    pub pem: String,
    pub fingerprint: String,
}

impl Wanted {
    pub fn of(source: KeySource, key: &NodePublicKey) -> Wanted {
        Wanted { source, pem: key.spki_pem(), fingerprint: key.fingerprint() }
    }
}

/// A key Flower has registered now (ListNodes, `unregistered` ones left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Present {
    pub node_id: u64,
    pub pem: String,
}

/// What to do to make Flower's registry what the deployment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Register { source: KeySource, pem: String, fingerprint: String },
    Unregister { node_id: u64, vmid: u64, pem: String },
}

/// Keys registered for the service's VMs (SPKI PEM → VM id): the only ones this module ever
/// unregisters. Kept on the state disk so a restarted SuperLink remembers them.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub vms: BTreeMap<String, u64>,
}

/// The actions that make `present` what `wanted` says: register each wanted key Flower does
/// not have (once, whatever the number of sources); unregister each key recorded for a VM
/// that is no longer wanted and that Flower still has. Keys in neither `wanted` nor `ours`
/// (an operator's) are left alone.
pub fn plan(wanted: &[Wanted], present: &[Present], ours: &Record) -> Vec<Action> {
    let have: BTreeMap<&str, u64> = present.iter().map(|p| (p.pem.as_str(), p.node_id)).collect();
    let want: BTreeSet<&str> = wanted.iter().map(|w| w.pem.as_str()).collect();
    let mut seen = BTreeSet::new();
    let mut actions = Vec::new();
    for w in wanted {
        if !have.contains_key(w.pem.as_str()) && seen.insert(w.pem.as_str()) {
            actions.push(Action::Register { source: w.source.clone(), pem: w.pem.clone(), fingerprint: w.fingerprint.clone() });
        }
    }
    for (pem, vmid) in &ours.vms {
        if let (false, Some(node_id)) = (want.contains(pem.as_str()), have.get(pem.as_str())) {
            actions.push(Action::Unregister { node_id: *node_id, vmid: *vmid, pem: pem.clone() });
        }
    }
    actions
}

/// A key that could not be used, and why (the rule it broke, or Flower's refusal).
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    pub source: String,
    pub reason: String,
}

/// A key registered in Flower, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    pub source: String,
    pub fingerprint: String,
    pub node_id: u64,
}

/// One cycle's outcome: the `state` line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct State {
    /// Keys of the service and the context that Flower has registered.
    pub registered: Vec<Registered>,
    /// Keys skipped: malformed, or refused by Flower.
    pub refused: Vec<Refused>,
    /// SuperNode VMs of the service that have not published a key yet.
    pub waiting_for_key: Vec<u64>,
    /// Unregistered since the registrar started (VMs that left the service), newest last,
    /// at most [`HISTORY`].
    pub unregistered: Vec<Registered>,
    /// The cycle's error, when it could not finish (OneGate or Flower unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub cycles: u64,
}

/// What a SuperNode VM of the service published, as last read.
#[derive(Debug, Clone)]
enum VmKey {
    Key(NodePublicKey),
    Bad(String),
}

/// The registrar: OneGate, Flower's Control API, the record.
pub struct Registrar {
    onegate: Option<onegate::Client>,
    control: Control,
    context: Vec<Wanted>,
    context_bad: Vec<Refused>,
    record_path: PathBuf,
    record: Record,
    /// Keys read from the service's VMs (a VM's key does not change while it exists).
    vm_keys: BTreeMap<u64, NodePublicKey>,
    cycles: u64,
    unregistered: Vec<Registered>,
}

/// The registrar's inputs (the child's command line, read by [`cli`]).
pub struct Inputs {
    pub onegate: Option<onegate::Client>,
    pub control: SocketAddr,
    pub control_ca_pem: Option<String>,
    /// FL_SUPERNODE_KEYS entries (position, text).
    pub keys: Vec<(usize, String)>,
    pub record_path: PathBuf,
}

impl Registrar {
    pub fn new(i: Inputs) -> Result<Registrar> {
        let tls = i.control_ca_pem.map(|ca_pem| ProbeTls { ca_pem, server_name: "127.0.0.1".into() });
        let control = Control::new(i.control, tls.as_ref(), CONTROL_TIMEOUT).map_err(|e| Error::msg("prepare the Control API client", e.to_string()))?;
        let (mut context, mut context_bad) = (Vec::new(), Vec::new());
        for (n, text) in &i.keys {
            match NodePublicKey::parse_openssh(text) {
                Ok(k) => context.push(Wanted::of(KeySource::Context(*n), &k)),
                Err(e) => context_bad.push(Refused { source: KeySource::Context(*n).to_string(), reason: e.to_string() }),
            }
        }
        let record = match std::fs::read_to_string(&i.record_path) {
            Ok(t) => serde_json::from_str(&t).unwrap_or_else(|e| {
                log::warn!("node-auth: {} is unreadable ({e}); starting a new record", i.record_path.display());
                Record::default()
            }),
            Err(_) => Record::default(),
        };
        Ok(Registrar { onegate: i.onegate, control, context, context_bad, record_path: i.record_path, record, vm_keys: BTreeMap::new(), cycles: 0, unregistered: Vec::new() })
    }

    /// One cycle: read the service, read Flower's registry, register and unregister.
    pub fn cycle(&mut self) -> State {
        self.cycles += 1;
        let mut st = State { cycles: self.cycles, refused: self.context_bad.clone(), ..State::default() };
        let mut wanted = self.context.clone();
        if let Some(og) = &self.onegate {
            match service_keys(og, &mut self.vm_keys) {
                Ok((keys, bad, waiting)) => {
                    wanted.extend(keys.iter().map(|(id, k)| Wanted::of(KeySource::Vm(*id), k)));
                    st.refused.extend(bad);
                    st.waiting_for_key = waiting;
                }
                Err(e) => {
                    // Without the service's VMs nothing may be unregistered: a OneGate outage
                    // must not throw every SuperNode out.
                    st.error = Some(format!("read the service from OneGate: {e}"));
                    return self.finish(st, &wanted, false);
                }
            }
        }
        self.finish(st, &wanted, true)
    }

    /// Apply the plan (unregistering only when `service_known`), fill the state.
    fn finish(&mut self, mut st: State, wanted: &[Wanted], service_known: bool) -> State {
        st.unregistered = self.unregistered.clone();
        let present = match self.control.list_nodes() {
            Ok(nodes) => nodes
                .into_iter()
                .filter(|n| n.status != "unregistered")
                .map(|n| Present { node_id: n.node_id, pem: String::from_utf8_lossy(&n.public_key).into_owned() })
                .collect::<Vec<_>>(),
            Err(e) => {
                st.error = Some(format!("list the registered SuperNodes (Control API): {e}"));
                return st;
            }
        };
        let mut registered: BTreeMap<String, u64> = present.iter().map(|p| (p.pem.clone(), p.node_id)).collect();
        let mut changed = false;
        for action in plan(wanted, &present, &self.record) {
            match action {
                Action::Register { source, pem, fingerprint } => match self.control.register_node(&pem, None) {
                    Ok(node_id) => {
                        log::info!("node-auth: registered {source} ({fingerprint}) as SuperNode {node_id}");
                        registered.insert(pem.clone(), node_id);
                        if let KeySource::Vm(id) = source {
                            changed |= self.record.vms.insert(pem, id) != Some(id);
                        }
                    }
                    Err(e) if e.api_code() == Some(CODE_KEY_IN_USE) => {
                        log::info!("node-auth: {source} ({fingerprint}) is registered already");
                    }
                    Err(e) => {
                        log::warn!("node-auth: Flower refused {source} ({fingerprint}): {e}");
                        st.refused.push(Refused { source: source.to_string(), reason: format!("Flower refused it: {}", short(&e)) });
                    }
                },
                Action::Unregister { node_id, vmid, pem } if service_known => {
                    match self.control.unregister_node(node_id) {
                        Ok(()) => {
                            log::info!("node-auth: VM {vmid} left the service: unregistered SuperNode {node_id}");
                            registered.remove(&pem);
                            self.record.vms.remove(&pem);
                            changed = true;
                            self.unregistered.push(Registered { source: KeySource::Vm(vmid).to_string(), fingerprint: String::new(), node_id });
                            let extra = self.unregistered.len().saturating_sub(HISTORY);
                            self.unregistered.drain(..extra);
                        }
                        Err(e) => log::warn!("node-auth: unregister SuperNode {node_id} (VM {vmid} left the service): {e}"),
                    }
                }
                Action::Unregister { .. } => {}
            }
        }
        st.unregistered = self.unregistered.clone();
        // Records of keys Flower no longer has (unregistered by hand, an in-memory database
        // restarted) and not wanted any more: nothing left to undo.
        let before = self.record.vms.len();
        let want: BTreeSet<&str> = wanted.iter().map(|w| w.pem.as_str()).collect();
        self.record.vms.retain(|pem, _| registered.contains_key(pem) || want.contains(pem.as_str()));
        changed |= self.record.vms.len() != before;
        if changed {
            if let Err(e) = self.save() {
                log::warn!("node-auth: {e}");
            }
        }
        let mut seen = BTreeSet::new();
        for w in wanted {
            if let (Some(id), true) = (registered.get(&w.pem), seen.insert(w.pem.as_str())) {
                st.registered.push(Registered { source: w.source.to_string(), fingerprint: w.fingerprint.clone(), node_id: *id });
            }
        }
        st
    }

    fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.record).unwrap_or_default();
        crate::fsutil::write_atomic(&self.record_path, text.as_bytes(), 0o600, None)
            .map_err(|e| Error::msg(format!("write {}", self.record_path.display()), e.to_string()))
    }
}

/// A Control error in a few words (Flower's detail can be long).
fn short(e: &ControlError) -> String {
    let s = e.to_string();
    if s.chars().count() > 200 { format!("{}…", s.chars().take(200).collect::<String>()) } else { s }
}

type ServiceKeys = (Vec<(u64, NodePublicKey)>, Vec<Refused>, Vec<u64>);

/// The public keys of the service's SuperNode VMs: `GET /service` each cycle, `GET /vms/<id>`
/// for a VM whose key is not known yet. VMs that left are forgotten. Returns the keys, the
/// VMs whose key is malformed, and the VMs that have not published one yet.
fn service_keys(og: &onegate::Client, cache: &mut BTreeMap<u64, NodePublicKey>) -> std::result::Result<ServiceKeys, OneGateError> {
    let service = og.get_service(false)?;
    let ids: BTreeSet<u64> = service
        .role(SUPERNODE_ROLE)
        .map(|r| r.nodes.iter().map(|n| n.deploy_id).filter(|id| *id != og.vmid()).collect())
        .unwrap_or_default();
    cache.retain(|id, _| ids.contains(id));
    let (mut bad, mut waiting) = (Vec::new(), Vec::new());
    for id in &ids {
        if cache.contains_key(id) {
            continue;
        }
        let vm = match og.get_vm_by_id(*id) {
            Ok(vm) => vm,
            // A VM being deployed or just terminated: try again next cycle.
            Err(e) => {
                log::debug!("node-auth: GET /vms/{id}: {e}");
                waiting.push(*id);
                continue;
            }
        };
        match read_vm_key(&vm) {
            Some(VmKey::Key(k)) => {
                cache.insert(*id, k);
            }
            Some(VmKey::Bad(why)) => bad.push(Refused { source: KeySource::Vm(*id).to_string(), reason: why }),
            None => waiting.push(*id),
        }
    }
    Ok((cache.iter().map(|(id, k)| (*id, k.clone())).collect(), bad, waiting))
}

/// A VM's FL_NODE_PUBKEY: `None` when it has not published one.
fn read_vm_key(vm: &onegate::VmInfo) -> Option<VmKey> {
    let text = vm.attr(PUBKEY_ATTR)?;
    Some(match NodePublicKey::parse_openssh(text) {
        Ok(k) => VmKey::Key(k),
        Err(e) => VmKey::Bad(e.to_string()),
    })
}

const USAGE: &str = "\
usage: flower-init node-auth --control ADDR [--control-ca FILE] --record FILE
           [--keys FILE] [--onegate URL --vmid N --token-file FILE] [--every SECS] [--once]
       flower-init node-auth --key-file FILE [--comment TEXT]
Keeps Flower's registered SuperNode keys equal to the OneFlow service's SuperNode VMs
(their FL_NODE_PUBKEY, through OneGate) plus the keys in --keys (FL_SUPERNODE_KEYS, one per
line), through the Control API at ADDR. Prints `state JSON` after every cycle.
With --key-file: the SuperNode key at FILE (made if missing, mode 0600, OpenSSH format, as
the appliance keeps it on the state disk at node-auth/node.key): prints its public key line,
what a SuperLink registers (FL_SUPERNODE_KEYS, `flwr supernode register`).";

/// `flower-init node-auth …` (the appliance runs it as a supervised child); the exit code.
pub fn cli(args: &mut Args) -> i32 {
    if args.flag("--help") || args.flag("-h") {
        println!("{USAGE}");
        return 0;
    }
    if let Ok(Some(path)) = args.opt("--key-file") {
        return key_file(args, Path::new(&path));
    }
    let (inputs, every, once) = match parse(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("flower-init node-auth: {e}\n{USAGE}");
            return EXIT_USAGE;
        }
    };
    crate::logger::init(log::LevelFilter::Info);
    let mut r = match Registrar::new(inputs) {
        Ok(r) => r,
        Err(e) => {
            log::error!("node-auth: {e}");
            return 1;
        }
    };
    loop {
        let t0 = Instant::now();
        let st = r.cycle();
        println!("state {}", serde_json::to_string(&st).unwrap_or_default());
        let _ = std::io::stdout().flush();
        if once {
            return i32::from(st.error.is_some());
        }
        // SIGTERM's default action ends the process; the record is written atomically.
        std::thread::sleep(every.saturating_sub(t0.elapsed()).max(Duration::from_millis(200)));
    }
}

/// `--key-file`: make or read a SuperNode key, print its public line.
fn key_file(args: &mut Args, path: &Path) -> i32 {
    let comment = match args.opt("--comment") {
        Ok(c) => c.unwrap_or_else(|| "flower-supernode".into()),
        Err(e) => {
            eprintln!("flower-init node-auth: {e}");
            return EXIT_USAGE;
        }
    };
    if let Err(e) = args.finish() {
        eprintln!("flower-init node-auth: {e}\n{USAGE}");
        return EXIT_USAGE;
    }
    match crate::tls::nodekey::NodeKey::load_or_create(path, &comment) {
        Ok((key, created)) => {
            println!("{}", key.public().to_openssh(&comment));
            eprintln!("{} {} ({})", if created { "made" } else { "read" }, path.display(), key.public().fingerprint());
            0
        }
        Err(e) => {
            eprintln!("flower-init node-auth: {e}");
            1
        }
    }
}

/// The options → inputs, the cycle interval, `--once`; errors name the option.
fn parse(args: &mut Args) -> std::result::Result<(Inputs, Duration, bool), String> {
    let control = args.opt("--control")?.ok_or("--control is required")?.parse::<SocketAddr>().map_err(|e| format!("--control: {e}"))?;
    let control_ca_pem = match args.opt("--control-ca")? {
        Some(p) => Some(std::fs::read_to_string(&p).map_err(|e| format!("--control-ca {p}: {e}"))?),
        None => None,
    };
    let record_path = PathBuf::from(args.opt("--record")?.ok_or("--record is required")?);
    let keys = match args.opt("--keys")? {
        Some(p) => read_keys_file(Path::new(&p)).map_err(|e| format!("--keys {p}: {e}"))?,
        None => Vec::new(),
    };
    let onegate = match (args.opt("--onegate")?, args.opt("--vmid")?, args.opt("--token-file")?) {
        (Some(url), Some(vmid), Some(tf)) => {
            let endpoint = crate::config::values::url(&url).map_err(|e| format!("--onegate {url}: {e}"))?;
            let vmid = vmid.parse::<u64>().map_err(|e| format!("--vmid {vmid}: {e}"))?;
            let token = std::fs::read_to_string(&tf).map_err(|e| format!("--token-file {tf}: {e}"))?;
            Some(onegate::Client::new(&endpoint, vmid, Secret::new(token.trim().to_string())))
        }
        (None, None, None) => None,
        _ => return Err("--onegate, --vmid and --token-file go together".into()),
    };
    let every = match args.opt("--every")? {
        Some(s) => s.parse::<f64>().ok().filter(|x| *x > 0.0).and_then(|x| Duration::try_from_secs_f64(x).ok()).ok_or(format!("--every {s:?}: not a positive number of seconds"))?,
        None => Duration::from_secs(5),
    };
    let once = args.flag("--once");
    args.finish()?;
    Ok((Inputs { onegate, control, control_ca_pem, keys, record_path }, every, once))
}

/// The keys file: `N<TAB>key` per line (N: the FL_SUPERNODE_KEYS position).
fn read_keys_file(p: &Path) -> std::io::Result<Vec<(usize, String)>> {
    let text = std::fs::read_to_string(p)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter_map(|(n, k)| Some((n.trim().parse::<usize>().ok()?, k.trim().to_string())))
        .collect())
}

/// The keys file's text for `keys` (what [`read_keys_file`] reads).
pub fn keys_file_text(keys: &[(usize, String)]) -> String {
    keys.iter().map(|(n, k)| format!("{n}\t{}\n", k.replace(['\n', '\t'], " "))).collect()
}

#[cfg(test)]
mod tests;
