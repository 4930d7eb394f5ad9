//! Counters for `/status`: plain atomics, written by the gateway's threads with relaxed
//! ordering and read by the supervisor at any time without taking a lock (the numbers of one
//! snapshot may be a few microseconds apart; they are counters, not a transaction).

use super::http::HeadError;
use super::route::{Api, Denied};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why the gateway answered or dropped something itself; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// 403: a canonical path that this port does not serve (Control on the Fleet port…).
    ForbiddenPath,
    /// 403: dot segments, `//`, percent-encoding, query, absolute-form…
    NonCanonicalTarget,
    /// 403: a method Flower does not serve on that path.
    ForbiddenMethod,
    /// 400: malformed request head or body framing.
    BadRequest,
    /// 400: Transfer-Encoding with Content-Length, duplicate Content-Length…
    Smuggling,
    /// 414.
    UriTooLong,
    /// 431: header section over the limit.
    HeadTooLarge,
    /// 431: too many header fields.
    TooManyHeaders,
    /// 505: not HTTP/1.1.
    Version,
    /// 501: a transfer coding other than chunked.
    Coding,
    /// 417: an Expect other than 100-continue.
    Expectation,
    /// 413: body over the limit.
    BodyTooLarge,
    /// 408 (or a close): the head did not arrive within the header timeout (slow loris).
    HeaderTimeout,
    /// A body stalled past the body timeout.
    BodyTimeout,
    /// Refused at accept: the connection limit was reached and nothing idle could be evicted.
    ConnectionLimit,
    /// An idle keep-alive connection closed to make room for a new one.
    EvictedIdle,
    /// Control port: the source address is not in FL_CONTROL_ALLOW.
    SourceNotAllowed,
    /// 503: no worker became free within the queue timeout, or a thread could not start.
    Busy,
    /// The TLS handshake failed (wrong CA on the client, not TLS, …).
    TlsHandshake,
}

/// Every [`Reject`], in the order of the JSON object.
pub const ALL_REJECTS: [Reject; 19] = [
    Reject::ForbiddenPath,
    Reject::NonCanonicalTarget,
    Reject::ForbiddenMethod,
    Reject::BadRequest,
    Reject::Smuggling,
    Reject::UriTooLong,
    Reject::HeadTooLarge,
    Reject::TooManyHeaders,
    Reject::Version,
    Reject::Coding,
    Reject::Expectation,
    Reject::BodyTooLarge,
    Reject::HeaderTimeout,
    Reject::BodyTimeout,
    Reject::ConnectionLimit,
    Reject::EvictedIdle,
    Reject::SourceNotAllowed,
    Reject::Busy,
    Reject::TlsHandshake,
];

impl Reject {
    /// Its key in the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Reject::ForbiddenPath => "forbidden_path",
            Reject::NonCanonicalTarget => "non_canonical_target",
            Reject::ForbiddenMethod => "forbidden_method",
            Reject::BadRequest => "bad_request",
            Reject::Smuggling => "smuggling",
            Reject::UriTooLong => "uri_too_long",
            Reject::HeadTooLarge => "head_too_large",
            Reject::TooManyHeaders => "too_many_headers",
            Reject::Version => "version",
            Reject::Coding => "coding",
            Reject::Expectation => "expectation",
            Reject::BodyTooLarge => "body_too_large",
            Reject::HeaderTimeout => "header_timeout",
            Reject::BodyTimeout => "body_timeout",
            Reject::ConnectionLimit => "connection_limit",
            Reject::EvictedIdle => "evicted_idle",
            Reject::SourceNotAllowed => "source_not_allowed",
            Reject::Busy => "busy",
            Reject::TlsHandshake => "tls_handshake",
        }
    }

    /// Its counter.
    fn index(self) -> usize {
        ALL_REJECTS.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl From<Denied> for Reject {
    fn from(d: Denied) -> Reject {
        match d {
            Denied::Path => Reject::ForbiddenPath,
            Denied::NonCanonical => Reject::NonCanonicalTarget,
            Denied::Method => Reject::ForbiddenMethod,
        }
    }
}

impl From<HeadError> for Reject {
    fn from(e: HeadError) -> Reject {
        match e {
            HeadError::Malformed(_) => Reject::BadRequest,
            HeadError::Smuggling(_) => Reject::Smuggling,
            HeadError::LineTooLong => Reject::UriTooLong,
            HeadError::HeadTooLarge => Reject::HeadTooLarge,
            HeadError::TooManyHeaders => Reject::TooManyHeaders,
            HeadError::Version => Reject::Version,
            HeadError::Coding => Reject::Coding,
            HeadError::Expectation => Reject::Expectation,
        }
    }
}

/// Failures talking to Flower (answered 502/504 to the client, or a cut response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Could not connect (Flower not listening yet, or restarting).
    Connect,
    /// The loopback TLS handshake or certificate check failed.
    Tls,
    /// No answer within the upstream timeout.
    Timeout,
    /// Flower closed or reset the connection, or sent something unframeable.
    Protocol,
}

