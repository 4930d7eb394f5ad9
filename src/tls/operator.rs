//! Operator certificates: FL_SSL_CA_CERTFILE / FL_SSL_CERTFILE / FL_SSL_KEYFILE, all three or
//! none, each base64 PEM or the name of a FILES_DS file on the context CD. Validated before
//! Flower ever sees them, so a mistake is one clear FL_ERROR instead of SuperNodes failing
//! with `CERTIFICATE_VERIFY_FAILED` one by one.

use crate::vocab::San;
use super::verify::{certs_from_pem, fingerprint, handshake, key_from_pem, missing_names, server_config, verify_chain};
use super::x509::{self, CertFacts};
use super::{install_for_container, pem_encode, ContainerUser, Origin, SuperLinkTls, TlsError};
use crate::config::{OperatorPem, OperatorVar};
use crate::secret::Secret;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// The operator's files after validation, re-encoded from what was checked.
pub struct ValidOperator {
    cas: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    leaf: CertFacts,
}

/// Check the operator's files as a SuperNode and Flower's own executor will: every CA a CA
/// and in date; the certificate (and intermediates) in date; the key its key; the chain
/// verifying to the CA for serverAuth; SANs covering 127.0.0.1 and every `endpoints` entry
/// (one error listing all that are missing); then a real in-memory handshake.
pub fn validate_operator(pem: &OperatorPem, endpoints: &[San], now: i64) -> Result<ValidOperator, TlsError> {
    let (ca_var, cert_var, key_var) = (OperatorVar::CaCert.name(), OperatorVar::Cert.name(), OperatorVar::Key.name());
    let cas = certs_from_pem(ca_var, pem.ca.as_bytes())?;
    for der in &cas {
        let facts = facts_in_date(ca_var, der, now)?;
        if !facts.is_ca {
            return Err(TlsError::NotACa { what: ca_var.into(), subject: facts.label() });
        }
    }
    let chain = certs_from_pem(cert_var, pem.cert.as_bytes())?;
    let leaf = facts_in_date(cert_var, &chain[0], now)?;
    for der in &chain[1..] {
        facts_in_date(&format!("{cert_var} (intermediate)"), der, now)?;
    }
    let key = key_from_pem(key_var, pem.key.expose().as_bytes())?;
    let config = server_config(cert_var, key_var, chain.clone(), key.clone_key())?;
    verify_chain(cert_var, ca_var, &chain, &cas, now)?;
    let mut wanted = vec![San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))];
    for e in endpoints {
        if !wanted.contains(e) {
            wanted.push(e.clone());
        }
    }
    let missing = missing_names(cert_var, &chain[0], &wanted)?;
    if !missing.is_empty() {
        let present = leaf.sans.iter().map(San::to_string).collect();
        return Err(TlsError::MissingSans { what: cert_var.into(), missing, present });
    }
    handshake("FL_SSL_* certificates", config, &cas, &wanted[0])?;
    Ok(ValidOperator { cas, chain, key, leaf })
}

/// The facts of one certificate, or an error if it is unreadable or outside its validity.
pub(super) fn facts_in_date(what: &str, der: &CertificateDer<'static>, now: i64) -> Result<CertFacts, TlsError> {
    let facts =
        x509::parse(der).map_err(|reason| TlsError::ParseCertificate { what: what.to_string(), reason })?;
    if now > facts.not_after {
        return Err(TlsError::Expired { what: what.into(), subject: facts.label(), not_after: facts.not_after, now });
    }
    if now < facts.not_before {
        return Err(TlsError::NotYetValid {
            what: what.into(),
            subject: facts.label(),
            not_before: facts.not_before,
            now,
        });
    }
    Ok(facts)
}

/// Validate, then install the re-encoded files for the container.
pub(super) fn provision_at(
    pem: &OperatorPem,
    endpoints: &[San],
    runtime_dir: &Path,
    user: ContainerUser,
    now: i64,
) -> Result<SuperLinkTls, TlsError> {
    let v = validate_operator(pem, endpoints, now)?;
    let ca_pem: String = v.cas.iter().map(|c| pem_encode("CERTIFICATE", c)).collect();
    let cert_pem: String = v.chain.iter().map(|c| pem_encode("CERTIFICATE", c)).collect();
    let key_label = match &v.key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let key_pem = Secret::new(pem_encode(key_label, v.key.secret_der()));
    let files = install_for_container(runtime_dir, &ca_pem, &cert_pem, key_pem.expose(), user)?;
    let ca_not_after = v.cas.iter().filter_map(|c| x509::parse(c).ok()).map(|f| f.not_after).min().unwrap_or(0);
    Ok(SuperLinkTls {
        files,
        ca_fingerprint: fingerprint(&v.cas[0]),
        ca_pem,
        ca_not_after,
        server_not_after: v.leaf.not_after,
        sans: v.leaf.sans,
        origin: Origin::Operator,
    })
}
