//! The gateway (issue #10) in front of real Flower 1.42: a TLS SuperLink bound to 127.0.0.1,
//! `flower-init gateway` on 127.0.0.2, two real SuperNodes training the tinyfl app through
//! it while it is attacked (2,000 idle TLS connections, slow-loris clients, oversized heads,
//! a 10 MB body to a Control path); Control stays closed on the Fleet port and opens on the
//! Control port to allowed sources only, with the real `flwr` CLI. Plus plain HTTP
//! (FL_TLS_ENABLED=NO), and the benchmark against direct access.
//!
//! `#[ignore]`d: they need a venv with Flower. `make gateway-test` runs them (FLOWER_VENV,
//! default: the venv `make venv` builds); `cargo test --test gateway_flower -- --ignored`
//! falls back to /work/main/build/venv. The gateway binary is GATEWAY_BIN (the make target
//! passes the static release build), else cargo's own build of flower-init.
//! Loopback only (127.0.0.x), ephemeral ports; every process is killed at the end, by process
//! group, also when a test fails. As a test it may spawn and wait on processes directly.

use flower_init::tls::{self, ContainerUser};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Flower's Python start-up on a loaded 2-core machine can take minutes.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// A 2-round tinyfl run takes about 30 s here; allow for a machine shared by many.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);
const POLL: Duration = Duration::from_millis(250);
const IO: Duration = Duration::from_secs(60);
/// Idle connections held open against the gateway during training.
const IDLE_CONNECTIONS: usize = 2000;
/// The gateway's RSS must stay below this (see docs/gateway.md "Memory"): 4,096 connections
/// (the connection limit) at the ~9 KiB each measured, plus 256 requests in flight (the
/// worker limit) at ~100 KiB of buffers each, is under 60 MiB. Measured with 2,000 idle TLS
/// connections: about 19 MiB.
const RSS_BOUND_KIB: u64 = 64 * 1024;

// ---- processes ------------------------------------------------------------------------------

/// The venv's bin directory: FLOWER_VENV, else /work/main/build/venv; fails clearly.
fn venv_bin() -> PathBuf {
    let venv = std::env::var_os("FLOWER_VENV").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/work/main/build/venv"));
    let bin = venv.join("bin");
    for tool in ["flower-superlink", "flower-supernode", "flower-superexec", "flwr", "python3"] {
        assert!(
            bin.join(tool).is_file(),
            "FLOWER_VENV={}: no {tool} in {} (run `make venv`, or point FLOWER_VENV at a venv with flwr 1.42.0)",
            venv.display(),
            bin.display()
        );
    }
    bin
}

fn gateway_bin() -> PathBuf {
    std::env::var_os("GATEWAY_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_flower-init")))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Let this test process hold thousands of sockets.
fn raise_fd_limit() {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write one rlimit owned here.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
        rl.rlim_cur = rl.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0);
    }
    assert!(rl.rlim_cur as usize > IDLE_CONNECTIONS + 500, "the open-files hard limit {} is too low", rl.rlim_max);
}

/// A process in its own process group with its output in a log file; dropping it kills the
/// whole group (flower-superlink spawns flower-superexec, which spawns apps).
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    fn spawn(name: &str, program: &Path, args: &[&str], dir: &Path, bin: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let child = Command::new(program)
            .args(args)
            .env("PATH", path)
            .env("FLWR_HOME", dir.join("flwr-home"))
            .env("FLWR_TELEMETRY_ENABLED", "0")
            .env("FLWR_DISABLE_UPDATE_CHECK", "1")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({}): {e}", program.display()));
        Proc { name: name.to_string(), child, log, status: None }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    fn assert_alive(&mut self) {
        if let Some(st) = self.exited() {
            panic!("{} exited ({st}) early; its log:\n{}", self.name, self.log_text());
        }
    }

    fn wait_for(&mut self, what: &str, timeout: Duration, mut done: impl FnMut(&Proc) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            self.assert_alive();
            assert!(Instant::now() < deadline, "timed out waiting for {what}; {} log:\n{}", self.name, self.log_text());
            std::thread::sleep(POLL);
        }
    }

    /// Ask politely (SIGTERM to the group), wait up to 20 s; the exit status.
    fn terminate(&mut self) -> Option<ExitStatus> {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        self.exited()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        assert!(pgid > 1, "refusing to signal process group {pgid}");
        let group = nix::unistd::Pid::from_raw(pgid);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        if self.exited().is_none() {
            let _ = self.child.wait();
        }
    }
}

