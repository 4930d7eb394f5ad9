//! HTTP/1.1 message heads (RFC 9112), parsed strictly and re-serialised canonically.
//!
//! The gateway never forwards the bytes a client sent as the head: it parses them, refuses
//! anything ambiguous (the inputs of request smuggling: `Transfer-Encoding` together with
//! `Content-Length`, duplicate lengths, obsolete line folding, bare LF or CR, whitespace
//! before a colon, codings other than `chunked`), and writes a fresh head for Flower. Flower
//! therefore only ever sees one well-formed framing, whatever its own parser would have done
//! with the original. The OneGate client ([`super::send`]) reads its answers' heads with the
//! same parser.
//!
//! Pure functions over byte slices: the tests compare bytes.

use std::fmt;

/// The parts of a head that callers need; the rest stay in `headers` in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// As received (names are case-insensitive; compare with [`Header::is`]).
    pub name: String,
    /// Trimmed of surrounding spaces and tabs; may hold obs-text (bytes ≥ 0x80).
    pub value: Vec<u8>,
}

impl Header {
    /// Whether this header is called `name` (ASCII case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// A parsed request line and header section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub headers: Vec<Header>,
}

/// A parsed status line and header section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<Header>,
}

/// Size limits applied while reading a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The request line (method, target, version), without CRLF.
    pub max_line: usize,
    /// The whole head, request line and final CRLFCRLF included.
    pub max_head: usize,
    pub max_headers: usize,
}

/// Why a request head was refused: each maps to a status code and a metrics key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed syntax; the text says which rule.
    Malformed(&'static str),
    /// Ambiguous framing that smuggling attacks rely on.
    Smuggling(&'static str),
    LineTooLong,
    HeadTooLarge,
    TooManyHeaders,
    /// Not HTTP/1.1.
    Version,
    /// A transfer coding other than `chunked`.
    Coding,
    /// An `Expect` other than `100-continue`.
    Expectation,
}

impl HeadError {
    /// The status code of the answer.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed(_) | HeadError::Smuggling(_) => 400,
            HeadError::LineTooLong => 414,
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Version => 505,
            HeadError::Coding => 501,
            HeadError::Expectation => 417,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Malformed(why) => write!(f, "malformed request: {why}"),
            HeadError::Smuggling(why) => write!(f, "ambiguous message framing: {why}"),
            HeadError::LineTooLong => f.write_str("request line too long"),
            HeadError::HeadTooLarge => f.write_str("request header section too large"),
            HeadError::TooManyHeaders => f.write_str("too many header fields"),
            HeadError::Version => f.write_str("only HTTP/1.1 is served"),
            HeadError::Coding => f.write_str("only the chunked transfer coding is supported"),
            HeadError::Expectation => f.write_str("only the 100-continue expectation is supported"),
        }
    }
}

/// How many bytes a message body has (as the sender framed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    Empty,
    Length(u64),
    Chunked,
    /// Responses only: the body ends when the connection closes.
    UntilClose,
}

/// What a request asks of the connection, besides its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestMeta {
    pub body: BodyLen,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// `Connection: close`.
    pub close: bool,
}

/// Up to this many empty lines before a request line are skipped (RFC 9112 §2.2: some
/// clients send a CRLF after a POST body).
const MAX_LEADING_EMPTY_LINES: usize = 4;

/// Finds the end of a head as bytes arrive, without rescanning what it has seen: a client
/// that sends one byte at a time costs O(n) in all, not O(n²). It also refuses bare LF line
/// ends and over-long lines as soon as they show, so a client cannot make the reader buffer
/// more than the limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadScanner {
    scanned: usize,
    line_done: bool,
}

