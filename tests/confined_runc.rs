//! The Flower container's confinement, checked with the real runc (issue #14 item 3): the
//! OCI config that `flower_init::container::config_json` writes, run on a tiny rootfs holding
//! only a static busybox, so no image build is needed. Inside, as uid 49999 with no
//! capabilities, the probe tries what Docker's default seccomp profile refuses
//! (`unshare(CLONE_NEWUSER)`, which an unprivileged user may do without the profile), reads
//! its seccomp mode, its UTS namespace and its memory limit.
//!
//! `#[ignore]`d: needs root, runc and /bin/busybox (static). `make confined-test` runs it as
//! PID 1 of a new PID and mount namespace (`unshare --pid --fork --mount-proc`).

use flower_init::container::{self, Spec};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The busybox the probe runs (Debian's busybox-static).
const BUSYBOX: &str = "/bin/busybox";

/// A rootfs with busybox at /bin/busybox and the mountpoints runc needs (the root is read-only,
/// so runc cannot create them itself).
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "run", "app", "etc", "usr/bin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    root
}

/// Run `script` under busybox sh with the production policy (only `process.args` replaced:
/// there is no tini or Flower in this rootfs). Returns (exit status, stdout+stderr).
fn run(dir: &Path, spec: &Spec, script: &str) -> (bool, String) {
    let bundle = dir.join(format!("bundle-{}", spec.id));
    container::write_bundle(&bundle, spec).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    cfg["process"]["args"] = serde_json::json!(["/bin/busybox", "sh", "-c", script]);
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let root = dir.join("runc");
    let out = Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&spec.id)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = Command::new("runc").arg("--root").arg(&root).args(["delete", "--force", &spec.id]).output();
    (out.status.success(), text)
}

/// The value printed after `key=` by the probe script.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("no {key}= in the probe's output:\n{out}")).trim()
}

#[test]
#[ignore = "root, runc, busybox: make confined-test"]
fn seccomp_uts_and_memory_limit_hold_under_real_runc() {
    assert_eq!(std::process::id(), 1, "run me through `make confined-test` (PID 1 of unshare --pid --fork --mount-proc)");
    assert!(Path::new(BUSYBOX).is_file(), "{BUSYBOX} is missing (Debian: busybox-static)");
    let dir = tempfile::Builder::new().prefix("fi-cf-").tempdir().unwrap();
    let root = rootfs(dir.path());
    let mut spec = Spec::new("fi-confined", &root, vec!["unused".into()]);
    spec.limits.memory = Some(container::memory_limit(3 << 30));
    spec.limits.restrict_to(container::Controllers::detect());
    if let Some(hard) = container::nofile_hard() {
        spec.limits.cap_nofile(hard);
    }
    assert!(spec.limits.memory.is_some(), "this host has no memory cgroup controller: the limit cannot be checked");
    let script = "\
        echo uid=$(busybox id -u); \
        echo seccomp=$(busybox grep '^Seccomp:' /proc/self/status | busybox tr -d ' \\t' | busybox cut -d: -f2); \
        if busybox unshare -U /bin/busybox true 2>/dev/null; then echo userns=allowed; else echo userns=refused; fi; \
        echo uts=$(busybox readlink /proc/self/ns/uts); \
        echo mem=$(busybox cat /sys/fs/cgroup/memory.max 2>/dev/null || busybox cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
        echo fork=$(busybox sh -c 'echo ok')";
    let (ok, out) = run(dir.path(), &spec, script);
    assert!(ok, "runc run failed:\n{out}");
    eprintln!("{out}");
    assert_eq!(field(&out, "uid"), "49999");
    // 2 = SECCOMP_MODE_FILTER (proc(5)).
    assert_eq!(field(&out, "seccomp"), "2", "a seccomp filter is installed");
    assert_eq!(field(&out, "userns"), "refused", "unshare(CLONE_NEWUSER) is refused by Docker's profile without CAP_SYS_ADMIN");
    assert_eq!(field(&out, "fork"), "ok", "clone for a new process (no namespace flags) is allowed");
    let host_uts = std::fs::read_link("/proc/self/ns/uts").unwrap();
    assert_ne!(field(&out, "uts"), host_uts.to_string_lossy(), "the container has its own UTS namespace");
    assert_eq!(field(&out, "mem"), container::memory_limit(3 << 30).to_string(), "runc set the memory limit");
    // Sanity of the probe itself: the same unshare as root on this host succeeds, so "refused"
    // above is the profile, not the kernel.
    let host = Command::new(BUSYBOX).args(["unshare", "-U", BUSYBOX, "true"]).status().unwrap();
    assert!(host.success(), "unshare -U outside the container");
}
