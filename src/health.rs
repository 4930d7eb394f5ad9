//! The health port: a raw TCP listener in the supervisor loop answering `GET /health`
//! (200/503) and `GET /status` (JSON). Issue #3.
//!
//! No HTTP library: one request per connection, `Connection: close`, a fixed small response
//! (research/init.md §3.9). Everything is non-blocking and driven by [`crate::supervisor`]'s
//! `poll()`, so a client can never stall reaping or signal handling:
//! - a bare TCP connect succeeds while the init lives (the kernel completes the handshake into
//!   a `SOMAXCONN` backlog; accepting is only ever delayed, never refused);
//! - at most [`Config::max_clients`] connections are held; one more evicts the oldest, so a
//!   flood of idle or slow clients cannot lock a real probe out;
//! - each connection has a deadline ([`Config::timeout`]) and a request-size cap
//!   ([`Config::max_request`]): slow-loris clients are dropped, not waited for;
//! - at most [`ACCEPT_BUDGET`] accepts per loop turn, so a connect storm leaves the signalfd
//!   its turn.
//!
//! Request parsing and response rendering are pure functions, tested on bytes.

use crate::error::{Ctx, Result};
use crate::status::Status;
use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, sockopt};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// The default port, the same as the context layer's `FL_HEALTH_PORT` default.
pub const DEFAULT_PORT: u16 = 8081;
/// Connections accepted per loop turn at most (the rest wait in the backlog for the next turn).
pub const ACCEPT_BUDGET: usize = 32;
/// After the process ran out of file descriptors, how long accepting pauses (EMFILE would
/// otherwise keep the listener readable and the loop spinning).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Where and how the health port listens.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bind address; `0.0.0.0:8081` by default (probes come from the hypervisor's network).
    pub addr: SocketAddr,
    /// Connections held at once; one more evicts the oldest.
    pub max_clients: usize,
    /// How long a connection may take from accept to the last byte of the answer.
    pub timeout: Duration,
    /// Request bytes read at most (request line plus headers); more is answered 431.
    pub max_request: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
            max_clients: 128,
            timeout: Duration::from_secs(5),
            max_request: 4096,
        }
    }
}

impl Config {
    /// The defaults, listening on `ip:port` (port 0 picks a free one).
    pub fn on(ip: IpAddr, port: u16) -> Self {
        Config { addr: SocketAddr::new(ip, port), ..Config::default() }
    }
}

/// Counters, for `/status` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub accepted: u64,
    /// Connections that got a complete answer.
    pub answered: u64,
    /// Dropped to make room for a newer one.
    pub evicted: u64,
    /// Dropped at their deadline.
    pub timed_out: u64,
    /// Closed by the client before sending a whole request (e.g. a bare TCP probe).
    pub closed_early: u64,
    /// Held right now.
    pub active: usize,
}

/// Which fd a readiness report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Listener,
    Client(u64),
}

#[derive(Debug)]
enum State {
    Reading(Vec<u8>),
    Writing(Vec<u8>, usize),
}

#[derive(Debug)]
struct Client {
    stream: TcpStream,
    deadline: Instant,
    state: State,
}

/// What to do with a client after it was served as far as possible.
enum Next {
    Keep,
    Close,
}

/// The listener and its connections; [`crate::supervisor::Supervisor`] drives it.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    cfg: Config,
    /// By id; ids grow, so the first entry is the oldest (and has the earliest deadline).
    clients: BTreeMap<u64, Client>,
    next_id: u64,
    accept_paused_until: Option<Instant>,
    stats: Stats,
}

