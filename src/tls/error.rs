//! [`TlsError`]: one variant per failing operation or validation rule, each naming what is
//! wrong (which file, which variable, which SAN, which date), never a key.

use crate::vocab::San;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a TLS step failed. Callers tell "operator input is wrong" (fatal, FL_ERROR) from
/// "the disk failed" by variant; `Display` is the sentence for the log and FL_ERROR.
#[derive(Debug)]
pub enum TlsError {
    ReadFile { path: PathBuf, source: io::Error },
    WriteFile { path: PathBuf, source: io::Error },
    CreateDir { path: PathBuf, source: io::Error },
    /// rcgen could not generate a key or sign a certificate.
    Generate { what: &'static str, reason: String },
    /// A SAN (FL_CERT_EXTRA_SANS entry) is neither an IP address nor a valid DNS name.
    InvalidSan { value: String, reason: &'static str },
    /// A PEM input has no usable block (or is not PEM at all).
    ParsePem { what: String, reason: String },
    /// A certificate's DER could not be read.
    ParseCertificate { what: String, reason: String },
    /// A certificate given as a CA is not one (basicConstraints cA missing or false).
    NotACa { what: String, subject: String },
    Expired { what: String, subject: String, not_after: i64, now: i64 },
    NotYetValid { what: String, subject: String, not_before: i64, now: i64 },
    /// The private key is not the one of the certificate.
    KeyMismatch { key: String, cert: String },
    /// The certificate does not chain to the CA (unknown issuer, bad signature, wrong usage…).
    ChainUntrusted { what: String, ca: String, reason: String },
    /// The certificate lacks SANs that clients dial; lists every missing one.
    MissingSans { what: String, missing: Vec<San>, present: Vec<String> },
    /// The in-memory TLS handshake with the operator's files failed.
    Handshake { what: String, reason: String },
    /// A SuperNode must use TLS but has no CA certificate to trust.
    NoCa { reason: String },
    /// A certificate this module just issued does not verify: a bug, or a CA on disk that
    /// was not made by flower-init.
    SelfCheck { reason: String },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TlsError::*;
        match self {
            ReadFile { path, source } => write!(f, "read {}: {source}", path.display()),
            WriteFile { path, source } => write!(f, "write {}: {source}", path.display()),
            CreateDir { path, source } => write!(f, "create directory {}: {source}", path.display()),
            Generate { what, reason } => write!(f, "generate {what}: {reason}"),
            InvalidSan { value, reason } => {
                write!(f, "FL_CERT_EXTRA_SANS: {value:?} is not a valid SAN: {reason}")
            }
            ParsePem { what, reason } => write!(f, "{what}: not usable PEM: {reason}"),
            ParseCertificate { what, reason } => write!(f, "{what}: unreadable certificate: {reason}"),
            NotACa { what, subject } => write!(
                f,
                "{what}: certificate {subject} is not a CA certificate (basicConstraints cA is absent or false)"
            ),
            Expired { what, subject, not_after, now } => write!(
                f,
                "{what}: certificate {subject} expired on {} (now {})",
                utc(*not_after),
                utc(*now)
            ),
            NotYetValid { what, subject, not_before, now } => write!(
                f,
                "{what}: certificate {subject} is not valid before {} (now {}; check the clock)",
                utc(*not_before),
                utc(*now)
            ),
            KeyMismatch { key, cert } => {
                write!(f, "{key}: the private key does not belong to the certificate in {cert}")
            }
            ChainUntrusted { what, ca, reason } => {
                write!(f, "{what}: certificate is not trusted by the CA in {ca}: {reason}")
            }
            MissingSans { what, missing, present } => {
                let missing: Vec<String> = missing.iter().map(San::to_string).collect();
                write!(
                    f,
                    "{what}: certificate lacks subjectAltName entries for {} (127.0.0.1 is dialled by Flower's own \
                     executor, the published endpoint by SuperNodes; Python has no CN fallback); it has: {}",
                    missing.join(", "),
                    if present.is_empty() { "none".to_string() } else { present.join(", ") }
                )
            }
            Handshake { what, reason } => write!(f, "{what}: test TLS handshake failed: {reason}"),
            NoCa { reason } => write!(f, "TLS is required but there is no CA certificate to trust: {reason}"),
            SelfCheck { reason } => write!(f, "verify the certificate just issued: {reason}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for crate::error::Cause {
    fn from(e: TlsError) -> Self {
        crate::error::Cause::Msg(e.to_string())
    }
}

/// `2026-03-01 12:00:00 UTC` for a Unix time: dates in messages an operator compares with
/// `date -u`. Certificate times are years 0000-9999 (X.509), far inside `time`'s range.
pub fn utc(secs: i64) -> String {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let t = if secs >= 0 {
        epoch + Duration::from_secs(secs as u64)
    } else {
        epoch - Duration::from_secs(secs.unsigned_abs())
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(-86_400), "1969-12-31 00:00:00 UTC");
        assert_eq!(utc(253_402_300_799), "9999-12-31 23:59:59 UTC");
    }

    #[test]
    fn messages_name_what_is_wrong() {
        let e = TlsError::MissingSans {
            what: "FL_SSL_CERTFILE".into(),
            missing: vec![San::Ip("127.0.0.1".parse().unwrap()), San::Ip("10.0.0.5".parse().unwrap())],
            present: vec!["DNS:localhost".into()],
        };
        let s = e.to_string();
        assert!(s.starts_with("FL_SSL_CERTFILE: certificate lacks subjectAltName entries for IP:127.0.0.1, IP:10.0.0.5"), "{s}");
        assert!(s.ends_with("it has: DNS:localhost"), "{s}");
    }
}
