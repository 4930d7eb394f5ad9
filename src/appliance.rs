//! The appliance's own steps, shared by PID 1 and service mode: network, TLS, SuperLink
//! discovery, the Flower container, the gateway, OneGate, the training run, then supervision.
//!
//! Each step is one call into the module that owns the concern; this file only wires the
//! validated [`Config`] into their inputs and keeps the timeline. The DESIGN.md boot sequence,
//! steps 6-14: network → GPU → TLS → discovery → configs → container → `/health` → publish
//! (FL_* and READY=YES in one PUT) → run → supervise.

use crate::boot::{Boot, Failed, Note};
use crate::config::{self, Address, Config, Host, Role, UseCase};
use crate::container::{self, BindMount, OutputRing, Runc, Spec};
use crate::error::{Ctx, Error, Result};
use crate::flower::probe::Prober;
use crate::flower::{self, ProbeTls};
use crate::gateway::{self, GatewayConfig, GatewayHandle};
use crate::onegate::{self, Publisher};
use crate::status::Phase;
use crate::supervisor::{self, Backoff, Event, Output, Supervisor, TimerId};
use crate::{gpu, kmod, oneflow, runconfig, tls};
use nix::unistd::Pid;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long Flower may take from `runc start` to answering `/health` before the boot fails.
/// Generous: a SuperLink's first start takes ~25 s under TCG on one CPU (BENCHMARKS.md).
const FLOWER_READY_TIMEOUT: Duration = Duration::from_secs(600);
/// The readiness probe's cadence, as the baseline's probe (research/baseline-systemd-vm.md).
const PROBE_EVERY: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Starts of the container during boot before a Flower that exits at once fails the boot (a
/// wrong CA or a bad flag never gets better; a transient failure does).
const BOOT_ATTEMPTS: u32 = 3;
/// After a restart, how long the container must stay up before /health says 200 again.
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// runc create/start/kill/delete must each finish in this time.
const RUNC_TIMEOUT: Duration = Duration::from_secs(60);
/// `flwr run` (a one-shot container: a Python start, the FAB upload) may take this long.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(600);
/// The run's status file is read this often.
const RUN_POLL: Duration = Duration::from_secs(5);
/// Lines of the container's output kept for `/status`.
const RING_LINES: usize = 200;
/// The connection name flower-init writes into the Flower CLI's config.toml.
const FLWR_CONNECTION: &str = "appliance";
/// Where the run's status file is, as the container sees it (on the state directory).
const STATUS_FILE: &str = "/state/run-status.json";

/// Everything learnt on the way that later steps and the supervision loop need.
struct Node {
    cfg: Config,
    manifest: crate::image::Manifest,
    role: Role,
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
    gateway: Option<GatewayHandle>,
    publisher: Option<Publisher>,
    run: Option<RunFollow>,
}

/// A submitted training run being followed through the app's status file.
struct RunFollow {
    run_id: u64,
    host_status_file: PathBuf,
    last: Option<runconfig::AppStatus>,
    timer: Option<TimerId>,
}

/// GPU step (SuperNode with FL_GPU_ENABLED; PID 1 only, before the root switch while the
/// initramfs' modules are still there). Never fails the boot: no GPU is a warning.
pub fn gpu_step(boot: &mut Boot, cfg: &Config, index: &kmod::Index) -> std::result::Result<(), Failed> {
    if cfg.role() != Role::SuperNode || !cfg.gpu.enabled {
        return Ok(());
    }
    let gpus = boot.step("gpu", |_| {
        let req = gpu_request(cfg);
        let mut loader = kmod::Coldplug::new(index, kmod::Finit);
        let g = gpu::setup(&req, &mut |name| {
            loader.load(name);
            match loader.failed.get(&kmod::normalize(name)) {
                Some(why) => Err(Error::msg(format!("load module {name}"), why.clone())),
                None => Ok(()),
            }
        });
        let note = g.summary();
        Ok((g.clone(), if g.available { Note::Ok(note) } else { Note::Warn(note) }))
    })?;
    boot.sv.status.sections.insert(
        "gpu".into(),
        serde_json::json!({"available": gpus.available, "model": gpus.model, "gpus": gpus.gpus, "reason": gpus.reason, "warnings": gpus.warnings}),
    );
    boot.gpus = Some(gpus);
    Ok(())
}

fn gpu_request(cfg: &Config) -> gpu::Request {
    gpu::Request {
        enabled: cfg.gpu.enabled,
        devices: match &cfg.gpu.devices {
            config::CudaDevices::All => gpu::Selection::All,
            config::CudaDevices::Indices(v) => gpu::Selection::Indices(v.clone()),
        },
        memory_fraction: cfg.gpu.memory_fraction,
        // The image carries no NVIDIA userspace in this build: GPUs go to vfio-pci.
        nvidia_driver: None,
    }
}

/// A refused context: bring the network up if the context allows it and publish FL_ERROR, so
/// the operator sees why in OneGate as well as on the health port. Best effort throughout.
pub fn report_refusal(boot: &mut Boot, rej: &config::Rejected) {
    if boot.pid1.is_some() || boot.layout.configure_network {
        let _ = crate::boot::network_step(boot, &rej.network);
    }
    let Some(client) = onegate::client_from_config(&rej.onegate) else {
        boot.sv.status.sections.insert("onegate".into(), onegate::status_disabled("OneGate is not configured in the context"));
        return;
    };
    match start_publisher(boot, client) {
        Ok(p) => {
            p.set(&onegate::failure_attributes(rej.role, None, &rej.to_string()));
            boot.publisher = Some(p);
        }
        Err(e) => log::warn!("OneGate: {e}"),
    }
}

fn start_publisher(boot: &mut Boot, client: onegate::Client) -> Result<Publisher> {
    let waker = boot.sv.waker()?;
    Publisher::start(client, Some(std::sync::Arc::new(move || waker.wake())))
}

/// The boot failed before the workload: stay up (503 on the health port, FL_ERROR published)
/// until told to stop, then shut down.
pub fn stay_failed(mut boot: Boot, reason: Option<&str>) -> i32 {
    if let Some(r) = reason {
        log::error!("{r}");
    }
    if let Some(f) = &boot.sv.status.failure {
        log::error!("boot failed at {}: {}; staying up so /health can say why (power off to stop)", f.step, f.reason);
    }
    let publisher = boot.publisher.take();
    let code = boot.finish(|_, _| None);
    if let Some(p) = publisher {
        p.stop(Duration::from_secs(2));
    }
    code
}

/// The appliance: from a validated configuration to a supervised Flower. Returns the exit
/// code in service mode; as PID 1 it ends in power-off.
pub fn run(mut boot: Boot, cfg: Config) -> i32 {
    match prepare(&mut boot, cfg) {
        Ok(node) => supervise(boot, node),
        Err(f) => {
            publish_failure(&mut boot, &f);
            stay_failed(boot, None)
        }
    }
}

/// Publish FL_ERROR (and FL_READY=NO) for a failed step, when OneGate is set up.
fn publish_failure(boot: &mut Boot, f: &Failed) {
    let text = format!("{}: {}", f.step, f.reason);
    if let Some(p) = &boot.publisher {
        p.set(&onegate::failure_attributes(boot.role, Some(&boot.flower_version), &text));
    }
}

/// Everything up to a healthy, published Flower.
fn prepare(boot: &mut Boot, cfg: Config) -> std::result::Result<Node, Failed> {
    let role = cfg.role();
    boot.role = Some(role);
    boot.flower_version = cfg.common.flower_version.clone();
    let manifest = boot.step("manifest", |b| {
        let m = crate::image::load_at(&b.layout.image_root)?;
        let note = format!("app {} at {}", m.app.name, m.app.path.display());
        Ok((m, Note::Ok(note)))
    })?;
    // Network first: certificates and the published endpoint need the addresses.
    let addrs = if boot.pid1.is_some() || boot.layout.configure_network {
        crate::boot::network_step(boot, &cfg.network)?.addresses()
    } else {
        let a = crate::boot::host_addresses();
        log::info!("network: using the host's addresses {a:?} (no --configure-network)");
        a
    };
    // OneGate from the start, so a later failure can be published too.
    match onegate::client_from_config(&cfg.onegate) {
        Some(c) => match start_publisher(boot, c) {
            Ok(p) => boot.publisher = Some(p),
            Err(e) => log::warn!("OneGate publisher: {e}"),
        },
        None => {
            boot.sv.status.sections.insert("onegate".into(), onegate::status_disabled("ONEGATE_ENDPOINT, VMID or the token is missing"));
        }
    }
    let runc_root = boot.layout.run_dir.join("runc");
    let runc = Runc { binary: boot.layout.runc.clone(), log: runc_root.join("runc.log"), root: runc_root };
    let id = boot.layout.container_id.clone().unwrap_or_else(|| format!("flower-{role}"));
    let mut node = Node {
        cfg,
        manifest,
        role,
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
        publisher: None,
        run: None,
    };
    match role {
        Role::SuperLink => superlink_tls(boot, &mut node)?,
        Role::SuperNode => discover_and_trust(boot, &mut node)?,
    }
    start_flower(boot, &mut node)?;
    wait_healthy(boot, &mut node)?;
    if role == Role::SuperLink {
        start_gateway(boot, &mut node)?;
    }
    publish_ready(boot, &mut node)?;
    if role == Role::SuperLink && node.cfg.common.use_case != UseCase::None {
        submit_run(boot, &mut node)?;
    } else if role == Role::SuperLink {
        log::info!(
            "FL_USE_CASE=none: the SuperLink is idle; submit an app with `flwr run APP appliance` against the Control port (docs: README, 'Running your own app')"
        );
    }
    Ok(node)
}

/// SuperLink TLS: operator certificates, or our own CA and server certificate (reused across
/// boots from the state disk), or `--insecure` (loudly).
fn superlink_tls(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    let sl_tls = boot.step("tls", |b| {
        if !node.cfg.tls.superlink_enabled() {
            tls::log_insecure(&tls::insecure_warning(Role::SuperLink));
            return Ok((None, Note::Warn("FL_TLS_ENABLED=NO: --insecure, traffic unencrypted".into())));
        }
        let runtime = b.layout.run_dir.join("tls");
        let hostname = node.cfg.network.hostname.clone();
        let t = match &node.cfg.tls.operator {
            Some(pem) => {
                let endpoints: Vec<tls::San> = node.addrs.iter().map(|a| tls::San::Ip(*a)).collect();
                tls::superlink_operator(pem, &endpoints, &runtime, tls::ContainerUser::FLOWER).ctx("use the operator certificates (FL_SSL_*)")?
            }
            None => {
                let sans = tls::server_sans(&node.addrs, hostname.as_deref(), &node.cfg.tls.extra_sans);
                tls::superlink_generated(&b.layout.state_dir.join("tls"), &runtime, &sans, tls::ContainerUser::FLOWER).ctx("make the SuperLink certificate")?
            }
        };
        let note = t.summary();
        Ok((Some(t), Note::Ok(note)))
    })?;
    if let Some(t) = sl_tls {
        boot.sv.status.sections.insert("tls".into(), serde_json::json!({"ca_sha256": t.ca_fingerprint, "sans": t.sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()}));
        node.tls = Some((t.ca_pem.clone(), t.files.bind_mounts(container::CERTS_DIR)));
    }
    Ok(())
}

/// SuperNode: find the SuperLink (static address or OneGate), the partition, and whom to trust.
fn discover_and_trust(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    let found = boot.step("discovery", |b| {
        let sn = node.cfg.role.supernode().ok_or_else(|| Error::msg("discover the SuperLink", "not a SuperNode"))?;
        let client = onegate::client_from_config(&node.cfg.onegate);
        let input = onegate::DiscoveryInput {
            static_address: sn.superlink.as_ref(),
            want_partition: sn.node_config.is_none(),
            attempts: sn.discovery_retries,
            interval: sn.discovery_interval,
        };
        let sv = &mut b.sv;
        let found = onegate::discover(client.as_ref(), &input, &mut |d| sv.sleep(d))
            .map_err(|e| Error::msg("discover the SuperLink", e.to_string()))?;
        if let oneflow::PartitionOutcome::Skipped(why) = &found.partition {
            log::warn!("FL_NODE_CONFIG is empty and no partition could be computed: {why}");
        }
        let note = format!("SuperLink {} ({:?}), {} requests", found.superlink.address, found.superlink.source, found.requests);
        Ok((found, Note::Ok(note)))
    })?;
    let sn = node.cfg.role.supernode().cloned();
    let (nc, pid) = oneflow::node_config(sn.as_ref().and_then(|s| s.node_config.as_ref()), &found.partition);
    node.node_config = nc.map(|c| c.to_arg());
    node.partition_id = pid;
    node.superlink = Some(found.superlink.address.clone());
    let trust = boot.step("tls", |b| {
        let decision = tls::decide_supernode(
            node.cfg.tls.enabled,
            found.superlink.tls,
            node.cfg.tls.ca_pem.as_deref().map(str::as_bytes),
            found.superlink.ca_pem.as_deref(),
        )
        .ctx("decide the SuperNode's TLS")?;
        match decision {
            tls::SuperNodeTls::Verify { ca_pem, source } => {
                let t = tls::supernode_trust(&ca_pem, source, &b.layout.run_dir.join("tls")).ctx("trust the SuperLink's CA")?;
                let note = format!("trusting the CA from {} (SHA-256 {})", t.source.name(), t.fingerprints.join(", "));
                let pem = String::from_utf8_lossy(&ca_pem).into_owned();
                Ok((Some((pem, vec![t.bind_mount(&flower::supernode_ca_path())])), Note::Ok(note)))
            }
            tls::SuperNodeTls::Insecure { reason } => {
                let w = reason.warning();
                tls::log_insecure(&w);
                Ok((None, Note::Warn(w)))
            }
        }
    })?;
    node.tls = trust;
    Ok(())
}

/// The Flower command line of this role.
fn flower_args(node: &Node) -> Result<Vec<String>> {
    let c = &node.cfg;
    Ok(match &c.role {
        config::RoleConfig::SuperLink(sl) => flower::superlink_args(&flower::SuperLinkArgs {
            // Flower serves loopback only; the gateway exposes the Fleet API on the NICs.
            host: "127.0.0.1".into(),
            port: flower::SUPERLINK_PORT,
            tls: node.tls.as_ref().map(|_| flower::ServerTls::in_certs_dir()),
            database: match &sl.database {
                config::Database::InMemory => ":flwr-in-memory:".into(),
                config::Database::File(p) => state_path_in_container(p)?,
            },
            isolation: c.common.isolation,
        }),
        config::RoleConfig::SuperNode(sn) => flower::supernode_args(&flower::SuperNodeArgs {
            superlink: node.superlink.as_ref().map(|a| a.to_string()).unwrap_or_default(),
            root_certificates: node.tls.as_ref().map(|_| flower::supernode_ca_path()),
            node_config: node.node_config.clone(),
            max_retries: sn.max_retries,
            max_wait_time: sn.max_wait_time,
            runtime_port: flower::SUPERNODE_RUNTIME_PORT,
            isolation: c.common.isolation,
        }),
    })
}

/// A path on the state disk (`/var/lib/flower/...`, validated so by `config`) as the
/// container sees it: the container's `/state` is `/var/lib/flower/flower`, so Flower's files
/// stay apart from flower-init's (`tls/` holds the CA key, which never enters the container).
fn state_path_in_container(p: &Path) -> Result<String> {
    let rel = p
        .strip_prefix(config::STATE_DIR)
        .map_err(|_| Error::msg(format!("map {} into the container", p.display()), format!("not under {}", config::STATE_DIR)))?;
    Ok(Path::new(container::STATE_DIR).join(rel).display().to_string())
}

/// The host side of the container's `/state`.
fn host_state_dir(boot: &Boot) -> PathBuf {
    boot.layout.state_dir.join("flower")
}

/// The container spec for `args` (the Flower service, or a one-shot CLI run).
fn spec(boot: &Boot, node: &Node, id: &str, args: Vec<String>, rootfs: &Path) -> Spec {
    let mut s = Spec::new(id, rootfs, args);
    s.log_level = node.cfg.common.log_level;
    s.state_dir = Some(host_state_dir(boot));
    if node.role == Role::SuperNode {
        s.data_dir = boot.layout.data_dir.clone();
        s.env.push(("FL_ML_FRAMEWORK".into(), node.manifest.facts.framework.to_string()));
        if let Some(g) = &boot.gpus {
            s.devices = g.devices.clone();
            s.mounts.extend(g.mounts.iter().cloned());
            s.env.extend(g.env.iter().cloned());
        }
    }
    if let Some((_, binds)) = &node.tls {
        s.certs = binds.clone();
    }
    for (name, field) in [("resolv.conf", &mut s.resolv_conf), ("hosts", &mut s.hosts)] {
        let p = boot.layout.run_dir.join(name);
        if p.exists() {
            *field = Some(p);
        }
    }
    let mut limits = s.limits;
    for c in limits.restrict_to(container::Controllers::detect()) {
        log::info!("container: no {c} cgroup controller here: that limit is not set");
    }
    if let Some(hard) = container::nofile_hard() {
        limits.cap_nofile(hard);
    }
    s.limits = limits;
    s
}

/// Write the bundle and start the Flower container (runc create, adopt its init, runc start).
fn start_flower(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    boot.step("container", |b| {
        let rootfs = container_rootfs(b)?;
        container::prepare_state_dir(&host_state_dir(b), container::CONTAINER_UID, container::CONTAINER_GID)?;
        let args = flower_args(node)?;
        let s = spec(b, node, &node.id, args, &rootfs);
        let bundle = container::write_bundle(&b.layout.run_dir.join("bundle").join(&node.id), &s)?;
        std::fs::create_dir_all(&node.runc.root).with_ctx(|| format!("create {}", node.runc.root.display()))?;
        // A container of ours left by an earlier run (a crash, a service restart) is removed.
        let runc = node.runc.clone();
        let stale = container::cleanup_stale_with(&runc, &node.id, |argv| run_argv(&mut b.sv, "runc", argv))?;
        if let Some(st) = stale {
            log::warn!("container: removed a stale {:?} container {} left by an earlier run", st.status, node.id);
        }
        let pid = create_and_start(&mut b.sv, node, &bundle)?;
        let note = format!("{} running (init pid {pid}): {}", node.id, s.args.join(" "));
        Ok(((), Note::Ok(note)))
    })
}

/// The image tree for runc's root: `/` bound read-only under /run in a VM, the unpacked
/// rootfs bound the same way on a host.
fn container_rootfs(b: &Boot) -> Result<PathBuf> {
    let target = b.layout.run_dir.join("rootfs");
    if !crate::mount::is_mountpoint(&target) {
        container::bind_rootfs(&b.layout.image_root, &target)?;
    }
    Ok(target)
}

/// Run one argv (runc state/delete …) under the supervisor; stdout on success.
fn run_argv(sv: &mut Supervisor, name: &str, argv: &[std::ffi::OsString]) -> std::result::Result<String, String> {
    let Some((bin, rest)) = argv.split_first() else { return Err("empty command".into()) };
    let mut cmd = Command::new(bin);
    cmd.args(rest);
    match sv.run(name, cmd, RUNC_TIMEOUT) {
        Ok(o) if o.success() => Ok(o.stdout),
        Ok(o) => Err(format!("{}{}", o.stderr.trim(), if o.timed_out { " (timed out)" } else { "" })),
        Err(e) => Err(e.to_string()),
    }
}

/// `runc create` with the container's stdio on pipes (lines reach the console and the ring),
/// adopt the container init re-parented to us, `runc start`.
fn create_and_start(sv: &mut Supervisor, node: &mut Node, bundle: &Path) -> Result<Pid> {
    let pid_file = bundle.join("init.pid");
    let _ = std::fs::remove_file(&pid_file);
    let argv = node.runc.create(bundle, &pid_file, &node.id);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // The container inherits runc's stdout/stderr: spawn (not run) so the pipes outlive runc.
    let creator = sv.spawn(node.role.as_str(), cmd, Output::Events)?;
    let status = sv.wait_exit(creator, Some(Instant::now() + RUNC_TIMEOUT));
    let ok = matches!(status, Some(nix::sys::wait::WaitStatus::Exited(_, 0)));
    if !ok {
        let why = node.runc.last_error().unwrap_or_else(|| format!("{status:?}"));
        return Err(Error::msg(format!("runc create {}", node.id), why));
    }
    let text = std::fs::read_to_string(&pid_file).with_ctx(|| format!("read {}", pid_file.display()))?;
    let pid = Pid::from_raw(text.trim().parse().map_err(|_| Error::msg("read the container pid", text.clone()))?);
    sv.adopt(pid, node.role.as_str());
    run_argv(sv, "runc start", &node.runc.start(&node.id)).map_err(|e| Error::msg(format!("runc start {}", node.id), e))?;
    node.pid = Some(pid);
    sv.forward_signals_to(Some(pid));
    Ok(pid)
}

/// Poll Flower's `/health` every 100 ms until it answers 200 (the DESIGN's readiness), while
/// the container's output flows to the console and a shutdown request ends the wait.
fn wait_healthy(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    boot.step("flower", |b| {
        let started = Instant::now();
        let (addr, tls) = match node.role {
            Role::SuperLink => (
                SocketAddr::from(([127, 0, 0, 1], flower::SUPERLINK_PORT)),
                node.tls.as_ref().map(|(ca, _)| ProbeTls { ca_pem: ca.clone(), server_name: "127.0.0.1".into() }),
            ),
            // The SuperNode's local Runtime API (plain HTTP on loopback).
            Role::SuperNode => (SocketAddr::from(([127, 0, 0, 1], flower::SUPERNODE_RUNTIME_PORT)), None),
        };
        let prober = Prober::new(addr, tls.as_ref()).map_err(|e| Error::msg("prepare the health probe", e.to_string()))?;
        let deadline = started + FLOWER_READY_TIMEOUT;
        let mut attempts = 0u32;
        let mut last;
        loop {
            match prober.check(PROBE_TIMEOUT) {
                Ok(()) => break,
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(Error::msg("wait for Flower's /health", format!("no 200 within {}s; last: {last}", FLOWER_READY_TIMEOUT.as_secs())));
            }
            let until = Instant::now() + PROBE_EVERY;
            while let Some(ev) = b.sv.next_event(Some(until)) {
                match ev {
                    Event::Exited { pid, status, .. } if Some(pid) == node.pid => {
                        node.pid = None;
                        let why = format!("the container exited ({}) before /health answered{}", supervisor::describe_wait_status(status), last_lines(&node.ring, 5));
                        attempts += 1;
                        if attempts >= BOOT_ATTEMPTS {
                            return Err(Error::msg("start Flower", format!("{why} (attempt {attempts} of {BOOT_ATTEMPTS})")));
                        }
                        log::warn!("{why}; starting it again (attempt {} of {BOOT_ATTEMPTS})", attempts + 1);
                        b.sv.sleep(Duration::from_secs(attempts as u64));
                        restart_flower(b, node)?;
                    }
                    Event::Shutdown(r) => return Err(Error::msg("wait for Flower's /health", format!("interrupted: {r}"))),
                    other => on_event(b, node, other),
                }
            }
        }
        let took = started.elapsed().as_secs_f64();
        log::info!("flower healthy: {addr} /health answered 200 after {took:.2}s");
        node.prober = Some(prober);
        Ok(((), Note::Ok(format!("/health 200 after {took:.2}s"))))
    })
}

/// SuperLink: the Fleet-only gateway on the NIC addresses (issue #10).
fn start_gateway(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
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
            control: Some(gateway::ControlConfig::from_allow(allow, &node.addrs, gateway::DEFAULT_CONTROL_PORT)),
            tls: tls_files,
            upstream: SocketAddr::from(([127, 0, 0, 1], flower::SUPERLINK_PORT)),
            upstream_ca,
            limits: gateway::Limits::default(),
        };
        let h = gateway::start(cfg)?;
        let addrs: Vec<String> = h.local_addrs().iter().map(|(p, a)| format!("{p:?} {a}")).collect();
        Ok((Some(h), Note::Ok(addrs.join(", "))))
    })?;
    node.gateway = gw;
    Ok(())
}

