//! The SuperLink's own PKI on the state disk: generate on first boot, reuse after, re-issue
//! the server certificate when its SAN set changes or it nears expiry, regenerate the CA only
//! when it is absent, corrupt or about to expire (loudly), then hand the container its copies.
//!
//! State directory (not bind-mounted into the container): `ca.crt` 0644, `ca.key` 0600,
//! `server.pem` 0644, `server.key` 0600. No sidecar: every decision is read from the files
//! themselves (validity, SANs, public key), so nothing can disagree with what Flower serves.

use super::issue::{self, Renewal};
use crate::vocab::San;
use super::verify::{certs_from_pem, fingerprint, missing_names, verify_chain};
use super::x509::{self, CertFacts};
use super::{error::utc, fsio, install_for_container, ContainerUser, Origin, SuperLinkTls, TlsError};
use super::{CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY};
use rcgen::{Issuer, KeyPair, PublicKeyData};
use rustls::pki_types::CertificateDer;
use std::collections::BTreeSet;
use std::path::Path;

/// What happened to the CA this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaOutcome {
    /// Found on the state disk and usable.
    Reused,
    /// None existed (first boot).
    Created,
    /// One existed but was unusable; the old files were kept as `*.corrupt`.
    Regenerated { reason: String },
}

/// What happened to the server certificate this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutcome {
    Reused,
    Issued { reason: String },
}

/// The CA as loaded: certificate, its facts, and the issuer built from its key.
struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    facts: CertFacts,
    issuer: Issuer<'static, KeyPair>,
}

/// The server certificate and key as PEM, with its facts.
struct Server {
    pem: String,
    key_pem: String,
    facts: CertFacts,
}

/// First boot or reboot of a SuperLink with TLS and no operator certificates: make or reuse
/// the CA and server certificate in `state_dir`, install the container's copies in
/// `runtime_dir`. `sans` is [`super::server_sans`]'s list; `now` is Unix seconds. Also the
/// renewal of a running SuperLink: the same checks re-issue what `policy` says is due.
pub fn provision_at(
    state_dir: &Path,
    runtime_dir: &Path,
    sans: &[San],
    user: ContainerUser,
    now: i64,
    policy: &Renewal,
) -> Result<SuperLinkTls, TlsError> {
    fsio::ensure_dir(state_dir, 0o700)?;
    let (ca, ca_outcome) = load_or_create_ca(state_dir, now, policy)?;
    let force = match &ca_outcome {
        CaOutcome::Reused => None,
        CaOutcome::Created => Some("new CA".to_string()),
        CaOutcome::Regenerated { .. } => Some("the CA was regenerated".to_string()),
    };
    let (server, server_outcome) = load_or_issue_server(state_dir, &ca, sans, now, force, policy)?;
    let files = install_for_container(runtime_dir, &ca.pem, &server.pem, &server.key_pem, user)?;
    Ok(SuperLinkTls {
        files,
        ca_fingerprint: fingerprint(&ca.der),
        ca_pem: ca.pem,
        ca_not_after: ca.facts.not_after,
        server_not_after: server.facts.not_after,
        sans: server.facts.sans,
        origin: Origin::Generated { ca: ca_outcome, server: server_outcome },
    })
}

