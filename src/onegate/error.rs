//! Why a OneGate call failed: every variant names the request (method and path) and, where
//! the server answered, its status and body (`onegate-server.rb` answers errors with
//! `halt <code>, "<plain text>"`, e.g. 401 "Not authorized", 400 "Empty or invalid SERVICE_ID").

use std::fmt;

/// Longest server body quoted in an error.
const BODY_EXCERPT: usize = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneGateError {
    /// No HTTP answer: connection refused, DNS failure, timeout, TLS failure.
    Transport { method: &'static str, path: String, url: String, cause: String },
    /// 401: the token or VMID is wrong (or the VM no longer exists).
    TokenRejected { method: &'static str, path: String, vmid: u64, body: String },
    /// Any other non-2xx answer.
    Http { method: &'static str, path: String, status: u16, body: String },
    /// A 2xx answer whose body is not what `onegate-server.rb` sends.
    BadResponse { method: &'static str, path: String, why: String, body: String },
}

impl OneGateError {
    /// Worth retrying the same request: the server was unreachable, broken (5xx, 429) or
    /// sent garbage. 4xx answers are about the request and do not change by themselves.
    pub fn is_transient(&self) -> bool {
        match self {
            OneGateError::Transport { .. } | OneGateError::BadResponse { .. } => true,
            OneGateError::Http { status, .. } => *status >= 500 || *status == 429,
            OneGateError::TokenRejected { .. } => false,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            OneGateError::TokenRejected { .. } => Some(401),
            OneGateError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's plain-text body, when it answered.
    pub fn body(&self) -> Option<&str> {
        match self {
            OneGateError::TokenRejected { body, .. } | OneGateError::Http { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// A body fit for a one-line message: trimmed, line breaks flattened, cut.
pub(super) fn excerpt(body: &str) -> String {
    let flat: String = body.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match flat.char_indices().nth(BODY_EXCERPT) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

impl fmt::Display for OneGateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OneGateError::Transport { method, path, url, cause } => {
                write!(f, "{method} {path}: cannot reach OneGate at {url}: {cause}")
            }
            OneGateError::TokenRejected { method, path, vmid, body } => write!(
                f,
                "{method} {path}: token rejected (HTTP 401 {:?}): OneGate does not accept this VM's token for VMID \
                 {vmid}; check TOKEN=YES, token.txt and VMID (a recreated VM or a changed TOKEN_PASSWORD \
                 invalidates the token)",
                excerpt(body)
            ),
            OneGateError::Http { method, path, status, body } => {
                write!(f, "{method} {path}: HTTP {status}: {}", excerpt(body))
            }
            OneGateError::BadResponse { method, path, why, body } => {
                write!(f, "{method} {path}: unexpected answer ({why}): {}", excerpt(body))
            }
        }
    }
}

impl std::error::Error for OneGateError {}

impl From<OneGateError> for crate::error::Cause {
    fn from(e: OneGateError) -> Self {
        crate::error::Cause::Msg(e.to_string())
    }
}
