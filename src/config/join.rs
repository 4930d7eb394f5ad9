//! The join value (issue #20): everything a SuperNode at another site needs to reach and trust
//! a SuperLink, in one copy-pasteable context value, `FL_JOIN`. The SuperLink computes it
//! (published as OneGate `FL_JOIN` and shown in `/status`'s `join`); a SuperNode given it
//! needs neither FL_SUPERLINK_ADDRESS, FL_SSL_CA_CERTFILE, FL_TLS_ENABLED nor OneGate
//! discovery. Also here: whether a SuperLink address is on one of this VM's own networks
//! ("never plain text across sites").
//!
//! Format: `flwr1:` then base64 (standard alphabet, no padding; url-safe, padding and line
//! breaks are accepted when read) of a JSON object:
//! `{"endpoints":["203.0.113.7:8000","10.0.0.5:8000"],"tls":true,"ca":["<base64 DER>"],
//! "ca_sha256":["<64 hex>"]}`.
//! - The version is the prefix: a reader refuses `flwr2:` and refuses fields it does not know
//!   (a v1 reader never silently drops a field a newer SuperLink thought mattered).
//! - The CA goes inside (self-contained, about 1 KB for the SuperLink's own P-256 CA), not
//!   only its fingerprint: a SuperNode at another site cannot reach the SuperLink's OneGate,
//!   and fetching the CA from the SuperLink itself would mean a trust-on-first-use request to
//!   an address that is not yet trusted. The CA is public; nothing secret is in the value.
//! - `ca_sha256` (one per CA certificate) lets an operator compare the value with the
//!   SHA-256 the SuperLink's `/status` shows, and catches a value altered in transit.
//! - The alphabet stays inside what OneGate publishes as is (`[A-Za-z0-9+/:]`), so the
//!   OneGate attribute and the context value are the same text.
//! - Bounded: [`MAX_LEN`] characters, [`MAX_ENDPOINTS`] endpoints, [`MAX_CAS`] CA certificates.

use super::model::{Address, Host};
use super::values;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What every join value of this format starts with.
pub const PREFIX: &str = "flwr1:";
/// The longest join value read (characters, whitespace removed): an operator CA chain of a
/// few RSA-4096 certificates fits; a SuperLink's own CA needs about 1 KB.
pub const MAX_LEN: usize = 8192;
/// Endpoints a join value may list.
pub const MAX_ENDPOINTS: usize = 16;
/// CA certificates a join value may carry.
pub const MAX_CAS: usize = 4;

/// A decoded join value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// Where the SuperLink's Fleet API is reached, in preference order: the SuperNode uses
    /// the first.
    pub endpoints: Vec<Address>,
    /// The CA certificates (DER) to trust; empty when the SuperLink serves plain text.
    pub ca_der: Vec<Vec<u8>>,
    /// Whether the SuperLink requires SuperNode authentication (a registered key);
    /// `None` in a value made before flower-init said so.
    pub node_auth: Option<bool>,
}

/// The JSON inside the value.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    endpoints: Vec<String>,
    tls: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ca: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ca_sha256: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<bool>,
}

/// SHA-256 of `der` (rustls's ring provider, as `tls::fingerprint` does); the SuperNode
/// key's fingerprint uses it too (`tls::nodekey`).
pub fn sha256(der: &[u8]) -> Vec<u8> {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    // Invariant: a TLS13_* suite is a TLS 1.3 suite.
    let Some(tls13) = suite.tls13() else {
        return Vec::new();
    };
    tls13.common.hash_provider.hash(der).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `AB:CD:…`, as `openssl x509 -fingerprint -sha256` and `/status` print it.
fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A decoded text, shown in a message: quoted, at most 60 characters.
fn shown(s: &str) -> String {
    let head: String = s.chars().take(60).collect();
    if head.len() < s.len() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

/// The DER of every `CERTIFICATE` block of a PEM text.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(i) = rest.find("-----BEGIN CERTIFICATE-----") {
        let body = &rest[i + "-----BEGIN CERTIFICATE-----".len()..];
        let Some(end) = body.find("-----END CERTIFICATE-----") else {
            return Err("a CERTIFICATE block has no END line".into());
        };
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| format!("a CERTIFICATE block is not base64: {e}"))?;
        out.push(der);
        rest = &body[end..];
    }
    if out.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(out)
}

