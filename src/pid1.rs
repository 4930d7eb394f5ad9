//! The boot of a VM, as its PID 1: the kernel started flower-init as `/init`. Read [`run`]
//! top to bottom: signals, early mounts, then the steps, each named in `/status`'s timeline:
//!
//! `modules` → `context` (the CD) → `image` → `validate` → `gpu` → `root` (switch into the
//! image) → `disks` (state, data) → the appliance's steps ([`crate::appliance::run`]:
//! network, OneGate, TLS, container, Flower, gateway, publish, run, supervise) → power-off.
//!
//! Only here: mounting over `/`, `kill(-1)`, `reboot(2)`. Never run this on a host: it refuses
//! to in a nested PID namespace (see [`run`]).

use crate::appliance::{self, Boot, Failed, HEALTH_PORT, Layout, Note};
use crate::args::version;
use crate::config::{Config, CudaDevices, ImageFacts};
use crate::error::Error;
use crate::image::NvidiaDriver;
use crate::power::{self, Mode, Pid1};
use crate::supervisor::{self, Supervisor};
use crate::vocab::{Role, STATE_DIR};
use crate::{gpu, grow, kmod, logger, mount};
use std::path::Path;

/// Where the appliance image is mounted before it becomes `/`.
const NEWROOT: &str = "/newroot";

/// PID-1 entry (the kernel started us). Never returns: it ends in `reboot(RB_POWER_OFF)`.
pub fn run(_argv: Vec<String>) -> ! {
    // Signals first: nothing may be forked or threaded before they are blocked.
    let blocked = supervisor::block_signals();
    logger::init(log::LevelFilter::Info);
    // Invariant: cli.rs calls pid1::run() only when getpid() == 1.
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
    log::info!("{} starting as PID 1", version());
    if let Err(e) = &mounted {
        log::error!("early mounts: {e}");
    }
    let blocked = blocked.unwrap_or_else(|e| panic!("block signals: {e}"));
    let sv = Supervisor::new(blocked).unwrap_or_else(|e| panic!("start the event loop: {e}"));
    let mut boot = Boot::new(sv, Layout::vm(), Some(me));
    boot.listen_health(HEALTH_PORT);
    let code = match machine_steps(&mut boot) {
        Ok(Some(cfg)) => appliance::run(boot, cfg),
        Ok(None) | Err(_) => appliance::stay_failed(boot),
    };
    // Unreachable in PID-1 mode (shutdown powers off); never return from init.
    log::error!("boot ended with code {code} without powering off; powering off now");
    match Pid1::claim() {
        Some(p) => power::power_off(&p),
        None => std::process::exit(code),
    }
}

