//! `flower-init gpu bundle`: the SuperNode's Flower container as an OCI bundle, with the NVIDIA
//! GPUs of the host it runs on, for a device check on a GPU machine (tests/gpu/device-check.sh,
//! docs/gpu.md "Device check"). Host-safe, never PID 1's: it loads no module, binds no driver,
//! creates no node and writes only the bundle.
//!
//! Nothing here decides what the container gets: the GPUs come from the boot's own GPU step run
//! through [`gpu::host::on_host`] (scan, plan, device numbers, driver library mounts,
//! environment), the spec from [`appliance::supernode_spec`] (the part of the boot's SuperNode
//! spec the image and the GPUs decide) and [`appliance::machine_limits`], the file from
//! [`container::write_bundle`] (the same seccomp profile, namespaces, mounts, device rules).
//! Only the command differs: CMD instead of Flower, still under tini. Left out, because no
//! GPU depends on them: the state and data directories, TLS files, resolv.conf and hosts.

use crate::appliance;
use crate::args::{Args, EXIT_USAGE};
use crate::container::{self, Spec};
use crate::error::{Ctx, Error, Result};
use crate::gpu::{self, Gpus, Request, Roots, Selection, host};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const USAGE: &str = "\
usage: flower-init gpu bundle --rootfs DIR --out DIR [--driver-dir DIR] [--devices all|0,1] [--id ID]
                              [--sysfs ROOT] [--procfs ROOT] [--devfs ROOT] -- CMD [ARGS...]
  Writes OUT/config.json, the OCI bundle of the SuperNode's Flower container for the image
  mounted or unpacked at --rootfs, with this host's NVIDIA GPUs handed over as the boot's GPU
  step hands them (the same scan, plan, device nodes, driver library mounts and environment;
  the same seccomp profile, mounts and limits), running CMD (under tini) instead of Flower.
  For a host whose NVIDIA driver is loaded: it loads no module, binds no driver, creates no
  device node; runc makes the container's nodes.
  --driver-dir  the NVIDIA userspace to mount, laid out as the image's /opt/nvidia-driver (lib/,
                bin/, driver.json); its release must be the host's kernel module's (default:
                the image's own driver directory)
  --devices     FL_CUDA_VISIBLE_DEVICES (default all)
  --id          the container id (default gpu-check)
  --sysfs, --procfs, --devfs   where /sys, /proc and /dev are (default: those)
  Exit 0: written; 1: no GPU to hand over, or another failure (the reason is printed); 2: usage.";

/// The container id when none is given.
const DEFAULT_ID: &str = "gpu-check";

/// The command line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub rootfs: PathBuf,
    pub out: PathBuf,
    pub driver_dir: Option<PathBuf>,
    pub devices: Selection,
    pub id: String,
    pub roots: Roots,
    /// CMD ARGS..., the container's command (under tini).
    pub command: Vec<String>,
}

/// What was written, for the report.
#[derive(Debug)]
pub struct Written {
    pub config: PathBuf,
    pub spec: Spec,
    pub gpus: Gpus,
    /// The driver release: the host's kernel module's, and the libraries'.
    pub version: String,
    pub driver_dir: PathBuf,
    /// What was found about the host's device nodes.
    pub notes: Vec<String>,
}

/// `flower-init gpu bundle …` (the dispatcher has taken `gpu bundle`).
pub fn cli(args: &mut Args) -> i32 {
    if args.flag("--help") || args.flag("-h") {
        println!("{USAGE}");
        return 0;
    }
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("flower-init gpu bundle: {e}\n{USAGE}");
            return EXIT_USAGE;
        }
    };
    match bundle(&opts) {
        Ok(w) => {
            print!("{}", report(&w));
            0
        }
        Err(e) => {
            eprintln!("flower-init gpu bundle: {e}");
            1
        }
    }
}

/// The options; the command is everything after `--`.
pub fn parse(args: &mut Args) -> std::result::Result<Options, String> {
    let command = args.command().filter(|c| !c.is_empty()).ok_or("no command: give it after --")?;
    let rootfs = args.opt("--rootfs")?.ok_or("--rootfs DIR is required")?;
    let out = args.opt("--out")?.ok_or("--out DIR is required")?;
    let driver_dir = args.opt("--driver-dir")?.map(PathBuf::from);
    let devices = gpu::parse_devices(args.opt("--devices")?.as_deref().unwrap_or("all"))?;
    let id = args.opt("--id")?.unwrap_or_else(|| DEFAULT_ID.into());
    let sys = PathBuf::from(args.opt("--sysfs")?.unwrap_or_else(|| "/sys".into()));
    let proc = PathBuf::from(args.opt("--procfs")?.unwrap_or_else(|| "/proc".into()));
    let dev = PathBuf::from(args.opt("--devfs")?.unwrap_or_else(|| "/dev".into()));
    args.finish()?;
    Ok(Options { rootfs: rootfs.into(), out: out.into(), driver_dir, devices, id, roots: Roots { sys, proc, dev }, command })
}