impl Server {
    /// Bind and listen (non-blocking, close-on-exec, SO_REUSEADDR so a restart can rebind at
    /// once, backlog SOMAXCONN so connects keep succeeding while the loop is busy).
    pub fn bind(cfg: &Config) -> Result<Server> {
        let what = || format!("listen on health port {}", cfg.addr);
        let family = if cfg.addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let fd = socket::socket(family, SockType::Stream, flags, None).with_ctx(what)?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true).with_ctx(what)?;
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(cfg.addr)).with_ctx(what)?;
        socket::listen(&fd, Backlog::MAXCONN).with_ctx(what)?;
        let listener = TcpListener::from(fd);
        Ok(Server {
            listener,
            cfg: cfg.clone(),
            clients: BTreeMap::new(),
            next_id: 0,
            accept_paused_until: None,
            stats: Stats::default(),
        })
    }

    /// The address actually bound (tells the port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.cfg.addr)
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        Stats { active: self.clients.len(), ..self.stats }
    }

    /// The earliest moment the loop must wake for us (a connection deadline, or the end of an
    /// accept pause).
    pub fn next_deadline(&self) -> Option<Instant> {
        let first = self.clients.values().next().map(|c| c.deadline);
        [first, self.accept_paused_until].into_iter().flatten().min()
    }

    /// The fds to poll now and for what.
    pub fn poll_fds<'a>(&'a self, now: Instant, out: &mut Vec<(Token, BorrowedFd<'a>, PollFlags)>) {
        if self.accept_paused_until.is_none_or(|t| now >= t) {
            out.push((Token::Listener, self.listener.as_fd(), PollFlags::POLLIN));
        }
        for (id, c) in &self.clients {
            let ev = match c.state {
                State::Reading(_) => PollFlags::POLLIN,
                State::Writing(..) => PollFlags::POLLOUT,
            };
            out.push((Token::Client(*id), c.stream.as_fd(), ev));
        }
    }

    /// Handle readiness of one fd reported by `poll()`.
    pub fn on_ready(&mut self, token: Token, _revents: PollFlags, status: &Status, now: Instant) {
        match token {
            Token::Listener => self.accept(status, now),
            Token::Client(id) => {
                // Errors and hang-ups surface as read/write results, so revents needs no case.
                self.stats.active = self.clients.len();
                if let Some(c) = self.clients.get_mut(&id) {
                    if let Next::Close = serve(c, &self.cfg, status, &mut self.stats) {
                        self.clients.remove(&id);
                    }
                }
            }
        }
    }

    /// Drop connections past their deadline (slow-loris defence).
    pub fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.clients.first_entry() {
            if entry.get().deadline > now {
                break;
            }
            entry.remove();
            self.stats.timed_out += 1;
        }
        if self.accept_paused_until.is_some_and(|t| now >= t) {
            self.accept_paused_until = None;
        }
    }

    /// Accept up to [`ACCEPT_BUDGET`] connections and answer those whose request is there.
    fn accept(&mut self, status: &Status, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    let errno = e.raw_os_error().map(Errno::from_raw);
                    if matches!(errno, Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) {
                        // Out of descriptors or memory: free one and pause, rather than spin.
                        self.evict_oldest();
                        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    }
                    log::warn!("accept on health port: {e}");
                    return;
                }
            };
            self.stats.accepted += 1;
            if stream.set_nonblocking(true).is_err() {
                continue; // dropped: closes it
            }
            let mut c = Client { stream, deadline: now + self.cfg.timeout, state: State::Reading(Vec::new()) };
            self.stats.active = self.clients.len() + 1;
            // Most probes have sent their request by now: answer at once, without a poll turn.
            if let Next::Keep = serve(&mut c, &self.cfg, status, &mut self.stats) {
                if self.clients.len() >= self.cfg.max_clients.max(1) {
                    self.evict_oldest();
                }
                self.next_id += 1;
                self.clients.insert(self.next_id, c);
            }
        }
    }

    /// Make room: the oldest connection is the likeliest idle or slow one.
    fn evict_oldest(&mut self) {
        if self.clients.pop_first().is_some() {
            self.stats.evicted += 1;
        }
    }
}

/// Read the request and write the answer as far as the socket allows without blocking.
fn serve(c: &mut Client, cfg: &Config, status: &Status, stats: &mut Stats) -> Next {
    if let State::Reading(buf) = &mut c.state {
        let mut chunk = [0u8; 1024];
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    stats.closed_early += 1;
                    return Next::Close;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return Next::Close,
            }
            if buf.len() > cfg.max_request || header_end(buf).is_some() {
                break;
            }
        }
        let reply = match parse_request(buf, cfg.max_request) {
            Parsed::Incomplete => return Next::Keep,
            Parsed::TooLarge => render(431, "text/plain", "request too large\n", false, None),
            Parsed::Bad => render(400, "text/plain", "bad request\n", false, None),
            Parsed::Request { method, path } => respond(&method, &path, status, stats),
        };
        c.state = State::Writing(reply, 0);
    }
    if let State::Writing(out, off) = &mut c.state {
        while *off < out.len() {
            match c.stream.write(&out[*off..]) {
                Ok(0) => return Next::Close,
                Ok(n) => *off += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Keep,
                Err(_) => return Next::Close,
            }
        }
        stats.answered += 1;
        let _ = c.stream.shutdown(Shutdown::Write); // the answer is complete; closing follows
    }
    Next::Close
}

