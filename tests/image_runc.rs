//! Flower in containers with the real runc and the built image (issue #6): a SuperLink with
//! TLS (certificates from `flower_init::tls`) and a SuperNode, each in its own network
//! namespace (`fi-im-l`, `fi-im-n`, joined by a veth pair), driven with the command lines,
//! bundles and probe of `flower_init::{container, flower}`.
//!
//! `#[ignore]`d: needs root, runc and the unpacked rootfs of `make image`. Run with
//! `make image-test`: it sets FI_IMAGE_ROOTFS and runs this binary as PID 1 of a new PID and
//! mount namespace (`unshare --pid --fork --mount-proc`), so the container inits (re-parented
//! when `runc create` exits) are its children: it reaps them itself, as flower-init's
//! supervisor would, and a zombie would show. The rootfs is bound read-only as in a VM
//! (`container::bind_rootfs`). Everything is removed at the end, also on failure.

use flower_init::config::Isolation;
use flower_init::vocab::LogLevel;
use flower_init::container::{self, Controllers, OutputRing, Runc, Spec, Status};
use flower_init::flower::{self, ProbeError, ProbeTls, Prober, ServerTls, SuperLinkArgs, SuperNodeArgs};
use flower_init::tls::{self, ContainerUser};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Flower's start on a loaded 2-core machine can take minutes.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// Grace between `runc kill TERM` and `KILL`.
const GRACE: Duration = Duration::from_secs(30);
const SUBNET: &str = "10.96.6";
const NS_LINK: &str = "fi-im-l";
const NS_NODE: &str = "fi-im-n";

fn image_rootfs() -> PathBuf {
    let p = PathBuf::from(std::env::var_os("FI_IMAGE_ROOTFS").expect("FI_IMAGE_ROOTFS is not set (`make image-test` sets it)"));
    assert!(p.join("etc/flower-init/image.json").is_file(), "{}: not an image rootfs (make image)", p.display());
    p
}

/// The image root the containers get, as a VM has it when FI_IMAGE_SQUASHFS names the packed
/// disk (recognised by its magic, mounted read-only from a loop device), else the unpacked
/// rootfs. Either way its manifest must read back with the pinned Flower version.
fn image_root(dir: &std::path::Path) -> (PathBuf, Option<PathBuf>) {
    let (root, mounted) = match std::env::var_os("FI_IMAGE_SQUASHFS").filter(|v| !v.is_empty()) {
        Some(sq) => {
            let mut magic = [0u8; 4];
            std::fs::File::open(&sq).unwrap().read_exact(&mut magic).unwrap();
            assert_eq!(&magic, b"hsqs", "{sq:?} is not a squashfs image");
            let m = dir.join("image");
            std::fs::create_dir_all(&m).unwrap();
            let out = Command::new("mount").args(["-t", "squashfs", "-o", "loop,ro"]).arg(&sq).arg(&m).output().unwrap();
            assert!(out.status.success(), "mount {sq:?}: {}", String::from_utf8_lossy(&out.stderr));
            eprintln!("image: {} (squashfs, loop, read-only)", sq.to_string_lossy());
            (m.clone(), Some(m))
        }
        None => (image_rootfs(), None),
    };
    let manifest = flower_init::image::load_at(&root).unwrap();
    assert_eq!(manifest.facts.flower_version, flower_init::config::PINNED_FLOWER_VERSION);
    (root, mounted)
}

fn sh(argv: &[&str]) -> std::process::Output {
    Command::new(argv[0]).args(&argv[1..]).stdin(Stdio::null()).output().unwrap()
}

