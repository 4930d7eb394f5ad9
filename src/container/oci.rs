//! The container [`Spec`] and its pure translation into an OCI runtime `config.json`
//! (runtime-spec 1.0.2, what runc 1.1 implements), plus the atomic bundle writer.

use super::{BindMount, CERTS_DIR, CONTAINER_INIT, DATA_DIR, DeviceNode, HOME_DIR, CONTAINER_STATE_DIR, VENV_BIN};
use crate::vocab::LogLevel;
use crate::error::{Ctx, Result};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `RLIMIT_NICE` of the container: the ceiling of priority is `20 - limit` as a nice value, so
/// 20 allows nice 0 (the default) and nothing above it (setpriority(2), "RLIMIT_NICE").
pub const NICE_BACK_TO_ZERO: u64 = 20;

/// Default `RLIMIT_NOFILE` (soft = hard): uvicorn plus one connection per SuperNode.
pub const NOFILE: u64 = 65_536;
/// Default pids limit: Flower starts a process per run/message; a fork bomb stops here.
pub const PIDS: i64 = 4096;
/// Size caps of the tmpfs mounts (they live in the VM's memory).
const TMP_SIZE: &str = "size=1g";
const HOME_SIZE: &str = "size=256m";
const SMALL_SIZE: &str = "size=1m";
/// Docker's default seccomp profile as dockerd renders it for an x86_64 container without
/// capabilities (moby/profiles seccomp v0.2.3; the file names its source). Data, not code:
/// runc compiles it to BPF and installs it just before it executes the container's init.
const SECCOMP_PROFILE: &str = include_str!("seccomp.json");
/// Memory the VM keeps outside the container: the kernel, flower-init (PID 1, the gateway
/// and its buffers, bounded at 64 MiB; the health server) and the /run tmpfs. See
/// [`memory_limit`]. 128 MiB, not more: with 256 MiB a 512 MiB edge VM gave Flower 233 MiB,
/// where its SuperNode thrashed at the limit on its first round with 200 MiB free beside it.
const RESERVE_MIN: u64 = 128 << 20;
const RESERVE_MAX: u64 = 1 << 30;

/// Everything that varies between containers; the rest of config.json is fixed policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The container id (also names its cgroup `/flower-init/<id>`).
    pub id: String,
    /// The unpacked image, absolute (used in place: the bundle has no rootfs of its own).
    pub rootfs: PathBuf,
    /// The Flower command line (`flower::superlink_args`…); run under [`CONTAINER_INIT`].
    pub args: Vec<String>,
    /// `FLWR_LOG_LEVEL`.
    pub log_level: LogLevel,
    /// `FLWR_HOME` inside the container; `None`: `/app/.flwr` (on the HOME tmpfs).
    pub flwr_home: Option<String>,
    /// Extra environment (e.g. `CUDA_VISIBLE_DEVICES`), after the fixed variables.
    pub env: Vec<(String, String)>,
    /// Host directory bind-mounted read-write at `/state`.
    pub state_dir: Option<PathBuf>,
    /// Host directory bind-mounted read-only at `/app/data`.
    pub data_dir: Option<PathBuf>,
    /// TLS files, one read-only bind each; destinations must be directly under `/certs`.
    pub certs: Vec<BindMount>,
    /// Host files bind-mounted read-only at `/etc/resolv.conf` and `/etc/hosts`.
    pub resolv_conf: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    /// Further binds (GPU libraries…), as given.
    pub mounts: Vec<BindMount>,
    /// Device nodes; each gets an allow rule, everything else is denied.
    pub devices: Vec<DeviceNode>,
    pub limits: Limits,
    /// User and group of the processes.
    pub uid: u32,
    pub gid: u32,
}

