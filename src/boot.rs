//! The boot sequence, one named step per line, for PID 1 and for service mode (`boot`).
//!
//! Failure policy, by phase (style.md item 2, catatonit's "no longer allowed to bail()"):
//! - **Before the workload starts**, a failing step is recorded in the timeline, `/health`
//!   answers 503 naming the step and the reason, FL_ERROR goes to OneGate when it can, and the
//!   init *stays up* until it is told to shut down, so an operator can read why.
//! - **Once the workload runs**, nothing exits: a dead container is restarted with backoff,
//!   publication failures are retried in the background.
//! - **A panic** logs, syncs and powers the VM off ([`power::set_panic_hook`]) instead of leaving
//!   the kernel to panic on a dead PID 1.
//!
//! PID 1 (`pid1`) does the machine's work first — mounts, modules, the context CD, the image
//! disk, the root switch, disks — then the steps shared with service mode (`flower-init boot`)
//! run in [`crate::appliance`]. Service mode is how images that keep systemd run flower-init
//! and how the host tests run a node: it never mounts over `/`, never `kill(-1)`s, never
//! reboots.

use crate::cli::{Args, EXIT_USAGE};
use crate::config::{self, ImageFacts, Role};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::power::{self, Mode, Pid1};
use crate::status::Outcome;
use crate::supervisor::{self, Supervisor};
use crate::{cdrom, health, kmod, logger, mount, net};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default port of flower-init's health endpoint (FL_HEALTH_PORT).
pub const HEALTH_PORT: u16 = 8081;
/// Where the appliance image is mounted before it becomes `/`.
const NEWROOT: &str = "/newroot";
/// How long PID 1 waits for the NICs named in the context to appear (drivers load async).
const LINK_WAIT: Duration = Duration::from_secs(10);

/// Where things are: fixed in a VM, given by flags in service mode.
#[derive(Debug, Clone)]
pub struct Layout {
    /// flower-init's runtime files (tmpfs): context copy, resolv.conf, hosts, certificates
    /// for the container, the OCI bundle, runc's state.
    pub run_dir: PathBuf,
    /// The context directory (`context.sh`, `token.txt`, FILES_DS files); None: find the CD.
    pub context_dir: Option<PathBuf>,
    /// The appliance image root (the container's rootfs and the manifest).
    pub image_root: PathBuf,
    /// The persistent state directory (`/var/lib/flower`, the FL_STATE disk in a VM).
    pub state_dir: PathBuf,
    /// The data directory given to the container at /app/data (the FL_DATA disk).
    pub data_dir: Option<PathBuf>,
    pub runc: PathBuf,
    pub health_addr: IpAddr,
    /// `--health-port`; None: FL_HEALTH_PORT (default 8081).
    pub health_port: Option<u16>,
    /// Configure the network from ETHx_* (always as PID 1; `--configure-network` otherwise).
    pub configure_network: bool,
    /// `--role`, overriding FL_ROLE.
    pub role: Option<Role>,
    /// `--container-id`; None: `flower-<role>`.
    pub container_id: Option<String>,
}

impl Layout {
    /// The VM's layout after the root switch.
    pub fn vm() -> Layout {
        Layout {
            run_dir: PathBuf::from("/run/flower-init"),
            context_dir: None,
            image_root: PathBuf::from("/"),
            state_dir: PathBuf::from(config::STATE_DIR),
            data_dir: None,
            runc: PathBuf::from("/usr/sbin/runc"),
            health_addr: IpAddr::from([0, 0, 0, 0]),
            health_port: None,
            configure_network: true,
            role: None,
            container_id: None,
        }
    }

    /// The image manifest.
    pub fn manifest(&self) -> PathBuf {
        crate::image::manifest_path_at(&self.image_root)
    }
}

/// How one step ended, with a detail for the timeline and the log.
pub enum Note {
    Ok(String),
    Warn(String),
    Skip(String),
}

