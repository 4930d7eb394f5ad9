//! The background publisher: one thread owns every `PUT /vm`, keeps what is not yet published
//! (the latest value of each attribute wins), retries forever, and reports its state for
//! /status. The caller's thread only takes a mutex for a moment: it never waits for the network.
//!
//! Failures are kept apart (issue #13):
//! - **OneGate unreachable** (no connection, timeout, 401 for this VM's token): nothing can
//!   land, so everything waits one shared backoff and then goes out together in one PUT.
//! - **One attribute refused** (the server answered, but not with 200): a PUT of several sets
//!   that fails is split into one PUT per attribute, so the culprit is known; it alone backs
//!   off, the others land and later updates go out at once. `READY` goes out only with, or
//!   after, every attribute queued before it (the ready gate must not release SuperNodes
//!   before FL_ENDPOINT, FL_TLS and FL_CA_CERT exist).
//! - **Deletions** ask first: `GET /vm` reads USER_TEMPLATE, and only what is there is
//!   deleted. Since OpenNebula 7.2 deleting a missing attribute answers 500 "Internal server
//!   error" (onegate-server.rb's `error 500` handler replaces "attribute not found"), which a
//!   client cannot tell from a real failure. When `GET /vm` is not permitted (403) the delete
//!   is sent anyway and a 500 counts as "not there".

use super::client::{Client, Policy};
use super::model;
use super::publish::{Attributes, READY};
use super::wire::HttpRequest;
use super::{OneGateError, PUBLISH_BACKOFF_MAX};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Called after every change of the publisher's state (from its thread), e.g. to wake the
/// supervisor's poll loop so /status shows it.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// What /status shows about publication.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PublisherState {
    /// Everything asked for has landed (and at least one request succeeded).
    pub published: bool,
    /// Attributes not yet published (set or delete).
    pub pending: Vec<String>,
    /// Requests tried, and how many failed.
    pub attempts: u64,
    pub failures: u64,
    /// Failures in a row: OneGate unreachable, or the attribute failing longest.
    pub consecutive_failures: u32,
    /// Why OneGate cannot be reached now, else the newest error of a failing attribute;
    /// `None` once nothing fails.
    pub last_error: Option<String>,
    /// `READY=YES` has landed.
    pub ready_reported: bool,
    /// Seconds until the next try, while backing off.
    pub next_retry_in_s: Option<f64>,
    /// Attributes the server refuses, each with its own backoff (the others do not wait).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failing: BTreeMap<String, AttributeFailure>,
    /// Published values (long ones, such as FL_CA_CERT, as their size).
    pub attributes: BTreeMap<String, String>,
}

/// One attribute the server keeps refusing.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttributeFailure {
    pub failures: u32,
    pub error: String,
    pub next_retry_in_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Set(String),
    Delete,
}

/// One attribute still to publish, with its own retry state.
#[derive(Debug, Clone)]
struct Item {
    key: String,
    op: Op,
    /// Failed tries of this op (reset when the op changes: a new value may be accepted).
    failures: u32,
    next_try: Option<Instant>,
    error: Option<String>,
}

#[derive(Default)]
struct Inner {
    /// What is still to do, in first-queued order; a newer op on a key replaces the older.
    pending: Vec<Item>,
    landed: BTreeMap<String, String>,
    attempts: u64,
    failures: u64,
    successes: u64,
    /// Rounds in a row that could not reach OneGate, the newest reason, and when to try again.
    unreachable: u32,
    unreachable_error: Option<String>,
    next_round: Option<Instant>,
    in_flight: bool,
    /// Keys of the round being sent.
    in_flight_keys: Vec<String>,
    stop_at: Option<Instant>,
    exited: bool,
}

impl Inner {
    fn queue(&mut self, key: String, op: Op) {
        match self.pending.iter_mut().find(|i| i.key == key) {
            Some(item) if item.op == op => {}
            Some(item) => *item = Item { key, op, failures: 0, next_try: None, error: None },
            None => self.pending.push(Item { key, op, failures: 0, next_try: None, error: None }),
        }
    }

    /// When `pending[n]` may go out: its own next try; for `READY` also the latest next try of
    /// the sets queued before it (it waits to go out with them). `None`: now.
    fn ready_at(&self, n: usize) -> Option<Instant> {
        let item = &self.pending[n];
        if item.key != READY {
            return item.next_try;
        }
        let before = self.pending[..n].iter().filter(|b| matches!(b.op, Op::Set(_))).filter_map(|b| b.next_try);
        std::iter::once(item.next_try).flatten().chain(before).max()
    }