/// Hand this host's GPUs over as the boot would, and write the bundle.
pub fn bundle(o: &Options) -> Result<Written> {
    let rootfs = o.rootfs.canonicalize().with_ctx(|| format!("read the image root {}", o.rootfs.display()))?;
    let manifest = crate::image::load_at(&rootfs)?;
    let driver_dir = match (&o.driver_dir, &manifest.nvidia_driver) {
        (Some(d), _) => d.canonicalize().with_ctx(|| format!("read the driver directory {}", d.display()))?,
        (None, Some(n)) => n.dir_at(&rootfs),
        (None, None) => {
            return Err(Error::msg(
                "find the NVIDIA userspace",
                format!("the image at {} ships no NVIDIA driver (no nvidia_driver in its manifest) and no --driver-dir was given", rootfs.display()),
            ));
        }
    };
    let version = matching_release(&o.roots.proc, &driver_dir)?;
    let req = Request {
        enabled: true,
        devices: o.devices.clone(),
        memory_fraction: 1.0,
        nvidia_driver: Some(driver_dir.clone()),
        container_root: Some(rootfs.clone()),
    };
    let (gpus, notes) = host::on_host(&req, &o.roots);
    if !gpus.available {
        let reason = gpus.reason.clone().unwrap_or_default();
        let others: Vec<&String> = gpus.warnings.iter().filter(|w| **w != reason).collect();
        let also = if others.is_empty() { String::new() } else { format!(" ({})", others.iter().map(|w| w.as_str()).collect::<Vec<_>>().join("; ")) };
        return Err(Error::msg("hand the GPUs over", format!("{reason}{also}")));
    }
    let mut spec = appliance::supernode_spec(&o.id, &rootfs, o.command.clone(), manifest.facts.framework, Some(&gpus));
    spec.limits = appliance::machine_limits();
    let dir = container::write_bundle(&o.out, &spec)?;
    Ok(Written { config: dir.join("config.json"), spec, gpus, version, driver_dir, notes })
}

/// The release both the host's kernel module and the libraries in `dir` are: CUDA needs the
/// userspace of exactly the module's release.
fn matching_release(proc: &Path, dir: &Path) -> Result<String> {
    let module = host::module_version(proc).ok_or_else(|| {
        Error::msg("read the NVIDIA kernel module's release", format!("no NVIDIA driver is loaded on this host: no {}", proc.join("driver/nvidia/version").display()))
    })?;
    let libs = host::libraries_version(dir).ok_or_else(|| {
        Error::msg(format!("read the release of the NVIDIA libraries in {}", dir.display()), "no driver.json with a version, no lib/libcuda.so.X.Y.Z")
    })?;
    if libs != module {
        return Err(Error::msg(
            "match the NVIDIA libraries to the kernel module",
            format!("the libraries in {} are {libs}, this host's kernel module is {module}: CUDA needs the same release (--driver-dir DIR with the host's; device-check.sh assembles one)", dir.display()),
        ));
    }
    Ok(module)
}

/// What was handed over and written, one line each.
pub fn report(w: &Written) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "GPU: {} ({}) on nvidia, driver {} (kernel module and libraries of {})", w.gpus.model, w.gpus.gpus.join(", "), w.version, w.driver_dir.display());
    for d in &w.spec.devices {
        let _ = writeln!(o, "  device {} {} {}:{} mode {:04o}", d.path, d.kind, d.major, d.minor, d.file_mode);
    }
    for m in &w.spec.mounts {
        let _ = writeln!(o, "  mount {} at {}{}", m.source.display(), m.destination, if m.read_only { " (read-only)" } else { "" });
    }
    let env: Vec<String> = w.spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(o, "  env {}", env.join(" "));
    for n in &w.notes {
        let _ = writeln!(o, "  note: {n}");
    }
    for warning in &w.gpus.warnings {
        let _ = writeln!(o, "  WARNING: {warning}");
    }
    // A script given inline (`python3 -c …`) is shown by its size.
    let args: Vec<String> = w.spec.args.iter().map(|a| if a.len() > 100 || a.contains('\n') { format!("<{} bytes>", a.len()) } else { a.clone() }).collect();
    let _ = writeln!(o, "Wrote {}: {} -- {}", w.config.display(), container::CONTAINER_INIT, args.join(" "));
    o
}

#[cfg(test)]
mod tests;
