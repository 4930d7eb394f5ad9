//! Test fixtures: a fake `/sys` + `/proc` + `/dev` in a tempdir laid out like the kernel's
//! (device directories under `devices/pci0000:00`, `bus/pci/devices/*` and `driver` /
//! `iommu_group` as relative symlinks), and [`FakeKernel`], which records every operation and
//! reacts to sysfs writes and module loads the way the kernel does, minimally: `unbind` removes
//! the `driver` link, `drivers_probe` binds to `driver_override` (or by id for `nvidia`), the
//! NVIDIA module fills `/proc/driver/nvidia/gpus/*/information` and `/proc/devices`.

use super::apply::{HostNode, Ops};
use super::Roots;
use crate::error::{Error, Result};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A PCI function to put in the fake tree.
#[derive(Debug, Clone)]
pub struct Dev {
    bdf: String,
    class: u32,
    vendor: u16,
    device: u16,
    subsys: Option<(u16, u16)>,
    driver: Option<String>,
    override_: Option<String>,
    group: Option<u32>,
    numa: i32,
}

impl Dev {
    /// Any function.
    pub fn new(bdf: &str, class: u32, vendor: u16, device: u16) -> Self {
        Dev { bdf: bdf.into(), class, vendor, device, subsys: None, driver: None, override_: None, group: None, numa: -1 }
    }
    /// An NVIDIA A100 PCIe 80GB (3D controller, 10de:20b5, subsystem 10de:1533).
    pub fn nvidia_gpu(bdf: &str) -> Self {
        Dev { subsys: Some((0x10de, 0x1533)), ..Dev::new(bdf, 0x030200, 0x10de, 0x20b5) }
    }
    /// The HDMI/DP audio function of an NVIDIA card (10de:1aef).
    pub fn hdmi_audio(bdf: &str) -> Self {
        Dev::new(bdf, 0x040300, 0x10de, 0x1aef)
    }
    pub fn driver(mut self, d: &str) -> Self {
        self.driver = Some(d.into());
        self
    }
    pub fn overridden(mut self, d: &str) -> Self {
        self.override_ = Some(d.into());
        self
    }
    pub fn group(mut self, g: u32) -> Self {
        self.group = Some(g);
        self
    }
    pub fn numa(mut self, n: i32) -> Self {
        self.numa = n;
        self
    }
}

/// The fake tree: `<tmp>/sys`, `<tmp>/proc`, `<tmp>/dev`.
pub struct Fake {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub sys: PathBuf,
    pub proc: PathBuf,
    pub dev: PathBuf,
}

