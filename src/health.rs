//! The health port: a raw TCP listener in the supervisor loop answering `GET /health`
//! (200/503) and `GET /status` (JSON). Issue #3.
//!
//! No HTTP library: one request per connection, `Connection: close`, a fixed small response
//! (research/init.md §3.9). Everything is non-blocking and driven by [`crate::supervisor`]'s
//! `poll()`, so a client can never stall reaping or signal handling:
//! - a bare TCP connect succeeds while the init lives (the kernel completes the handshake into
//!   a `SOMAXCONN` backlog; accepting is only ever delayed, never refused);
//! - at most [`Config::max_clients`] connections are held; one more evicts the oldest
//!   connection of the source that holds the most, so a flood from one address (or a few)
//!   evicts its own connections, never a slow-but-honest probe from another source;
//! - each connection has a deadline ([`Config::timeout`]) and a request-size cap
//!   ([`Config::max_request`]): slow-loris clients are dropped, not waited for;
//! - at most [`ACCEPT_BUDGET`] accepts per loop turn, so a connect storm leaves the signalfd
//!   its turn.
//!
//! Who may read what (issue #14): `/health` answers every source (a one-line body of a few
//! hundred bytes at most); `/status` (boot timeline, container output, allow lists, versions)
//! and `/metrics` (the same state as Prometheus samples, [`metrics`], issue #21)
//! answer only [`Config::detail_allow`] (loopback, plus FL_STATUS_ALLOW once the context is
//! validated), 403 otherwise. `/status` is rendered once per change of the [`Status`] (its
//! version), not per request, and capped at [`MAX_STATUS_BYTES`].
//!
//! Request parsing and response rendering are pure functions, tested on bytes.

pub mod metrics;
mod owner;

use crate::error::{Ctx, Result};
use crate::status::Status;
use crate::vocab::{Cidr, any_contains, loopback};
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
/// Largest `/status` document served; a bigger one is replaced by its phase and failure.
pub const MAX_STATUS_BYTES: usize = 256 * 1024;
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
    /// Sources that may read `/status`; others get 403. Loopback by default
    /// ([`Config::allow_status`] adds FL_STATUS_ALLOW's networks to it).
    pub detail_allow: Vec<Cidr>,
    /// Users whose loopback connections count as a host on the network, not as loopback:
    /// Flower's container (uid 49999) shares the VM's network, and the app code of a FAB must
    /// not read `/status` with more rights than a network host (issue #14).
    pub distrust_uids: Vec<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
            max_clients: 128,
            timeout: Duration::from_secs(5),
            max_request: 4096,
            detail_allow: loopback(),
            distrust_uids: Vec::new(),
        }
    }
}

impl Config {
    /// The defaults, listening on `ip:port` (port 0 picks a free one).
    pub fn on(ip: IpAddr, port: u16) -> Self {
        Config { addr: SocketAddr::new(ip, port), ..Config::default() }
    }

