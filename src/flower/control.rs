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

pub mod http;
pub mod proto;

pub use proto::{NodeInfo, RunInfo, Scalar, StartRunRequest, StartRunResponse};

use super::probe::{ProbeError, ProbeTls, client_config};
use rustls::pki_types::ServerName;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    Http(http::HttpError),
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
            ProbeError::Malformed(m) => ControlError::Http(http::HttpError::Malformed(m)),
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
    addr: SocketAddr,
    host: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    timeout: Duration,
}

impl Control {
    /// A client of `addr`; with `tls`, https trusting only `tls.ca_pem`.
    pub fn new(addr: SocketAddr, tls: Option<&ProbeTls>, timeout: Duration) -> Result<Control, ControlError> {
        let host = match tls {
            Some(t) => t.server_name.clone(),
            None => addr.ip().to_string(),
        };
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", addr.port())
        } else {
            format!("{host}:{}", addr.port())
        };
        let tls = match tls {
            None => None,
            Some(t) => {
                let name = ServerName::try_from(t.server_name.clone())
                    .map_err(|e| ControlError::BadCa(format!("server name {:?}: {e}", t.server_name)))?;
                Some((client_config(&t.ca_pem)?, name))
            }
        };
        Ok(Control { addr, host, tls, timeout })
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
        let deadline = Instant::now() + self.timeout;
        let tcp = TcpStream::connect_timeout(&self.addr, self.timeout).map_err(io_error)?;
        let request = http::request(&self.host, &format!("/v1/control/{method}"), body);
        let response = match &self.tls {
            None => exchange(tcp, &request, deadline)?,
            Some((config, name)) => {
                let conn = rustls::ClientConnection::new(config.clone(), name.clone()).map_err(|e| ControlError::Tls(e.to_string()))?;
                exchange(rustls::StreamOwned::new(conn, tcp), &request, deadline)?
            }
        };
        answer(response)
    }
}

/// The body of a protobuf 200, or the error the response says.
pub fn answer(r: http::Response) -> Result<Vec<u8>, ControlError> {
    if r.status == 200 && r.media_type == http::PROTOBUF {
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

/// Send the request and read the whole response by `deadline` (each read waits at most the
/// time left).
fn exchange<S: Read + Write + Timeouts>(mut s: S, request: &[u8], deadline: Instant) -> Result<http::Response, ControlError> {
    s.set_timeouts(left(deadline)?)?;
    s.write_all(request).and_then(|_| s.flush()).map_err(io_error)?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(r) = http::parse(&buf, false).map_err(ControlError::Http)? {
            return Ok(r);
        }
        s.set_timeouts(left(deadline)?)?;
        match s.read(&mut chunk) {
            Ok(0) => {
                return http::parse(&buf, true).map_err(ControlError::Http)?.ok_or(ControlError::Http(http::HttpError::Truncated));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // uvicorn may close a TLS connection without close_notify: what was read counts,
            // and `parse` still refuses a body shorter than its content-length.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return http::parse(&buf, true).map_err(ControlError::Http)?.ok_or(ControlError::Http(http::HttpError::Truncated));
            }
            Err(e) => return Err(io_error(e)),
        }
    }
}

/// The time left before `deadline`, or a timeout.
fn left(deadline: Instant) -> Result<Duration, ControlError> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() { Err(ControlError::Timeout) } else { Ok(d) }
}

/// Read/write timeouts of the socket under a stream.
trait Timeouts {
    fn set_timeouts(&mut self, d: Duration) -> Result<(), ControlError>;
}

impl Timeouts for TcpStream {
    fn set_timeouts(&mut self, d: Duration) -> Result<(), ControlError> {
        self.set_read_timeout(Some(d)).and_then(|_| self.set_write_timeout(Some(d))).map_err(io_error)
    }
}

impl Timeouts for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn set_timeouts(&mut self, d: Duration) -> Result<(), ControlError> {
        self.sock.set_timeouts(d)
    }
}

/// Sort an I/O error (rustls reports its own errors as `InvalidData` wrapping them).
fn io_error(e: io::Error) -> ControlError {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return ControlError::Tls(inner.to_string());
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ControlError::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ControlError::Timeout,
        _ => ControlError::Io(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
