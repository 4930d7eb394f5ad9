//! A blocking client of Flower 1.42's Control API, for the SuperLink's own loopback: submit
//! the bundled run (StartRun), follow it (ListRuns), and register/unregister SuperNode public
//! keys (RegisterNode, UnregisterNode, ListNodes). Issues #17.2 and #19.
//!
//! Flower 1.42 serves the Control API as protobuf over HTTP on the SuperLink's one port (8000,
//! `POST /v1/control/<method>`, `application/protobuf` both ways), through uvicorn, with the
//! SuperLink's own certificate when TLS is on; the gRPC Control API on 9093 only starts with
//! the internal `FLWR_INTERNAL_GRPC_CONTROL_API=1` (docs/control-api.md has the references).
//! So this is HTTP/1.1 (uvicorn speaks nothing else) over plain TCP or rustls trusting exactly
//! the appliance's CA, one call per connection, bounded in time and size; the protobuf is
//! written by hand for exactly these messages ([`proto`]). Errors are values: Flower's own
//! refusals come back as [`ControlError::Api`] with its numeric code.

pub mod proto;

pub use proto::{NodeInfo, RunInfo, Scalar, StartRunRequest, StartRunResponse};

use super::probe::{ProbeError, ProbeTls, endpoint};
use crate::http::{self, HttpError};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Bytes of body accepted at most: ListNodes/ListRuns answers are a few hundred bytes per
/// node or run.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// `application/protobuf` (`supercore/protobuf/constants.py`), both ways, as Flower's own
/// client sends it (`supercore/protobuf/client.py` `_unary_unary`).
pub const PROTOBUF: &str = "application/protobuf";

/// Flower's error codes the appliance acts on (`supercore/error/base.py` `ApiErrorCode`).
pub mod code {
    /// A run-config key the app does not declare (HTTP 412).
    pub const INVALID_RUN_CONFIG: i64 = 15;
    /// ListRuns/StopRun of an unknown run (HTTP 404).
    pub const RUN_ID_NOT_FOUND: i64 = 16;
    /// RegisterNode with a key that is not a PEM NIST EC public key (HTTP 412).
    pub const PUBLIC_KEY_NOT_VALID: i64 = 22;
    /// RegisterNode with a key already registered (HTTP 412).
    pub const PUBLIC_KEY_ALREADY_IN_USE: i64 = 23;
    /// UnregisterNode of an unknown node (HTTP 404).
    pub const NODE_NOT_FOUND: i64 = 24;
}

/// Bytes of a FAB Flower accepts at most (`common/constant.py` `FAB_MAX_SIZE`, 10 MB); a
/// larger one gets a 200 with no run id.
pub const FAB_MAX_SIZE: usize = 10 * 1024 * 1024;

/// Why a Control API call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// Nothing listens (connection refused): Flower is not serving yet.
    Refused,
    /// No complete answer within the call's timeout.
    Timeout,
    /// Another connection or I/O failure.
    Io(String),
    /// The TLS handshake or record layer failed.
    Tls(String),
    /// The CA or server name given to the client is unusable.
    BadCa(String),
    /// The answer is not HTTP we accept, too large, or cut short.
    Http(HttpError),
    /// A 200 whose body is not the expected protobuf message.
    Proto(String),
    /// Flower refused the call: HTTP status, Flower's error code (`code::*`) and its public
    /// message (the internal one is in the SuperLink's log).
    Api { status: u16, code: Option<i64>, detail: String },
    /// An answer that is neither the protobuf reply nor Flower's JSON error.
    Unexpected { status: u16, media_type: String },
}

impl ControlError {
    /// Flower's error code, when Flower refused the call.
    pub fn api_code(&self) -> Option<i64> {
        match self {
            ControlError::Api { code, .. } => *code,
            _ => None,
        }
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Refused => f.write_str("connection refused"),
            ControlError::Timeout => f.write_str("no answer in time"),
            ControlError::Io(e) => write!(f, "connection failed: {e}"),
            ControlError::Tls(e) => write!(f, "TLS failure: {e}"),
            ControlError::BadCa(e) => write!(f, "unusable CA certificate: {e}"),
            ControlError::Http(e) => e.fmt(f),
            ControlError::Proto(e) => write!(f, "malformed answer: {e}"),
            ControlError::Api { status, code: Some(c), detail } => write!(f, "Flower refused (HTTP {status}, code {c}): {detail}"),
            ControlError::Api { status, code: None, detail } => write!(f, "Flower refused (HTTP {status}): {detail}"),
            ControlError::Unexpected { status, media_type } => {
                write!(f, "unexpected answer: HTTP {status} {media_type:?}")
            }
        }
    }
}

impl std::error::Error for ControlError {}

impl From<ProbeError> for ControlError {
    fn from(e: ProbeError) -> Self {
        match e {
            ProbeError::Refused => ControlError::Refused,
            ProbeError::Timeout => ControlError::Timeout,
            ProbeError::Io(m) => ControlError::Io(m),
            ProbeError::Tls(m) => ControlError::Tls(m),
            ProbeError::BadCa(m) => ControlError::BadCa(m),
            ProbeError::Status(s) => ControlError::Unexpected { status: s, media_type: String::new() },
            ProbeError::Malformed(m) => ControlError::Http(HttpError::Malformed(m)),
        }
    }
}

