//! The SuperLink's front door (issue #10): a TLS-terminating HTTP/1.1 gateway that lets
//! SuperNodes reach Flower's Fleet API and nothing else.
//!
//! Flower 1.42 serves Fleet (`/v1/fleet/*`), Control (`/v1/control/*`: start and stop runs,
//! i.e. run code on the SuperLink), Runtime and `/health` on one port, and open-source Flower
//! has no authentication on Control. So Flower binds 127.0.0.1 only, and this gateway:
//!
//! - listens on the NIC address(es) and the published port (FL_ENDPOINT, 8000), terminates
//!   TLS with the SuperLink certificate made by [`crate::tls`], and forwards only
//!   `/v1/fleet/*` and `/health` to Flower over loopback (TLS verified against the cluster CA
//!   for 127.0.0.1, or plain HTTP when Flower runs `--insecure`); anything else gets 403
//!   before a byte reaches Flower;
//! - optionally serves `/v1/control/*` (and `/health`) on a second port (9093 by default)
//!   to the source addresses in FL_CONTROL_ALLOW only; when that is empty, on loopback only;
//! - with FL_TLS_ENABLED=NO still filters paths, over plain HTTP, and says so loudly.
//!
//! Design (see docs/gateway.md for the numbers behind it): one reactor thread holds every
//! connection that is waiting (TLS handshake, request head, keep-alive idle) in an epoll set;
//! a request whose head is complete and allowed is forwarded by a short-lived worker thread
//! with blocking I/O, then the connection returns to the reactor. Heads are parsed strictly
//! and re-serialised; bodies are streamed and re-framed, never buffered whole. Every error is
//! a value, counted in [`Stats`] and logged once (rate-limited); nothing here panics, and a
//! broken connection only ends itself.

mod body;
mod bufsock;
mod cli;
mod conn;
mod poller;
mod reactor;
pub mod route;
mod stats;
mod upstream;
mod worker;
mod workers;

pub use cli::cli;
/// The HTTP/1.1 head parser and chunked coding live in [`crate::http`] (the OneGate client
/// reads its answers with them too); the gateway's modules and the fuzz target know them here.
pub use crate::http::{chunked, head as http};
#[cfg(test)]
pub(crate) use cli::parse as cli_parse;
pub use route::{Api, Port};
pub use stats::{Reject, Stats, UpstreamError};

use crate::error::{Ctx, Error, Result};
use crate::vocab::{CONTROL_ALLOW_VAR, Cidr};
use reactor::{Done, Listener, Reactor};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use upstream::{Pool, UpstreamTarget};

/// Flower's default port, published as FL_ENDPOINT.
pub const DEFAULT_FLEET_PORT: u16 = 8000;
/// The Control port: the number Flower used for its Control API before 1.36, which
/// operators' firewall rules and docs may still know.
pub const DEFAULT_CONTROL_PORT: u16 = 9093;

