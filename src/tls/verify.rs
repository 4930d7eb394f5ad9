//! Checks with rustls and webpki, the same code paths a TLS client runs: PEM decoding, chain
//! to a CA at a given time, the names a client would dial, key possession (rustls refuses a key
//! that is not the certificate's, and a real in-memory handshake proves it signs), and the CA
//! fingerprint for logs.

use crate::vocab::San;
use super::TlsError;
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::sync::Arc;
use std::time::Duration;

/// The ring provider: the one crypto backend linked (no aws-lc).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Unix seconds as rustls/webpki take the verification time (clamped at the epoch).
fn unix_time(now: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(now.max(0) as u64))
}

/// Every CERTIFICATE block of a PEM text (other blocks are skipped); at least one.
pub fn certs_from_pem(what: &str, pem_bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::ParsePem { what: what.to_string(), reason: pem_reason(&e) })?;
    if certs.is_empty() {
        return Err(TlsError::ParsePem { what: what.to_string(), reason: "no CERTIFICATE block".into() });
    }
    Ok(certs)
}

/// The private key of a PEM text: PKCS#8, PKCS#1 (RSA) or SEC1 (EC). The reason never quotes
/// the text.
pub fn key_from_pem(what: &str, pem_bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem_bytes).map_err(|e| TlsError::ParsePem {
        what: what.to_string(),
        reason: match e {
            pem::Error::NoItemsFound => {
                "no unencrypted private key block (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY; \
                 encrypted keys are not supported)"
                    .into()
            }
            e => pem_reason(&e),
        },
    })
}

/// A PEM decoding error in words, without the offending bytes.
fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line (truncated?)".into(),
        pem::Error::IllegalSectionStart { .. } => "malformed BEGIN line".into(),
        pem::Error::Base64Decode(_) => "the base64 inside a PEM block is corrupt".into(),
        pem::Error::SectionTooLarge => "a PEM block is too large".into(),
        other => other.to_string(),
    }
}

/// Check that `chain` (leaf first, then intermediates) chains to one of `cas` at `now`, for
/// serverAuth, as a TLS client would. Names are checked separately ([`missing_names`]) so that
/// every missing one can be listed.
pub fn verify_chain(
    what: &str,
    ca_what: &str,
    chain: &[CertificateDer<'static>],
    cas: &[CertificateDer<'static>],
    now: i64,
) -> Result<(), TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca.clone())
            .map_err(|e| TlsError::ParseCertificate { what: ca_what.to_string(), reason: e.to_string() })?;
    }
    let Some(leaf) = chain.first() else {
        return Err(TlsError::ParsePem { what: what.to_string(), reason: "no CERTIFICATE block".into() });
    };
    let parsed = ParsedCertificate::try_from(leaf)
        .map_err(|e| TlsError::ParseCertificate { what: what.to_string(), reason: e.to_string() })?;
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &chain[1..],
        unix_time(now),
        provider().signature_verification_algorithms.all,
    )
    .map_err(|e| TlsError::ChainUntrusted { what: what.to_string(), ca: ca_what.to_string(), reason: chain_reason(&e) })
}

/// A webpki verdict in the words an operator needs.
fn chain_reason(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "it is not signed by that CA (unknown issuer)".into(),
            CertificateError::BadSignature => "its signature does not verify with the CA's key".into(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "its extendedKeyUsage does not allow serverAuth".into()
            }
            CertificateError::ExpiredContext { not_after, .. } => format!(
                "a certificate in the chain expired on {}",
                super::error::utc(not_after.as_secs() as i64)
            ),
            CertificateError::NotValidYetContext { not_before, .. } => format!(
                "a certificate in the chain is not valid before {}",
                super::error::utc(not_before.as_secs() as i64)
            ),
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

/// The names in `wanted` that a client dialling them would reject (webpki's name matching).
pub fn missing_names(what: &str, leaf: &CertificateDer<'static>, wanted: &[San]) -> Result<Vec<San>, TlsError> {
    let parsed = ParsedCertificate::try_from(leaf)
        .map_err(|e| TlsError::ParseCertificate { what: what.to_string(), reason: e.to_string() })?;
    Ok(wanted
        .iter()
        .filter(|san| super::names::server_name(san).is_none_or(|name| verify_server_name(&parsed, &name).is_err()))
        .cloned()
        .collect())
}

/// A rustls server configuration for `chain` + `key`: fails if the key is not the leaf's.
pub fn server_config(
    cert_what: &str,
    key_what: &str,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Handshake { what: key_what.to_string(), reason: e.to_string() })?;
    builder.with_no_client_auth().with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            TlsError::KeyMismatch { key: key_what.to_string(), cert: cert_what.to_string() }
        }
        other => TlsError::ParsePem { what: key_what.to_string(), reason: format!("unusable private key: {other}") },
    })
}

/// Run a complete TLS handshake in memory: a client trusting `cas` and dialling `name`
/// against `server`. Proves chain, name and possession of the key (the server signs the
/// handshake) with the very library a client uses. rustls's clock is the real one.
pub fn handshake(what: &str, server: ServerConfig, cas: &[CertificateDer<'static>], name: &San) -> Result<(), TlsError> {
    let fail = |reason: String| TlsError::Handshake { what: what.to_string(), reason };
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone()).map_err(|e| fail(e.to_string()))?;
    }
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = super::names::server_name(name).ok_or_else(|| fail(format!("{name} is not a name a client can dial")))?;
    let mut c = ClientConnection::new(Arc::new(client), server_name).map_err(|e| fail(e.to_string()))?;
    let mut s = ServerConnection::new(Arc::new(server)).map_err(|e| fail(e.to_string()))?;
    // A TLS 1.3 handshake is three flights; a few more rounds cover TLS 1.2 and tickets.
    for _ in 0..8 {
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).map_err(|e| fail(e.to_string()))?;
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).map_err(|e| fail(e.to_string()))?;
            s.process_new_packets().map_err(|e| fail(format!("server side: {e}")))?;
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).map_err(|e| fail(e.to_string()))?;
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).map_err(|e| fail(e.to_string()))?;
            c.process_new_packets().map_err(|e| fail(format!("client dialling {name}: {e}")))?;
        }
    }
    Err(fail("did not complete".into()))
}

/// SHA-256 of a certificate's DER as `AB:CD:…`, as `openssl x509 -fingerprint -sha256` prints
/// it, for logs and /status. SHA-256 comes from rustls's ring provider (its TLS 1.3 suite's
/// hash) so that ring need not be named as a dependency for one call.
pub fn fingerprint(der: &[u8]) -> String {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    // Invariant: a TLS13_* suite is a TLS 1.3 suite.
    let Some(tls13) = suite.tls13() else { return String::new() };
    let digest = tls13.common.hash_provider.hash(der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_sha256_in_openssl_form() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            fingerprint(b"abc"),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    #[test]
    fn pem_errors_say_what_is_wrong_without_quoting() {
        let e = certs_from_pem("FL_SSL_CERTFILE", b"hello").unwrap_err().to_string();
        assert_eq!(e, "FL_SSL_CERTFILE: not usable PEM: no CERTIFICATE block");
        let cut = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        let e = certs_from_pem("FL_SSL_CERTFILE", cut).unwrap_err().to_string();
        assert!(e.contains("no END line"), "{e}");
        let secret = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nU2VjcmV0S2V5\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let e = key_from_pem("FL_SSL_KEYFILE", secret).unwrap_err().to_string();
        assert!(e.contains("encrypted keys are not supported") && !e.contains("U2Vj"), "{e}");
    }
}