/// The gateway's stdout: bound addresses, then a `stats {json}` line a second.
fn gateway_addr(gw: &mut Proc, kind: &str) -> SocketAddr {
    let prefix = format!("listening {kind} ");
    gw.wait_for("the gateway's listening line", START_TIMEOUT, |p| p.log_text().contains(&prefix));
    let text = gw.log_text();
    text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap().trim().parse().unwrap()
}

fn last_stats(gw: &Proc) -> serde_json::Value {
    let text = gw.log_text();
    let line = text.lines().rev().find_map(|l| l.strip_prefix("stats-final ").or_else(|| l.strip_prefix("stats "))).unwrap_or("{}");
    serde_json::from_str(line).unwrap_or_default()
}

/// The largest `connections.open` the gateway reported.
fn max_open(gw: &Proc) -> u64 {
    gw.log_text()
        .lines()
        .filter_map(|l| l.strip_prefix("stats "))
        .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .filter_map(|v| v["connections"]["open"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Samples a process's VmRSS every 100 ms and keeps the maximum (KiB).
struct RssWatch {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let (max, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (m, s) = (max.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(SeqCst) {
                if let Some(kib) = rss_kib(pid) {
                    m.fetch_max(kib, SeqCst);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssWatch { max, stop }
    }

    fn max_kib(&self) -> u64 {
        self.max.load(SeqCst)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

// ---- TLS clients ----------------------------------------------------------------------------

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn client_config(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TCP connection from a chosen 127.0.0.x source address (as a SuperNode VM would come
/// from its own address).
fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let SocketAddr::V4(dst) = dst else { panic!("IPv4 only") };
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0)))?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(dst))?;
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(IO))?;
    s.set_write_timeout(Some(IO))?;
    Ok(s)
}

fn tls_over(sock: TcpStream, cfg: &Arc<rustls::ClientConfig>, dst: SocketAddr) -> Tls {
    let name = ServerName::IpAddress(dst.ip().into());
    rustls::StreamOwned::new(rustls::ClientConnection::new(cfg.clone(), name).unwrap(), sock)
}

/// Send `raw` and return the status line of the answer (or the I/O error).
fn request(tls: &mut Tls, raw: &[u8]) -> Result<String, String> {
    tls.write_all(raw).and_then(|_| tls.flush()).map_err(|e| format!("write: {e}"))?;
    status_line(tls)
}

/// Read up to the end of a response head; return its first line. Reads TLS records without
/// writing anything (rustls's Stream would first try to send what a failed write left
/// queued, and fail on the reset instead of reading the answer already received).
fn status_line(tls: &mut Tls) -> Result<String, String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.conn.reader().read(&mut byte) {
            Ok(0) => return Err(format!("closed after {} bytes", head.len())),
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                match tls.conn.read_tls(&mut tls.sock) {
                    Ok(0) => return Err(format!("closed after {} bytes", head.len())),
                    Ok(_) => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
                tls.conn.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok(String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string())
}

/// The head of a POST whose body the caller sends (or not).
fn post(path: &str, body_len: usize) -> Vec<u8> {
    format!("POST {path} HTTP/1.1\r\nHost: superlink\r\nContent-Type: application/protobuf\r\nContent-Length: {body_len}\r\n\r\n").into_bytes()
}

// ---- Flower helpers -------------------------------------------------------------------------

struct Pki {
    files: tls::ContainerFiles,
    ca_pem: Vec<u8>,
}

/// The SuperLink certificates exactly as boot makes them, for 127.0.0.1 and the "NIC"
/// address 127.0.0.2.
fn pki(dir: &Path) -> Pki {
    let sans = tls::server_sans(&["127.0.0.2".parse().unwrap()], Some("superlink-gateway-test"), &[]);
    let me = ContainerUser { uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() };
    let sl = tls::superlink_generated(&dir.join("state"), &dir.join("run"), &sans, me).unwrap();
    println!("{}", sl.summary());
    Pki { ca_pem: sl.ca_pem.clone().into_bytes(), files: sl.files }
}

/// A SuperLink on 127.0.0.1 only, as the appliance runs it behind the gateway.
fn start_superlink(bin: &Path, dir: &Path, pki: Option<&Pki>) -> (Proc, u16) {
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["--host", "127.0.0.1", "--port", &port_s, "--disable-runtime-dependency-installation"];
    let files: Vec<String> = match pki {
        Some(p) => vec![
            p.files.ca_cert.display().to_string(),
            p.files.server_cert.display().to_string(),
            p.files.server_key.display().to_string(),
        ],
        None => vec![],
    };
    if pki.is_some() {
        args.extend(["--ssl-ca-certfile", &files[0], "--ssl-certfile", &files[1], "--ssl-keyfile", &files[2]]);
    } else {
        args.push("--insecure");
    }
    let mut sl = Proc::spawn("superlink", &bin.join("flower-superlink"), &args, dir, bin);
    sl.wait_for("`Uvicorn running` in the SuperLink log", START_TIMEOUT, |p| p.log_text().contains("Uvicorn running on"));
    (sl, port)
}

fn start_supernode(bin: &Path, dir: &Path, i: usize, superlink: SocketAddr, ca: Option<&Path>) -> Proc {
    let (port, node_config, addr) = (free_port().to_string(), format!("partition-id={i} num-partitions=2"), superlink.to_string());
    let mut args = vec!["--superlink", &addr, "--host", "127.0.0.1", "--port", &port, "--node-config", &node_config];
    let ca_s = ca.map(|c| c.display().to_string()).unwrap_or_default();
    match ca {
        Some(_) => args.extend(["--root-certificates", &ca_s]),
        None => args.push("--insecure"),
    }
    Proc::spawn(&format!("supernode{i}"), &bin.join("flower-supernode"), &args, dir, bin)
}

/// `$FLWR_HOME/config.toml` with one connection per (name, address).
fn write_flwr_config(dir: &Path, connections: &[(&str, SocketAddr)], ca: Option<&Path>) {
    let home = dir.join("flwr-home");
    fs::create_dir_all(&home).unwrap();
    let mut toml = format!("[superlink]\ndefault = \"{}\"\n", connections[0].0);
    for (name, addr) in connections {
        toml.push_str(&format!("\n[superlink.{name}]\naddress = \"{addr}\"\n"));
        match ca {
            Some(ca) => toml.push_str(&format!("root-certificates = \"{}\"\n", ca.display())),
            None => toml.push_str("insecure = true\n"),
        }
    }
    fs::write(home.join("config.toml"), toml).unwrap();
}

/// Run the `flwr` CLI; its JSON output (`--format json`). flwr exits 0 even on failure, so
/// callers look at `success`.
fn flwr(bin: &Path, dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin.join("flwr"))
        .args(args)
        .args(["--format", "json"])
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("FLWR_HOME", dir.join("flwr-home"))
        .env("FLWR_TELEMETRY_ENABLED", "0")
        .env("FLWR_DISABLE_UPDATE_CHECK", "1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find('{').unwrap_or(0);
    serde_json::from_str(&text[start..])
        .unwrap_or_else(|e| panic!("flwr {args:?}: not JSON ({e}): {text}\nstderr: {}", String::from_utf8_lossy(&out.stderr)))
}

/// The tinyfl app, copied so that `flwr run` may write next to it.
fn app_copy(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tinyfl");
    let dst = dir.join("tinyfl");
    for sub in ["", "tinyfl"] {
        fs::create_dir_all(dst.join(sub)).unwrap();
        for e in fs::read_dir(src.join(sub)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                fs::copy(e.path(), dst.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    dst
}

fn run_ids(v: &serde_json::Value) -> Vec<String> {
    v["runs"].as_array().map(|a| a.iter().filter_map(|r| r["run-id"].as_str().map(str::to_string)).collect()).unwrap_or_default()
}

// ---- the attackers --------------------------------------------------------------------------

/// What the abusive clients saw, for the assertions.
#[derive(Default)]
struct Abuse {
    idle_open: AtomicUsize,
    loris_answers: Mutex<Vec<String>>,
    oversized: Mutex<Vec<String>>,
    control_10mb: Mutex<Option<String>>,
}

/// 2,000 TLS connections, each after one `GET /health`, held open.
fn open_idle(fleet: SocketAddr, cfg: &Arc<rustls::ClientConfig>, abuse: &Abuse) -> Vec<Tls> {
    let mut held = Vec::with_capacity(IDLE_CONNECTIONS);
    for i in 0..IDLE_CONNECTIONS {
        // Spread over a few source addresses, as many clients would be.
        let src = Ipv4Addr::new(127, 0, 1, (i % 50) as u8 + 1);
        let mut tls = tls_over(connect_from(src, fleet).unwrap(), cfg, fleet);
        let status = request(&mut tls, b"GET /health HTTP/1.1\r\nHost: superlink\r\n\r\n").unwrap();
        assert!(status.contains(" 200"), "idle connection {i}: {status}");
        held.push(tls);
        abuse.idle_open.fetch_add(1, SeqCst);
    }
    held
}

/// Slow-loris clients: a head trickled one byte every 500 ms, reconnecting when cut, until
/// `stop`. The gateway answers 408 after its header timeout (10 s).
fn slow_loris(fleet: SocketAddr, cfg: Arc<rustls::ClientConfig>, stop: Arc<AtomicBool>, abuse: Arc<Abuse>) {
    let head = b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: superlink\r\nContent-Type: application/protobuf\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    while !stop.load(SeqCst) {
        let Ok(sock) = connect_from(Ipv4Addr::new(127, 0, 2, 1), fleet) else { continue };
        let mut tls = tls_over(sock, &cfg, fleet);
        for b in head.iter() {
            if stop.load(SeqCst) || tls.write_all(&[*b]).and_then(|_| tls.flush()).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let answer = status_line(&mut tls).unwrap_or_else(|e| e);
        abuse.loris_answers.lock().unwrap().push(answer);
    }
}

// ---- tests ----------------------------------------------------------------------------------

#[test]
#[ignore = "needs a Flower venv: make gateway-test"]
fn supernodes_train_through_the_gateway_while_control_stays_closed() {
    raise_fd_limit();
    let bin = venv_bin();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki(dir);
    let ca = pki.files.ca_cert.clone();
    let cfg = client_config(&pki.ca_pem);

    // Flower on loopback only; the gateway on the "NIC" address 127.0.0.2.
    let (mut superlink, sl_port) = start_superlink(&bin, dir, Some(&pki));
    let direct: SocketAddr = format!("127.0.0.1:{sl_port}").parse().unwrap();
    let upstream = direct.to_string();
    let (cert, key, ca_s) = (pki.files.server_cert.display().to_string(), pki.files.server_key.display().to_string(), ca.display().to_string());
    let gw_args = [
        "gateway", "--listen", "127.0.0.2:0", "--upstream", &upstream, "--cert", &cert, "--key", &key, "--upstream-ca", &ca_s,
        "--control-listen", "127.0.0.2:0", "--control-allow", "127.0.0.1/32,127.0.0.9/32",
        // Hold the idle connections for the whole run (default: closed after 30 s idle).
        "--idle-timeout", "1800", "--stats-every", "1",
    ];
    let mut gw = Proc::spawn("gateway", &gateway_bin(), &gw_args, dir, &bin);
    let fleet = gateway_addr(&mut gw, "fleet");
    let control = gateway_addr(&mut gw, "control");
    let rss = RssWatch::start(gw.child.id());
    let rss_idle_start = rss_kib(gw.child.id()).unwrap();
    assert!(gw.log_text().contains("forwarding to Flower at https://127.0.0.1"), "{}", gw.log_text());

    write_flwr_config(dir, &[("direct", direct), ("via-fleet-port", fleet), ("via-control-port", control)], Some(&ca));

    // Two SuperNodes reach the SuperLink only through the gateway.
    let mut nodes: Vec<Proc> = (0..2).map(|i| start_supernode(&bin, dir, i, fleet, Some(&ca))).collect();
    for n in &mut nodes {
        n.wait_for("`SuperNode ID` in the SuperNode log", START_TIMEOUT, |p| p.log_text().contains("SuperNode ID"));
    }

    // 2,000 idle TLS connections before training starts, held throughout.
    let abuse = Arc::new(Abuse::default());
    let idle = open_idle(fleet, &cfg, &abuse);
    println!("{} idle TLS connections open; gateway RSS {} KiB (was {rss_idle_start} KiB)", idle.len(), rss_kib(gw.child.id()).unwrap_or(0));

    // Training, started over loopback (as boot does), 2 rounds.
    let app = app_copy(dir);
    let app_s = app.display().to_string();
    let started = flwr(&bin, dir, &["run", &app_s, "direct", "--run-config", "num-server-rounds=2"]);
    assert_eq!(started["success"], true, "{started}");
    let run_id = started["run-id"].as_str().unwrap().to_string();

    // While it trains: slow loris, oversized heads, a 10 MB body to a Control path.
    let stop = Arc::new(AtomicBool::new(false));
    let loris: Vec<_> = (0..20)
        .map(|_| {
            let (cfg, stop, abuse) = (cfg.clone(), stop.clone(), abuse.clone());
            std::thread::spawn(move || slow_loris(fleet, cfg, stop, abuse))
        })
        .collect();
    for _ in 0..5 {
        let mut tls = tls_over(connect_from(Ipv4Addr::new(127, 0, 0, 2), fleet).unwrap(), &cfg, fleet);
        let mut raw = b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: superlink\r\nX-Big: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 64 * 1024));
        raw.extend(b"\r\nContent-Length: 0\r\n\r\n");
        let answer = request(&mut tls, &raw).unwrap_or_else(|e| e);
        abuse.oversized.lock().unwrap().push(answer);
    }
    {
        // As a SuperNode VM would: from its own address, to the Fleet port, for Control.
        let sock = connect_from(Ipv4Addr::new(127, 0, 0, 2), fleet).unwrap();
        let mut tls = tls_over(sock, &cfg, fleet);
        let mut raw = post("/v1/control/start-run", 10 * 1024 * 1024);
        raw.resize(raw.len() + 10 * 1024 * 1024, 0x0a);
        // The gateway answers after the head alone, reads and drops at most 1 MiB more, then
        // closes: the rest of the write may fail with a reset. The answer is already queued
        // on this side by then, and is read first.
        let _ = tls.write_all(&raw).and_then(|_| tls.flush());
        let answer = status_line(&mut tls).unwrap_or_else(|e| e);
        *abuse.control_10mb.lock().unwrap() = Some(answer);
    }

    // The real CLI against the Fleet port: refused; no run starts.
    let refused = flwr(&bin, dir, &["run", &app_s, "via-fleet-port"]);
    assert_eq!(refused["success"], false, "{refused}");
    assert!(refused["error-message"].as_str().unwrap_or_default().contains("403"), "{refused}");
    let refused_ls = flwr(&bin, dir, &["ls", "via-fleet-port"]);
    assert_eq!(refused_ls["success"], false, "{refused_ls}");

    // The Control port: the real CLI (from 127.0.0.1, allowed) and a client bound to the
    // allowed 127.0.0.9 work; the SuperNodes' address 127.0.0.2 is refused outright.
    let via_control = flwr(&bin, dir, &["ls", "via-control-port"]);
    assert_eq!(via_control["success"], true, "{via_control}");
    assert_eq!(run_ids(&via_control), vec![run_id.clone()]);
    let mut allowed = tls_over(connect_from(Ipv4Addr::new(127, 0, 0, 9), control).unwrap(), &cfg, control);
    let status = request(&mut allowed, &post("/v1/control/list-runs", 0)).unwrap();
    assert!(status.contains(" 200"), "ListRuns from 127.0.0.9: {status}");
    let refused_src = connect_from(Ipv4Addr::new(127, 0, 0, 2), control)
        .map(|s| request(&mut tls_over(s, &cfg, control), &post("/v1/control/list-runs", 0)));
    assert!(!matches!(refused_src, Ok(Ok(_))), "127.0.0.2 reached the Control port: {refused_src:?}");

    // The run completes.
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        superlink.assert_alive();
        gw.assert_alive();
        for n in &mut nodes {
            n.assert_alive();
        }
        let ls = flwr(&bin, dir, &["ls", "direct", "--run-id", &run_id]);
        let status = ls["runs"][0]["status"].as_str().unwrap_or_default().to_string();
        if status.starts_with("finished:") {
            break status;
        }
        assert!(Instant::now() < deadline, "run {run_id} did not finish: {ls}\nSuperLink log:\n{}", superlink.log_text());
        std::thread::sleep(Duration::from_secs(3));
    };
    assert_eq!(status, "finished:completed", "SuperLink log:\n{}", superlink.log_text());
    stop.store(true, SeqCst);
    for t in loris {
        let _ = t.join();
    }

    // Exactly one run exists: the one started over loopback.
    let all = flwr(&bin, dir, &["ls", "direct"]);
    assert_eq!(run_ids(&all), vec![run_id.clone()], "{all}");
    let starts = superlink.log_text().lines().filter(|l| l.contains("POST /v1/control/start-run")).count();
    assert_eq!(starts, 1, "only the loopback start-run reached Flower");

    // What the attackers got.
    assert_eq!(abuse.idle_open.load(SeqCst), IDLE_CONNECTIONS);
    for a in abuse.oversized.lock().unwrap().iter() {
        assert!(a.contains(" 431"), "oversized head: {a}");
    }
    let c10 = abuse.control_10mb.lock().unwrap().clone().unwrap();
    assert!(c10.contains(" 403"), "10 MB to start-run: {c10}");
    let loris_answers = abuse.loris_answers.lock().unwrap().clone();
    assert!(!loris_answers.is_empty() && loris_answers.iter().all(|a| a.contains(" 408")), "slow loris: {loris_answers:?}");

    // The gateway's own account of it, and its memory.
    std::thread::sleep(Duration::from_millis(1500));
    let stats = last_stats(&gw);
    println!("gateway stats: {stats}");
    let max_open_seen = max_open(&gw);
    assert!(max_open_seen >= IDLE_CONNECTIONS as u64, "the gateway held {max_open_seen} connections at most");
    assert!(stats["requests"]["fleet"].as_u64().unwrap() > 20, "{stats}");
    assert!(stats["requests"]["control"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["rejects"]["forbidden_path"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(stats["rejects"]["head_too_large"], 5, "{stats}");
    assert_eq!(stats["rejects"]["header_timeout"].as_u64().unwrap(), loris_answers.len() as u64, "{stats}");
    assert!(stats["rejects"]["source_not_allowed"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["upstream_errors"]["total"], 0, "{stats}");
    let max_rss = rss.max_kib();
    println!("gateway RSS: {rss_idle_start} KiB at start, at most {max_rss} KiB with {max_open_seen} connections (bound {RSS_BOUND_KIB} KiB)");
    assert!(max_rss > 0 && max_rss <= RSS_BOUND_KIB, "gateway RSS {max_rss} KiB over the bound {RSS_BOUND_KIB} KiB");

    // A clean stop: SIGTERM, exit 0, final stats printed.
    drop(idle);
    let st = gw.terminate().expect("the gateway stopped");
    assert!(st.success(), "gateway exit {st}; log:\n{}", gw.log_text());
    assert!(gw.log_text().contains("stats-final "), "{}", gw.log_text());
}

#[test]
#[ignore = "needs a Flower venv: make gateway-test"]
fn without_tls_the_gateway_still_filters_and_says_so() {
    let bin = venv_bin();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_superlink, sl_port) = start_superlink(&bin, dir, None);
    let upstream = format!("127.0.0.1:{sl_port}");
    let mut gw = Proc::spawn("gateway", &gateway_bin(), &["gateway", "--listen", "127.0.0.2:0", "--upstream", &upstream, "--stats-every", "1"], dir, &bin);
    let fleet = gateway_addr(&mut gw, "fleet");
    let log = gw.log_text();
    assert!(log.contains("TLS IS DISABLED (FL_TLS_ENABLED=NO)") && log.contains("UNENCRYPTED"), "{log}");
    write_flwr_config(dir, &[("via-fleet-port", fleet)], None);

    let mut node = start_supernode(&bin, dir, 0, fleet, None);
    node.wait_for("`SuperNode ID` over plain HTTP through the gateway", START_TIMEOUT, |p| p.log_text().contains("SuperNode ID"));
    let app = app_copy(dir);
    let refused = flwr(&bin, dir, &["run", &app.display().to_string(), "via-fleet-port"]);
    assert_eq!(refused["success"], false, "{refused}");
    assert!(refused["error-message"].as_str().unwrap_or_default().contains("403"), "{refused}");
    let mut s = TcpStream::connect(fleet).unwrap();
    s.set_read_timeout(Some(IO)).unwrap();
    s.write_all(b"GET /v1/fleet/../control/list-runs HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    std::thread::sleep(Duration::from_millis(1500));
    let stats = last_stats(&gw);
    assert!(stats["requests"]["fleet"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["rejects"]["forbidden_path"].as_u64().unwrap() >= 1 && stats["rejects"]["non_canonical_target"] == 1, "{stats}");
    node.assert_alive();
}

/// BENCHMARKS (docs/gateway.md): `make gateway-bench`. A real SuperLink (TLS) and the
/// gateway; bench/gateway_flower_bench.py, a real Flower Fleet client (node auth included),
/// times the SuperNode poll (`pull-messages`) and a 10 MB `push-object`, direct and through
/// the gateway, alternating.
#[test]
#[ignore = "benchmark: make gateway-bench"]
fn bench_gateway_vs_direct() {
    let bin = venv_bin();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki(dir);
    let (_superlink, sl_port) = start_superlink(&bin, dir, Some(&pki));
    let upstream = format!("127.0.0.1:{sl_port}");
    let (cert, key, ca) = (pki.files.server_cert.display().to_string(), pki.files.server_key.display().to_string(), pki.files.ca_cert.display().to_string());
    let mut gw = Proc::spawn(
        "gateway",
        &gateway_bin(),
        &["gateway", "--listen", "127.0.0.2:0", "--upstream", &upstream, "--cert", &cert, "--key", &key, "--upstream-ca", &ca, "--log-level", "warn"],
        dir,
        &bin,
    );
    let fleet = gateway_addr(&mut gw, "fleet");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/gateway_flower_bench.py");
    let rounds = std::env::var("GATEWAY_BENCH_ROUNDS").unwrap_or_else(|_| "15".into());
    let out = Command::new(bin.join("python3"))
        .arg(&script)
        .args(["--direct", &upstream, "--gateway", &fleet.to_string(), "--ca", &ca, "--rounds", &rounds])
        .env("FLWR_TELEMETRY_ENABLED", "0")
        .env("FLWR_DISABLE_UPDATE_CHECK", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "bench failed: {}\n{}", String::from_utf8_lossy(&out.stderr), gw.log_text());
    println!("gateway RSS after the benchmark: {} KiB", rss_kib(gw.child.id()).unwrap_or(0));
}
