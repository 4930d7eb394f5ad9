//! Read-only discovery of GPUs under `<sysfs>/bus/pci/devices`: ids, driver, IOMMU group and
//! its members, NUMA node. Nothing here writes.
//!
//! sysfs layout (Documentation/ABI/testing/sysfs-bus-pci): each device directory has `class`
//! ("0x030200"), `vendor`/`device`/`subsystem_vendor`/`subsystem_device` ("0x10de"),
//! `numa_node` ("-1" without NUMA), `driver_override` ("(null)" when unset) and the symlinks
//! `driver` → `…/bus/pci/drivers/<name>` and `iommu_group` → `…/kernel/iommu_groups/<n>`, whose
//! `devices/` lists every function in the group. NVRC reads the same files the same way
//! (`NVIDIA/nvrc: src/modprobe.rs` `count_nvidia_gpus_from`).

use super::ids;
use crate::error::{Ctx, Result};
use serde::{Serialize, Serializer};
use std::fs;
use std::path::{Path, PathBuf};

/// PCI base class 0x03: display controller (VGA 0x0300, XGA 0x0301, 3D 0x0302, other 0x0380).
/// NVIDIA data-centre parts are 3D controllers, consumer cards VGA; both count
/// (`NVIDIA/nvidia-modprobe: modprobe-utils/nvidia-modprobe-utils.c` matches the base class only).
pub const CLASS_DISPLAY: u8 = 0x03;
/// PCI base class 0x06: bridges. A bridge in an IOMMU group is never passed through
/// (kata-containers `src/runtime-rs/crates/hypervisor/src/device/driver/vfio.rs`
/// `filter_bridge_device`: "One CANNOT pass-through a PCI bridge or Host bridge").
pub const CLASS_BRIDGE: u8 = 0x06;

/// One display controller and what surrounds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciGpu {
    /// Domain:bus:device.function, the directory name (`0000:01:00.0`).
    pub bdf: String,
    #[serde(serialize_with = "hex24")]
    pub class: u32,
    #[serde(serialize_with = "hex16")]
    pub vendor: u16,
    #[serde(serialize_with = "hex16")]
    pub device: u16,
    #[serde(serialize_with = "hex16_opt")]
    pub subsystem_vendor: Option<u16>,
    #[serde(serialize_with = "hex16_opt")]
    pub subsystem_device: Option<u16>,
    /// "NVIDIA A100 PCIe 80GB" (see [`ids::model_name`]).
    pub model: String,
    /// The bound driver (basename of the `driver` link), `None` when unbound.
    pub driver: Option<String>,
    /// `driver_override`, `None` when "(null)" or absent.
    pub driver_override: Option<String>,
    /// `None` when the device has no IOMMU group (no IOMMU, or none given to the VM).
    pub iommu_group: Option<u32>,
    /// The other functions in the same IOMMU group, in BDF order.
    pub group_members: Vec<PciFunction>,
    /// `None` when the kernel reports -1 (no NUMA affinity).
    pub numa_node: Option<u32>,
}

/// Another device in a GPU's IOMMU group (typically the card's HDMI audio function).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciFunction {
    pub bdf: String,
    #[serde(serialize_with = "hex24")]
    pub class: u32,
    #[serde(serialize_with = "hex16")]
    pub vendor: u16,
    #[serde(serialize_with = "hex16")]
    pub device: u16,
    pub driver: Option<String>,
    pub driver_override: Option<String>,
}

/// Everything the plan needs to know about the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scan {
    /// The sysfs root that was read (`/sys` on a real system).
    pub sysfs: PathBuf,
    /// Display controllers of GPU makers (NVIDIA, AMD, Intel), in BDF order.
    pub gpus: Vec<PciGpu>,
    /// Display controllers of other vendors (an emulated VGA, virtio-gpu): never bound.
    pub ignored: Vec<PciGpu>,
    /// Kernel modules of interest already loaded (`<sysfs>/module/<name>` exists), by the
    /// names used to load them: `nvidia`, `nvidia-uvm`, `vfio-pci`.
    pub loaded: Vec<String>,
}

/// Modules whose presence the plan checks before asking for a load.
pub const MODULES: &[&str] = &["nvidia", "nvidia-uvm", "vfio-pci"];

impl Scan {
    /// Whether module `name` ("nvidia-uvm") was loaded when scanned.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.loaded.iter().any(|m| m == name)
    }
}

/// Scan the running system's `/sys`.
pub fn scan() -> Result<Scan> {
    scan_at(Path::new("/sys"))
}

