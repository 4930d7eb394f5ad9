//! Issue #14 item 5, end to end: `flower-init boot` (service mode: no PID-1 duties, safe on a
//! host) given a context of 400,000 bad lines (under the 1 MiB cap) fails at the `context`
//! step and stays up answering the health port. Before the fix that made a 30 MB `/health`
//! and a 63 MB `/status`, rendered per request inside the poll loop. Now: a one-line
//! `/health`, a bounded `/status` rendered once, and every 404 answered. Sizes and counts
//! only; no timing bounds beyond "answered at all".

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The boot, killed when dropped.
struct Boot(Child);

impl Drop for Boot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request; the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read the answer");
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole answer") + 4;
    let code = String::from_utf8_lossy(&all[9..12]).parse().unwrap();
    (code, all[head_end..].to_vec())
}

#[test]
fn four_hundred_thousand_bad_lines_give_bounded_answers() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    let text = "x\n".repeat(400_000);
    assert!(text.len() < 1 << 20);
    std::fs::write(ctx.join("context.sh"), &text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_flower-init"))
        .args(["boot", "--health-addr", "127.0.0.1", "--health-port", "0", "--context"])
        .arg(&ctx)
        .args(["--run-dir"])
        .arg(dir.path().join("run"))
        .args(["--state"])
        .arg(dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flower-init boot");
    let mut boot = Boot(child);
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    let stderr = boot.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let until = Instant::now() + Duration::from_secs(120);
    let (addr, failed) = loop {
        let l = log.lock().unwrap().clone();
        let addr: Option<SocketAddr> = l.lines().find_map(|l| l.split("health port: http://").nth(1)?.split('/').next()?.parse().ok());
        if let (Some(a), true) = (addr, l.contains("staying up")) {
            break (a, l);
        }
        assert!(Instant::now() < until, "no failed boot with a health port:\n{l}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The log names the first errors and counts the rest, no more.
    assert!(failed.len() < 64 * 1024, "log of {} bytes", failed.len());
    assert!(failed.contains("and 399950 more errors from this line on (not shown)"), "{failed}");

    let (code, health) = get(addr, "/health");
    assert_eq!(code, 503);
    assert!(health.len() < 1024, "/health body of {} bytes", health.len());
    let health = String::from_utf8(health).unwrap();
    assert!(health.starts_with("failed at context: read the context in ") && health.ends_with(" (more in /status)\n"), "{health}");

    let mut renders = Vec::new();
    for _ in 0..20 {
        let (code, status) = get(addr, "/status");
        assert_eq!(code, 200);
        assert!(status.len() < 64 * 1024, "/status body of {} bytes", status.len());
        let doc: serde_json::Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(doc["phase"], "failed");
        renders.push(doc["health_port"]["status_renders"].as_u64().unwrap());
    }
    // The failed boot no longer changes: the document was rendered once for all 20 requests.
    assert_eq!(renders.first(), renders.last(), "{renders:?}");

    for _ in 0..200 {
        let (code, body) = get(addr, "/nope");
        assert_eq!((code, body.as_slice()), (404, &b"not found\n"[..]));
    }
    assert!(boot.0.try_wait().unwrap().is_none(), "the boot exited");
}
