//! Subject alternative names: what the SuperLink certificate must cover, and the rules for
//! FL_CERT_EXTRA_SANS entries.
//!
//! Python's `ssl` (Flower's client side) matches the address a client dials against the
//! certificate's SANs only, with no CN fallback (research/flower.md §5.2, test C), so every
//! address anyone dials must be listed: the VM's NIC addresses (SuperNodes), 127.0.0.1 and ::1
//! (Flower's own executor dials loopback when the SuperLink binds 0.0.0.0 / [::], test B),
//! `localhost`, the hostname, and whatever the operator adds (floating IPs, VPN addresses, DNS
//! names for multi-site federation).

use super::TlsError;
use rustls::pki_types::ServerName;
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One subjectAltName: an IP address or a (lower-case) DNS name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    Ip(IpAddr),
    Dns(String),
}

/// Always in the server certificate: what Flower's own processes and a local `flwr` dial.
pub const LOOPBACK_SANS: [San; 2] = [San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))];

/// The DNS name that always goes with the loopback addresses.
pub const LOCALHOST: &str = "localhost";

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
    pub fn parse(s: &str) -> Result<San, TlsError> {
        let bad = |reason| TlsError::InvalidSan { value: s.to_string(), reason };
        let v = s.trim();
        let v = v.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(v);
        if let Ok(ip) = v.parse::<IpAddr>() {
            if ip.is_unspecified() {
                return Err(bad("0.0.0.0 and :: are bind addresses, not addresses a client can dial"));
            }
            return Ok(San::Ip(ip));
        }
        dns_name_problem(v).map_or_else(|| Ok(San::Dns(v.to_ascii_lowercase())), |r| Err(bad(r)))
    }

    /// The name a TLS client would verify, for the webpki checks.
    pub(crate) fn server_name(&self) -> Option<ServerName<'static>> {
        match self {
            San::Ip(ip) => Some(ServerName::IpAddress((*ip).into())),
            San::Dns(name) => ServerName::try_from(name.clone()).ok(),
        }
    }

    /// The rcgen form, for issuing.
    pub(crate) fn to_rcgen(&self) -> Result<rcgen::SanType, TlsError> {
        Ok(match self {
            San::Ip(ip) => rcgen::SanType::IpAddress(*ip),
            San::Dns(name) => rcgen::SanType::DnsName(name.clone().try_into().map_err(|_: rcgen::Error| {
                TlsError::InvalidSan { value: name.clone(), reason: "not an IA5 (ASCII) string" }
            })?),
        })
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

/// Parse FL_CERT_EXTRA_SANS: entries separated by commas and/or whitespace. The first
/// invalid entry is the error (it names the entry and the rule).
pub fn parse_extra_sans(value: &str) -> Result<Vec<San>, TlsError> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(San::parse)
        .collect()
}

/// The SuperLink server certificate's SAN set, sorted and without duplicates: every NIC
/// address, 127.0.0.1, ::1, `localhost`, the hostname and the extra SANs. A hostname that is
/// not a valid DNS name is left out with a warning (SuperNodes dial addresses, not it).
pub fn server_sans(nic_addrs: &[IpAddr], hostname: Option<&str>, extra: &[San]) -> Vec<San> {
    let mut set: BTreeSet<San> = LOOPBACK_SANS.iter().cloned().collect();
    set.insert(San::Dns(LOCALHOST.to_string()));
    set.extend(nic_addrs.iter().filter(|ip| !ip.is_unspecified()).map(|ip| San::Ip(*ip)));
    if let Some(h) = hostname.map(str::trim).filter(|h| !h.is_empty()) {
        match San::parse(h) {
            Ok(san) => {
                set.insert(san);
            }
            Err(e) => log::warn!("tls: hostname {h:?} left out of the server certificate: {e}"),
        }
    }
    set.extend(extra.iter().cloned());
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> San {
        San::Ip(s.parse().unwrap())
    }
    fn dns(s: &str) -> San {
        San::Dns(s.into())
    }

    #[test]
    fn parses_addresses_and_names() {
        assert_eq!(San::parse("10.0.0.5").unwrap(), ip("10.0.0.5"));
        assert_eq!(San::parse("[2001:db8::1]").unwrap(), ip("2001:db8::1"));
        assert_eq!(San::parse(" Flower.Example.ORG ").unwrap(), dns("flower.example.org"));
        assert_eq!(San::parse("superlink").unwrap(), dns("superlink"));
        assert_eq!(San::parse("xn--bcher-kva.example").unwrap(), dns("xn--bcher-kva.example"));
    }

    #[test]
    fn rejects_what_is_neither() {
        for (v, why) in [
            ("0.0.0.0", "bind addresses"),
            ("::", "bind addresses"),
            ("*.example.org", "wildcards"),
            ("https://x.org", "without scheme"),
            ("10.0.0.5:8000", "without scheme, port"),
            ("10.0.0", "looks like an IP"),
            ("256.1.1.1", "looks like an IP"),
            ("a..b", "empty label"),
            ("-a.b", "starts or ends"),
            ("under_score.org", "only letters"),
            ("ünï.org", "only letters"),
            (&"a".repeat(64), "longer than 63"),
        ] {
            let e = San::parse(v).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(&format!("{:?}", v)), "{v}: {e}");
        }
    }

    #[test]
    fn extra_sans_split_on_commas_and_spaces() {
        let v = parse_extra_sans("203.0.113.7, vpn.example.org  fd00::7,,").unwrap();
        assert_eq!(v, vec![ip("203.0.113.7"), dns("vpn.example.org"), ip("fd00::7")]);
        assert!(parse_extra_sans("").unwrap().is_empty());
        let e = parse_extra_sans("ok.org bad_name").unwrap_err();
        assert!(e.to_string().contains("\"bad_name\""), "{e}");
    }

    #[test]
    fn server_sans_always_include_loopback_and_dedupe() {
        let sans = server_sans(
            &["10.0.0.5".parse().unwrap(), "127.0.0.1".parse().unwrap(), "0.0.0.0".parse().unwrap()],
            Some("SuperLink-0"),
            &[dns("localhost"), ip("203.0.113.7")],
        );
        assert_eq!(
            sans,
            vec![ip("10.0.0.5"), ip("127.0.0.1"), ip("203.0.113.7"), ip("::1"), dns("localhost"), dns("superlink-0")]
        );
        // An unusable hostname is dropped, not fatal.
        let sans = server_sans(&[], Some("bad_host"), &[]);
        assert_eq!(sans, vec![ip("127.0.0.1"), ip("::1"), dns("localhost")]);
    }
}