/// A request, as far as it has arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The blank line ending the headers has not arrived yet.
    Incomplete,
    /// More than the cap arrived without the end of the headers.
    TooLarge,
    /// Not an HTTP/1.x request line.
    Bad,
    Request { method: String, path: String },
}

/// Index just past the blank line ending the headers (`\r\n\r\n`, or bare `\n\n`).
fn header_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    [crlf, lf].into_iter().flatten().min()
}

/// Parse the request line once the headers are complete; headers themselves are ignored.
pub fn parse_request(buf: &[u8], max: usize) -> Parsed {
    let Some(end) = header_end(buf) else {
        return if buf.len() > max { Parsed::TooLarge } else { Parsed::Incomplete };
    };
    if end > max {
        return Parsed::TooLarge;
    }
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(end);
    let Ok(line) = std::str::from_utf8(&buf[..line_end]) else { return Parsed::Bad };
    let mut parts = line.trim_end_matches('\r').split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None)
            if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) && t.starts_with('/') && v.starts_with("HTTP/1.") =>
        {
            let path = t.split(['?', '#']).next().unwrap_or(t);
            Parsed::Request { method: m.to_string(), path: path.to_string() }
        }
        _ => Parsed::Bad,
    }
}

/// The whole response for a parsed request: `/health` 200/503, `/status` JSON (with this
/// port's counters under `"health_port"`), 404, 405.
pub fn respond(method: &str, path: &str, status: &Status, stats: &Stats) -> Vec<u8> {
    let head = method == "HEAD";
    let known = matches!(path, "/health" | "/status");
    if known && method != "GET" && !head {
        return render(405, "text/plain", "method not allowed\n", false, Some("Allow: GET, HEAD"));
    }
    match path {
        "/health" => {
            let (code, line) = status.health();
            render(code, "text/plain; charset=utf-8", &format!("{line}\n"), head, None)
        }
        "/status" => render(200, "application/json", &(status_json(status, stats) + "\n"), head, None),
        _ => render(404, "text/plain", "not found\n", head, None),
    }
}

/// [`Status::to_json`] plus the health port's own counters.
fn status_json(status: &Status, stats: &Stats) -> String {
    match serde_json::to_value(status) {
        Ok(serde_json::Value::Object(mut doc)) => {
            doc.insert("health_port".into(), serde_json::to_value(stats).unwrap_or_default());
            serde_json::to_string_pretty(&doc).unwrap_or_else(|_| status.to_json())
        }
        _ => status.to_json(),
    }
}

