//! Keys against what OpenSSH (`ssh-keygen`) and Python's `cryptography` (Flower's reader)
//! make of the same keys; the fixtures were made once with `ssh-keygen -t ecdsa -N ''`.

use super::*;

const K256: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAaAAAABNlY2RzYS
1zaGEyLW5pc3RwMjU2AAAACG5pc3RwMjU2AAAAQQQ+DHFNo5kAa8gMQe9Y/Ndfb9Cps9yM
f/l1nGFCom2Rp+xMae5xYcJJLFDxQndpoqdk1Hju9ODoSqLQ7JQNChi0AAAAoLAaw4OwGs
ODAAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBD4McU2jmQBryAxB
71j8119v0Kmz3Ix/+XWcYUKibZGn7Exp7nFhwkksUPFCd2mip2TUeO704OhKotDslA0KGL
QAAAAgECefhVr0+QmP6OnRlRm+wqqy3Q6bHsRTGTmte7bytBQAAAAEdGVzdAECAwQ=
-----END OPENSSH PRIVATE KEY-----
";
const K256_PUB: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBD4McU2jmQBryAxB71j8119v0Kmz3Ix/+XWcYUKibZGn7Exp7nFhwkksUPFCd2mip2TUeO704OhKotDslA0KGLQ= test";
const K256_FP: &str = "SHA256:5Mn+JugTrdxl6yv93o1IFjY2A2caPzijbfg4mC+D8xE";
/// `load_ssh_public_key(K256_PUB).public_bytes(PEM, SubjectPublicKeyInfo)`.
const K256_SPKI: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEPgxxTaOZAGvIDEHvWPzXX2/QqbPc\njH/5dZxhQqJtkafsTGnucWHCSSxQ8UJ3aaKnZNR47vTg6Eqi0OyUDQoYtA==\n-----END PUBLIC KEY-----\n";
const K384_PUB: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBInyfTLlS4PN3jbQLIpEMOu/QDsCbwXb596C/zYJnmpUtgDSfwU/7SJY1EsoFACWR1H/ffTlqT3fEqaNHRl23CYEdYq7g0UNH1GbPooAzD+BS1WqmhCQYQYhIQ0IgGGxnQ== site-b";
const K384_FP: &str = "SHA256:FOfEexzKT7LKfQSbZkmwSvLVM0uwgEScDUA8R/zCSVs";
const K384_SPKI: &str = "-----BEGIN PUBLIC KEY-----\nMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEifJ9MuVLg83eNtAsikQw679AOwJvBdvn\n3oL/NgmealS2ANJ/BT/tIljUSygUAJZHUf999OWpPd8Spo0dGXbcJgR1iruDRQ0f\nUZs+igDMP4FLVaqaEJBhBiEhDQiAYbGd\n-----END PUBLIC KEY-----\n";

/// The fixture's private fields: (d, check, comment).
fn fields(text: &str) -> (Vec<u8>, u32, String) {
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let raw = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
    let mut r = Reader::new(&raw);
    r.take(MAGIC.len()).unwrap();
    for _ in 0..3 {
        r.string().unwrap();
    }
    r.u32().unwrap();
    r.string().unwrap();
    let mut p = Reader::new(r.string().unwrap());
    let check = p.u32().unwrap();
    p.u32().unwrap();
    parse_public_blob(&mut p).unwrap();
    let d = p.string().unwrap().to_vec();
    let comment = String::from_utf8(p.string().unwrap().to_vec()).unwrap();
    (d, check, comment)
}

#[test]
fn the_private_key_is_written_byte_for_byte_as_ssh_keygen_writes_it() {
    let public = NodeKey::from_openssh(K256).unwrap().public().clone();
    let (d, check, comment) = fields(K256);
    assert_eq!(comment, "test");
    assert_eq!(encode_private(&public, &d, check, &comment), K256);
}

#[test]
fn public_lines_fingerprints_and_spki_match_openssh_and_cryptography() {
    for (line, fp, spki, curve) in [(K256_PUB, K256_FP, K256_SPKI, Curve::P256), (K384_PUB, K384_FP, K384_SPKI, Curve::P384)] {
        let k = NodePublicKey::parse_openssh(line).unwrap();
        assert_eq!(k.curve(), curve);
        let comment = line.rsplit(' ').next().unwrap();
        assert_eq!(k.to_openssh(comment), line);
        assert_eq!(k.fingerprint(), fp);
        assert_eq!(k.spki_pem(), spki);
    }
    // The blob alone (FL_NODE_PUBKEY) is the same key; a bare word that is no blob is refused.
    let blob = K256_PUB.split(' ').nth(1).unwrap();
    assert_eq!(NodePublicKey::parse_openssh(blob).unwrap(), NodePublicKey::parse_openssh(K256_PUB).unwrap());
    assert_eq!(NodePublicKey::parse_openssh(K256_PUB).unwrap().to_openssh_blob(), blob);
    assert!(NodePublicKey::parse_openssh("ecdsa-sha2-nistp256").is_err());
    // The key of the private file is the .pub's.
    assert_eq!(NodeKey::from_openssh(K256).unwrap().public(), &NodePublicKey::parse_openssh(K256_PUB).unwrap());
}