    /// Loopback plus `extra` may read `/status`.
    pub fn allow_status(mut self, extra: &[Cidr]) -> Self {
        let mut allow = loopback();
        for c in extra {
            if !allow.contains(c) {
                allow.push(*c);
            }
        }
        self.detail_allow = allow;
        self
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
    /// Answered 403: `/status` from a source outside the allow list.
    pub forbidden: u64,
    /// Times the `/status` document was rendered (once per change of the status).
    pub status_renders: u64,
    /// `/metrics` pages served (rendered per request: they carry these counters).
    pub metrics_renders: u64,
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
    /// The source address (IPv4-mapped IPv6 as IPv4): eviction is fair between sources.
    peer: IpAddr,
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
    cache: StatusCache,
}

/// The `/status` document of one [`Status::version`], without the port's counters.
#[derive(Debug, Default)]
pub struct StatusCache {
    version: Option<u64>,
    doc: String,
}

impl StatusCache {
    /// The document for `status`, rendered only when its version changed; counts renders.
    fn doc(&mut self, status: &Status, stats: &mut Stats) -> &str {
        if self.version != Some(status.version()) {
            self.doc = status_document(status);
            self.version = Some(status.version());
            stats.status_renders += 1;
        }
        &self.doc
    }
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
            cache: StatusCache::default(),
        })
    }

    /// Who may read `/status` from now on: loopback and `extra` (FL_STATUS_ALLOW, once the
    /// context is validated).
    pub fn allow_status(&mut self, extra: &[Cidr]) {
        self.cfg.detail_allow = Config::default().allow_status(extra).detail_allow;
    }

    /// Loopback connections of these users get what a network host gets (see
    /// [`Config::distrust_uids`]).
    pub fn distrust_uids(&mut self, uids: &[u32]) {
        self.cfg.distrust_uids = uids.to_vec();
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
                    if let Next::Close = serve(c, &self.cfg, status, &mut self.stats, &mut self.cache) {
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
            let (stream, peer) = match self.listener.accept() {
                Ok((s, a)) => (s, crate::vocab::canonical(a.ip())),
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
            let mut c = Client { stream, peer, deadline: now + self.cfg.timeout, state: State::Reading(Vec::new()) };
            self.stats.active = self.clients.len() + 1;
            // Most probes have sent their request by now: answer at once, without a poll turn.
            if let Next::Keep = serve(&mut c, &self.cfg, status, &mut self.stats, &mut self.cache) {
                if self.clients.len() >= self.cfg.max_clients.max(1) {
                    self.evict_for(peer);
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

    /// Make room for a connection from `newcomer`: drop the oldest connection of the source
    /// holding the most (counting the newcomer), so a flood evicts its own connections and a
    /// slow-but-honest probe from elsewhere keeps its place.
    fn evict_for(&mut self, newcomer: IpAddr) {
        if let Some(id) = fair_victim(self.clients.iter().map(|(id, c)| (*id, c.peer)), newcomer) {
            self.clients.remove(&id);
            self.stats.evicted += 1;
        }
    }
}

/// The connection to drop when full: the oldest (lowest id) of the source with the most
/// connections, the newcomer counted in (ties: the source of the oldest connection).
pub fn fair_victim(clients: impl Iterator<Item = (u64, IpAddr)>, newcomer: IpAddr) -> Option<u64> {
    let mut count: std::collections::HashMap<IpAddr, (usize, u64)> = std::collections::HashMap::new();
    for (id, peer) in clients {
        let e = count.entry(peer).or_insert((0, id));
        e.0 += 1;
        e.1 = e.1.min(id);
    }
    if let Some(e) = count.get_mut(&newcomer) {
        e.0 += 1;
    }
    count.into_values().max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1))).map(|(_, oldest)| oldest)
}

/// A loopback connection from one of [`Config::distrust_uids`] (or whose owner cannot be
/// told: fail closed); an allowed network source is judged by its address alone.
fn distrusted(c: &Client, cfg: &Config) -> bool {
    if cfg.distrust_uids.is_empty() || !c.peer.is_loopback() {
        return false;
    }
    let (Ok(peer), Ok(local)) = (c.stream.peer_addr(), c.stream.local_addr()) else { return true };
    owner::owner_uid_at(std::path::Path::new("/"), peer, local).is_none_or(|uid| cfg.distrust_uids.contains(&uid))
}

/// Read the request and write the answer as far as the socket allows without blocking.
fn serve(c: &mut Client, cfg: &Config, status: &Status, stats: &mut Stats, cache: &mut StatusCache) -> Next {
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
            Parsed::Request { method, path } => {
                let allowed = is_detailed(&path) && any_contains(&cfg.detail_allow, c.peer) && !distrusted(c, cfg);
                if !allowed && is_detailed(&path) {
                    stats.forbidden += 1;
                }
                respond_with(&method, &path, status, stats, cache, allowed)
            }
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

/// Whether `path` shows more than the verdict (only allowed sources may read it).
pub fn is_detailed(path: &str) -> bool {
    path == "/status" || path == "/metrics"
}

/// The whole response for a parsed request from an allowed source: `/health` 200/503,
/// `/status` JSON (with this port's counters under `"health_port"`), 404, 405.
pub fn respond(method: &str, path: &str, status: &Status, stats: &Stats) -> Vec<u8> {
    let mut stats = *stats;
    respond_with(method, path, status, &mut stats, &mut StatusCache::default(), true)
}

/// [`respond`] with the `/status` cache and the source's right to details (403 without).
pub fn respond_with(method: &str, path: &str, status: &Status, stats: &mut Stats, cache: &mut StatusCache, allowed: bool) -> Vec<u8> {
    let head = method == "HEAD";
    let known = matches!(path, "/health" | "/status" | "/metrics");
    if known && method != "GET" && !head {
        return render(405, "text/plain", "method not allowed\n", false, Some("Allow: GET, HEAD"));
    }
    if is_detailed(path) && !allowed {
        let body = "forbidden: /status and /metrics answer loopback and FL_STATUS_ALLOW (default: FL_CONTROL_ALLOW); /health is open\n";
        return render(403, "text/plain", body, head, None);
    }
    match path {
        "/health" => {
            let (code, line) = status.health();
            render(code, "text/plain; charset=utf-8", &format!("{line}\n"), head, None)
        }
        "/status" => {
            let doc = cache.doc(status, stats);
            let counters = serde_json::to_string(&*stats).unwrap_or_default();
            // The cached document is a JSON object: add the counters as its last key.
            let body = match doc.trim_end().strip_suffix('}') {
                Some(open) => format!("{},\n  \"health_port\": {counters}\n}}\n", open.trim_end()),
                None => format!("{doc}\n"),
            };
            render(200, "application/json", &body, head, None)
        }
        "/metrics" => {
            stats.metrics_renders += 1;
            render(200, metrics::CONTENT_TYPE, &metrics::render(status, stats), head, None)
        }
        _ => render(404, "text/plain", "not found\n", head, None),
    }
}

/// [`Status::to_json`], or its phase and failure alone when the whole would pass
/// [`MAX_STATUS_BYTES`].
fn status_document(status: &Status) -> String {
    let doc = status.to_json();
    if doc.len() <= MAX_STATUS_BYTES {
        return doc;
    }
    let short = serde_json::json!({
        "phase": status.phase(),
        "failure": status.failure().map(|f| serde_json::json!({"step": f.step, "reason": f.reason})),
        "truncated": format!("the status document is {} bytes, over the {MAX_STATUS_BYTES}-byte cap: timeline and sections left out", doc.len()),
    });
    serde_json::to_string_pretty(&short).unwrap_or_else(|_| "{}".into())
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
        403 => "Forbidden",
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
        assert!(text(respond("POST", "/metrics", &st, &Stats::default())).starts_with("HTTP/1.1 405 "));
        let r = text(respond("HEAD", "/metrics", &st, &Stats::default()));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"), "{r}");
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

    /// A client socket bound to source address `src` before connecting (127.0.0.0/8 is all
    /// ours: several "hosts" on loopback).
    fn connect_from(src: Ipv4Addr, to: SocketAddr) -> TcpStream {
        let fd = socket::socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        socket::bind(raw, &SockaddrStorage::from(SocketAddr::new(src.into(), 0))).unwrap();
        socket::connect(raw, &SockaddrStorage::from(to)).unwrap();
        TcpStream::from(fd)
    }

    /// One loop turn of a server without the supervisor.
    fn turn(srv: &mut Server, st: &Status) {
        let mut fds = Vec::new();
        srv.poll_fds(Instant::now(), &mut fds);
        let tokens: Vec<Token> = fds.iter().map(|(t, _, _)| *t).collect();
        drop(fds);
        for t in tokens {
            srv.on_ready(t, PollFlags::POLLIN, st, Instant::now());
        }
    }

    /// Send `req` on `s` and read the answer, turning the server meanwhile.
    fn exchange(srv: &mut Server, st: &Status, s: &mut TcpStream, req: &str) -> String {
        s.write_all(req.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        let mut answer = Vec::new();
        while Instant::now() < until {
            turn(srv, st);
            let mut b = [0u8; 4096];
            match s.read(&mut b) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&b[..n]),
                Err(_) => {}
            }
        }
        String::from_utf8(answer).unwrap()
    }

    #[test]
    fn the_victim_is_the_oldest_of_the_biggest_source() {
        let a: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        let b: IpAddr = Ipv4Addr::new(10, 0, 0, 2).into();
        let c: IpAddr = Ipv4Addr::new(10, 0, 0, 3).into();
        // b holds the most: its oldest goes, even though a's connection is older.
        assert_eq!(fair_victim([(1, a), (2, b), (3, b), (4, c)].into_iter(), c), Some(2));
        // The newcomer counts: c (2 + 1) outnumbers b.
        assert_eq!(fair_victim([(1, a), (2, b), (3, b), (4, c), (5, c)].into_iter(), c), Some(4));
        // One source: plain oldest first.
        assert_eq!(fair_victim([(7, a), (9, a)].into_iter(), a), Some(7));
        // A tie: the source of the oldest connection.
        assert_eq!(fair_victim([(1, a), (2, b)].into_iter(), c), Some(1));
        assert_eq!(fair_victim(std::iter::empty(), a), None);
    }

    /// Issue #14 item 4: `/status` only to allowed sources (403 otherwise), `/health` to all.
    #[test]
    fn status_answers_allowed_sources_only() {
        let cfg = Config::on(Ipv4Addr::LOCALHOST.into(), 0);
        let mut srv = Server::bind(&Config { detail_allow: vec![Cidr::host(Ipv4Addr::LOCALHOST.into())], ..cfg }).unwrap();
        let addr = srv.local_addr();
        let mut st = Status::default();
        st.ready();
        let other = Ipv4Addr::new(127, 0, 0, 2);
        let r = exchange(&mut srv, &st, &mut connect_from(other, addr), "GET /status HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n") && r.contains("FL_STATUS_ALLOW"), "{r}");
        assert!(!r.contains("timeline"), "{r}");
        let r = exchange(&mut srv, &st, &mut connect_from(other, addr), "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n") && !r.contains("flower_init_"), "{r}");
        let r = exchange(&mut srv, &st, &mut connect_from(other, addr), "GET /health HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("ready\n"), "{r}");
        let r = exchange(&mut srv, &st, &mut connect_from(Ipv4Addr::LOCALHOST, addr), "GET /status HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.contains("\"timeline\""), "{r}");
        let r = exchange(&mut srv, &st, &mut connect_from(Ipv4Addr::LOCALHOST, addr), "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{r}");
        assert!(r.contains("\nflower_init_phase{phase=\"ready\"} 1\n") && r.contains("\nflower_init_health_forbidden_total 2\n"), "{r}");
        assert_eq!(srv.stats().forbidden, 2);
        // FL_STATUS_ALLOW adds 127.0.0.2/32 (and loopback stays).
        srv.allow_status(&[Cidr::host(other.into())]);
        let r = exchange(&mut srv, &st, &mut connect_from(other, addr), "GET /status HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(srv.cfg.detail_allow.iter().any(|c| c.contains(Ipv4Addr::new(127, 9, 9, 9).into())));
    }

    /// Issue #14 item 3: Flower's container shares the VM's loopback, so a loopback connection
    /// owned by a distrusted uid (49999 in the appliance; here our own, to run unprivileged)
    /// gets what a network host gets: 403 for `/status`, `/health` as before.
    #[test]
    fn loopback_of_a_distrusted_uid_is_not_trusted() {
        let mut srv = Server::bind(&Config::on(Ipv4Addr::LOCALHOST.into(), 0)).unwrap();
        let addr = srv.local_addr();
        let mut st = Status::default();
        st.ready();
        let me = nix::unistd::geteuid().as_raw();
        srv.distrust_uids(&[me.wrapping_add(1)]);
        let r = exchange(&mut srv, &st, &mut TcpStream::connect(addr).unwrap(), "GET /status HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "another uid is distrusted, not us: {r}");
        srv.distrust_uids(&[me]);
        let r = exchange(&mut srv, &st, &mut TcpStream::connect(addr).unwrap(), "GET /status HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{r}");
        let r = exchange(&mut srv, &st, &mut TcpStream::connect(addr).unwrap(), "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{r}");
        let r = exchange(&mut srv, &st, &mut TcpStream::connect(addr).unwrap(), "GET /health HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert_eq!(srv.stats().forbidden, 2);
    }

    /// Issue #14 item 5: `/status` is rendered once per change, and capped.
    #[test]
    fn status_renders_once_per_change_and_is_capped() {
        let mut srv = Server::bind(&Config::on(Ipv4Addr::LOCALHOST.into(), 0)).unwrap();
        let addr = srv.local_addr();
        let mut st = Status::default();
        st.ready();
        for _ in 0..20 {
            let r = exchange(&mut srv, &st, &mut TcpStream::connect(addr).unwrap(), "GET /status HTTP/1.1\r\n\r\n");
            let body = &r[r.find("\r\n\r\n").unwrap() + 4..];
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["phase"], "ready");
        }
        assert_eq!(srv.stats().status_renders, 1);
        // A change: rendered again; the counters in the body are always current.
        let lines: Vec<String> = (0..20_000).map(|i| format!("output line {i} {}", "x".repeat(40))).collect();
        st.set_sections(&serde_json::json!({ "container": { "output": lines } }));
        let r = exchange(&mut srv, &st, &mut TcpStream::connect(addr).unwrap(), "GET /status HTTP/1.1\r\n\r\n");
        assert_eq!(srv.stats().status_renders, 2);
        assert!(r.len() < MAX_STATUS_BYTES, "{}", r.len());
        let body = &r[r.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["truncated"].as_str().unwrap().contains("over the 262144-byte cap"), "{v}");
        assert_eq!(v["phase"], "ready");
        assert_eq!(v["health_port"]["answered"], 20);
    }

    /// Issue #14 item 5: a connect flood from one source while an honest probe from another
    /// waits before sending: the flood evicts its own connections, the probe is answered.
    #[test]
    fn a_flood_from_one_source_does_not_evict_a_probe_from_another() {
        let cfg = Config { max_clients: 8, ..Config::on(Ipv4Addr::LOCALHOST.into(), 0) };
        let mut srv = Server::bind(&cfg).unwrap();
        let addr = srv.local_addr();
        let mut st = Status::default();
        st.ready();
        let flooder = Ipv4Addr::new(127, 0, 0, 3);
        let mut flood: Vec<TcpStream> = (0..20).map(|_| connect_from(flooder, addr)).collect();
        let mut probes: Vec<TcpStream> = (0..3).map(|i| connect_from(Ipv4Addr::new(127, 0, 0, 10 + i), addr)).collect();
        flood.extend((0..100).map(|_| connect_from(flooder, addr)));
        let until = Instant::now() + Duration::from_secs(20);
        while srv.stats().accepted < 123 && Instant::now() < until {
            turn(&mut srv, &st);
        }
        assert_eq!(srv.stats().accepted, 123);
        assert!(srv.stats().evicted >= 100, "{:?}", srv.stats());
        for p in &mut probes {
            let r = exchange(&mut srv, &st, p, "GET /health HTTP/1.1\r\n\r\n");
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "a probe was evicted: {r:?} {:?}", srv.stats());
        }
        drop(flood);
    }
}