/// Limits and timeouts. The defaults are documented (and justified) in docs/gateway.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Client connections open at once (both ports). At the limit, the connection that has
    /// been silent longest is closed to make room; requests in flight are never closed.
    pub max_connections: usize,
    /// Requests forwarded at once (one worker thread each); more wait, not reading.
    pub max_active: usize,
    /// Requests forwarded at once from one source address.
    pub max_active_per_ip: usize,
    pub max_request_line: usize,
    /// The whole request head.
    pub max_head: usize,
    pub max_headers: usize,
    /// A request body (decoded). Flower 1.42 sends a model as array chunks of at most
    /// 5 MiB, one `push-object` request each; a FAB is at most 10 MB.
    pub max_body: u64,
    /// From accept (or the first byte of a request) to a complete head: slow-loris bound.
    pub header_timeout: Duration,
    /// Keep-alive: how long a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// A request or response body may stall this long (no byte moved) before it is cut;
    /// also the grace period before `min_body_rate` applies.
    pub body_timeout: Duration,
    /// After `body_timeout`, a body must have moved at least this many bytes a second on
    /// average (Fleet requests and responses, Control requests), so a trickle cannot hold a
    /// worker for hours.
    pub min_body_rate: u64,
    pub upstream_connect_timeout: Duration,
    /// Flower's answer to a Fleet request.
    pub upstream_timeout: Duration,
    /// Flower's answer on the Control port (`flwr log --stream` keeps a response open).
    pub control_upstream_timeout: Duration,
    /// How long an accepted request may wait for a free worker before a 503.
    pub queue_timeout: Duration,
    /// After an error answer: how long, and how many bytes, to read and discard before
    /// closing, so the client gets the answer rather than a reset.
    pub linger: Duration,
    pub linger_bytes: usize,
    /// How long [`GatewayHandle::stop`] waits for requests in flight.
    pub stop_grace: Duration,
    /// Idle connections to Flower kept for reuse, and for how long (below uvicorn's 5 s).
    pub upstream_pool: usize,
    pub upstream_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_active: 256,
            max_active_per_ip: 64,
            max_request_line: 8 * 1024,
            max_head: 32 * 1024,
            max_headers: 100,
            max_body: 64 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            min_body_rate: 8 * 1024,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(300),
            control_upstream_timeout: Duration::from_secs(3600),
            queue_timeout: Duration::from_secs(30),
            linger: Duration::from_secs(2),
            linger_bytes: 1024 * 1024,
            stop_grace: Duration::from_secs(5),
            upstream_pool: 32,
            upstream_idle: Duration::from_secs(2),
        }
    }
}

/// The SuperLink server certificate (chain) and key, PEM files as [`crate::tls`] writes them
/// (`ContainerFiles::server_cert` / `server_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The Control port: where it listens and which sources may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    pub listen: Vec<SocketAddr>,
    /// FL_CONTROL_ALLOW. Empty: loopback sources only, and `listen` must be loopback.
    pub allow: Vec<Cidr>,
}

impl ControlConfig {
    /// FL_CONTROL_ALLOW to a Control port: empty → `127.0.0.1:port`, loopback clients only;
    /// otherwise `<each NIC address>:port`, clients from `allow` only.
    pub fn from_allow(allow: Vec<Cidr>, nic_addrs: &[IpAddr], port: u16) -> ControlConfig {
        let listen = if allow.is_empty() {
            vec![SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port)]
        } else {
            nic_addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
        };
        ControlConfig { listen, allow }
    }

    /// Who may connect: `allow`, or loopback when it is empty.
    fn effective_allow(&self) -> Vec<Cidr> {
        if self.allow.is_empty() { crate::vocab::loopback() } else { self.allow.clone() }
    }
}

/// Everything [`start`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Fleet port: the NIC address(es) and the FL_ENDPOINT port.
    pub listen: Vec<SocketAddr>,
    /// The Control port, or `None` for none at all.
    pub control: Option<ControlConfig>,
    /// TLS towards clients; `None` = plain HTTP (FL_TLS_ENABLED=NO), logged loudly.
    pub tls: Option<ServerTlsFiles>,
    /// Flower on loopback (`--host 127.0.0.1 --port …`).
    pub upstream: SocketAddr,
    /// The cluster CA (`ca.crt`) when Flower serves TLS; `None` when it runs `--insecure`.
    pub upstream_ca: Option<PathBuf>,
    pub limits: Limits,
}

/// State shared by the reactor and the workers. Only [`Stats`] is read from outside.
pub(crate) struct Shared {
    limits: Limits,
    stats: Arc<Stats>,
    target: UpstreamTarget,
    pool: Pool,
    log: RateLog,
    stop: AtomicBool,
    /// Sockets of requests in flight (client, upstream), so that stop can cut them.
    registry: Mutex<HashMap<u64, (TcpStream, Option<TcpStream>)>>,
    server_tls: Mutex<Option<Arc<ServerConfig>>>,
    tls_files: Option<ServerTlsFiles>,
    wake: UnixStream,
}

