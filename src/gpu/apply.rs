//! Running a [`Plan`]: module loads, sysfs writes, driver checks and device nodes through the
//! [`Ops`] seam (the real kernel, or a recording fake in tests), then the device nodes the
//! container gets.
//!
//! Device numbers come from where `NVIDIA/nvidia-modprobe: modprobe-utils/nvidia-modprobe-utils.c`
//! takes them: 195:N for `/dev/nvidiaN` with N the "Device Minor" of
//! `/proc/driver/nvidia/gpus/<BDF>/information`, 195:255 for `/dev/nvidiactl`, the `nvidia-uvm`
//! line of the "Character devices:" section of `/proc/devices` (minors 0 and 1) for the UVM
//! nodes; mode 0666 root:root unless `/proc/driver/nvidia/params` says `DeviceFileMode`/`UID`/
//! `GID` (nvidia-modprobe applies the params to `nvidiaN`/`nvidiactl`, not to the UVM nodes).
//! vfio numbers come from the `dev` attribute ("MAJ:MIN") of the class devices
//! (`/sys/class/vfio/<group>`, `/sys/class/misc/vfio`).

use super::plan::{Action, NodeKind, Plan, Step};
use super::scan;
use super::Roots;
use crate::container::DeviceNode;
use crate::error::{Ctx, Error, Result};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// NVIDIA's fixed character major (`NV_MAJOR_DEVICE_NUMBER` in nvidia-modprobe-utils.c).
pub const NVIDIA_MAJOR: u32 = 195;
/// Minor of `/dev/nvidiactl` (`NV_CTL_DEVICE_NUM`).
pub const NVIDIACTL_MINOR: u32 = 255;
/// Default mode of NVIDIA nodes (`NV_DEVICE_FILE_MODE`: rw for user, group, other).
pub const NVIDIA_MODE: u32 = 0o666;

/// A device node to create on the VM's /dev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNode {
    pub path: PathBuf,
    pub major: u32,
    pub minor: u32,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What running a plan needs from the system: the seam tests replace.
pub trait Ops {
    /// Load a kernel module by name ("nvidia-uvm"); already loaded is success.
    fn load_module(&mut self, name: &str) -> Result<()>;
    /// Write `value` to a sysfs attribute (one write, no newline, like `echo -n`).
    fn write(&mut self, path: &Path, value: &str) -> Result<()>;
    /// Make `node` exist as a character device with its numbers, mode and owner.
    fn mknod(&mut self, node: &HostNode) -> Result<()>;
}

/// The real kernel: sysfs writes with write(2), nodes with mknod(2); module loading is the
/// caller's (the kmod module's `finit_module`), passed in as a closure.
pub struct System<'a> {
    pub load: &'a mut dyn FnMut(&str) -> Result<()>,
}

impl Ops for System<'_> {
    fn load_module(&mut self, name: &str) -> Result<()> {
        (self.load)(name)
    }

    fn write(&mut self, path: &Path, value: &str) -> Result<()> {
        // sysfs attributes take the whole value in one write(2) at offset 0; never O_CREAT
        // (a missing attribute is an error, not a file to make) and never O_TRUNC.
        let what = || format!("write {value:?} to {}", path.display());
        let mut f = fs::OpenOptions::new().write(true).open(path).with_ctx(what)?;
        f.write_all(value.as_bytes()).with_ctx(what)
    }

    fn mknod(&mut self, n: &HostNode) -> Result<()> {
        mknod_real(n)
    }
}

/// Create or fix a character device node, as nvidia-modprobe's `mknod_helper` does: keep a node
/// with the right numbers, replace anything else, then set mode and owner.
pub fn mknod_real(n: &HostNode) -> Result<()> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod, stat};
    let p = &n.path;
    let what = |verb: &str| format!("{verb} {} (c {}:{})", p.display(), n.major, n.minor);
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir).with_ctx(|| format!("create {}", dir.display()))?;
    }
    let dev = makedev(n.major.into(), n.minor.into());
    match stat(p) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFCHR && st.st_rdev == dev => {}
        Ok(_) => {
            fs::remove_file(p).with_ctx(|| what("remove wrong"))?;
            mknod(p.as_path(), SFlag::S_IFCHR, Mode::from_bits_truncate(n.mode), dev).with_ctx(|| what("mknod"))?;
        }
        Err(nix::errno::Errno::ENOENT) => {
            mknod(p.as_path(), SFlag::S_IFCHR, Mode::from_bits_truncate(n.mode), dev).with_ctx(|| what("mknod"))?;
        }
        Err(e) => return Err(e).with_ctx(|| what("stat")),
    }
    // mknod(2) applies the umask: set the mode explicitly.
    nix::sys::stat::fchmodat(nix::fcntl::AT_FDCWD, p.as_path(), Mode::from_bits_truncate(n.mode), nix::sys::stat::FchmodatFlags::FollowSymlink)
        .with_ctx(|| what("chmod"))?;
    nix::unistd::chown(p.as_path(), Some(n.uid.into()), Some(n.gid.into())).with_ctx(|| what("chown"))
}

