//! `GET /metrics`: the Prometheus text exposition format (0.0.4) rendered from the same
//! [`Status`] `/status` serves (issue #21). Nothing here keeps state of its own: the phase and
//! the timeline are the status's, everything else is read from its sections (the typed report
//! of whoever runs the concerns, serialised), so the two pages cannot disagree.
//!
//! Bounded: label values are either fixed words of ours, step names (at most [`MAX_STEPS`]),
//! or keys the gateway child reports, which must look like our own keys (`[a-z0-9_]`, at most
//! [`MAX_KEY`] bytes, at most [`MAX_KEYS`] per family) or are left out. Nothing a client or
//! Flower sends becomes a label; free text (failure reasons, container output, OneGate
//! attribute values) never appears.

use super::Stats;
use crate::status::{Outcome, Phase, Status};
use serde_json::Value;
use std::fmt::Write as _;

/// `Content-Type` of the page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Boot steps shown at most (a boot has about twenty).
pub const MAX_STEPS: usize = 64;
/// Label values taken from the gateway's counters: longest key, keys per family.
pub const MAX_KEY: usize = 40;
pub const MAX_KEYS: usize = 32;
/// The page is never larger (by construction well under; checked in the tests).
pub const MAX_METRICS_BYTES: usize = 128 * 1024;

/// What a family is, for its `# TYPE` line.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
    Histogram,
}

/// A page being written: one `# HELP` and `# TYPE` per family, then its samples.
#[derive(Default)]
struct Page {
    out: String,
}