impl Join {
    /// A join value for a SuperLink reached at `endpoints` (first preferred), serving TLS with
    /// the CA(s) of `ca_pem`, or plain text when `None`.
    pub fn new(endpoints: Vec<Address>, ca_pem: Option<&str>) -> Result<Join, String> {
        let ca_der = match ca_pem {
            Some(pem) => pem_certificates(pem)?,
            None => Vec::new(),
        };
        if endpoints.is_empty() {
            return Err("no endpoint".into());
        }
        let mut endpoints = endpoints;
        endpoints.truncate(MAX_ENDPOINTS);
        if ca_der.len() > MAX_CAS {
            return Err(format!(
                "{} CA certificates; a join value carries at most {MAX_CAS}",
                ca_der.len()
            ));
        }
        Ok(Join { endpoints, ca_der, node_auth: None })
    }

    /// The same value, saying whether the SuperLink requires SuperNode authentication.
    pub fn with_node_auth(mut self, on: bool) -> Join {
        self.node_auth = Some(on);
        self
    }

    /// Whether the SuperLink serves TLS.
    pub fn tls(&self) -> bool {
        !self.ca_der.is_empty()
    }

    /// The first endpoint: where the SuperNode connects (`new` and `decode` never make a
    /// join value without one).
    pub fn address(&self) -> Option<&Address> {
        self.endpoints.first()
    }

    /// The CA certificates as PEM text (what FL_SSL_CA_CERTFILE would give), when TLS is on.
    pub fn ca_pem(&self) -> Option<String> {
        if self.ca_der.is_empty() {
            return None;
        }
        let mut pem = String::new();
        for der in &self.ca_der {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        Some(pem)
    }

    /// SHA-256 of each CA certificate, `AB:CD:…` (as `/status`'s `tls.ca_sha256`).
    pub fn fingerprints(&self) -> Vec<String> {
        self.ca_der.iter().map(|d| colon_hex(&sha256(d))).collect()
    }

    /// The value: `flwr1:` and the base64 of the JSON.
    pub fn encode(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let wire = Wire {
            endpoints: self.endpoints.iter().map(Address::to_string).collect(),
            tls: self.tls(),
            ca: self.ca_der.iter().map(|d| b64.encode(d)).collect(),
            ca_sha256: self.ca_der.iter().map(|d| hex(&sha256(d))).collect(),
            auth: self.node_auth,
        };
        // Serialising a struct of strings and a bool cannot fail.
        let json = serde_json::to_vec(&wire).unwrap_or_default();
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(json)
        )
    }

