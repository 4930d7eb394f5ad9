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

/// `ssh-keygen -t ecdsa -b 384 -N '' -C p384`, with its .pub line, `ssh-keygen -lf` and
/// cryptography's SubjectPublicKeyInfo.
const K384: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAiAAAABNlY2RzYS
1zaGEyLW5pc3RwMzg0AAAACG5pc3RwMzg0AAAAYQRYbm10EupXXYR1Os+Cz9zw02bjcmXr
I6E0wFZhVvpz0v/jrjPuX6AQe98hYcG60hM0qHhLcF9QW9Tf/m7B5w9bNlPaF9oAyWfSKq
sYX7tUS97z9Z2Rr7/RA3kHzzQv7aQAAADQR6VizUelYs0AAAATZWNkc2Etc2hhMi1uaXN0
cDM4NAAAAAhuaXN0cDM4NAAAAGEEWG5tdBLqV12EdTrPgs/c8NNm43Jl6yOhNMBWYVb6c9
L/464z7l+gEHvfIWHButITNKh4S3BfUFvU3/5uwecPWzZT2hfaAMln0iqrGF+7VEve8/Wd
ka+/0QN5B880L+2kAAAAMEaSTDyWXRWTvtY2k8WEXjcWXpp8I103IvD8ur2RwdS5WBHXRc
gxVEBdvjeLAsykNgAAAARwMzg0AQIDBA==
-----END OPENSSH PRIVATE KEY-----
";
const K384B_PUB: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBFhubXQS6lddhHU6z4LP3PDTZuNyZesjoTTAVmFW+nPS/+OuM+5foBB73yFhwbrSEzSoeEtwX1Bb1N/+bsHnD1s2U9oX2gDJZ9Iqqxhfu1RL3vP1nZGvv9EDeQfPNC/tpA== p384";
const K384B_FP: &str = "SHA256:U5ZknpWa+UmTkIXU285RTe0+uM70b0IMgkltk5kBdEM";
const K384B_SPKI: &str = "-----BEGIN PUBLIC KEY-----\nMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEWG5tdBLqV12EdTrPgs/c8NNm43Jl6yOh\nNMBWYVb6c9L/464z7l+gEHvfIWHButITNKh4S3BfUFvU3/5uwecPWzZT2hfaAMln\n0iqrGF+7VEve8/Wdka+/0QN5B880L+2k\n-----END PUBLIC KEY-----\n";

/// A P-521 key made with `cryptography` (`ssh-keygen -lf` for the fingerprint).
const K521_PUB: &str = "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBACcQbQqaMIiso3jVlhFc/IJKRub5xSN3X6u8aHYHxMv2fwFCyU+DdSl01fO3hBbHAppybfJzGqqe5XZTfH8VbzYugALquMR2qunLn264vbIxNZsiCBX48yYiFOTEIjoLPE4G9SkPOTgY3mAoWmz+MXT6/IfzBI8xXB5ttv8zRWdDxxVoA== p521";
const K521_FP: &str = "SHA256:yi2FvQUcbi1l30y31hbTbuv6+Nxu6cnz+6F6DjA4OCc";
const K521_SPKI: &str = "-----BEGIN PUBLIC KEY-----\nMIGbMBAGByqGSM49AgEGBSuBBAAjA4GGAAQAnEG0KmjCIrKN41ZYRXPyCSkbm+cU\njd1+rvGh2B8TL9n8BQslPg3UpdNXzt4QWxwKacm3ycxqqnuV2U3x/FW82LoAC6rj\nEdqrpy59uuL2yMTWbIggV+PMmIhTkxCI6CzxOBvUpDzk4GN5gKFps/jF0+vyH8wS\nPMVwebbb/M0VnQ8cVaA=\n-----END PUBLIC KEY-----\n";

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
    for (line, fp, spki, curve) in [(K256_PUB, K256_FP, K256_SPKI, Curve::P256), (K384_PUB, K384_FP, K384_SPKI, Curve::P384), (K384B_PUB, K384B_FP, K384B_SPKI, Curve::P384), (K521_PUB, K521_FP, K521_SPKI, Curve::P521)] {
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
    assert!(e.contains(&path.display().to_string()) && (e.contains("malformed") || e.contains("openssh-key-v1")), "{e}");
    // A key with a wrong scalar: the error names the file and the rule, no key bytes.
    let (_, check, _) = fields(K256);
    let (d384, _, _) = fields(K384);
    let public = NodeKey::from_openssh(K256).unwrap().public().clone();
    let wrong = encode_private(&public, &d384[d384.len() - 32..], check, "test");
    std::fs::write(&path, &wrong).unwrap();
    let e = NodeKey::load_or_create(&path, "n").unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()) && e.contains("not the private key of its public key"), "{e}");
    for l in wrong.lines().chain(K256.lines()).filter(|l| !l.starts_with("-----")) {
        assert!(!e.contains(&l[..12]), "{e}");
    }
    // Kept as it is: a broken key is not replaced behind the operator's back.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), wrong);
}

