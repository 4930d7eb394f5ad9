//! The OneGate client: one exchange per try through [`crate::http`] (plain http is the common
//! case; https through rustls 0.23 trusting Mozilla's roots, or the roots given with
//! [`Client::with_tls_config`]), a wall-clock timeout on every try (name resolution included),
//! answers bounded by [`MAX_RESPONSE`], redirects never followed, bounded retries with
//! exponential backoff for transient failures. The token never appears in an error: the HTTP
//! layer builds no text from request headers, and a server that echoes it back gets it
//! replaced ([`Client::send_once`]).

use super::error::OneGateError;
use super::model::{self, ServiceInfo, VmInfo};
use super::wire::{self, HttpRequest};
use super::{BACKOFF_INITIAL, BACKOFF_MAX, CALL_ATTEMPTS, MAX_RESPONSE, REQUEST_TIMEOUT};
use crate::config::Endpoint;
use crate::http;
use crate::secret::Secret;
use std::sync::Arc;
use std::time::Duration;

/// How long and how often a call tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Wall-clock limit of one try: resolve, connect, send, read the whole answer.
    pub timeout: Duration,
    /// Tries of [`Client::call`] (at least 1).
    pub attempts: u32,
    /// First pause after a failed try; doubled after each, up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { timeout: REQUEST_TIMEOUT, attempts: CALL_ATTEMPTS, backoff: BACKOFF_INITIAL, backoff_max: BACKOFF_MAX }
    }
}

impl Policy {
    /// The pause after failed try number `n` (1-based): `backoff · 2^(n-1)`, capped.
    pub fn pause(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.backoff_max)
    }

    /// The longest a [`Client::call`] can take: every try timing out plus every pause.
    pub fn bound(&self) -> Duration {
        let tries = self.attempts.max(1);
        let pauses: Duration = (1..tries).map(|n| self.pause(n)).sum();
        self.timeout * tries + pauses
    }

    /// The longest one try can take.
    pub fn bound_of_one_try(&self) -> Duration {
        self.timeout
    }
}

/// A 2xx answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// Talks to OneGate as one VM (its VMID and token).
#[derive(Debug, Clone)]
pub struct Client {
    https: bool,
    /// A DNS name or an IP address (IPv6 without brackets).
    host: String,
    port: u16,
    vmid: u64,
    token: Secret,
    policy: Policy,
    /// The https trust when not Mozilla's roots.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Client {
    /// A client for ONEGATE_ENDPOINT (host name or IP; its path is ignored, as `onegate.rb`
    /// sends absolute paths), VMID and the trimmed token.
    pub fn new(endpoint: &Endpoint, vmid: u64, token: Secret) -> Client {
        Client {
            https: endpoint.https,
            host: endpoint.host.to_string(),
            port: endpoint.port,
            vmid,
            token,
            policy: Policy::default(),
            tls: None,
        }
    }

    /// The same client trusting the roots of `config` for https instead of Mozilla's (a
    /// OneGate behind a private CA; the tests' own CA).
    pub fn with_tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Client {
        self.tls = Some(config);
        self
    }