    /// What `check`, `/status` and `flower-init join` show of a join value.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "endpoints": self.endpoints.iter().map(Address::to_string).collect::<Vec<_>>(),
            "tls": self.tls(),
            "ca_sha256": self.fingerprints(),
            "node_auth": self.node_auth,
        })
    }

    /// Read a join value. The error is the rule broken (the caller names FL_JOIN); it quotes
    /// at most a short piece of what was decoded, never the whole value.
    pub fn decode(value: &str) -> Result<Join, String> {
        let v: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        if v.len() > MAX_LEN {
            return Err(format!(
                "is {} characters long; a join value is at most {MAX_LEN}",
                v.len()
            ));
        }
        let Some(body) = v.strip_prefix(PREFIX) else {
            let version = v
                .strip_prefix("flwr")
                .and_then(|r| r.split_once(':'))
                .map(|(n, _)| n)
                .filter(|n| (1..=6).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()));
            return Err(match version {
                Some(n) => format!(
                    "is a version {n} join value; this flower-init reads version 1 ({PREFIX}…): use a SuperNode image \
                     as new as the SuperLink's"
                ),
                None => format!(
                    "must start with {PREFIX}: copy the whole FL_JOIN value the SuperLink shows (its /status `join`, or \
                     its OneGate attribute FL_JOIN)"
                ),
            });
        };
        let body = body
            .trim_end_matches('=')
            .replace('-', "+")
            .replace('_', "/");
        let json = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(body.as_bytes())
            .map_err(|e| {
                format!(
                    "is not {PREFIX} followed by base64 ({e}): was it cut or altered when copied?"
                )
            })?;
        let wire: Wire = serde_json::from_slice(&json).map_err(|e| {
            // serde's reason may quote a decoded field name: cut it short.
            let e: String = e.to_string().chars().take(100).collect();
            format!("does not hold a version 1 join value ({e}): was it cut or altered when copied?")
        })?;
        Self::from_wire(wire)
    }

    /// Check the decoded JSON: endpoints, TLS flag against the CA, each CA against its hash.
    fn from_wire(w: Wire) -> Result<Join, String> {
        if w.endpoints.is_empty() || w.endpoints.len() > MAX_ENDPOINTS {
            return Err(format!(
                "lists {} endpoints; it needs 1 to {MAX_ENDPOINTS}",
                w.endpoints.len()
            ));
        }
        let mut endpoints = Vec::new();
        for e in &w.endpoints {
            let addr = values::host_port(e).map_err(|why| {
                // The reason may quote the endpoint: only a short one is quoted twice.
                let why = if e.chars().count() > 60 {
                    "must be host:port".to_string()
                } else {
                    why
                };
                format!("endpoint {}: {why}", shown(e))
            })?;
            endpoints.push(addr);
        }
        if w.tls == w.ca.is_empty() {
            return Err(if w.tls {
                "says TLS is on but carries no CA certificate".into()
            } else {
                "says TLS is off but carries a CA certificate".into()
            });
        }
        if w.ca.len() > MAX_CAS {
            return Err(format!(
                "carries {} CA certificates; at most {MAX_CAS}",
                w.ca.len()
            ));
        }
        if w.ca_sha256.len() != w.ca.len() {
            return Err(format!(
                "carries {} CA certificates but {} SHA-256 fingerprints",
                w.ca.len(),
                w.ca_sha256.len()
            ));
        }
        let mut ca_der = Vec::new();
        for (i, (ca, want)) in w.ca.iter().zip(&w.ca_sha256).enumerate() {
            let der = base64::engine::general_purpose::STANDARD
                .decode(ca.as_bytes())
                .map_err(|e| format!("CA certificate {} is not base64 ({e})", i + 1))?;
            // A DER certificate is a SEQUENCE; X.509 itself is checked at boot (`tls`).
            if der.first() != Some(&0x30) {
                return Err(format!("CA certificate {} is not a DER certificate", i + 1));
            }
            if !hex(&sha256(&der)).eq_ignore_ascii_case(want) {
                return Err(format!(
                    "CA certificate {} does not match its SHA-256 fingerprint: the value was altered or corrupted",
                    i + 1
                ));
            }
            ca_der.push(der);
        }
        Ok(Join { endpoints, ca_der, node_auth: w.auth })
    }
}

/// Whether `host` is on one of `plan`'s networks, as the context configures them (directly
/// connected: the NIC addresses' prefixes, not routes), or on loopback or link-local. A DNS
/// name other than `localhost` cannot be shown to be local: it counts as elsewhere.
pub fn on_own_network(host: &Host, plan: &crate::net::Plan) -> bool {
    let ip = match host {
        Host::Ip(ip) => crate::vocab::canonical(*ip),
        Host::Name(n) => return n.eq_ignore_ascii_case("localhost"),
    };
    let link_local = match ip {
        IpAddr::V4(a) => a.is_loopback() || a.is_link_local(),
        IpAddr::V6(a) => a.is_loopback() || (a.segments()[0] & 0xffc0) == 0xfe80,
    };
    if link_local {
        return true;
    }
    plan.interfaces.iter().any(|i| {
        let v4 = i.ipv4.iter().map(|n| (IpAddr::V4(n.addr), n.prefix));
        let v6 = i.ipv6.iter().map(|n| (IpAddr::V6(n.addr), n.prefix));
        v4.chain(v6).any(|(addr, prefix)| {
            let net = crate::vocab::Cidr::new(mask(addr, prefix), prefix);
            net.is_some_and(|c| c.contains(ip))
        })
    })
}

/// `addr` with its host bits cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// The networks of `plan` as `10.0.0.7/24` words, for messages ("none" when it has none).
pub fn own_networks(plan: &crate::net::Plan) -> String {
    let nets: Vec<String> = plan
        .interfaces
        .iter()
        .flat_map(|i| {
            let v4 = i.ipv4.iter().map(|n| format!("{}/{}", n.addr, n.prefix));
            let v6 = i.ipv6.iter().map(|n| format!("{}/{}", n.addr, n.prefix));
            v4.chain(v6).collect::<Vec<_>>()
        })
        .collect();
    if nets.is_empty() {
        "none configured in the context".into()
    } else {
        nets.join(", ")
    }
}
