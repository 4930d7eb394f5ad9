//! The few X.509 facts webpki does not expose: validity dates (webpki never checks a trust
//! anchor's dates, OpenSSL does), basicConstraints cA, the SubjectPublicKeyInfo (does a key
//! belong to a certificate) and the DNS/IP SANs (is the SAN set still the wanted one).
//!
//! Read with yasna, the DER codec rcgen already links, in BER mode so that a slightly
//! non-canonical operator certificate is still described; chain and name checks are webpki's.
//! RFC 5280 §4.1:
//! ```text
//! Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
//! TBSCertificate ::= SEQUENCE { version [0] EXPLICIT DEFAULT v1, serialNumber, signature,
//!     issuer, validity SEQUENCE { notBefore, notAfter }, subject, subjectPublicKeyInfo,
//!     issuerUniqueID [1] OPTIONAL, subjectUniqueID [2] OPTIONAL, extensions [3] EXPLICIT OPTIONAL }
//! ```

use crate::vocab::San;
use std::net::IpAddr;
use yasna::models::ObjectIdentifier;
use yasna::{ASN1Error, ASN1ErrorKind, ASN1Result, BERReader, Tag};

/// RFC 5280 OIDs: id-ce-basicConstraints, id-ce-subjectAltName, id-at-commonName.
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
const OID_COMMON_NAME: &[u64] = &[2, 5, 4, 3];

/// What this module needs to know about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// serialNumber content bytes (tests compare it across re-issues).
    pub serial: Vec<u8>,
    /// Validity, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// basicConstraints cA (false when the extension is absent).
    pub is_ca: bool,
    /// The SubjectPublicKeyInfo, DER, as rcgen's `PublicKeyData::subject_public_key_info`.
    pub spki: Vec<u8>,
    /// DNS and IP SANs (other kinds are ignored), in certificate order.
    pub sans: Vec<San>,
    /// The subject's CN, for messages.
    pub common_name: Option<String>,
}

impl CertFacts {
    /// `"CN=flower-superlink"`, or `"(no CN)"`: how messages name a certificate.
    pub fn label(&self) -> String {
        self.common_name.as_ref().map_or_else(|| "(no CN)".to_string(), |cn| format!("\"CN={cn}\""))
    }
}

/// Describe a DER certificate; the error is the parser's reason.
pub fn parse(der: &[u8]) -> Result<CertFacts, String> {
    let (serial, tbs_validity, subject, spki, extensions) = yasna::parse_ber(der, |r| {
        r.read_sequence(|r| {
            let tbs = r.next().read_sequence(|r| {
                r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_i64()))?;
                let serial = r.next().read_bigint_bytes()?.0;
                r.next().read_der()?; // signature
                r.next().read_der()?; // issuer
                let validity = r.next().read_sequence(|r| Ok((read_time(r.next())?, read_time(r.next())?)))?;
                let subject = r.next().read_der()?;
                let spki = r.next().read_der()?;
                let mut extensions = None;
                while let Some(v) = r.read_optional(|r| r.read_tagged_der())? {
                    if v.tag() == Tag::context(3) {
                        extensions = Some(v.value().to_vec());
                    }
                }
                Ok((serial, validity, subject, spki, extensions))
            })?;
            r.next().read_der()?; // signatureAlgorithm
            r.next().read_der()?; // signatureValue
            Ok(tbs)
        })
    })
    .map_err(|e| format!("bad DER ({e})"))?;
    let (not_before, not_after) = tbs_validity;
    let mut facts = CertFacts {
        serial,
        not_before,
        not_after,
        is_ca: false,
        spki,
        sans: Vec::new(),
        common_name: common_name(&subject),
    };
    if let Some(ext) = extensions {
        for (oid, value) in read_extensions(&ext).map_err(|e| format!("bad extensions ({e})"))? {
            if oid.components().as_slice() == OID_BASIC_CONSTRAINTS {
                facts.is_ca = read_basic_constraints(&value).map_err(|e| format!("bad basicConstraints ({e})"))?;
            } else if oid.components().as_slice() == OID_SUBJECT_ALT_NAME {
                facts.sans = read_sans(&value).map_err(|e| format!("bad subjectAltName ({e})"))?;
            }
        }
    }
    Ok(facts)
}

/// A `Time ::= CHOICE { utcTime, generalTime }` as Unix seconds.
fn read_time(r: BERReader) -> ASN1Result<i64> {
    if r.lookahead_tag()? == yasna::tags::TAG_UTCTIME {
        Ok(r.read_utctime()?.datetime().unix_timestamp())
    } else {
        Ok(r.read_generalized_time()?.datetime().unix_timestamp())
    }
}