/// Run a runc argv (inside `netns` if given) to completion; panics with runc's logged error on
/// failure. `stdio` becomes runc's stdout and stderr, which `create` hands on to the container
/// (without one they are /dev/null: a captured pipe would stay open in the waiting init).
fn runc(r: &Runc, argv: Vec<OsString>, netns: Option<&str>, stdio: Option<std::os::fd::OwnedFd>) -> Duration {
    // Not `ip netns exec`: it remounts /sys in a new mount namespace, hiding the cgroup
    // mounts runc needs. Only the network namespace is joined, in the child before exec.
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    if let Some(ns) = netns {
        let fd = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        // SAFETY: setns is async-signal-safe; the fd stays open (moved into the closure) until exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
            });
        }
    }
    cmd.stdin(Stdio::null());
    match stdio {
        Some(fd) => {
            let err = fd.try_clone().unwrap();
            cmd.stdout(Stdio::from(fd)).stderr(Stdio::from(err));
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    let t = Instant::now();
    let status = cmd.status().unwrap();
    assert!(status.success(), "{argv:?}: {status}: {}", r.last_error().unwrap_or_default());
    t.elapsed()
}

/// Run a runc command to completion here (no reaper in this test): its stdout or the error.
fn runc_blocking(argv: &[OsString]) -> Result<String, String> {
    let out = Command::new(&argv[0]).args(&argv[1..]).stdin(Stdio::null()).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn runc_output(argv: Vec<OsString>) -> String {
    let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
    assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Test fixture: namespaces, a runc root, work directories; all removed on drop.
struct World {
    dir: tempfile::TempDir,
    runc: Runc,
    ids: Vec<String>,
    /// The image, bound read-only (what runc gets as `root.path`).
    rootfs: PathBuf,
    /// Where the squashfs image is mounted, if the test uses it.
    image_mount: Option<PathBuf>,
}

impl World {
    fn new() -> World {
        assert_eq!(std::process::id(), 1, "run me through `make image-test` (PID 1 of unshare --pid --fork --mount-proc)");
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and changes only this process.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
        let dir = tempfile::Builder::new().prefix("fi-im-").tempdir().unwrap();
        let runc = Runc::new(&dir.path().join("runc"));
        std::fs::create_dir_all(&runc.root).unwrap();
        delete_netns();
        for ns in [NS_LINK, NS_NODE] {
            assert!(sh(&["ip", "netns", "add", ns]).status.success(), "ip netns add {ns}");
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let out = sh(&["ip", "link", "add", "fi-im-l0", "netns", NS_LINK, "type", "veth", "peer", "name", "fi-im-n0", "netns", NS_NODE]);
        assert!(out.status.success(), "veth: {}", String::from_utf8_lossy(&out.stderr));
        for (ns, ifname, addr) in [(NS_LINK, "fi-im-l0", 1), (NS_NODE, "fi-im-n0", 2)] {
            let cidr = format!("{SUBNET}.{addr}/24");
            assert!(sh(&["ip", "-n", ns, "addr", "add", &cidr, "dev", ifname]).status.success());
            assert!(sh(&["ip", "-n", ns, "link", "set", ifname, "up"]).status.success());
        }
        // Our mount namespace is private (unshare): the mounts disappear with it at the latest.
        let (image, image_mount) = image_root(dir.path());
        let bound = dir.path().join("rootfs");
        container::bind_rootfs(&image, &bound).unwrap();
        World { dir, runc, ids: Vec::new(), rootfs: bound, image_mount }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A directory owned by the container user.
    fn user_dir(&self, p: &str) -> PathBuf {
        let d = self.path(p);
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(container::CONTAINER_UID), Some(container::CONTAINER_GID)).unwrap();
        d
    }

    /// Write the bundle, `runc create` (stdio into an [`OutputRing`] fed by a thread) and
    /// `runc start` in `netns`. Returns the container init's pid and the timings.
    fn run(&mut self, spec: &Spec, netns: &str, role: &str) -> (Pid, Arc<Mutex<OutputRing>>, Duration, Duration) {
        self.ids.push(spec.id.clone());
        let bundle = container::write_bundle(&self.path(&format!("bundle-{}", spec.id)), spec).unwrap();
        let ring = Arc::new(Mutex::new(OutputRing::new(role, 400)));
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let feed = ring.clone();
        std::thread::spawn(move || pump(std::fs::File::from(r), feed));
        let pid_file = bundle.join("init.pid");
        let create = runc(&self.runc, self.runc.create(&bundle, &pid_file, &spec.id), Some(netns), Some(w));
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        let start = runc(&self.runc, self.runc.start(&spec.id), None, None);
        (Pid::from_raw(pid), ring, create, start)
    }

    fn state(&self, id: &str) -> container::State {
        container::parse_state(&runc_output(self.runc.state(id))).unwrap()
    }

    fn list(&self) -> Vec<container::State> {
        container::parse_list(&runc_output(self.runc.list())).unwrap()
    }

    /// `runc kill TERM`, wait up to [`GRACE`] for the init to exit (reaping it), else `KILL`;
    /// then `delete`. Returns the init's wait status.
    fn stop(&self, id: &str, pid: Pid) -> WaitStatus {
        runc(&self.runc, self.runc.kill(id, "TERM"), None, None);
        let status = wait_exit(pid, GRACE).unwrap_or_else(|| {
            runc(&self.runc, self.runc.kill(id, "KILL"), None, None);
            wait_exit(pid, GRACE).expect("container init survived KILL")
        });
        runc(&self.runc, self.runc.delete(id, false), None, None);
        status
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = Command::new(&self.runc.binary).args(self.runc.delete(id, true).into_iter().skip(1)).output();
        }
        reap_all();
        delete_netns();
        let _ = nix::mount::umount2(&self.rootfs, nix::mount::MntFlags::MNT_DETACH);
        if let Some(m) = &self.image_mount {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn delete_netns() {
    for ns in [NS_LINK, NS_NODE] {
        let _ = sh(&["ip", "netns", "del", ns]);
    }
}

/// Read the container's stdout/stderr pipe into the ring, echoing each line.
fn pump(mut r: std::fs::File, ring: Arc<Mutex<OutputRing>>) {
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                for line in ring.lock().unwrap().push(&buf[..n]) {
                    eprintln!("{line}");
                }
            }
        }
    }
    if let Some(line) = ring.lock().unwrap().finish() {
        eprintln!("{line}");
    }
}

/// Wait (polling, as the supervisor's reaper would on SIGCHLD) for `pid` to exit.
fn wait_exit(pid: Pid, within: Duration) -> Option<WaitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive => std::thread::sleep(Duration::from_millis(100)),
            s => return Some(s),
        }
    }
    None
}