/// A step that failed: the boot stops there (and stays up to say why).
#[derive(Debug)]
pub struct Failed {
    pub step: String,
    pub reason: String,
}

/// The boot's shared state: the event loop and what was done so far.
pub struct Boot {
    pub sv: Supervisor,
    pub layout: Layout,
    /// Mounts made at boot, in order; unmounted in reverse at power-off.
    pub mounts: Vec<PathBuf>,
    /// Present only when flower-init is the machine's init (never in `boot`).
    pub pid1: Option<Pid1>,
    /// What the GPU step found (SuperNode with FL_GPU_ENABLED).
    pub gpus: Option<crate::gpu::Gpus>,
    /// OneGate publication, started as soon as the context says where OneGate is.
    pub publisher: Option<crate::onegate::Publisher>,
    /// Known once validated (FL_ERROR publication of a later failure needs them).
    pub role: Option<Role>,
    pub flower_version: String,
    /// The port asked of the health server that listens (FL_HEALTH_PORT may move it later).
    health_port: Option<u16>,
}

impl Boot {
    fn new(sv: Supervisor, layout: Layout, pid1: Option<Pid1>) -> Boot {
        Boot { sv, layout, mounts: Vec::new(), pid1, gpus: None, publisher: None, role: None, flower_version: String::new(), health_port: None }
    }

    /// Run one named step, timing it into the timeline and logging its outcome. An error marks
    /// the boot failed: `/health` then answers 503 with this step and reason.
    pub fn step<T>(&mut self, name: &str, f: impl FnOnce(&mut Boot) -> Result<(T, Note)>) -> std::result::Result<T, Failed> {
        let i = self.sv.status.timeline.begin(name, logger::uptime());
        let started = logger::uptime();
        let result = f(self);
        let took = logger::uptime().saturating_sub(started).as_secs_f64();
        match result {
            Ok((v, note)) => {
                let (outcome, detail) = match note {
                    Note::Ok(d) => (Outcome::Ok, d),
                    Note::Warn(d) => (Outcome::Warning, d),
                    Note::Skip(d) => (Outcome::Skipped, d),
                };
                let sep = if detail.is_empty() { "" } else { ": " };
                match outcome {
                    Outcome::Warning => log::warn!("step {name}: warning ({took:.3}s){sep}{detail}"),
                    _ => log::info!("step {name}: {} ({took:.3}s){sep}{detail}", format!("{outcome:?}").to_lowercase()),
                }
                self.sv.status.timeline.end(i, logger::uptime(), outcome, detail);
                Ok(v)
            }
            Err(e) => {
                let reason = e.to_string();
                log::error!("step {name}: failed ({took:.3}s): {reason}");
                self.sv.status.timeline.end(i, logger::uptime(), Outcome::Failed, reason.clone());
                self.sv.status.fail(name, reason.clone());
                Err(Failed { step: name.to_string(), reason })
            }
        }
    }

    /// A sleep that keeps the loop turning (health answers, signals are noticed) for modules
    /// that wait (`cdrom`, `net`, OneGate discovery).
    pub fn sleeper(&mut self) -> impl FnMut(Duration) + '_ {
        |d| {
            self.sv.sleep(d);
        }
    }

    /// Wait for a shutdown request, then shut down: PID 1 powers off (never returns), service
    /// mode returns the exit code.
    pub fn finish(mut self, stop_workload: impl FnOnce(&mut Supervisor, Duration) -> Option<i32>) -> i32 {
        while self.sv.shutdown_requested().is_none() {
            self.sv.pump(None);
        }
        let reason = self.sv.shutdown_requested().map(|r| r.to_string()).unwrap_or_default();
        log::info!("shutdown requested: {reason}");
        let plan = power::Plan { unmount: self.mounts.clone(), ..power::Plan::default() };
        let failed = self.sv.status.failure.is_some();
        let mode = match self.pid1.take() {
            Some(p) => Mode::Pid1(p),
            None => Mode::Service,
        };
        let code = power::shutdown(&mut self.sv, mode, &plan, stop_workload);
        code.unwrap_or(if failed { 1 } else { 0 })
    }
}

