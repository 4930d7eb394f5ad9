//! Readiness: Flower answers `GET /health` with 200 on its HTTP(S) port once it serves
//! (SuperLink :8000, SuperNode runtime API :9094). One short blocking request per call, over
//! plain TCP or rustls trusting exactly the given CA (the appliance's own), with the server's
//! IP address or DNS name verified against its certificate. The HTTP/1.1 request and the
//! status-line parsing are pure functions.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Bytes of a response read at most (the status line is all we need).
const MAX_RESPONSE: usize = 8192;

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
    addr: SocketAddr,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    host: String,
}

impl Prober {
    /// A probe of `addr`; with `tls`, https trusting only `tls.ca_pem`.
    pub fn new(addr: SocketAddr, tls: Option<&ProbeTls>) -> Result<Prober, ProbeError> {
        let host = match tls {
            Some(t) => t.server_name.clone(),
            None => addr.ip().to_string(),
        };
        let tls = match tls {
            None => None,
            Some(t) => {
                let name = ServerName::try_from(t.server_name.clone())
                    .map_err(|e| ProbeError::BadCa(format!("server name {:?}: {e}", t.server_name)))?;
                Some((client_config(&t.ca_pem)?, name))
            }
        };
        Ok(Prober { addr, tls, host })
    }

    /// One `GET /health`: `Ok` on 200.
    pub fn check(&self, timeout: Duration) -> Result<(), ProbeError> {
        let tcp = TcpStream::connect_timeout(&self.addr, timeout).map_err(io_error)?;
        tcp.set_read_timeout(Some(timeout)).map_err(io_error)?;
        tcp.set_write_timeout(Some(timeout)).map_err(io_error)?;
        let request = health_request(&self.host);
        let response = match &self.tls {
            None => exchange(tcp, &request)?,
            Some((config, name)) => {
                let conn = rustls::ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| ProbeError::Tls(e.to_string()))?;
                exchange(rustls::StreamOwned::new(conn, tcp), &request)?
            }
        };
        match parse_response(&response)? {
            200 => Ok(()),
            s => Err(ProbeError::Status(s)),
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

/// Send the request, read until the status line is complete (or the peer closes).
fn exchange<S: Read + Write>(mut s: S, request: &[u8]) -> Result<Vec<u8>, ProbeError> {
    s.write_all(request).and_then(|_| s.flush()).map_err(io_error)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < MAX_RESPONSE {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        }
    }
    Ok(buf)
}

/// Sort an I/O error into a probe error (rustls reports handshake failures as `InvalidData`
/// wrapping its own error).
fn io_error(e: io::Error) -> ProbeError {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return ProbeError::Tls(inner.to_string());
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ProbeError::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ProbeError::Timeout,
        _ => ProbeError::Io(e.to_string()),
    }
}

/// The request: HTTP/1.1 needs `Host`; `Connection: close` so nothing lingers.
pub fn health_request(host: &str) -> Vec<u8> {
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    format!("GET /health HTTP/1.1\r\nHost: {host}\r\nUser-Agent: flower-init\r\nAccept: */*\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// The status code of a response's status line (`HTTP/1.x NNN reason`).
pub fn parse_response(bytes: &[u8]) -> Result<u16, ProbeError> {
    if bytes.is_empty() {
        return Err(ProbeError::Malformed("empty answer".into()));
    }
    let end = bytes.windows(2).position(|w| w == b"\r\n").unwrap_or(bytes.len());
    let line = String::from_utf8_lossy(&bytes[..end.min(200)]);
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(ProbeError::Malformed(format!("status line {line:?}")));
    }
    match code.parse::<u16>() {
        Ok(c) if code.len() == 3 && (100..600).contains(&c) => Ok(c),
        _ => Err(ProbeError::Malformed(format!("status line {line:?}"))),
    }
}