/// An HTTP/1.1 response with `Connection: close`; `head` keeps the headers, drops the body.
pub fn render(code: u16, content_type: &str, body: &str, head: bool, extra: Option<&str>) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        reason(code),
        body.len()
    );
    if let Some(h) = extra {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    if !head {
        out.push_str(body);
    }
    out.into_bytes()
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Outcome;

    fn req(s: &str) -> Parsed {
        parse_request(s.as_bytes(), 4096)
    }

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn parses_request_lines() {
        let get = |p: &str| Parsed::Request { method: "GET".into(), path: p.into() };
        assert_eq!(req("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"), get("/health"));
        assert_eq!(req("GET /health?verbose=1 HTTP/1.0\n\n"), get("/health"));
        assert_eq!(req("HEAD /status HTTP/1.1\r\n\r\n"), Parsed::Request { method: "HEAD".into(), path: "/status".into() });
        assert_eq!(req("GET /health HTTP/1.1\r\nHost: x\r\n"), Parsed::Incomplete);
        assert_eq!(req("GET /hea"), Parsed::Incomplete);
        assert_eq!(req(""), Parsed::Incomplete);
        assert_eq!(req("\r\n\r\n"), Parsed::Bad);
        assert_eq!(req("get /health HTTP/1.1\r\n\r\n"), Parsed::Bad);
        assert_eq!(req("GET health HTTP/1.1\r\n\r\n"), Parsed::Bad);
        assert_eq!(req("GET /health SPDY/3\r\n\r\n"), Parsed::Bad);
        assert_eq!(req("GET  /health HTTP/1.1\r\n\r\n"), Parsed::Bad);
        assert_eq!(parse_request(b"GET /\xff HTTP/1.1\r\n\r\n", 4096), Parsed::Bad);
    }

    #[test]
    fn caps_request_size() {
        let long = format!("GET /health HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100));
        assert_eq!(parse_request(long.as_bytes(), 50), Parsed::TooLarge);
        assert_eq!(parse_request(&[b'a'; 51], 50), Parsed::TooLarge);
        assert_eq!(parse_request(&[b'a'; 50], 50), Parsed::Incomplete);
    }

    #[test]
    fn health_answers_follow_the_status() {
        let mut st = Status::default();
        st.begin("network", Duration::from_secs(1));
        let r = text(respond("GET", "/health", &st, &Stats::default()));
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nbooting: network\n"), "{r}");
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.contains("Content-Length: 17\r\n"));
        st.end(0, Duration::from_secs(2), Outcome::Ok, "");
        st.ready();
        let r = text(respond("GET", "/health", &st, &Stats::default()));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nready\n"), "{r}");
        st.fail("validate", "FL_NUM_ROUNDS='0': must be an integer >= 1");
        let r = text(respond("GET", "/health", &st, &Stats::default()));
        assert!(r.starts_with("HTTP/1.1 503 ") && r.contains("failed at validate: FL_NUM_ROUNDS='0'"), "{r}");
    }

    #[test]
    fn head_has_headers_only() {
        let mut st = Status::default();
        st.ready();
        let r = text(respond("HEAD", "/health", &st, &Stats::default()));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.contains("Content-Length: 6\r\n") && r.ends_with("\r\n\r\n"), "{r}");
    }

    #[test]
    fn status_is_the_json_document() {
        let mut st = Status::default();
        st.set_sections(&serde_json::json!({"supervise": {"pid": 7}}));
        let r = text(respond("GET", "/status", &st, &Stats { accepted: 3, ..Stats::default() }));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"), "{r}");
        let body = &r[r.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["phase"], "booting");
        assert_eq!(v["sections"]["supervise"]["pid"], 7);
        assert_eq!(v["health_port"]["accepted"], 3);
    }

    #[test]
    fn unknown_paths_and_methods() {
        let st = Status::default();
        assert!(text(respond("GET", "/", &st, &Stats::default())).starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text(respond("POST", "/other", &st, &Stats::default())).starts_with("HTTP/1.1 404 "));
        let r = text(respond("POST", "/health", &st, &Stats::default()));
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && r.contains("Allow: GET, HEAD\r\n"), "{r}");
        assert!(text(respond("DELETE", "/status", &st, &Stats::default())).starts_with("HTTP/1.1 405 "));
    }

    /// Drive a real server on loopback without the supervisor: accept, answer, evict, expire.
    #[test]
    fn serves_evicts_and_expires_on_loopback() {
        let cfg = Config { max_clients: 2, timeout: Duration::from_millis(300), ..Config::on(Ipv4Addr::LOCALHOST.into(), 0) };
        let mut srv = Server::bind(&cfg).unwrap();
        let addr = srv.local_addr();
        let mut st = Status::default();
        st.ready();
        // Three idle connections: the third evicts the first.
        let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let turn = |srv: &mut Server, st: &Status| {
            let mut fds = Vec::new();
            srv.poll_fds(Instant::now(), &mut fds);
            let tokens: Vec<Token> = fds.iter().map(|(t, _, _)| *t).collect();
            drop(fds);
            for t in tokens {
                srv.on_ready(t, PollFlags::POLLIN, st, Instant::now());
            }
        };
        let until = Instant::now() + Duration::from_secs(10);
        while srv.stats().accepted < 3 && Instant::now() < until {
            turn(&mut srv, &st);
        }
        assert_eq!(srv.stats().evicted, 1);
        assert_eq!(srv.stats().active, 2);
        // A real probe is still answered (and evicts another idle one).
        let mut probe = TcpStream::connect(addr).unwrap();
        probe.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        probe.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut answer = Vec::new();
        while Instant::now() < until {
            turn(&mut srv, &st);
            let mut b = [0u8; 512];
            match probe.read(&mut b) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&b[..n]),
                Err(_) => {}
            }
        }
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("ready\n"), "{answer}");
        assert_eq!(srv.stats().answered, 1);
        // The idle ones hit their deadline.
        std::thread::sleep(Duration::from_millis(350));
        srv.expire(Instant::now());
        assert_eq!(srv.stats().active, 0);
        assert!(srv.stats().timed_out >= 1);
        assert_eq!(srv.next_deadline(), None);
        drop(idle);
    }
}