    /// The same client with other timeouts and retries (tests, the publisher).
    pub fn with_policy(mut self, policy: Policy) -> Client {
        self.policy = policy;
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The VMID this client speaks for (`X-ONEGATE-VMID`).
    pub fn vmid(&self) -> u64 {
        self.vmid
    }

    /// `http://host:port`, for messages (never carries the token).
    pub fn base_url(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{}://{host}:{}", if self.https { "https" } else { "http" }, self.port)
    }

    /// One try: send, read the answer, map non-2xx to an error. No retry, no sleep.
    pub fn send_once(&self, req: &HttpRequest) -> Result<Reply, OneGateError> {
        self.exchange(req).map_err(|e| self.redacted(e))
    }

    /// [`Client::send_once`] before the token is scrubbed from its error.
    fn exchange(&self, req: &HttpRequest) -> Result<Reply, OneGateError> {
        let method = req.method.as_str();
        let path = req.route().to_string();
        let transport =
            |cause: String| OneGateError::Transport { method, path: path.clone(), url: self.base_url(), cause };
        let tls = match (self.https, &self.tls) {
            (false, _) => None,
            (true, Some(config)) => Some(config.clone()),
            (true, None) => Some(http::mozilla_roots().map_err(|e| transport(e.to_string()))?),
        };
        let endpoint = http::Endpoint { host: self.host.clone(), port: self.port, tls, addr: None };
        let headers = wire::headers(req, self.vmid, self.token.expose());
        let request = http::Request { method, path: &req.path, headers: &headers, body: req.body.as_bytes() };
        let resp =
            http::send(&endpoint, &request, self.policy.timeout, MAX_RESPONSE).map_err(|e| transport(e.to_string()))?;
        let status = resp.status;
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        log::debug!("onegate: {method} {} -> {status} ({} bytes)", req.path, body.len());
        match status {
            200..=299 => Ok(Reply { status, body }),
            401 => Err(OneGateError::TokenRejected { method, path, vmid: self.vmid, body }),
            _ => Err(OneGateError::Http { method, path, status, body }),
        }
    }

    /// `e` with every copy of the token replaced: a server (or a proxy in front of it) may
    /// quote the request's headers back in an error body.
    fn redacted(&self, e: OneGateError) -> OneGateError {
        let token = self.token.expose();
        if token.is_empty() {
            return e;
        }
        let scrub = |s: String| if s.contains(token) { s.replace(token, "[token]") } else { s };
        match e {
            OneGateError::Transport { method, path, url, cause } => {
                OneGateError::Transport { method, path, url, cause: scrub(cause) }
            }
            OneGateError::TokenRejected { method, path, vmid, body } => {
                OneGateError::TokenRejected { method, path, vmid, body: scrub(body) }
            }
            OneGateError::Http { method, path, status, body } => {
                OneGateError::Http { method, path, status, body: scrub(body) }
            }
            OneGateError::BadResponse { method, path, why, body } => {
                OneGateError::BadResponse { method, path, why: scrub(why), body: scrub(body) }
            }
        }
    }

    /// Up to `policy.attempts` tries of `attempt` while its failure is transient, pausing
    /// between them through `sleep` (which returns false to give up early, e.g. on SIGTERM).
    pub fn retrying<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, OneGateError>,
        sleep: &mut dyn FnMut(Duration) -> bool,
    ) -> Result<T, OneGateError> {
        let tries = self.policy.attempts.max(1);
        let mut n = 1;
        loop {
            match attempt() {
                Ok(r) => return Ok(r),
                Err(e) if n < tries && e.is_transient() => {
                    log::debug!("onegate: try {n}/{tries} failed: {e}");
                    if !sleep(self.policy.pause(n)) {
                        return Err(e);
                    }
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`Client::send_once`] with retries, pausing through `sleep`.
    pub fn call_with(&self, req: &HttpRequest, sleep: &mut dyn FnMut(Duration) -> bool) -> Result<Reply, OneGateError> {
        self.retrying(|| self.send_once(req), sleep)
    }

    /// [`Client::call_with`] pausing with `thread::sleep`; returns within [`Policy::bound`].
    pub fn call(&self, req: &HttpRequest) -> Result<Reply, OneGateError> {
        self.call_with(req, &mut thread_sleep)
    }

    /// A GET with retries whose body must parse (garbage is retried like a 5xx).
    fn get_parsed<T>(&self, req: &HttpRequest, parse: fn(&str) -> Result<T, String>) -> Result<T, OneGateError> {
        self.retrying(|| self.get_once(req, parse), &mut thread_sleep)
    }

    /// `PUT /vm` merging `attrs` into USER_TEMPLATE, in one request, with retries (the
    /// [`super::Publisher`] is the way to publish during boot: it never blocks the caller).
    pub fn put_vm(&self, attrs: &super::Attributes) -> Result<(), OneGateError> {
        self.call(&HttpRequest::put_vm_update(attrs.pairs())).map(|_| ())
    }

    /// `PUT /vm` type=2 deleting `key`, when `GET /vm` shows it in USER_TEMPLATE: since
    /// OpenNebula 7.2 deleting a missing attribute answers 500 "Internal server error" (before:
    /// "attribute not found", which also counts as done).
    pub fn delete_attr(&self, key: &str) -> Result<(), OneGateError> {
        if !self.get_vm()?.user_template.contains_key(key) {
            return Ok(());
        }
        match self.call(&HttpRequest::put_vm_delete(key)) {
            Err(e) if e.status() == Some(500) && e.body().is_some_and(|b| b.contains("attribute not found")) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// `GET /vm`.
    pub fn get_vm(&self) -> Result<VmInfo, OneGateError> {
        self.get_parsed(&HttpRequest::get_vm(), model::parse_vm)
    }

    /// `GET /vms/:id` (a VM of the same service).
    pub fn get_vm_by_id(&self, id: u64) -> Result<VmInfo, OneGateError> {
        self.get_parsed(&HttpRequest::get_vm_by_id(id), model::parse_vm)
    }

    /// `GET /service` (`extended`: full VMs, one `vm.info` per node on the server).
    pub fn get_service(&self, extended: bool) -> Result<ServiceInfo, OneGateError> {
        self.get_parsed(&HttpRequest::get_service(extended), model::parse_service)
    }

    /// One try of a GET whose body is parsed by `parse` (discovery paces its own retries).
    pub fn get_once<T>(&self, req: &HttpRequest, parse: fn(&str) -> Result<T, String>) -> Result<T, OneGateError> {
        let reply = self.send_once(req)?;
        parsed(req, &reply, parse).map_err(|e| self.redacted(e))
    }
}

/// The pause of [`Client::call`]: a plain sleep, never interrupted.
fn thread_sleep(d: Duration) -> bool {
    std::thread::sleep(d);
    true
}

/// The parsed body, or a [`OneGateError::BadResponse`] naming the request.
pub(super) fn parsed<T>(
    req: &HttpRequest,
    reply: &Reply,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, OneGateError> {
    parse(&reply.body).map_err(|why| OneGateError::BadResponse {
        method: req.method.as_str(),
        path: req.route().to_string(),
        why,
        body: reply.body.clone(),
    })
}