#[test]
fn a_generated_key_reads_back_and_its_spki_is_rcgens() {
    let k = NodeKey::generate("flower-supernode-vm7").unwrap();
    let text = k.private_openssh().expose().to_string();
    assert!(text.starts_with(ARMOR_BEGIN) && text.ends_with(&format!("{ARMOR_END}\n")));
    assert!(text.lines().all(|l| l.len() <= 70));
    let back = NodeKey::from_openssh(&text).unwrap();
    assert_eq!(back.public(), k.public());
    let (d, check, comment) = fields(&text);
    assert_eq!((comment.as_str(), d.len() <= 33), ("flower-supernode-vm7", true));
    assert_eq!(encode_private(k.public(), &d, check, &comment), text, "one encoding");
    let line = k.public().to_openssh("flower-supernode-vm7");
    assert!(line.starts_with("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY") && line.ends_with(" flower-supernode-vm7"));
    // Debug shows the fingerprint, never the key.
    let dbg = format!("{k:?}");
    assert!(dbg.contains(&k.public().fingerprint()) && !dbg.contains(&text.lines().nth(1).unwrap()[..20]), "{dbg}");
}

#[test]
fn spki_equals_rcgens_public_key_pem() {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let k = NodePublicKey { curve: Curve::P256, point: kp.public_key_raw().to_vec() };
    assert_eq!(k.spki_pem().replace('\n', ""), kp.public_key_pem().replace(['\n', '\r'], ""));
    let d = private_scalar_of_pkcs8(&kp.serialize_der()).unwrap();
    assert_eq!(d.len(), 32);
}

#[test]
fn load_or_create_makes_a_0600_key_once_and_keeps_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let (a, created) = NodeKey::load_or_create(&path, "n").unwrap();
    assert!(created);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let (b, created) = NodeKey::load_or_create(&path, "n").unwrap();
    assert!(!created && a.public() == b.public());
    std::fs::write(&path, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n").unwrap();
    let e = NodeKey::load_or_create(&path, "n").unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()) && e.contains("malformed") || e.contains("openssh-key-v1"), "{e}");
}

#[test]
fn bad_public_keys_are_refused_with_the_rule() {
    let blob = K256_PUB.split(' ').nth(1).unwrap();
    let cases: Vec<(String, &str)> = vec![
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ6 x".into(), "Flower needs an ECDSA key on a NIST curve"),
        ("ssh-rsa AAAAB3NzaC1yc2E x".into(), "Flower needs an ECDSA key"),
        (format!("ecdsa-sha2-nistp256 {}", &blob[..60]), "malformed"),
        ("ecdsa-sha2-nistp256 not*base64".into(), "not base64"),
        (format!("ecdsa-sha2-nistp384 {blob}"), "says ecdsa-sha2-nistp384 but its key blob is a ecdsa-sha2-nistp256 key"),
        ("ecdsa-sha2-nistp256".into(), "not an OpenSSH public key line"),
        (format!("ecdsa-sha2-nistp256 {}", "A".repeat(2000)), "bytes long"),
    ];
    for (line, rule) in cases {
        let e = NodePublicKey::parse_openssh(&line).unwrap_err().to_string();
        assert!(e.contains(rule), "{line:.40}: {e}");
        assert!(e.len() < 200, "{e}");
    }
    // Trailing bytes after the point.
    let mut raw = base64::engine::general_purpose::STANDARD.decode(blob).unwrap();
    raw.push(0);
    let line = format!("ecdsa-sha2-nistp256 {}", base64::engine::general_purpose::STANDARD.encode(raw));
    assert!(NodePublicKey::parse_openssh(&line).unwrap_err().to_string().contains("bytes after the key"));
}

#[test]
fn bad_private_keys_are_refused_without_quoting_them() {
    let (d, check, _) = fields(K256);
    let public = NodeKey::from_openssh(K256).unwrap().public().clone();
    // An encrypted key: cipher aes256-ctr, kdf bcrypt.
    let mut enc = MAGIC.to_vec();
    put_string(&mut enc, b"aes256-ctr");
    put_string(&mut enc, b"bcrypt");
    put_string(&mut enc, b"");
    let enc = format!("{ARMOR_BEGIN}\n{}\n{ARMOR_END}\n", base64::engine::general_purpose::STANDARD.encode(&enc));
    let e = NodeKey::from_openssh(&enc).unwrap_err().to_string();
    assert!(e.contains("encrypted"), "{e}");
    let e = NodeKey::from_openssh("hello").unwrap_err().to_string();
    assert!(e.contains("not an OpenSSH private key"), "{e}");
    // Check values that differ: a corrupt private section.
    let text = encode_private(&public, &d, check, "test");
    let mut raw = base64::engine::general_purpose::STANDARD.decode(text.lines().filter(|l| !l.starts_with("-----")).collect::<String>()).unwrap();
    // The first check value sits right after the private section's length.
    let pos = raw.windows(4).position(|w| w == check.to_be_bytes()).unwrap();
    raw[pos] ^= 0xff;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    let broken = format!("{ARMOR_BEGIN}\n{b64}\n{ARMOR_END}\n");
    let e = NodeKey::from_openssh(&broken).unwrap_err().to_string();
    assert!(e.contains("check values differ"), "{e}");
    assert!(!e.contains(&b64[..16]));
}