#[test]
fn a_p384_private_key_reads_and_writes_as_ssh_keygen_writes_it() {
    let k = NodeKey::from_openssh(K384).unwrap();
    assert_eq!(k.public(), &NodePublicKey::parse_openssh(K384B_PUB).unwrap());
    assert_eq!(k.public().fingerprint(), K384B_FP);
    assert_eq!(k.public().spki_pem(), K384B_SPKI);
    let (d, check, comment) = fields(K384);
    assert_eq!((d.len(), comment.as_str()), (48, "p384"));
    assert_eq!(encode_private(k.public(), &d, check, &comment), K384);
}

#[test]
fn private_scalars_are_checked_against_the_public_key_and_the_mpint_rules() {
    let (d, check, _) = fields(K256);
    let public = NodeKey::from_openssh(K256).unwrap().public().clone();
    // Another valid scalar: the pair no longer matches.
    let mut other = d.clone();
    *other.last_mut().unwrap() ^= 1;
    let e = NodeKey::from_openssh(&encode_private(&public, &other, check, "t")).unwrap_err().to_string();
    assert!(e.contains("not the private key of its public key"), "{e}");
    // Zero is no key.
    let e = NodeKey::from_openssh(&encode_private(&public, &[0u8; 32], check, "t")).unwrap_err().to_string();
    assert!(e.contains("not a canonical mpint"), "{e}");
    // mpints: the fixture's d written with a superfluous zero, or one byte too wide.
    let digits = &d[usize::from(d[0] == 0)..];
    for bad_d in [[&[0u8, 0][..], digits].concat(), [&[1u8][..], &[0u8; 32][..]].concat()] {
        let mut private = Vec::new();
        put_u32(&mut private, check);
        put_u32(&mut private, check);
        private.extend_from_slice(&public.blob());
        put_string(&mut private, &bad_d);
        put_string(&mut private, b"t");
        let mut pad = 1;
        while private.len() % 8 != 0 {
            private.push(pad);
            pad += 1;
        }
        let e = NodeKey::from_openssh(&armour(&public, &private, b"")).unwrap_err().to_string();
        assert!(e.contains("not a canonical mpint"), "{e}");
    }
    assert_eq!(scalar_of_mpint(&[0x00, 0x80], Curve::P256).unwrap().len(), 32);
    assert_eq!(scalar_of_mpint(&[0x80], Curve::P256), None, "negative");
    assert_eq!(scalar_of_mpint(&[0x00, 0x7f], Curve::P256), None, "superfluous zero");
    // A private section without its padding.
    let mut private = Vec::new();
    put_u32(&mut private, check);
    put_u32(&mut private, check);
    private.extend_from_slice(&public.blob());
    put_mpint(&mut private, &d);
    put_string(&mut private, b"t");
    assert_ne!(private.len() % 8, 0, "the fixture needs padding");
    let e = NodeKey::from_openssh(&armour(&public, &private, b"")).unwrap_err().to_string();
    assert!(e.contains("not a multiple of 8"), "{e}");
    let unpadded = private.clone();
    // Padding that is not 1, 2, 3…
    private.resize(private.len().next_multiple_of(8), 0);
    let e = NodeKey::from_openssh(&armour(&public, &private, b"")).unwrap_err().to_string();
    assert!(e.contains("corrupt padding"), "{e}");
    // Right padding reads; bytes after the private section do not.
    let mut private = unpadded;
    let mut pad = 1;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    assert_eq!(NodeKey::from_openssh(&armour(&public, &private, b"")).unwrap().public(), &public);
    let e = NodeKey::from_openssh(&armour(&public, &private, &[0, 0, 0])).unwrap_err().to_string();
    assert!(e.contains("bytes after its private section"), "{e}");
}

#[test]
fn points_off_their_curve_are_refused() {
    for line in [K256_PUB, K384_PUB, K384B_PUB, K521_PUB] {
        let k = NodePublicKey::parse_openssh(line).unwrap();
        assert!(on_curve(k.curve, &k.point));
        // y with its lowest bit flipped is off the curve; (x, p − y), the negated point, is on it.
        let half = (k.point.len() - 1) / 2;
        let mut moved = k.point.clone();
        *moved.last_mut().unwrap() ^= 1;
        let bad = NodePublicKey { curve: k.curve, point: moved };
        let e = NodePublicKey::parse_openssh(&bad.to_openssh("x")).unwrap_err().to_string();
        assert!(e.contains(&format!("its point is not on the curve {}", k.curve.ssh_name())), "{e}");
        let (p_hex, _) = k.curve.p_and_b();
        let p = big_of_hex(p_hex).unwrap();
        let neg_y = sub(&p, &big_of_be(&k.point[1 + half..]));
        let mut flipped = k.point[..1 + half].to_vec();
        let mut y_be: Vec<u8> = neg_y.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
        y_be.drain(..y_be.len() - half);
        flipped.extend(y_be);
        assert!(on_curve(k.curve, &flipped), "{}", k.curve.ssh_name());
    }
    // x = p (not below the prime) and the point at (0, 0).
    let (p_hex, _) = Curve::P256.p_and_b();
    let mut at_p = vec![4u8];
    at_p.extend((0..64).step_by(2).map(|i| u8::from_str_radix(&p_hex[i..i + 2], 16).unwrap()));
    at_p.extend([0u8; 32]);
    assert!(!on_curve(Curve::P256, &at_p));
    assert!(!on_curve(Curve::P256, &[[4u8].as_slice(), &[0u8; 64]].concat()));
    // Small arithmetic checks: 7·9 mod 10, (5 + 8) mod 10, a carry across limbs.
    assert_eq!(mul_mod(&[7], &[9], &[10]), vec![3]);
    assert_eq!(add_mod(&[5], &[8], &[10]), vec![3]);
    assert_eq!(mul_mod(&[u32::MAX], &[u32::MAX], &[0, 0, 1]), vec![1, u32::MAX - 1]);
}

