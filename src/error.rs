//! Errors as values with context: "verb object: cause".
//!
//! Modules with a small, fixed set of failures use this crate-wide [`Error`] through the
//! [`Ctx`] extension trait (`.ctx("mount /proc")?`), the NVRC `or_panic` idea without the
//! panic. Modules whose callers must tell failures apart (validation, TLS) define their
//! own enum and convert into this one at the boundary.

use std::fmt;

/// An operation that failed, and why.
#[derive(Debug)]
pub struct Error {
    /// What was being done, phrased "verb object" (e.g. `mount /dev/sr0 on /run/flower-init/context`).
    pub what: String,
    /// The underlying cause.
    pub cause: Cause,
}

/// The cause of an [`Error`].
#[derive(Debug)]
pub enum Cause {
    Io(std::io::Error),
    Errno(nix::errno::Errno),
    /// A cause that is itself a message (a nested error, a protocol violation).
    Msg(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error whose cause is a plain message.
    pub fn msg(what: impl Into<String>, cause: impl Into<String>) -> Self {
        Error { what: what.into(), cause: Cause::Msg(cause.into()) }
    }

    /// The errno of the cause, if it has one (lets callers treat EBUSY, ENOENT … as success).
    pub fn errno(&self) -> Option<nix::errno::Errno> {
        match &self.cause {
            Cause::Errno(e) => Some(*e),
            Cause::Io(e) => e.raw_os_error().map(nix::errno::Errno::from_raw),
            Cause::Msg(_) => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Io(e) => write!(f, "{}: {e}", self.what),
            Cause::Errno(e) => write!(f, "{}: {}", self.what, e.desc()),
            Cause::Msg(m) => write!(f, "{}: {m}", self.what),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Cause {
    fn from(e: std::io::Error) -> Self {
        Cause::Io(e)
    }
}

impl From<nix::errno::Errno> for Cause {
    fn from(e: nix::errno::Errno) -> Self {
        Cause::Errno(e)
    }
}

impl From<Error> for Cause {
    fn from(e: Error) -> Self {
        Cause::Msg(e.to_string())
    }
}

impl From<String> for Cause {
    fn from(e: String) -> Self {
        Cause::Msg(e)
    }
}

/// Adds "what was being done" to any error that can become a [`Cause`].
pub trait Ctx<T> {
    /// Wrap the error with a fixed description of the operation.
    fn ctx(self, what: &str) -> Result<T>;
    /// Wrap the error with a description built only on failure.
    fn with_ctx<F: FnOnce() -> String>(self, what: F) -> Result<T>;
}

impl<T, E: Into<Cause>> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| Error { what: what.to_string(), cause: e.into() })
    }
    fn with_ctx<F: FnOnce() -> String>(self, what: F) -> Result<T> {
        self.map_err(|e| Error { what: what(), cause: e.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_reads_verb_object_cause() {
        let r: std::result::Result<(), _> = Err(nix::errno::Errno::EBUSY);
        let e = r.ctx("mount /proc").unwrap_err();
        assert_eq!(e.to_string(), "mount /proc: Device or resource busy");
        assert_eq!(e.errno(), Some(nix::errno::Errno::EBUSY));
    }

    #[test]
    fn io_errors_keep_their_errno() {
        let r: std::result::Result<(), _> = std::fs::read("/nonexistent/x").map(|_| ());
        let e = r.with_ctx(|| "read /nonexistent/x".to_string()).unwrap_err();
        assert_eq!(e.errno(), Some(nix::errno::Errno::ENOENT));
        assert!(e.to_string().starts_with("read /nonexistent/x: "));
    }
}
