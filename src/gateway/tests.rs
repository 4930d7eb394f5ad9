//! The gateway end to end over real sockets on 127.0.0.1, against a small stand-in for
//! Flower that records exactly what reaches it. Real Flower is in tests/gateway_flower.rs;
//! these tests pin down framing both ways, filtering, limits and shutdown deterministically.

use super::*;
use crate::tls::{self, ContainerUser};
use crate::vocab::parse_cidr_list;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

const T: Duration = Duration::from_secs(30);

// ---- a byte-exact HTTP reader for both test sides ---------------------------------------

struct Wire<S> {
    s: S,
    buf: Vec<u8>,
}

impl<S: Read> Wire<S> {
    fn new(s: S) -> Self {
        Wire { s, buf: Vec::new() }
    }

    fn fill(&mut self) -> io::Result<bool> {
        let mut tmp = [0u8; 65536];
        match self.s.read(&mut tmp) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The next head as text, or None at a clean end of stream.
    fn head(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(i) = http::find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..i + 4]).into_owned();
                self.buf.drain(..i + 4);
                return Ok(Some(head));
            }
            if !self.fill()? {
                return if self.buf.is_empty() { Ok(None) } else { Err(io::Error::new(io::ErrorKind::UnexpectedEof, "mid-head")) };
            }
        }
    }

    fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut dec = chunked::ChunkedDecoder::default();
        let mut out = Vec::new();
        while !dec.is_done() {
            if self.buf.is_empty() && !self.fill()? {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short chunked body"));
            }
            let d = dec.decode(&self.buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if let Some(r) = d.data {
                out.extend_from_slice(&self.buf[r]);
            }
            self.buf.drain(..d.consumed);
        }
        Ok(out)
    }

    fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// A body framed as `head` says (`head_request`: no body at all).
    fn body(&mut self, head: &str, head_request: bool) -> io::Result<Vec<u8>> {
        let lower = head.to_ascii_lowercase();
        let status: u16 = lower.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) && lower.starts_with("http/") {
            return Ok(Vec::new());
        }
        if lower.contains("\r\ntransfer-encoding: chunked\r\n") {
            return self.chunked();
        }
        match header(&lower, "content-length") {
            Some(n) => self.exact(n.parse().unwrap()),
            None if lower.starts_with("http/") => self.read_to_close(),
            None => Ok(Vec::new()),
        }
    }
}

fn header(lower_head: &str, name: &str) -> Option<String> {
    lower_head.split("\r\n").find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
}

fn status_of(head: &str) -> u16 {
    head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

// ---- a stand-in for Flower ----------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Reply {
    /// 200 with Content-Length; body "ok:<n>" (n = request body length).
    Ok,
    /// 200, chunked, echoing the request body in 3 chunks.
    ChunkedEcho,
    /// 200 with no framing: the body ends when the connection closes.
    CloseDelimited,
    /// 200 with Content-Length, then close the connection (a pooled connection goes stale).
    OkThenClose,
    /// Read the request, never answer.
    Silent,
    /// Answer the first request of a connection; on the second, close without a word (what
    /// a server closing an idle keep-alive connection looks like from here).
    DropSecond,
}

struct Seen {
    head: String,
    body: Vec<u8>,
}