/// Scan a sysfs tree rooted at `sys` (a fake tree in tests). A missing `bus/pci/devices` is
/// a machine without PCI (no GPU), not an error; a missing root or an unreadable list is.
pub fn scan_at(sys: &Path) -> Result<Scan> {
    fs::metadata(sys).with_ctx(|| format!("read {}", sys.display()))?;
    let dir = sys.join("bus/pci/devices");
    let mut bdfs = Vec::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries {
                let e = e.with_ctx(|| format!("read {}", dir.display()))?;
                bdfs.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_ctx(|| format!("read {}", dir.display())),
    }
    bdfs.sort();
    let mut gpus = Vec::new();
    let mut ignored = Vec::new();
    for bdf in bdfs {
        let Some(f) = function_at(sys, &bdf) else { continue };
        if (f.class >> 16) as u8 != CLASS_DISPLAY {
            continue;
        }
        let gpu = gpu_at(sys, f);
        if ids::vendor_name(gpu.vendor).is_some() {
            gpus.push(gpu);
        } else {
            ignored.push(gpu);
        }
    }
    let loaded = MODULES
        .iter()
        .filter(|m| sys.join("module").join(m.replace('-', "_")).is_dir())
        .map(|m| m.to_string())
        .collect();
    Ok(Scan { sysfs: sys.to_path_buf(), gpus, ignored, loaded })
}

/// The identity and driver of `<sys>/bus/pci/devices/<bdf>`; `None` if its ids are unreadable
/// (a device being removed, or not a PCI function at all).
fn function_at(sys: &Path, bdf: &str) -> Option<PciFunction> {
    let d = sys.join("bus/pci/devices").join(bdf);
    Some(PciFunction {
        bdf: bdf.to_string(),
        class: read_hex(&d.join("class"))?,
        vendor: read_hex(&d.join("vendor"))? as u16,
        device: read_hex(&d.join("device"))? as u16,
        driver: driver_at(sys, bdf),
        driver_override: override_at(sys, bdf),
    })
}

/// Complete a display function with its subsystem, group and NUMA node.
fn gpu_at(sys: &Path, f: PciFunction) -> PciGpu {
    let d = sys.join("bus/pci/devices").join(&f.bdf);
    let iommu_group = link_name(&d.join("iommu_group")).and_then(|g| g.parse().ok());
    let group_members = match iommu_group {
        Some(g) => group_members_at(sys, g).into_iter().filter(|m| m.bdf != f.bdf).collect(),
        None => Vec::new(),
    };
    let numa_node = fs::read_to_string(d.join("numa_node")).ok().and_then(|s| s.trim().parse::<u32>().ok());
    PciGpu {
        model: ids::model_name(f.vendor, f.device),
        subsystem_vendor: read_hex(&d.join("subsystem_vendor")).map(|v| v as u16),
        subsystem_device: read_hex(&d.join("subsystem_device")).map(|v| v as u16),
        bdf: f.bdf,
        class: f.class,
        vendor: f.vendor,
        device: f.device,
        driver: f.driver,
        driver_override: f.driver_override,
        iommu_group,
        group_members,
        numa_node,
    }
}

/// Every function in IOMMU group `group` (`<sys>/kernel/iommu_groups/<g>/devices/*`), BDF order.
pub fn group_members_at(sys: &Path, group: u32) -> Vec<PciFunction> {
    let dir = sys.join("kernel/iommu_groups").join(group.to_string()).join("devices");
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|it| it.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names.iter().filter_map(|b| function_at(sys, b)).collect()
}

/// The driver bound to `bdf` now (basename of its `driver` link); what "verified by reading the
/// driver link back" reads.
pub fn driver_at(sys: &Path, bdf: &str) -> Option<String> {
    link_name(&sys.join("bus/pci/devices").join(bdf).join("driver"))
}

/// `driver_override` of `bdf`; the kernel shows an unset override as "(null)".
fn override_at(sys: &Path, bdf: &str) -> Option<String> {
    let s = fs::read_to_string(sys.join("bus/pci/devices").join(bdf).join("driver_override")).ok()?;
    let s = s.trim();
    (!s.is_empty() && s != "(null)").then(|| s.to_string())
}

/// The last component of a symlink's target.
fn link_name(p: &Path) -> Option<String> {
    fs::read_link(p).ok()?.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// A sysfs hex attribute ("0x10de\n").
fn read_hex(p: &Path) -> Option<u32> {
    let s = fs::read_to_string(p).ok()?;
    let s = s.trim();
    u32::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

/// Serialize a PCI class as "0x030200".
fn hex24<S: Serializer>(v: &u32, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#08x}"))
}

/// Serialize a PCI id as "0x10de".
fn hex16<S: Serializer>(v: &u16, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#06x}"))
}

/// Serialize an optional PCI id as "0x10de" or null.
fn hex16_opt<S: Serializer>(v: &Option<u16>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&format!("{v:#06x}")),
        None => s.serialize_none(),
    }
}

