//! The plan: from a [`Scan`] and the [`Request`] (FL_GPU_ENABLED, FL_CUDA_VISIBLE_DEVICES, what
//! the image ships), which GPUs to use, which driver, and every module load, sysfs write,
//! check and device node, in order. Pure: `flower-init gpu scan` prints it, `setup` runs it.
//!
//! Rebinding follows the driver_override sequence of kernel commit 782a985d7af2 (3.16), as
//! kata-containers does it (`src/runtime-rs/crates/hypervisor/src/device/driver/vfio.rs`
//! `bind_device_to_vfio`): `driver_override` ← driver, `driver/unbind` ← BDF when bound,
//! `drivers_probe` ← BDF, then read the `driver` link back. Never `new_id`: it binds *every*
//! unbound device with that id and races the native driver (the reason driver_override exists).

use super::scan::{CLASS_BRIDGE, PciGpu, Scan};
use super::{Request, Selection};
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// The kernel driver the chosen GPUs are bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    /// The image ships the NVIDIA driver: CUDA in the container.
    Nvidia,
    /// No GPU driver in the image: the GPU goes to vfio-pci, for nested passthrough.
    VfioPci,
}

impl Driver {
    /// The PCI driver's (and module's) name.
    pub fn name(&self) -> &'static str {
        match self {
            Driver::Nvidia => "nvidia",
            Driver::VfioPci => "vfio-pci",
        }
    }
}

/// What the plan decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// FL_GPU_ENABLED=NO: nothing to do, no warning.
    Disabled,
    /// FL_GPU_ENABLED=YES but nothing usable: a WARNING, CPU fallback.
    Fallback { reason: String },
    /// Bind the chosen GPUs to `driver`.
    Bind { driver: Driver },
}

/// A GPU the plan uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chosen {
    /// Its index among the candidate GPUs in PCI bus order (the FL_CUDA_VISIBLE_DEVICES index).
    pub index: u32,
    pub bdf: String,
    pub model: String,
    pub iommu_group: Option<u32>,
}

/// A device node to create under /dev; numbers are read when the driver is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "node", rename_all = "kebab-case")]
pub enum NodeKind {
    /// `/dev/nvidiactl`, 195:255.
    NvidiaCtl,
    /// `/dev/nvidiaN`, 195:N, N = "Device Minor" of the GPU.
    NvidiaGpu { bdf: String },
    /// `/dev/nvidia-uvm`, major of `nvidia-uvm` in /proc/devices, minor 0.
    NvidiaUvm,
    /// `/dev/nvidia-uvm-tools`, same major, minor 1.
    NvidiaUvmTools,
    /// `/dev/vfio/vfio` (the legacy container API), numbers from `<sys>/class/misc/vfio/dev`.
    VfioContainer,
    /// `/dev/vfio/<group>`, numbers from `<sys>/class/vfio/<group>/dev`.
    VfioGroup { group: u32 },
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Action {
    /// Load a kernel module by name (through the kmod module; "already loaded" is success).
    LoadModule { name: String },
    /// Write `value` to a sysfs attribute.
    Write { path: PathBuf, value: String },
    /// Read `bdf`'s `driver` link; it must name `driver`.
    Verify { bdf: String, driver: String },
    /// Create a device node (and hand it to the container).
    Node(NodeKind),
}

/// An [`Action`] and the chosen GPUs that depend on it: if it fails, those GPUs are dropped
/// (with a WARNING) and their later steps skipped. An empty list means every GPU needs it:
/// its failure is a CPU fallback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub action: Action,
    #[serde(rename = "for", skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    #[serde(flatten)]
    pub decision: Decision,
    pub gpus: Vec<Chosen>,
    pub steps: Vec<Step>,
    /// Problems that do not stop the plan (a GPU left out, an index out of range).
    pub warnings: Vec<String>,
}