impl Shared {
    /// Whether stop was asked for (workers then close instead of keeping connections).
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The current server configuration (replaced by `reload_tls`), for a new connection.
    fn server_tls(&self) -> Option<Arc<ServerConfig>> {
        self.server_tls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Remember the socket of a request handed to a worker, so that stop can cut it.
    fn register(&self, id: u64, client: TcpStream) {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (client, None));
    }

    /// Remember the upstream socket of a request in flight, so that stop can cut it too.
    fn register_upstream(&self, id: u64, up: &TcpStream) {
        if let Ok(clone) = up.try_clone() {
            if let Some(entry) = self.registry.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&id) {
                entry.1 = Some(clone);
            }
        }
    }

    /// The request no longer uses that upstream connection (it went back to the pool).
    fn unregister_upstream(&self, id: u64) {
        if let Some(entry) = self.registry.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&id) {
            entry.1 = None;
        }
    }

    /// The request is done: forget its sockets.
    fn unregister(&self, id: u64) {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Shut down every socket of every request in flight: their workers' blocking calls
    /// return at once with an error.
    fn cut_all(&self) {
        for (client, up) in self.registry.lock().unwrap_or_else(|e| e.into_inner()).values() {
            let _ = client.shutdown(Shutdown::Both);
            if let Some(up) = up {
                let _ = up.shutdown(Shutdown::Both);
            }
        }
    }

    /// A worker is done: tell the reactor and wake it.
    fn finished(&self, tx: &Sender<Done>, done: Done) {
        if tx.send(done).is_ok() {
            self.wake();
        }
    }

    /// Wake the reactor out of epoll_wait.
    fn wake(&self) {
        // Non-blocking; a full pipe already means "wake up".
        let _ = (&self.wake).write(&[1]);
    }
}

/// A running gateway. Dropping it stops it (within the stop grace).
pub struct GatewayHandle {
    shared: Arc<Shared>,
    reactor: Option<JoinHandle<()>>,
    exited: Receiver<()>,
    local: Vec<(Port, SocketAddr)>,
    info: serde_json::Value,
}

impl GatewayHandle {
    /// The counters and the configuration as one JSON value for `/status` (`"gateway"`).
    /// Lock-free: atomics only.
    pub fn stats_json(&self) -> serde_json::Value {
        let mut v = self.shared.stats.to_json();
        if let (Some(obj), Some(info)) = (v.as_object_mut(), self.info.as_object()) {
            for (k, val) in info {
                obj.insert(k.clone(), val.clone());
            }
        }
        v
    }

    /// The counters themselves, e.g. to keep in the supervisor.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// The addresses actually bound (port 0 in the config becomes the ephemeral port).
    pub fn local_addrs(&self) -> &[(Port, SocketAddr)] {
        &self.local
    }

    /// Re-read the server certificate and key (after `tls::superlink_generated` re-issued
    /// them); new connections use the new ones, existing ones keep theirs.
    pub fn reload_tls(&self) -> Result<()> {
        let Some(files) = &self.shared.tls_files else { return Ok(()) };
        let cfg = load_server_tls(files)?;
        *self.shared.server_tls.lock().unwrap_or_else(|e| e.into_inner()) = Some(cfg);
        log::info!("gateway: reloaded the server certificate from {}", files.cert.display());
        Ok(())
    }

    /// Stop: close the ports and every connection; requests in flight are cut after the
    /// stop grace. Returns false if the reactor did not finish within `bound` (it is then
    /// left to finish on its own; nothing waits on it).
    pub fn stop(&mut self, bound: Duration) -> bool {
        let Some(reactor) = self.reactor.take() else { return true };
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake();
        match self.exited.recv_timeout(bound) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = reactor.join();
                log::info!("gateway: stopped");
                true
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                log::warn!("gateway: did not stop within {bound:?}; leaving it to finish");
                false
            }
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        let bound = self.shared.limits.stop_grace.saturating_add(Duration::from_secs(1));
        self.stop(bound);
    }
}