/// A short word for a PCI class, for the scan table ("3D", "audio", "bridge").
pub fn class_word(class: u32) -> &'static str {
    match class >> 8 {
        0x0300 => "VGA",
        0x0302 => "3D",
        0x0403 => "audio",
        0x0c03 => "USB",
        c if c >> 8 == 0x03 => "display",
        c if c >> 8 == 0x06 => "bridge",
        c if c >> 8 == 0x02 => "network",
        c if c >> 8 == 0x01 => "storage",
        c if c >> 8 == 0x0c => "serial bus",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{Dev, Fake};
    use super::*;

    #[test]
    fn nvidia_gpu_with_audio_function_in_one_group() {
        let f = Fake::new();
        f.add(Dev::nvidia_gpu("0000:01:00.0").driver("nouveau").group(12).numa(0));
        f.add(Dev::hdmi_audio("0000:01:00.1").driver("snd_hda_intel").group(12).numa(0));
        f.add(Dev::new("0000:00:1f.0", 0x060100, 0x8086, 0x2918)); // ISA bridge: not a GPU
        let s = scan_at(&f.sys).unwrap();
        assert!(s.ignored.is_empty());
        assert_eq!(s.loaded, Vec::<String>::new());
        assert_eq!(
            s.gpus,
            vec![PciGpu {
                bdf: "0000:01:00.0".into(),
                class: 0x030200,
                vendor: 0x10de,
                device: 0x20b5,
                subsystem_vendor: Some(0x10de),
                subsystem_device: Some(0x1533),
                model: "NVIDIA A100 PCIe 80GB".into(),
                driver: Some("nouveau".into()),
                driver_override: None,
                iommu_group: Some(12),
                group_members: vec![PciFunction {
                    bdf: "0000:01:00.1".into(),
                    class: 0x040300,
                    vendor: 0x10de,
                    device: 0x1aef,
                    driver: Some("snd_hda_intel".into()),
                    driver_override: None,
                }],
                numa_node: Some(0),
            }]
        );
    }

    #[test]
    fn gpu_on_vfio_amd_gpu_and_emulated_vga() {
        let f = Fake::new();
        f.add(Dev::new("0000:00:02.0", 0x030000, 0x1234, 0x1111).driver("bochs-drm"));
        f.add(Dev::nvidia_gpu("0000:06:00.0").driver("vfio-pci").overridden("vfio-pci").group(3));
        f.add(Dev::new("0000:03:00.0", 0x030000, 0x1002, 0x74a1).driver("amdgpu").group(7).numa(1));
        f.module("vfio_pci");
        let s = scan_at(&f.sys).unwrap();
        let gpus: Vec<_> = s
            .gpus
            .iter()
            .map(|g| (g.bdf.as_str(), g.model.as_str(), g.driver.as_deref(), g.driver_override.as_deref(), g.iommu_group, g.numa_node))
            .collect();
        assert_eq!(
            gpus,
            vec![
                ("0000:03:00.0", "AMD Instinct MI300X", Some("amdgpu"), None, Some(7), Some(1)),
                ("0000:06:00.0", "NVIDIA A100 PCIe 80GB", Some("vfio-pci"), Some("vfio-pci"), Some(3), None),
            ]
        );
        assert_eq!(s.ignored.len(), 1);
        assert_eq!(s.ignored[0].model, "device 1234:1111");
        assert_eq!(s.loaded, vec!["vfio-pci".to_string()]);
    }

    #[test]
    fn no_gpu_and_no_pci_bus_are_empty_scans() {
        let f = Fake::new();
        f.add(Dev::new("0000:00:03.0", 0x020000, 0x1af4, 0x1041).driver("virtio-pci"));
        let s = scan_at(&f.sys).unwrap();
        assert!(s.gpus.is_empty() && s.ignored.is_empty());
        let empty = tempfile::tempdir().unwrap();
        let s = scan_at(empty.path()).unwrap();
        assert!(s.gpus.is_empty());
        let missing = empty.path().join("typo");
        let e = scan_at(&missing).unwrap_err().to_string();
        assert_eq!(e, format!("read {}: No such file or directory (os error 2)", missing.display()));
    }

    #[test]
    fn json_shows_ids_in_hex() {
        let f = Fake::new();
        f.add(Dev::nvidia_gpu("0000:01:00.0"));
        let s = scan_at(&f.sys).unwrap();
        let j = serde_json::to_value(&s.gpus[0]).unwrap();
        assert_eq!(j["class"], "0x030200");
        assert_eq!(j["vendor"], "0x10de");
        assert_eq!(j["device"], "0x20b5");
        assert_eq!(j["iommu_group"], serde_json::Value::Null);
    }
}