/// What running a plan produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// Chosen GPUs that came through, BDF order.
    pub gpus: Vec<String>,
    /// Model names of those GPUs (the driver's name when it gives one).
    pub models: Vec<String>,
    /// Nodes for the container, for the GPUs that came through.
    pub devices: Vec<DeviceNode>,
    /// Why GPUs were dropped.
    pub warnings: Vec<String>,
    /// Set when a step every GPU needs failed, or every GPU was dropped.
    pub failure: Option<String>,
}

/// Run `plan` against `roots` through `ops`. Steps run in order; a failed step drops the GPUs
/// it is for (their later steps are skipped), or ends the run if every GPU needs it.
pub fn run(plan: &Plan, roots: &Roots, ops: &mut dyn Ops) -> Applied {
    let mut out = Applied::default();
    let mut dropped: Vec<String> = Vec::new();
    let mut nodes: Vec<(Vec<String>, DeviceNode)> = Vec::new();
    for step in &plan.steps {
        if !step.gpus.is_empty() && step.gpus.iter().all(|g| dropped.contains(g)) {
            continue;
        }
        match run_step(step, roots, ops) {
            Ok(Some(node)) => nodes.push((step.gpus.clone(), node)),
            Ok(None) => {}
            Err(e) if step.gpus.is_empty() => {
                out.failure = Some(e.to_string());
                return out;
            }
            Err(e) => {
                let gpus: Vec<&String> = step.gpus.iter().filter(|g| !dropped.contains(g)).collect();
                out.warnings.push(format!("{} not used: {e}", gpus.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(", ")));
                dropped.extend(gpus.into_iter().cloned());
                if plan.gpus.iter().all(|c| dropped.contains(&c.bdf)) {
                    break; // nothing left to make nodes for
                }
            }
        }
    }
    for c in &plan.gpus {
        if !dropped.contains(&c.bdf) {
            out.gpus.push(c.bdf.clone());
            out.models.push(nvidia_info(roots, &c.bdf, "Model").unwrap_or_else(|| c.model.clone()));
        }
    }
    if out.gpus.is_empty() {
        out.failure = Some(if plan.gpus.len() == 1 { "the GPU could not be bound" } else { "no GPU could be bound" }.into());
        return out;
    }
    out.devices = nodes.into_iter().filter(|(g, _)| g.is_empty() || g.iter().any(|b| out.gpus.contains(b))).map(|(_, n)| n).collect();
    out
}

/// One step; a node step returns what the container gets.
fn run_step(step: &Step, roots: &Roots, ops: &mut dyn Ops) -> Result<Option<DeviceNode>> {
    match &step.action {
        Action::LoadModule { name } => ops.load_module(name).map(|_| None),
        Action::Write { path, value } => ops.write(path, value).map(|_| None),
        Action::Verify { bdf, driver } => {
            let link = roots.sys.join("bus/pci/devices").join(bdf).join("driver");
            match scan::driver_at(&roots.sys, bdf) {
                Some(d) if d == *driver => Ok(None),
                Some(d) => Err(Error::msg(format!("check {}", link.display()), format!("{bdf} is bound to {d}, not {driver}"))),
                None => Err(Error::msg(format!("check {}", link.display()), format!("{bdf} has no driver, expected {driver}"))),
            }
        }
        Action::Node(kind) => {
            let Some((host, container_mode)) = node(kind, roots)? else { return Ok(None) };
            ops.mknod(&host)?;
            let path = Path::new("/dev").join(host.path.strip_prefix(&roots.dev).unwrap_or(&host.path));
            Ok(Some(DeviceNode { path: path.display().to_string(), kind: 'c', major: host.major, minor: host.minor, file_mode: container_mode }))
        }
    }
}