    /// The items to send now: every due one, except a `READY` whose predecessors (the sets
    /// queued before it) are not all due: it waits to go out with them.
    fn due(&self, now: Instant) -> Vec<Item> {
        if self.next_round.is_some_and(|t| t > now) {
            return Vec::new();
        }
        (0..self.pending.len())
            .filter(|&n| self.ready_at(n).is_none_or(|t| t <= now))
            .map(|n| self.pending[n].clone())
            .collect()
    }

    /// When something next becomes due (None: nothing pending).
    fn next_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let items = (0..self.pending.len()).map(|n| self.ready_at(n).unwrap_or(now)).min()?;
        Some(self.next_round.map_or(items, |r| r.max(items)))
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
                g.pending.retain(|i| i.key != *k);
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

    /// Queue the removal of `key` from USER_TEMPLATE (e.g. a previous boot's FL_ERROR). Only
    /// sent if `GET /vm` shows the attribute: deleting a missing one is an error since 7.2.
    pub fn delete(&self, key: &str) {
        self.shared.lock().queue(key.to_string(), Op::Delete);
        self.shared.cv.notify_all();
    }

    /// A snapshot for /status; takes the lock only for a moment.
    pub fn state(&self) -> PublisherState {
        let g = self.shared.lock();
        let now = Instant::now();
        let until = |t: Option<Instant>| t.filter(|t| *t > now).map(|t| (t - now).as_secs_f64());
        let failing: BTreeMap<String, AttributeFailure> = g
            .pending
            .iter()
            .filter_map(|i| {
                let error = i.error.clone()?;
                Some((i.key.clone(), AttributeFailure { failures: i.failures, error, next_retry_in_s: until(i.next_try) }))
            })
            .collect();
        let newest_item_error = g.pending.iter().filter(|i| i.error.is_some()).max_by_key(|i| i.next_try).and_then(|i| i.error.clone());
        let worst_item = g.pending.iter().map(|i| i.failures).max().unwrap_or(0);
        let retry = if g.pending.is_empty() { None } else { until(g.next_due()) };
        PublisherState {
            published: g.pending.is_empty() && !g.in_flight && g.successes > 0,
            pending: g.pending.iter().map(|i| i.key.clone()).collect(),
            attempts: g.attempts,
            failures: g.failures,
            consecutive_failures: g.unreachable.max(worst_item),
            last_error: g.unreachable_error.clone().or(newest_item_error),
            ready_reported: g.landed.get(READY).is_some_and(|v| v == "YES"),
            next_retry_in_s: retry,
            failing,
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

/// The thread: wait until something is due, send it, account, repeat.
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
                let due = g.due(now);
                if !due.is_empty() {
                    g.in_flight = true;
                    g.in_flight_keys = due.iter().map(|i| i.key.clone()).collect();
                    break due;
                }
                // Backing off (or idle): wake when something is due, at the stop deadline, or
                // when the caller queues more.
                let wake = [g.next_due(), g.stop_at].into_iter().flatten().min();
                g = match wake {
                    Some(t) => shared.cv.wait_timeout(g, t.saturating_duration_since(now)).unwrap_or_else(|e| e.into_inner()).0,
                    None => shared.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                };
            }
        };
        let round = send_round(client, &batch);
        account(&mut shared.lock(), policy, &batch, round);
        // The waker first: whoever waits for idleness then also sees the loop was woken.
        if let Some(w) = waker {
            w();
        }
        shared.cv.notify_all();
    }
}

/// What one round did to each attribute.
#[derive(Debug)]
enum Outcome {
    Done,
    Failed(OneGateError),
    /// Not tried this round (READY after a refused predecessor; anything after OneGate
    /// became unreachable).
    NotTried,
}

#[derive(Debug, Default)]
struct Round {
    sent: u64,
    outcomes: BTreeMap<String, Outcome>,
    /// OneGate could not be talked to: everything not done waits the shared backoff.
    unreachable: Option<OneGateError>,
}

/// No answer from OneGate, or an answer about the whole VM (its token): retrying attribute by
/// attribute would not help.
fn unreachable(e: &OneGateError) -> bool {
    matches!(e, OneGateError::Transport { .. } | OneGateError::TokenRejected { .. })
}