/// Bind the ports and start serving. Errors (a port in use, unreadable certificates, an
/// invalid configuration) name what failed; nothing is left running on error.
pub fn start(config: GatewayConfig) -> Result<GatewayHandle> {
    validate(&config)?;
    let limits = fit_descriptor_limit(config.limits.clone());
    let server_tls = config.tls.as_ref().map(load_server_tls).transpose()?;
    let upstream_tls = match &config.upstream_ca {
        None => None,
        Some(ca) => Some((upstream_client(ca)?, ServerName::IpAddress(config.upstream.ip().into()))),
    };

    let mut listeners = Vec::new();
    for addr in &config.listen {
        let sock = TcpListener::bind(addr).with_ctx(|| format!("listen on {addr} (Fleet port)"))?;
        let local = sock.local_addr().with_ctx(|| format!("read the address of {addr}"))?;
        listeners.push(Listener::new(sock, Port::Fleet, local, Vec::new()));
    }
    if let Some(control) = &config.control {
        for addr in &control.listen {
            let sock = TcpListener::bind(addr).with_ctx(|| format!("listen on {addr} (Control port)"))?;
            let local = sock.local_addr().with_ctx(|| format!("read the address of {addr}"))?;
            listeners.push(Listener::new(sock, Port::Control, local, control.effective_allow()));
        }
    }
    let local: Vec<(Port, SocketAddr)> = listeners.iter().map(|l| (l.port, l.addr)).collect();

    let (wake_tx, wake_rx) = UnixStream::pair().ctx("create the gateway's wake-up socket")?;
    wake_tx.set_nonblocking(true).ctx("configure the gateway's wake-up socket")?;
    let shared = Arc::new(Shared {
        stats: Arc::new(Stats::default()),
        target: UpstreamTarget { addr: config.upstream, tls: upstream_tls, connect_timeout: limits.upstream_connect_timeout },
        pool: Pool::new(limits.upstream_pool, limits.upstream_idle),
        log: RateLog::new(),
        stop: AtomicBool::new(false),
        registry: Mutex::new(HashMap::new()),
        server_tls: Mutex::new(server_tls),
        tls_files: config.tls.clone(),
        wake: wake_tx,
        limits,
    });
    let (done_tx, done_rx) = mpsc::channel();
    let reactor = Reactor::new(shared.clone(), listeners, wake_rx, (done_tx, done_rx)).ctx("set up the gateway's epoll loop")?;
    let (exit_tx, exited) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("gateway".into())
        .spawn(move || {
            reactor.run();
            let _ = exit_tx.send(());
        })
        .ctx("start the gateway thread")?;

    log_start(&config, &local);
    let info = serde_json::json!({
        "listen": local.iter().map(|(p, a)| serde_json::json!({"port": p.name(), "address": a.to_string()})).collect::<Vec<_>>(),
        "tls": config.tls.is_some(),
        "upstream": config.upstream.to_string(),
        "upstream_tls": config.upstream_ca.is_some(),
        "control_allow": config.control.as_ref().map(|c| c.effective_allow().iter().map(Cidr::to_string).collect::<Vec<_>>()),
    });
    Ok(GatewayHandle { shared, reactor: Some(handle), exited, local, info })
}

