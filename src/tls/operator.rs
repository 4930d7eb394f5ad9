//! Operator certificates: FL_SSL_CA_CERTFILE / FL_SSL_CERTFILE / FL_SSL_KEYFILE, all three or
//! none, each base64 PEM or the name of a FILES_DS file on the context CD. Validated before
//! Flower ever sees them, so a mistake is one clear FL_ERROR instead of SuperNodes failing
//! with `CERTIFICATE_VERIFY_FAILED` one by one.

use super::names::San;
use super::verify::{certs_from_pem, fingerprint, handshake, key_from_pem, missing_names, server_config, verify_chain};
use super::x509::{self, CertFacts};
use super::{install_for_container, pem_encode, ContainerUser, Origin, SuperLinkTls, TlsError};
use crate::secret::Secret;
use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// One of the three variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorVar {
    CaCert,
    Cert,
    Key,
}

impl OperatorVar {
    /// The context variable, as error messages name it.
    pub fn name(self) -> &'static str {
        match self {
            OperatorVar::CaCert => "FL_SSL_CA_CERTFILE",
            OperatorVar::Cert => "FL_SSL_CERTFILE",
            OperatorVar::Key => "FL_SSL_KEYFILE",
        }
    }
}

/// The three PEM texts, resolved. The key never prints.
#[derive(Debug, Clone)]
pub struct OperatorPem {
    pub ca: String,
    pub cert: String,
    pub key: Secret,
}

/// The operator's files after validation, re-encoded from what was checked.
pub struct ValidOperator {
    cas: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    leaf: CertFacts,
}

/// Resolve FL_SSL_* values (each `None` when unset or empty): all three or none.
/// `context_dir` is where the context CD is mounted (FILES_DS files sit in its root).
pub fn operator_pem_from_context(
    ca: Option<&str>,
    cert: Option<&str>,
    key: Option<&str>,
    context_dir: &Path,
) -> Result<Option<OperatorPem>, TlsError> {
    let vars = [(OperatorVar::CaCert, ca), (OperatorVar::Cert, cert), (OperatorVar::Key, key)];
    let set = |v: &Option<&str>| v.is_some_and(|s| !s.trim().is_empty());
    let given: Vec<&'static str> = vars.iter().filter(|(_, v)| set(v)).map(|(n, _)| n.name()).collect();
    if given.is_empty() {
        return Ok(None);
    }
    if given.len() < 3 {
        let missing = vars.iter().filter(|(_, v)| !set(v)).map(|(n, _)| n.name()).collect();
        return Err(TlsError::OperatorIncomplete { given, missing });
    }
    let get = |var: OperatorVar, v: Option<&str>| resolve_operator_value(var, v.unwrap_or_default(), context_dir);
    Ok(Some(OperatorPem {
        ca: get(OperatorVar::CaCert, ca)?.expose().to_string(),
        cert: get(OperatorVar::Cert, cert)?.expose().to_string(),
        key: get(OperatorVar::Key, key)?,
    }))
}

/// One FL_SSL_* value as PEM text: PEM itself, base64-encoded PEM (which always starts
/// `LS0tLS`, the encoding of `-----`), or the name of a FILES_DS file in the root of the
/// context CD. Errors name the variable; a value is quoted only when it is short enough to be
/// a file name, never key material.
pub fn resolve_operator_value(var: OperatorVar, value: &str, context_dir: &Path) -> Result<Secret, TlsError> {
    let fail = |reason: String| TlsError::ResolveValue { var: var.name(), reason };
    let v = value.trim();
    if v.is_empty() {
        return Err(fail("empty".into()));
    }
    if v.starts_with("-----BEGIN") {
        return Ok(Secret::new(v));
    }
    if let Some(pem) = decode_base64_pem(v) {
        return Ok(Secret::new(pem));
    }
    if v.starts_with("LS0tLS") {
        return Err(fail("looks like base64-encoded PEM but does not decode to PEM text (truncated?)".into()));
    }
    let shown = if v.len() <= 100 { format!("{v:?}") } else { format!("a value of {} characters", v.len()) };
    if v.contains('/') || v.contains('\0') || v == "." || v == ".." || v.len() > 255 {
        return Err(fail(format!(
            "{shown} is neither base64-encoded PEM nor the name of a file on the context CD (give the FILES_DS \
             image's name, not a path)"
        )));
    }
    let path = context_dir.join(v);
    match std::fs::read(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) if text.contains("-----BEGIN") => Ok(Secret::new(text)),
            _ => Err(fail(format!("file {shown} on the context CD is not PEM text"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(fail(format!(
            "{shown} is neither base64-encoded PEM nor the name of a file on the context CD (no such file in {}; \
             FILES_DS files are named after their image's NAME)",
            context_dir.display()
        ))),
        Err(source) => Err(TlsError::ReadFile { path, source }),
    }
}

/// Base64 (padding optional, whitespace ignored) that decodes to PEM text, else `None`.
pub(super) fn decode_base64_pem(v: &str) -> Option<String> {
    let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let text = String::from_utf8(engine.decode(compact).ok()?).ok()?;
    text.trim_start().starts_with("-----BEGIN").then_some(text)
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
fn facts_in_date(what: &str, der: &CertificateDer<'static>, now: i64) -> Result<CertFacts, TlsError> {
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
