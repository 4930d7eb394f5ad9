//! What each role publishes (DESIGN.md "OneGate contract") and the background publisher.
//!
//! The FL_* attributes and `READY=YES` go in ONE `PUT /vm`, so OneFlow's ready gate (which
//! deploys the SuperNode role once every SuperLink VM has `USER_TEMPLATE/READY=YES`,
//! `src/flow/lib/EventManager.rb`) never releases a SuperNode before FL_ENDPOINT, FL_TLS and
//! FL_CA_CERT exist. REPORT_READY=NO drops `READY` only.
//!
//! Publication failure is degraded, never fatal: a [`Publisher`] thread owns all PUTs, keeps
//! what is not yet published (the latest value of each attribute wins), retries with capped
//! exponential backoff forever, and reports its state for /status. The caller's thread only
//! takes a mutex for a moment: it never waits for the network.

use super::client::{Client, Policy};
use super::wire::{self, HttpRequest};
use super::{OneGateError, PUBLISH_BACKOFF_MAX};
use crate::config::Address;
use crate::vocab::Role;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Attribute names of the contract.
pub const FL_ROLE: &str = "FL_ROLE";
pub const FL_VERSION: &str = "FL_VERSION";
pub const FL_ENDPOINT: &str = "FL_ENDPOINT";
pub const FL_TLS: &str = "FL_TLS";
pub const FL_CA_CERT: &str = "FL_CA_CERT";
pub const FL_READY: &str = "FL_READY";
pub const FL_ERROR: &str = "FL_ERROR";
pub const FL_PARTITION_ID: &str = "FL_PARTITION_ID";
pub const FL_GPU_AVAILABLE: &str = "FL_GPU_AVAILABLE";
/// OneFlow's ready flag (one-context's `net-99-report-ready` sends `READY=YES`).
pub const READY: &str = "READY";

/// Attributes to publish, in order, each key once (setting a key again replaces its value).
/// Values are stored as they go on the wire: plain as is, `*_ERROR` as readable text, the
/// rest base64 (see [`wire`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pairs: Vec<(String, String)>,
}

impl Attributes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `key` (made a valid attribute name if it is not one) to `value`, encoded for the
    /// wire. An empty value is not publishable (`K=` at the end of the data leaves an
    /// unterminated quote in `escape_attr`): it is skipped; delete the attribute instead.
    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        let key = if wire::is_key(key) { key.to_string() } else { wire::to_key(key) };
        let value = if key.ends_with("_ERROR") { wire::readable_text(value) } else { wire::encode_value(value) };
        if !value.is_empty() {
            self.put(key, value);
        }
        self
    }

    /// Set `key` to the base64 of `bytes`, plain or not (FL_CA_CERT is always base64).
    pub fn set_base64(&mut self, key: &str, bytes: &[u8]) -> &mut Self {
        use base64::Engine;
        if !bytes.is_empty() {
            self.put(key.to_string(), base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        self
    }

    fn put(&mut self, key: String, value: String) {
        match self.pairs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.pairs.push((key, value)),
        }
    }

    /// The wire value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `(key, wire value)` in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    pub fn keys(&self) -> Vec<&str> {
        self.pairs.iter().map(|(k, _)| k.as_str()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Any `(name, value)` list, e.g. the run state's `Vec<(&str, String)>`.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut a = Attributes::new();
        for (k, v) in pairs {
            a.set(k.as_ref(), v.as_ref());
        }
        a
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "YES" } else { "NO" }
}

/// What a SuperLink knows when it publishes.
#[derive(Debug, Clone, Copy)]
pub struct SuperLinkFacts<'a> {
    pub flower_version: &'a str,
    /// FL_ENDPOINT: where SuperNodes connect (this VM's address and Flower's Fleet port).
    pub endpoint: &'a Address,
    /// The CA certificate(s) PEM when TLS is on (published base64 as FL_CA_CERT); `None`:
    /// FL_TLS=NO.
    pub ca_pem: Option<&'a str>,
    /// Flower answers its health check.
    pub ready: bool,
    pub error: Option<&'a str>,
}