/// Refuse configurations that would expose Control or make no sense.
fn validate(config: &GatewayConfig) -> Result<()> {
    if config.listen.is_empty() {
        return Err(Error::msg("start the gateway", "no Fleet listen address given"));
    }
    if let Some(control) = &config.control {
        if control.allow.is_empty() {
            if let Some(addr) = control.listen.iter().find(|a| !a.ip().is_loopback()) {
                return Err(Error::msg(
                    "start the gateway",
                    format!("{CONTROL_ALLOW_VAR} is empty, so the Control port may only listen on loopback, not {addr}"),
                ));
            }
        }
    }
    let l = &config.limits;
    let zero = [
        ("max_connections", l.max_connections == 0),
        ("max_active", l.max_active == 0),
        ("max_active_per_ip", l.max_active_per_ip == 0),
        ("max_head", l.max_head < 64),
        ("max_request_line", l.max_request_line < 16),
        ("max_headers", l.max_headers == 0),
        ("header_timeout", l.header_timeout.is_zero()),
        ("idle_timeout", l.idle_timeout.is_zero()),
        ("body_timeout", l.body_timeout.is_zero()),
        ("upstream_connect_timeout", l.upstream_connect_timeout.is_zero()),
        ("upstream_timeout", l.upstream_timeout.is_zero()),
        ("control_upstream_timeout", l.control_upstream_timeout.is_zero()),
    ];
    if let Some((name, _)) = zero.iter().find(|(_, bad)| *bad) {
        return Err(Error::msg("start the gateway", format!("limit {name} is too small")));
    }
    let week = Duration::from_secs(7 * 86_400);
    let durations = [
        ("header_timeout", l.header_timeout),
        ("idle_timeout", l.idle_timeout),
        ("body_timeout", l.body_timeout),
        ("upstream_connect_timeout", l.upstream_connect_timeout),
        ("upstream_timeout", l.upstream_timeout),
        ("control_upstream_timeout", l.control_upstream_timeout),
        ("queue_timeout", l.queue_timeout),
        ("linger", l.linger),
        ("stop_grace", l.stop_grace),
        ("upstream_idle", l.upstream_idle),
    ];
    if let Some((name, _)) = durations.iter().find(|(_, d)| *d > week) {
        return Err(Error::msg("start the gateway", format!("limit {name} is longer than a week")));
    }
    if !config.upstream.ip().is_loopback() {
        log::warn!("gateway: upstream {} is not a loopback address: Flower should bind 127.0.0.1 only", config.upstream);
    }
    Ok(())
}

/// Make sure the process may open enough descriptors: each connection is one, each request
/// in flight up to three more (its upstream, and the duplicates kept to cut them at stop).
/// Raises RLIMIT_NOFILE (it is 1024 for PID 1 by default); if that is not allowed, lowers
/// `max_connections` to fit and says so.
fn fit_descriptor_limit(mut limits: Limits) -> Limits {
    let need = limits.max_connections + 3 * limits.max_active + limits.upstream_pool + 128;
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return limits;
    }
    if rl.rlim_cur as u128 >= need as u128 {
        return limits;
    }
    let want = libc::rlimit { rlim_cur: need as libc::rlim_t, rlim_max: rl.rlim_max.max(need as libc::rlim_t) };
    // SAFETY: setrlimit reads one rlimit we own; failure is reported through the return value.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        log::info!("gateway: raised the open-files limit to {need} (was {})", rl.rlim_cur);
        return limits;
    }
    let up = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
    // SAFETY: as above; raising the soft limit up to the hard limit is always permitted.
    let cur = if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &up) } == 0 { rl.rlim_max } else { rl.rlim_cur };
    let fit = (cur as u128).saturating_sub((3 * limits.max_active + limits.upstream_pool + 128) as u128).max(16) as usize;
    if fit < limits.max_connections {
        log::warn!("gateway: the open-files limit is {cur}: serving at most {fit} connections instead of {}", limits.max_connections);
        limits.max_connections = fit;
    }
    limits
}