impl HeadScanner {
    /// Look at `buf` (everything read so far, growing between calls). `Ok(None)`: not
    /// complete yet. `Ok(Some(n))`: the head (after up to four skipped leading CRLFs, RFC 9112
    /// §2.2) ends at byte `n`.
    pub fn scan(&mut self, buf: &[u8], limits: &HeadLimits) -> Result<Option<usize>, HeadError> {
        let start = skip_leading_crlf(buf);
        let from = start.max(self.scanned.saturating_sub(3));
        for (i, &b) in buf.iter().enumerate().skip(from) {
            if b != b'\n' {
                continue;
            }
            if i == 0 || buf.get(i - 1) != Some(&b'\r') {
                return Err(HeadError::Malformed("bare LF in the head"));
            }
            if !self.line_done {
                self.line_done = true;
                if i - 1 - start > limits.max_line {
                    return Err(HeadError::LineTooLong);
                }
            }
            if i >= start + 3 && buf.get(i - 3..=i) == Some(b"\r\n\r\n") {
                return if i + 1 - start <= limits.max_head { Ok(Some(i + 1)) } else { Err(HeadError::HeadTooLarge) };
            }
        }
        self.scanned = buf.len();
        let len = buf.len().saturating_sub(start);
        if !self.line_done && len > limits.max_line + 1 {
            return Err(HeadError::LineTooLong);
        }
        if len >= limits.max_head {
            return Err(HeadError::HeadTooLarge);
        }
        Ok(None)
    }
}

/// [`HeadScanner::scan`] over a whole buffer at once (responses from Flower, tests).
pub fn find_head_end(buf: &[u8], limits: &HeadLimits) -> Result<Option<usize>, HeadError> {
    HeadScanner::default().scan(buf, limits)
}

/// Parse a request head `buf[..end]` (from [`find_head_end`]).
pub fn parse_request_head(head: &[u8], limits: &HeadLimits) -> Result<RequestHead, HeadError> {
    let head = head.get(skip_leading_crlf(head)..).unwrap_or_default();
    let mut lines = split_lines(head)?;
    let line = lines.next().ok_or(HeadError::Malformed("empty request"))?;
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed("the request line is not METHOD SP TARGET SP VERSION"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(HeadError::Malformed("invalid method"));
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(HeadError::Malformed("invalid request target"));
    }
    if version != b"HTTP/1.1" {
        return if version.len() == 8 && version.starts_with(b"HTTP/") {
            Err(HeadError::Version)
        } else {
            Err(HeadError::Malformed("invalid HTTP version"))
        };
    }
    let headers = parse_fields(lines, limits.max_headers)?;
    Ok(RequestHead { method: ascii(method), target: ascii(target), headers })
}

/// Parse a response head `buf[..end]` from Flower. Strict as for requests: the gateway does
/// not relay what it cannot frame unambiguously.
pub fn parse_response_head(head: &[u8], max_headers: usize) -> Result<ResponseHead, HeadError> {
    let mut lines = split_lines(head)?;
    let line = lines.next().ok_or(HeadError::Malformed("empty response"))?;
    let (Some(version), Some(code), Some(rest)) = (line.get(..8), line.get(9..12), line.get(12..)) else {
        return Err(HeadError::Malformed("short status line"));
    };
    if !(version == b"HTTP/1.1" || version == b"HTTP/1.0") || line.get(8) != Some(&b' ') {
        return Err(HeadError::Malformed("invalid status line"));
    }
    if !code.iter().all(u8::is_ascii_digit) || !(rest.is_empty() || rest.first() == Some(&b' ')) {
        return Err(HeadError::Malformed("invalid status code"));
    }
    let status = code.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err(HeadError::Malformed("status code out of range"));
    }
    let reason = rest.get(1..).unwrap_or_default();
    if !reason.iter().all(|&b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80) {
        return Err(HeadError::Malformed("invalid reason phrase"));
    }
    let headers = parse_fields(lines, max_headers)?;
    Ok(ResponseHead { status, reason: String::from_utf8_lossy(reason).into_owned(), headers })
}

/// The framing and options of a request (RFC 9112 §6): `Transfer-Encoding: chunked` or one
/// `Content-Length`, never both; a `Host` is required.
pub fn request_meta(head: &RequestHead) -> Result<RequestMeta, HeadError> {
    let hosts = head.headers.iter().filter(|h| h.is("host")).count();
    if hosts != 1 {
        return Err(HeadError::Malformed("a request needs exactly one Host header"));
    }
    let body = body_framing(&head.headers)?;
    let mut expect_continue = false;
    for h in head.headers.iter().filter(|h| h.is("expect")) {
        if h.value.eq_ignore_ascii_case(b"100-continue") {
            expect_continue = true;
        } else {
            return Err(HeadError::Expectation);
        }
    }
    let close = connection_tokens(&head.headers).iter().any(|t| t == "close");
    Ok(RequestMeta { body, expect_continue, close })
}

