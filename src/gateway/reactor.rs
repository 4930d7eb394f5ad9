//! The reactor: one thread, one epoll set, every connection that is *waiting* — for a TLS
//! handshake, for a request head, idle between keep-alive requests, or parked until a worker
//! is free. Such connections cost no thread, only their TLS state and a small buffer, so
//! slow-loris and idle connections are cheap. When a head is complete and allowed, the
//! connection leaves the epoll set and goes to a worker thread ([`super::worker`]); it comes
//! back through a channel when the response is done.
//!
//! Answers the gateway gives itself (403, 400, 413, 431, 408, 503) are written here,
//! non-blocking, then the connection is closed after a short linger that reads and discards
//! what the client is still sending, so the answer is not lost to a TCP reset.

use crate::vocab::{any_contains, Cidr};
use super::conn::ClientConn;
use super::http::{self, BodyLen, HeadLimits, HeadScanner, RequestHead, RequestMeta};
use super::poller::{Epoll, Event, Interest};
use super::route::{self, Api, Port};
use super::stats::Reject;
use super::worker::{self, Job, KeepAlive};
use super::workers::WorkerPool;
use super::Shared;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often timeouts are checked; also the longest epoll wait.
const TICK: Duration = Duration::from_millis(250);
/// How long a listener pauses after accept(2) ran out of descriptors or memory.
const ACCEPT_PAUSE: Duration = Duration::from_millis(200);
/// Accepts per readiness event, so one busy port does not starve the others.
const ACCEPTS_PER_EVENT: usize = 64;
/// A worker's stack: rustls and ring need little; this is address space, not memory.
const WORKER_STACK: usize = 256 * 1024;
/// How long an idle worker thread waits for another request before it exits.
const WORKER_LINGER: Duration = Duration::from_secs(30);

const WAKE: u64 = u64::MAX;
const LISTENER_BASE: u64 = 1 << 62;

/// A finished exchange, from a worker back to the reactor.
pub struct Done {
    pub id: u64,
    pub ip: IpAddr,
    pub back: Option<KeepAlive>,
}

/// A listening socket of either port.
pub struct Listener {
    pub sock: TcpListener,
    pub port: Port,
    pub addr: SocketAddr,
    /// Control port: who may connect (FL_CONTROL_ALLOW, or loopback when it is empty).
    pub allow: Vec<Cidr>,
    paused_until: Option<Instant>,
}

impl Listener {
    /// A bound socket of `port`, at `addr`; `allow` matters for the Control port only.
    pub fn new(sock: TcpListener, port: Port, addr: SocketAddr, allow: Vec<Cidr>) -> Listener {
        Listener { sock, port, addr, allow, paused_until: None }
    }
}

/// A request head accepted and waiting for a worker.
struct Pending {
    pre: Vec<u8>,
    head: RequestHead,
    meta: RequestMeta,
    api: Api,
}

enum Phase {
    /// TLS handshake and/or reading a head (or idle between requests when `idle`).
    Read,
    /// Head accepted; waiting for a free worker.
    Queued(Box<Pending>),
    /// Sending an answer the reactor made itself; then linger and close.
    Flush,
    /// Answer sent and FIN sent: discard what the client still sends, then close.
    Linger { drained: usize },
}

struct Waiting {
    conn: ClientConn,
    buf: Vec<u8>,
    scan: HeadScanner,
    phase: Phase,
    deadline: Instant,
    /// Between requests on a keep-alive connection (nothing of the next one read yet).
    idle: bool,
    last_active: Instant,
    /// Plain TCP: answer bytes not yet sent (TLS keeps its own buffer).
    out: Vec<u8>,
    interest: Interest,
}

