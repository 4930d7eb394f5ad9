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
use crate::vocab::San;
use rustls::pki_types::ServerName;
use std::collections::BTreeSet;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Always in the server certificate: what Flower's own processes and a local `flwr` dial.
pub const LOOPBACK_SANS: [San; 2] = [San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))];

/// The DNS name that always goes with the loopback addresses.
pub const LOCALHOST: &str = "localhost";

/// [`San::parse`] with the tls error (naming the value).
pub fn parse_san(s: &str) -> Result<San, TlsError> {
    San::parse(s).map_err(|reason| TlsError::InvalidSan { value: s.to_string(), reason })
}

/// The name a TLS client would verify, for the webpki checks.
pub(crate) fn server_name(san: &San) -> Option<ServerName<'static>> {
    match san {
        San::Ip(ip) => Some(ServerName::IpAddress((*ip).into())),
        San::Dns(name) => ServerName::try_from(name.clone()).ok(),
    }
}

/// The rcgen form, for issuing.
pub(crate) fn to_rcgen(san: &San) -> Result<rcgen::SanType, TlsError> {
    Ok(match san {
        San::Ip(ip) => rcgen::SanType::IpAddress(*ip),
        San::Dns(name) => rcgen::SanType::DnsName(name.clone().try_into().map_err(|_: rcgen::Error| {
            TlsError::InvalidSan { value: name.clone(), reason: "not an IA5 (ASCII) string" }
        })?),
    })
}

/// Parse FL_CERT_EXTRA_SANS: entries separated by commas and/or whitespace. The first
/// invalid entry is the error (it names the entry and the rule).
pub fn parse_extra_sans(value: &str) -> Result<Vec<San>, TlsError> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(parse_san)
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
            let e = parse_san(v).unwrap_err().to_string();
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