impl Page {
    /// Start family `name`.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A family of one unlabelled sample.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A label value escaped: backslash, double quote and line feed (the format's three).
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A `# HELP` text escaped: backslash and line feed.
pub fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the format spells it (`NaN`, `+Inf`, `-Inf`, integers without a point).
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A key reported by the gateway child, usable as a label value: one of our own words.
fn bounded_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The numbers of a JSON object whose keys pass [`bounded_key`], at most [`MAX_KEYS`].
fn counts(v: &Value) -> Vec<(&str, f64)> {
    let Some(obj) = v.as_object() else { return Vec::new() };
    obj.iter().filter(|(k, _)| bounded_key(k)).filter_map(|(k, n)| n.as_f64().map(|n| (k.as_str(), n))).take(MAX_KEYS).collect()
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The whole page for `status` and the health port's counters `port`.
pub fn render(status: &Status, port: &Stats) -> String {
    let mut p = Page::default();
    let s = status.sections();
    identity(&mut p, status, s);
    timeline(&mut p, status);
    health_port(&mut p, port);
    container(&mut p, &s["container"]);
    onegate(&mut p, &s["onegate"]);
    gateway(&mut p, &s["gateway"]);
    tls(&mut p, &s["tls"]);
    gpu(&mut p, &s["gpu"]);
    run(&mut p, &s["run"]);
    supernode(&mut p, &s["supernode"]);
    if p.out.len() > MAX_METRICS_BYTES {
        // Not reachable with the caps above; if it were, the phase still answers.
        let mut short = Page::default();
        identity(&mut short, status, &Value::Null);
        return short.out;
    }
    p.out
}

/// Version and role, the phase (a state set), the init's memory.
fn identity(p: &mut Page, status: &Status, s: &Value) {
    let init = &s["init"];
    let version = init["version"].as_str().filter(|v| v.len() <= 64).unwrap_or("");
    let role = init["role"].as_str().filter(|r| matches!(*r, "superlink" | "supernode")).unwrap_or("");
    p.family("flower_init_info", Kind::Gauge, "flower-init's version and the node's role (always 1).");
    p.sample("flower_init_info", &[("version", version), ("role", role)], 1.0);
    p.family("flower_init_phase", Kind::Gauge, "Where the appliance is in its life: 1 for the current phase.");
    let now = status.phase();
    for (name, phase) in [("booting", Phase::Booting), ("ready", Phase::Ready), ("failed", Phase::Failed), ("shutting_down", Phase::ShuttingDown)] {
        p.sample("flower_init_phase", &[("phase", name)], flag(*now == phase));
    }
    if let Some(kib) = num(&init["rss_kib"]) {
        p.single("flower_init_resident_memory_bytes", Kind::Gauge, "flower-init's resident set size (VmRSS).", kib * 1024.0);
    }
    if let Some(kib) = num(&init["peak_rss_kib"]) {
        p.single("flower_init_peak_resident_memory_bytes", Kind::Gauge, "flower-init's peak resident set size (VmHWM).", kib * 1024.0);
    }
    if let Some(n) = num(&init["orphans_reaped"]) {
        p.single("flower_init_orphans_reaped_total", Kind::Counter, "Processes of no known parent that flower-init reaped.", n);
    }
}

/// The boot steps: start, duration and outcome; a step name seen twice shows its last run.
fn timeline(p: &mut Page, status: &Status) {
    let mut steps: Vec<&crate::status::Step> = Vec::new();
    for st in &status.timeline().steps {
        steps.retain(|s| s.name != st.name);
        steps.push(st);
    }
    let steps = &steps[steps.len().saturating_sub(MAX_STEPS)..];
    p.family("flower_init_boot_step_start_seconds", Kind::Gauge, "When the boot step started, in seconds since boot.");
    for st in steps {
        p.sample("flower_init_boot_step_start_seconds", &[("step", &st.name)], st.start_s);
    }
    p.family("flower_init_boot_step_duration_seconds", Kind::Gauge, "How long the boot step took (absent while it runs).");
    for st in steps {
        if let Some(d) = st.duration_s {
            p.sample("flower_init_boot_step_duration_seconds", &[("step", &st.name)], d);
        }
    }
    p.family("flower_init_boot_step_outcome", Kind::Gauge, "How the boot step ended: 1 for its outcome.");
    let outcomes = [("running", Outcome::Running), ("ok", Outcome::Ok), ("warning", Outcome::Warning), ("skipped", Outcome::Skipped), ("failed", Outcome::Failed)];
    for st in steps {
        for (name, o) in outcomes {
            p.sample("flower_init_boot_step_outcome", &[("step", &st.name), ("outcome", name)], flag(st.outcome == o));
        }
    }
}

/// The health port's own counters.
fn health_port(p: &mut Page, port: &Stats) {
    p.family("flower_init_health_connections_total", Kind::Counter, "Connections to the health port, by how they ended.");
    for (result, n) in [("answered", port.answered), ("evicted", port.evicted), ("timed_out", port.timed_out), ("closed_early", port.closed_early)] {
        p.sample("flower_init_health_connections_total", &[("result", result)], n as f64);
    }
    p.single("flower_init_health_forbidden_total", Kind::Counter, "Requests for /status or /metrics refused (403): source not allowed.", port.forbidden as f64);
    p.single("flower_init_health_open_connections", Kind::Gauge, "Connections the health port holds now.", port.active as f64);
}

/// The Flower container: up, restarts, last exit.
fn container(p: &mut Page, c: &Value) {
    if c.is_null() {
        return;
    }
    p.single("flower_init_flower_up", Kind::Gauge, "1 while Flower's container runs.", flag(c["state"] == "running"));
    if let Some(n) = num(&c["restarts"]) {
        p.single("flower_init_flower_restarts_total", Kind::Counter, "Times Flower's container was started again after it exited.", n);
    }
    if let Some(code) = num(&c["last_exit"]["code"]) {
        p.single("flower_init_flower_last_exit_code", Kind::Gauge, "Exit code of the container's last exit.", code);
    }
    if let Some(sig) = num(&c["last_exit"]["signal"]) {
        p.single("flower_init_flower_last_exit_signal", Kind::Gauge, "Signal that ended the container last.", sig);
    }
}

/// OneGate publication.
fn onegate(p: &mut Page, g: &Value) {
    if g.is_null() {
        return;
    }
    p.single("flower_init_onegate_enabled", Kind::Gauge, "1 when OneGate is configured and used.", flag(g["enabled"] == true));
    let (Some(attempts), Some(failures)) = (num(&g["attempts"]), num(&g["failures"])) else { return };
    p.family("flower_init_onegate_requests_total", Kind::Counter, "OneGate requests, by result.");
    p.sample("flower_init_onegate_requests_total", &[("result", "ok")], (attempts - failures).max(0.0));
    p.sample("flower_init_onegate_requests_total", &[("result", "failed")], failures);
    let pending = g["pending"].as_array().map_or(0, Vec::len);
    p.single("flower_init_onegate_pending_attributes", Kind::Gauge, "Attributes not yet published.", pending as f64);
    if let Some(n) = num(&g["consecutive_failures"]) {
        p.single("flower_init_onegate_consecutive_failures", Kind::Gauge, "OneGate failures in a row.", n);
    }
    p.single("flower_init_onegate_ready_reported", Kind::Gauge, "1 once READY=YES has landed.", flag(g["ready_reported"] == true));
}

/// The SuperLink's gateway: its process and the counters it last reported.
fn gateway(p: &mut Page, g: &Value) {
    if g.is_null() {
        return;
    }
    p.single("flower_init_gateway_up", Kind::Gauge, "1 while the gateway process runs.", flag(g["process"]["pid"].is_number()));
    if let Some(n) = num(&g["process"]["restarts"]) {
        p.single("flower_init_gateway_restarts_total", Kind::Counter, "Times the gateway process was started again.", n);
    }
    if g["connections"].is_null() {
        return; // no counters yet (just started, or restarting)
    }
    let c = &g["connections"];
    p.single("flower_init_gateway_open_connections", Kind::Gauge, "Client connections open now.", num(&c["open"]).unwrap_or(0.0));
    p.single("flower_init_gateway_connections_total", Kind::Counter, "Client connections accepted.", num(&c["total"]).unwrap_or(0.0));
    p.single("flower_init_gateway_active_requests", Kind::Gauge, "Requests being forwarded now.", num(&c["active_requests"]).unwrap_or(0.0));
    p.family("flower_init_gateway_requests_total", Kind::Counter, "Requests forwarded to Flower, by API.");
    for (api, n) in counts(&g["requests"]).into_iter().filter(|(k, _)| *k != "rejected") {
        p.sample("flower_init_gateway_requests_total", &[("api", api)], n);
    }
    p.family("flower_init_gateway_responses_total", Kind::Counter, "Answers to forwarded requests, by API and status class.");
    let answers = counts_obj(&g["answers"]);
    for (api, a) in &answers {
        for (class, n) in counts(&a["status"]) {
            p.sample("flower_init_gateway_responses_total", &[("api", api), ("code", class)], n);
        }
    }
    p.family("flower_init_gateway_request_duration_seconds", Kind::Histogram, "Forwarded requests, from a worker taking them to the response's last byte.");
    for (api, a) in &answers {
        histogram(p, "flower_init_gateway_request_duration_seconds", api, &a["duration"]);
    }
    p.family("flower_init_gateway_rejected_total", Kind::Counter, "Requests and connections the gateway refused or dropped itself, by reason.");
    for (reason, n) in counts(&g["rejects"]) {
        p.sample("flower_init_gateway_rejected_total", &[("reason", reason)], n);
    }
    p.family("flower_init_gateway_upstream_errors_total", Kind::Counter, "Failures talking to Flower, by kind.");
    for (kind, n) in counts(&g["upstream_errors"]).into_iter().filter(|(k, _)| *k != "total" && *k != "retried") {
        p.sample("flower_init_gateway_upstream_errors_total", &[("kind", kind)], n);
    }
    p.single("flower_init_gateway_received_bytes_total", Kind::Counter, "HTTP bytes read from clients.", num(&g["bytes"]["in"]).unwrap_or(0.0));
    p.single("flower_init_gateway_sent_bytes_total", Kind::Counter, "HTTP bytes written to clients.", num(&g["bytes"]["out"]).unwrap_or(0.0));
}

/// The objects of a JSON object whose keys pass [`bounded_key`], at most [`MAX_KEYS`].
fn counts_obj(v: &Value) -> Vec<(&str, &Value)> {
    let Some(obj) = v.as_object() else { return Vec::new() };
    obj.iter().filter(|(k, v)| bounded_key(k) && v.is_object()).map(|(k, v)| (k.as_str(), v)).take(MAX_KEYS).collect()
}

/// One histogram's samples from `{"le": [bounds], "counts": [cumulative…, total], "sum_s": x}`;
/// nothing when the shapes disagree or the counts are not cumulative.
fn histogram(p: &mut Page, name: &str, api: &str, d: &Value) {
    let bounds: Vec<f64> = d["le"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
    let counts: Vec<f64> = d["counts"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
    let Some(sum) = num(&d["sum_s"]) else { return };
    let sane = counts.len() == bounds.len() + 1
        && bounds.len() <= MAX_KEYS
        && bounds.windows(2).all(|w| w[0] < w[1])
        && counts.windows(2).all(|w| w[0] <= w[1]);
    let Some(total) = counts.last().copied().filter(|_| sane) else { return };
    let bucket = format!("{name}_bucket");
    for (le, n) in bounds.iter().zip(&counts) {
        p.sample(&bucket, &[("api", api), ("le", &number(*le))], *n);
    }
    p.sample(&bucket, &[("api", api), ("le", "+Inf")], total);
    p.sample(&format!("{name}_sum"), &[("api", api)], sum);
    p.sample(&format!("{name}_count"), &[("api", api)], total);
}

/// The SuperLink's server certificate.
fn tls(p: &mut Page, t: &Value) {
    if let Some(at) = num(&t["server_not_after_unix"]) {
        p.single("flower_init_tls_cert_expiry_timestamp_seconds", Kind::Gauge, "When the SuperLink's server certificate expires (Unix time).", at);
    }
}

/// The GPU step's findings.
fn gpu(p: &mut Page, g: &Value) {
    if g.is_null() {
        return;
    }
    p.single("flower_init_gpu_available", Kind::Gauge, "1 when a GPU is given to Flower.", flag(g["available"] == true));
    p.single("flower_init_gpus", Kind::Gauge, "GPUs found.", g["gpus"].as_array().map_or(0, Vec::len) as f64);
}

/// The SuperLink's run, from the app's status file.
fn run(p: &mut Page, r: &Value) {
    if r.is_null() {
        return;
    }
    // A u64 run id does not fit a float: it is a label, one value per page.
    let id = match &r["run_id"] {
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    };
    if let Some(id) = id {
        p.family("flower_init_run_info", Kind::Gauge, "The run the SuperLink follows (always 1).");
        p.sample("flower_init_run_info", &[("run_id", &id)], 1.0);
    }
    let now = r["status"].as_str().unwrap_or("");
    p.family("flower_init_run_status", Kind::Gauge, "The run's status: 1 for the current one.");
    for s in ["waiting", "running", "completed", "failed"] {
        p.sample("flower_init_run_status", &[("status", s)], flag(now == s));
    }
    if let Some(n) = num(&r["round"]) {
        p.single("flower_init_run_round", Kind::Gauge, "The last round the run finished (0 before the first).", n);
    }
    if let Some(n) = num(&r["num_rounds"]) {
        p.single("flower_init_run_rounds", Kind::Gauge, "Rounds the run is configured for.", n);
    }
    if let Some(v) = num(&r["loss"]) {
        p.single("flower_init_run_loss", Kind::Gauge, "Federated evaluation loss after the last finished round.", v);
    }
    if let Some(v) = num(&r["accuracy"]) {
        p.single("flower_init_run_accuracy", Kind::Gauge, "Federated evaluation accuracy (0..1) after the last finished round.", v);
    }
    if let Some(n) = num(&r["connected_nodes"]) {
        p.single("flower_init_run_connected_nodes", Kind::Gauge, "SuperNodes connected while the run waits for its minimum.", n);
    }
}

/// A SuperNode's partition and participation.
fn supernode(p: &mut Page, s: &Value) {
    if s.is_null() {
        return;
    }
    if let Some(n) = num(&s["partition_id"]) {
        p.single("flower_init_supernode_partition_id", Kind::Gauge, "The data partition this SuperNode trains on.", n);
    }
    p.single("flower_init_supernode_rounds_participated_total", Kind::Counter, "Training replies this SuperNode sent (rounds taken part in).", num(&s["rounds_participated"]).unwrap_or(0.0));
    if let Some(n) = num(&s["last_round"]) {
        p.single("flower_init_supernode_last_round", Kind::Gauge, "The round of the newest message from the SuperLink.", n);
    }
}

#[cfg(test)]
pub(crate) mod tests;
