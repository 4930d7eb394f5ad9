//! The HTTP client: one exchange per try with minreq (plain http is the common case; https
//! through minreq's rustls with the webpki roots), a wall-clock timeout on every try, bounded
//! retries with exponential backoff for transient failures.

use super::error::OneGateError;
use super::model::{self, ServiceInfo, VmInfo};
use super::wire::{self, HttpRequest, Method};
use super::{BACKOFF_INITIAL, BACKOFF_MAX, CALL_ATTEMPTS, REQUEST_TIMEOUT};
use crate::config::{Endpoint, Host};
use crate::secret::Secret;
use std::net::IpAddr;
use std::time::Duration;

/// How long and how often a call tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Wall-clock limit of one try (minreq counts whole seconds: rounded up, at least 1 s).
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
        self.timeout_secs_duration() * tries + pauses
    }

    /// The longest one try can take (the timeout in minreq's whole seconds).
    pub fn bound_of_one_try(&self) -> Duration {
        self.timeout_secs_duration()
    }

    fn timeout_secs(&self) -> u64 {
        let d = self.timeout;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }

    fn timeout_secs_duration(&self) -> Duration {
        Duration::from_secs(self.timeout_secs())
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
    /// Host as it goes in a URL (IPv6 in brackets).
    host: String,
    port: u16,
    vmid: u64,
    token: Secret,
    policy: Policy,
}

impl Client {
    /// A client for ONEGATE_ENDPOINT (host name or IP; its path is ignored, as `onegate.rb`
    /// sends absolute paths), VMID and the trimmed token.
    pub fn new(endpoint: &Endpoint, vmid: u64, token: Secret) -> Client {
        let host = match &endpoint.host {
            Host::Ip(IpAddr::V6(a)) => format!("[{a}]"),
            h => h.to_string(),
        };
        Client { https: endpoint.https, host, port: endpoint.port, vmid, token, policy: Policy::default() }
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
        format!("{}://{}:{}", if self.https { "https" } else { "http" }, self.host, self.port)
    }

    /// One try: send, read the answer, map non-2xx to an error. No retry, no sleep.
    pub fn send_once(&self, req: &HttpRequest) -> Result<Reply, OneGateError> {
        let url = format!("{}{}", self.base_url(), req.path);
        let mut r = match req.method {
            Method::Get => minreq::get(url),
            Method::Put => minreq::put(url),
        };
        for (k, v) in wire::headers(req, self.vmid, self.token.expose()) {
            r = r.with_header(k, v);
        }
        if req.method == Method::Put {
            r = r.with_body(req.body.as_bytes().to_vec());
        }
        let r = r.with_timeout(self.policy.timeout_secs()).with_follow_redirects(false);
        let method = req.method.as_str();
        let path = req.route().to_string();
        if self.host.starts_with('[') {
            // minreq resolves "[addr]" as a name and fails; say so instead of "lookup failed".
            return Err(OneGateError::Transport {
                method,
                path,
                url: self.base_url(),
                cause: "an IPv6 address as ONEGATE_ENDPOINT host is not supported; use an IPv4 address or a host name"
                    .into(),
            });
        }
        let resp = r.send().map_err(|e| OneGateError::Transport {
            method,
            path: path.clone(),
            url: self.base_url(),
            cause: e.to_string(),
        })?;
        let status = u16::try_from(resp.status_code).unwrap_or(0);
        let body = String::from_utf8_lossy(resp.as_bytes()).into_owned();
        log::debug!("onegate: {method} {} -> {status} ({} bytes)", req.path, body.len());
        match status {
            200..=299 => Ok(Reply { status, body }),
            401 => Err(OneGateError::TokenRejected { method, path, vmid: self.vmid, body }),
            _ => Err(OneGateError::Http { method, path, status, body }),
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
        parsed(req, &reply, parse)
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