/// PID-1 entry (the kernel started us). Never returns: it ends in `reboot(RB_POWER_OFF)`.
pub fn pid1(_argv: Vec<String>) -> ! {
    // Signals first: nothing may be forked or threaded before they are blocked.
    let blocked = supervisor::block_signals();
    logger::init(log::LevelFilter::Info);
    // Invariant: cli.rs calls pid1() only when getpid() == 1.
    let Some(me) = Pid1::claim() else { std::process::exit(supervisor::EXIT_INIT_FAILURE) };
    let mode = Mode::Pid1(me);
    power::set_panic_hook(&mode);
    let Mode::Pid1(me) = mode else { std::process::exit(supervisor::EXIT_INIT_FAILURE) };
    if power::disable_cad(&me).is_err() {
        // Not a VM's init (a test harness ran the binary under `unshare --pid` without a
        // subcommand): booting would mount over the host's view and never end. Stop now.
        log::error!(
            "PID 1 of a PID namespace, not of a machine (reboot(2) refuses CAD there): the PID-1 boot is for a VM kernel's init; \
             run `flower-init boot` (service mode) or `flower-init supervise` here"
        );
        std::process::exit(supervisor::EXIT_INIT_FAILURE);
    }
    let mounted = mount::early_at(Path::new("/"));
    mount::console_fds();
    logger::enable_kmsg();
    // Our log lines go to /dev/kmsg too; the default rate limit would drop most of them.
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    log::info!("{} starting as PID 1", crate::cli::version());
    if let Err(e) = &mounted {
        log::error!("early mounts: {e}");
    }
    let blocked = blocked.unwrap_or_else(|e| panic!("block signals: {e}"));
    let sv = Supervisor::new(blocked).unwrap_or_else(|e| panic!("start the event loop: {e}"));
    let mut boot = Boot::new(sv, Layout::vm(), Some(me));
    listen_health(&mut boot, HEALTH_PORT);
    let code = match machine_steps(&mut boot) {
        Ok(Some(cfg)) => crate::appliance::run(boot, cfg),
        Ok(None) | Err(_) => crate::appliance::stay_failed(boot, None),
    };
    // Unreachable in PID-1 mode (shutdown powers off); never return from init.
    log::error!("boot ended with code {code} without powering off; powering off now");
    match Pid1::claim() {
        Some(p) => power::power_off(&p),
        None => std::process::exit(code),
    }
}

/// Serve the health port, or log why not (a busy port must not stop the boot). Already
/// listening on `port` (FL_HEALTH_PORT repeats the default or the flag): nothing to do.
fn listen_health(boot: &mut Boot, port: u16) {
    if boot.health_port == Some(port) {
        return;
    }
    let addr = boot.layout.health_addr;
    match boot.sv.listen_health(&health::Config::on(addr, port)) {
        Ok(a) => {
            boot.health_port = Some(port);
            log::info!("health port: http://{a}/health and /status")
        }
        Err(e) => log::error!("health port {port}: {e}"),
    }
}

