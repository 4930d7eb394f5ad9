//! SuperNode trust: whether to use TLS (DESIGN.md's decision order) and the CA certificate
//! Flower's `--root-certificates` gets.
//!
//! Order: FL_TLS_ENABLED=YES > FL_TLS_ENABLED=NO (warn if OneGate says YES) > a CA given in
//! context (FL_SSL_CA_CERTFILE: the operator wants TLS) > OneGate FL_TLS > insecure. When TLS
//! is chosen the CA is FL_SSL_CA_CERTFILE, else OneGate FL_CA_CERT; none is fatal, never a
//! silent downgrade.

use super::verify::{certs_from_pem, fingerprint};
use super::{fsio, pem_encode, TlsError, CA_CERT};
use crate::container::BindMount;
use std::path::{Path, PathBuf};

/// Where the SuperNode's CA came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaSource {
    /// FL_SSL_CA_CERTFILE in the SuperNode's context.
    Context,
    /// FL_CA_CERT published by the SuperLink in OneGate.
    OneGate,
    /// The CA inside FL_JOIN (the SuperNode's context; `config` made it the context CA).
    Join,
}

impl CaSource {
    /// Where the CA came from, as error messages name it.
    pub fn name(self) -> &'static str {
        match self {
            CaSource::Context => "FL_SSL_CA_CERTFILE",
            CaSource::OneGate => "OneGate FL_CA_CERT",
            CaSource::Join => "FL_JOIN",
        }
    }
}

/// Why a SuperNode runs without TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsecureReason {
    /// FL_TLS_ENABLED=NO.
    Disabled,
    /// FL_TLS_ENABLED=NO although the SuperLink publishes FL_TLS=YES: it will likely fail.
    DisabledAgainstSuperLink,
    /// FL_TLS_ENABLED unset and the SuperLink publishes FL_TLS=NO.
    SuperLinkInsecure,
    /// Nothing says TLS: FL_TLS_ENABLED unset, no CA in context, no FL_TLS in OneGate.
    Unspecified,
}

impl InsecureReason {
    /// The loud line to log: `--insecure`, why, and what it means.
    pub fn warning(self) -> String {
        let why = match self {
            InsecureReason::Disabled => "FL_TLS_ENABLED=NO",
            InsecureReason::DisabledAgainstSuperLink => {
                "FL_TLS_ENABLED=NO, although the SuperLink publishes FL_TLS=YES: the connection will most likely \
                 fail; remove FL_TLS_ENABLED=NO to follow the SuperLink"
            }
            InsecureReason::SuperLinkInsecure => "the SuperLink publishes FL_TLS=NO",
            InsecureReason::Unspecified => {
                "FL_TLS_ENABLED is unset, no FL_SSL_CA_CERTFILE is given and OneGate says nothing about TLS; set \
                 FL_TLS_ENABLED=YES and FL_SSL_CA_CERTFILE to require TLS"
            }
        };
        format!(
            "TLS IS DISABLED ({why}): flower-supernode runs with --insecure (the SuperLink must too); model \
             updates travel in clear text and the SuperLink's identity is not checked"
        )
    }
}

/// The decision for a SuperNode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuperNodeTls {
    /// Use TLS, trusting `ca_pem` (give it to [`super::supernode_trust`]).
    Verify { ca_pem: Vec<u8>, source: CaSource },
    /// Run with `--insecure`; log `reason.warning()` loudly.
    Insecure { reason: InsecureReason },
}

/// Apply the decision order. `fl_tls_enabled`: the context's FL_TLS_ENABLED, `None` when unset
/// (not defaulted); `onegate_tls`: the SuperLink's FL_TLS, `None` when unknown; the CA PEMs
/// as resolved (context FL_SSL_CA_CERTFILE, OneGate FL_CA_CERT decoded from base64).
pub fn decide_supernode(
    fl_tls_enabled: Option<bool>,
    onegate_tls: Option<bool>,
    context_ca: Option<&[u8]>,
    onegate_ca: Option<&[u8]>,
) -> Result<SuperNodeTls, TlsError> {
    let context_ca = context_ca.filter(|c| !c.is_empty());
    let onegate_ca = onegate_ca.filter(|c| !c.is_empty());
    let want_tls = match (fl_tls_enabled, onegate_tls) {
        (Some(true), _) => true,
        (Some(false), Some(true)) => {
            return Ok(SuperNodeTls::Insecure { reason: InsecureReason::DisabledAgainstSuperLink });
        }
        (Some(false), _) => return Ok(SuperNodeTls::Insecure { reason: InsecureReason::Disabled }),
        (None, _) if context_ca.is_some() => true,
        (None, Some(tls)) => tls,
        (None, None) => false,
    };
    if !want_tls {
        let reason =
            if onegate_tls == Some(false) { InsecureReason::SuperLinkInsecure } else { InsecureReason::Unspecified };
        return Ok(SuperNodeTls::Insecure { reason });
    }
    match (context_ca, onegate_ca) {
        (Some(ca), _) => Ok(SuperNodeTls::Verify { ca_pem: ca.to_vec(), source: CaSource::Context }),
        (None, Some(ca)) => Ok(SuperNodeTls::Verify { ca_pem: ca.to_vec(), source: CaSource::OneGate }),
        (None, None) => Err(TlsError::NoCa {
            reason: format!(
                "{} and neither FL_SSL_CA_CERTFILE nor the SuperLink's OneGate FL_CA_CERT is available; give \
                 FL_SSL_CA_CERTFILE, or check that the SuperLink published FL_CA_CERT",
                if fl_tls_enabled == Some(true) {
                    "FL_TLS_ENABLED=YES"
                } else {
                    "the SuperLink publishes FL_TLS=YES"
                }
            ),
        }),
    }
}

