//! The appliance: its own steps, shared by the two boot scripts ([`crate::pid1`] and
//! [`crate::service`]), from a validated configuration to a supervised Flower. [`run`] is the
//! list; each step is one call into a file of this folder, which wires the validated
//! [`Config`] into the inputs of the module that owns the concern and records the step:
//!
//! | file | steps |
//! |---|---|
//! | `steps.rs` | the recorder ([`Boot::step`]), [`Layout`], staying up failed |
//! | `inputs.rs` | `context`, `validate` (both boot scripts) |
//! | `network.rs` | `network` |
//! | `overlay.rs` | `wireguard` (FL_WG_*: the overlay between sites) |
//! | `publication.rs`, `publish.rs` | OneGate: the publisher held to power-off; started early, `publish` (READY), FL_ERROR of any failure |
//! | `trust.rs` | `tls` (SuperLink), `discovery` and `tls` (SuperNode) |
//! | `spec.rs`, `workload.rs` | `container`, `flower` (`/health`), restart, stop |
//! | `expose.rs` | `gateway` (SuperLink) |
//! | `helper.rs` | flower-init's own helper processes (gateway, registrar): start, restart with back-off, stop |
//! | `admit.rs` | `node-key` (SuperNode), `node-auth` (SuperLink): SuperNode authentication (docs/node-auth.md) |
//! | `run.rs`, `watchdog.rs` | `run` (SuperLink with FL_USE_CASE) and following it; a run that cannot progress reported failed |
//! | `renew.rs` | the SuperLink's certificate check while it runs (renew, reload, restart) |
//! | `supervise.rs` | supervision, then shutdown |
//! | `report.rs` | the `/status` sections |
//!
//! Failure policy, by phase (style.md item 2, catatonit's "no longer allowed to bail()"):
//! - **Before the workload starts**, a failing step is recorded in the timeline, `/health`
//!   answers 503 naming the step and the reason, FL_ERROR goes to OneGate when it can, and the
//!   init *stays up* until it is told to shut down, so an operator can read why.
//! - **Once the workload runs**, nothing exits: a dead container is restarted with backoff,
//!   publication failures are retried in the background.
//! - **A panic** logs, syncs and powers the VM off (`power::set_panic_hook`) instead of leaving
//!   the kernel to panic on a dead PID 1.

mod admit;
mod expose;
mod helper;
mod inputs;
mod network;
mod overlay;
mod publication;
mod publish;
mod renew;
mod report;
mod run;
mod spec;
mod steps;
mod supervise;
mod trust;
mod watchdog;
mod workload;

pub use inputs::{context as context_step, validate as validate_step};
pub use report::Report;
pub use spec::{machine_limits, supernode_spec};
pub use steps::{Boot, Failed, HEALTH_PORT, Layout, Note, stay_failed};

use crate::config::{Address, Config};
use crate::container::{BindMount, OutputRing, Runc};
use crate::flower::probe::Prober;
use crate::vocab::{Role, UseCase};
use nix::unistd::Pid;
use std::net::IpAddr;

/// Lines of the container's output kept for `/status`.
const RING_LINES: usize = 200;

/// Everything the appliance steps learn that later steps and the supervision loop need. The
/// role is the configuration's ([`Node::role`]); OneGate is the [`Boot`]'s.
struct Node {
    cfg: Config,
    manifest: crate::image::Manifest,
    /// Non-loopback addresses of this VM (certificate SANs, the published endpoint).
    addrs: Vec<IpAddr>,
    /// Container side of TLS: CA PEM (for the probe and OneGate) and the files to bind.
    tls: Option<(String, Vec<BindMount>)>,
    /// SuperNode: where the SuperLink is; the node config; its partition id.
    superlink: Option<Address>,
    node_config: Option<String>,
    partition_id: Option<u32>,
    runc: Runc,
    id: String,
    ring: OutputRing,
    /// The container's init (tini), adopted from runc.
    pid: Option<Pid>,
    /// Flower's `/health`, as probed at boot and after each restart.
    prober: Option<Prober>,
    /// SuperLink: the gateway child process.
    gateway: Option<expose::GatewayProc>,
    /// SuperLink with SuperNode authentication: the key registrar child process.
    admit: Option<admit::AdmitProc>,
    /// SuperNode with authentication: its key, bound into the container.
    node_key: Option<admit::NodeKeyUse>,
    run: Option<run::Follow>,
    /// SuperLink with TLS: its certificates, checked by the supervision loop ([`renew`]).
    superlink_tls: Option<crate::tls::SuperLinkTls>,
    /// The container's restarts after an exit, and its last exit.
    restarts: u32,
    last_exit: Option<report::LastExit>,
    /// SuperNode: its partition and the rounds it took part in (from Flower's output).
    participation: report::Participation,
}

