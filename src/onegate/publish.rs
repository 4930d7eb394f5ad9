//! What each role publishes (DESIGN.md "OneGate contract") and the background publisher.
//!
//! The FL_* attributes and `READY=YES` go in ONE `PUT /vm`, so OneFlow's ready gate (which
//! deploys the SuperNode role once every SuperLink VM has `USER_TEMPLATE/READY=YES`,
//! `src/flow/lib/EventManager.rb`) never releases a SuperNode before FL_ENDPOINT, FL_TLS and
//! FL_CA_CERT exist. REPORT_READY=NO drops `READY` only.
//!
//! Publication failure is degraded, never fatal: the [`super::Publisher`] thread
//! (`publisher.rs`) owns all PUTs.

use super::wire;
pub use super::wire::error_text;
use crate::config::Address;
use crate::vocab::Role;

/// Attribute names of the contract.
pub const FL_ROLE: &str = "FL_ROLE";
pub const FL_VERSION: &str = "FL_VERSION";
pub const FL_ENDPOINT: &str = "FL_ENDPOINT";
pub const FL_TLS: &str = "FL_TLS";
pub const FL_CA_CERT: &str = "FL_CA_CERT";
/// The join value (`config::Join`): what a SuperNode at another site is given as FL_JOIN.
pub const FL_JOIN: &str = "FL_JOIN";
pub const FL_READY: &str = "FL_READY";
pub const FL_ERROR: &str = "FL_ERROR";
pub const FL_PARTITION_ID: &str = "FL_PARTITION_ID";
pub const FL_GPU_AVAILABLE: &str = "FL_GPU_AVAILABLE";
/// OneFlow's ready flag (one-context's `net-99-report-ready` sends `READY=YES`).
pub const READY: &str = "READY";

/// Attributes to publish, in order, each key once (setting a key again replaces its value).
/// Values are stored as they go on the wire: plain as is, `*_ERROR` as a bounded readable
/// text ([`error_text`]: one problem per line of the value), the rest base64 (see [`wire`]).
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
        let value = if key.ends_with("_ERROR") { wire::error_text(value) } else { wire::encode_value(value) };
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
    /// FL_JOIN: the join value (`flwr1:…`, plain on the wire), when one could be made.
    pub join: Option<&'a str>,
    /// Flower answers its health check.
    pub ready: bool,
    pub error: Option<&'a str>,
}

/// `FL_ROLE=superlink FL_VERSION FL_ENDPOINT FL_TLS FL_CA_CERT FL_JOIN FL_READY [FL_ERROR]`, then
/// `READY=YES` when ready, without error, and REPORT_READY=YES.
pub fn superlink_attributes(f: &SuperLinkFacts<'_>, report_ready: bool) -> Attributes {
    let mut a = Attributes::new();
    a.set(FL_ROLE, "superlink").set(FL_VERSION, f.flower_version).set(FL_ENDPOINT, &f.endpoint.to_string());
    a.set(FL_TLS, yes_no(f.ca_pem.is_some()));
    if let Some(pem) = f.ca_pem {
        a.set_base64(FL_CA_CERT, pem.as_bytes());
    }
    if let Some(join) = f.join {
        a.set(FL_JOIN, join);
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