/// What to do with a connection after looking at it.
enum Action {
    Nothing,
    Close,
    /// Answer it ourselves (and close): status, counter, text for the client.
    Answer(u16, Reject, &'static str),
    Forward(Box<Pending>),
}

pub struct Reactor {
    sh: Arc<Shared>,
    ep: Epoll,
    listeners: Vec<Listener>,
    conns: HashMap<u64, Waiting>,
    next_id: u64,
    active: usize,
    per_ip: HashMap<IpAddr, usize>,
    queue: VecDeque<u64>,
    done_rx: Receiver<Done>,
    done_tx: Sender<Done>,
    wake_rx: UnixStream,
    head_limits: HeadLimits,
    last_sweep: Instant,
    workers: WorkerPool,
}

impl Reactor {
    /// Register the listeners and the wake-up socket; nothing is served until `run`.
    pub fn new(sh: Arc<Shared>, listeners: Vec<Listener>, wake_rx: UnixStream, done: (Sender<Done>, Receiver<Done>)) -> io::Result<Reactor> {
        let ep = Epoll::new(1024)?;
        wake_rx.set_nonblocking(true)?;
        ep.add(wake_rx.as_raw_fd(), WAKE, Interest::Read)?;
        for (i, l) in listeners.iter().enumerate() {
            l.sock.set_nonblocking(true)?;
            ep.add(l.sock.as_raw_fd(), LISTENER_BASE + i as u64, Interest::Read)?;
        }
        let head_limits = HeadLimits { max_line: sh.limits.max_request_line, max_head: sh.limits.max_head, max_headers: sh.limits.max_headers };
        Ok(Reactor {
            sh,
            ep,
            listeners,
            conns: HashMap::new(),
            next_id: 1,
            active: 0,
            per_ip: HashMap::new(),
            queue: VecDeque::new(),
            done_rx: done.1,
            done_tx: done.0,
            wake_rx,
            head_limits,
            last_sweep: Instant::now(),
            workers: WorkerPool::new("gateway-worker", WORKER_LINGER, WORKER_STACK),
        })
    }