/// Decide. `scan` is what the machine has, `req` what was asked.
pub fn plan(scan: &Scan, req: &Request) -> Plan {
    let mut p = Plan { decision: Decision::Disabled, gpus: Vec::new(), steps: Vec::new(), warnings: Vec::new() };
    if !req.enabled {
        return p;
    }
    let driver = if req.nvidia_driver.is_some() { Driver::Nvidia } else { Driver::VfioPci };
    let (candidates, unusable): (Vec<&PciGpu>, Vec<&PciGpu>) =
        scan.gpus.iter().partition(|g| driver == Driver::VfioPci || g.vendor == super::ids::NVIDIA);
    for g in &unusable {
        p.warnings.push(format!("{} ({}) is not used: the image's NVIDIA driver cannot drive it", g.bdf, g.model));
    }
    if candidates.is_empty() {
        let reason = if scan.gpus.is_empty() {
            format!("no GPU found (no NVIDIA, AMD or Intel display controller in {})", scan.sysfs.join("bus/pci/devices").display())
        } else {
            "no NVIDIA GPU for the image's NVIDIA driver".to_string()
        };
        return fallback(p, reason);
    }
    let chosen = match select(&candidates, &req.devices, &mut p.warnings) {
        Ok(c) => c,
        Err(reason) => return fallback(p, reason),
    };
    let chosen: Vec<&PciGpu> = match driver {
        Driver::Nvidia => chosen,
        Driver::VfioPci => chosen.into_iter().filter(|g| vfio_ok(g, &mut p.warnings)).collect(),
    };
    if chosen.is_empty() {
        return fallback(p, "no selected GPU can be given to vfio-pci (see the warnings)".into());
    }
    p.gpus = chosen
        .iter()
        .map(|g| Chosen {
            index: candidates.iter().position(|c| c.bdf == g.bdf).unwrap_or(0) as u32,
            bdf: g.bdf.clone(),
            model: g.model.clone(),
            iommu_group: g.iommu_group,
        })
        .collect();
    p.steps = match driver {
        Driver::Nvidia => nvidia_steps(scan, &chosen),
        Driver::VfioPci => vfio_steps(scan, &chosen),
    };
    p.decision = Decision::Bind { driver };
    p
}

/// A plan that uses no GPU, for `reason`.
fn fallback(mut p: Plan, reason: String) -> Plan {
    p.decision = Decision::Fallback { reason };
    p
}

/// Apply FL_CUDA_VISIBLE_DEVICES to the candidates (PCI bus order, the order nvidia-smi shows);
/// indices out of range are a warning, selecting nothing is a fallback.
fn select<'a>(candidates: &[&'a PciGpu], sel: &Selection, warnings: &mut Vec<String>) -> Result<Vec<&'a PciGpu>, String> {
    let Selection::Indices(wanted) = sel else { return Ok(candidates.to_vec()) };
    let mut idx: Vec<u32> = wanted.clone();
    idx.sort_unstable();
    idx.dedup();
    let n = candidates.len();
    let (ok, bad): (Vec<u32>, Vec<u32>) = idx.into_iter().partition(|&i| (i as usize) < n);
    let list = wanted.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    if !bad.is_empty() {
        let bad = bad.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let msg = format!("FL_CUDA_VISIBLE_DEVICES={list}: no GPU {bad} (this VM has {n}: indices 0-{})", n - 1);
        if ok.is_empty() {
            return Err(msg);
        }
        warnings.push(msg);
    }
    Ok(ok.iter().map(|&i| candidates[i as usize]).collect())
}

/// Whether `g`'s IOMMU group can move to vfio-pci as a whole: it needs a group, and every other
/// member must be a function of the same card (same domain:bus:device) or a bridge (which stays).
fn vfio_ok(g: &PciGpu, warnings: &mut Vec<String>) -> bool {
    if g.iommu_group.is_none() {
        warnings.push(format!(
            "{} ({}) has no IOMMU group: vfio-pci needs an IOMMU (a virtual IOMMU in this VM, e.g. QEMU intel-iommu)",
            g.bdf, g.model
        ));
        return false;
    }
    let slot = |bdf: &str| bdf.rsplit_once('.').map(|(s, _)| s.to_string()).unwrap_or_default();
    for m in &g.group_members {
        if slot(&m.bdf) != slot(&g.bdf) && (m.class >> 16) as u8 != CLASS_BRIDGE {
            warnings.push(format!(
                "{} ({}) is not used: its IOMMU group {} also holds {} ({}, driver {}), which is not part of the GPU; \
                 moving it to vfio-pci would take it from the VM",
                g.bdf,
                g.model,
                g.iommu_group.unwrap_or(0),
                m.bdf,
                super::scan::class_word(m.class),
                m.driver.as_deref().unwrap_or("none")
            ));
            return false;
        }
    }
    true
}