pub const ALL_UPSTREAM_ERRORS: [UpstreamError; 4] =
    [UpstreamError::Connect, UpstreamError::Tls, UpstreamError::Timeout, UpstreamError::Protocol];

impl UpstreamError {
    /// Its key in the JSON.
    pub fn key(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Tls => "tls",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Protocol => "protocol",
        }
    }

    /// Its counter.
    fn index(self) -> usize {
        ALL_UPSTREAM_ERRORS.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Upper bounds (seconds) of the request duration histogram's buckets (`+Inf` implied): from a
/// loopback round trip to a Control stream that lasts minutes.
pub const DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 300.0];
/// Classes of the status codes Flower answered forwarded requests with (index = first digit - 1).
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Forwarded requests of one API: answers by status class, and how long they took (from a
/// worker taking the request to the last byte of the response) as a histogram.
#[derive(Debug, Default)]
struct Answers {
    classes: [AtomicU64; STATUS_CLASSES.len()],
    /// Not cumulative: `buckets[i]` counts durations in `(bound[i-1], bound[i]]`; the last one
    /// everything above the last bound.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// Sum of the durations, in microseconds.
    sum_us: AtomicU64,
}

impl Answers {
    fn record(&self, code: u16, took: std::time::Duration) {
        let class = usize::from(code / 100).clamp(1, STATUS_CLASSES.len()) - 1;
        if let Some(c) = self.classes.get(class) {
            c.fetch_add(1, Relaxed);
        }
        let secs = took.as_secs_f64();
        let i = DURATION_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(DURATION_BUCKETS.len());
        if let Some(c) = self.buckets.get(i) {
            c.fetch_add(1, Relaxed);
        }
        self.sum_us.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// `{"status": {"2xx": n, …}, "duration": {"le": [bounds], "counts": [cumulative…, total], "sum_s": x}}`.
    fn to_json(&self) -> Value {
        let classes: Map<String, Value> =
            STATUS_CLASSES.iter().zip(&self.classes).map(|(k, c)| (k.to_string(), json!(c.load(Relaxed)))).collect();
        let mut acc = 0u64;
        let cumulative: Vec<u64> = self.buckets.iter().map(|c| {
            acc += c.load(Relaxed);
            acc
        }).collect();
        json!({
            "status": classes,
            "duration": { "le": DURATION_BUCKETS, "counts": cumulative, "sum_s": self.sum_us.load(Relaxed) as f64 / 1e6 },
        })
    }
}

/// The gateway's counters. Shared as `Arc<Stats>` by every thread.
#[derive(Debug, Default)]
pub struct Stats {
    /// Client connections currently open (gauge).
    pub connections_open: AtomicU64,
    /// Client connections accepted since start.
    pub connections_total: AtomicU64,
    /// Requests being forwarded right now (gauge).
    pub active: AtomicU64,
    requests: [AtomicU64; 3],
    /// Forwarded requests' answers, per API (same index as `requests`).
    answers: [Answers; 3],
    /// Requests answered by the gateway itself (403, 400, 413, …).
    pub requests_rejected: AtomicU64,
    /// Bytes read from clients / written to clients (HTTP bytes, after TLS).
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    rejects: [AtomicU64; ALL_REJECTS.len()],
    upstream: [AtomicU64; ALL_UPSTREAM_ERRORS.len()],
    /// Requests re-sent once on a fresh upstream connection after a pooled one had closed.
    pub upstream_retries: AtomicU64,
    /// Keep-alive connections closed after the idle timeout (normal; not a reject).
    pub closed_idle: AtomicU64,
    /// Client connections that broke mid-request (reset, timeout, bad chunked body).
    pub client_errors: AtomicU64,
}

impl Stats {
    /// Count a request forwarded to `api`.
    pub fn request(&self, api: Api) {
        if let Some(c) = self.requests.get(api_index(api)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Count the answer to a request forwarded to `api`: its status code (Flower's, or the
    /// gateway's 502/504 when Flower failed) and how long it took.
    pub fn answered(&self, api: Api, code: u16, took: std::time::Duration) {
        if let Some(a) = self.answers.get(api_index(api)) {
            a.record(code, took);
        }
    }

    /// Count a reject; `answered` when it was a request the gateway answered itself.
    pub fn reject(&self, why: Reject, answered: bool) {
        if let Some(c) = self.rejects.get(why.index()) {
            c.fetch_add(1, Relaxed);
        }
        if answered {
            self.requests_rejected.fetch_add(1, Relaxed);
        }
    }

    /// Count a failure on Flower's side.
    pub fn upstream_error(&self, why: UpstreamError) {
        if let Some(c) = self.upstream.get(why.index()) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Count bytes read from a client.
    pub fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }

    /// Count bytes written to a client.
    pub fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }

    /// One reject counter.
    pub fn rejects_of(&self, why: Reject) -> u64 {
        self.rejects.get(why.index()).map_or(0, |c| c.load(Relaxed))
    }

    /// One request counter.
    pub fn requests_of(&self, api: Api) -> u64 {
        self.requests.get(api_index(api)).map_or(0, |c| c.load(Relaxed))
    }

    /// A snapshot as the JSON value served under `"gateway"` in `/status`.
    pub fn to_json(&self) -> Value {
        let rejects: Map<String, Value> =
            ALL_REJECTS.iter().map(|r| (r.key().to_string(), json!(self.rejects_of(*r)))).collect();
        let mut upstream: Map<String, Value> = ALL_UPSTREAM_ERRORS
            .iter()
            .map(|u| (u.key().to_string(), json!(self.upstream.get(u.index()).map_or(0, |c| c.load(Relaxed)))))
            .collect();
        let total: u64 = self.upstream.iter().map(|c| c.load(Relaxed)).sum();
        upstream.insert("total".into(), json!(total));
        upstream.insert("retried".into(), json!(self.upstream_retries.load(Relaxed)));
        json!({
            "connections": {
                "open": self.connections_open.load(Relaxed),
                "total": self.connections_total.load(Relaxed),
                "active_requests": self.active.load(Relaxed),
                "closed_idle": self.closed_idle.load(Relaxed),
                "client_errors": self.client_errors.load(Relaxed),
            },
            "requests": {
                "fleet": self.requests_of(Api::Fleet),
                "health": self.requests_of(Api::Health),
                "control": self.requests_of(Api::Control),
                "rejected": self.requests_rejected.load(Relaxed),
            },
            "answers": {
                "fleet": self.answers[0].to_json(),
                "health": self.answers[1].to_json(),
                "control": self.answers[2].to_json(),
            },
            "bytes": { "in": self.bytes_in.load(Relaxed), "out": self.bytes_out.load(Relaxed) },
            "rejects": rejects,
            "upstream_errors": upstream,
        })
    }
}

/// The counters' index of an API (the order of the JSON's keys: fleet, health, control).
fn api_index(api: Api) -> usize {
    match api {
        Api::Fleet => 0,
        Api::Health => 1,
        Api::Control => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_every_counter() {
        let s = Stats::default();
        s.request(Api::Fleet);
        s.request(Api::Fleet);
        s.request(Api::Control);
        s.reject(Reject::ForbiddenPath, true);
        s.reject(Reject::ConnectionLimit, false);
        s.upstream_error(UpstreamError::Connect);
        s.add_in(10);
        s.add_out(7);
        let v = s.to_json();
        assert_eq!(v["requests"]["fleet"], 2);
        assert_eq!(v["requests"]["control"], 1);
        assert_eq!(v["requests"]["health"], 0);
        assert_eq!(v["requests"]["rejected"], 1);
        assert_eq!(v["rejects"]["forbidden_path"], 1);
        assert_eq!(v["rejects"]["connection_limit"], 1);
        assert_eq!(v["rejects"].as_object().unwrap().len(), ALL_REJECTS.len());
        assert_eq!(v["upstream_errors"]["connect"], 1);
        assert_eq!(v["upstream_errors"]["total"], 1);
        assert_eq!(v["bytes"]["in"], 10);
        assert_eq!(v["bytes"]["out"], 7);
        assert_eq!(v["connections"]["open"], 0);
    }

    #[test]
    fn answers_count_status_classes_and_a_cumulative_histogram() {
        use std::time::Duration;
        let s = Stats::default();
        s.answered(Api::Fleet, 200, Duration::from_millis(3));
        s.answered(Api::Fleet, 200, Duration::from_millis(40));
        s.answered(Api::Fleet, 502, Duration::from_secs(400));
        s.answered(Api::Control, 404, Duration::from_millis(1));
        let v = s.to_json();
        let f = &v["answers"]["fleet"];
        assert_eq!(f["status"]["2xx"], 2);
        assert_eq!(f["status"]["5xx"], 1);
        assert_eq!(f["duration"]["le"].as_array().unwrap().len(), DURATION_BUCKETS.len());
        let counts: Vec<u64> = f["duration"]["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
        assert_eq!(counts.len(), DURATION_BUCKETS.len() + 1);
        assert_eq!(counts[0], 1, "3 ms <= 5 ms");
        assert_eq!(counts[3], 2, "40 ms <= 50 ms, cumulative");
        assert_eq!(counts[DURATION_BUCKETS.len() - 1], 2, "400 s is above the last bound");
        assert_eq!(counts[DURATION_BUCKETS.len()], 3, "+Inf is every answer");
        assert!((f["duration"]["sum_s"].as_f64().unwrap() - 400.043).abs() < 1e-6);
        assert_eq!(v["answers"]["control"]["status"]["4xx"], 1);
        assert_eq!(v["answers"]["health"]["duration"]["counts"][10], 0);
    }

    #[test]
    fn keys_are_unique() {
        let mut keys: Vec<&str> = ALL_REJECTS.iter().map(|r| r.key()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), ALL_REJECTS.len());
    }
}
