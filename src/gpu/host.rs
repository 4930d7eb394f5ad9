//! The GPU step on a host whose NVIDIA driver is already loaded (a GPU machine that checks the
//! Flower container, `flower-init gpu bundle`, tests/gpu/device-check.sh): the boot's scan,
//! plan and [`apply::run`](super::apply::run), through [`Loaded`], an [`Ops`] that changes
//! nothing on the host. With the driver loaded and the GPUs bound to it, the plan the boot
//! follows holds no module load and no sysfs write, only the driver checks and the device
//! nodes; anything else is a step this host would need changed, and is refused with what to
//! do. The nodes the host already has are checked (same numbers), never created or chmod'ed:
//! runc makes the container's own nodes from the numbers in `linux.devices`.
//!
//! The driver's userspace must be the kernel module's exact release: [`module_version`] reads
//! the module's, [`libraries_version`] a driver directory's.

use super::apply::{HostNode, Ops};
use super::{Gpus, Request, Roots};
use crate::error::{Error, Result};
use std::fs;
use std::path::Path;

/// An [`Ops`] for a host: loads no module, writes no sysfs attribute, creates no node.
#[derive(Debug, Default)]
pub struct Loaded {
    /// What was found about the host's nodes (one line each), for the report.
    pub notes: Vec<String>,
}

impl Ops for Loaded {
    fn load_module(&mut self, name: &str) -> Result<()> {
        Err(Error::msg(
            format!("load module {name}"),
            format!("{name} is not loaded on this host, and `gpu bundle` loads no module: load it first (modprobe {name})"),
        ))
    }

    fn write(&mut self, path: &Path, value: &str) -> Result<()> {
        Err(Error::msg(
            format!("write {value:?} to {}", path.display()),
            "`gpu bundle` changes no driver binding on a host: the GPU must already be bound to nvidia here (the boot would rebind it)",
        ))
    }

    fn mknod(&mut self, n: &HostNode) -> Result<()> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let want = format!("c {}:{}", n.major, n.minor);
        match fs::metadata(&n.path) {
            Ok(m) if m.file_type().is_char_device() => {
                let (major, minor) = (nix::sys::stat::major(m.rdev()), nix::sys::stat::minor(m.rdev()));
                if (major, minor) != (n.major.into(), n.minor.into()) {
                    return Err(Error::msg(
                        format!("check {}", n.path.display()),
                        format!("it is c {major}:{minor}, the driver says {want}"),
                    ));
                }
                self.notes.push(format!("{} ({want}) is on this host", n.path.display()));
                Ok(())
            }
            Ok(_) => Err(Error::msg(format!("check {}", n.path.display()), format!("not a character device; the driver says {want}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.notes.push(format!("{} is not on this host: runc makes the container's node ({want}) from its numbers", n.path.display()));
                Ok(())
            }
            Err(e) => Err(Error { what: format!("check {}", n.path.display()), cause: e.into() }),
        }
    }
}

/// [`super::setup_at`] against `roots` through [`Loaded`]: what the boot would hand the
/// container on this host, and the notes about the host's nodes.
pub fn on_host(req: &Request, roots: &Roots) -> (Gpus, Vec<String>) {
    let mut ops = Loaded::default();
    let gpus = super::setup_at(req, roots, &mut ops);
    (gpus, ops.notes)
}

/// The release of the loaded NVIDIA kernel module: the first `N.N[.N]` word of
/// `<proc>/driver/nvidia/version` ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01
/// ..." or "... Open Kernel Module for x86_64  550.90.07  Release Build ..."). `None`: no
/// NVIDIA driver is loaded.
pub fn module_version(proc: &Path) -> Option<String> {
    let text = fs::read_to_string(proc.join("driver/nvidia/version")).ok()?;
    text.lines().next()?.split_whitespace().find(|w| is_release(w)).map(String::from)
}

/// The release of a driver directory's libraries (image/nvidia-driver.sh's layout):
/// `driver.json`'s `version`, else the suffix of `lib/libcuda.so.X.Y[.Z]`.
pub fn libraries_version(dir: &Path) -> Option<String> {
    if let Ok(text) = fs::read_to_string(dir.join("driver.json"))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(s) = v.get("version").and_then(|s| s.as_str())
    {
        return Some(s.to_string());
    }
    let mut found: Vec<String> = fs::read_dir(dir.join("lib"))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("libcuda.so.").filter(|v| is_release(v)).map(String::from))
        .collect();
    found.sort();
    found.pop()
}

