//! The blocking client: resolve, connect, (TLS,) send one request with `Connection: close`,
//! read one answer, all before one deadline. The answer's head goes through the gateway's
//! strict parser ([`super::head`]) and its body is framed by `Content-Length`, `chunked`
//! ([`super::chunked`]) or the close of the connection, never past `max_body` bytes.
//!
//! Errors say what failed and at which step, never what was sent: request headers carry the
//! OneGate token, so no error text is built from them.

use super::chunked::ChunkedDecoder;
use super::head::{self, BodyLen, HeadError, HeadLimits, HeadScanner};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// Longest answer head (status line and headers) read.
const MAX_HEAD: usize = 32 * 1024;
/// Most header fields in an answer head.
const MAX_HEADERS: usize = 128;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// Where a request goes: a host (a DNS name or an IP address, without brackets), a port, and
/// for https the rustls configuration whose roots are trusted. `addr`, when given, is where to
/// connect instead of resolving `host`, which then only names the server (`Host:`, and the name
/// its certificate must hold): Flower on loopback, verified as `127.0.0.1`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<ClientConfig>>,
    pub addr: Option<SocketAddr>,
}

impl Endpoint {
    /// `Host:` as RFC 9112 wants it: IPv6 in brackets, the port unless the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default = if self.tls.is_some() { 443 } else { 80 };
        if self.port == default { host } else { format!("{host}:{}", self.port) }
    }
}

/// One request: method, origin-form target (`/path?query`), extra headers, body.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, String)],
    pub body: &'a [u8],
}

/// An answer, whatever its status (a 3xx is returned as it is: redirects are not followed);
/// `media_type` is its `Content-Type` lowercased without parameters (empty when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub media_type: String,
    pub body: Vec<u8>,
}

/// Why no answer came back. No variant holds request bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The request cannot be sent as given (a line break in a header, …); names the field only.
    Request(String),
    /// The host name did not resolve.
    Resolve(String),
    /// Nothing listens on the port.
    Refused,
    /// The deadline passed; the text says during which step.
    Timeout(&'static str),
    /// The TLS handshake or a TLS record failed (unknown issuer, wrong name, plain HTTP port…).
    Tls(String),
    /// Another socket error, with the step.
    Io(&'static str, String),
    /// The answer is not well-formed HTTP/1.1 (or ended early).
    Malformed(String),
    /// The answer's body is longer than the limit.
    TooLarge(usize),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Request(why) => write!(f, "cannot send the request: {why}"),
            HttpError::Resolve(why) => write!(f, "cannot resolve the host: {why}"),
            HttpError::Refused => f.write_str("connection refused"),
            HttpError::Timeout(step) => write!(f, "timeout while {step}"),
            HttpError::Tls(why) => write!(f, "TLS failure: {why}"),
            HttpError::Io(step, why) => write!(f, "connection failed {step}: {why}"),
            HttpError::Malformed(why) => write!(f, "not a valid HTTP answer: {why}"),
            HttpError::TooLarge(limit) => write!(f, "answer body larger than {limit} bytes, refused"),
        }
    }
}

impl std::error::Error for HttpError {}

/// The rustls configuration trusting Mozilla's roots (webpki-roots, compiled in: the VM has no
/// CA store of its own before the root switch), ring, TLS 1.2 and 1.3. Built once.
pub fn mozilla_roots() -> Result<Arc<ClientConfig>, HttpError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(HttpError::Tls)
}

/// Send `req` to `ep` and read the answer, all within `timeout` (name resolution included);
/// a body longer than `max_body` is refused.
pub fn send(ep: &Endpoint, req: &Request<'_>, timeout: Duration, max_body: usize) -> Result<Response, HttpError> {
    let deadline = Instant::now() + timeout;
    let bytes = request_bytes(&ep.host_header(), req)?;
    let addrs = match ep.addr {
        Some(a) => vec![a],
        None => resolve(&ep.host, ep.port, deadline)?,
    };
    let sock = Timed { sock: connect(&addrs, deadline)?, deadline };
    match &ep.tls {
        None => exchange(sock, &bytes, req.method, max_body),
        Some(config) => {
            let name = ServerName::try_from(ep.host.clone())
                .map_err(|e| HttpError::Tls(format!("server name {:?}: {e}", ep.host)))?;
            let conn = ClientConnection::new(config.clone(), name).map_err(|e| HttpError::Tls(e.to_string()))?;
            exchange(StreamOwned::new(conn, sock), &bytes, req.method, max_body)
        }
    }
}