/// The body of a response to a request with `method` (RFC 9112 §6.3). Ambiguous framing
/// from Flower is an error (answered 502), never guessed at.
pub fn response_body(method: &str, head: &ResponseHead) -> Result<BodyLen, HeadError> {
    if method == "HEAD" || head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok(BodyLen::Empty);
    }
    match body_framing(&head.headers)? {
        BodyLen::Empty if !head.headers.iter().any(|h| h.is("content-length")) => Ok(BodyLen::UntilClose),
        other => Ok(other),
    }
}

/// Whether the sender of these headers wants the connection closed afterwards.
pub fn wants_close(headers: &[Header]) -> bool {
    connection_tokens(headers).iter().any(|t| t == "close")
}

/// `Content-Length` / `Transfer-Encoding` → [`BodyLen`] (`Empty` when neither is present).
fn body_framing(headers: &[Header]) -> Result<BodyLen, HeadError> {
    let te: Vec<&Header> = headers.iter().filter(|h| h.is("transfer-encoding")).collect();
    let cl: Vec<&Header> = headers.iter().filter(|h| h.is("content-length")).collect();
    if !te.is_empty() && !cl.is_empty() {
        return Err(HeadError::Smuggling("both Transfer-Encoding and Content-Length"));
    }
    if !te.is_empty() {
        let codings: Vec<String> = te
            .iter()
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(|c| ascii(trim(c)).to_ascii_lowercase())
            .collect();
        return if codings.len() == 1 && codings.first().is_some_and(|c| c == "chunked") {
            Ok(BodyLen::Chunked)
        } else if codings.iter().any(String::is_empty) {
            Err(HeadError::Smuggling("empty transfer coding"))
        } else {
            Err(HeadError::Coding)
        };
    }
    match cl.as_slice() {
        [] => Ok(BodyLen::Empty),
        [one] => parse_length(&one.value).map(BodyLen::Length),
        _ => Err(HeadError::Smuggling("more than one Content-Length")),
    }
}

/// A Content-Length value: 1 to 18 decimal digits, nothing else (no sign, no list, no space).
fn parse_length(v: &[u8]) -> Result<u64, HeadError> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Smuggling("invalid Content-Length"));
    }
    Ok(v.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
}