/// `FL_ROLE=superlink FL_VERSION FL_ENDPOINT FL_TLS FL_CA_CERT FL_READY [FL_ERROR]`, then
/// `READY=YES` when ready, without error, and REPORT_READY=YES.
pub fn superlink_attributes(f: &SuperLinkFacts<'_>, report_ready: bool) -> Attributes {
    let mut a = Attributes::new();
    a.set(FL_ROLE, "superlink").set(FL_VERSION, f.flower_version).set(FL_ENDPOINT, &f.endpoint.to_string());
    a.set(FL_TLS, yes_no(f.ca_pem.is_some()));
    if let Some(pem) = f.ca_pem {
        a.set_base64(FL_CA_CERT, pem.as_bytes());
    }
    finish(&mut a, f.ready, f.error, report_ready);
    a
}

/// What a SuperNode knows when it publishes.
#[derive(Debug, Clone, Copy)]
pub struct SuperNodeFacts<'a> {
    pub flower_version: &'a str,
    /// Its data partition (auto-assigned, or FL_NODE_CONFIG's `partition-id`).
    pub partition_id: Option<u32>,
    pub gpu_available: bool,
    /// Flower's SuperNode is running.
    pub ready: bool,
    pub error: Option<&'a str>,
}

/// `FL_ROLE=supernode FL_VERSION FL_PARTITION_ID FL_GPU_AVAILABLE FL_READY [FL_ERROR]`, then
/// `READY=YES` as for the SuperLink.
pub fn supernode_attributes(f: &SuperNodeFacts<'_>, report_ready: bool) -> Attributes {
    let mut a = Attributes::new();
    a.set(FL_ROLE, "supernode").set(FL_VERSION, f.flower_version);
    if let Some(p) = f.partition_id {
        a.set(FL_PARTITION_ID, &p.to_string());
    }
    a.set(FL_GPU_AVAILABLE, yes_no(f.gpu_available));
    finish(&mut a, f.ready, f.error, report_ready);
    a
}

/// A boot that failed before Flower ran: `FL_ROLE FL_VERSION FL_READY=NO FL_ERROR`, no READY
/// (the ready gate must hold the SuperNodes back).
pub fn failure_attributes(role: Option<Role>, flower_version: Option<&str>, error: &str) -> Attributes {
    let mut a = Attributes::new();
    if let Some(r) = role {
        a.set(FL_ROLE, if r == Role::SuperLink { "superlink" } else { "supernode" });
    }
    if let Some(v) = flower_version {
        a.set(FL_VERSION, v);
    }
    finish(&mut a, false, Some(error), false);
    a
}

/// FL_READY, FL_ERROR and READY, last.
fn finish(a: &mut Attributes, ready: bool, error: Option<&str>, report_ready: bool) {
    let ready = ready && error.is_none();
    a.set(FL_READY, yes_no(ready));
    if let Some(e) = error {
        a.set(FL_ERROR, e);
    }
    if ready && report_ready {
        a.set(READY, "YES");
    }
}

/// Called after every change of the publisher's state (from its thread), e.g. to wake the
/// supervisor's poll loop so /status shows it.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// What /status shows about publication.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PublisherState {
    /// Everything asked for has landed (and at least one PUT succeeded).
    pub published: bool,
    /// Attributes not yet published (set or delete).
    pub pending: Vec<String>,
    /// PUTs tried, and how many failed.
    pub attempts: u64,
    pub failures: u64,
    /// Failures since the last success (drives the backoff).
    pub consecutive_failures: u32,
    /// The newest failure while not yet recovered; `None` after a success.
    pub last_error: Option<String>,
    /// `READY=YES` has landed.
    pub ready_reported: bool,
    /// Seconds until the next try, while backing off.
    pub next_retry_in_s: Option<f64>,
    /// Published values (long ones, such as FL_CA_CERT, as their size).
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Set(String),
    Delete,
}

#[derive(Default)]
struct Inner {
    /// What is still to do, latest first-seen order; a newer op on a key replaces the older.
    pending: Vec<(String, Op)>,
    landed: BTreeMap<String, String>,
    attempts: u64,
    failures: u64,
    consecutive: u32,
    successes: u64,
    last_error: Option<String>,
    next_retry: Option<Instant>,
    in_flight: bool,
    /// Keys of the batch being sent.
    in_flight_keys: Vec<String>,
    stop_at: Option<Instant>,
    exited: bool,
}