struct FakeFlower {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeFlower {
    fn start(reply: Reply, tls: Option<Arc<ServerConfig>>) -> FakeFlower {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let (seen, conns, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (s2, c2, st2) = (seen.clone(), conns.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st2.load(SeqCst) {
                match l.accept() {
                    Ok((sock, _)) => {
                        c2.fetch_add(1, SeqCst);
                        sock.set_nonblocking(false).unwrap();
                        sock.set_read_timeout(Some(T)).unwrap();
                        let (seen, tls) = (s2.clone(), tls.clone());
                        std::thread::spawn(move || match tls {
                            None => serve(Wire::new(sock), reply, &seen),
                            Some(cfg) => {
                                let conn = rustls::ServerConnection::new(cfg).unwrap();
                                serve(Wire::new(rustls::StreamOwned::new(conn, sock)), reply, &seen)
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeFlower { addr, seen, conns, stop }
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for FakeFlower {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

fn serve<S: Read + Write>(mut w: Wire<S>, reply: Reply, seen: &Mutex<Vec<Seen>>) {
    let mut nth = 0;
    while let Ok(Some(head)) = w.head() {
        nth += 1;
        let Ok(body) = w.body(&head, false) else { return };
        let n = body.len();
        seen.lock().unwrap().push(Seen { head: head.clone(), body: body.clone() });
        let head_req = head.starts_with("HEAD ");
        let out: Vec<u8> = match reply {
            Reply::Silent => {
                std::thread::sleep(Duration::from_secs(600));
                return;
            }
            Reply::DropSecond if nth > 1 => return,
            Reply::Ok | Reply::OkThenClose | Reply::DropSecond => {
                let text = format!("ok:{n}");
                let mut v = format!("HTTP/1.1 200 OK\r\ncontent-type: application/protobuf\r\ncontent-length: {}\r\nx-flower: 1\r\n\r\n", text.len()).into_bytes();
                if !head_req {
                    v.extend_from_slice(text.as_bytes());
                }
                v
            }
            Reply::ChunkedEcho => {
                let mut v = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                for part in body.chunks(body.len().div_ceil(3).max(1)) {
                    chunked::encode_chunk(&mut v, part);
                }
                v.extend_from_slice(chunked::LAST_CHUNK);
                v
            }
            Reply::CloseDelimited => {
                let mut v = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n".to_vec();
                v.extend_from_slice(format!("until-close:{n}").as_bytes());
                let _ = w.s.write_all(&v);
                let _ = w.s.flush();
                return;
            }
        };
        if w.s.write_all(&out).and_then(|_| w.s.flush()).is_err() {
            return;
        }
        if reply == Reply::OkThenClose {
            return;
        }
    }
}

// ---- gateway and clients ------------------------------------------------------------------

fn config(up: SocketAddr, limits: Limits) -> GatewayConfig {
    GatewayConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        control: None,
        tls: None,
        upstream: up,
        upstream_ca: None,
        limits,
    }
}

fn addr_of(gw: &GatewayHandle, port: Port) -> SocketAddr {
    gw.local_addrs().iter().find(|(p, _)| *p == port).unwrap().1
}

fn connect(addr: SocketAddr) -> Wire<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    Wire::new(s)
}

/// A TCP connection from a chosen 127.0.0.x source address.
fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let SocketAddr::V4(dst) = dst else { panic!("IPv4 only") };
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0)))?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(dst))?;
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(T))?;
    Ok(s)
}

/// Send `raw`, read one response: (head, body).
fn exchange<S: Read + Write>(w: &mut Wire<S>, raw: &[u8]) -> (String, Vec<u8>) {
    w.s.write_all(raw).unwrap();
    w.s.flush().unwrap();
    let head = w.head().unwrap().expect("a response");
    let body = w.body(&head, raw.starts_with(b"HEAD ")).unwrap();
    (head, body)
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!("POST {path} HTTP/1.1\r\nHost: sl:8000\r\nContent-Type: application/protobuf\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    v.extend_from_slice(body);
    v
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- tests --------------------------------------------------------------------------------

#[test]
fn forwards_fleet_requests_with_a_canonical_head() {
    let flower = FakeFlower::start(Reply::Ok, None);
    let gw = start(config(flower.addr, Limits::default())).unwrap();
    let mut c = connect(addr_of(&gw, Port::Fleet));
    let raw = b"POST /v1/fleet/pull-messages HTTP/1.1\r\nhost: sl:8000\r\nCONTENT-LENGTH: 5\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: keep-alive, x-secret\r\nx-secret: drop me\r\nKeep-Alive: timeout=5\r\nAccept: application/protobuf\r\n\r\nhello";
    let (head, body) = exchange(&mut c, raw);
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(body, b"ok:5");
    assert!(head.contains("x-flower: 1\r\n"), "end-to-end response headers pass: {head}");
    let seen = flower.seen.lock().unwrap();
    let h = &seen[0].head;
    assert!(h.starts_with("POST /v1/fleet/pull-messages HTTP/1.1\r\n"), "{h}");
    assert!(h.contains("host: sl:8000\r\n") && h.contains("Accept: application/protobuf\r\n"), "{h}");
    assert!(h.contains("content-length: 5\r\n") && !h.contains("CONTENT-LENGTH"), "{h}");
    assert!(h.contains("x-forwarded-for: 127.0.0.1\r\n") && !h.contains("6.6.6.6"), "the client cannot spoof its address: {h}");
    assert!(!h.to_ascii_lowercase().contains("x-secret") && !h.contains("Keep-Alive"), "hop-by-hop headers are dropped: {h}");
    assert_eq!(seen[0].body, b"hello");
    drop(seen);
    // The worker counts after each write, so the client may see the bytes first.
    wait_until("the exchange counted", || gw.stats().active.load(SeqCst) == 0);
    let v = gw.stats_json();
    assert_eq!(v["requests"]["fleet"], 1);
    // Its answer, by status class and in the duration histogram (`/metrics`, issue #21).
    assert_eq!(v["answers"]["fleet"]["status"]["2xx"], 1, "{v}");
    assert_eq!(v["answers"]["fleet"]["duration"]["counts"].as_array().unwrap().last(), Some(&serde_json::json!(1)), "{v}");
    assert_eq!(v["answers"]["control"]["status"]["2xx"], 0);
    assert_eq!(v["bytes"]["in"].as_u64().unwrap() as usize, raw.len());
    assert!(v["bytes"]["out"].as_u64().unwrap() as usize >= head.len() + 4);
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let flower = FakeFlower::start(Reply::Ok, None);
    let gw = start(config(flower.addr, Limits::default())).unwrap();
    let mut c = connect(addr_of(&gw, Port::Fleet));
    for i in 0..3 {
        let (head, body) = exchange(&mut c, &post("/v1/fleet/send-node-heartbeat", &vec![b'x'; i * 1000]));
        assert_eq!((status_of(&head), body), (200, format!("ok:{}", i * 1000).into_bytes()));
    }
    // Three requests in one write: answered one after the other, in order.
    let mut raw = post("/v1/fleet/a", b"1");
    raw.extend(post("/v1/fleet/b", b"22"));
    raw.extend(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    c.s.write_all(&raw).unwrap();
    for want in ["ok:1", "ok:2", "ok:0"] {
        let head = c.head().unwrap().unwrap();
        assert_eq!(c.body(&head, false).unwrap(), want.as_bytes());
    }
    assert_eq!(flower.requests(), 6);
    assert_eq!(gw.stats().connections_total.load(SeqCst), 1, "all on one connection");
    let v = gw.stats_json();
    assert_eq!((v["requests"]["fleet"].as_u64(), v["requests"]["health"].as_u64()), (Some(5), Some(1)));
}

#[test]
fn chunked_bodies_are_re_encoded_both_ways() {
    let flower = FakeFlower::start(Reply::ChunkedEcho, None);
    let gw = start(config(flower.addr, Limits::default())).unwrap();
    let mut c = connect(addr_of(&gw, Port::Fleet));
    let raw = b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n4;ext=1\r\nabcd\r\n6\r\nefghij\r\n0\r\nx-trailer: t\r\n\r\n";
    let (head, body) = exchange(&mut c, raw);
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(body, b"abcdefghij");
    let seen = flower.seen.lock().unwrap();
    assert!(seen[0].head.contains("transfer-encoding: chunked\r\n"), "{}", seen[0].head);
    assert_eq!(seen[0].body, b"abcdefghij");
    drop(seen);
    // The connection is still in step for the next request.
    let (head, body) = exchange(&mut c, &post("/v1/fleet/x", b"zz"));
    assert_eq!((status_of(&head), body), (200, b"zz".to_vec()));
}

#[test]
fn close_delimited_responses_reach_the_client_chunked_and_keep_alive() {
    let flower = FakeFlower::start(Reply::CloseDelimited, None);
    let gw = start(config(flower.addr, Limits::default())).unwrap();
    let mut c = connect(addr_of(&gw, Port::Fleet));
    for _ in 0..2 {
        let (head, body) = exchange(&mut c, &post("/v1/fleet/get-fab", b"abc"));
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert_eq!(body, b"until-close:3");
    }
    assert_eq!(flower.conns.load(SeqCst), 2, "an until-close upstream connection is never reused");
}

#[test]
fn head_requests_keep_content_length_without_a_body() {
    let flower = FakeFlower::start(Reply::Ok, None);
    let gw = start(config(flower.addr, Limits::default())).unwrap();
    let mut c = connect(addr_of(&gw, Port::Fleet));
    let (head, body) = exchange(&mut c, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&head), 200);
    assert!(head.contains("content-length: 4\r\n"), "{head}");
    assert!(body.is_empty());
    let (head, body) = exchange(&mut c, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((status_of(&head), body), (200, b"ok:0".to_vec()), "still in step after HEAD");
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let flower = FakeFlower::start(Reply::Ok, None);
    let gw = start(config(flower.addr, Limits::default())).unwrap();
    let mut c = connect(addr_of(&gw, Port::Fleet));
    c.s.write_all(b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n").unwrap();
    let interim = c.head().unwrap().unwrap();
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    c.s.write_all(b"abc").unwrap();
    let head = c.head().unwrap().unwrap();
    assert_eq!((status_of(&head), c.body(&head, false).unwrap()), (200, b"ok:3".to_vec()));
    assert!(!flower.seen.lock().unwrap()[0].head.to_ascii_lowercase().contains("expect"), "Expect is hop-by-hop");
    // A refused request never gets a 100: the client need not send its body.
    let mut c = connect(addr_of(&gw, Port::Fleet));
    let (head, _) = exchange(&mut c, b"POST /v1/control/start-run HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(status_of(&head), 403);
}

#[test]
fn control_and_other_paths_get_403_and_never_reach_flower() {
    let flower = FakeFlower::start(Reply::Ok, None);
    let gw = start(config(flower.addr, Limits::default())).unwrap();
    let fleet = addr_of(&gw, Port::Fleet);
    let targets = [
        "/v1/control/start-run",
        "/v1/control/list-runs",
        "/v1/runtime/acquire-task",
        "/docs",
        "/v1/fleet/../control/start-run",
        "//v1/control/start-run",
        "/v1/fleet/%2e%2e/control/start-run",
        "http://127.0.0.1/v1/control/start-run",
        "/v1/fleet/pull-messages?redirect=/v1/control",
    ];
    for t in targets {
        let mut c = connect(fleet);
        let (head, body) = exchange(&mut c, &post(t, b"\x0a\x00"));
        assert_eq!(status_of(&head), 403, "{t}: {head}");
        assert!(head.contains("connection: close"));
        assert!(String::from_utf8_lossy(&body).contains("Fleet API"), "{t}");
        assert!(c.head().unwrap().is_none(), "{t}: closed after the answer");
    }
    assert_eq!(flower.conns.load(SeqCst), 0, "not a byte reached Flower");
    let v = gw.stats_json();
    assert_eq!(v["requests"]["rejected"], targets.len());
    assert_eq!(v["rejects"]["forbidden_path"], 4);
    assert_eq!(v["rejects"]["non_canonical_target"], 5);
    assert_eq!(v["requests"]["fleet"], 0);
}

#[test]
fn a_10_mb_body_to_a_control_path_is_refused_without_reaching_flower() {
    let flower = FakeFlower::start(Reply::Ok, None);
    let gw = start(config(flower.addr, Limits::default())).unwrap();
    let mut c = connect(addr_of(&gw, Port::Fleet));
    let mut writer = c.s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let body = vec![7u8; 10 * 1024 * 1024];
        let _ = writer.write_all(&post("/v1/control/start-run", &body));
    });
    let head = c.head().unwrap().unwrap();
    assert_eq!(status_of(&head), 403, "{head}");
    let _ = sender.join();
    assert_eq!(flower.conns.load(SeqCst), 0);
    assert_eq!(gw.stats_json()["rejects"]["forbidden_path"], 1);
}

#[test]
fn smuggling_and_malformed_heads_get_4xx() {
    let flower = FakeFlower::start(Reply::Ok, None);
    let limits = Limits { max_head: 4096, max_request_line: 1024, ..Limits::default() };
    let gw = start(config(flower.addr, limits)).unwrap();
    let fleet = addr_of(&gw, Port::Fleet);
    let big = format!("POST /v1/fleet/x HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(5000));
    let long_line = format!("POST /v1/fleet/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2000));
    let cases: Vec<(&[u8], u16)> = vec![
        (b"POST /v1/fleet/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST /v1/fleet/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST /v1/fleet/x HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400),
        (b"POST /v1/fleet/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST /v1/fleet/x HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n", 400),
        (b"POST /v1/fleet/x HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc", 400),
        (b"POST /v1/fleet/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400),
        (b"POST /v1/fleet/x HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 505),
        (b"POST /v1/fleet/x HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 0\r\n\r\n", 417),
        (b"POST /v1/fleet/x HTTP/1.1\nHost: x\n\n", 400),
        (big.as_bytes(), 431),
        (long_line.as_bytes(), 414),
    ];
    for (raw, want) in &cases {
        let mut c = connect(fleet);
        let (head, _) = exchange(&mut c, raw);
        assert_eq!(status_of(&head), *want, "{}: {head}", String::from_utf8_lossy(&raw[..raw.len().min(80)]));
    }
    assert_eq!(flower.conns.load(SeqCst), 0);
    let v = gw.stats_json();
    assert_eq!(v["rejects"]["smuggling"], 3);
    assert_eq!(v["rejects"]["head_too_large"], 1);
    assert_eq!(v["rejects"]["uri_too_long"], 1);
}

#[test]
fn body_limits_apply_to_lengths_and_chunked_bodies() {
    let flower = FakeFlower::start(Reply::Ok, None);
    let gw = start(config(flower.addr, Limits { max_body: 1000, ..Limits::default() })).unwrap();
    let fleet = addr_of(&gw, Port::Fleet);
    let (head, _) = exchange(&mut connect(fleet), &post("/v1/fleet/push-object", &[1u8; 1001]));
    assert_eq!(status_of(&head), 413);
    assert_eq!(flower.conns.load(SeqCst), 0, "refused from the head alone");
    let mut raw = b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked::encode_chunk(&mut raw, &[2u8; 400]);
    }
    raw.extend_from_slice(chunked::LAST_CHUNK);
    let (head, _) = exchange(&mut connect(fleet), &raw);
    assert_eq!(status_of(&head), 413, "{head}");
    let (head, _) = exchange(&mut connect(fleet), &post("/v1/fleet/push-object", &[1u8; 1000]));
    assert_eq!(status_of(&head), 200, "exactly the limit is fine");
    assert_eq!(gw.stats_json()["rejects"]["body_too_large"], 2);
}

#[test]
fn slow_loris_and_idle_connections_time_out_without_stalling_others() {
    let flower = FakeFlower::start(Reply::Ok, None);
    let limits = Limits { header_timeout: Duration::from_secs(1), idle_timeout: Duration::from_secs(1), ..Limits::default() };
    let gw = start(config(flower.addr, limits)).unwrap();
    let fleet = addr_of(&gw, Port::Fleet);
    // A head that never completes gets 408; a silent connection is just closed.
    let mut loris = connect(fleet);
    loris.s.write_all(b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHo").unwrap();
    let mut silent = connect(fleet);
    // Meanwhile a normal client is served.
    let (head, _) = exchange(&mut connect(fleet), &post("/v1/fleet/pull-messages", b"x"));
    assert_eq!(status_of(&head), 200);
    let head = loris.head().unwrap().expect("an answer");
    assert_eq!(status_of(&head), 408, "{head}");
    assert!(silent.head().unwrap().is_none(), "closed without an answer");
    // Idle keep-alive connections are closed after the idle timeout.
    let mut c = connect(fleet);
    let (head, _) = exchange(&mut c, &post("/v1/fleet/pull-messages", b"x"));
    assert_eq!(status_of(&head), 200);
    assert!(c.head().unwrap().is_none(), "idle connection closed");
    let v = gw.stats_json();
    assert_eq!(v["rejects"]["header_timeout"], 2);
    assert!(v["connections"]["closed_idle"].as_u64().unwrap() >= 1);
    wait_until("all connections closed", || gw.stats().connections_open.load(SeqCst) == 0);
}

#[test]
fn at_the_connection_limit_idle_connections_make_room() {
    let flower = FakeFlower::start(Reply::Ok, None);
    let gw = start(config(flower.addr, Limits { max_connections: 3, ..Limits::default() })).unwrap();
    let fleet = addr_of(&gw, Port::Fleet);
    let mut idle: Vec<Wire<TcpStream>> = (0..3).map(|_| connect(fleet)).collect();
    for c in &mut idle {
        assert_eq!(status_of(&exchange(c, &post("/v1/fleet/a", b"1")).0), 200);
    }
    wait_until("3 connections open", || gw.stats().connections_open.load(SeqCst) == 3);
    let (head, _) = exchange(&mut connect(fleet), &post("/v1/fleet/b", b"2"));
    assert_eq!(status_of(&head), 200, "a new client gets in");
    let mut closed = 0;
    for c in &mut idle {
        c.s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        if matches!(c.head(), Ok(None)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 1, "exactly one idle connection was evicted");
    assert_eq!(gw.stats_json()["rejects"]["evicted_idle"], 1);
}

#[test]
fn the_connection_limit_refuses_when_nothing_can_be_evicted() {
    let flower = FakeFlower::start(Reply::Silent, None);
    let gw = start(config(flower.addr, Limits { max_connections: 1, ..Limits::default() })).unwrap();
    let fleet = addr_of(&gw, Port::Fleet);
    let mut busy = connect(fleet);
    busy.s.write_all(&post("/v1/fleet/pull-messages", b"x")).unwrap();
    wait_until("the request in flight", || flower.requests() == 1);
    let mut refused = connect(fleet);
    assert!(matches!(refused.head(), Ok(None) | Err(_)), "closed at once");
    assert_eq!(gw.stats_json()["rejects"]["connection_limit"], 1);
}

#[test]
fn upstream_failures_become_502_and_are_counted() {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = start(config(dead, Limits::default())).unwrap();
    let (head, body) = exchange(&mut connect(addr_of(&gw, Port::Fleet)), &post("/v1/fleet/pull-messages", b"x"));
    assert_eq!(status_of(&head), 502, "{head}");
    assert!(String::from_utf8_lossy(&body).contains("not reachable"));
    let v = gw.stats_json();
    assert_eq!(v["upstream_errors"]["connect"], 1);
    assert_eq!(v["upstream_errors"]["total"], 1);
    assert_eq!(v["answers"]["fleet"]["status"]["5xx"], 1, "the gateway's own 502 is an answer too: {v}");
}

#[test]
fn stale_pooled_upstream_connections_are_replaced() {
    let flower = FakeFlower::start(Reply::OkThenClose, None);
    let gw = start(config(flower.addr, Limits::default())).unwrap();
    let mut c = connect(addr_of(&gw, Port::Fleet));
    for i in 0..4 {
        let (head, body) = exchange(&mut c, &post("/v1/fleet/pull-messages", &vec![b'x'; i]));
        assert_eq!((status_of(&head), body), (200, format!("ok:{i}").into_bytes()));
    }
    assert_eq!(flower.conns.load(SeqCst), 4);
    assert_eq!(gw.stats_json()["upstream_errors"]["total"], 0);
}

#[test]
fn a_request_on_a_pooled_connection_closed_under_it_is_sent_again() {
    let flower = FakeFlower::start(Reply::DropSecond, None);
    let gw = start(config(flower.addr, Limits::default())).unwrap();
    let mut c = connect(addr_of(&gw, Port::Fleet));
    for i in 0..3 {
        let (head, body) = exchange(&mut c, &post("/v1/fleet/pull-messages", &vec![b'p'; i + 1]));
        assert_eq!((status_of(&head), body), (200, format!("ok:{}", i + 1).into_bytes()));
        wait_until("the worker done", || gw.stats().active.load(SeqCst) == 0);
    }
    let v = gw.stats_json();
    assert_eq!(v["upstream_errors"]["retried"], 2, "{v}");
    assert_eq!(v["upstream_errors"]["total"], 0, "{v}");
    assert_eq!(flower.conns.load(SeqCst), 3);
}

#[test]
fn upstream_connections_are_reused() {
    let flower = FakeFlower::start(Reply::Ok, None);
    let gw = start(config(flower.addr, Limits::default())).unwrap();
    for _ in 0..3 {
        let mut c = connect(addr_of(&gw, Port::Fleet));
        assert_eq!(status_of(&exchange(&mut c, &post("/v1/fleet/pull-messages", b"x")).0), 200);
        // The worker returns the connection to the pool just after the client has its answer.
        wait_until("the worker done", || gw.stats().active.load(SeqCst) == 0);
    }
    assert_eq!(flower.conns.load(SeqCst), 1, "three clients, one pooled connection to Flower");
}

#[test]
fn control_port_serves_only_allowed_sources_and_only_control() {
    let flower = FakeFlower::start(Reply::Ok, None);
    let mut cfg = config(flower.addr, Limits::default());
    cfg.control = Some(ControlConfig { listen: vec!["127.0.0.1:0".parse().unwrap()], allow: parse_cidr_list("127.0.0.9/32").unwrap() });
    let gw = start(cfg).unwrap();
    let control = addr_of(&gw, Port::Control);
    let mut ok = Wire::new(connect_from(Ipv4Addr::new(127, 0, 0, 9), control).unwrap());
    let (head, _) = exchange(&mut ok, &post("/v1/control/list-runs", b""));
    assert_eq!(status_of(&head), 200, "{head}");
    let (head, _) = exchange(&mut ok, &post("/v1/fleet/pull-messages", b""));
    assert_eq!(status_of(&head), 403, "Fleet is not served on the Control port");
    let mut other = Wire::new(connect_from(Ipv4Addr::new(127, 0, 0, 10), control).unwrap());
    let _ = other.s.write_all(&post("/v1/control/list-runs", b""));
    assert!(matches!(other.head(), Ok(None) | Err(_)), "refused before any HTTP");
    assert_eq!(flower.requests(), 1);
    let v = gw.stats_json();
    assert_eq!(v["requests"]["control"], 1);
    assert_eq!(v["rejects"]["source_not_allowed"], 1);
    assert_eq!(v["control_allow"][0], "127.0.0.9/32");
}

#[test]
fn an_empty_allow_list_keeps_the_control_port_on_loopback() {
    let c = ControlConfig::from_allow(vec![], &["10.0.0.5".parse().unwrap()], 9093);
    assert_eq!(c.listen, vec!["127.0.0.1:9093".parse().unwrap()]);
    assert_eq!(c.effective_allow(), crate::vocab::loopback());
    let c = ControlConfig::from_allow(parse_cidr_list("10.1.0.0/16").unwrap(), &["10.0.0.5".parse().unwrap()], 9093);
    assert_eq!(c.listen, vec!["10.0.0.5:9093".parse().unwrap()]);
    let mut cfg = config("127.0.0.1:1".parse().unwrap(), Limits::default());
    cfg.control = Some(ControlConfig { listen: vec!["10.0.0.5:9093".parse().unwrap()], allow: vec![] });
    let e = start(cfg).err().unwrap().to_string();
    assert!(e.contains("FL_CONTROL_ALLOW is empty") && e.contains("10.0.0.5:9093"), "{e}");
}

#[test]
fn stop_ends_requests_in_flight_within_its_bound() {
    let flower = FakeFlower::start(Reply::Silent, None);
    let mut gw = start(config(flower.addr, Limits { stop_grace: Duration::from_secs(2), ..Limits::default() })).unwrap();
    let fleet = addr_of(&gw, Port::Fleet);
    let mut c = connect(fleet);
    c.s.write_all(&post("/v1/fleet/pull-messages", b"x")).unwrap();
    let _idle = connect(fleet);
    wait_until("the request in flight", || flower.requests() == 1);
    assert!(gw.stop(T), "stopped within the bound");
    assert!(matches!(c.head(), Ok(None) | Err(_)));
    assert!(TcpStream::connect(fleet).is_err(), "the port is closed");
    assert_eq!(gw.stats().connections_open.load(SeqCst), 0);
    assert!(gw.stop(T), "stopping twice is fine");
}

#[test]
fn absurd_limits_are_refused_at_start() {
    for (limits, name) in [
        (Limits { max_connections: 0, ..Limits::default() }, "max_connections"),
        (Limits { header_timeout: Duration::ZERO, ..Limits::default() }, "header_timeout"),
        (Limits { idle_timeout: Duration::MAX, ..Limits::default() }, "idle_timeout"),
    ] {
        let e = start(config("127.0.0.1:1".parse().unwrap(), limits)).err().unwrap().to_string();
        assert!(e.contains(name), "{e}");
    }
    let e = start(GatewayConfig { listen: vec![], ..config("127.0.0.1:1".parse().unwrap(), Limits::default()) }).err().unwrap().to_string();
    assert!(e.contains("no Fleet listen address"), "{e}");
}

#[test]
fn plain_http_gateway_starts_and_a_bad_certificate_path_is_an_error() {
    let mut cfg = config("127.0.0.1:1".parse().unwrap(), Limits::default());
    cfg.tls = Some(ServerTlsFiles { cert: "/nonexistent/server.pem".into(), key: "/nonexistent/server.key".into() });
    let e = start(cfg).err().unwrap().to_string();
    assert!(e.starts_with("read the gateway certificate /nonexistent/server.pem"), "{e}");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let e = start(GatewayConfig { listen: vec![busy.local_addr().unwrap()], ..config("127.0.0.1:1".parse().unwrap(), Limits::default()) })
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with(&format!("listen on {} (Fleet port)", busy.local_addr().unwrap())), "{e}");
}

// ---- TLS on both hops ---------------------------------------------------------------------

struct Pki {
    _dir: tempfile::TempDir,
    files: tls::ContainerFiles,
    ca_pem: Vec<u8>,
}

fn pki(name: &str) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let sans = tls::server_sans(&["127.0.0.1".parse().unwrap()], Some(name), &[]);
    let me = ContainerUser { uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() };
    let sl = tls::superlink_generated(&dir.path().join("state"), &dir.path().join("run"), &sans, me).unwrap();
    Pki { ca_pem: sl.ca_pem.clone().into_bytes(), files: sl.files, _dir: dir }
}

fn server_cfg(p: &Pki) -> Arc<ServerConfig> {
    load_server_tls(&ServerTlsFiles { cert: p.files.server_cert.clone(), key: p.files.server_key.clone() }).unwrap()
}

fn tls_connect(addr: SocketAddr, ca_pem: &[u8]) -> Wire<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    Wire::new(rustls::StreamOwned::new(conn, s))
}

fn tls_config(p: &Pki, up: SocketAddr, upstream_ca: &Pki) -> GatewayConfig {
    GatewayConfig {
        tls: Some(ServerTlsFiles { cert: p.files.server_cert.clone(), key: p.files.server_key.clone() }),
        upstream_ca: Some(upstream_ca.files.ca_cert.clone()),
        ..config(up, Limits::default())
    }
}

#[test]
fn tls_on_both_hops_with_the_cluster_ca() {
    let p = pki("gw-test");
    let flower = FakeFlower::start(Reply::ChunkedEcho, Some(server_cfg(&p)));
    let gw = start(tls_config(&p, flower.addr, &p)).unwrap();
    let mut c = tls_connect(addr_of(&gw, Port::Fleet), &p.ca_pem);
    let big: Vec<u8> = (0..300_000).map(|i| (i % 253) as u8).collect();
    for body in [&b"tiny"[..], &big] {
        let (head, got) = exchange(&mut c, &post("/v1/fleet/push-object", body));
        assert_eq!(status_of(&head), 200, "{head}");
        assert!(got == body, "the body survives both TLS hops");
    }
    let (head, _) = exchange(&mut c, &post("/v1/control/start-run", b"x"));
    assert_eq!(status_of(&head), 403);
    assert!(flower.seen.lock().unwrap()[0].head.contains("x-forwarded-proto: https\r\n"));
}

#[test]
fn reload_tls_serves_the_new_certificate_to_new_connections() {
    let (a, b) = (pki("gw-reload-a"), pki("gw-reload-b"));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::copy(&a.files.server_cert, &cert).unwrap();
    std::fs::copy(&a.files.server_key, &key).unwrap();
    let flower = FakeFlower::start(Reply::Ok, None);
    let gw = start(GatewayConfig { tls: Some(ServerTlsFiles { cert: cert.clone(), key: key.clone() }), ..config(flower.addr, Limits::default()) }).unwrap();
    let fleet = addr_of(&gw, Port::Fleet);
    let mut before = tls_connect(fleet, &a.ca_pem);
    assert_eq!(status_of(&exchange(&mut before, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").0), 200);
    std::fs::copy(&b.files.server_cert, &cert).unwrap();
    std::fs::copy(&b.files.server_key, &key).unwrap();
    gw.reload_tls().unwrap();
    assert_eq!(status_of(&exchange(&mut tls_connect(fleet, &b.ca_pem), b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").0), 200);
    let mut old_ca = tls_connect(fleet, &a.ca_pem);
    assert!(old_ca.s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").and_then(|_| old_ca.s.flush()).is_err(), "new connections get the new certificate");
    assert_eq!(status_of(&exchange(&mut before, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").0), 200, "existing connections keep theirs");
    // A broken file is an error and changes nothing.
    std::fs::write(&key, "not a key").unwrap();
    assert!(gw.reload_tls().is_err());
    assert_eq!(status_of(&exchange(&mut tls_connect(fleet, &b.ca_pem), b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").0), 200);
}

#[test]
fn tls_refuses_clients_of_another_ca_and_flower_with_another_certificate() {
    let (p, other) = (pki("gw-a"), pki("gw-b"));
    let flower = FakeFlower::start(Reply::Ok, Some(server_cfg(&other)));
    // The gateway trusts p's CA for Flower, but Flower shows other's certificate.
    let gw = start(tls_config(&p, flower.addr, &p)).unwrap();
    let fleet = addr_of(&gw, Port::Fleet);
    let mut c = tls_connect(fleet, &other.ca_pem);
    let e = c.s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").and_then(|_| c.s.flush()).err().unwrap();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    let (head, _) = exchange(&mut tls_connect(fleet, &p.ca_pem), &post("/v1/fleet/pull-messages", b"x"));
    assert_eq!(status_of(&head), 502, "Flower's certificate is not trusted: {head}");
    let v = gw.stats_json();
    assert_eq!(v["upstream_errors"]["tls"], 1, "{v}");
    wait_until("the failed handshake counted", || gw.stats().rejects_of(Reject::TlsHandshake) == 1);
}