/// The lower-cased tokens of every `Connection` header.
fn connection_tokens(headers: &[Header]) -> Vec<String> {
    headers
        .iter()
        .filter(|h| h.is("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|t| ascii(trim(t)).to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Headers that describe one hop (RFC 9110 §7.6.1), plus those the gateway sets itself.
/// They are never copied to the next hop.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
    "proxy-authorization",
    "proxy-authenticate",
    // Only the gateway may say where a request came from: uvicorn trusts these from 127.0.0.1.
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
];

/// Fields meant for every recipient, which a `Connection` option may not name (RFC 9110
/// §7.6.1: "a sender MUST NOT send a connection option corresponding to a header field that
/// is intended for all recipients of the content"). `Connection: host` once made the gateway
/// drop Host, and uvicorn answers 400 to a request without one (issue #14).
const END_TO_END: &[&str] = &["host", "content-type", "content-encoding", "content-language", "cache-control", "date"];

/// Whether `h` is dropped when forwarding: a hop-by-hop header, or one the sender named in
/// `Connection` unless it is one of [`END_TO_END`].
fn is_hop(h: &Header, named: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|n| h.is(n)) || (named.iter().any(|n| h.is(n)) && !END_TO_END.iter().any(|n| h.is(n)))
}

/// The head sent to Flower: the same method, target and end-to-end headers, the framing the
/// gateway will actually write (`Content-Length` or `chunked`), `X-Forwarded-For` with the
/// client's address, and keep-alive.
pub fn forward_request_head(head: &RequestHead, body: BodyLen, client_ip: &str, proto: &str) -> Vec<u8> {
    let named = connection_tokens(&head.headers);
    let mut out = Vec::with_capacity(256 + head.headers.len() * 48);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in head.headers.iter().filter(|h| !is_hop(h, &named)) {
        push_header(&mut out, h.name.as_bytes(), &h.value);
    }
    push_framing(&mut out, body);
    push_header(&mut out, b"x-forwarded-for", client_ip.as_bytes());
    push_header(&mut out, b"x-forwarded-proto", proto.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// The head sent to the client for Flower's response: end-to-end headers, the framing the
/// gateway writes (`body`; a close-delimited body is re-sent chunked), and `Connection:
/// close` when the gateway will close. For a body-less response (`HEAD`, 204, 304) Flower's
/// `Content-Length` is kept: it describes the representation, not this message.
pub fn forward_response_head(head: &ResponseHead, body: BodyLen, close: bool) -> Vec<u8> {
    let named = connection_tokens(&head.headers);
    let mut out = Vec::with_capacity(128 + head.headers.len() * 48);
    out.extend_from_slice(format!("HTTP/1.1 {:03} ", head.status).as_bytes());
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in head.headers.iter().filter(|h| !is_hop(h, &named) || (body == BodyLen::Empty && h.is("content-length"))) {
        push_header(&mut out, h.name.as_bytes(), &h.value);
    }
    match body {
        BodyLen::UntilClose => push_header(&mut out, b"transfer-encoding", b"chunked"),
        BodyLen::Empty => {}
        other => push_framing(&mut out, other),
    }
    if close {
        push_header(&mut out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A complete answer made by the gateway itself (403, 400, 502, …), plain text, always
/// closing the connection: after an error the rest of the stream cannot be trusted.
pub fn simple_response(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        reason_phrase(status),
        body.len()
    )
    .into_bytes()
}

/// The interim response sent when a client asked `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Reason phrases for the codes the gateway sends itself.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// The framing header the gateway itself writes for `body`.
fn push_framing(out: &mut Vec<u8>, body: BodyLen) {
    match body {
        BodyLen::Length(n) => push_header(out, b"content-length", n.to_string().as_bytes()),
        BodyLen::Chunked => push_header(out, b"transfer-encoding", b"chunked"),
        BodyLen::Empty | BodyLen::UntilClose => {}
    }
}

/// One `name: value` line.
fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The lines of a head, each without its CRLF; a bare CR or LF anywhere is an error. The
/// final empty line is not returned.
fn split_lines(head: &[u8]) -> Result<impl Iterator<Item = &[u8]>, HeadError> {
    let body = head.strip_suffix(b"\r\n\r\n").ok_or(HeadError::Malformed("head does not end with CRLF CRLF"))?;
    let lines: Vec<&[u8]> = split_crlf(body).collect();
    if lines.iter().any(|l| l.contains(&b'\r') || l.contains(&b'\n')) {
        return Err(HeadError::Malformed("bare CR or LF in the head"));
    }
    Ok(lines.into_iter())
}

/// The pieces of `s` between CRLFs.
fn split_crlf(mut s: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if s.is_empty() {
            return None;
        }
        match find(s, b"\r\n") {
            Some(i) => {
                let (line, rest) = (s.get(..i).unwrap_or_default(), s.get(i + 2..).unwrap_or_default());
                s = rest;
                // A trailing CRLF leaves an empty remainder, which would look like the end.
                Some(line)
            }
            None => {
                let line = s;
                s = &[];
                Some(line)
            }
        }
    })
}

/// Header field lines → headers (RFC 9112 §5): `name ":" OWS value OWS`; no whitespace in or
/// after the name, no obsolete line folding, no control characters in the value.
fn parse_fields<'a>(lines: impl Iterator<Item = &'a [u8]>, max: usize) -> Result<Vec<Header>, HeadError> {
    let mut headers = Vec::new();
    for line in lines {
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err(HeadError::Malformed("obsolete line folding"));
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(HeadError::Malformed("header line without a colon"))?;
        let (name, value) = (line.get(..colon).unwrap_or_default(), line.get(colon + 1..).unwrap_or_default());
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HeadError::Malformed("invalid header name (whitespace before the colon?)"));
        }
        let value = trim(value);
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HeadError::Malformed("control character in a header value"));
        }
        if headers.len() >= max {
            return Err(HeadError::TooManyHeaders);
        }
        headers.push(Header { name: ascii(name), value: value.to_vec() });
    }
    Ok(headers)
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Without leading and trailing spaces and tabs (OWS).
fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    v.get(start..end).unwrap_or_default()
}