/// The steps only a machine's init does, up to a validated configuration. Ok(None): validation
/// failed (recorded in the status; the network is up when the context allowed it).
fn machine_steps(boot: &mut Boot) -> std::result::Result<Option<config::Config>, Failed> {
    let index = boot.step("modules", |_| {
        let ix = kmod::Index::running()?;
        let mut c = kmod::Coldplug::new(&ix, kmod::Finit);
        c.run_at(Path::new("/sys"), kmod::EXPLICIT);
        let (loaded, failed) = (c.loaded.len(), c.failed.clone());
        for (m, why) in &failed {
            log::debug!("module {m}: {why}");
        }
        let note = format!("{loaded} loaded{}", if failed.is_empty() { String::new() } else { format!(", {} not loadable (no such device/firmware)", failed.len()) });
        Ok((ix, Note::Ok(note)))
    })?;
    if let Err(e) = boot.sv.watch_acpi() {
        log::warn!("ACPI power button: {e}: `onevm terminate` will not power off cleanly (SIGTERM/SIGPWR still do)");
    }
    let ctx = context_step(boot)?;
    let (facts, image) = boot.step("image", |_| {
        let (disks, notes) = mount::find_disks_at(Path::new("/sys"), Path::new("/dev"));
        for n in notes {
            log::warn!("{n}");
        }
        let Some((dev, fs)) = disks.image.clone() else {
            let note = "no appliance image disk (squashfs/erofs holding /etc/flower-init/image.json): Flower cannot run";
            return Ok(((ImageFacts::builtin(), disks), Note::Warn(note.into())));
        };
        mount::mount_image(&dev, fs, Path::new(NEWROOT))?;
        let facts = ImageFacts::load(&crate::image::manifest_path_at(Path::new(NEWROOT)))?;
        let note = format!("{} ({}) on {NEWROOT}: Flower {}, {}", dev.display(), fs.as_str(), facts.flower_version, facts.framework);
        Ok(((facts, disks), Note::Ok(note)))
    })?;
    let Some(cfg) = validate_step(boot, &ctx, &facts)? else {
        return Ok(None);
    };
    crate::appliance::gpu_step(boot, &cfg, &index)?;
    boot.step("root", |b| {
        let newroot = Path::new(NEWROOT);
        let note = if image.image.is_some() {
            "switched to the image".to_string()
        } else {
            mount::mount_tmpfs(newroot, "mode=0755")?;
            mount::copy_rootfs(Path::new("/"), newroot)?;
            "no image disk: switched to a tmpfs copy of the initramfs".to_string()
        };
        mount::switch_root(newroot)?;
        for (dir, opts) in [("/tmp", "mode=1777"), ("/var/tmp", "mode=1777")] {
            mount::mount_tmpfs(Path::new(dir), opts)?;
            b.mounts.push(dir.into());
        }
        Ok(((), Note::Ok(note)))
    })?;
    boot.step("disks", |b| {
        let state = Path::new(config::STATE_DIR);
        let mut notes = Vec::new();
        let warn = match &image.state {
            Some(dev) => {
                mount::mount_ext4(dev, state, false)?;
                notes.push(format!("state {} on {}", dev.display(), state.display()));
                false
            }
            None => {
                mount::mount_tmpfs(state, "mode=0755")?;
                notes.push(format!("no {} disk: state on a tmpfs, lost at power-off (CA, database, checkpoints)", mount::STATE_LABEL));
                true
            }
        };
        b.mounts.push(state.to_path_buf());
        if let Some(dev) = &image.data {
            let data = Path::new("/var/lib/flower-data");
            mount::mount_ext4(dev, data, true)?;
            b.mounts.push(data.to_path_buf());
            b.layout.data_dir = Some(data.to_path_buf());
            notes.push(format!("data {} on {} (read-only)", dev.display(), data.display()));
        }
        let note = notes.join("; ");
        Ok(((), if warn { Note::Warn(note) } else { Note::Ok(note) }))
    })?;
    Ok(Some(cfg))
}

/// Find and read the context: the directory given, else the CD labelled CONTEXT.
fn context_step(boot: &mut Boot) -> std::result::Result<Context, Failed> {
    boot.step("context", |b| {
        let dir = match b.layout.context_dir.clone() {
            Some(d) => d,
            None => {
                let mut sleep = b.sleeper();
                cdrom::discover(&mut sleep)?
            }
        };
        let ctx = Context::load_from(&dir).map_err(|e| Error::msg(format!("read the context in {}", dir.display()), e.to_string()))?;
        b.layout.context_dir = Some(dir.clone());
        let note = format!("{} variables from {}{}", ctx.keys().count(), dir.display(), if ctx.token().is_some() { ", token.txt" } else { "" });
        Ok((ctx, Note::Ok(note)))
    })
}