impl Node {
    fn role(&self) -> Role {
        self.cfg.role()
    }
}

/// The appliance: from a validated configuration to a supervised Flower. Returns the exit
/// code in service mode; as PID 1 it ends in power-off. A failed step is published (FL_ERROR)
/// and the init stays up to say why.
pub fn run(mut boot: Boot, cfg: Config) -> i32 {
    match steps(&mut boot, cfg) {
        Ok(node) => supervise::supervise(boot, node),
        Err(f) => {
            publish::failure(&boot, &f);
            stay_failed(boot)
        }
    }
}

/// The steps, in order, up to a healthy, published Flower (and its run submitted).
fn steps(boot: &mut Boot, cfg: Config) -> std::result::Result<Node, Failed> {
    let role = cfg.role();
    let manifest = boot.step("manifest", |b| {
        let m = crate::image::load_at(&b.layout.image_root)?;
        let note = format!("app {} at {}", m.app.name, m.app.path.display());
        Ok((m, Note::Ok(note)))
    })?;
    // Network first: certificates and the published endpoint need the addresses.
    let mut addrs = network::addresses(boot, &cfg.network)?;
    if let Some(wg) = &cfg.wireguard {
        if boot.pid1.is_some() || boot.layout.configure_network {
            addrs.push(overlay::step(boot, wg)?);
        } else {
            log::warn!("FL_WG_* is ignored: service mode without --configure-network leaves the host's network as it is");
        }
    }
    // OneGate from the start, so a later failure can be published too.
    publish::start(boot, &cfg.onegate, "ONEGATE_ENDPOINT, VMID or the token is missing", Some(role), Some(&cfg.common.flower_version));
    let mut node = new_node(boot, cfg, manifest, addrs);
    match role {
        Role::SuperLink => trust::superlink(boot, &mut node)?,
        Role::SuperNode => trust::supernode(boot, &mut node)?,
    }
    workload::start(boot, &mut node)?;
    workload::wait_healthy(boot, &mut node)?;
    if role == Role::SuperLink {
        expose::start(boot, &mut node)?;
        admit::start(boot, &mut node)?;
    }
    publish::ready(boot, &node)?;
    if role == Role::SuperLink && node.cfg.common.use_case != UseCase::None {
        run::submit(boot, &mut node)?;
    } else if role == Role::SuperLink {
        log::info!(
            "FL_USE_CASE=none: the SuperLink is idle; submit an app with `flwr run APP appliance` against the Control port (docs: README, 'Running your own app')"
        );
    }
    Ok(node)
}

fn new_node(boot: &Boot, cfg: Config, manifest: crate::image::Manifest, addrs: Vec<IpAddr>) -> Node {
    let role = cfg.role();
    let runc_root = boot.layout.run_dir.join("runc");
    let runc = Runc { binary: boot.layout.runc.clone(), log: runc_root.join("runc.log"), root: runc_root };
    let id = boot.layout.container_id.clone().unwrap_or_else(|| format!("flower-{role}"));
    Node {
        cfg,
        manifest,
        addrs,
        tls: None,
        superlink: None,
        node_config: None,
        partition_id: None,
        runc,
        id,
        ring: OutputRing::new(role.as_str(), RING_LINES),
        pid: None,
        prober: None,
        gateway: None,
        admit: None,
        node_key: None,
        run: None,
        superlink_tls: None,
        restarts: 0,
        last_exit: None,
        participation: report::Participation::default(),
    }
}

/// Take in what the background threads, the container and flower-init say now, and serve it.
fn refresh(b: &mut Boot, node: &Node) {
    b.report.refresh(&b.sv, node, b.onegate.publisher());
    b.show();
}