/// "535.183.01", "550.54": digits in two or three dot-separated parts.
fn is_release(w: &str) -> bool {
    let parts: Vec<&str> = w.split('.').collect();
    (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_version_reads_proprietary_and_open_modules() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(module_version(d.path()), None, "no driver loaded");
        fs::create_dir_all(d.path().join("driver/nvidia")).unwrap();
        let f = d.path().join("driver/nvidia/version");
        fs::write(&f, "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n").unwrap();
        assert_eq!(module_version(d.path()).as_deref(), Some("535.183.01"));
        fs::write(&f, "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.90.07  Release Build  (dvs-builder@U16-I3-B03-4-3)  Fri May 31 09:30:47 UTC 2024\n").unwrap();
        assert_eq!(module_version(d.path()).as_deref(), Some("550.90.07"));
    }

    #[test]
    fn libraries_version_from_driver_json_or_libcuda() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(libraries_version(d.path()), None);
        fs::create_dir_all(d.path().join("lib")).unwrap();
        for f in ["libcuda.so", "libcuda.so.1", "libcuda.so.550.90.07", "libnvidia-ml.so.550.90.07"] {
            fs::write(d.path().join("lib").join(f), "").unwrap();
        }
        assert_eq!(libraries_version(d.path()).as_deref(), Some("550.90.07"));
        fs::write(d.path().join("driver.json"), r#"{"version": "535.309.01", "kernel": "6.1.0-56-amd64"}"#).unwrap();
        assert_eq!(libraries_version(d.path()).as_deref(), Some("535.309.01"), "driver.json first");
    }

    #[test]
    fn loaded_ops_refuse_loads_and_writes_and_only_check_nodes() {
        let d = tempfile::tempdir().unwrap();
        let mut ops = Loaded::default();
        let e = ops.load_module("nvidia-uvm").unwrap_err().to_string();
        assert_eq!(e, "load module nvidia-uvm: nvidia-uvm is not loaded on this host, and `gpu bundle` loads no module: load it first (modprobe nvidia-uvm)");
        let p = d.path().join("drivers_probe");
        let e = ops.write(&p, "0000:01:00.0").unwrap_err().to_string();
        assert!(e.starts_with(&format!("write \"0000:01:00.0\" to {}: `gpu bundle` changes no driver binding", p.display())), "{e}");
        assert!(!p.exists(), "nothing written");
        let node = HostNode { path: d.path().join("nvidia-uvm"), major: 508, minor: 0, mode: 0o666, uid: 0, gid: 0 };
        ops.mknod(&node).unwrap();
        assert!(!node.path.exists(), "no node created");
        assert_eq!(ops.notes, vec![format!("{} is not on this host: runc makes the container's node (c 508:0) from its numbers", node.path.display())]);
        fs::write(&node.path, "").unwrap();
        let e = ops.mknod(&node).unwrap_err().to_string();
        assert_eq!(e, format!("check {}: not a character device; the driver says c 508:0", node.path.display()));
        // A real character device: /dev/null is c 1:3 on every Linux.
        let null = HostNode { path: "/dev/null".into(), major: 1, minor: 3, ..node.clone() };
        ops.mknod(&null).unwrap();
        assert_eq!(ops.notes.last().map(String::as_str), Some("/dev/null (c 1:3) is on this host"));
        let e = ops.mknod(&HostNode { minor: 4, ..null }).unwrap_err().to_string();
        assert_eq!(e, "check /dev/null: it is c 1:3, the driver says c 1:4");
    }
}