/// Validate every variable at once. A refused context marks the boot failed, and — best effort
/// — still brings the network up so OneGate can get FL_ERROR.
fn validate_step(boot: &mut Boot, ctx: &Context, facts: &ImageFacts) -> std::result::Result<Option<config::Config>, Failed> {
    let role = boot.layout.role;
    match config::resolve(ctx, facts, role) {
        Ok(r) => {
            for w in &r.warnings {
                log::warn!("{w}");
            }
            let cfg = r.config;
            let note = format!("{} {}: {} warnings", cfg.role(), cfg.common.framework, r.warnings.len());
            boot.step("validate", |_| Ok(((), Note::Ok(note))))?;
            logger::set_level(level_of(cfg.common.log_level));
            listen_health(boot, boot.layout.health_port.unwrap_or(cfg.common.health_port));
            Ok(Some(cfg))
        }
        Err(rej) => {
            for w in &rej.warnings {
                log::warn!("{w}");
            }
            let text = rej.to_string();
            for line in text.lines() {
                log::error!("context: {line}");
            }
            let _ = boot.step("validate", |_| -> Result<((), Note)> { Err(Error::msg("validate the context", text.replace('\n', "; "))) });
            crate::appliance::report_refusal(boot, &rej);
            Ok(None)
        }
    }
}

/// FL_LOG_LEVEL for flower-init's own log.
fn level_of(l: config::LogLevel) -> log::LevelFilter {
    match l {
        config::LogLevel::Debug => log::LevelFilter::Debug,
        config::LogLevel::Info => log::LevelFilter::Info,
        config::LogLevel::Warning => log::LevelFilter::Warn,
        config::LogLevel::Error => log::LevelFilter::Error,
    }
}

/// Bring the network up from a plan (PID 1 always; service mode with --configure-network).
pub fn network_step(boot: &mut Boot, plan: &net::Plan) -> std::result::Result<net::Applied, Failed> {
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
        b.sv.status.sections.insert("network".into(), serde_json::to_value(&applied).unwrap_or_default());
        let warn = !applied.warnings.is_empty();
        Ok((applied, if warn { Note::Warn(note) } else { Note::Ok(note) }))
    })
}

/// Addresses already configured on this host's interfaces (service mode without
/// --configure-network: the host's own network is used as it is).
pub fn host_addresses() -> Vec<IpAddr> {
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

const BOOT_USAGE: &str = "\
usage: flower-init boot [options]      the appliance boot as a service (no PID-1 duties)
  --context DIR          the context (context.sh, token.txt, FILES_DS files); default: find the CD
  --image DIR            the appliance image root (default /)
  --state DIR            persistent state (default /var/lib/flower)
  --data DIR             data for the container's /app/data (read-only)
  --run-dir DIR          runtime files (default /run/flower-init)
  --runc PATH            the OCI runtime (default /usr/sbin/runc)
  --health-port N        health port (default FL_HEALTH_PORT, 8081)
  --health-addr IP       health listen address (default 0.0.0.0)
  --configure-network    apply ETHx_* from the context (off: the host's network is used)
  --role ROLE            superlink or supernode (overrides FL_ROLE)
  --container-id ID      runc container id (default flower-ROLE)";

/// `flower-init boot …`: the same boot without PID-1 duties; returns the exit code.
pub fn cli_boot(args: &mut Args) -> i32 {
    let blocked = match supervisor::block_signals() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("flower-init boot: {e}");
            return supervisor::EXIT_INIT_FAILURE;
        }
    };
    if args.flag("--help") {
        println!("{BOOT_USAGE}");
        return 0;
    }
    let layout = match parse_boot_args(args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("flower-init boot: {e}\n{BOOT_USAGE}");
            return EXIT_USAGE;
        }
    };
    logger::init(log::LevelFilter::Info);
    log::info!("{} starting in service mode", crate::cli::version());
    power::set_panic_hook(&Mode::Service);
    if nix::unistd::getpid().as_raw() != 1 {
        if let Err(e) = supervisor::become_subreaper() {
            log::warn!("{e}: orphans of the container go to the real init");
        }
    }
    let sv = match Supervisor::new(blocked) {
        Ok(sv) => sv,
        Err(e) => {
            log::error!("{e}");
            return supervisor::EXIT_INIT_FAILURE;
        }
    };
    let port = layout.health_port.unwrap_or(HEALTH_PORT);
    let mut boot = Boot::new(sv, layout, None);
    listen_health(&mut boot, port);
    let prepared = (|| -> std::result::Result<Option<config::Config>, Failed> {
        let ctx = context_step(&mut boot)?;
        let manifest = boot.layout.manifest();
        let facts = boot.step("image", |_| {
            let f = ImageFacts::load(&manifest)?;
            let note = format!("{}: Flower {}, {}", manifest.display(), f.flower_version, f.framework);
            Ok((f, Note::Ok(note)))
        })?;
        validate_step(&mut boot, &ctx, &facts)
    })();
    match prepared {
        Ok(Some(cfg)) => crate::appliance::run(boot, cfg),
        Ok(None) | Err(_) => crate::appliance::stay_failed(boot, None),
    }
}