impl Fake {
    /// An empty machine: a PCI bus without devices, a `/proc/devices` with the usual entries.
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let (sys, proc, dev) = (root.join("sys"), root.join("proc"), root.join("dev"));
        for d in ["bus/pci/devices", "bus/pci/drivers", "devices/pci0000:00", "kernel/iommu_groups", "module"] {
            fs::create_dir_all(sys.join(d)).unwrap();
        }
        fs::create_dir_all(&proc).unwrap();
        fs::create_dir_all(&dev).unwrap();
        fs::write(
            proc.join("devices"),
            "Character devices:\n  1 mem\n  4 /dev/vc/0\n  5 /dev/tty\n 10 misc\n136 pts\n\nBlock devices:\n  7 loop\n  8 sd\n",
        )
        .unwrap();
        Fake { _tmp: tmp, root, sys, proc, dev }
    }

    /// The roots to hand to `setup_at`.
    pub fn roots(&self) -> Roots {
        Roots { sys: self.sys.clone(), proc: self.proc.clone(), dev: self.dev.clone() }
    }

    /// `s` with the tempdir prefix removed, so paths read as on a real machine (`/sys/…`).
    pub fn rel(&self, s: &str) -> String {
        s.replace(&self.root.display().to_string(), "")
    }

    /// Add a PCI function, with its driver and IOMMU group links.
    pub fn add(&self, d: Dev) {
        let dir = self.sys.join("devices/pci0000:00").join(&d.bdf);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("class"), format!("{:#08x}\n", d.class)).unwrap();
        fs::write(dir.join("vendor"), format!("{:#06x}\n", d.vendor)).unwrap();
        fs::write(dir.join("device"), format!("{:#06x}\n", d.device)).unwrap();
        if let Some((v, s)) = d.subsys {
            fs::write(dir.join("subsystem_vendor"), format!("{v:#06x}\n")).unwrap();
            fs::write(dir.join("subsystem_device"), format!("{s:#06x}\n")).unwrap();
        }
        fs::write(dir.join("numa_node"), format!("{}\n", d.numa)).unwrap();
        fs::write(dir.join("driver_override"), format!("{}\n", d.override_.as_deref().unwrap_or("(null)"))).unwrap();
        symlink(format!("../../../devices/pci0000:00/{}", d.bdf), self.sys.join("bus/pci/devices").join(&d.bdf)).unwrap();
        if let Some(g) = d.group {
            let gdir = self.sys.join("kernel/iommu_groups").join(g.to_string()).join("devices");
            fs::create_dir_all(&gdir).unwrap();
            symlink(format!("../../../../devices/pci0000:00/{}", d.bdf), gdir.join(&d.bdf)).unwrap();
            symlink(format!("../../../kernel/iommu_groups/{g}"), dir.join("iommu_group")).unwrap();
            fs::create_dir_all(self.sys.join("class/iommu/dmar0")).unwrap();
        }
        if let Some(drv) = &d.driver {
            self.bind(&d.bdf, drv);
        }
    }

    /// Mark a module as loaded (`<sys>/module/<name>`), and register its PCI driver; vfio-pci
    /// also brings the vfio misc device (`/dev/vfio/vfio`, 10:196, drivers/vfio/container.c).
    pub fn module(&self, name: &str) {
        fs::create_dir_all(self.sys.join("module").join(name)).unwrap();
        let driver = name.replace('_', "-");
        if driver == "vfio-pci" || driver == "nvidia" {
            fs::create_dir_all(self.sys.join("bus/pci/drivers").join(&driver)).unwrap();
        }
        if driver == "vfio-pci" {
            let d = self.sys.join("class/misc/vfio");
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("dev"), "10:196\n").unwrap();
        }
    }

    /// Point `bdf`'s `driver` link at `driver` (registering the driver directory). Binding to
    /// vfio-pci creates the group's char device (drivers/vfio/group.c: class "vfio", device
    /// named after the group number); its minor here is the group number.
    fn bind(&self, bdf: &str, driver: &str) {
        fs::create_dir_all(self.sys.join("bus/pci/drivers").join(driver)).unwrap();
        symlink(format!("../../../bus/pci/drivers/{driver}"), self.dev_dir(bdf).join("driver")).unwrap();
        if driver == "vfio-pci"
            && let Ok(link) = fs::read_link(self.dev_dir(bdf).join("iommu_group"))
        {
            let group = link.file_name().unwrap().to_string_lossy().into_owned();
            let d = self.sys.join("class/vfio").join(&group);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("dev"), format!("243:{group}\n")).unwrap();
        }
    }

    fn dev_dir(&self, bdf: &str) -> PathBuf {
        self.sys.join("devices/pci0000:00").join(bdf)
    }

    fn read(&self, bdf: &str, attr: &str) -> String {
        fs::read_to_string(self.dev_dir(bdf).join(attr)).unwrap_or_default().trim().to_string()
    }

    /// Add "MAJOR name" to the "Character devices:" section of `/proc/devices`.
    fn add_chardev(&self, major: u32, name: &str) {
        let p = self.proc.join("devices");
        let s = fs::read_to_string(&p).unwrap();
        let s = s.replacen("\n\nBlock devices:", &format!("\n{major:3} {name}\n\nBlock devices:"), 1);
        fs::write(p, s).unwrap();
    }
}

/// A kernel stand-in that records operations and reacts like the real one.
pub struct FakeKernel<'a> {
    f: &'a Fake,
    /// Every operation, in order, with the tempdir prefix removed.
    pub log: Vec<String>,
    /// BDFs that `drivers_probe` and module loads leave unbound (a driver that refuses the device).
    pub refuse: Vec<String>,
    /// A module whose load fails.
    pub fail_load: Option<String>,
    /// A sysfs file (path relative to the sysfs root) whose writes fail with EACCES.
    pub fail_write: Option<String>,
    /// Lines for `/proc/driver/nvidia/params` (besides the defaults).
    pub nvidia_params: String,
    next_minor: u32,
}

impl<'a> FakeKernel<'a> {
    pub fn new(f: &'a Fake) -> Self {
        FakeKernel { f, log: Vec::new(), refuse: Vec::new(), fail_load: None, fail_write: None, nvidia_params: String::new(), next_minor: 0 }
    }