/// The host node for `kind` and the mode the container's node gets; `None` for the optional
/// legacy `/dev/vfio/vfio` when this kernel has none (iommufd-only VFIO).
fn node(kind: &NodeKind, roots: &Roots) -> Result<Option<(HostNode, u32)>> {
    let params = || nvidia_params(&roots.proc);
    let nv = |name: &str, major, minor, (mode, uid, gid): (u32, u32, u32)| {
        Some((HostNode { path: roots.dev.join(name), major, minor, mode, uid, gid }, mode))
    };
    Ok(match kind {
        NodeKind::NvidiaCtl => nv("nvidiactl", NVIDIA_MAJOR, NVIDIACTL_MINOR, params()),
        NodeKind::NvidiaGpu { bdf } => {
            let info = roots.proc.join("driver/nvidia/gpus").join(bdf).join("information");
            let minor = nvidia_info(roots, bdf, "Device Minor")
                .and_then(|m| m.parse::<u32>().ok())
                .ok_or_else(|| Error::msg(format!("read {}", info.display()), "no \"Device Minor\""))?;
            nv(&format!("nvidia{minor}"), NVIDIA_MAJOR, minor, params())
        }
        NodeKind::NvidiaUvm | NodeKind::NvidiaUvmTools => {
            let devices = roots.proc.join("devices");
            let text = fs::read_to_string(&devices).with_ctx(|| format!("read {}", devices.display()))?;
            let major = chardev_major(&text, "nvidia-uvm")
                .ok_or_else(|| Error::msg(format!("read {}", devices.display()), "no nvidia-uvm character device"))?;
            let (name, minor) = if *kind == NodeKind::NvidiaUvm { ("nvidia-uvm", 0) } else { ("nvidia-uvm-tools", 1) };
            nv(name, major, minor, (NVIDIA_MODE, 0, 0))
        }
        NodeKind::VfioContainer => {
            let f = roots.sys.join("class/misc/vfio/dev");
            if !f.exists() {
                return Ok(None);
            }
            let (major, minor) = dev_numbers(&f)?;
            // Host node as the vfio misc device declares it (0666); the container's too.
            Some((HostNode { path: roots.dev.join("vfio/vfio"), major, minor, mode: 0o666, uid: 0, gid: 0 }, 0o666))
        }
        NodeKind::VfioGroup { group } => {
            let (major, minor) = dev_numbers(&roots.sys.join("class/vfio").join(group.to_string()).join("dev"))?;
            // devtmpfs makes it 0600 root; the container's workload is not root, so its copy is 0666.
            Some((HostNode { path: roots.dev.join("vfio").join(group.to_string()), major, minor, mode: 0o600, uid: 0, gid: 0 }, 0o666))
        }
    })
}

/// A field ("Device Minor", "Model") of `/proc/driver/nvidia/gpus/<bdf>/information`, whose
/// lines read `Device Minor: \t 0`.
fn nvidia_info(roots: &Roots, bdf: &str, field: &str) -> Option<String> {
    let text = fs::read_to_string(roots.proc.join("driver/nvidia/gpus").join(bdf).join("information")).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == field).then(|| v.trim().to_string())
    })
}

/// (mode, uid, gid) for `nvidiaN`/`nvidiactl`: 0666 root:root unless `/proc/driver/nvidia/params`
/// sets `DeviceFileMode` / `DeviceFileUID` / `DeviceFileGID` (decimal, "Name: value" lines).
pub fn nvidia_params(proc: &Path) -> (u32, u32, u32) {
    let (mut mode, mut uid, mut gid) = (NVIDIA_MODE, 0, 0);
    let text = fs::read_to_string(proc.join("driver/nvidia/params")).unwrap_or_default();
    for l in text.lines() {
        let Some((k, v)) = l.split_once(':') else { continue };
        let Ok(v) = v.trim().parse::<u32>() else { continue };
        match k.trim() {
            "DeviceFileMode" => mode = v & 0o777,
            "DeviceFileUID" => uid = v,
            "DeviceFileGID" => gid = v,
            _ => {}
        }
    }
    (mode, uid, gid)
}

/// The major of character device `name` in `/proc/devices` text: only the "Character devices:"
/// section, whole-name match (as nvidia-modprobe's `nvidia_get_chardev_major`).
pub fn chardev_major(text: &str, name: &str) -> Option<u32> {
    let mut lines = text.lines().skip_while(|l| l.trim() != "Character devices:").skip(1);
    lines.by_ref().take_while(|l| !l.trim().is_empty()).find_map(|l| {
        let mut it = l.split_whitespace();
        let major = it.next()?.parse().ok()?;
        (it.next()? == name).then_some(major)
    })
}