/// NVIDIA: load `nvidia`, rebind GPUs another driver holds, load `nvidia-uvm`, verify, then the
/// nodes nvidia-modprobe would create (`NVIDIA/nvidia-modprobe: modprobe-utils/nvidia-modprobe-utils.c`).
fn nvidia_steps(scan: &Scan, chosen: &[&PciGpu]) -> Vec<Step> {
    let all = |action| Step { action, gpus: Vec::new() };
    let one = |action, bdf: &str| Step { action, gpus: vec![bdf.to_string()] };
    let mut s = Vec::new();
    if !scan.is_loaded("nvidia") {
        s.push(all(Action::LoadModule { name: "nvidia".into() }));
    }
    for g in chosen {
        // An unbound GPU with no foreign override is claimed by the module's id table on load.
        let claimed_on_load = g.driver.is_none()
            && !scan.is_loaded("nvidia")
            && g.driver_override.as_deref().is_none_or(|o| o == "nvidia");
        if g.driver.as_deref() != Some("nvidia") && !claimed_on_load {
            for a in rebind(scan, &g.bdf, g.driver.is_some(), g.driver_override.as_deref(), "nvidia") {
                s.push(one(a, &g.bdf));
            }
        }
    }
    if !scan.is_loaded("nvidia-uvm") {
        s.push(all(Action::LoadModule { name: "nvidia-uvm".into() }));
    }
    for g in chosen {
        s.push(one(Action::Verify { bdf: g.bdf.clone(), driver: "nvidia".into() }, &g.bdf));
    }
    s.push(all(Action::Node(NodeKind::NvidiaCtl)));
    for g in chosen {
        s.push(one(Action::Node(NodeKind::NvidiaGpu { bdf: g.bdf.clone() }), &g.bdf));
    }
    s.push(all(Action::Node(NodeKind::NvidiaUvm)));
    s.push(all(Action::Node(NodeKind::NvidiaUvmTools)));
    s
}

/// vfio-pci: load it, move every non-bridge function of each chosen GPU's IOMMU group (kata
/// passes the whole group and skips bridges), verify them all, then the vfio nodes.
fn vfio_steps(scan: &Scan, chosen: &[&PciGpu]) -> Vec<Step> {
    let mut s = Vec::new();
    if !scan.is_loaded("vfio-pci") {
        s.push(Step { action: Action::LoadModule { name: "vfio-pci".into() }, gpus: Vec::new() });
    }
    // Groups in the order of their first chosen GPU, with the chosen GPUs each one carries.
    struct Group {
        n: u32,
        owners: Vec<String>,
        /// (bdf, driver, driver_override) of every non-bridge function, BDF order.
        members: Vec<(String, Option<String>, Option<String>)>,
    }
    let mut groups: Vec<Group> = Vec::new();
    for g in chosen {
        let Some(n) = g.iommu_group else { continue };
        if let Some(e) = groups.iter_mut().find(|e| e.n == n) {
            e.owners.push(g.bdf.clone());
            continue;
        }
        let mut members = vec![(g.bdf.clone(), g.driver.clone(), g.driver_override.clone())];
        for m in g.group_members.iter().filter(|m| (m.class >> 16) as u8 != CLASS_BRIDGE) {
            members.push((m.bdf.clone(), m.driver.clone(), m.driver_override.clone()));
        }
        members.sort();
        groups.push(Group { n, owners: vec![g.bdf.clone()], members });
    }
    for g in &groups {
        for (bdf, driver, over) in &g.members {
            if driver.as_deref() != Some("vfio-pci") {
                for a in rebind(scan, bdf, driver.is_some(), over.as_deref(), "vfio-pci") {
                    s.push(Step { action: a, gpus: g.owners.clone() });
                }
            }
        }
    }
    for g in &groups {
        for (bdf, _, _) in &g.members {
            s.push(Step { action: Action::Verify { bdf: bdf.clone(), driver: "vfio-pci".into() }, gpus: g.owners.clone() });
        }
    }
    s.push(Step { action: Action::Node(NodeKind::VfioContainer), gpus: Vec::new() });
    for g in &groups {
        s.push(Step { action: Action::Node(NodeKind::VfioGroup { group: g.n }), gpus: g.owners.clone() });
    }
    s
}

/// The driver_override sequence for one function: override (unless already set), unbind (if
/// bound), probe.
fn rebind(scan: &Scan, bdf: &str, bound: bool, over: Option<&str>, driver: &str) -> Vec<Action> {
    let dev = scan.sysfs.join("bus/pci/devices").join(bdf);
    let mut v = Vec::new();
    if over != Some(driver) {
        v.push(Action::Write { path: dev.join("driver_override"), value: driver.into() });
    }
    if bound {
        v.push(Action::Write { path: dev.join("driver/unbind"), value: bdf.into() });
    }
    v.push(Action::Write { path: scan.sysfs.join("bus/pci/drivers_probe"), value: bdf.into() });
    v
}