/// Bytes already checked to be ASCII (tokens, targets) as a String.
fn ascii(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// How many bytes of empty lines precede the start line (at most four lines).
fn skip_leading_crlf(buf: &[u8]) -> usize {
    let mut i = 0;
    while i < MAX_LEADING_EMPTY_LINES * 2 && buf.get(i..i + 2) == Some(b"\r\n") {
        i += 2;
    }
    i
}

/// First position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: HeadLimits = HeadLimits { max_line: 1024, max_head: 4096, max_headers: 20 };

    fn req(raw: &str) -> Result<RequestHead, HeadError> {
        let end = find_head_end(raw.as_bytes(), &L)?.expect("complete head");
        parse_request_head(&raw.as_bytes()[..end], &L)
    }

    fn meta(raw: &str) -> Result<RequestMeta, HeadError> {
        request_meta(&req(raw)?)
    }

    #[test]
    fn parses_a_request_head() {
        let h = req("POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: 10.0.0.5:8000\r\ncontent-type:application/protobuf\r\nX-Empty:\r\nX-Pad: \t spaced value \t\r\n\r\nBODY").unwrap();
        assert_eq!((h.method.as_str(), h.target.as_str()), ("POST", "/v1/fleet/pull-messages"));
        assert_eq!(h.headers.len(), 4);
        assert_eq!(h.headers[1].value, b"application/protobuf");
        assert_eq!(h.headers[2].value, b"");
        assert_eq!(h.headers[3].value, b"spaced value", "OWS trimmed on both sides");
        assert!(h.headers[0].is("HOST") && h.headers[0].is("host"));
    }

    #[test]
    fn header_names_are_case_insensitive_for_framing() {
        for cl in ["Content-Length", "content-length", "CONTENT-LENGTH", "cOnTeNt-LeNgTh"] {
            let m = meta(&format!("POST /a HTTP/1.1\r\nhost: x\r\n{cl}: 42\r\n\r\n")).unwrap();
            assert_eq!(m.body, BodyLen::Length(42), "{cl}");
        }
        for te in ["Transfer-Encoding: chunked", "TRANSFER-ENCODING: CHUNKED", "transfer-encoding:  Chunked "] {
            let m = meta(&format!("POST /a HTTP/1.1\r\nHOST: x\r\n{te}\r\n\r\n")).unwrap();
            assert_eq!(m.body, BodyLen::Chunked, "{te}");
        }
        let m = meta("POST /a HTTP/1.1\r\nHost: x\r\nEXPECT: 100-Continue\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(m.expect_continue && m.close);
        assert_eq!(meta("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().body, BodyLen::Empty);
    }

    #[test]
    fn smuggling_inputs_are_refused() {
        let cases = [
            ("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", "both"),
            ("POST /a HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n", "both"),
            ("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n", "more than one"),
            ("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\n", "invalid Content-Length"),
            ("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
            ("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", "invalid Content-Length"),
            ("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1234567890123456789\r\n\r\n", "invalid Content-Length"),
            ("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, \r\n\r\n", "empty transfer coding"),
        ];
        for (raw, want) in cases {
            match meta(raw) {
                Err(HeadError::Smuggling(why)) => assert!(why.contains(want), "{raw:?}: {why}"),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
        // Two Transfer-Encoding headers, or a coding list, are not "chunked" alone.
        assert_eq!(meta("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(HeadError::Coding));
        assert_eq!(meta("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), Err(HeadError::Coding));
        assert_eq!(meta("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"), Err(HeadError::Coding));
    }

    #[test]
    fn malformed_heads_are_refused() {
        let cases = [
            ("POST /a HTTP/1.1\r\nHost: x\r\nX-Long: a\r\n b\r\n\r\n", "folding"),
            ("POST /a HTTP/1.1\r\nHost: x\r\n\tX: b\r\n\r\n", "folding"),
            ("POST /a HTTP/1.1\r\nHost : x\r\n\r\n", "header name"),
            ("POST /a HTTP/1.1\r\nHo st: x\r\n\r\n", "header name"),
            ("POST /a HTTP/1.1\r\n: x\r\n\r\n", "header name"),
            ("POST /a HTTP/1.1\r\nHost x\r\n\r\n", "without a colon"),
            ("POST /a HTTP/1.1\r\nHost: x\u{1}y\r\n\r\n", "control character"),
            ("POST /a HTTP/1.1\r\nHost: x\ry\r\n\r\n", "bare CR"),
            ("POST  /a HTTP/1.1\r\nHost: x\r\n\r\n", "METHOD SP TARGET"),
            ("POST /a HTTP/1.1 \r\nHost: x\r\n\r\n", "METHOD SP TARGET"),
            ("POST /a\r\nHost: x\r\n\r\n", "METHOD SP TARGET"),
            ("PO(ST /a HTTP/1.1\r\nHost: x\r\n\r\n", "invalid method"),
            ("POST /a\u{7f} HTTP/1.1\r\nHost: x\r\n\r\n", "invalid request target"),
            ("POST /a HTTP/2.0x\r\nHost: x\r\n\r\n", "invalid HTTP version"),
            ("POST /a http/1.1\r\nHost: x\r\n\r\n", "invalid HTTP version"),
        ];
        for (raw, want) in cases {
            let got = req(raw);
            let text = format!("{got:?}");
            assert!(text.contains(want), "{raw:?}: {text}");
        }
        assert_eq!(req("POST /a HTTP/1.0\r\nHost: x\r\n\r\n"), Err(HeadError::Version));
        assert_eq!(req("POST /a HTTP/2.0\r\nHost: x\r\n\r\n"), Err(HeadError::Version));
        assert!(matches!(meta("POST /a HTTP/1.1\r\n\r\n"), Err(HeadError::Malformed(w)) if w.contains("Host")));
        assert!(matches!(meta("POST /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Err(HeadError::Malformed(w)) if w.contains("Host")));
        assert_eq!(meta("POST /a HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n"), Err(HeadError::Expectation));
    }

    #[test]
    fn scanner_finds_heads_incrementally_and_enforces_limits() {
        let raw = b"\r\nPOST /v1/fleet/x HTTP/1.1\r\nHost: x\r\n\r\nbody";
        let mut s = HeadScanner::default();
        let mut found = None;
        for n in 1..=raw.len() {
            if let Some(end) = s.scan(&raw[..n], &L).unwrap() {
                found = Some((n, end));
                break;
            }
        }
        let (n, end) = found.unwrap();
        assert_eq!(&raw[end..], b"body", "the head ends before the body");
        assert_eq!(n, end, "found as soon as the last byte arrived");
        assert!(parse_request_head(&raw[..end], &L).is_ok(), "a leading empty line is skipped");
        // Bare LF anywhere in the head is refused at once.
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nHost", &L), Err(HeadError::Malformed("bare LF in the head")));
        assert_eq!(find_head_end(b"\n", &L), Err(HeadError::Malformed("bare LF in the head")));
        // Over-long request line, whether or not its end has arrived.
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(2000));
        assert_eq!(find_head_end(long.as_bytes(), &L), Err(HeadError::LineTooLong));
        assert_eq!(find_head_end(&long.as_bytes()[..1500], &L), Err(HeadError::LineTooLong));
        // Header section too large, complete or not.
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(5000));
        assert_eq!(find_head_end(big.as_bytes(), &L), Err(HeadError::HeadTooLarge));
        assert_eq!(find_head_end(&big.as_bytes()[..4500], &L), Err(HeadError::HeadTooLarge));
        let many: String = (0..21).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(req(&format!("GET / HTTP/1.1\r\n{many}\r\n")), Err(HeadError::TooManyHeaders));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", &L), Ok(None));
    }

    #[test]
    fn parses_responses_and_their_framing() {
        let r = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", 10).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
        assert_eq!(response_body("POST", &r), Ok(BodyLen::Length(12)));
        assert_eq!(response_body("HEAD", &r), Ok(BodyLen::Empty));
        let r = parse_response_head(b"HTTP/1.1 200 \r\ntransfer-encoding: chunked\r\n\r\n", 10).unwrap();
        assert_eq!(response_body("POST", &r), Ok(BodyLen::Chunked));
        let r = parse_response_head(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n", 10).unwrap();
        assert_eq!(response_body("POST", &r), Ok(BodyLen::UntilClose));
        let r = parse_response_head(b"HTTP/1.1 204 No Content\r\n\r\n", 10).unwrap();
        assert_eq!(response_body("POST", &r), Ok(BodyLen::Empty));
        let r = parse_response_head(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", 10).unwrap();
        assert_eq!(response_body("GET", &r), Ok(BodyLen::Empty));
        let r = parse_response_head(b"HTTP/1.1 100 Continue\r\n\r\n", 10).unwrap();
        assert_eq!(response_body("POST", &r), Ok(BodyLen::Empty));
        let r = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 10).unwrap();
        assert!(response_body("POST", &r).is_err(), "ambiguous framing from Flower is refused too");
        for bad in [&b"HTTP/1.1 20 OK\r\n\r\n"[..], b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/2 200 OK\r\n\r\n", b"HTTP/1.1 099 x\r\n\r\n", b"XTTP/1.1 200 OK\r\n\r\n", b"HTTP/1.1 200OK\r\n\r\n"] {
            assert!(parse_response_head(bad, 10).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(wants_close(&parse_response_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 10).unwrap().headers));
    }

    #[test]
    fn forwarded_request_head_is_canonical() {
        let h = req("POST /v1/fleet/x HTTP/1.1\r\nHost: sl\r\ncontent-length: 3\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\nUpgrade: h2c\r\nExpect: 100-continue\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nflwr-signature-bin: c2ln\r\n\r\n").unwrap();
        let out = String::from_utf8(forward_request_head(&h, BodyLen::Length(3), "10.0.0.7", "https")).unwrap();
        assert_eq!(
            out,
            "POST /v1/fleet/x HTTP/1.1\r\nHost: sl\r\nflwr-signature-bin: c2ln\r\ncontent-length: 3\r\nx-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: https\r\n\r\n"
        );
        let out = String::from_utf8(forward_request_head(&h, BodyLen::Chunked, "::1", "http")).unwrap();
        assert!(out.contains("\r\ntransfer-encoding: chunked\r\n") && !out.contains("content-length"), "{out}");
    }

    #[test]
    fn connection_cannot_name_host_or_the_message_semantics() {
        // issue #14 item 7: `Connection: host` made the gateway drop Host, and uvicorn
        // answers 400 to a request without it. RFC 9110 §7.6.1: a connection option never
        // names a field meant for every recipient; those stay.
        let h = req("POST /v1/fleet/x HTTP/1.1\r\nHost: sl\r\nContent-Type: application/protobuf\r\nContent-Length: 0\r\nConnection: host, HOST , content-type, x-hop\r\nX-Hop: 1\r\n\r\n").unwrap();
        let out = String::from_utf8(forward_request_head(&h, BodyLen::Empty, "10.0.0.7", "https")).unwrap();
        assert_eq!(
            out,
            "POST /v1/fleet/x HTTP/1.1\r\nHost: sl\r\nContent-Type: application/protobuf\r\nx-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: https\r\n\r\n"
        );
        let r = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\nContent-Length: 7\r\nConnection: content-type, date\r\nDate: x\r\n\r\n", 10).unwrap();
        let out = String::from_utf8(forward_response_head(&r, BodyLen::Length(7), false)).unwrap();
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\nDate: x\r\ncontent-length: 7\r\n\r\n");
    }

    #[test]
    fn forwarded_response_head_states_the_gateways_framing() {
        let r = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\nContent-Length: 7\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n", 10).unwrap();
        let out = String::from_utf8(forward_response_head(&r, BodyLen::Length(7), false)).unwrap();
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\ncontent-length: 7\r\n\r\n");
        let out = String::from_utf8(forward_response_head(&r, BodyLen::Empty, true)).unwrap();
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\nContent-Length: 7\r\nconnection: close\r\n\r\n", "HEAD keeps the length");
        let r = parse_response_head(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", 10).unwrap();
        let out = String::from_utf8(forward_response_head(&r, BodyLen::UntilClose, false)).unwrap();
        assert_eq!(out, "HTTP/1.1 200 OK\r\nServer: x\r\ntransfer-encoding: chunked\r\n\r\n");
    }

    #[test]
    fn simple_responses_are_complete_and_close() {
        let r = String::from_utf8(simple_response(403, "forbidden\n")).unwrap();
        assert_eq!(r, "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 10\r\ncache-control: no-store\r\nconnection: close\r\n\r\nforbidden\n");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the scanner or the parsers, and the scanner's answer
        /// does not depend on how the bytes were split.
        #[test]
        fn arbitrary_heads_are_safe(input in proptest::collection::vec(proptest::num::u8::ANY, 0..600), cut in 0usize..600) {
            let whole = find_head_end(&input, &L);
            let mut s = HeadScanner::default();
            let cut = cut.min(input.len());
            let first = s.scan(&input[..cut], &L);
            if let Ok(None) = first {
                proptest::prop_assert_eq!(s.scan(&input, &L), whole);
            }
            if let Ok(Some(end)) = whole {
                if let Ok(h) = parse_request_head(&input[..end], &L) {
                    let _ = request_meta(&h);
                    let _ = forward_request_head(&h, BodyLen::Empty, "1.2.3.4", "https");
                }
                let _ = parse_response_head(&input[..end], 10);
            }
        }
    }
}