/// Resource limits. Memory and pids need their cgroup controller: see [`Limits::restrict_to`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub nofile: u64,
    pub pids: Option<i64>,
    /// Bytes of memory (and memory+swap: no swap beyond it).
    pub memory: Option<i64>,
    /// `RLIMIT_NICE`: [`NICE_BACK_TO_ZERO`] where runc can raise it ([`nice_raisable`]; the
    /// appliance's `machine_limits` decides), else `None` (the default): the container keeps the
    /// caller's, and runc never fails on a limit it may not set.
    pub nice: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { nofile: NOFILE, pids: Some(PIDS), memory: None, nice: None }
    }
}

/// The cgroup controllers the kernel offers (a limit for a missing one makes runc fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Controllers {
    pub memory: bool,
    pub pids: bool,
}

impl Controllers {
    /// Read `/sys/fs/cgroup` under `root`: cgroup v2 lists its controllers in
    /// `cgroup.controllers`; v1 (or hybrid, like the dev host) has one directory per controller.
    pub fn detect_at(root: &Path) -> Controllers {
        let cg = root.join("sys/fs/cgroup");
        match std::fs::read_to_string(cg.join("cgroup.controllers")) {
            Ok(list) => {
                let has = |c: &str| list.split_whitespace().any(|w| w == c);
                Controllers { memory: has("memory"), pids: has("pids") }
            }
            Err(_) => Controllers { memory: cg.join("memory").is_dir(), pids: cg.join("pids").is_dir() },
        }
    }

    /// [`Controllers::detect_at`] on the running system.
    pub fn detect() -> Controllers {
        Controllers::detect_at(Path::new("/"))
    }
}

/// The hard `RLIMIT_NOFILE` of this process: runc cannot raise the container's above it
/// without CAP_SYS_RESOURCE (a VM's root has it; a sandboxed host may not).
pub fn nofile_hard() -> Option<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the rlimit struct we own and pass by valid pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (rc == 0).then_some(r.rlim_max)
}

/// Whether runc, run by this process, can give the container `RLIMIT_NICE` [`NICE_BACK_TO_ZERO`]:
/// raising a hard limit takes CAP_SYS_RESOURCE (a VM's PID 1 has it; a sandboxed host's root
/// may not: this development machine's lacks it), unless the hard limit is already that high.
pub fn nice_raisable() -> bool {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the rlimit struct we own and pass by valid pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut r) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    nice_settable((rc == 0).then_some(r.rlim_max), cap_eff(&status))
}

/// CapEff of a `/proc/PID/status` text.
fn cap_eff(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// [`nice_raisable`]'s rule: the hard limit already allows it, or CAP_SYS_RESOURCE (bit 24).
pub(super) fn nice_settable(hard: Option<u64>, cap_eff: Option<u64>) -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    hard.is_some_and(|h| h >= NICE_BACK_TO_ZERO) || cap_eff.is_some_and(|c| c & (1 << CAP_SYS_RESOURCE) != 0)
}