impl fmt::Display for Action {
    /// One line of `gpu scan`'s plan.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::LoadModule { name } => write!(f, "load module {name}"),
            Action::Write { path, value } => write!(f, "write {value} > {}", path.display()),
            Action::Verify { bdf, driver } => write!(f, "check {bdf} is bound to {driver} (driver link)"),
            Action::Node(n) => write!(f, "mknod {n}"),
        }
    }
}

impl fmt::Display for NodeKind {
    /// The node and where its numbers come from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeKind::NvidiaCtl => write!(f, "/dev/nvidiactl c 195:255"),
            NodeKind::NvidiaGpu { bdf } => {
                write!(f, "/dev/nvidiaN c 195:N (N: Device Minor in /proc/driver/nvidia/gpus/{bdf}/information)")
            }
            NodeKind::NvidiaUvm => write!(f, "/dev/nvidia-uvm c M:0 (M: nvidia-uvm in /proc/devices)"),
            NodeKind::NvidiaUvmTools => write!(f, "/dev/nvidia-uvm-tools c M:1"),
            NodeKind::VfioContainer => write!(f, "/dev/vfio/vfio (numbers from /sys/class/misc/vfio/dev)"),
            NodeKind::VfioGroup { group } => write!(f, "/dev/vfio/{group} (numbers from /sys/class/vfio/{group}/dev)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{Dev, Fake};
    use super::super::scan::scan_at;
    use super::*;

    fn req(nvidia: bool, devices: Selection) -> Request {
        Request { enabled: true, devices, memory_fraction: 1.0, nvidia_driver: nvidia.then(|| PathBuf::from("/opt/nvidia-driver")), container_root: None }
    }

    /// The plan as lines, paths as on a real machine, each with the GPUs it is for.
    fn lines(f: &Fake, p: &Plan) -> Vec<String> {
        p.steps
            .iter()
            .map(|s| {
                let l = f.rel(&s.action.to_string());
                if s.gpus.is_empty() { l } else { format!("{l} [{}]", s.gpus.join(" ")) }
            })
            .collect()
    }

    /// The first case of the issue: an NVIDIA GPU held by nouveau plus its audio function.
    fn nvidia_with_audio() -> Fake {
        let f = Fake::new();
        f.add(Dev::nvidia_gpu("0000:01:00.0").driver("nouveau").group(12).numa(0));
        f.add(Dev::hdmi_audio("0000:01:00.1").driver("snd_hda_intel").group(12).numa(0));
        f
    }

    #[test]
    fn nvidia_gpu_taken_from_nouveau() {
        let f = nvidia_with_audio();
        let p = plan(&scan_at(&f.sys).unwrap(), &req(true, Selection::All));
        assert_eq!(p.decision, Decision::Bind { driver: Driver::Nvidia });
        assert_eq!(
            p.gpus,
            vec![Chosen { index: 0, bdf: "0000:01:00.0".into(), model: "NVIDIA A100 PCIe 80GB".into(), iommu_group: Some(12) }]
        );
        assert_eq!(
            lines(&f, &p),
            vec![
                "load module nvidia",
                "write nvidia > /sys/bus/pci/devices/0000:01:00.0/driver_override [0000:01:00.0]",
                "write 0000:01:00.0 > /sys/bus/pci/devices/0000:01:00.0/driver/unbind [0000:01:00.0]",
                "write 0000:01:00.0 > /sys/bus/pci/drivers_probe [0000:01:00.0]",
                "load module nvidia-uvm",
                "check 0000:01:00.0 is bound to nvidia (driver link) [0000:01:00.0]",
                "mknod /dev/nvidiactl c 195:255",
                "mknod /dev/nvidiaN c 195:N (N: Device Minor in /proc/driver/nvidia/gpus/0000:01:00.0/information) [0000:01:00.0]",
                "mknod /dev/nvidia-uvm c M:0 (M: nvidia-uvm in /proc/devices)",
                "mknod /dev/nvidia-uvm-tools c M:1",
            ]
        );
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn nvidia_gpu_with_audio_to_vfio_moves_the_whole_group() {
        let f = nvidia_with_audio();
        let p = plan(&scan_at(&f.sys).unwrap(), &req(false, Selection::All));
        assert_eq!(p.decision, Decision::Bind { driver: Driver::VfioPci });
        let g = "[0000:01:00.0]";
        assert_eq!(
            lines(&f, &p),
            vec![
                "load module vfio-pci".to_string(),
                format!("write vfio-pci > /sys/bus/pci/devices/0000:01:00.0/driver_override {g}"),
                format!("write 0000:01:00.0 > /sys/bus/pci/devices/0000:01:00.0/driver/unbind {g}"),
                format!("write 0000:01:00.0 > /sys/bus/pci/drivers_probe {g}"),
                format!("write vfio-pci > /sys/bus/pci/devices/0000:01:00.1/driver_override {g}"),
                format!("write 0000:01:00.1 > /sys/bus/pci/devices/0000:01:00.1/driver/unbind {g}"),
                format!("write 0000:01:00.1 > /sys/bus/pci/drivers_probe {g}"),
                format!("check 0000:01:00.0 is bound to vfio-pci (driver link) {g}"),
                format!("check 0000:01:00.1 is bound to vfio-pci (driver link) {g}"),
                "mknod /dev/vfio/vfio (numbers from /sys/class/misc/vfio/dev)".to_string(),
                format!("mknod /dev/vfio/12 (numbers from /sys/class/vfio/12/dev) {g}"),
            ]
        );
    }

    #[test]
    fn gpu_already_on_vfio_needs_no_write() {
        let f = Fake::new();
        f.add(Dev::nvidia_gpu("0000:06:00.0").driver("vfio-pci").overridden("vfio-pci").group(3));
        f.module("vfio_pci");
        let p = plan(&scan_at(&f.sys).unwrap(), &req(false, Selection::All));
        assert_eq!(
            lines(&f, &p),
            vec![
                "check 0000:06:00.0 is bound to vfio-pci (driver link) [0000:06:00.0]",
                "mknod /dev/vfio/vfio (numbers from /sys/class/misc/vfio/dev)",
                "mknod /dev/vfio/3 (numbers from /sys/class/vfio/3/dev) [0000:06:00.0]",
            ]
        );
        // With the NVIDIA driver in the image the same GPU is taken back from vfio-pci.
        let p = plan(&scan_at(&f.sys).unwrap(), &req(true, Selection::All));
        assert_eq!(
            lines(&f, &p)[..4],
            [
                "load module nvidia",
                "write nvidia > /sys/bus/pci/devices/0000:06:00.0/driver_override [0000:06:00.0]",
                "write 0000:06:00.0 > /sys/bus/pci/devices/0000:06:00.0/driver/unbind [0000:06:00.0]",
                "write 0000:06:00.0 > /sys/bus/pci/drivers_probe [0000:06:00.0]",
            ]
        );
    }

    #[test]
    fn amd_gpu_goes_to_vfio_and_is_ignored_by_the_nvidia_driver() {
        let f = Fake::new();
        f.add(Dev::new("0000:03:00.0", 0x030000, 0x1002, 0x74a1).driver("amdgpu").group(7));
        let s = scan_at(&f.sys).unwrap();
        let p = plan(&s, &req(false, Selection::All));
        assert_eq!(
            lines(&f, &p),
            vec![
                "load module vfio-pci",
                "write vfio-pci > /sys/bus/pci/devices/0000:03:00.0/driver_override [0000:03:00.0]",
                "write 0000:03:00.0 > /sys/bus/pci/devices/0000:03:00.0/driver/unbind [0000:03:00.0]",
                "write 0000:03:00.0 > /sys/bus/pci/drivers_probe [0000:03:00.0]",
                "check 0000:03:00.0 is bound to vfio-pci (driver link) [0000:03:00.0]",
                "mknod /dev/vfio/vfio (numbers from /sys/class/misc/vfio/dev)",
                "mknod /dev/vfio/7 (numbers from /sys/class/vfio/7/dev) [0000:03:00.0]",
            ]
        );
        let p = plan(&s, &req(true, Selection::All));
        assert_eq!(p.decision, Decision::Fallback { reason: "no NVIDIA GPU for the image's NVIDIA driver".into() });
        assert_eq!(p.warnings, vec!["0000:03:00.0 (AMD Instinct MI300X) is not used: the image's NVIDIA driver cannot drive it"]);
        assert!(p.steps.is_empty());
    }

    #[test]
    fn no_gpu_is_a_fallback_and_disabled_is_silent() {
        let f = Fake::new();
        f.add(Dev::new("0000:00:02.0", 0x030000, 0x1234, 0x1111).driver("bochs-drm"));
        let s = scan_at(&f.sys).unwrap();
        let p = plan(&s, &req(true, Selection::All));
        let dir = f.rel(&s.sysfs.join("bus/pci/devices").display().to_string());
        assert_eq!(
            p.decision,
            Decision::Fallback { reason: format!("no GPU found (no NVIDIA, AMD or Intel display controller in {}{dir})", f.root.display()) }
        );
        assert!(p.steps.is_empty() && p.gpus.is_empty());
        let p = plan(&s, &Request { enabled: false, ..req(true, Selection::All) });
        assert_eq!(p.decision, Decision::Disabled);
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn selection_by_index_in_pci_order() {
        let f = Fake::new();
        f.add(Dev::nvidia_gpu("0000:41:00.0"));
        f.add(Dev::nvidia_gpu("0000:01:00.0"));
        f.add(Dev::nvidia_gpu("0000:21:00.0"));
        let s = scan_at(&f.sys).unwrap();
        let p = plan(&s, &req(true, Selection::Indices(vec![2, 0, 2])));
        let chosen: Vec<(u32, &str)> = p.gpus.iter().map(|c| (c.index, c.bdf.as_str())).collect();
        assert_eq!(chosen, vec![(0, "0000:01:00.0"), (2, "0000:41:00.0")]);
        // Unbound GPUs are claimed by the module's id table on load: no writes for them.
        assert!(!p.steps.iter().any(|s| matches!(s.action, Action::Write { .. })));
        let p = plan(&s, &req(true, Selection::Indices(vec![1, 5])));
        assert_eq!(p.warnings, vec!["FL_CUDA_VISIBLE_DEVICES=1,5: no GPU 5 (this VM has 3: indices 0-2)"]);
        assert_eq!(p.gpus.len(), 1);
        let p = plan(&s, &req(true, Selection::Indices(vec![7])));
        assert_eq!(p.decision, Decision::Fallback { reason: "FL_CUDA_VISIBLE_DEVICES=7: no GPU 7 (this VM has 3: indices 0-2)".into() });
    }

    #[test]
    fn vfio_refuses_no_group_and_groups_shared_with_other_devices() {
        let f = Fake::new();
        f.add(Dev::nvidia_gpu("0000:01:00.0"));
        f.add(Dev::nvidia_gpu("0000:02:00.0").group(4));
        f.add(Dev::new("0000:00:1c.0", 0x060400, 0x8086, 0x2948).driver("pcieport").group(4)); // bridge: stays
        f.add(Dev::nvidia_gpu("0000:05:00.0").group(5));
        f.add(Dev::new("0000:05:01.0", 0x020000, 0x1af4, 0x1041).driver("virtio-pci").group(5)); // the VM's NIC
        let p = plan(&scan_at(&f.sys).unwrap(), &req(false, Selection::All));
        assert_eq!(p.gpus.iter().map(|c| c.bdf.as_str()).collect::<Vec<_>>(), vec!["0000:02:00.0"]);
        assert_eq!(p.gpus[0].index, 1);
        assert_eq!(
            p.warnings,
            vec![
                "0000:01:00.0 (NVIDIA A100 PCIe 80GB) has no IOMMU group: vfio-pci needs an IOMMU (a virtual IOMMU in this VM, e.g. QEMU intel-iommu)",
                "0000:05:00.0 (NVIDIA A100 PCIe 80GB) is not used: its IOMMU group 5 also holds 0000:05:01.0 (network, driver virtio-pci), \
                 which is not part of the GPU; moving it to vfio-pci would take it from the VM",
            ]
        );
        assert!(!lines(&f, &p).iter().any(|l| l.contains("0000:00:1c.0")), "the bridge is never touched");
    }

    #[test]
    fn plan_serializes_for_gpu_scan_json() {
        let f = nvidia_with_audio();
        let p = plan(&scan_at(&f.sys).unwrap(), &req(true, Selection::All));
        let j = serde_json::to_value(&p).unwrap();
        assert_eq!(j["decision"], "bind");
        assert_eq!(j["driver"], "nvidia");
        assert_eq!(j["steps"][0], serde_json::json!({"op": "load-module", "name": "nvidia"}));
        assert_eq!(j["steps"][6], serde_json::json!({"op": "node", "node": "nvidia-ctl"}));
        assert_eq!(j["steps"][7]["for"][0], "0000:01:00.0");
    }
}
