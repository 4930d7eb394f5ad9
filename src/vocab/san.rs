//! Subject alternative names as an operator writes them (FL_CERT_EXTRA_SANS) and as
//! certificates carry them: an IP address or a DNS name.

use std::fmt;
use std::net::IpAddr;

/// One subjectAltName: an IP address or a (lower-case) DNS name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    Ip(IpAddr),
    Dns(String),
}

impl fmt::Display for San {
    /// OpenSSL's spelling (`IP:10.0.0.5`, `DNS:localhost`), so messages match `openssl x509 -text`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Ip(ip) => write!(f, "IP:{ip}"),
            San::Dns(name) => write!(f, "DNS:{name}"),
        }
    }
}

impl San {
    /// Parse one SAN as an operator writes it: an IPv4/IPv6 address or a DNS name (RFC 1123).
    /// Wildcards are refused: the SuperLink cannot check them against the names clients dial.
    /// The error is the rule broken (the caller names the value).
    pub fn parse(s: &str) -> Result<San, &'static str> {
        let v = s.trim();
        let v = v.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(v);
        if let Ok(ip) = v.parse::<IpAddr>() {
            if ip.is_unspecified() {
                return Err("0.0.0.0 and :: are bind addresses, not addresses a client can dial");
            }
            return Ok(San::Ip(ip));
        }
        dns_name_problem(v).map_or_else(|| Ok(San::Dns(v.to_ascii_lowercase())), Err)
    }
}

/// Why `name` is not a DNS name a certificate can carry, or `None` when it is one.
fn dns_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty");
    }
    if name.len() > 253 {
        return Some("longer than 253 characters");
    }
    if name.contains('*') {
        return Some("wildcards are not supported; list each name");
    }
    if name.contains(':') || name.contains('/') {
        return Some("give a bare host name or address, without scheme, port or path");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some("empty label (leading, trailing or double dot)");
        }
        if label.len() > 63 {
            return Some("a label is longer than 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Some("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("a label starts or ends with '-'");
        }
    }
    // "10.0.0" or "1.2.3.4.5" look like addresses, not names: almost certainly a typo.
    if name.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Some("looks like an IP address but is not a valid one");
    }
    None
}