/// The container's memory limit for a VM with `mem_total` bytes (MemTotal): everything but a
/// reserve for the kernel and flower-init of one eighth of the memory, at least 128 MiB and at
/// most 1 GiB; and never less than half of the memory (a tiny VM still runs Flower, which
/// then competes with the init like any process). 512 MiB → 384 MiB, 2 GiB → 1.75 GiB,
/// 16 GiB → 15 GiB.
pub fn memory_limit(mem_total: u64) -> i64 {
    let reserve = (mem_total / 8).clamp(RESERVE_MIN, RESERVE_MAX);
    let limit = mem_total.saturating_sub(reserve).max(mem_total / 2);
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// `MemTotal` of `root/proc/meminfo` in bytes (the kernel reports kB).
pub fn mem_total_at(root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(root.join("proc/meminfo")).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kb: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kb.checked_mul(1024)
}

/// The seccomp architectures of the machine this binary runs on: dockerd's archMap entry for
/// it (x86_64 with its x86 and x32 sub-architectures). On aarch64 only the native one: the
/// image holds no 32-bit ARM code, and Docker's ARM-only rules are not in the amd64 rendering.
/// The rules are by syscall name; runc skips a name its architecture does not have
/// (`arch_prctl`, `open`, … on aarch64), so the one allow list serves both.
#[cfg(target_arch = "x86_64")]
pub const SECCOMP_ARCHITECTURES: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];
#[cfg(target_arch = "aarch64")]
pub const SECCOMP_ARCHITECTURES: &[&str] = &["SCMP_ARCH_AARCH64"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("flower-init is built for x86_64 and aarch64 (the container's seccomp architectures)");

/// The `linux.seccomp` object of [`SECCOMP_PROFILE`], for this machine's architecture.
pub fn seccomp_profile() -> Value {
    // Invariant: the embedded file is valid JSON with a "seccomp" object (unit-tested).
    let doc: Value = serde_json::from_str(SECCOMP_PROFILE).expect("src/container/seccomp.json is valid JSON");
    let mut profile = doc["seccomp"].clone();
    profile["architectures"] = Value::from(SECCOMP_ARCHITECTURES);
    profile
}

impl Limits {
    /// Lower `nofile` to `hard` if it is above; returns whether it changed (for a warning).
    pub fn cap_nofile(&mut self, hard: u64) -> bool {
        let over = self.nofile > hard;
        self.nofile = self.nofile.min(hard);
        over
    }

    /// Drop the limits whose controller is missing; returns their names for a warning.
    pub fn restrict_to(&mut self, c: Controllers) -> Vec<&'static str> {
        let mut dropped = Vec::new();
        if self.memory.is_some() && !c.memory {
            self.memory = None;
            dropped.push("memory");
        }
        if self.pids.is_some() && !c.pids {
            self.pids = None;
            dropped.push("pids");
        }
        dropped
    }
}

impl Spec {
    /// A spec with the fixed defaults: user 49999, default limits, nothing mounted.
    pub fn new(id: &str, rootfs: &Path, args: Vec<String>) -> Spec {
        Spec {
            id: id.to_string(),
            rootfs: rootfs.to_path_buf(),
            args,
            log_level: LogLevel::Info,
            flwr_home: None,
            env: Vec::new(),
            state_dir: None,
            data_dir: None,
            certs: Vec::new(),
            resolv_conf: None,
            hosts: None,
            mounts: Vec::new(),
            devices: Vec::new(),
            limits: Limits::default(),
            uid: super::CONTAINER_UID,
            gid: super::CONTAINER_GID,
        }
    }

    /// The environment of the container's processes, `NAME=value`.
    pub fn environment(&self) -> Vec<String> {
        let flwr_home = self.flwr_home.clone().unwrap_or_else(|| format!("{HOME_DIR}/.flwr"));
        let mut env = vec![
            format!("PATH={VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            format!("HOME={HOME_DIR}"),
            format!("FLWR_HOME={flwr_home}"),
            format!("FLWR_LOG_LEVEL={}", self.log_level),
            // Offline appliance: no telemetry, no update check, no `uv sync` per run.
            "FLWR_TELEMETRY_ENABLED=0".into(),
            "FLWR_DISABLE_UPDATE_CHECK=1".into(),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1".into(),
            // Lines reach the console as they are written; .pyc were compiled at build time.
            "PYTHONUNBUFFERED=1".into(),
            "PYTHONDONTWRITEBYTECODE=1".into(),
            "PYTHONIOENCODING=UTF-8".into(),
            "LANG=C.UTF-8".into(),
        ];
        env.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        env
    }

    /// Reject what would give a wrong or unsafe config.json (relative paths, certificates
    /// outside `/certs`, an empty command line, a bad id).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.id.is_empty()
            || !self.id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || self.id.starts_with('.')
        {
            return Err(format!("container id {:?} must be letters, digits, '-', '_', '.'", self.id));
        }
        if !self.rootfs.is_absolute() {
            return Err(format!("rootfs {} must be an absolute path", self.rootfs.display()));
        }
        if self.args.is_empty() {
            return Err("the command line is empty".into());
        }
        // exec(2) cannot pass a NUL byte: runc would fail late and obscurely.
        if let Some(a) = self.args.iter().find(|a| a.contains('\0')) {
            return Err(format!("argument {a:?} contains a NUL byte"));
        }
        if let Some((k, v)) = self.env.iter().find(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0')) {
            return Err(format!("environment variable {k:?}={v:?} must have a name without '=' and no NUL byte"));
        }
        for c in &self.certs {
            let name = c.destination.strip_prefix(CERTS_DIR).and_then(|r| r.strip_prefix('/'));
            if !name.is_some_and(|n| !n.is_empty() && !n.contains('/') && n != "..") {
                return Err(format!("certificate destination {} must be a file directly under {CERTS_DIR}", c.destination));
            }
        }
        let binds = self.certs.iter().chain(&self.mounts);
        let sources = binds.map(|m| m.source.as_path()).chain(self.state_dir.as_deref()).chain(self.data_dir.as_deref());
        for p in sources.chain(self.resolv_conf.as_deref()).chain(self.hosts.as_deref()) {
            if !p.is_absolute() {
                return Err(format!("bind source {} must be an absolute path", p.display()));
            }
        }
        for m in &self.mounts {
            if !m.destination.starts_with('/') {
                return Err(format!("mount destination {} must be an absolute path", m.destination));
            }
        }
        Ok(())
    }
}

