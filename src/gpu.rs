//! GPU detection and binding through sysfs, and the device nodes handed to the container. Issue #9.
//!
//! Without udev, nvidia-container-toolkit or a shell: [`scan`] reads `/sys/bus/pci/devices`,
//! [`plan`] decides (pure) which GPUs go to which driver and which writes that takes, [`apply`]
//! runs the plan through a small seam ([`Ops`]: module load, sysfs write, mknod) and returns the
//! container's device nodes. [`setup`] is what the boot calls; `flower-init gpu scan` prints
//! the scan and the plan and changes nothing; [`host::on_host`] runs the same steps on a host
//! whose NVIDIA driver is loaded, changing nothing (`flower-init gpu bundle`). See docs/gpu.md.
//!
//! Policy (seed decisions 06-01/06-02): FL_GPU_ENABLED is opt-in; no GPU or a failed binding is
//! a WARNING and a CPU fallback (FL_GPU_AVAILABLE=NO), never fatal.

pub mod apply;
mod cli;
#[cfg(test)]
pub(crate) mod fixture;
pub mod host;
pub mod ids;
pub mod plan;
pub mod scan;

pub use apply::{HostNode, Ops, System};
pub use cli::{cli, parse_devices};
pub use plan::{Decision, Driver, Plan};
pub use scan::{PciGpu, Scan};

use crate::container::{BindMount, DeviceNode, Spec};
use crate::error::Result;
use std::path::{Path, PathBuf};

/// Where the NVIDIA userspace libraries appear in the container: the directories NVIDIA's CUDA
/// images already put on the search paths (`LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64`).
pub const CONTAINER_NVIDIA_LIB: &str = "/usr/local/nvidia/lib64";
pub const CONTAINER_NVIDIA_BIN: &str = "/usr/local/nvidia/bin";

/// The filesystem roots the GPU code reads and writes (`/sys`, `/proc`, `/dev`; a tempdir in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub sys: PathBuf,
    pub proc: PathBuf,
    pub dev: PathBuf,
}

impl Roots {
    /// The running system's.
    pub fn system() -> Self {
        Roots { sys: "/sys".into(), proc: "/proc".into(), dev: "/dev".into() }
    }
}

/// FL_CUDA_VISIBLE_DEVICES: every GPU, or indices in PCI bus order (the order nvidia-smi shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Indices(Vec<u32>),
}

/// What the boot asks for: the validated configuration plus what the image ships.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// FL_GPU_ENABLED (false on a SuperLink).
    pub enabled: bool,
    /// FL_CUDA_VISIBLE_DEVICES.
    pub devices: Selection,
    /// FL_GPU_MEMORY_FRACTION, in (0, 1]; passed to the app, which applies it.
    pub memory_fraction: f64,
    /// The image's NVIDIA userspace directory (`lib/` with libcuda.so.1, libnvidia-ml.so.1 …,
    /// optional `bin/` with nvidia-smi), from the image manifest; its kernel modules must be in
    /// the image's module tree. `None`: the image has no GPU driver and GPUs go to vfio-pci.
    pub nvidia_driver: Option<PathBuf>,
    /// The root the container will run on (the image), when known: the driver's library mounts
    /// need their mountpoints there, since the root is read-only and runc cannot make them. An
    /// image without them (built before they were added) falls back to CPU instead of failing
    /// the whole container. `None`: not checked (`gpu scan`, tests of the plan).
    pub container_root: Option<PathBuf>,
}

/// The outcome: what to publish and what the container gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpus {
    /// FL_GPU_AVAILABLE: at least one GPU is bound and handed to the container.
    pub available: bool,
    pub driver: Option<Driver>,
    /// "NVIDIA A100 80GB PCIe", "2 x NVIDIA L4"; empty when unavailable.
    pub model: String,
    /// BDFs of the GPUs in use, PCI bus order.
    pub gpus: Vec<String>,
    /// Why no GPU is used (disabled, none found, binding failed).
    pub reason: Option<String>,
    /// Device nodes for `linux.devices` and the cgroup allow rules: only the chosen GPUs'.
    pub devices: Vec<DeviceNode>,
    /// Driver libraries, read-only (NVIDIA only).
    pub mounts: Vec<BindMount>,
    /// Environment for the container, in a fixed order.
    pub env: Vec<(String, String)>,
    /// Problems already logged as WARNINGs (the fallback reason included).
    pub warnings: Vec<String>,
}