impl From<HttpError> for ControlError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Refused => ControlError::Refused,
            HttpError::Timeout(_) => ControlError::Timeout,
            HttpError::Tls(m) => ControlError::Tls(m),
            HttpError::Io(step, m) => ControlError::Io(format!("{step}: {m}")),
            e => ControlError::Http(e),
        }
    }
}

impl From<proto::ProtoError> for ControlError {
    fn from(e: proto::ProtoError) -> Self {
        ControlError::Proto(e.0)
    }
}

/// A Control API endpoint: the address, TLS (the appliance's CA and the name in Flower's
/// certificate, e.g. `127.0.0.1`) or plain, and the time one call may take in all.
#[derive(Debug, Clone)]
pub struct Control {
    ep: http::Endpoint,
    timeout: Duration,
}

impl Control {
    /// A client of `addr`; with `tls`, https trusting only `tls.ca_pem`.
    pub fn new(addr: SocketAddr, tls: Option<&ProbeTls>, timeout: Duration) -> Result<Control, ControlError> {
        Ok(Control { ep: endpoint(addr, tls)?, timeout })
    }

    /// StartRun: the run id Flower gave the run.
    pub fn start_run(&self, req: &StartRunRequest) -> Result<StartRunResponse, ControlError> {
        if req.fab_content.len() > FAB_MAX_SIZE {
            return Err(ControlError::Api {
                status: 0,
                code: None,
                detail: format!("FAB of {} bytes is over Flower's 10 MB limit", req.fab_content.len()),
            });
        }
        let body = self.call("start-run", &req.encode())?;
        let r = StartRunResponse::decode(&body)?;
        if r.run_id.is_none() {
            return Err(ControlError::Proto("StartRun answered without a run id (Flower logs why: FAB too large?)".into()));
        }
        Ok(r)
    }

    /// ListRuns: one run by id, or the latest `limit` runs (Flower's default: 20).
    pub fn list_runs(&self, run_id: Option<u64>, limit: Option<u64>) -> Result<Vec<RunInfo>, ControlError> {
        Ok(proto::decode_list_runs(&self.call("list-runs", &proto::list_runs_request(run_id, limit))?)?)
    }

    /// StopRun: whether Flower stopped it.
    pub fn stop_run(&self, run_id: u64) -> Result<bool, ControlError> {
        Ok(proto::decode_stop_run(&self.call("stop-run", &proto::stop_run_request(run_id))?)?)
    }

    /// RegisterNode: the node id Flower gave the key (PEM SubjectPublicKeyInfo, NIST EC).
    pub fn register_node(&self, public_key_pem: &str, name: Option<&str>) -> Result<u64, ControlError> {
        let body = self.call("register-node", &proto::register_node_request(public_key_pem.as_bytes(), name))?;
        proto::decode_register_node(&body)?.ok_or_else(|| ControlError::Proto("RegisterNode answered without a node id".into()))
    }

    /// UnregisterNode (permanent for that key, Flower's docs say).
    pub fn unregister_node(&self, node_id: u64) -> Result<(), ControlError> {
        self.call("unregister-node", &proto::unregister_node_request(node_id)).map(|_| ())
    }

    /// ListNodes: the SuperNodes registered or connected, unregistered ones included.
    pub fn list_nodes(&self) -> Result<Vec<NodeInfo>, ControlError> {
        Ok(proto::decode_list_nodes(&self.call("list-nodes", &[])?)?)
    }

    /// One call: `POST /v1/control/<method>`; the protobuf body of a 200.
    fn call(&self, method: &str, body: &[u8]) -> Result<Vec<u8>, ControlError> {
        let headers = [("User-Agent", "flower-init".to_string()), ("Content-Type", PROTOBUF.into()), ("Accept", PROTOBUF.into())];
        let path = format!("/v1/control/{method}");
        let req = http::Request { method: "POST", path: &path, headers: &headers, body };
        answer(http::send(&self.ep, &req, self.timeout, MAX_BODY)?)
    }
}

/// The body of a protobuf 200, or the error the response says.
pub fn answer(r: http::Response) -> Result<Vec<u8>, ControlError> {
    if r.status == 200 && r.media_type == PROTOBUF {
        return Ok(r.body);
    }
    if r.status >= 400 && (r.media_type == "application/json" || r.media_type.ends_with("+json")) {
        // Flower's errors: {"code": N, "detail": "..."}; FastAPI's own: {"detail": ...}.
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let detail = match &v["detail"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::from_utf8_lossy(&r.body[..r.body.len().min(200)]).into_owned(),
            other => other.to_string(),
        };
        return Err(ControlError::Api { status: r.status, code: v["code"].as_i64(), detail });
    }
    Err(ControlError::Unexpected { status: r.status, media_type: r.media_type })
}

#[cfg(test)]
mod tests;