/// "MAJ:MIN" from a sysfs `dev` attribute.
fn dev_numbers(f: &Path) -> Result<(u32, u32)> {
    let what = || format!("read {}", f.display());
    let s = fs::read_to_string(f).with_ctx(what)?;
    let (a, b) = s.trim().split_once(':').ok_or_else(|| Error::msg(what(), format!("not MAJ:MIN: {:?}", s.trim())))?;
    match (a.parse(), b.parse()) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(Error::msg(what(), format!("not MAJ:MIN: {:?}", s.trim()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_devices_major_is_read_from_the_character_section_only() {
        let text = "Character devices:\n  1 mem\n195 nvidia-frontend\n234 nvidia-uvm\n506 nvidia-caps\n\nBlock devices:\n235 nvidia-uvm\n";
        assert_eq!(chardev_major(text, "nvidia-uvm"), Some(234));
        assert_eq!(chardev_major(text, "nvidia"), None, "no partial match on nvidia-frontend");
        assert_eq!(chardev_major("Block devices:\n  7 loop\n", "loop"), None);
    }

    #[test]
    fn params_override_mode_and_owner() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(nvidia_params(d.path()), (0o666, 0, 0));
        fs::create_dir_all(d.path().join("driver/nvidia")).unwrap();
        fs::write(d.path().join("driver/nvidia/params"), "ResmanDebugLevel: 4294967295\nDeviceFileUID: 0\nDeviceFileGID: 44\nDeviceFileMode: 432\nEnableMSI: 1\n").unwrap();
        assert_eq!(nvidia_params(d.path()), (0o660, 0, 44));
    }

    #[test]
    fn dev_numbers_parse_and_fail_with_the_file_name() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("dev");
        fs::write(&f, "243:12\n").unwrap();
        assert_eq!(dev_numbers(&f).unwrap(), (243, 12));
        fs::write(&f, "garbage\n").unwrap();
        let e = dev_numbers(&f).unwrap_err().to_string();
        assert!(e.starts_with(&format!("read {}: not MAJ:MIN", f.display())), "{e}");
    }

    #[test]
    fn real_sysfs_write_errors_name_file_and_value() {
        let d = tempfile::tempdir().unwrap();
        let mut load = |_: &str| -> Result<()> { Ok(()) };
        let mut sys = System { load: &mut load };
        let p = d.path().join("bus/pci/drivers_probe");
        let e = sys.write(&p, "0000:01:00.0").unwrap_err().to_string();
        assert!(e.starts_with(&format!("write \"0000:01:00.0\" to {}: ", p.display())), "{e}");
        // An existing attribute is written as one value, without a newline.
        fs::write(d.path().join("driver_override"), "").unwrap();
        sys.write(&d.path().join("driver_override"), "vfio-pci").unwrap();
        assert_eq!(fs::read_to_string(d.path().join("driver_override")).unwrap(), "vfio-pci");
    }

    /// The real mknod(2) path, as nvidia-modprobe's mknod_helper: create, keep, replace. Needs
    /// root (CI runs the tests as root); fails loudly otherwise rather than passing.
    #[test]
    fn real_mknod_creates_keeps_and_replaces_nodes() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        assert!(nix::unistd::geteuid().is_root(), "this test creates device nodes: run cargo test as root");
        let d = tempfile::tempdir().unwrap();
        let n = HostNode { path: d.path().join("vfio/7"), major: 243, minor: 7, mode: 0o600, uid: 0, gid: 44 };
        mknod_real(&n).unwrap();
        let check = |major: u64, minor: u64, mode: u32| {
            let m = fs::metadata(&n.path).unwrap();
            assert!(m.file_type().is_char_device());
            assert_eq!((nix::sys::stat::major(m.rdev()), nix::sys::stat::minor(m.rdev())), (major, minor));
            assert_eq!((m.permissions().mode() & 0o777, m.gid()), (mode, 44));
        };
        check(243, 7, 0o600);
        mknod_real(&HostNode { mode: 0o660, ..n.clone() }).unwrap();
        check(243, 7, 0o660);
        fs::remove_file(&n.path).unwrap();
        fs::write(&n.path, "not a node").unwrap();
        mknod_real(&HostNode { minor: 8, ..n.clone() }).unwrap();
        check(243, 8, 0o600);
    }
}