/// The whole `openssh-key-v1` text around a private section, with `tail` after it.
fn armour(public: &NodePublicKey, private: &[u8], tail: &[u8]) -> String {
    let mut all = MAGIC.to_vec();
    put_string(&mut all, b"none");
    put_string(&mut all, b"none");
    put_string(&mut all, b"");
    put_u32(&mut all, 1);
    put_string(&mut all, &public.blob());
    put_string(&mut all, private);
    all.extend_from_slice(tail);
    format!("{ARMOR_BEGIN}\n{}\n{ARMOR_END}\n", base64::engine::general_purpose::STANDARD.encode(&all))
}

/// By hand, not in `cargo test`: `FI_NODEKEY_OUT=/tmp/k cargo test --lib nodekey::tests::dump
/// -- --ignored`, then `python3 -c "…load_ssh_private_key(open('/tmp/k','rb').read(), None)"`
/// (Flower's reader) and `ssh-keygen -y -f /tmp/k` must accept the file.
#[test]
#[ignore]
fn dump_a_generated_key_for_cryptography() {
    let path = std::env::var_os("FI_NODEKEY_OUT").expect("FI_NODEKEY_OUT=path");
    let (k, created) = NodeKey::load_or_create(Path::new(&path), "flower-supernode-dump").unwrap();
    assert!(created);
    std::fs::write(format!("{}.pub", path.to_string_lossy()), k.public().to_openssh("flower-supernode-dump") + "\n").unwrap();
    std::fs::write(format!("{}.spki", path.to_string_lossy()), k.public().spki_pem()).unwrap();
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

proptest::proptest! {
    /// Any change to a key's bytes (one byte set, or the text cut short) is refused with a
    /// short rule or, if it still is a valid key, read as one; it never panics, and no error
    /// quotes 16 characters of the key.
    #[test]
    fn altered_keys_never_panic_or_quote_the_key(at in 0usize..400, byte in 0u8..=255, cut in 0usize..600) {
        let blob = base64::engine::general_purpose::STANDARD.decode(K256_PUB.split(' ').nth(1).unwrap()).unwrap();
        let mut changed = blob.clone();
        let i = at % changed.len();
        changed[i] = byte;
        let line = format!("ecdsa-sha2-nistp256 {}", base64::engine::general_purpose::STANDARD.encode(&changed));
        match NodePublicKey::parse_openssh(&line) {
            Ok(k) => proptest::prop_assert!(changed == blob || on_curve(k.curve, &k.point)),
            Err(e) => {
                let e = e.to_string();
                proptest::prop_assert!(e.len() < 200, "{}", e);
                let b64 = line.split(' ').nth(1).unwrap();
                proptest::prop_assert!(!(0..b64.len().saturating_sub(16)).any(|s| e.contains(&b64[s..s + 16])), "{}", e);
            }
        }
        let body: String = K256.lines().filter(|l| !l.starts_with("-----")).collect();
        let mut raw = base64::engine::general_purpose::STANDARD.decode(&body).unwrap();
        let j = at % raw.len();
        let original = raw[j];
        raw[j] = byte;
        let whole = raw.len();
        raw.truncate(cut.max(1));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        match NodeKey::from_openssh(&format!("{ARMOR_BEGIN}\n{b64}\n{ARMOR_END}\n")) {
            // Still a key: the byte was put back as it was, or fell in the check values or the
            // comment, and nothing was cut.
            Ok(k) => proptest::prop_assert!(raw.len() == whole && (original == byte || k.public() == NodeKey::from_openssh(K256).unwrap().public())),
            Err(e) => {
                let e = e.to_string();
                proptest::prop_assert!(e.len() < 200, "{}", e);
                proptest::prop_assert!(!(0..b64.len().saturating_sub(16)).any(|s| e.contains(&b64[s..s + 16])), "{}", e);
            }
        }
    }
}