    /// The driver that would take `bdf` by id match, when registered (only `nvidia` matches by id
    /// here: vfio-pci has no id table unless given `ids=`).
    fn id_match(&self, bdf: &str) -> Option<&'static str> {
        let nvidia_display = self.f.read(bdf, "vendor") == "0x10de" && self.f.read(bdf, "class").starts_with("0x03");
        (nvidia_display && self.f.sys.join("bus/pci/drivers/nvidia").is_dir()).then_some("nvidia")
    }

    /// Bind `bdf` to `driver` as the driver's probe would, with the side effects userspace sees.
    fn probe(&mut self, bdf: &str, driver: &str) {
        if self.refuse.iter().any(|b| b == bdf) || self.f.dev_dir(bdf).join("driver").exists() {
            return;
        }
        self.f.bind(bdf, driver);
        if driver == "nvidia" {
            let dir = self.f.proc.join("driver/nvidia/gpus").join(bdf);
            fs::create_dir_all(&dir).unwrap();
            let info = format!(
                "Model: \t\t NVIDIA A100 80GB PCIe\nIRQ:   \t\t 35\nGPU UUID: \t GPU-00000000-0000-0000-0000-00000000000{m}\n\
                 Video BIOS: \t 92.00.25.00.08\nBus Type: \t PCIe\nDMA Size: \t 47 bits\nDMA Mask: \t 0x7fffffffffff\n\
                 Bus Location: \t {bdf}\nDevice Minor: \t {m}\nGPU Excluded:\t No\n",
                m = self.next_minor
            );
            fs::write(dir.join("information"), info).unwrap();
            self.next_minor += 1;
        }
    }

    /// The kernel's reaction to a sysfs write.
    fn sysfs_write(&mut self, path: &Path, value: &str) -> std::io::Result<()> {
        let enoent = || std::io::Error::from_raw_os_error(libc::ENOENT);
        let rel = path.strip_prefix(&self.f.sys).map_err(|_| enoent())?.to_string_lossy().into_owned();
        if self.fail_write.as_deref() == Some(rel.as_str()) {
            return Err(std::io::Error::from_raw_os_error(libc::EACCES));
        }
        let parts: Vec<&str> = rel.split('/').collect();
        match parts.as_slice() {
            ["bus", "pci", "devices", bdf, "driver_override"] => {
                let v = if value.is_empty() { "(null)" } else { value };
                fs::write(self.f.dev_dir(bdf).join("driver_override"), format!("{v}\n"))
            }
            ["bus", "pci", "devices", bdf, "driver", "unbind"] => {
                // The path resolves through the `driver` link: no driver, no file.
                if !self.f.dev_dir(bdf).join("driver").exists() {
                    return Err(enoent());
                }
                if value != *bdf {
                    return Err(std::io::Error::from_raw_os_error(libc::ENODEV));
                }
                fs::remove_file(self.f.dev_dir(bdf).join("driver"))
            }
            ["bus", "pci", "drivers_probe"] => {
                if !self.f.dev_dir(value).is_dir() {
                    return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
                }
                let over = self.f.read(value, "driver_override");
                let candidate = if over != "(null)" && !over.is_empty() { Some(over) } else { self.id_match(value).map(String::from) };
                if let Some(d) = candidate
                    && self.f.sys.join("bus/pci/drivers").join(&d).is_dir()
                {
                    self.probe(value, &d);
                }
                Ok(())
            }
            _ => Err(enoent()),
        }
    }
}

impl Ops for FakeKernel<'_> {
    fn load_module(&mut self, name: &str) -> Result<()> {
        self.log.push(format!("load {name}"));
        if self.fail_load.as_deref() == Some(name) {
            return Err(Error::msg(format!("load module {name}"), "Exec format error"));
        }
        self.f.module(&name.replace('-', "_"));
        match name {
            "nvidia" => {
                self.f.add_chardev(195, "nvidia");
                let params = format!("ResmanDebugLevel: 4294967295\nDeviceFileUID: 0\nDeviceFileGID: 0\nDeviceFileMode: 438\n{}", self.nvidia_params);
                fs::create_dir_all(self.f.proc.join("driver/nvidia")).unwrap();
                fs::write(self.f.proc.join("driver/nvidia/params"), params).unwrap();
                // The driver's id table claims every unbound NVIDIA display function whose
                // driver_override does not point elsewhere.
                let mut bdfs: Vec<String> =
                    fs::read_dir(self.f.sys.join("bus/pci/devices")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                bdfs.sort();
                for b in bdfs {
                    let over = self.f.read(&b, "driver_override");
                    if self.id_match(&b).is_some() && (over == "(null)" || over == "nvidia") {
                        self.probe(&b, "nvidia");
                    }
                }
            }
            "nvidia-uvm" => self.f.add_chardev(508, "nvidia-uvm"),
            _ => {}
        }
        Ok(())
    }

    fn write(&mut self, path: &Path, value: &str) -> Result<()> {
        self.log.push(self.f.rel(&format!("write {} {value}", path.display())));
        self.sysfs_write(path, value).map_err(|e| Error {
            what: format!("write {value:?} to {}", path.display()),
            cause: e.into(),
        })
    }

    fn mknod(&mut self, n: &HostNode) -> Result<()> {
        self.log.push(self.f.rel(&format!("mknod {} c {}:{} {:o} {}:{}", n.path.display(), n.major, n.minor, n.mode, n.uid, n.gid)));
        Ok(())
    }
}