/// Sets in one PUT (split per attribute when the server refuses it), then the deletions of
/// what `GET /vm` shows is there, one request each (OneGate deletes one attribute per request).
fn send_round(client: &Client, batch: &[Item]) -> Round {
    let mut r = Round::default();
    let mut sets: Vec<(String, String)> = batch
        .iter()
        .filter_map(|i| match &i.op {
            Op::Set(v) => Some((i.key.clone(), v.clone())),
            Op::Delete => None,
        })
        .collect();
    // READY last, whatever the order it was queued in.
    if let Some(n) = sets.iter().position(|(k, _)| k == READY) {
        let ready = sets.remove(n);
        sets.push(ready);
    }
    if !sets.is_empty() && !send_sets(client, &sets, &mut r) {
        return r;
    }
    let deletes: Vec<&str> = batch.iter().filter(|i| i.op == Op::Delete).map(|i| i.key.as_str()).collect();
    if !deletes.is_empty() {
        send_deletes(client, &deletes, &mut r);
    }
    r
}

/// The sets of a round; false when OneGate turned out unreachable (the round stops).
fn send_sets(client: &Client, sets: &[(String, String)], r: &mut Round) -> bool {
    r.sent += 1;
    log::debug!("onegate: publishing {}", sets.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(" "));
    let e = match client.send_once(&HttpRequest::put_vm_update(sets)) {
        Ok(_) => {
            r.outcomes.extend(sets.iter().map(|(k, _)| (k.clone(), Outcome::Done)));
            return true;
        }
        Err(e) if unreachable(&e) => {
            r.unreachable = Some(e);
            return false;
        }
        Err(e) => e,
    };
    if let [(k, _)] = sets {
        r.outcomes.insert(k.clone(), Outcome::Failed(e));
        return true;
    }
    // The server refused the batch: find which attribute, one PUT each; READY only after all
    // the others landed.
    log::debug!("onegate: one PUT of {} attributes failed ({e}); sending them one by one", sets.len());
    let mut all_done = true;
    for (k, v) in sets {
        if k == READY && !all_done {
            r.outcomes.insert(k.clone(), Outcome::NotTried);
            continue;
        }
        r.sent += 1;
        match client.send_once(&HttpRequest::put_vm_update(&[(k.clone(), v.clone())])) {
            Ok(_) => {
                r.outcomes.insert(k.clone(), Outcome::Done);
            }
            Err(e) if unreachable(&e) => {
                r.unreachable = Some(e);
                return false;
            }
            Err(e) => {
                all_done = false;
                r.outcomes.insert(k.clone(), Outcome::Failed(e));
            }
        }
    }
    true
}

/// Delete what USER_TEMPLATE holds of `keys`.
fn send_deletes(client: &Client, keys: &[&str], r: &mut Round) {
    r.sent += 1;
    let req = HttpRequest::get_vm();
    let present: Option<BTreeSet<String>> = match client.get_once(&req, model::parse_vm) {
        Ok(vm) => Some(vm.user_template.into_keys().collect()),
        Err(e) if e.status() == Some(403) => {
            log::debug!("onegate: cannot read USER_TEMPLATE ({e}); deleting blindly");
            None
        }
        Err(e) if unreachable(&e) => {
            r.unreachable = Some(e);
            return;
        }
        Err(e) => {
            for k in keys {
                r.outcomes.insert((*k).to_string(), Outcome::Failed(e.clone()));
            }
            return;
        }
    };
    for k in keys {
        if present.as_ref().is_some_and(|p| !p.contains(*k)) {
            r.outcomes.insert((*k).to_string(), Outcome::Done);
            continue;
        }
        r.sent += 1;
        let outcome = match client.send_once(&HttpRequest::put_vm_delete(k)) {
            Ok(_) => Outcome::Done,
            Err(e) if answers_missing(&e, present.is_none()) => Outcome::Done,
            Err(e) if unreachable(&e) => {
                r.unreachable = Some(e);
                return;
            }
            Err(e) => Outcome::Failed(e),
        };
        r.outcomes.insert((*k).to_string(), outcome);
    }
}

/// A delete's answer that means "not there": 500 "attribute not found" before OpenNebula 7.2;
/// since 7.2 any 500 when USER_TEMPLATE could not be read first (`blind`).
fn answers_missing(e: &OneGateError, blind: bool) -> bool {
    e.status() == Some(500) && (blind || e.body().is_some_and(|b| b.contains("attribute not found")))
}