impl Gpus {
    /// The FL_GPU_AVAILABLE value published to OneGate.
    pub fn available_word(&self) -> &'static str {
        if self.available { "YES" } else { "NO" }
    }

    /// Hand the GPUs to a container: their device nodes, the driver's library mounts and the
    /// GPU environment, after what `spec` already has. The one place both the boot's Flower
    /// container and `flower-init gpu bundle` take them from.
    pub fn add_to(&self, spec: &mut Spec) {
        spec.devices.extend(self.devices.iter().cloned());
        spec.mounts.extend(self.mounts.iter().cloned());
        spec.env.extend(self.env.iter().cloned());
    }

    /// One line for the boot timeline.
    pub fn summary(&self) -> String {
        match (&self.driver, &self.reason) {
            (Some(d), None) => format!("{} on {}", self.model, d.name()),
            (_, Some(r)) => r.clone(),
            (None, None) => String::new(),
        }
    }
}

/// Detect and bind on the running system; `load_module` loads a kernel module by name (the
/// kmod module). Never fails: problems become WARNINGs and a CPU fallback.
pub fn setup(req: &Request, load_module: &mut dyn FnMut(&str) -> Result<()>) -> Gpus {
    setup_at(req, &Roots::system(), &mut System { load: load_module })
}

/// [`setup`] against `roots` through `ops`.
pub fn setup_at(req: &Request, roots: &Roots, ops: &mut dyn Ops) -> Gpus {
    if !req.enabled {
        return unavailable(req, "FL_GPU_ENABLED=NO".into(), Vec::new(), false);
    }
    let scanned = match scan::scan_at(&roots.sys) {
        Ok(s) => s,
        Err(e) => return unavailable(req, e.to_string(), Vec::new(), true),
    };
    let p = plan::plan(&scanned, req);
    let mut warnings = p.warnings.clone();
    for w in &warnings {
        log::warn!("GPU: {w}");
    }
    let driver = match &p.decision {
        Decision::Disabled => return unavailable(req, "FL_GPU_ENABLED=NO".into(), warnings, false),
        Decision::Fallback { reason } => return unavailable(req, reason.clone(), warnings, true),
        Decision::Bind { driver } => *driver,
    };
    let mounts = match (&driver, &req.nvidia_driver) {
        (Driver::Nvidia, Some(dir)) => match nvidia_mounts(dir) {
            Ok(m) => m,
            Err(reason) => return unavailable(req, reason, warnings, true),
        },
        _ => Vec::new(),
    };
    if let Some(reason) = req.container_root.as_deref().and_then(|root| missing_mountpoint(root, &mounts)) {
        return unavailable(req, reason, warnings, true);
    }
    let done = apply::run(&p, roots, ops);
    for w in &done.warnings {
        log::warn!("GPU: {w}");
    }
    warnings.extend(done.warnings.iter().cloned());
    if let Some(f) = done.failure {
        return unavailable(req, format!("binding to {} failed: {f}", driver.name()), warnings, true);
    }
    let model = summarize_models(&done.models);
    log::info!("GPU: {model} ({}) bound to {}", done.gpus.join(", "), driver.name());
    Gpus {
        available: true,
        driver: Some(driver),
        env: container_env(req, Some(driver), done.gpus.len()),
        model,
        gpus: done.gpus,
        reason: None,
        devices: done.devices,
        mounts,
        warnings,
    }
}

/// The CPU outcome; `warn` logs the reason as the fallback WARNING (not for FL_GPU_ENABLED=NO).
fn unavailable(req: &Request, reason: String, mut warnings: Vec<String>, warn: bool) -> Gpus {
    if warn {
        log::warn!("GPU: {reason}; falling back to CPU (FL_GPU_AVAILABLE=NO)");
        warnings.push(reason.clone());
    }
    Gpus {
        available: false,
        driver: None,
        model: String::new(),
        gpus: Vec::new(),
        reason: Some(reason),
        devices: Vec::new(),
        mounts: Vec::new(),
        env: container_env(req, None, 0),
        warnings,
    }
}