/// A bind mount entry; binds never carry devices or set-uid files in.
fn bind(source: &Path, destination: &str, read_only: bool, noexec: bool) -> Value {
    let mut options = vec!["rbind", if read_only { "ro" } else { "rw" }, "nosuid", "nodev"];
    if noexec {
        options.push("noexec");
    }
    json!({"destination": destination, "type": "bind", "source": source, "options": options})
}

/// A tmpfs entry with the given options.
fn tmpfs(destination: &str, options: &[&str]) -> Value {
    json!({"destination": destination, "type": "tmpfs", "source": "tmpfs", "options": options})
}

/// The mounts, in mount order: kernel filesystems as `runc spec` has them, then the tmpfs
/// directories, then the binds (a bind inside a tmpfs comes after that tmpfs).
fn mounts(spec: &Spec) -> Vec<Value> {
    let uid = format!("uid={}", spec.uid);
    let gid = format!("gid={}", spec.gid);
    let mut m = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        tmpfs("/dev", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        tmpfs("/dev/shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        tmpfs("/tmp", &["nosuid", "nodev", "mode=1777", TMP_SIZE]),
        tmpfs("/run", &["nosuid", "nodev", "noexec", "mode=755", SMALL_SIZE]),
        tmpfs(HOME_DIR, &["nosuid", "nodev", "mode=700", &uid, &gid, HOME_SIZE]),
    ];
    if let Some(state) = &spec.state_dir {
        m.push(bind(state, CONTAINER_STATE_DIR, false, true));
    }
    if let Some(data) = &spec.data_dir {
        m.push(bind(data, DATA_DIR, true, true));
    }
    if !spec.certs.is_empty() {
        // Root-owned and read-only to the container user; runc creates one file per bind.
        m.push(tmpfs(CERTS_DIR, &["nosuid", "nodev", "noexec", "mode=755", SMALL_SIZE]));
        m.extend(spec.certs.iter().map(|c| bind(&c.source, &c.destination, true, true)));
    }
    // The image's /etc/resolv.conf and /etc/hosts are links into /run/flower-init: runc
    // follows them inside the rootfs and binds onto the /run tmpfs above.
    if let Some(p) = &spec.resolv_conf {
        m.push(bind(p, "/etc/resolv.conf", true, true));
    }
    if let Some(p) = &spec.hosts {
        m.push(bind(p, "/etc/hosts", true, true));
    }
    m.extend(spec.mounts.iter().map(|b| bind(&b.source, &b.destination, b.read_only, false)));
    m
}

/// `linux.devices` entries and the device cgroup rules: deny everything, allow each node
/// (runc itself adds the standard /dev/null, zero, full, random, urandom, tty, ptmx).
fn devices(spec: &Spec) -> (Vec<Value>, Vec<Value>) {
    let nodes = spec.devices.iter().map(|d| {
        json!({"path": d.path, "type": d.kind.to_string(), "major": d.major, "minor": d.minor,
               "fileMode": d.file_mode, "uid": 0, "gid": 0})
    });
    let mut rules = vec![json!({"allow": false, "access": "rwm"})];
    rules.extend(spec.devices.iter().map(|d| {
        json!({"allow": true, "type": d.kind.to_string(), "major": d.major, "minor": d.minor, "access": "rwm"})
    }));
    (nodes.collect(), rules)
}

/// `process.rlimits`. RLIMIT_NICE 20 lets a process go back to nice 0 after raising its nice
/// value, and no further (higher priority needs 21 and up): the app fork server preloads at nice
/// 19 while Flower starts, then returns to 0 before it forks the apps (image/appstart/zygote.py).
/// Without it, unprivileged processes can only lower their priority.
fn rlimits(l: &Limits) -> Vec<Value> {
    let mut v = vec![json!({"type": "RLIMIT_NOFILE", "hard": l.nofile, "soft": l.nofile})];
    if let Some(n) = l.nice {
        v.push(json!({"type": "RLIMIT_NICE", "hard": n, "soft": n}));
    }
    v
}

/// The OCI runtime configuration of `spec` (pure: the same spec gives the same bytes).
///
/// Policy: no network namespace (Flower serves on the VM's addresses; docs/container.md says
/// why), its own UTS namespace, a read-only root, no capabilities in any set (Flower binds
/// port 8000 > 1024 and needs no privilege), `noNewPrivileges`, Docker's default seccomp
/// profile, the container user, the masked and read-only /proc paths of `runc spec`.
pub fn config_json(spec: &Spec) -> Value {
    let mut args = vec![CONTAINER_INIT.to_string(), "--".to_string()];
    args.extend(spec.args.iter().cloned());
    let (device_nodes, device_rules) = devices(spec);
    let mut resources = json!({"devices": device_rules});
    if let Some(p) = spec.limits.pids {
        resources["pids"] = json!({"limit": p});
    }
    if let Some(m) = spec.limits.memory {
        resources["memory"] = json!({"limit": m, "swap": m});
    }
    let no_caps: [&str; 0] = [];
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": spec.uid, "gid": spec.gid, "additionalGids": [spec.gid]},
            "args": args,
            "env": spec.environment(),
            "cwd": HOME_DIR,
            "capabilities": {"bounding": no_caps, "effective": no_caps, "inheritable": no_caps,
                             "permitted": no_caps, "ambient": no_caps},
            "rlimits": rlimits(&spec.limits),
            "noNewPrivileges": true,
        },
        "root": {"path": spec.rootfs, "readonly": true},
        "mounts": mounts(spec),
        "linux": {
            // No "network": the host's network (docs/container.md). The UTS namespace starts
            // with the VM's host name, which the container cannot change.
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}, {"type": "cgroup"}, {"type": "uts"}],
            "seccomp": seccomp_profile(),
            "cgroupsPath": super::cgroup_path(&spec.id),
            "devices": device_nodes,
            "resources": resources,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}

/// Write `dir/config.json` for `spec` atomically (temporary file, fsync, rename), creating
/// `dir` (0700) if needed. Returns the bundle directory for `runc create --bundle`.
pub fn write_bundle(dir: &Path, spec: &Spec) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    spec.validate().with_ctx(|| format!("write OCI bundle {}", dir.display()))?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_ctx(|| format!("create {}", dir.display()))?;
    let text = serde_json::to_vec_pretty(&config_json(spec)).map_err(|e| e.to_string()).ctx("serialize config.json")?;
    let tmp = dir.join(".config.json.tmp");
    let path = dir.join("config.json");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_ctx(|| format!("create {}", tmp.display()))?;
    f.write_all(&text).and_then(|_| f.sync_all()).with_ctx(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_ctx(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    Ok(dir.to_path_buf())
}