/// The request's bytes: request line, `Host`, the given headers, `Content-Length` when there
/// is a body (or the method carries one), `Connection: close`, the body. A CR, LF or NUL in
/// the target or a header is refused (naming the header, never its value).
pub fn request_bytes(host: &str, req: &Request<'_>) -> Result<Vec<u8>, HttpError> {
    let bad = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
    if bad(req.method) || req.method.contains(' ') || bad(req.path) || req.path.contains(' ') || bad(host) {
        return Err(HttpError::Request("a line break or space in the request line".into()));
    }
    let mut out = format!("{} {} HTTP/1.1\r\nHost: {host}\r\n", req.method, req.path);
    for (name, value) in req.headers {
        if bad(name) || name.contains(':') || bad(value) {
            return Err(HttpError::Request(format!("header {name:?} holds a line break")));
        }
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !req.body.is_empty() || matches!(req.method, "PUT" | "POST" | "PATCH") {
        out.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(req.body);
    Ok(bytes)
}

/// The addresses of `host`: an IP address as it is; a name through the system resolver in a
/// helper thread, so a resolver that hangs costs at most the time left (the thread ends when
/// the resolver gives up).
fn resolve(host: &str, port: u16, deadline: Instant) -> Result<Vec<SocketAddr>, HttpError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let found = (name.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>());
            let _ = tx.send(found.map_err(|e| e.to_string()));
        })
        .map_err(|e| HttpError::Io("starting the resolver thread", e.to_string()))?;
    match rx.recv_timeout(left(deadline)) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(HttpError::Resolve(format!("{host}: no address"))),
        Ok(Err(e)) => Err(HttpError::Resolve(format!("{host}: {e}"))),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(HttpError::Timeout("resolving the host name")),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(HttpError::Resolve(format!("{host}: the resolver ended"))),
    }
}

/// The first address that accepts, each tried with the time left.
fn connect(addrs: &[SocketAddr], deadline: Instant) -> Result<TcpStream, HttpError> {
    let mut last = HttpError::Resolve("no address".into());
    for a in addrs {
        let t = left(deadline);
        if t.is_zero() {
            return Err(HttpError::Timeout("connecting"));
        }
        match TcpStream::connect_timeout(a, t) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = io_error("connecting", &e),
        }
    }
    Err(last)
}

/// Time until `deadline` (zero once past).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// A socket whose every read and write waits at most until the deadline.
struct Timed {
    sock: TcpStream,
    deadline: Instant,
}