/// The container's GPU environment. `NVIDIA_VISIBLE_DEVICES=void` keeps any NVIDIA hook in the
/// image from injecting devices (flower-init hands over exactly the chosen nodes). With CUDA,
/// only the chosen GPUs' nodes exist in the container, so CUDA numbers them 0..k-1 there:
/// CUDA_VISIBLE_DEVICES lists those, and CUDA_DEVICE_ORDER=PCI_BUS_ID keeps them in the PCI
/// order FL_CUDA_VISIBLE_DEVICES indexed. The memory fraction is the app's to apply
/// (torch `set_per_process_memory_fraction`, TensorFlow's memory limit); TensorFlow gets
/// memory growth by default (seed decision 06-01).
pub fn container_env(req: &Request, driver: Option<Driver>, gpus: usize) -> Vec<(String, String)> {
    let mut env = vec![("NVIDIA_VISIBLE_DEVICES".to_string(), "void".to_string())];
    let mut set = |k: &str, v: String| env.push((k.to_string(), v));
    match driver {
        Some(Driver::Nvidia) => {
            set("CUDA_VISIBLE_DEVICES", (0..gpus).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
            set("CUDA_DEVICE_ORDER", "PCI_BUS_ID".into());
            set("FL_GPU_MEMORY_FRACTION", req.memory_fraction.to_string());
            set("TF_FORCE_GPU_ALLOW_GROWTH", "true".into());
            set("LD_LIBRARY_PATH", CONTAINER_NVIDIA_LIB.into());
            set("FL_GPU_AVAILABLE", "YES".into());
        }
        Some(Driver::VfioPci) => {
            set("FL_GPU_MEMORY_FRACTION", req.memory_fraction.to_string());
            set("FL_GPU_AVAILABLE", "YES".into());
        }
        None => {
            // An empty list hides every GPU from CUDA: the app runs on CPU.
            set("CUDA_VISIBLE_DEVICES", String::new());
            set("FL_GPU_AVAILABLE", "NO".into());
        }
    }
    env
}

/// Read-only mounts of the image's NVIDIA userspace: `<dir>/lib` (required) and `<dir>/bin`.
fn nvidia_mounts(dir: &Path) -> std::result::Result<Vec<BindMount>, String> {
    let lib = dir.join("lib");
    if !lib.is_dir() {
        return Err(format!("the image's NVIDIA driver libraries are missing: {} is not a directory", lib.display()));
    }
    let mut m = vec![BindMount { source: lib, destination: CONTAINER_NVIDIA_LIB.into(), read_only: true }];
    if dir.join("bin").is_dir() {
        m.push(BindMount { source: dir.join("bin"), destination: CONTAINER_NVIDIA_BIN.into(), read_only: true });
    }
    Ok(m)
}

/// The first mount whose destination is not a directory under `root` (the container's
/// read-only root), said as the reason for not using the GPU.
fn missing_mountpoint(root: &Path, mounts: &[BindMount]) -> Option<String> {
    mounts.iter().find(|m| !root.join(m.destination.trim_start_matches('/')).is_dir()).map(|m| {
        format!(
            "the image has no directory {} to mount the NVIDIA driver's {} on (its root is read-only): \
             rebuild the image, image/in-rootfs.sh makes it",
            m.destination,
            m.source.display()
        )
    })
}

/// "NVIDIA L4", "2 x NVIDIA L4", "NVIDIA L4, NVIDIA T4".
fn summarize_models(models: &[String]) -> String {
    let mut parts: Vec<(String, usize)> = Vec::new();
    for m in models {
        match parts.iter_mut().find(|(n, _)| n == m) {
            Some(e) => e.1 += 1,
            None => parts.push((m.clone(), 1)),
        }
    }
    parts.iter().map(|(n, c)| if *c == 1 { n.clone() } else { format!("{c} x {n}") }).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