/// Load the CA, or create one when there is none, or regenerate it (loudly) when it is
/// unusable. A CA that is fine but not flower-init's is found by the self-check later.
fn load_or_create_ca(dir: &Path, now: i64, policy: &Renewal) -> Result<(Ca, CaOutcome), TlsError> {
    let (crt_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let crt = fsio::read_optional(&crt_path)?;
    let key = fsio::read_optional(&key_path)?;
    let outcome = if crt.is_none() && key.is_none() {
        log::info!("tls: no CA in {}: generating one (first boot)", dir.display());
        CaOutcome::Created
    } else {
        match check_ca(crt, key, now, policy) {
            Ok(ca) => {
                fsio::enforce_mode(&key_path, fsio::KEY_MODE)?;
                fsio::enforce_mode(&crt_path, fsio::CERT_MODE)?;
                return Ok((ca, CaOutcome::Reused));
            }
            Err(reason) => {
                log::error!(
                    "tls: the CA in {} is unusable ({reason}); GENERATING A NEW CA. SuperNodes that trust \
                     the old one will fail TLS until they fetch the new one (OneGate FL_CA_CERT, at their \
                     next boot). The old files are kept as {CA_CERT}.corrupt / {CA_KEY}.corrupt.",
                    dir.display()
                );
                fsio::set_aside(&crt_path)?;
                fsio::set_aside(&key_path)?;
                CaOutcome::Regenerated { reason }
            }
        }
    };
    let (pem, key) = issue::generate_ca(now)?;
    // Key first: a crash between the two writes leaves a mismatched pair, which the next boot
    // regenerates, never a certificate whose key is lost.
    fsio::write_atomic(&key_path, key.serialize_pem().as_bytes(), fsio::KEY_MODE, None)?;
    fsio::write_atomic(&crt_path, pem.as_bytes(), fsio::CERT_MODE, None)?;
    let ca = check_ca(Some(pem.into_bytes()), Some(key.serialize_pem().into_bytes()), now, policy)
        .map_err(|reason| TlsError::SelfCheck { reason: format!("the CA just generated: {reason}") })?;
    Ok((ca, outcome))
}

/// The CA files, checked: a CA certificate, the key that belongs to it, not expiring within
/// `policy.renew_before`. The error is the reason, for the log.
fn check_ca(crt: Option<Vec<u8>>, key: Option<Vec<u8>>, now: i64, policy: &Renewal) -> Result<Ca, String> {
    let crt = crt.ok_or(format!("{CA_CERT} is missing"))?;
    let key = key.ok_or(format!("{CA_KEY} is missing"))?;
    let der = first_cert(CA_CERT, &crt)?;
    let facts = x509::parse(&der).map_err(|e| format!("{CA_CERT} is unreadable: {e}"))?;
    if !facts.is_ca {
        return Err(format!("{CA_CERT} is not a CA certificate"));
    }
    let key = parse_key(CA_KEY, &key)?;
    if key.subject_public_key_info() != facts.spki {
        return Err(format!("{CA_KEY} does not belong to {CA_CERT}"));
    }
    if facts.not_after - now < policy.renew_before {
        return Err(format!("{CA_CERT} expires on {} (renewed {} ahead)", utc(facts.not_after), ahead(policy)));
    }
    if facts.not_before > now {
        log::warn!("tls: {CA_CERT} is not valid before {}: is the clock ({}) right?", utc(facts.not_before), utc(now));
    }
    let pem = String::from_utf8(crt).map_err(|_| format!("{CA_CERT} is not text"))?;
    Ok(Ca { pem, der, facts, issuer: issue::ca_issuer(key) })
}

/// Reuse the server certificate if it is still right, else issue a new one (new key, same CA).
fn load_or_issue_server(
    dir: &Path,
    ca: &Ca,
    sans: &[San],
    now: i64,
    force: Option<String>,
    policy: &Renewal,
) -> Result<(Server, ServerOutcome), TlsError> {
    let (crt_path, key_path) = (dir.join(SERVER_CERT), dir.join(SERVER_KEY));
    let reason = match force {
        Some(r) => r,
        None => {
            let crt = fsio::read_optional(&crt_path)?;
            let key = fsio::read_optional(&key_path)?;
            match check_server(crt, key, ca, sans, now, policy) {
                Ok(server) => {
                    fsio::enforce_mode(&key_path, fsio::KEY_MODE)?;
                    fsio::enforce_mode(&crt_path, fsio::CERT_MODE)?;
                    log::info!("tls: reusing the server certificate (valid until {})", utc(server.facts.not_after));
                    return Ok((server, ServerOutcome::Reused));
                }
                Err(reason) => reason,
            }
        }
    };
    log::info!("tls: issuing a server certificate: {reason}");
    let (pem, key) = issue::issue_server(&ca.issuer, sans, now, ca.facts.not_after, policy.server_validity)?;
    let server = check_server(Some(pem.into_bytes()), Some(key.serialize_pem().into_bytes()), ca, sans, now, policy)
        .map_err(|r| TlsError::SelfCheck {
            reason: format!(
                "{r} (if {} was not made by flower-init, remove {CA_CERT} and {CA_KEY} there, or give your \
                 certificates with FL_SSL_CA_CERTFILE/FL_SSL_CERTFILE/FL_SSL_KEYFILE)",
                dir.display()
            ),
        })?;
    fsio::write_atomic(&key_path, server.key_pem.as_bytes(), fsio::KEY_MODE, None)?;
    fsio::write_atomic(&crt_path, server.pem.as_bytes(), fsio::CERT_MODE, None)?;
    Ok((server, ServerOutcome::Issued { reason }))
}

/// The server files, checked: parse, key belongs, chains to `ca` (webpki), valid for every
/// SAN (webpki), SAN set exactly `sans`, more than `policy.renew_before` left. The error is
/// why it must be re-issued.
fn check_server(crt: Option<Vec<u8>>, key: Option<Vec<u8>>, ca: &Ca, sans: &[San], now: i64, policy: &Renewal) -> Result<Server, String> {
    let (crt, key) = match (crt, key) {
        (None, None) => return Err("none yet".into()),
        (None, Some(_)) => return Err(format!("{SERVER_CERT} is missing")),
        (Some(_), None) => return Err(format!("{SERVER_KEY} is missing")),
        (Some(c), Some(k)) => (c, k),
    };
    let der = first_cert(SERVER_CERT, &crt)?;
    let facts = x509::parse(&der).map_err(|e| format!("{SERVER_CERT} is unreadable: {e}"))?;
    let key_pair = parse_key(SERVER_KEY, &key)?;
    if key_pair.subject_public_key_info() != facts.spki {
        return Err(format!("{SERVER_KEY} does not belong to {SERVER_CERT}"));
    }
    verify_chain(SERVER_CERT, CA_CERT, std::slice::from_ref(&der), std::slice::from_ref(&ca.der), now)
        .map_err(|e| e.to_string())?;
    if facts.not_after - now < policy.renew_before {
        return Err(format!("it expires on {} (renewed {} ahead)", utc(facts.not_after), ahead(policy)));
    }
    let have: BTreeSet<&San> = facts.sans.iter().collect();
    let want: BTreeSet<&San> = sans.iter().collect();
    if have != want {
        let list = |s: Vec<&&San>| s.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ");
        return Err(format!(
            "the SAN set changed (added: {}; removed: {})",
            list(want.difference(&have).collect()),
            list(have.difference(&want).collect())
        ));
    }
    let missing = missing_names(SERVER_CERT, &der, sans).map_err(|e| e.to_string())?;
    if !missing.is_empty() {
        return Err(format!("webpki rejects it for {}", missing.iter().map(San::to_string).collect::<Vec<_>>().join(", ")));
    }
    let pem = String::from_utf8(crt).map_err(|_| format!("{SERVER_CERT} is not text"))?;
    let key_pem = String::from_utf8(key).map_err(|_| format!("{SERVER_KEY} is not text"))?;
    Ok(Server { pem, key_pem, facts })
}

/// The lead time for messages: "30 days", or seconds when a test made it short.
fn ahead(policy: &Renewal) -> String {
    match policy.renew_before {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s => format!("{s} s"),
    }
}

/// The first certificate of a PEM file, or why there is none.
fn first_cert(name: &str, pem: &[u8]) -> Result<CertificateDer<'static>, String> {
    certs_from_pem(name, pem).map_err(|e| e.to_string())?.into_iter().next().ok_or(format!("{name} has no certificate"))
}

/// An rcgen key pair from PEM, or why not (never quoting the key).
fn parse_key(name: &str, pem: &[u8]) -> Result<KeyPair, String> {
    let text = std::str::from_utf8(pem).map_err(|_| format!("{name} is not text"))?;
    KeyPair::from_pem(text).map_err(|_| format!("{name} is not a usable private key"))
}