/// FL_* and READY=YES in one PUT (the publisher retries in the background: never fatal).
fn publish_ready(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    boot.step("publish", |b| {
        let Some(p) = b.publisher.take() else {
            return Ok(((), Note::Skip("OneGate not configured".into())));
        };
        let v = node.cfg.common.flower_version.clone();
        let attrs = match node.role {
            Role::SuperLink => {
                let ip = node.addrs.iter().find(|a| a.is_ipv4()).or(node.addrs.first()).copied().unwrap_or(IpAddr::from([127, 0, 0, 1]));
                let endpoint = Address { host: Host::Ip(ip), port: flower::SUPERLINK_PORT };
                onegate::superlink_attributes(
                    &onegate::SuperLinkFacts { flower_version: &v, endpoint: &endpoint, ca_pem: node.tls.as_ref().map(|(c, _)| c.as_str()), ready: true, error: None },
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
        node.publisher = Some(p);
        Ok(((), Note::Ok(format!("queued {keys} (one PUT, retried in the background)"))))
    })
}

/// SuperLink with FL_USE_CASE: submit the bundled app with the run config from the context,
/// in a one-shot container running `flwr run` against the loopback Control API.
fn submit_run(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    boot.step("run", |b| {
        let sl = node.cfg.role.superlink().ok_or_else(|| Error::msg("submit the run", "not a SuperLink"))?;
        let ckpt = sl.checkpoint.as_ref().map(|c| state_path_in_container(&c.path)).transpose()?;
        let settings = runconfig::RunSettings::from_superlink(sl, node.cfg.common.use_case, ckpt.as_deref(), STATUS_FILE)
            .map_err(|e| Error::msg("build the run config", e.to_string()))?;
        let rc = settings.to_run_config().map_err(|e| Error::msg("build the run config", e.to_string()))?;
        if let Err(problems) = node.manifest.app.config.validate(&rc) {
            let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            return Err(Error::msg("check the run config against the app", text.join("; ")));
        }
        let host_status = host_state_dir(b).join("run-status.json");
        // The status of the last run, if any: a completed run of this configuration is not
        // submitted again on reboot (submit a new one with `flwr run`).
        let marker = host_state_dir(b).join("submitted-run.json");
        let rendered = rc.render();
        if let Ok(prev) = std::fs::read_to_string(&marker) {
            let prev: serde_json::Value = serde_json::from_str(&prev).unwrap_or_default();
            let done = std::fs::read_to_string(&host_status).ok().and_then(|t| runconfig::parse_status_file(&t).ok()).filter(|s| s.status == "completed");
            if prev["run_config"] == rendered && done.is_some() {
                let id = prev["run_id"].as_u64().unwrap_or(0);
                node.run = Some(RunFollow { run_id: id, host_status_file: host_status, last: None, timer: None });
                return Ok(((), Note::Skip(format!("run {id} with this configuration already completed; not submitted again"))));
            }
        }
        let home = b.layout.run_dir.join("flwr-cli");
        std::fs::create_dir_all(&home).with_ctx(|| format!("create {}", home.display()))?;
        std::os::unix::fs::chown(&home, Some(container::CONTAINER_UID), Some(container::CONTAINER_GID)).with_ctx(|| format!("chown {}", home.display()))?;
        let transport = match &node.tls {
            Some(_) => runconfig::Transport::RootCertificates(flower::supernode_ca_path()),
            None => runconfig::Transport::Insecure,
        };
        let toml = runconfig::flwr_config_toml(FLWR_CONNECTION, &format!("127.0.0.1:{}", flower::SUPERLINK_PORT), &transport)
            .map_err(|e| Error::msg("write the Flower CLI config", e))?;
        crate::fsutil::write_atomic(&home.join("config.toml"), toml.as_bytes(), 0o644, Some((container::CONTAINER_UID, container::CONTAINER_GID)))
            .with_ctx(|| format!("write {}", home.join("config.toml").display()))?;
        let argv = runconfig::flwr_run_argv(
            &format!("{}/flwr", container::VENV_BIN),
            &node.manifest.app.path.display().to_string(),
            FLWR_CONNECTION,
            &rc,
        );
        let submitted = match one_shot(b, node, "submit", argv, &home)
            .and_then(|out| runconfig::parse_run_output(&out).map_err(|e| Error::msg("submit the run (flwr run)", e.to_string())))
        {
            Ok(s) => s,
            Err(e) => {
                // Flower is up and serving; only `flwr run` failed (a timeout on a slow host, a
                // Flower error). The SuperLink stays up and says the run failed; an operator
                // can submit one with `flwr run` through the Control port.
                let msg = e.to_string();
                log::error!("run not submitted: {msg}; the SuperLink stays up (submit one with `flwr run`)");
                let st = runconfig::AppStatus {
                    run_id: 0,
                    status: "failed".into(),
                    round: 0,
                    num_rounds: Some(sl.num_rounds),
                    loss: None,
                    accuracy: None,
                    strategy: Some(sl.strategy.to_string()),
                    use_case: Some(node.cfg.common.use_case.to_string()),
                    connected_nodes: None,
                    message: format!("not submitted: {msg}"),
                    checkpoint: None,
                    updated: String::new(),
                };
                if let Some(p) = &node.publisher {
                    p.set_pairs(st.attributes());
                }
                b.sv.status.sections.insert("run".into(), serde_json::to_value(&st).unwrap_or_default());
                return Ok(((), Note::Warn(format!("run not submitted: {msg}"))));
            }
        };
        let rec = serde_json::json!({"run_id": submitted.run_id, "run_config": rendered});
        crate::fsutil::write_atomic(&marker, rec.to_string().as_bytes(), 0o644, None).with_ctx(|| format!("write {}", marker.display()))?;
        log::info!("run {} submitted: {} rounds of {} with {}", submitted.run_id, sl.num_rounds, node.cfg.common.use_case, sl.strategy);
        node.run = Some(RunFollow { run_id: submitted.run_id, host_status_file: host_status, last: None, timer: None });
        Ok(((), Note::Ok(format!("run {} submitted ({rendered})", submitted.run_id))))
    })
}

/// Run a Flower CLI command in a one-shot container (same image, same certificates, the CLI's
/// `$FLWR_HOME` bound from `home`), under the supervisor; its stdout.
fn one_shot(b: &mut Boot, node: &Node, suffix: &str, argv: Vec<String>, home: &Path) -> Result<String> {
    let id = format!("{}-{suffix}", node.id);
    let rootfs = container_rootfs(b)?;
    let mut s = spec(b, node, &id, argv, &rootfs);
    s.mounts.push(BindMount { source: home.to_path_buf(), destination: format!("{}/.flwr", container::HOME_DIR), read_only: false });
    let bundle = container::write_bundle(&b.layout.run_dir.join("bundle").join(&id), &s)?;
    let _ = run_argv(&mut b.sv, "runc delete", &node.runc.delete(&id, true));
    let mut argv = node.runc.run(&bundle, &id);
    let bin = argv.remove(0);
    let mut cmd = Command::new(bin);
    cmd.args(argv);
    let o = b.sv.run(&id, cmd, SUBMIT_TIMEOUT)?;
    if !o.success() {
        let why = format!("exit {}{}: {}", o.code, if o.timed_out { " (timed out)" } else { "" }, tail(&o.stdout, &o.stderr));
        return Err(Error::msg(format!("run {}", s.args.join(" ")), why));
    }
    Ok(o.stdout)
}

/// ": line | line" of the container's last output lines, for messages: the last `n` that read
/// like errors (Flower's "ERROR", a Python traceback, "failed") when there are any, since a
/// server's last words are usually its orderly shutdown; else the last `n`.
fn last_lines(ring: &OutputRing, n: usize) -> String {
    let all: Vec<&str> = ring.lines().collect();
    let errors: Vec<&str> = all.iter().copied().filter(|l| looks_like_error(l)).collect();
    let pick = if errors.is_empty() { &all } else { &errors };
    let tail = &pick[pick.len().saturating_sub(n)..];
    if tail.is_empty() { String::new() } else { format!(": {}", tail.join(" | ")) }
}

fn looks_like_error(line: &str) -> bool {
    ["ERROR", "Error", "error:", "Traceback", "Exception", "failed", "Failed", "FAILED"].iter().any(|w| line.contains(w))
}

fn tail(out: &str, err: &str) -> String {
    let all: Vec<&str> = out.lines().chain(err.lines()).filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(4)..].join(" | ")
}

/// Handle one event outside the main loop's own cases: output lines and status refreshes.
fn on_event(b: &mut Boot, node: &mut Node, ev: Event) {
    match ev {
        Event::Line { line, .. } => {
            for l in node.ring.push(format!("{line}\n").as_bytes()) {
                log::info!("{l}");
            }
        }
        Event::Woken => refresh_sections(b, node),
        _ => {}
    }
}

/// Copy the background threads' state (OneGate publisher, gateway) into `/status`.
fn refresh_sections(b: &mut Boot, node: &Node) {
    if let Some(p) = &node.publisher {
        b.sv.status.sections.insert("onegate".into(), p.status_json());
    }
    if let Some(g) = &node.gateway {
        b.sv.status.sections.insert("gateway".into(), g.stats_json());
    }
    b.sv.status.sections.insert("container".into(), serde_json::json!({
        "id": node.id,
        "pid": node.pid.map(|p| p.as_raw()),
        "state": if node.pid.is_some() { "running" } else { "stopped" },
        "output": node.ring.lines().collect::<Vec<_>>(),
    }));
    if let Ok(rss) = std::fs::read_to_string("/proc/self/status") {
        let hwm = rss.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok());
        b.sv.status.sections.insert("init".into(), serde_json::json!({"version": crate::cli::version(), "peak_rss_kib": hwm, "orphans_reaped": b.sv.orphans_reaped()}));
    }
}

/// Supervision: restart the container with backoff when it exits, follow the run, refresh
/// `/status`, until a shutdown request; then stop everything (and power off as PID 1).
fn supervise(mut b: Boot, mut node: Node) -> i32 {
    b.sv.status.phase = Phase::Ready;
    refresh_sections(&mut b, &node);
    log::info!("ready: {} {} supervised; /health answers 200", node.role, node.id);
    let mut backoff = Backoff::default();
    let mut started = Instant::now();
    let mut restart: Option<TimerId> = None;
    // After a restart, /health is probed every second until Flower answers again.
    let mut probe: Option<TimerId> = None;
    if let Some(r) = &mut node.run {
        r.timer = Some(b.sv.set_timer(Instant::now() + Duration::from_secs(1)));
    }
    let refresh = Duration::from_secs(5);
    let mut refresh_timer = b.sv.set_timer(Instant::now() + refresh);
    loop {
        let Some(ev) = b.sv.next_event(None) else { continue };
        match ev {
            Event::Shutdown(_) => break,
            Event::Exited { pid, status, .. } if Some(pid) == node.pid => {
                node.pid = None;
                b.sv.forward_signals_to(None);
                let delay = backoff.next_delay(started.elapsed());
                let why = format!("the Flower container exited ({}){}", supervisor::describe_wait_status(status), last_lines(&node.ring, 4));
                log::warn!("{}: {why}; restarting in {:.1}s", node.id, delay.as_secs_f64());
                // /health says so until Flower answers again (a wrong CA, for one, never does).
                b.sv.status.fail("flower", why);
                if let Some(t) = probe.take() {
                    b.sv.cancel_timer(t);
                }
                restart = Some(b.sv.set_timer(Instant::now() + delay));
                refresh_sections(&mut b, &node);
            }
            Event::Timer(t) if Some(t) == restart => {
                restart = None;
                started = Instant::now();
                match restart_flower(&mut b, &mut node) {
                    Ok(()) => probe = Some(b.sv.set_timer(Instant::now() + Duration::from_secs(1))),
                    Err(e) => {
                        let delay = backoff.next_delay(Duration::ZERO);
                        log::error!("{}: restart failed: {e}; next try in {:.1}s", node.id, delay.as_secs_f64());
                        b.sv.status.fail("flower", format!("restart failed: {e}"));
                        restart = Some(b.sv.set_timer(Instant::now() + delay));
                    }
                }
                refresh_sections(&mut b, &node);
            }
            Event::Timer(t) if Some(t) == probe => {
                probe = None;
                // Healthy again once /health answers and the container has stayed up a while: a
                // SuperNode answers /health before it reaches its SuperLink, and one that cannot
                // (a wrong CA) exits a moment later; that must not flap /health back to 200.
                let healthy = node.pid.is_some()
                    && started.elapsed() >= STABLE_AFTER
                    && node.prober.as_ref().is_some_and(|p| p.check(PROBE_TIMEOUT).is_ok());
                if healthy {
                    log::info!("flower healthy again after the restart");
                    b.sv.status.phase = Phase::Ready;
                    b.sv.status.failure = None;
                } else if node.pid.is_some() {
                    probe = Some(b.sv.set_timer(Instant::now() + Duration::from_secs(1)));
                }
            }
            Event::Timer(t) if node.run.as_ref().is_some_and(|r| r.timer == Some(t)) => {
                follow_run(&mut b, &mut node);
                if let Some(r) = &mut node.run {
                    r.timer = (r.last.as_ref().is_none_or(|s| s.status != "completed" && s.status != "failed"))
                        .then(|| b.sv.set_timer(Instant::now() + RUN_POLL));
                }
            }
            Event::Timer(t) if t == refresh_timer => {
                refresh_sections(&mut b, &node);
                refresh_timer = b.sv.set_timer(Instant::now() + refresh);
            }
            other => on_event(&mut b, &mut node, other),
        }
    }
    let runc = node.runc.clone();
    let id = node.id.clone();
    let pid = node.pid;
    let gateway = node.gateway.take();
    let publisher = node.publisher.take();
    b.finish(move |sv, grace| {
        if let Some(mut g) = gateway {
            g.stop(Duration::from_secs(5));
        }
        let code = stop_container(sv, &runc, &id, pid, grace);
        if let Some(p) = publisher {
            p.stop(Duration::from_secs(2));
        }
        code
    })
}

/// Restart: remove what is left of the old container, create and start a new one, wait for
/// `/health` again (the wait keeps serving health and noticing shutdown).
fn restart_flower(b: &mut Boot, node: &mut Node) -> Result<()> {
    let _ = run_argv(&mut b.sv, "runc delete", &node.runc.delete(&node.id, true));
    let bundle = b.layout.run_dir.join("bundle").join(&node.id);
    let pid = create_and_start(&mut b.sv, node, &bundle)?;
    log::info!("{}: restarted (init pid {pid})", node.id);
    Ok(())
}

/// `runc kill TERM`, wait up to `grace` for the init, `KILL`, wait, `delete`.
fn stop_container(sv: &mut Supervisor, runc: &Runc, id: &str, pid: Option<Pid>, grace: Duration) -> Option<i32> {
    let Some(pid) = pid else {
        let _ = run_argv(sv, "runc delete", &runc.delete(id, true));
        return None;
    };
    let _ = run_argv(sv, "runc kill", &runc.kill(id, "TERM"));
    let code = match sv.wait_exit(pid, Some(Instant::now() + grace)) {
        // Stopped by the SIGTERM we sent (tini passes a signalled child on as 128+N): that is
        // the clean stop asked for, exit 0.
        Some(st) => match supervisor::exit_code_from_wait_status(st) {
            c if c == 128 + libc::SIGTERM => Some(0),
            c => Some(c),
        },
        None => {
            log::warn!("{id}: still running {}s after SIGTERM: SIGKILL", grace.as_secs());
            let _ = run_argv(sv, "runc kill", &runc.kill(id, "KILL"));
            sv.wait_exit(pid, Some(Instant::now() + Duration::from_secs(10))).map(supervisor::exit_code_from_wait_status)
        }
    };
    if let Err(e) = run_argv(sv, "runc delete", &runc.delete(id, true)) {
        log::warn!("{id}: runc delete: {e}");
    }
    match code {
        Some(c) => log::info!("{id}: stopped (exit {c})"),
        None => log::error!("{id}: its init did not exit even after SIGKILL"),
    }
    code
}

/// Read the run's status file; publish and show what changed.
fn follow_run(b: &mut Boot, node: &mut Node) {
    let Some(run) = &mut node.run else { return };
    let Ok(text) = std::fs::read_to_string(&run.host_status_file) else { return };
    let Ok(st) = runconfig::parse_status_file(&text) else { return };
    if st.run_id != run.run_id && run.run_id != 0 {
        return; // the file of an earlier run, not rewritten yet
    }
    if run.last.as_ref() == Some(&st) {
        return;
    }
    log::info!(
        "run {}: {} round {}/{}{}{}",
        st.run_id,
        st.status,
        st.round,
        st.num_rounds.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
        st.loss.map(|l| format!(" loss={l:.4}")).unwrap_or_default(),
        st.accuracy.map(|a| format!(" accuracy={a:.4}")).unwrap_or_default()
    );
    if let Some(p) = &node.publisher {
        p.set_pairs(st.attributes());
    }
    b.sv.status.sections.insert("run".into(), serde_json::to_value(&st).unwrap_or_default());
    run.last = Some(st);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_prefer_the_errors_over_the_orderly_shutdown() {
        let mut ring = OutputRing::new("supernode", 50);
        ring.push(b"INFO : Starting Flower SuperNode\n\x1b[91mERROR \x1b[0m: SSL/TLS handshake error detected.\n");
        ring.push(b"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed\nINFO: Shutting down\nINFO: Finished server process [6]\n");
        let s = last_lines(&ring, 2);
        assert_eq!(s, ": supernode: ERROR : SSL/TLS handshake error detected. | supernode: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed");
        let mut calm = OutputRing::new("superlink", 50);
        calm.push(b"a\nb\nc\n");
        assert_eq!(last_lines(&calm, 2), ": superlink: b | superlink: c");
        assert_eq!(last_lines(&OutputRing::new("x", 5), 3), "");
    }
}