fn parse_boot_args(a: &mut Args) -> std::result::Result<Layout, String> {
    let mut l = Layout::vm();
    l.configure_network = false;
    let path = |v: Option<String>| v.map(PathBuf::from);
    if let Some(d) = path(a.opt("--context")?) {
        l.context_dir = Some(d);
    }
    if let Some(d) = path(a.opt("--image")?) {
        l.image_root = d;
    }
    if let Some(d) = path(a.opt("--state")?) {
        l.state_dir = d;
    }
    l.data_dir = path(a.opt("--data")?);
    if let Some(d) = path(a.opt("--run-dir")?) {
        l.run_dir = d;
    }
    if let Some(p) = path(a.opt("--runc")?) {
        l.runc = p;
    }
    if let Some(p) = a.opt("--health-port")? {
        l.health_port = Some(p.parse().map_err(|_| format!("--health-port {p:?}: not a port number"))?);
    }
    if let Some(ip) = a.opt("--health-addr")? {
        l.health_addr = ip.parse().map_err(|_| format!("--health-addr {ip:?}: not an IP address"))?;
    }
    l.configure_network = a.flag("--configure-network");
    if let Some(r) = a.opt("--role")? {
        l.role = Some(r.parse().map_err(|e| format!("--role {r:?}: {e}"))?);
    }
    l.container_id = a.opt("--container-id")?;
    a.finish()?;
    for (flag, p) in [("--state", Some(&l.state_dir)), ("--run-dir", Some(&l.run_dir)), ("--image", Some(&l.image_root))] {
        if let Some(p) = p.filter(|p| p.is_relative()) {
            return Err(format!("{flag} {}: must be an absolute path", p.display()));
        }
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Args {
        Args::new(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn boot_flags_fill_the_layout() {
        let l = parse_boot_args(&mut args(&[
            "--context", "/tmp/ctx", "--image", "/img", "--state", "/st", "--health-port", "9001", "--configure-network", "--role", "SuperNode",
        ]))
        .unwrap();
        assert_eq!(l.context_dir.as_deref(), Some(Path::new("/tmp/ctx")));
        assert_eq!(l.image_root, Path::new("/img"));
        assert_eq!(l.health_port, Some(9001));
        assert!(l.configure_network);
        assert_eq!(l.role, Some(Role::SuperNode));
        assert!(parse_boot_args(&mut args(&["--state", "rel"])).unwrap_err().contains("absolute"));
        assert!(parse_boot_args(&mut args(&["--health-port", "x"])).is_err());
        assert!(parse_boot_args(&mut args(&["--bogus"])).is_err());
    }
}