/// Apply a round: landed values, per-attribute backoff, OneGate-wide backoff; log a failure at
/// warning level the 1st, 2nd, 4th, 8th… time in a row (a long outage does not flood the
/// console).
fn account(g: &mut Inner, policy: &Policy, batch: &[Item], round: Round) {
    let now = Instant::now();
    g.in_flight = false;
    g.in_flight_keys.clear();
    g.attempts += round.sent;
    let mut any_done = false;
    for sent in batch {
        let outcome = round.outcomes.get(&sent.key).unwrap_or(&Outcome::NotTried);
        // Only an op that did not change while in flight is settled by this round.
        let Some(n) = g.pending.iter().position(|i| i.key == sent.key && i.op == sent.op) else {
            if let Outcome::Done = outcome {
                record_landed(g, sent);
            }
            continue;
        };
        match outcome {
            Outcome::Done => {
                any_done = true;
                record_landed(g, sent);
                let item = g.pending.remove(n);
                if item.failures > 0 {
                    log::info!("onegate: {} published after {} failed tries", item.key, item.failures);
                }
            }
            Outcome::Failed(e) => {
                g.failures += 1;
                let item = &mut g.pending[n];
                item.failures = item.failures.saturating_add(1);
                let pause = policy.pause(item.failures);
                item.next_try = Some(now + pause);
                item.error = Some(e.to_string());
                if item.failures.is_power_of_two() {
                    log::warn!(
                        "onegate: {} not published ({} in a row, retrying in {:.1} s; the other attributes go on): {e}",
                        item.key,
                        item.failures,
                        pause.as_secs_f64()
                    );
                }
            }
            Outcome::NotTried => {}
        }
    }
    match round.unreachable {
        Some(e) => {
            g.failures += 1;
            g.unreachable = g.unreachable.saturating_add(1);
            let pause = policy.pause(g.unreachable);
            g.next_round = Some(now + pause);
            if g.unreachable.is_power_of_two() {
                log::warn!(
                    "onegate: publication failed ({} in a row, retrying in {:.1} s; boot continues): {e}",
                    g.unreachable,
                    pause.as_secs_f64()
                );
            }
            g.unreachable_error = Some(e.to_string());
        }
        None => {
            if g.unreachable > 0 {
                log::info!("onegate: reached again after {} failed tries", g.unreachable);
            }
            g.unreachable = 0;
            g.unreachable_error = None;
            g.next_round = None;
        }
    }
    if any_done {
        g.successes += 1;
    }
}

/// What landed, for /status and to skip resending an equal value.
fn record_landed(g: &mut Inner, item: &Item) {
    match &item.op {
        Op::Set(v) => g.landed.insert(item.key.clone(), v.clone()),
        Op::Delete => g.landed.remove(&item.key),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, next_try: Option<Instant>) -> Item {
        Item { key: key.into(), op: Op::Set("x".into()), failures: u32::from(next_try.is_some()), next_try, error: None }
    }

    /// READY waits for a refused predecessor, and the thread sleeps until that one's next try
    /// instead of spinning on a READY that is never due.
    #[test]
    fn ready_waits_for_its_predecessors_and_the_thread_sleeps_meanwhile() {
        let now = Instant::now();
        let later = now + Duration::from_secs(30);
        let mut g = Inner {
            pending: vec![item("FL_CA_CERT", Some(later)), item(READY, None), item("FL_RUN_STATUS", None)],
            ..Inner::default()
        };
        let keys = |v: Vec<Item>| v.into_iter().map(|i| i.key).collect::<Vec<_>>();
        assert_eq!(keys(g.due(now)), ["FL_RUN_STATUS"]);
        g.pending.pop();
        assert!(g.due(now).is_empty());
        assert!(g.next_due().is_some_and(|t| t >= later), "must sleep until FL_CA_CERT's next try");
        assert_eq!(keys(g.due(later)), ["FL_CA_CERT", READY]);
        // OneGate unreachable: nothing is due before the shared retry time.
        g.next_round = Some(later + Duration::from_secs(5));
        assert!(g.due(later).is_empty());
        assert_eq!(g.next_due(), g.next_round);
    }

    /// A new value of a refused attribute is tried at once; the same value keeps its backoff.
    #[test]
    fn a_new_value_resets_the_backoff() {
        let later = Instant::now() + Duration::from_secs(30);
        let mut g = Inner {
            pending: vec![Item { error: Some("HTTP 403".into()), ..item("FL_RUN_LOSS", Some(later)) }],
            ..Inner::default()
        };
        g.queue("FL_RUN_LOSS".into(), Op::Set("x".into()));
        assert_eq!(g.pending[0].next_try, Some(later));
        g.queue("FL_RUN_LOSS".into(), Op::Set("0.4".into()));
        assert_eq!((g.pending[0].failures, g.pending[0].next_try, &g.pending[0].error), (0, None, &None));
    }
}
