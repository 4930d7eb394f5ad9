//! Readiness: Flower answers `GET /health` with 200 on its HTTP(S) port once it serves
//! (SuperLink :8000, SuperNode runtime API :9094). One short blocking request per call, over
//! plain TCP or rustls trusting exactly the given CA (the appliance's own), with the server's
//! IP address or DNS name verified against its certificate. HTTP is the program's one client
//! ([`crate::http`]).

use crate::http::{self, HttpError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Bytes of an answer's body read at most (Flower's `/health` says a word or two).
const MAX_BODY: usize = 64 * 1024;

/// Why `/health` did not answer 200; the kinds a caller reports differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// Nothing listens yet (connection refused): Flower is still starting.
    Refused,
    /// No answer within the timeout.
    Timeout,
    /// Another connection or I/O failure.
    Io(String),
    /// The TLS handshake failed (wrong CA, name not in the certificate, plain HTTP port…).
    Tls(String),
    /// Flower answered with another status.
    Status(u16),
    /// The answer is not HTTP.
    Malformed(String),
    /// The CA given to the probe is unusable.
    BadCa(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Refused => f.write_str("connection refused"),
            ProbeError::Timeout => f.write_str("no answer in time"),
            ProbeError::Io(e) => write!(f, "connection failed: {e}"),
            ProbeError::Tls(e) => write!(f, "TLS failure: {e}"),
            ProbeError::Status(s) => write!(f, "HTTP status {s}"),
            ProbeError::Malformed(e) => write!(f, "not an HTTP answer: {e}"),
            ProbeError::BadCa(e) => write!(f, "unusable CA certificate: {e}"),
        }
    }
}

impl std::error::Error for ProbeError {}

/// TLS settings of the probe: the CA that signed Flower's certificate (PEM, one or more) and
/// the name to verify (an IP address such as `127.0.0.1`, or a DNS name); sent as SNI when a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTls {
    pub ca_pem: String,
    pub server_name: String,
}

/// A prepared probe for one address: the TLS configuration is built once.
#[derive(Debug, Clone)]
pub struct Prober {
    ep: http::Endpoint,
}

impl Prober {
    /// A probe of `addr`; with `tls`, https trusting only `tls.ca_pem`.
    pub fn new(addr: SocketAddr, tls: Option<&ProbeTls>) -> Result<Prober, ProbeError> {
        Ok(Prober { ep: endpoint(addr, tls)? })
    }

    /// One `GET /health`: `Ok` on 200.
    pub fn check(&self, timeout: Duration) -> Result<(), ProbeError> {
        let headers = [("User-Agent", "flower-init".to_string()), ("Accept", "*/*".into())];
        let req = http::Request { method: "GET", path: "/health", headers: &headers, body: &[] };
        match http::send(&self.ep, &req, timeout, MAX_BODY)?.status {
            200 => Ok(()),
            s => Err(ProbeError::Status(s)),
        }
    }
}

/// Where Flower listens, as the HTTP client's endpoint: connect to `addr`; with `tls`, verify
/// `tls.server_name` against a certificate signed by `tls.ca_pem` (sent as SNI when a name).
pub(super) fn endpoint(addr: SocketAddr, tls: Option<&ProbeTls>) -> Result<http::Endpoint, ProbeError> {
    let (host, tls) = match tls {
        None => (addr.ip().to_string(), None),
        Some(t) => {
            rustls::pki_types::ServerName::try_from(t.server_name.as_str())
                .map_err(|e| ProbeError::BadCa(format!("server name {:?}: {e}", t.server_name)))?;
            (t.server_name.clone(), Some(client_config(&t.ca_pem)?))
        }
    };
    Ok(http::Endpoint { host, port: addr.port(), tls, addr: Some(addr) })
}

impl From<HttpError> for ProbeError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Refused => ProbeError::Refused,
            HttpError::Timeout(_) => ProbeError::Timeout,
            HttpError::Tls(m) => ProbeError::Tls(m),
            HttpError::Io(step, m) => ProbeError::Io(format!("{step}: {m}")),
            HttpError::Request(m) | HttpError::Resolve(m) => ProbeError::Io(m),
            e @ (HttpError::Malformed(_) | HttpError::TooLarge(_)) => ProbeError::Malformed(e.to_string()),
        }
    }
}

/// A one-off probe (builds the TLS configuration each time; keep a [`Prober`] to poll).
pub fn probe(addr: SocketAddr, tls: Option<&ProbeTls>, timeout: Duration) -> Result<(), ProbeError> {
    Prober::new(addr, tls)?.check(timeout)
}

/// rustls client configuration whose only roots are the certificates of `ca_pem`.
pub(super) fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, ProbeError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| ProbeError::BadCa(format!("PEM: {e:?}")))?;
        roots.add(cert).map_err(|e| ProbeError::BadCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ProbeError::BadCa("no certificate in the PEM text".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
