//! Issuing with rcgen (ring, ECDSA P-256 / SHA-256): the SuperLink's own CA and its server
//! certificate. The recipe is the one tested against flwr 1.42 (research/flower.md §5.2).

use crate::vocab::San;
use super::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use std::time::{Duration, SystemTime};

const DAY: i64 = 86_400;
/// CA lifetime: ten years, so SuperNodes trust one CA for the cluster's whole life.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Server certificate lifetime: one year. It is re-issued (same CA) at boot when fewer than
/// [`RENEW_BEFORE_DAYS`] remain, so it never needs an operator; a shorter life would only
/// add re-issues, since the key sits next to the CA key anyway.
pub const SERVER_VALIDITY_DAYS: i64 = 365;
/// Re-issue (or, for the CA, regenerate) when fewer days than this remain.
pub const RENEW_BEFORE_DAYS: i64 = 30;
/// When to re-issue and for how long: [`RENEW_BEFORE_DAYS`] and [`SERVER_VALIDITY_DAYS`] in a
/// VM; tests inject a certificate that lives minutes and a lead time of seconds (service mode's
/// `--tls-renew-before` / `--tls-server-validity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// Re-issue the server certificate (regenerate the CA) when fewer seconds than this remain.
    pub renew_before: i64,
    /// Lifetime of a new server certificate, in seconds (never past the CA's).
    pub server_validity: i64,
}

impl Default for Renewal {
    fn default() -> Self {
        Renewal { renew_before: days(RENEW_BEFORE_DAYS), server_validity: days(SERVER_VALIDITY_DAYS) }
    }
}

/// notBefore is set this far in the past: a VM whose clock runs behind, or whose RTC keeps
/// local time instead of UTC (up to 14 h off), still accepts a certificate made a minute ago.
pub const BACKDATE_SECS: i64 = DAY;

/// Subject CN of the CA, followed by a short id of its key (`flower-init SuperLink CA
/// 1A2B3C4D`): derived from the key, so the issuer can be rebuilt from the CA key alone after
/// a reboot (rcgen needs the issuer's name; parsing it back would need x509-parser), yet two
/// clusters' CAs have different names, so trusting the wrong one reads "unknown issuer".
pub const CA_COMMON_NAME: &str = "flower-init SuperLink CA";
pub const ORGANIZATION: &str = "flower-init";
/// Subject CN of the server certificate (clients match SANs only; this is for humans).
pub const SERVER_COMMON_NAME: &str = "flower-superlink";

/// `n` days in seconds (validity arithmetic is in Unix seconds throughout).
pub(crate) fn days(n: i64) -> i64 {
    n * DAY
}

/// A Unix time as `SystemTime`; rcgen's `OffsetDateTime` fields take it through `.into()`
/// (so the `time` crate need not be named).
fn system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// A fresh ECDSA P-256 key.
fn new_key(what: &'static str) -> Result<KeyPair, TlsError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Generate { what, reason: e.to_string() })
}

/// The CA's name, usages and key-identifier method: what an [`Issuer`] is made of.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    let key_id = super::verify::fingerprint(&key.subject_public_key_info()).replace(':', "");
    let short: String = key_id.chars().take(8).collect();
    p.distinguished_name.push(DnType::CommonName, format!("{CA_COMMON_NAME} {short}"));
    p.distinguished_name.push(DnType::OrganizationName, ORGANIZATION);
    // pathLen 0: this CA signs server certificates, never another CA.
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

/// A new CA valid from `now - BACKDATE` for [`CA_VALIDITY_DAYS`]: (certificate PEM, key).
pub fn generate_ca(now: i64) -> Result<(String, KeyPair), TlsError> {
    let key = new_key("CA key")?;
    let mut p = ca_params(&key);
    p.not_before = system_time(now - BACKDATE_SECS).into();
    p.not_after = system_time(now + days(CA_VALIDITY_DAYS)).into();
    let cert = p.self_signed(&key).map_err(|e| TlsError::Generate { what: "CA certificate", reason: e.to_string() })?;
    Ok((cert.pem(), key))
}

/// The issuer for an existing CA key (its name is derived from the key, as [`generate_ca`] wrote it).
pub fn ca_issuer(ca_key: KeyPair) -> Issuer<'static, KeyPair> {
    Issuer::new(ca_params(&ca_key), ca_key)
}

/// A new server certificate for `sans`, signed by `issuer`, valid from `now - BACKDATE` for
/// `validity` seconds ([`Renewal::server_validity`]) but never past the CA (`ca_not_after`):
/// (certificate PEM, key).
pub fn issue_server(
    issuer: &Issuer<'_, KeyPair>,
    sans: &[San],
    now: i64,
    ca_not_after: i64,
    validity: i64,
) -> Result<(String, KeyPair), TlsError> {
    let key = new_key("server key")?;
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans.iter().map(super::names::to_rcgen).collect::<Result<_, _>>()?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, SERVER_COMMON_NAME);
    p.distinguished_name.push(DnType::OrganizationName, ORGANIZATION);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p.not_before = system_time(now - BACKDATE_SECS).into();
    p.not_after = system_time((now + validity).min(ca_not_after)).into();
    let cert = p
        .signed_by(&key, issuer)
        .map_err(|e| TlsError::Generate { what: "server certificate", reason: e.to_string() })?;
    Ok((cert.pem(), key))
}
