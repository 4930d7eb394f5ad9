//! `flower-init supervise` as PID 1 of a PID namespace (issue #3): the built binary under
//! `unshare --pid --fork --mount-proc --kill-child`, so it reaps every orphan of the namespace
//! and nothing it does can reach the host's processes.
//!
//! `#[ignore]`d: root only (unshare). Run with `make supervisor-test`, or
//! `cargo test --test supervise -- --ignored`. Loopback and ephemeral ports only. As a test it
//! may wait on processes directly. Bounds are generous (a loaded 2-core machine); the only time
//! checks are "within grace + slack".

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const START: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(120);

/// One `flower-init supervise` run; killed (with its namespace) when dropped.
struct Run {
    unshare: Child,
    /// flower-init's pid as the host sees it (signals go there: unshare does not forward);
    /// None if it was gone already when we looked.
    init: Option<i32>,
    health: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn collect(r: impl Read + Send + 'static, into: Arc<Mutex<String>>, echo: &'static str) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            eprintln!("{echo}: {line}");
            let mut s = into.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
}

fn wait_for(what: &str, bound: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + bound;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Start `supervise OPTS -- sh -c SCRIPT` in a new PID namespace; returns once the health
/// port is listening.
fn start(opts: &[&str], script: &str) -> Run {
    start_ignoring(opts, script, &[])
}

/// [`start`], with `ignored` signals set to SIG_IGN where flower-init is started (as `nohup`
/// does with SIGHUP): it inherits that, and so would the command without the reset.
fn start_ignoring(opts: &[&str], script: &str, ignored: &'static [i32]) -> Run {
    use std::os::unix::process::CommandExt;
    assert!(nix::unistd::geteuid().is_root(), "needs root: unshare --pid (run `make supervisor-test` as root)");
    let mut command = Command::new("unshare");
    // SAFETY: signal(2) only, async-signal-safe, in the forked child before exec.
    unsafe {
        command.pre_exec(move || {
            for s in ignored {
                libc::signal(*s, libc::SIG_IGN);
            }
            Ok(())
        });
    }
    let mut unshare = command
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", env!("CARGO_BIN_EXE_flower-init"), "supervise"])
        .args(["--health-addr", "127.0.0.1", "--health-port", "0"])
        .args(opts)
        .args(["--", "/bin/sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start unshare");
    let (stdout, stderr) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
    collect(unshare.stdout.take().unwrap(), stdout.clone(), "cmd");
    collect(unshare.stderr.take().unwrap(), stderr.clone(), "init");
    let mut health = None;
    wait_for("the health port", START, || {
        health = stderr.lock().unwrap().lines().find_map(|l| l.split("health: listening on ").nth(1)?.trim().parse().ok());
        health.is_some()
    });
    let children = format!("/proc/{0}/task/{0}/children", unshare.id());
    let init = std::fs::read_to_string(&children).ok().and_then(|c| c.split_whitespace().next()?.parse().ok());
    Run { unshare, init, health: health.unwrap(), stdout, stderr }
}

impl Run {
    fn signal(&self, sig: i32) {
        let init = self.init.expect("flower-init's pid");
        // SAFETY: kill(2) with integers; `init` is the live child of our unshare child.
        assert_eq!(unsafe { libc::kill(init, sig) }, 0, "kill {init}");
    }

    fn wait_stdout(&self, line: &str) {
        wait_for(&format!("{line:?} from the command"), START, || self.stdout.lock().unwrap().lines().any(|l| l == line));
    }

    /// The exit code of flower-init (unshare passes it on) and how long it took from now.
    fn exit_code(&mut self, bound: Duration) -> (i32, Duration) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.unshare.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // let the readers drain
                return (st.code().unwrap_or_else(|| panic!("unshare: {st}")), start.elapsed());
            }
            assert!(start.elapsed() < bound, "flower-init did not exit within {bound:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// `GET path` on a fresh connection: (status code, body).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

/// `get`, retried a few times: a probe, like a load balancer's, tolerates a lost connection.
fn probe(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut last = None;
    for _ in 0..5 {
        match get(addr, path) {
            Ok(r) if r.0 != 0 => return r,
            other => last = Some(other),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no answer on {addr}{path}: {last:?}");
}

/// An honest but slow probe from 127.0.0.2 (not the flood's 127.0.0.1): connect, wait, then
/// `GET /health`; the status code and body, or what went wrong.
fn slow_probe(addr: SocketAddr, wait: Duration) -> Result<(u16, String), String> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, socket};
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(|e| e.to_string())?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    bind(raw, &SockaddrStorage::from(SocketAddr::from(([127, 0, 0, 2], 0)))).map_err(|e| format!("bind: {e}"))?;
    connect(raw, &SockaddrStorage::from(addr)).map_err(|e| format!("connect: {e}"))?;
    let mut s = TcpStream::from(fd);
    std::thread::sleep(wait);
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| format!("read: {e}"))?;
    let code = text.get(9..12).and_then(|c| c.parse().ok()).ok_or(format!("no answer: {text:?}"))?;
    Ok((code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

/// "reaped N orphan(s)" from flower-init's last line.
fn orphans_reaped(log: &str) -> u64 {
    log.lines().rev().find_map(|l| l.split("reaped ").nth(1)?.split(' ').next()?.parse().ok()).expect("orphan count in log")
}

/// The command leaves 1,000 orphans to PID 1, then watches /proc (of the namespace) until no
/// orphan and no zombie is left: everything was reaped.
#[test]
#[ignore = "root: PID namespace (make supervisor-test)"]
fn a_thousand_orphans_are_all_reaped() {
    let script = r#"
        i=0; while [ $i -lt 1000 ]; do (sleep 0.3 &); i=$((i+1)); done
        tries=0
        while :; do
            left=0; zombies=0
            for d in /proc/[0-9]*; do
                read -r line 2>/dev/null < $d/stat || continue
                set -- ${line##*) }
                [ "$1" = Z ] && zombies=$((zombies+1))
                [ "${d#/proc/}" != 1 ] && [ "${d#/proc/}" != $$ ] && [ "$2" = 1 ] && left=$((left+1))
            done
            [ $left -eq 0 ] && [ $zombies -eq 0 ] && break
            tries=$((tries+1)); [ $tries -ge 600 ] && break
            sleep 0.2
        done
        echo "orphans-left=$left zombies=$zombies"
        [ $left -eq 0 ] && [ $zombies -eq 0 ]
    "#;
    let mut run = start(&[], script);
    let (code, _) = run.exit_code(Duration::from_secs(300));
    let out = run.stdout.lock().unwrap().clone();
    assert!(out.contains("orphans-left=0 zombies=0"), "stdout: {out}");
    assert_eq!(code, 0);
    assert!(orphans_reaped(&run.log()) >= 1000, "{}", run.log());
}

/// USR1 and HUP go to the command; its exit code is ours. A signal death is 128 + n; a
/// command that does not exist is 127.
#[test]
#[ignore = "root: PID namespace (make supervisor-test)"]
fn signals_are_forwarded_and_the_exit_code_passed_on() {
    // Started the way `nohup` starts things (SIGHUP and SIGUSR1 ignored): the command still
    // gets default dispositions, so its traps work (make test under nohup hung here once).
    let script = "trap 'echo got-usr1' USR1; trap 'echo got-hup; exit 42' HUP; echo ready; while :; do sleep 0.1; done";
    let mut run = start_ignoring(&[], script, &[libc::SIGHUP, libc::SIGUSR1]);
    run.wait_stdout("ready");
    run.signal(libc::SIGUSR1);
    run.wait_stdout("got-usr1");
    run.signal(libc::SIGHUP);
    assert_eq!(run.exit_code(EXIT).0, 42);
    run.wait_stdout("got-hup");

    let mut run = start(&[], "echo ready; kill -KILL $$");
    assert_eq!(run.exit_code(EXIT).0, 137);

    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", env!("CARGO_BIN_EXE_flower-init"), "supervise", "--no-health", "--"])
        .arg("/nonexistent/cmd")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("start cmd"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// SIGTERM: the command gets SIGTERM; one that ignores it is SIGKILLed (with its process group)
/// after --grace, and flower-init exits with 137 within grace + slack. One that handles it
/// exits at once with its own code.
#[test]
#[ignore = "root: PID namespace (make supervisor-test)"]
fn sigterm_stops_the_command_within_the_grace() {
    let grace = 2;
    let mut run = start(&["--grace", &grace.to_string()], "trap '' TERM; sleep 1000 & echo ready; while :; do sleep 0.1; done");
    run.wait_stdout("ready");
    run.signal(libc::SIGTERM);
    let (code, took) = run.exit_code(EXIT);
    assert_eq!(code, 137, "{}", run.log());
    assert!(took < Duration::from_secs(grace + 60), "took {took:?}");
    assert!(run.log().contains("still running after 2s: SIGKILL"), "{}", run.log());

    let mut run = start(&["--grace", "100"], "trap 'echo bye; exit 3' TERM; echo ready; while :; do sleep 0.1; done");
    run.wait_stdout("ready");
    run.signal(libc::SIGTERM);
    let (code, took) = run.exit_code(EXIT);
    assert_eq!(code, 3, "{}", run.log());
    assert!(took < Duration::from_secs(100), "waited for the whole grace: {took:?}");
    run.wait_stdout("bye");
}

/// 2,000 connections (half bare, half slow-loris partial requests) held open on the health
/// port while the command leaves orphans and exits: health still answers during the flood,
/// the exit is reaped and passed on, the orphans are reaped. During the flood, 40 honest
/// probes from another address (a hypervisor's, a load balancer's) connect, wait 10-50 ms and
/// only then send: every one is answered (issue #14 item 5: before, the flood's newer
/// connections evicted 4-9 of them). Counts only; no timing bound.
#[test]
#[ignore = "root: PID namespace (make supervisor-test)"]
fn a_connection_flood_does_not_stall_reaping_or_health() {
    raise_fd_limit(4096 + 256);
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let script = format!(
        "echo ready; while [ ! -e {} ]; do sleep 0.1; done; i=0; while [ $i -lt 100 ]; do (sleep 0.2 &); i=$((i+1)); done; sleep 1; exit 7",
        go.display()
    );
    let mut run = start(&[], &script);
    run.wait_stdout("ready");
    let mut flood = Vec::new();
    let mut honest = Vec::new();
    for i in 0..2000 {
        if i % 50 == 25 {
            let (addr, wait) = (run.health, Duration::from_millis(10 + (i as u64 / 50) % 41));
            honest.push(std::thread::spawn(move || slow_probe(addr, wait)));
        }
        let mut s = TcpStream::connect_timeout(&run.health, Duration::from_secs(30)).expect("bare connect must succeed");
        if i % 2 == 1 {
            let _ = s.write_all(b"GET /hea"); // and never the rest
        }
        flood.push(s);
    }
    let answers: Vec<Result<(u16, String), String>> = honest.into_iter().map(|t| t.join().unwrap()).collect();
    let answered = answers.iter().filter(|a| matches!(a, Ok((200, b)) if b == "ready\n")).count();
    assert_eq!(answered, 40, "honest probes answered: {answered} of 40: {answers:?}");
    let (code, body) = probe(run.health, "/health");
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let (_, status) = probe(run.health, "/status");
    let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(doc["health_port"]["accepted"].as_u64().unwrap() >= 2000, "{doc}");
    assert!(doc["health_port"]["evicted"].as_u64().unwrap() > 0, "{doc}");
    assert!(doc["health_port"]["answered"].as_u64().unwrap() >= 41, "{doc}");
    std::fs::write(&go, "").unwrap();
    let (code, _) = run.exit_code(EXIT);
    assert_eq!(code, 7, "{}", run.log());
    assert!(orphans_reaped(&run.log()) >= 100, "{}", run.log());
    drop(flood);
}

/// /health is 200 while the command runs and 503 "shutting down" while it is being stopped;
/// /status names the command's pid; unknown paths are 404.
#[test]
#[ignore = "root: PID namespace (make supervisor-test)"]
fn health_is_200_while_running_and_503_while_stopping() {
    let mut run = start(&["--grace", "10"], "trap '' TERM; echo ready; while :; do sleep 0.1; done");
    run.wait_stdout("ready");
    assert_eq!(probe(run.health, "/health"), (200, "ready\n".to_string()));
    let (code, status) = probe(run.health, "/status");
    let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!((code, doc["phase"].as_str()), (200, Some("ready")));
    assert!(doc["sections"]["supervise"]["pid"].as_i64().is_some(), "{doc}");
    assert_eq!(probe(run.health, "/nope").0, 404);
    run.signal(libc::SIGTERM);
    let mut seen = None;
    wait_for("/health 503 during the grace", Duration::from_secs(10), || {
        seen = get(run.health, "/health").ok();
        seen.as_ref().is_some_and(|(c, _)| *c == 503)
    });
    assert_eq!(seen.unwrap().1, "shutting down\n");
    assert_eq!(run.exit_code(EXIT).0, 137);
}

fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read or write one live local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            assert!(lim.rlim_max >= want, "RLIMIT_NOFILE hard limit {} < {want}", lim.rlim_max);
            lim.rlim_cur = want;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}