    /// Serve until [`Shared::stopping`]; then close everything within the stop grace.
    pub fn run(mut self) {
        loop {
            let events = match self.ep.wait(TICK) {
                Ok(e) => e,
                Err(e) => {
                    self.sh.log.warn(format!("gateway: epoll_wait: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                    Vec::new()
                }
            };
            for ev in events {
                match ev.token {
                    WAKE => self.drain_wake(),
                    t if t >= LISTENER_BASE => self.accept_from((t - LISTENER_BASE) as usize),
                    id => self.on_event(id, ev),
                }
            }
            self.drain_done();
            if self.last_sweep.elapsed() >= TICK {
                self.sweep();
            }
            self.dispatch_queued();
            if self.sh.stopping() {
                self.shutdown();
                return;
            }
        }
    }

    /// Empty the wake-up socket (the channel is read after every wake-up anyway).
    fn drain_wake(&mut self) {
        let mut buf = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
    }

    // ---- accepting ------------------------------------------------------------------

    /// Accept what is pending on one listener, a bounded number at a time.
    fn accept_from(&mut self, idx: usize) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let Some(l) = self.listeners.get(idx) else { return };
            match l.sock.accept() {
                Ok((sock, peer)) => self.admit(idx, sock, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE/ENFILE/ENOMEM leave the listener readable: pause it, or the loop
                    // would spin. Aborted handshakes (ECONNABORTED) are just skipped.
                    let transient = matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM));
                    if !transient {
                        self.sh.log.warn(format!("gateway: accept on {}: {e}; pausing that port for {} ms", l.addr, ACCEPT_PAUSE.as_millis()));
                        let (fd, token) = (l.sock.as_raw_fd(), LISTENER_BASE + idx as u64);
                        let _ = self.ep.modify(fd, token, Interest::None);
                        if let Some(l) = self.listeners.get_mut(idx) {
                            l.paused_until = Some(after(Instant::now(), ACCEPT_PAUSE));
                        }
                        return;
                    }
                }
            }
        }
    }

    /// Take a new connection in: source check (Control port), connection limit, TLS state, epoll.
    fn admit(&mut self, idx: usize, sock: TcpStream, peer: SocketAddr) {
        let Some(l) = self.listeners.get(idx) else { return };
        let port = l.port;
        if port == Port::Control && !any_contains(&l.allow, peer.ip()) {
            self.sh.stats.reject(Reject::SourceNotAllowed, false);
            self.sh.log.warn(format!("gateway: control port {}: connection from {} refused: not in FL_CONTROL_ALLOW", l.addr, peer.ip()));
            return;
        }
        if self.sh.stats.connections_open.load(Relaxed) >= self.sh.limits.max_connections as u64 && !self.evict_one() {
            self.sh.stats.reject(Reject::ConnectionLimit, false);
            self.sh.log.warn(format!("gateway: connection from {peer} refused: {} connections open (the limit)", self.sh.limits.max_connections));
            return;
        }
        if sock.set_nonblocking(true).and_then(|_| sock.set_nodelay(true)).is_err() {
            return;
        }
        let tls = match self.sh.server_tls() {
            None => None,
            Some(cfg) => match rustls::ServerConnection::new(cfg) {
                Ok(c) => Some(Box::new(c)),
                Err(e) => {
                    self.sh.log.warn(format!("gateway: TLS state for {peer}: {e}"));
                    return;
                }
            },
        };
        let id = self.next_id;
        self.next_id += 1;
        let conn = ClientConn::new(id, sock, tls, peer, port, self.sh.stats.clone());
        if let Err(e) = self.ep.add(conn.sock.as_raw_fd(), id, Interest::Read) {
            self.sh.log.warn(format!("gateway: watch connection from {peer}: {e}"));
            return;
        }
        let now = Instant::now();
        self.conns.insert(
            id,
            Waiting {
                conn,
                buf: Vec::new(),
                scan: HeadScanner::default(),
                phase: Phase::Read,
                deadline: after(now, self.sh.limits.header_timeout),
                idle: false,
                last_active: now,
                out: Vec::new(),
                interest: Interest::Read,
            },
        );
    }

    /// At the connection limit, close the connection that has waited longest without
    /// sending anything — an idle keep-alive first, else a silent or slow new one — so that a
    /// flood of idle connections cannot lock SuperNodes out. Requests in flight are never
    /// touched. False when there is nothing to evict.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, w)| matches!(w.phase, Phase::Read))
            .min_by_key(|(_, w)| (!w.idle, w.last_active))
            .map(|(id, _)| *id);
        match victim {
            Some(id) => {
                self.sh.stats.reject(Reject::EvictedIdle, false);
                self.close(id);
                true
            }
            None => false,
        }
    }

    // ---- connection events --------------------------------------------------------------

    /// A readiness event for a waiting connection: advance it in its phase.
    fn on_event(&mut self, id: u64, ev: Event) {
        #[derive(Clone, Copy)]
        enum Kind {
            Read,
            Queued,
            Flush,
            Linger,
        }
        let kind = match self.conns.get(&id).map(|w| &w.phase) {
            None => return,
            Some(Phase::Read) => Kind::Read,
            Some(Phase::Queued(_)) => Kind::Queued,
            Some(Phase::Flush) => Kind::Flush,
            Some(Phase::Linger { .. }) => Kind::Linger,
        };
        let action = match kind {
            Kind::Read => self.advance_read(id),
            Kind::Queued if ev.hangup => Action::Close,
            Kind::Queued => Action::Nothing,
            Kind::Flush => self.advance_flush(id),
            Kind::Linger => self.advance_linger(id),
        };
        self.apply(id, action);
    }

    /// Carry out what looking at a connection decided.
    fn apply(&mut self, id: u64, action: Action) {
        match action {
            Action::Nothing => {}
            Action::Close => self.close(id),
            Action::Answer(status, why, text) => self.answer(id, status, why, text),
            Action::Forward(p) => self.forward(id, p),
        }
    }

    /// Read handshake and head bytes; decide when the head is complete.
    fn advance_read(&mut self, id: u64) -> Action {
        let limits = &self.sh.limits;
        let Some(w) = self.conns.get_mut(&id) else { return Action::Nothing };
        let was_handshaking = w.conn.is_handshaking();
        let r = w.conn.read_available(&mut w.buf, limits.max_head);
        let now = Instant::now();
        if r.bytes > 0 {
            w.last_active = now;
            if w.idle {
                w.idle = false;
                w.deadline = after(now, limits.header_timeout);
            }
        }
        let flushed = w.conn.flush_available(&mut w.out);
        if let Some(err) = r.error {
            if was_handshaking {
                self.sh.stats.reject(Reject::TlsHandshake, false);
                self.sh.log.debug(format!("gateway: TLS handshake with {} failed: {err}", w.conn.peer));
            } else {
                self.sh.stats.client_errors.fetch_add(1, Relaxed);
                self.sh.log.debug(format!("gateway: connection from {}: {err}", w.conn.peer));
            }
            return Action::Close;
        }
        if !w.buf.is_empty() {
            match w.scan.scan(&w.buf, &self.head_limits) {
                Err(e) => return Action::Answer(e.status(), e.into(), answer_text(e.status())),
                Ok(Some(end)) => return self.decide(id, end),
                Ok(None) => {}
            }
        }
        if r.eof {
            if w.idle {
                // A keep-alive client closing between requests: normal.
            } else if !w.buf.is_empty() {
                self.sh.stats.client_errors.fetch_add(1, Relaxed);
            }
            return Action::Close;
        }
        match flushed {
            Err(_) => Action::Close,
            Ok(all_sent) => {
                let want = if all_sent { Interest::Read } else { Interest::Both };
                self.set_interest(id, want);
                Action::Nothing
            }
        }
    }

    /// A complete head: parse, route, check framing and size. Nothing reaches Flower unless
    /// all of that passes.
    fn decide(&mut self, id: u64, end: usize) -> Action {
        let limits = &self.sh.limits;
        let Some(w) = self.conns.get_mut(&id) else { return Action::Nothing };
        let head = match http::parse_request_head(w.buf.get(..end).unwrap_or_default(), &self.head_limits) {
            Ok(h) => h,
            Err(e) => {
                self.sh.log.debug(format!("gateway: {} from {}: {e}", e.status(), w.conn.peer));
                return Action::Answer(e.status(), e.into(), answer_text(e.status()));
            }
        };
        let api = match route::route(w.conn.port, &head.method, &head.target) {
            Ok(api) => api,
            Err(why) => {
                self.sh.log.warn(format!(
                    "gateway: 403 {} {} from {} on the {} port: {why}",
                    head.method,
                    shorten(&head.target),
                    w.conn.peer.ip(),
                    w.conn.port.name()
                ));
                return Action::Answer(403, why.into(), forbidden_text(w.conn.port));
            }
        };
        let meta = match http::request_meta(&head) {
            Ok(m) => m,
            Err(e) => {
                self.sh.log.debug(format!("gateway: {} {} {} from {}: {e}", e.status(), head.method, shorten(&head.target), w.conn.peer));
                return Action::Answer(e.status(), e.into(), answer_text(e.status()));
            }
        };
        if let BodyLen::Length(n) = meta.body {
            if n > limits.max_body {
                self.sh.log.warn(format!("gateway: 413 {} {} from {}: {n} bytes, limit {}", head.method, shorten(&head.target), w.conn.peer, limits.max_body));
                return Action::Answer(413, Reject::BodyTooLarge, answer_text(413));
            }
        }
        let pre = w.buf.get(end..).unwrap_or_default().to_vec();
        w.buf = Vec::new();
        w.scan = HeadScanner::default();
        self.sh.stats.request(api);
        Action::Forward(Box::new(Pending { pre, head, meta, api }))
    }

    /// Hand an accepted request to a worker now, or park it until one is free.
    fn forward(&mut self, id: u64, p: Box<Pending>) {
        let Some(ip) = self.conns.get(&id).map(|w| w.conn.peer_ip()) else { return };
        if self.has_room(ip) {
            self.start_worker(id, *p);
            return;
        }
        let deadline = after(Instant::now(), self.sh.limits.queue_timeout);
        if let Some(w) = self.conns.get_mut(&id) {
            w.phase = Phase::Queued(p);
            w.deadline = deadline;
        }
        self.queue.push_back(id);
        self.set_interest(id, Interest::None);
    }

    /// Whether a request from `ip` may get a worker now (global and per-address limits).
    fn has_room(&self, ip: IpAddr) -> bool {
        self.active < self.sh.limits.max_active && self.per_ip.get(&ip).copied().unwrap_or(0) < self.sh.limits.max_active_per_ip
    }

    /// Move the connection out of the epoll set and hand the request to a worker.
    fn start_worker(&mut self, id: u64, p: Pending) {
        let Some(w) = self.conns.remove(&id) else { return };
        let _ = self.ep.delete(w.conn.sock.as_raw_fd());
        let ip = w.conn.peer_ip();
        if let Ok(clone) = w.conn.sock.try_clone() {
            self.sh.register(id, clone);
        }
        let Pending { pre, head, meta, api } = p;
        let job = Job { conn: w.conn, pre, head, meta, api };
        self.active += 1;
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.sh.stats.active.fetch_add(1, Relaxed);
        let (sh, tx) = (self.sh.clone(), self.done_tx.clone());
        let spawned = self.workers.run(Box::new(move || {
            let back = worker::exchange(job, &sh);
            sh.finished(&tx, Done { id, ip, back });
        }));
        if let Err(e) = spawned {
            // The job (and its connection) went down with the closure: count and go on.
            self.sh.stats.reject(Reject::Busy, false);
            self.sh.log.warn(format!("gateway: start a worker thread: {e}"));
            self.finish(Done { id, ip, back: None });
        }
    }

    /// Take back every finished exchange.
    fn drain_done(&mut self) {
        while let Ok(done) = self.done_rx.try_recv() {
            self.finish(done);
        }
    }

    /// A worker is done: free its slot; keep-alive connections wait for their next request.
    fn finish(&mut self, done: Done) {
        self.active = self.active.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&done.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&done.ip);
            }
        }
        self.sh.stats.active.fetch_sub(1, Relaxed);
        self.sh.unregister(done.id);
        let Some((conn, left)) = done.back else { return };
        if self.sh.stopping() {
            return;
        }
        let id = done.id;
        if self.ep.add(conn.sock.as_raw_fd(), id, Interest::Read).is_err() {
            return;
        }
        let now = Instant::now();
        let idle = left.is_empty();
        let deadline = after(now, if idle { self.sh.limits.idle_timeout } else { self.sh.limits.header_timeout });
        self.conns.insert(
            id,
            Waiting {
                conn,
                buf: left,
                scan: HeadScanner::default(),
                phase: Phase::Read,
                deadline,
                idle,
                last_active: now,
                out: Vec::new(),
                interest: Interest::Read,
            },
        );
        // A pipelined request may already be here (in `left` or in rustls's buffer).
        let action = self.advance_read(id);
        self.apply(id, action);
    }

    /// Give freed workers to parked requests, oldest first, skipping addresses at their limit.
    fn dispatch_queued(&mut self) {
        let mut i = 0;
        while i < self.queue.len() && self.active < self.sh.limits.max_active {
            let Some(&id) = self.queue.get(i) else { break };
            let ip = match self.conns.get(&id) {
                Some(w) if matches!(w.phase, Phase::Queued(_)) => w.conn.peer_ip(),
                _ => {
                    self.queue.remove(i);
                    continue;
                }
            };
            if !self.has_room(ip) {
                i += 1;
                continue;
            }
            self.queue.remove(i);
            let p = match self.conns.get_mut(&id).map(|w| std::mem::replace(&mut w.phase, Phase::Read)) {
                Some(Phase::Queued(p)) => p,
                _ => continue,
            };
            self.start_worker(id, *p);
        }
    }

    // ---- answers made here ------------------------------------------------------------

    /// Answer a request ourselves (counted), then close after flushing and lingering.
    fn answer(&mut self, id: u64, status: u16, why: Reject, text: &'static str) {
        self.sh.stats.reject(why, true);
        let linger = self.sh.limits.linger;
        let Some(w) = self.conns.get_mut(&id) else { return };
        w.conn.queue(&http::simple_response(status, text), &mut w.out);
        w.conn.queue_close_notify();
        w.phase = Phase::Flush;
        w.deadline = after(Instant::now(), linger);
        let action = self.advance_flush(id);
        self.apply(id, action);
    }

    /// Send what is queued of our answer; then half-close and linger.
    fn advance_flush(&mut self, id: u64) -> Action {
        let Some(w) = self.conns.get_mut(&id) else { return Action::Nothing };
        match w.conn.flush_available(&mut w.out) {
            Err(_) => Action::Close,
            Ok(false) => {
                self.set_interest(id, Interest::Write);
                Action::Nothing
            }
            Ok(true) => {
                let _ = w.conn.sock.shutdown(Shutdown::Write);
                w.phase = Phase::Linger { drained: 0 };
                self.set_interest(id, Interest::Read);
                self.advance_linger(id)
            }
        }
    }

    /// Read and drop what the client still sends (up to a limit), so that closing does not
    /// reset the connection before it has read our answer.
    fn advance_linger(&mut self, id: u64) -> Action {
        let max = self.sh.limits.linger_bytes;
        let Some(w) = self.conns.get_mut(&id) else { return Action::Nothing };
        let Phase::Linger { drained } = &mut w.phase else { return Action::Nothing };
        let mut scratch = [0u8; 16 * 1024];
        loop {
            match w.conn.sock.read(&mut scratch) {
                Ok(0) => return Action::Close,
                Ok(n) => {
                    *drained += n;
                    if *drained > max {
                        return Action::Close;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Action::Nothing,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Action::Close,
            }
        }
    }

    // ---- housekeeping -------------------------------------------------------------------

    /// Deadlines: idle and header timeouts, queue timeout, linger end; re-open paused listeners.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.last_sweep = now;
        let expired: Vec<u64> = self.conns.iter().filter(|(_, w)| now >= w.deadline).map(|(id, _)| *id).collect();
        for id in expired {
            let Some(w) = self.conns.get(&id) else { continue };
            let action = match &w.phase {
                Phase::Read if w.idle => {
                    self.sh.stats.closed_idle.fetch_add(1, Relaxed);
                    Action::Close
                }
                Phase::Read if !w.conn.is_handshaking() && !w.buf.is_empty() => {
                    self.sh.log.debug(format!("gateway: 408 to {}: no complete request head within {:?}", w.conn.peer, self.sh.limits.header_timeout));
                    Action::Answer(408, Reject::HeaderTimeout, answer_text(408))
                }
                Phase::Read => {
                    self.sh.stats.reject(Reject::HeaderTimeout, false);
                    self.sh.log.debug(format!("gateway: closing {}: no request within {:?}", w.conn.peer, self.sh.limits.header_timeout));
                    Action::Close
                }
                Phase::Queued(_) => {
                    self.sh.log.warn(format!("gateway: 503 to {}: no worker free within {:?}", w.conn.peer, self.sh.limits.queue_timeout));
                    Action::Answer(503, Reject::Busy, answer_text(503))
                }
                Phase::Flush | Phase::Linger { .. } => Action::Close,
            };
            self.apply(id, action);
        }
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if l.paused_until.is_some_and(|t| now >= t) {
                l.paused_until = None;
                let _ = self.ep.modify(l.sock.as_raw_fd(), LISTENER_BASE + i as u64, Interest::Read);
            }
        }
    }

    /// Change what epoll reports for a connection, if it changed.
    fn set_interest(&mut self, id: u64, want: Interest) {
        let Some(w) = self.conns.get_mut(&id) else { return };
        if w.interest != want && self.ep.modify(w.conn.sock.as_raw_fd(), id, want).is_ok() {
            w.interest = want;
        }
    }

    /// Forget a waiting connection; dropping it closes the socket and counts it.
    fn close(&mut self, id: u64) {
        if let Some(w) = self.conns.remove(&id) {
            let _ = self.ep.delete(w.conn.sock.as_raw_fd());
        }
    }

    /// Stop: close listeners and waiting connections, cut the sockets of requests in flight
    /// so their workers return at once, and wait for them within the stop grace.
    fn shutdown(&mut self) {
        for l in self.listeners.drain(..) {
            let _ = self.ep.delete(l.sock.as_raw_fd());
        }
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
        self.sh.cut_all();
        let deadline = after(Instant::now(), self.sh.limits.stop_grace);
        while self.active > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.sh.log.warn(format!("gateway: stopping with {} request(s) still unwinding", self.active));
                break;
            }
            match self.done_rx.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(done) => self.finish(done),
                Err(RecvTimeoutError::Timeout) => self.sh.cut_all(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.sh.pool.clear();
    }
}