/// The rustls server configuration from the certificate and key files, with the tls
/// module's own checks (a key that is not the certificate's is refused).
fn load_server_tls(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>> {
    let (cert_what, key_what) = (files.cert.display().to_string(), files.key.display().to_string());
    let cert_pem = std::fs::read(&files.cert).with_ctx(|| format!("read the gateway certificate {cert_what}"))?;
    let key_pem = std::fs::read(&files.key).with_ctx(|| format!("read the gateway key {key_what}"))?;
    let load = || -> std::result::Result<ServerConfig, crate::tls::TlsError> {
        let chain = crate::tls::certs_from_pem(&cert_what, &cert_pem)?;
        let key = crate::tls::key_from_pem(&key_what, &key_pem)?;
        crate::tls::server_config(&cert_what, &key_what, chain, key)
    };
    let mut cfg = load().ctx("load the gateway's TLS certificate")?;
    // HTTP/1.1 only; clients that offer h2 and http/1.1 (curl) pick http/1.1.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A TLS client configuration trusting only the cluster CA, for the loopback hop to Flower.
fn upstream_client(ca: &std::path::Path) -> Result<Arc<ClientConfig>> {
    let what = ca.display().to_string();
    let pem = std::fs::read(ca).with_ctx(|| format!("read the cluster CA {what}"))?;
    let cas = crate::tls::certs_from_pem(&what, &pem).ctx("load the cluster CA for the gateway")?;
    let mut roots = RootCertStore::empty();
    for c in cas {
        roots.add(c).map_err(|e| Error::msg(format!("load the cluster CA {what}"), e.to_string()))?;
    }
    let cfg = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::msg("configure TLS towards Flower", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// What the gateway serves, where, and loudly when it is not encrypted.
fn log_start(config: &GatewayConfig, local: &[(Port, SocketAddr)]) {
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    for (port, addr) in local {
        let what = match port {
            Port::Fleet => "Fleet API (/v1/fleet/*) and /health".to_string(),
            Port::Control => format!(
                "Control API (/v1/control/*) and /health for {}",
                config.control.as_ref().map(|c| c.effective_allow().iter().map(Cidr::to_string).collect::<Vec<_>>().join(" ")).unwrap_or_default()
            ),
        };
        log::info!("gateway: {scheme}://{addr} serves {what}; everything else gets 403");
    }
    log::info!(
        "gateway: forwarding to Flower at {}://{}{}",
        if config.upstream_ca.is_some() { "https" } else { "http" },
        config.upstream,
        if config.upstream_ca.is_some() { " (certificate checked against the cluster CA)" } else { "" }
    );
    if config.tls.is_none() {
        log::warn!("gateway: ********************************************************************");
        log::warn!("gateway: TLS IS DISABLED (FL_TLS_ENABLED=NO): the gateway serves plain HTTP; model updates");
        log::warn!("gateway: and node keys travel UNENCRYPTED between SuperNodes and this VM. Paths are still");
        log::warn!("gateway: filtered: only /v1/fleet/* and /health reach Flower on the Fleet port.");
        log::warn!("gateway: ********************************************************************");
    }
}

/// Per-connection events (403s, timeouts, upstream failures) at most [`LOG_BURST`] lines a
/// minute, so a flood cannot flood the console; the rest are counted and summarised. The
/// counters in [`Stats`] see every event.
pub(crate) struct RateLog {
    state: Mutex<(Instant, u32, u64)>,
}

const LOG_BURST: u32 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(60);

impl RateLog {
    /// A fresh window.
    fn new() -> RateLog {
        RateLog { state: Mutex::new((Instant::now(), 0, 0)) }
    }

    /// Whether one more line fits in this minute (and summarise the last one when it is over).
    fn allow(&self) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.0.elapsed() >= LOG_WINDOW {
            if st.2 > 0 {
                log::warn!("gateway: {} more connection event(s) in the last minute not logged (see /status)", st.2);
            }
            *st = (Instant::now(), 0, 0);
        }
        if st.1 < LOG_BURST {
            st.1 += 1;
            true
        } else {
            st.2 += 1;
            false
        }
    }

    /// A warning, if the rate allows.
    pub(crate) fn warn(&self, msg: String) {
        if self.allow() {
            log::warn!("{msg}");
        }
    }

    /// A debug line, if debug logging is on and the rate allows.
    pub(crate) fn debug(&self, msg: String) {
        if log::log_enabled!(log::Level::Debug) && self.allow() {
            log::debug!("{msg}");
        }
    }
}

#[cfg(test)]
mod tests;