/// The steps only a machine's init does, up to a validated configuration. Ok(None): validation
/// failed (recorded in the status; the network is up when the context allowed it).
fn machine_steps(boot: &mut Boot) -> std::result::Result<Option<Config>, Failed> {
    let index = boot.step("modules", |_| {
        let ix = kmod::Index::running()?;
        let mut c = kmod::Coldplug::new(&ix, kmod::Finit);
        c.run_at(Path::new("/sys"), kmod::EARLY);
        let (loaded, failed) = (c.loaded.len(), c.failed.clone());
        for (m, why) in &failed {
            log::debug!("module {m}: {why}");
        }
        let note = format!("{loaded} loaded{}", if failed.is_empty() { String::new() } else { format!(", {} not loadable (no such device/firmware)", failed.len()) });
        Ok((ix, Note::Ok(note)))
    })?;
    clock_from_rtc();
    if let Err(e) = boot.sv.watch_acpi() {
        log::warn!("ACPI power button: {e}: `onevm terminate` will not power off cleanly (SIGTERM/SIGPWR still do)");
    }
    let ctx = appliance::context_step(boot)?;
    let (facts, nvidia, image) = boot.step("image", |_| {
        let (disks, notes) = mount::find_disks_at(Path::new("/sys"), Path::new("/dev"));
        for n in notes {
            log::warn!("{n}");
        }
        // The file systems' modules now that the disks are known: only those a disk needs.
        let mut loader = kmod::Coldplug::new(&index, kmod::Finit);
        let ext4 = disks.state.is_some() || disks.data.is_some();
        let mut fs_modules = Vec::new();
        for need in kmod::for_disks(disks.image.as_ref().map(|(_, fs)| fs.as_str()), ext4) {
            match loader.load_first(&need) {
                Ok(m) => fs_modules.push(m),
                Err(why) => log::warn!("module {}: {why}", need.join(" or ")),
            }
        }
        let fs_modules = if fs_modules.is_empty() { String::new() } else { format!("; modules {}", fs_modules.join(", ")) };
        let Some((dev, fs)) = disks.image.clone() else {
            let note = "no appliance image disk (squashfs/erofs holding /etc/flower-init/image.json): Flower cannot run";
            return Ok(((ImageFacts::builtin(), None, disks), Note::Warn(note.into())));
        };
        mount::mount_image(&dev, fs, Path::new(NEWROOT))?;
        let m = crate::image::load_file(&crate::image::manifest_path_at(Path::new(NEWROOT)))?;
        let driver = m.nvidia_driver.as_ref().map(|d| format!(", NVIDIA driver {}", d.version)).unwrap_or_default();
        let note = format!("{} ({}) on {NEWROOT}: Flower {}, {}{driver}{fs_modules}", dev.display(), fs.as_str(), m.facts.flower_version, m.facts.framework);
        Ok(((m.facts, m.nvidia_driver, disks), Note::Ok(note)))
    })?;
    let Some(cfg) = appliance::validate_step(boot, &ctx, &facts)? else {
        return Ok(None);
    };
    gpu_step(boot, &cfg, &index, nvidia.as_ref())?;
    if cfg.wireguard.is_some() {
        // The overlay comes up after the root switch, when the initramfs' modules are gone.
        let mut loader = kmod::Coldplug::new(&index, kmod::Finit);
        loader.load("wireguard");
        if let Some(why) = loader.failed.get("wireguard") {
            log::warn!("wireguard.ko: {why}");
        }
    }
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
        let state = Path::new(STATE_DIR);
        let mut notes = Vec::new();
        let warn = match &image.state {
            Some(dev) => {
                let grew = grow_state(dev, state)?;
                notes.push(format!("state {} on {}{grew}", dev.display(), state.display()));
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
    // Again before TLS and Flower: the kernel's clocksource watchdog may have dropped a
    // miscalibrated TSC only now, after the clock had already run ahead.
    clock_from_rtc();
    Ok(Some(cfg))
}

/// Step the system clock to the RTC when they differ by 2 s or more (crate::rtc: no NTP here,
/// and a clock off by seconds fails Flower's SuperNode authentication). No RTC: nothing to do.
fn clock_from_rtc() {
    match crate::rtc::sync_from(Path::new("/dev/rtc0")) {
        Ok(Some(step)) => log::warn!("clock: the system clock was {}s off the RTC: stepped to the RTC's time", -step),
        Ok(None) => {}
        Err(e) => log::debug!("clock: not compared with the RTC: {e}"),
    }
}

/// Mount the state partition read-write at `state`, grown first to the end of a disk that was
/// resized (`onevm disk-resize`): the GPT entry and the kernel's partition before the mount,
/// the ext4 online after it. A failed growth is a warning: the state mounts at its old size.
/// Returns the note's suffix (empty when nothing grew).
fn grow_state(dev: &Path, state: &Path) -> crate::error::Result<String> {
    let mib = |b: u64| b >> 20;
    let mut note = String::new();
    match grow::grow_partition(Path::new("/sys"), Path::new("/dev"), dev) {
        Ok(Some((old, new))) => note = format!("; partition grown from {} to {} MiB", mib(old), mib(new)),
        Ok(None) => {}
        Err(e) => log::warn!("{e}: the state keeps its size"),
    }
    mount::mount_ext4(dev, state, false)?;
    match grow::grow_ext4(dev, state) {
        Ok(Some((old, new))) => note += &format!("; ext4 grown from {} to {} MiB", mib(old), mib(new)),
        Ok(None) => {}
        Err(e) => log::warn!("{e}: the state keeps its size"),
    }
    Ok(note)
}

/// initramfs' modules are still there). Never fails the boot: no GPU is a warning.
fn gpu_step(boot: &mut Boot, cfg: &Config, index: &kmod::Index, nvidia: Option<&NvidiaDriver>) -> std::result::Result<(), Failed> {
    if cfg.role() != Role::SuperNode || !cfg.gpu.enabled {
        return Ok(());
    }
    let gpus = boot.step("gpu", |_| {
        let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
        let newroot = Path::new(NEWROOT);
        // The image's driver is used only when its modules were built for this kernel.
        let driver = nvidia.filter(|d| {
            let fits = d.kernel == release && d.module_at(newroot, &release, "nvidia").is_file();
            if !fits {
                log::warn!(
                    "GPU: the image's NVIDIA driver {} is built for kernel {}, this is {release}: it cannot be loaded; \
                     NVIDIA GPUs go to vfio-pci and the container gets no CUDA",
                    d.version, d.kernel
                );
            }
            fits
        });
        let req = gpu_request(cfg, driver.map(|d| d.dir_at(newroot)), newroot);
        let mut loader = kmod::Coldplug::new(index, kmod::Finit);
        let mut g = gpu::setup(&req, &mut |name| {
            // nvidia and nvidia-uvm come from the image (built for this kernel by DKMS), the
            // rest (vfio-pci) from the kernel's own tree.
            if let Some(d) = driver {
                let file = d.module_at(newroot, &release, name);
                if file.is_file() {
                    // What it needs first (drm before nvidia), from the same directory.
                    for m in d.before(name).iter().map(String::as_str).chain([name]) {
                        if !Path::new("/sys/module").join(kmod::normalize(m)).exists() {
                            kmod::Loader::load(&kmod::Finit, m, &d.module_at(newroot, &release, m))?;
                        }
                    }
                    return Ok(());
                }
            }
            loader.load(name);
            match loader.failed.get(&kmod::normalize(name)) {
                Some(why) => Err(Error::msg(format!("load module {name}"), why.clone())),
                None => Ok(()),
            }
        });
        // The driver's libraries are bound into the container after the root switch: at
        // their path in the image, which is then `/`.
        for m in &mut g.mounts {
            if let Ok(rel) = m.source.strip_prefix(newroot) {
                m.source = Path::new("/").join(rel);
            }
        }
        let note = g.summary();
        Ok((g.clone(), if g.available { Note::Ok(note) } else { Note::Warn(note) }))
    })?;
    boot.report.gpu = Some((&gpus).into());
    boot.show();
    boot.gpus = Some(gpus);
    Ok(())
}

fn gpu_request(cfg: &Config, nvidia_driver: Option<std::path::PathBuf>, container_root: &Path) -> gpu::Request {
    gpu::Request {
        enabled: cfg.gpu.enabled,
        devices: match &cfg.gpu.devices {
            CudaDevices::All => gpu::Selection::All,
            CudaDevices::Indices(v) => gpu::Selection::Indices(v.clone()),
        },
        memory_fraction: cfg.gpu.memory_fraction,
        // The GPU image's driver directory (as mounted now); None: GPUs go to vfio-pci.
        nvidia_driver,
        // The image, mounted at NEWROOT now: the container's root after the switch.
        container_root: Some(container_root.to_path_buf()),
    }
}
