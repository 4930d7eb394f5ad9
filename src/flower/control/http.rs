//! HTTP/1.1 for the Control API, as pure functions over bytes: the `POST` request Flower's
//! own client sends (`supercore/protobuf/client.py` `_unary_unary`: `content-type` and
//! `accept` `application/protobuf`), and the response read back. uvicorn answers with
//! `content-length` (captured in `testdata/`); chunked bodies and bodies ending at the close
//! are read too, within [`MAX_HEAD`] and [`MAX_BODY`].

use std::fmt;

/// Bytes of status line and headers accepted at most.
pub const MAX_HEAD: usize = 16 * 1024;
/// Bytes of body accepted at most: ListNodes/ListRuns answers are a few hundred bytes per
/// node or run.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// `application/protobuf` (`supercore/protobuf/constants.py`).
pub const PROTOBUF: &str = "application/protobuf";

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Not HTTP, or HTTP we do not accept.
    Malformed(String),
    /// The head or the body is larger than allowed.
    TooLarge(&'static str),
    /// The connection ended before the whole body arrived.
    Truncated,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Malformed(m) => write!(f, "not an HTTP answer: {m}"),
            HttpError::TooLarge(what) => write!(f, "{what} too large"),
            HttpError::Truncated => f.write_str("answer cut short"),
        }
    }
}

/// A response: status, media type (lowercase, no parameters), body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub media_type: String,
    pub body: Vec<u8>,
}

/// `POST path` with a protobuf body to `host` (`127.0.0.1:8000`); `Connection: close`: one
/// call per connection, nothing lingers.
pub fn request(host: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: flower-init\r\nContent-Type: {PROTOBUF}\r\nAccept: {PROTOBUF}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// The parsed head: status, media type, framing, and where the body starts.
struct Head {
    status: u16,
    media_type: String,
    framing: Framing,
    body_at: usize,
}

/// The head of `buf`, `None` while it is incomplete.
fn head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD { Err(HttpError::TooLarge("response head")) } else { Ok(None) };
    };
    if end > MAX_HEAD {
        return Err(HttpError::TooLarge("response head"));
    }
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| HttpError::Malformed("head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let status = match code.parse::<u16>() {
        Ok(c) if matches!(version, "HTTP/1.0" | "HTTP/1.1") && code.len() == 3 && (100..600).contains(&c) => c,
        _ => {
            return Err(HttpError::Malformed(format!("status line {:?}", truncate(line))));
        }
    };
    let (mut media_type, mut length, mut chunked) = (String::new(), None, false);
    for h in lines {
        let (name, value) = h.split_once(':').ok_or_else(|| HttpError::Malformed(format!("header {:?}", truncate(h))))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => media_type = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase(),
            "content-length" => {
                let n: usize = value.parse().map_err(|_| HttpError::Malformed(format!("content-length {:?}", truncate(value))))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HttpError::Malformed("two different content-length headers".into()));
                }
                length = Some(n);
            }
            "transfer-encoding" => {
                if !value.eq_ignore_ascii_case("chunked") {
                    return Err(HttpError::Malformed(format!("transfer-encoding {:?}", truncate(value))));
                }
                chunked = true;
            }
            _ => {}
        }
    }
    let framing = match (chunked, length) {
        (true, Some(_)) => {
            return Err(HttpError::Malformed("both chunked and content-length".into()));
        }
        (true, None) => Framing::Chunked,
        (false, Some(n)) if n > MAX_BODY => return Err(HttpError::TooLarge("response body")),
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Close,
    };
    Ok(Some(Head { status, media_type, framing, body_at: end + 4 }))
}

/// The first 80 characters of a line, for an error message.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The chunked body starting at `buf`: `Ok(None)` while incomplete.
fn dechunk(mut buf: &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
            return if buf.len() > 64 { Err(HttpError::Malformed("chunk size line too long".into())) } else { Ok(None) };
        };
        let line = std::str::from_utf8(&buf[..eol]).map_err(|_| HttpError::Malformed("chunk size".into()))?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| HttpError::Malformed(format!("chunk size {:?}", truncate(size))))?;
        buf = &buf[eol + 2..];
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            return Ok(buf.windows(2).position(|w| w == b"\r\n").map(|_| body));
        }
        if body.len() + size > MAX_BODY {
            return Err(HttpError::TooLarge("response body"));
        }
        if buf.len() < size + 2 {
            return Ok(None);
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

/// The response in `buf` if it is complete: `Ok(None)` means "read more". With `eof`, the
/// peer has closed: a body framed by the close ends here, any other incomplete one is
/// [`HttpError::Truncated`].
pub fn parse(buf: &[u8], eof: bool) -> Result<Option<Response>, HttpError> {
    let Some(h) = head(buf)? else {
        return if eof {
            Err(if buf.is_empty() { HttpError::Malformed("empty answer".into()) } else { HttpError::Truncated })
        } else {
            Ok(None)
        };
    };
    let rest = &buf[h.body_at..];
    let body = match h.framing {
        Framing::Length(n) if rest.len() >= n => Some(rest[..n].to_vec()),
        Framing::Length(_) => None,
        Framing::Chunked => dechunk(rest)?,
        Framing::Close if rest.len() > MAX_BODY => {
            return Err(HttpError::TooLarge("response body"));
        }
        Framing::Close => eof.then(|| rest.to_vec()),
    };
    match body {
        Some(body) => Ok(Some(Response { status: h.status, media_type: h.media_type, body })),
        None if eof => Err(HttpError::Truncated),
        None => Ok(None),
    }
}