/// The SuperNode's CA file for the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperNodeTrust {
    /// `runtime_dir/ca.crt`: bind read-only, pass as `--root-certificates`.
    pub ca_cert: PathBuf,
    pub source: CaSource,
    /// SHA-256 of each CA certificate, `AB:CD:…`.
    pub fingerprints: Vec<String>,
}

impl SuperNodeTrust {
    /// A read-only bind mount of the CA to `dest` (a path in the container).
    pub fn bind_mount(&self, dest: &str) -> BindMount {
        BindMount { source: self.ca_cert.clone(), destination: dest.to_string(), read_only: true }
    }
}

/// The DER of every certificate of `ca_pem` (PEM, or its base64) once each parses, is a CA
/// and is in date at `now`; nothing is written (`check` runs it on FL_JOIN's and
/// FL_SSL_CA_CERTFILE's CA as the trust step will).
pub(super) fn check_ca_at(ca_pem: &[u8], source: CaSource, now: i64) -> Result<Vec<Vec<u8>>, TlsError> {
    let what = source.name();
    let decoded = match std::str::from_utf8(ca_pem) {
        Ok(text) if !text.contains("-----BEGIN") => crate::config::decode_base64_pem(text),
        _ => None,
    };
    let cas = certs_from_pem(what, decoded.as_ref().map_or(ca_pem, |d| d.as_bytes()))?;
    for der in &cas {
        let facts = super::operator::facts_in_date(what, der, now)?;
        if !facts.is_ca {
            return Err(TlsError::NotACa { what: what.into(), subject: facts.label() });
        }
    }
    Ok(cas.iter().map(|c| c.to_vec()).collect())
}

/// Validate `ca_pem` ([`check_ca_at`]) and write it, re-encoded, to `runtime_dir/ca.crt` (0644).
pub(super) fn trust_at(ca_pem: &[u8], source: CaSource, runtime_dir: &Path, now: i64) -> Result<SuperNodeTrust, TlsError> {
    let cas = check_ca_at(ca_pem, source, now)?;
    fsio::ensure_dir(runtime_dir, 0o755)?;
    let path = runtime_dir.join(CA_CERT);
    let pem: String = cas.iter().map(|c| pem_encode("CERTIFICATE", c)).collect();
    fsio::write_atomic(&path, pem.as_bytes(), fsio::CERT_MODE, None)?;
    Ok(SuperNodeTrust { ca_cert: path, source, fingerprints: cas.iter().map(|c| fingerprint(c)).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &[u8] = b"-----BEGIN CERTIFICATE-----\n...";
    const OG: &[u8] = b"-----BEGIN CERTIFICATE-----\n,,,";

    fn verify(ca: &[u8], source: CaSource) -> SuperNodeTls {
        SuperNodeTls::Verify { ca_pem: ca.to_vec(), source }
    }
    fn insecure(reason: InsecureReason) -> SuperNodeTls {
        SuperNodeTls::Insecure { reason }
    }

    #[test]
    fn decision_order() {
        use InsecureReason::*;
        let d = decide_supernode;
        // Explicit YES: context CA first, then OneGate's; none is fatal.
        assert_eq!(d(Some(true), None, Some(CA), Some(OG)).unwrap(), verify(CA, CaSource::Context));
        assert_eq!(d(Some(true), Some(false), None, Some(OG)).unwrap(), verify(OG, CaSource::OneGate));
        let e = d(Some(true), None, None, None).unwrap_err().to_string();
        assert!(e.contains("FL_TLS_ENABLED=YES") && e.contains("FL_SSL_CA_CERTFILE"), "{e}");
        // Explicit NO wins, with a sharper warning when the SuperLink says YES.
        assert_eq!(d(Some(false), Some(true), Some(CA), Some(OG)).unwrap(), insecure(DisabledAgainstSuperLink));
        assert_eq!(d(Some(false), None, None, None).unwrap(), insecure(Disabled));
        // Unset: a context CA means TLS; then OneGate decides; then insecure.
        assert_eq!(d(None, Some(false), Some(CA), None).unwrap(), verify(CA, CaSource::Context));
        assert_eq!(d(None, Some(true), None, Some(OG)).unwrap(), verify(OG, CaSource::OneGate));
        assert_eq!(d(None, Some(false), None, Some(OG)).unwrap(), insecure(SuperLinkInsecure));
        assert_eq!(d(None, None, None, Some(OG)).unwrap(), insecure(Unspecified));
        // OneGate says TLS but published no CA: fatal, never a silent downgrade.
        let e = d(None, Some(true), None, Some(b"")).unwrap_err().to_string();
        assert!(e.contains("publishes FL_TLS=YES"), "{e}");
    }

    #[test]
    fn warnings_say_insecure_and_why() {
        for r in [InsecureReason::Disabled, InsecureReason::DisabledAgainstSuperLink, InsecureReason::SuperLinkInsecure, InsecureReason::Unspecified] {
            let w = r.warning();
            assert!(w.starts_with("TLS IS DISABLED (") && w.contains("--insecure"), "{w}");
        }
    }
}