/// `Extensions ::= SEQUENCE OF SEQUENCE { extnID, critical DEFAULT FALSE, extnValue OCTET STRING }`.
fn read_extensions(der: &[u8]) -> ASN1Result<Vec<(ObjectIdentifier, Vec<u8>)>> {
    yasna::parse_ber(der, |r| {
        r.collect_sequence_of(|r| {
            r.read_sequence(|r| {
                let oid = r.next().read_oid()?;
                r.read_optional(|r| r.read_bool())?;
                let value = r.next().read_bytes()?;
                Ok((oid, value))
            })
        })
    })
}

/// `BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL }`.
fn read_basic_constraints(der: &[u8]) -> ASN1Result<bool> {
    yasna::parse_ber(der, |r| {
        r.read_sequence(|r| {
            let ca = r.read_optional(|r| r.read_bool())?.unwrap_or(false);
            r.read_optional(|r| r.read_der())?;
            Ok(ca)
        })
    })
}

/// `GeneralNames ::= SEQUENCE OF GeneralName`; keeps dNSName [2] and iPAddress [7].
fn read_sans(der: &[u8]) -> ASN1Result<Vec<San>> {
    let names = yasna::parse_ber(der, |r| r.collect_sequence_of(|r| r.read_tagged_der()))?;
    let mut sans = Vec::new();
    for n in names {
        if n.tag() == Tag::context(2) {
            let name = std::str::from_utf8(n.value()).map_err(|_| ASN1Error::new(ASN1ErrorKind::Invalid))?;
            sans.push(San::Dns(name.to_ascii_lowercase()));
        } else if n.tag() == Tag::context(7) {
            let ip = match n.value().len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(n.value()).map_err(|_| ASN1Error::new(ASN1ErrorKind::Invalid))?),
                16 => IpAddr::from(<[u8; 16]>::try_from(n.value()).map_err(|_| ASN1Error::new(ASN1ErrorKind::Invalid))?),
                _ => return Err(ASN1Error::new(ASN1ErrorKind::Invalid)),
            };
            sans.push(San::Ip(ip));
        }
    }
    Ok(sans)
}

/// The first CN of a `Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }`, any
/// string type read as UTF-8 (lossy): it only labels the certificate in messages.
fn common_name(name_der: &[u8]) -> Option<String> {
    let rdns = yasna::parse_ber(name_der, |r| {
        r.collect_sequence_of(|r| {
            r.collect_set_of(|r| {
                r.read_sequence(|r| {
                    let oid = r.next().read_oid()?;
                    let value = r.next().read_tagged_der()?;
                    Ok((oid, value))
                })
            })
        })
    })
    .ok()?;
    rdns.into_iter()
        .flatten()
        .find(|(oid, _)| oid.components().as_slice() == OID_COMMON_NAME)
        .map(|(_, v)| String::from_utf8_lossy(v.value()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, PublicKeyData};

    #[test]
    fn reads_what_rcgen_wrote() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(vec!["10.0.0.5".into(), "::1".into(), "Node.Example".into()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "test leaf");
        p.not_before = rcgen::date_time_ymd(2020, 1, 2);
        p.not_after = rcgen::date_time_ymd(2051, 3, 4); // GeneralizedTime (after 2049)
        let f = parse(p.self_signed(&key).unwrap().der()).unwrap();
        assert_eq!(f.not_before, 1_577_923_200);
        assert_eq!(f.not_after, 2_561_500_800);
        assert!(!f.is_ca);
        assert_eq!(f.spki, key.subject_public_key_info());
        assert_eq!(
            f.sans,
            vec![San::Ip("10.0.0.5".parse().unwrap()), San::Ip("::1".parse().unwrap()), San::Dns("node.example".into())]
        );
        assert_eq!(f.label(), "\"CN=test leaf\"");

        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.distinguished_name = rcgen::DistinguishedName::new();
        let f = parse(p.self_signed(&key).unwrap().der()).unwrap();
        assert!(f.is_ca);
        assert!(f.sans.is_empty());
        assert_eq!(f.label(), "(no CN)");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(b"").is_err());
        assert!(parse(b"\x30\x03\x02\x01\x01").is_err());
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = CertificateParams::new(vec!["a.b".into()]).unwrap().self_signed(&key).unwrap().der().to_vec();
        for cut in [1, 10, der.len() / 2, der.len() - 1] {
            assert!(parse(&der[..cut]).is_err(), "truncated at {cut}");
        }
    }
}