/// `now + d`, saturating instead of panicking on an absurd duration (limits are checked at
/// start, this is the second line of defence in PID 1).
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).or_else(|| now.checked_add(Duration::from_secs(365 * 86_400))).unwrap_or(now)
}

/// The body of a 403: which APIs this port serves.
fn forbidden_text(port: Port) -> &'static str {
    match port {
        Port::Fleet => "forbidden: this port serves only the Flower Fleet API (/v1/fleet/*) and /health\n",
        Port::Control => "forbidden: this port serves only the Flower Control API (/v1/control/*) and /health\n",
    }
}

/// The body of an answer the gateway makes itself.
fn answer_text(status: u16) -> &'static str {
    match status {
        400 => "bad request\n",
        408 => "request timeout\n",
        413 => "content too large\n",
        414 => "request line too long\n",
        417 => "expectation failed: only 100-continue is supported\n",
        431 => "request header fields too large\n",
        501 => "not implemented: only the chunked transfer coding is supported\n",
        503 => "service unavailable: too many requests in flight, retry\n",
        505 => "HTTP version not supported: use HTTP/1.1\n",
        _ => "error\n",
    }
}

/// A request target for a log line (validated visible ASCII, so no control characters),
/// cut to 120 characters.
fn shorten(target: &str) -> String {
    if target.len() <= 120 {
        target.to_string()
    } else {
        format!("{}…", target.get(..120).unwrap_or_default())
    }
}