impl Inner {
    fn queue(&mut self, key: String, op: Op) {
        match self.pending.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = op,
            None => self.pending.push((key, op)),
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Publishes attributes from a background thread; see the module documentation.
pub struct Publisher {
    shared: Arc<Shared>,
    /// One request's timeout: how long `stop` may wait for a request in flight.
    request_timeout: Duration,
}

impl Publisher {
    /// Start the thread. Each try is one request with the client's timeout; after a failure it
    /// waits the client's backoff, doubled per failure, up to [`PUBLISH_BACKOFF_MAX`].
    pub fn start(client: Client, waker: Option<Waker>) -> crate::error::Result<Publisher> {
        Self::start_with(client, PUBLISH_BACKOFF_MAX, waker)
    }

    /// [`Publisher::start`] with another backoff cap (tests).
    pub fn start_with(client: Client, backoff_max: Duration, waker: Option<Waker>) -> crate::error::Result<Publisher> {
        let shared = Arc::new(Shared { inner: Mutex::new(Inner::default()), cv: Condvar::new() });
        let policy = Policy { backoff_max, ..*client.policy() };
        let request_timeout = policy.bound_of_one_try();
        let s = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("onegate-publish".into())
            .spawn(move || run(&s, &client, &policy, waker.as_deref()))
            .map_err(|e| crate::error::Error { what: "start the OneGate publisher thread".into(), cause: e.into() })?;
        Ok(Publisher { shared, request_timeout })
    }

    /// Queue `attrs` (already encoded); they go out together in the next PUT. A value equal to
    /// what already landed is not sent again (run state is set often, OneGate serves many VMs).
    pub fn set(&self, attrs: &Attributes) {
        let mut g = self.shared.lock();
        for (k, v) in attrs.pairs() {
            let landed = g.landed.get(k) == Some(v) && !g.in_flight_keys.contains(k);
            if landed {
                g.pending.retain(|(pk, _)| pk != k);
            } else {
                g.queue(k.clone(), Op::Set(v.clone()));
            }
        }
        drop(g);
        self.shared.cv.notify_all();
    }

    /// Queue any `(name, value)` list (encoded by [`Attributes::set`]'s rules).
    pub fn set_pairs<K: AsRef<str>, V: AsRef<str>>(&self, pairs: impl IntoIterator<Item = (K, V)>) {
        self.set(&Attributes::from_pairs(pairs));
    }

    /// Queue the removal of `key` from USER_TEMPLATE (e.g. FL_ERROR once recovered).
    pub fn delete(&self, key: &str) {
        self.shared.lock().queue(key.to_string(), Op::Delete);
        self.shared.cv.notify_all();
    }

    /// A snapshot for /status; takes the lock only for a moment.
    pub fn state(&self) -> PublisherState {
        let g = self.shared.lock();
        let now = Instant::now();
        PublisherState {
            published: g.pending.is_empty() && !g.in_flight && g.successes > 0,
            pending: g.pending.iter().map(|(k, _)| k.clone()).collect(),
            attempts: g.attempts,
            failures: g.failures,
            consecutive_failures: g.consecutive,
            last_error: g.last_error.clone(),
            ready_reported: g.landed.get(READY).is_some_and(|v| v == "YES"),
            next_retry_in_s: g.next_retry.map(|t| t.saturating_duration_since(now).as_secs_f64()),
            attributes: g
                .landed
                .iter()
                .map(|(k, v)| (k.clone(), if v.len() > 64 { format!("<{} bytes>", v.len()) } else { v.clone() }))
                .collect(),
        }
    }

    /// Wait up to `timeout` until nothing is pending or in flight; true if so.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.lock();
        while !g.pending.is_empty() || g.in_flight {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self.shared.cv.wait_timeout(g, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    /// Keep trying what is pending for at most `grace`, then stop the thread. Returns within
    /// `grace` plus one request's timeout; a thread still stuck in a request is left to finish
    /// on its own (detached).
    pub fn stop(self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.shared.lock().stop_at = Some(deadline);
        self.shared.cv.notify_all();
        let mut g = self.shared.lock();
        let hard = deadline + self.request_timeout;
        while !g.exited {
            let now = Instant::now();
            if now >= hard {
                return;
            }
            g = self.shared.cv.wait_timeout(g, hard - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl Drop for Publisher {
    /// A dropped publisher stops its thread (after the request in flight, if any) instead of
    /// leaving it running unseen; [`Publisher::stop`] gives pending attributes a grace period.
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        if g.stop_at.is_none() {
            g.stop_at = Some(Instant::now());
        }
        drop(g);
        self.shared.cv.notify_all();
    }
}

/// The thread: wait for work, send it, account, back off on failure.
fn run(shared: &Shared, client: &Client, policy: &Policy, waker: Option<&(dyn Fn() + Send + Sync)>) {
    loop {
        let batch = {
            let mut g = shared.lock();
            loop {
                let now = Instant::now();
                if g.stop_at.is_some_and(|t| now >= t) || (g.stop_at.is_some() && g.pending.is_empty()) {
                    g.exited = true;
                    shared.cv.notify_all();
                    return;
                }
                if let Some(r) = g.next_retry {
                    if r > now {
                        // Backing off: wake at the retry time, or at the stop deadline.
                        let until = g.stop_at.map_or(r, |s| s.min(r));
                        g = shared.cv.wait_timeout(g, until - now).unwrap_or_else(|e| e.into_inner()).0;
                        continue;
                    }
                    g.next_retry = None;
                }
                if !g.pending.is_empty() {
                    break;
                }
                g = shared.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            g.in_flight = true;
            g.in_flight_keys = g.pending.iter().map(|(k, _)| k.clone()).collect();
            g.pending.clone()
        };
        let (done, outcome) = send_batch(client, &batch);
        {
            let mut g = shared.lock();
            g.in_flight = false;
            g.in_flight_keys.clear();
            for (k, op) in &batch {
                if !done.contains(k) {
                    continue;
                }
                match op {
                    Op::Set(v) => g.landed.insert(k.clone(), v.clone()),
                    Op::Delete => g.landed.remove(k),
                };
                // Only what did not change while in flight is done.
                if let Some(i) = g.pending.iter().position(|(pk, pop)| pk == k && pop == op) {
                    g.pending.remove(i);
                }
            }
            account(&mut g, policy, outcome);
        }
        // The waker first: whoever waits for idleness then also sees the loop was woken.
        if let Some(w) = waker {
            w();
        }
        shared.cv.notify_all();
    }
}

/// Sets in one PUT, then each delete (OneGate deletes one attribute per request). Returns the
/// keys done and the requests' outcome: their count and the first error.
fn send_batch(client: &Client, batch: &[(String, Op)]) -> (Vec<String>, (u64, Option<OneGateError>)) {
    let mut done = Vec::new();
    let mut sent = 0;
    let sets: Vec<(String, String)> = batch
        .iter()
        .filter_map(|(k, op)| match op {
            Op::Set(v) => Some((k.clone(), v.clone())),
            Op::Delete => None,
        })
        .collect();
    if !sets.is_empty() {
        sent += 1;
        log::debug!("onegate: publishing {}", sets.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(" "));
        if let Err(e) = client.send_once(&HttpRequest::put_vm_update(&sets)) {
            return (done, (sent, Some(e)));
        }
        done.extend(sets.into_iter().map(|(k, _)| k));
    }
    for (k, op) in batch {
        if *op != Op::Delete {
            continue;
        }
        sent += 1;
        match client.send_once(&HttpRequest::put_vm_delete(k)) {
            Ok(_) => done.push(k.clone()),
            Err(e) if e.status() == Some(500) && e.body().is_some_and(|b| b.contains("attribute not found")) => {
                done.push(k.clone())
            }
            Err(e) => return (done, (sent, Some(e))),
        }
    }
    (done, (sent, None))
}

/// Count a batch's requests; on failure schedule the next try and log (at warning level for the
/// first failure and then at doubling intervals, so a long outage does not flood the console).
fn account(g: &mut Inner, policy: &Policy, (sent, error): (u64, Option<OneGateError>)) {
    g.attempts += sent;
    match error {
        None => {
            if g.consecutive > 0 {
                log::info!("onegate: published after {} failed tries", g.consecutive);
            }
            g.successes += 1;
            g.consecutive = 0;
            g.last_error = None;
            g.next_retry = None;
        }
        Some(e) => {
            g.failures += 1;
            g.consecutive = g.consecutive.saturating_add(1);
            let pause = policy.pause(g.consecutive);
            if g.consecutive.is_power_of_two() {
                log::warn!(
                    "onegate: publication failed ({} in a row, retrying in {:.1} s; boot continues): {e}",
                    g.consecutive,
                    pause.as_secs_f64()
                );
            }
            g.last_error = Some(e.to_string());
            g.next_retry = Some(Instant::now() + pause);
        }
    }
}