/// Reap every exited child (orphans of the containers come to us, the subreaper).
fn reap_all() {
    while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if matches!(s, WaitStatus::StillAlive) {
            break;
        }
    }
}

/// Our zombie children, from /proc.
fn zombies() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut z = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 1 && f[0] == "Z" && f[1] == me {
            z.push(e.file_name().to_string_lossy().parse().unwrap_or(0));
        }
    }
    z
}

/// Processes (pid, argv) whose parent is `ppid`.
fn children_of(ppid: Pid) -> Vec<(i32, Vec<String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else { continue };
        if rest.split_whitespace().nth(1) == Some(&ppid.as_raw().to_string()) {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let argv = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            out.push((pid, argv));
        }
    }
    out
}

/// The Flower process the container init (tini) runs: its pid and argv.
fn flower_child(init: Pid, program: &str) -> (i32, Vec<String>) {
    let children = children_of(init);
    children
        .iter()
        .find(|(_, a)| a.iter().any(|x| x.ends_with(program)))
        .cloned()
        .unwrap_or_else(|| panic!("no {program} under the container init: {children:?}"))
}

/// The mount options of `mountpoint` as process `pid` sees it (field 6 of mountinfo).
fn mount_options(pid: i32, mountpoint: &str) -> String {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    info.lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(4) == Some(&mountpoint)).then(|| f[5].to_string())
        })
        .unwrap_or_else(|| panic!("{mountpoint} is not a mountpoint of {pid}:\n{info}"))
}