impl Timed {
    /// The time left as a socket timeout; an error once the deadline has passed.
    fn budget(&self) -> io::Result<Option<Duration>> {
        let t = left(self.deadline);
        if t.is_zero() { Err(io::ErrorKind::TimedOut.into()) } else { Ok(Some(t)) }
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.set_read_timeout(self.budget()?)?;
        self.sock.read(buf)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.set_write_timeout(self.budget()?)?;
        self.sock.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// An I/O error sorted by kind (rustls reports its failures as `InvalidData` wrapping its own
/// error; a socket timeout is `WouldBlock` on Linux).
fn io_error(step: &'static str, e: &io::Error) -> HttpError {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return HttpError::Tls(inner.to_string());
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => HttpError::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => HttpError::Timeout(step),
        _ => HttpError::Io(step, e.to_string()),
    }
}

/// Write the request, read the answer.
fn exchange<S: Read + Write>(mut s: S, request: &[u8], method: &str, max_body: usize) -> Result<Response, HttpError> {
    s.write_all(request).and_then(|()| s.flush()).map_err(|e| io_error("sending the request", &e))?;
    read_response(s, method, max_body)
}

/// One answer to a request with `method` from `r`: interim 1xx answers skipped, the body
/// framed as its head says and at most `max_body` bytes.
pub fn read_response<R: Read>(mut r: R, method: &str, max_body: usize) -> Result<Response, HttpError> {
    let mut buf = Vec::new();
    loop {
        let end = read_head(&mut r, &mut buf)?;
        let head = head::parse_response_head(buf.get(..end).unwrap_or_default(), MAX_HEADERS).map_err(head_error)?;
        buf.drain(..end);
        if head.status == 101 {
            return Err(HttpError::Malformed("101 Switching Protocols to a request that asked for none".into()));
        }
        if head.status < 200 {
            continue; // 100 Continue, 103 Early Hints: the answer follows.
        }
        let body = match head::response_body(method, &head).map_err(head_error)? {
            BodyLen::Empty => Vec::new(),
            BodyLen::Length(n) => read_length(&mut r, buf, n, max_body)?,
            BodyLen::Chunked => read_chunked(&mut r, buf, max_body)?,
            BodyLen::UntilClose => read_until_close(&mut r, buf, max_body)?,
        };
        return Ok(Response { status: head.status, media_type: media_type(&head.headers), body });
    }
}

/// The first `Content-Type`'s media type, lowercased, without parameters.
fn media_type(headers: &[head::Header]) -> String {
    headers
        .iter()
        .find(|h| h.is("content-type"))
        .map(|h| String::from_utf8_lossy(&h.value).split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Read until `buf` holds a whole head; its length.
fn read_head<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<usize, HttpError> {
    let limits = HeadLimits { max_line: MAX_HEAD, max_head: MAX_HEAD, max_headers: MAX_HEADERS };
    let mut scanner = HeadScanner::default();
    loop {
        if let Some(end) = scanner.scan(buf, &limits).map_err(head_error)? {
            return Ok(end);
        }
        if fill(r, buf, "reading the answer")? == 0 {
            return Err(HttpError::Malformed(if buf.is_empty() {
                "the server closed the connection without answering".into()
            } else {
                "the connection closed inside the answer's head".into()
            }));
        }
    }
}

/// A `Content-Length` body: refused at once when longer than the limit.
fn read_length<R: Read>(r: &mut R, mut buf: Vec<u8>, n: u64, max_body: usize) -> Result<Vec<u8>, HttpError> {
    let n = usize::try_from(n).ok().filter(|&n| n <= max_body).ok_or(HttpError::TooLarge(max_body))?;
    while buf.len() < n {
        if fill(r, &mut buf, "reading the answer")? == 0 {
            return Err(HttpError::Malformed(format!("the body ended after {} of {n} bytes", buf.len())));
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// A chunked body, decoded; its trailers are read and dropped.
fn read_chunked<R: Read>(r: &mut R, mut pending: Vec<u8>, max_body: usize) -> Result<Vec<u8>, HttpError> {
    let mut dec = ChunkedDecoder::default();
    let mut body = Vec::new();
    loop {
        let mut at = 0;
        while at < pending.len() && !dec.is_done() {
            let rest = pending.get(at..).unwrap_or_default();
            let step = dec.decode(rest).map_err(|e| HttpError::Malformed(e.to_string()))?;
            if let Some(data) = step.data.and_then(|range| rest.get(range)) {
                if body.len() + data.len() > max_body {
                    return Err(HttpError::TooLarge(max_body));
                }
                body.extend_from_slice(data);
            }
            at += step.consumed;
        }
        if dec.is_done() {
            return Ok(body);
        }
        pending.clear();
        if fill(r, &mut pending, "reading the answer")? == 0 {
            return Err(HttpError::Malformed("the connection closed inside a chunked body".into()));
        }
    }
}

/// A body that ends when the server closes (HTTP/1.0 style). With TLS, a close without
/// close_notify ends it too, as browsers and curl accept.
fn read_until_close<R: Read>(r: &mut R, mut buf: Vec<u8>, max_body: usize) -> Result<Vec<u8>, HttpError> {
    loop {
        if buf.len() > max_body {
            return Err(HttpError::TooLarge(max_body));
        }
        if fill(r, &mut buf, "reading the answer")? == 0 {
            return Ok(buf);
        }
    }
}

/// Append one read to `buf`; the count (0 at the end of the stream). A TLS stream that ends
/// without close_notify reads as the end too: each framing checks that it got all it needs.
fn fill<R: Read>(r: &mut R, buf: &mut Vec<u8>, step: &'static str) -> Result<usize, HttpError> {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match r.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(io_error(step, &e)),
        }
    }
}

/// A head the parser refused, as an answer error.
fn head_error(e: HeadError) -> HttpError {
    match e {
        HeadError::Malformed(why) | HeadError::Smuggling(why) => HttpError::Malformed(why.into()),
        HeadError::LineTooLong | HeadError::HeadTooLarge => {
            HttpError::Malformed(format!("head larger than {MAX_HEAD} bytes"))
        }
        HeadError::TooManyHeaders => HttpError::Malformed(format!("more than {MAX_HEADERS} header fields")),
        HeadError::Version => HttpError::Malformed("not HTTP/1.x".into()),
        HeadError::Coding => HttpError::Malformed("a transfer coding other than chunked".into()),
        HeadError::Expectation => HttpError::Malformed("unexpected Expect header".into()),
    }
}