/// Run `f` in a thread that has joined the network namespace `ns` (setns is per thread).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid, open namespace file descriptor; it affects only this thread.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        f()
    })
    .join()
    .unwrap()
}

/// Poll `/health` from inside `ns` until 200; the time it took from `since`.
fn wait_healthy(ns: &str, addr: SocketAddr, tls: Option<ProbeTls>, pid: Pid, since: Instant) -> Duration {
    let prober = Prober::new(addr, tls.as_ref()).unwrap();
    loop {
        let p = prober.clone();
        match in_netns(ns, move || p.check(Duration::from_secs(10))) {
            Ok(()) => return since.elapsed(),
            Err(ProbeError::Refused | ProbeError::Timeout) => {}
            Err(e) => panic!("/health of {addr}: {e}"),
        }
        assert!(waitpid(pid, Some(WaitPidFlag::WNOHANG)).unwrap() == WaitStatus::StillAlive, "container died");
        assert!(since.elapsed() < START_TIMEOUT, "no /health within {START_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The SuperLink spec: TLS files from `tls`, state in `state`.
fn superlink_spec(w: &World, id: &str, files: &tls::ContainerFiles) -> Spec {
    let args = flower::superlink_args(&SuperLinkArgs {
        host: "0.0.0.0".into(),
        port: flower::SUPERLINK_PORT,
        tls: Some(ServerTls::in_certs_dir()),
        database: flower::default_database(),
        isolation: Isolation::Subprocess,
        supernode_auth: false,
    });
    let mut s = Spec::new(id, &w.rootfs, args);
    s.log_level = LogLevel::Info;
    let state = w.path(&format!("state-{id}"));
    container::prepare_state_dir(&state, container::CONTAINER_UID, container::CONTAINER_GID).unwrap();
    s.state_dir = Some(state);
    s.certs = files.bind_mounts(container::CERTS_DIR);
    s.resolv_conf = Some(w.path("resolv.conf"));
    s.hosts = Some(w.path("hosts"));
    fit_host(&mut s);
    s
}

/// Limits this host can apply: controllers present, RLIMIT_NOFILE within our hard limit
/// (this sandbox lacks CAP_SYS_RESOURCE); a 2 GiB memory limit where the controller exists.
fn fit_host(s: &mut Spec) {
    s.limits.memory = Some(2 << 30);
    s.limits.restrict_to(Controllers::detect());
    s.limits.cap_nofile(container::nofile_hard().unwrap());
}

fn write_net_files(w: &World) {
    std::fs::write(w.path("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    std::fs::write(w.path("hosts"), "127.0.0.1 localhost\n").unwrap();
}

fn wait_for_line(ring: &Arc<Mutex<OutputRing>>, needle: &str, pid: Pid) -> String {
    let t = Instant::now();
    loop {
        if let Some(l) = ring.lock().unwrap().lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        assert!(waitpid(pid, Some(WaitPidFlag::WNOHANG)).unwrap() == WaitStatus::StillAlive, "container died before {needle:?}");
        assert!(t.elapsed() < START_TIMEOUT, "no {needle:?} within {START_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs root, runc and `make image` (run: make image-test)"]
fn superlink_and_supernode_containers_register_die_and_stop_cleanly() {
    let mut w = World::new();
    write_net_files(&w);
    let link_ip: IpAddr = format!("{SUBNET}.1").parse().unwrap();
    let sans = tls::server_sans(&[link_ip], None, &[]);
    let files = tls::superlink_generated(&w.path("ca-state"), &w.path("tls"), &sans, ContainerUser::FLOWER)
        .unwrap()
        .files;
    let ca_pem = std::fs::read_to_string(&files.ca_cert).unwrap();

    // SuperLink (TLS) in fi-im-l.
    let id_link = format!("fi-im-sl-{}", std::process::id());
    let spec = superlink_spec(&w, &id_link, &files);
    let t0 = Instant::now();
    let (link_pid, link_out, create, start) = w.run(&spec, NS_LINK, "superlink");
    eprintln!("TIMING superlink runc create {:.3}s start {:.3}s", create.as_secs_f64(), start.as_secs_f64());
    assert_eq!(w.state(&id_link).status, Status::Running);
    let addr = SocketAddr::new(link_ip, flower::SUPERLINK_PORT);
    let healthy = wait_healthy(NS_LINK, addr, Some(ProbeTls { ca_pem: ca_pem.clone(), server_name: link_ip.to_string() }), link_pid, t0);
    eprintln!("TIMING superlink runc create -> https /health {:.3}s", healthy.as_secs_f64());
    // The same name over loopback (SAN 127.0.0.1), and plain HTTP is refused by TLS.
    let lo = SocketAddr::new("127.0.0.1".parse().unwrap(), flower::SUPERLINK_PORT);
    let tls_lo = ProbeTls { ca_pem: ca_pem.clone(), server_name: "127.0.0.1".into() };
    assert_eq!(in_netns(NS_LINK, move || flower::probe(lo, Some(&tls_lo), Duration::from_secs(20))), Ok(()));
    let plain = in_netns(NS_LINK, move || flower::probe(lo, None, Duration::from_secs(20)));
    assert!(plain.is_err(), "plain http to the TLS port must fail");

    // config.json really applied: Flower runs as 49999 with no capabilities, no new
    // privileges, on a read-only root, its database on the state directory.
    let (sl_pid, _) = flower_child(link_pid, "flower-superlink");
    let status = std::fs::read_to_string(format!("/proc/{sl_pid}/status")).unwrap();
    for want in ["Uid:\t49999\t49999\t49999\t49999", "Gid:\t49999\t49999\t49999\t49999", "NoNewPrivs:\t1",
                 "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "CapPrm:\t0000000000000000"] {
        assert!(status.lines().any(|l| l == want), "{want:?} not in /proc/{sl_pid}/status:\n{status}");
    }
    let root_mount = mount_options(sl_pid, "/");
    assert!(root_mount.split(',').any(|o| o == "ro"), "container root is not read-only: {root_mount}");
    assert!(mount_options(sl_pid, "/tmp").split(',').any(|o| o == "rw"));
    assert!(w.path(&format!("state-{id_link}/state.db")).is_file(), "the SuperLink database is on the state directory");

    // SuperNode in fi-im-n, trusting the CA; a node-config value with shell metacharacters.
    let id_node = format!("fi-im-sn-{}", std::process::id());
    let node_config = "partition-id=0 num-partitions=2 label=\"x; rm -rf / $(id)\"".to_string();
    let args = flower::supernode_args(&SuperNodeArgs {
        superlink: format!("{link_ip}:{}", flower::SUPERLINK_PORT),
        root_certificates: Some(flower::supernode_ca_path()),
        auth_private_key: None,
        node_config: Some(node_config.clone()),
        max_retries: None,
        max_wait_time: None,
        runtime_port: flower::SUPERNODE_RUNTIME_PORT,
        isolation: Isolation::Subprocess,
    });
    let mut node = Spec::new(&id_node, &w.rootfs, args);
    node.certs = vec![container::BindMount {
        source: files.ca_cert.clone(),
        destination: flower::supernode_ca_path(),
        read_only: true,
    }];
    node.data_dir = Some(w.user_dir("data"));
    std::fs::write(w.path("data/part-0.csv"), "x,y\n1,0\n").unwrap();
    node.resolv_conf = Some(w.path("resolv.conf"));
    node.hosts = Some(w.path("hosts"));
    fit_host(&mut node);
    let (node_pid, node_out, _, _) = w.run(&node, NS_NODE, "supernode");
    let line = wait_for_line(&node_out, "SuperNode ID", node_pid);
    eprintln!("registered: {line}");
    wait_for_line(&link_out, "Activated node_id", link_pid);

    // The hostile value reached Flower as one literal argument.
    let (flower_pid, argv) = flower_child(node_pid, "flower-supernode");
    assert!(argv.contains(&format!("--node-config={node_config}")), "{argv:?}");

    // Kill the Flower process inside the container: the container ends, its init is reaped.
    nix::sys::signal::kill(Pid::from_raw(flower_pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = wait_exit(node_pid, GRACE).expect("container init did not exit after Flower was killed");
    eprintln!("supernode container init exited: {status:?}");
    assert!(matches!(status, WaitStatus::Exited(_, 137)), "tini reports Flower's SIGKILL as 128+9: {status:?}");
    assert_eq!(w.state(&id_node).status, Status::Stopped);
    runc(&w.runc, w.runc.delete(&id_node, false), None, None);

    // A leftover container with our id (created, never started) is cleaned at "boot".
    let bundle = container::write_bundle(&w.path("bundle-stale"), &node).unwrap();
    runc(&w.runc, w.runc.create(&bundle, &bundle.join("pid"), &id_node), Some(NS_NODE), None);
    let stale_pid: i32 = std::fs::read_to_string(bundle.join("pid")).unwrap().trim().parse().unwrap();
    let removed = container::cleanup_stale(&w.runc, &id_node, runc_blocking).unwrap().expect("the stale container was found");
    assert_eq!(removed.status, Status::Created);
    assert!(wait_exit(Pid::from_raw(stale_pid), GRACE).is_some(), "the stale init was killed and reaped");
    assert_eq!(container::cleanup_stale(&w.runc, &id_node, runc_blocking).unwrap(), None);

    // SIGTERM the SuperLink within the grace period; nothing is left.
    let t = Instant::now();
    let status = w.stop(&id_link, link_pid);
    eprintln!("superlink stopped in {:.1}s: {status:?}", t.elapsed().as_secs_f64());
    assert!(matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)));
    assert!(t.elapsed() < GRACE, "SuperLink did not stop on TERM within the grace period");
    assert_eq!(w.list(), vec![], "runc list is empty");
    std::thread::sleep(Duration::from_secs(1));
    reap_all();
    assert_eq!(zombies(), Vec::<i32>::new(), "no zombies");
    assert!(link_out.lock().unwrap().lines().any(|l| l.starts_with("superlink: ")));
}

#[test]
#[ignore = "needs root, runc and `make image` (run: make image-test)"]
fn superlink_start_timings() {
    let mut w = World::new();
    write_net_files(&w);
    let link_ip: IpAddr = format!("{SUBNET}.1").parse().unwrap();
    let sans = tls::server_sans(&[link_ip], None, &[]);
    let files = tls::superlink_generated(&w.path("ca-state"), &w.path("tls"), &sans, ContainerUser::FLOWER).unwrap().files;
    let ca_pem = std::fs::read_to_string(&files.ca_cert).unwrap();
    let runs: usize = std::env::var("FI_TIMING_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let (mut creates, mut starts, mut healths) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let id = format!("fi-im-t{i}-{}", std::process::id());
        let spec = superlink_spec(&w, &id, &files);
        let (pid, _out, create, start) = w.run(&spec, NS_LINK, "superlink");
        let after_start = Instant::now();
        let tls = ProbeTls { ca_pem: ca_pem.clone(), server_name: link_ip.to_string() };
        let health = wait_healthy(NS_LINK, SocketAddr::new(link_ip, flower::SUPERLINK_PORT), Some(tls), pid, after_start);
        w.stop(&id, pid);
        creates.push(create.as_secs_f64());
        starts.push(start.as_secs_f64());
        healths.push(health.as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "TIMING {runs} runs: runc create median {:.3}s {creates:?}; runc start median {:.3}s {starts:?}; \
         runc start -> https /health median {:.2}s {healths:?}",
        median(&mut creates.clone()),
        median(&mut starts.clone()),
        median(&mut healths.clone())
    );
    assert_eq!(w.list(), vec![]);
    reap_all();
    assert_eq!(zombies(), Vec::<i32>::new());
}
