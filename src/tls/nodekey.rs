//! The SuperNode's authentication key (issue #19, docs/node-auth.md), in the formats Flower
//! 1.42 uses: the private key as an unencrypted **OpenSSH** EC key (what
//! `load_ssh_private_key` reads for `--auth-supernode-private-key`), the public key as an
//! OpenSSH line (`ecdsa-sha2-nistp256 AAAA… comment`, what `flwr supernode register` reads
//! and the SuperNode publishes as FL_NODE_PUBKEY) and as PEM SubjectPublicKeyInfo (what the
//! Control API's RegisterNode takes). Keys are P-256, made with rcgen's ring backend; public
//! keys on P-384 and P-521 are read too (Flower accepts any NIST curve).
//!
//! Checks: a public key's type word, blob type and curve name agree and its point lies on its
//! curve; a private key file is unencrypted, one key, its two public copies equal, its scalar a
//! canonical mpint that ring derives the public point from (P-256, P-384; ring has no P-521,
//! whose private keys get the format's checks only), its padding and length OpenSSH's.
//!
//! Formats: OpenSSH's PROTOCOL.key (`openssh-key-v1`) and RFC 5656 section 3.1 (the
//! `ecdsa-sha2-*` public key blob); the private scalar comes from rcgen's PKCS#8 (RFC 5208)
//! document, whose `ECPrivateKey` (RFC 5915) holds it.

use crate::error::{Error, Result};
use crate::secret::Secret;
use base64::Engine;
use std::fmt;
use std::path::Path;

/// A public key line longer than this is refused before it is decoded.
const MAX_LINE: usize = 1024;
const ARMOR_BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const ARMOR_END: &str = "-----END OPENSSH PRIVATE KEY-----";
const MAGIC: &[u8] = b"openssh-key-v1\0";

/// A NIST curve of an ECDSA key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// The curve's name in OpenSSH blobs.
    pub fn ssh_name(self) -> &'static str {
        match self {
            Curve::P256 => "nistp256",
            Curve::P384 => "nistp384",
            Curve::P521 => "nistp521",
        }
    }

    /// The key type word: `ecdsa-sha2-nistp256`.
    pub fn key_type(self) -> &'static str {
        match self {
            Curve::P256 => "ecdsa-sha2-nistp256",
            Curve::P384 => "ecdsa-sha2-nistp384",
            Curve::P521 => "ecdsa-sha2-nistp521",
        }
    }

    /// Bytes of an uncompressed point (0x04 ‖ X ‖ Y).
    fn point_len(self) -> usize {
        match self {
            Curve::P256 => 65,
            Curve::P384 => 97,
            Curve::P521 => 133,
        }
    }

    /// The field prime p and the coefficient b of y² = x³ − 3x + b (FIPS 186-4 D.1.2), big-endian hex.
    fn p_and_b(self) -> (&'static str, &'static str) {
        match self {
            Curve::P256 => (
                "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
                "5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b",
            ),
            Curve::P384 => (
                "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff",
                "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef",
            ),
            Curve::P521 => (
                "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                "0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00",
            ),
        }
    }

    /// The curve's OID, DER-encoded (tag and length included).
    fn oid_der(self) -> &'static [u8] {
        match self {
            Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            Curve::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        }
    }

    /// The AlgorithmIdentifier of an EC key on this curve (RFC 5480): SEQUENCE {
    /// id-ecPublicKey, the curve's OID }.
    fn algorithm_der(self) -> Vec<u8> {
        let ec_public_key: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
        der(0x30, &[ec_public_key, self.oid_der()].concat())
    }

    fn from_key_type(t: &str) -> Option<Curve> {
        [Curve::P256, Curve::P384, Curve::P521].into_iter().find(|c| c.key_type() == t)
    }
}

/// Why a key was refused: the rule broken (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(msg: impl Into<String>) -> KeyError {
    KeyError(msg.into())
}

/// A SuperNode's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePublicKey {
    curve: Curve,
    point: Vec<u8>,
}

impl NodePublicKey {
    /// One OpenSSH public key line: `<type> <base64 blob> [comment]`, an ECDSA key on a NIST
    /// curve whose blob says the same type and curve and holds an uncompressed point.
    pub fn parse_openssh(line: &str) -> std::result::Result<NodePublicKey, KeyError> {
        let line = line.trim();
        if line.len() > MAX_LINE {
            return Err(bad(format!("is {} bytes long; an OpenSSH ECDSA public key line is under {MAX_LINE}", line.len())));
        }
        let mut words = line.split_whitespace();
        let (kind, b64) = match (words.next(), words.next()) {
            (Some(kind), Some(b64)) => (kind, b64),
            // The blob alone (how OneGate's FL_NODE_PUBKEY carries it: a line's spaces would
            // make the publisher base64 the whole value): the blob names its own type.
            (Some(b64), None) if b64.starts_with("AAAA") => ("", b64),
            _ => return Err(bad("is not an OpenSSH public key line (`ecdsa-sha2-nistp256 AAAA… comment`)")),
        };
        let decode = |b64: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| bad(format!("its key is not base64 ({e}): was it cut when copied?")))
        };
        if kind.is_empty() {
            let blob = decode(b64)?;
            let mut r = Reader::new(&blob);
            let k = parse_public_blob(&mut r).map_err(|e| bad(format!("its key blob is malformed: {e}")))?;
            if !r.is_empty() {
                return Err(bad("its key blob has bytes after the key: was it altered?"));
            }
            return Ok(k);
        }
        let Some(curve) = Curve::from_key_type(kind) else {
            let shown: String = kind.chars().take(24).collect();
            return Err(bad(format!(
                "is a {shown:?} key: Flower needs an ECDSA key on a NIST curve (ecdsa-sha2-nistp256, -nistp384 or -nistp521)"
            )));
        };
        let blob = decode(b64)?;
        let mut r = Reader::new(&blob);
        let k = parse_public_blob(&mut r).map_err(|e| bad(format!("its key blob is malformed: {e}")))?;
        if !r.is_empty() {
            return Err(bad("its key blob has bytes after the key: was it altered?"));
        }
        if k.curve != curve {
            return Err(bad(format!("says {kind} but its key blob is a {} key", k.curve.key_type())));
        }
        Ok(k)
    }

    pub fn curve(&self) -> Curve {
        self.curve
    }

    /// The OpenSSH wire blob (RFC 5656 3.1).
    fn blob(&self) -> Vec<u8> {
        let mut b = Vec::new();
        put_string(&mut b, self.curve.key_type().as_bytes());
        put_string(&mut b, self.curve.ssh_name().as_bytes());
        put_string(&mut b, &self.point);
        b
    }

    /// One line, `ecdsa-sha2-nistp256 AAAA… comment`; the comment loses whitespace and control
    /// characters (one word, as a line needs).
    pub fn to_openssh(&self, comment: &str) -> String {
        let c: String = comment.chars().filter(|c| !c.is_whitespace() && !c.is_control() && *c != ',').collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.blob());
        if c.is_empty() { format!("{} {b64}", self.curve.key_type()) } else { format!("{} {b64} {c}", self.curve.key_type()) }
    }

    /// DER SubjectPublicKeyInfo (RFC 5480): id-ecPublicKey, the curve, the point.
    pub fn spki_der(&self) -> Vec<u8> {
        der(0x30, &[self.curve.algorithm_der(), self.point_bit_string()].concat())
    }

    /// The point as a DER BIT STRING (no unused bits), as SPKI and ECPrivateKey hold it.
    fn point_bit_string(&self) -> Vec<u8> {
        der(0x03, &[&[0u8][..], &self.point].concat())
    }

    /// PEM SubjectPublicKeyInfo, 64 columns: what Flower's RegisterNode takes and ListNodes
    /// returns (`public_key_to_bytes`).
    pub fn spki_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.spki_der());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// The OpenSSH blob in base64 (a public line's second word): what FL_NODE_PUBKEY holds.
    pub fn to_openssh_blob(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.blob())
    }

    /// `SHA256:…` as `ssh-keygen -l` prints it: base64 without padding of the blob's SHA-256.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(crate::config::sha256(&self.blob())))
    }
}

/// A SuperNode's key pair: the private key as OpenSSH text (a [`Secret`]), the public key.
pub struct NodeKey {
    private_openssh: Secret,
    public: NodePublicKey,
}

impl fmt::Debug for NodeKey {
    /// The fingerprint only: the private key never prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", self.public.fingerprint())
    }
}

impl NodeKey {
    /// A new P-256 key pair.
    pub fn generate(comment: &str) -> Result<NodeKey> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| Error::msg("make a SuperNode key", e.to_string()))?;
        let point = kp.public_key_raw().to_vec();
        let d = private_scalar_of_pkcs8(&kp.serialize_der()).ok_or_else(|| Error::msg("make a SuperNode key", "rcgen's PKCS#8 key holds no EC private key"))?;
        let public = NodePublicKey { curve: Curve::P256, point };
        let check = random_u32().map_err(|e| Error::msg("make a SuperNode key", format!("read /dev/urandom: {e}")))?;
        let text = encode_private(&public, &d, check, comment);
        // The reader's checks (scalar against point included) on what was just written.
        let back = decode_private(&text).map_err(|e| Error::msg("make a SuperNode key", format!("the key made {e}")))?;
        if back != public {
            return Err(Error::msg("make a SuperNode key", "the key made reads back as another key"));
        }
        Ok(NodeKey { private_openssh: Secret::new(text), public })
    }

    /// Read an OpenSSH private key (unencrypted, ECDSA on a NIST curve). The error says the
    /// rule broken, never a byte of the key.
    pub fn from_openssh(text: &str) -> std::result::Result<NodeKey, KeyError> {
        let public = decode_private(text)?;
        Ok(NodeKey { private_openssh: Secret::new(text.to_string()), public })
    }

    /// The key at `path` when there is one, else a new one written there (mode 0600,
    /// atomically, synced); `true` when it was made now.
    pub fn load_or_create(path: &Path, comment: &str) -> Result<(NodeKey, bool)> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let k = NodeKey::from_openssh(&text).map_err(|e| Error::msg(format!("read the SuperNode key {}", path.display()), e.to_string()))?;
                Ok((k, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = NodeKey::generate(comment)?;
                crate::fsutil::write_atomic(path, k.private_openssh.expose().as_bytes(), 0o600, None)
                    .map_err(|e| Error::msg(format!("write the SuperNode key {}", path.display()), e.to_string()))?;
                Ok((k, true))
            }
            Err(e) => Err(Error::msg(format!("read the SuperNode key {}", path.display()), e.to_string())),
        }
    }

    pub fn public(&self) -> &NodePublicKey {
        &self.public
    }

    pub fn private_openssh(&self) -> &Secret {
        &self.private_openssh
    }
}

// ---- OpenSSH wire format ------------------------------------------------------------------

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put_string(b: &mut Vec<u8>, s: &[u8]) {
    put_u32(b, s.len() as u32);
    b.extend_from_slice(s);
}

/// An SSH `mpint` of a positive big-endian number: no superfluous leading zeros, one zero
/// when the high bit is set.
fn put_mpint(b: &mut Vec<u8>, n: &[u8]) {
    let n = &n[n.iter().position(|x| *x != 0).unwrap_or(n.len())..];
    if n.first().is_some_and(|x| x & 0x80 != 0) {
        put_u32(b, n.len() as u32 + 1);
        b.push(0);
    } else {
        put_u32(b, n.len() as u32);
    }
    b.extend_from_slice(n);
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b }
    }

    fn is_empty(&self) -> bool {
        self.b.is_empty()
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.b.len() < n {
            return Err("truncated".into());
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn string(&mut self) -> std::result::Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// `string keytype, string curve, string Q` with the three agreeing and Q uncompressed.
fn parse_public_blob(r: &mut Reader<'_>) -> std::result::Result<NodePublicKey, String> {
    let kind = std::str::from_utf8(r.string()?).map_err(|_| "its key type is not text".to_string())?;
    let curve = Curve::from_key_type(kind).ok_or_else(|| "not an ECDSA key on a NIST curve".to_string())?;
    let name = r.string()?;
    if name != curve.ssh_name().as_bytes() {
        return Err(format!("its curve name does not match {}", curve.key_type()));
    }
    let point = r.string()?;
    if point.len() != curve.point_len() || point[0] != 0x04 {
        return Err(format!("its point is not an uncompressed {} point", curve.ssh_name()));
    }
    if !on_curve(curve, point) {
        return Err(format!("its point is not on the curve {}", curve.ssh_name()));
    }
    Ok(NodePublicKey { curve, point: point.to_vec() })
}

/// The `openssh-key-v1` text of a key pair (PROTOCOL.key): no cipher, no KDF, one key,
/// `check` twice, the comment, padding 1, 2, 3… to a multiple of 8; base64 in 70 columns.
fn encode_private(public: &NodePublicKey, d: &[u8], check: u32, comment: &str) -> String {
    let mut private = Vec::new();
    put_u32(&mut private, check);
    put_u32(&mut private, check);
    put_string(&mut private, public.curve.key_type().as_bytes());
    put_string(&mut private, public.curve.ssh_name().as_bytes());
    put_string(&mut private, &public.point);
    put_mpint(&mut private, d);
    put_string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut all = MAGIC.to_vec();
    put_string(&mut all, b"none");
    put_string(&mut all, b"none");
    put_string(&mut all, b"");
    put_u32(&mut all, 1);
    put_string(&mut all, &public.blob());
    put_string(&mut all, &private);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&all);
    let mut text = format!("{ARMOR_BEGIN}\n");
    for chunk in b64.as_bytes().chunks(70) {
        text.push_str(&String::from_utf8_lossy(chunk));
        text.push('\n');
    }
    text.push_str(ARMOR_END);
    text.push('\n');
    text
}

/// Read an `openssh-key-v1` text back: the public key, after checking every field the
/// format fixes (an encrypted key, another key type, a mismatch between the public and the
/// private part, or a corrupt private section are refused).
fn decode_private(text: &str) -> std::result::Result<NodePublicKey, KeyError> {
    let t = text.trim();
    let body = t
        .strip_prefix(ARMOR_BEGIN)
        .and_then(|r| r.strip_suffix(ARMOR_END))
        .ok_or_else(|| bad("is not an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----)"))?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()).map_err(|_| bad("is not base64 inside its armour"))?;
    let wrap = |e: String| bad(format!("is malformed: {e}"));
    let mut r = Reader::new(&raw);
    if r.take(MAGIC.len()).map_err(wrap)? != MAGIC {
        return Err(bad("is not an openssh-key-v1 key"));
    }
    let cipher = r.string().map_err(wrap)?;
    let kdf = r.string().map_err(wrap)?;
    let _kdf_options = r.string().map_err(wrap)?;
    if cipher != b"none" || kdf != b"none" {
        return Err(bad("is encrypted: Flower reads it without a passphrase"));
    }
    if r.u32().map_err(wrap)? != 1 {
        return Err(bad("holds more than one key"));
    }
    let mut pubr = Reader::new(r.string().map_err(wrap)?);
    let public = parse_public_blob(&mut pubr).map_err(wrap)?;
    let section = r.string().map_err(wrap)?;
    if section.len() % 8 != 0 {
        // OpenSSH pads it to the cipher's block size, 8 for "none", and refuses it otherwise.
        return Err(bad("has a private section whose length is not a multiple of 8"));
    }
    let mut p = Reader::new(section);
    let (c1, c2) = (p.u32().map_err(wrap)?, p.u32().map_err(wrap)?);
    if c1 != c2 {
        return Err(bad("has a corrupt private section (check values differ)"));
    }
    let private_public = parse_public_blob(&mut p).map_err(wrap)?;
    if private_public != public {
        return Err(bad("has a private part that does not match its public key"));
    }
    let d = p.string().map_err(wrap)?;
    let scalar = scalar_of_mpint(d, public.curve).ok_or_else(|| bad("has a private scalar that is not a canonical mpint of the curve's size"))?;
    let _comment = p.string().map_err(wrap)?;
    if p.b.len() >= 8 || p.b.iter().enumerate().any(|(i, b)| *b as usize != i + 1) {
        return Err(bad("has corrupt padding after its private section (1, 2, 3… up to a multiple of 8)"));
    }
    if !r.is_empty() {
        return Err(bad("has bytes after its private section"));
    }
    if !scalar_matches(&scalar, &public) {
        return Err(bad("has a private scalar that is not the private key of its public key"));
    }
    Ok(public)
}

/// The private scalar of an SSH `mpint`, left-padded to the curve's scalar size: a positive
/// number without superfluous leading zeros (one zero only before a set high bit), no wider
/// than the curve's scalar (32, 48, 66 bytes); ring refuses it if not below the order.
fn scalar_of_mpint(m: &[u8], curve: Curve) -> Option<Vec<u8>> {
    let size = curve.point_len() / 2;
    let digits = match m {
        [] => return None,
        [0, rest @ ..] => {
            // A zero is needed exactly when the next byte has its high bit set.
            if rest.first().is_none_or(|b| b & 0x80 == 0) {
                return None;
            }
            rest
        }
        [first, ..] if first & 0x80 != 0 => return None, // a negative number
        _ => m,
    };
    if digits.len() > size {
        return None;
    }
    let mut scalar = vec![0u8; size - digits.len()];
    scalar.extend_from_slice(digits);
    Some(scalar)
}

/// Whether `d` is the private key of `public`: ring derives the public point from a PKCS#8
/// document holding both (RFC 5915 ECPrivateKey) and refuses it when they differ; the point
/// it keeps is compared once more. ring has no P-521; such keys get the format's checks only.
fn scalar_matches(d: &[u8], public: &NodePublicKey) -> bool {
    let alg = match public.curve {
        Curve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        Curve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        Curve::P521 => return true,
    };
    let der = pkcs8_of(d, public);
    let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_slice());
    rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, alg).is_ok_and(|kp| kp.public_key_raw() == public.point.as_slice())
}

/// PKCS#8 PrivateKeyInfo of an EC key: SEQUENCE { 0, SEQUENCE { id-ecPublicKey, curve },
/// OCTET STRING { ECPrivateKey SEQUENCE { 1, OCTET STRING d, [1] BIT STRING Q } } }.
fn pkcs8_of(d: &[u8], public: &NodePublicKey) -> Vec<u8> {
    let ec = der(0x30, &[der(0x02, &[1]), der(0x04, d), der(0xa1, &public.point_bit_string())].concat());
    der(0x30, &[der(0x02, &[0]), public.curve.algorithm_der(), der(0x04, &ec)].concat())
}

// ---- Is a point on its curve? ----------------------------------------------------------------
//
// Public values only, so plain (not constant-time) arithmetic on little-endian u32 limbs.

/// Whether the uncompressed `point` (0x04 ‖ X ‖ Y) has X, Y < p and y² = x³ − 3x + b mod p:
/// what Flower's `cryptography` checks when it reads the key, so a bad key is refused here
/// with the rule rather than by RegisterNode.
fn on_curve(curve: Curve, point: &[u8]) -> bool {
    let (p_hex, b_hex) = curve.p_and_b();
    let (Some(p), Some(b)) = (big_of_hex(p_hex), big_of_hex(b_hex)) else {
        return false;
    };
    let half = (point.len() - 1) / 2;
    let (x, y) = (big_of_be(&point[1..1 + half]), big_of_be(&point[1 + half..]));
    if cmp(&x, &p) != std::cmp::Ordering::Less || cmp(&y, &p) != std::cmp::Ordering::Less {
        return false;
    }
    let lhs = mul_mod(&y, &y, &p);
    let x3 = mul_mod(&mul_mod(&x, &x, &p), &x, &p);
    let three_x = mul_mod(&x, &[3], &p);
    // x³ − 3x + b = x³ + (p − 3x) + b, each term below p.
    let rhs = add_mod(&add_mod(&x3, &sub(&p, &three_x), &p), &b, &p);
    cmp(&lhs, &rhs) == std::cmp::Ordering::Equal
}

fn big_of_be(bytes: &[u8]) -> Vec<u32> {
    let mut v: Vec<u32> = bytes.rchunks(4).map(|c| c.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b))).collect();
    trim(&mut v);
    v
}

fn big_of_hex(hex: &str) -> Option<Vec<u32>> {
    let bytes: Option<Vec<u8>> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
    Some(big_of_be(&bytes?))
}

fn trim(v: &mut Vec<u32>) {
    while v.last() == Some(&0) {
        v.pop();
    }
}

fn cmp(a: &[u32], b: &[u32]) -> std::cmp::Ordering {
    let (la, lb) = (a.iter().rposition(|x| *x != 0).map_or(0, |i| i + 1), b.iter().rposition(|x| *x != 0).map_or(0, |i| i + 1));
    la.cmp(&lb).then_with(|| a[..la].iter().rev().cmp(b[..lb].iter().rev()))
}

/// a − b for a ≥ b.
fn sub(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len());
    let mut borrow = 0i64;
    for (i, x) in a.iter().enumerate() {
        let d = i64::from(*x) - i64::from(b.get(i).copied().unwrap_or(0)) - borrow;
        borrow = i64::from(d < 0);
        out.push((d + (borrow << 32)) as u32);
    }
    trim(&mut out);
    out
}

/// (a + b) mod m for a, b < m.
fn add_mod(a: &[u32], b: &[u32], m: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let mut carry = 0u64;
    for i in 0..a.len().max(b.len()) {
        let s = u64::from(a.get(i).copied().unwrap_or(0)) + u64::from(b.get(i).copied().unwrap_or(0)) + carry;
        out.push(s as u32);
        carry = s >> 32;
    }
    out.push(carry as u32);
    trim(&mut out);
    if cmp(&out, m) != std::cmp::Ordering::Less { sub(&out, m) } else { out }
}

/// (a · b) mod m: the schoolbook product, then reduced bit by bit from the top.
fn mul_mod(a: &[u32], b: &[u32], m: &[u32]) -> Vec<u32> {
    let mut prod = vec![0u32; a.len() + b.len()];
    for (i, x) in a.iter().enumerate() {
        let mut carry = 0u64;
        for (j, y) in b.iter().enumerate() {
            let t = u64::from(prod[i + j]) + u64::from(*x) * u64::from(*y) + carry;
            prod[i + j] = t as u32;
            carry = t >> 32;
        }
        prod[i + b.len()] = carry as u32;
    }
    let mut r: Vec<u32> = Vec::new();
    for bit in (0..prod.len() * 32).rev() {
        // r = 2r + bit, then below m again (r < m before, so one subtraction is enough).
        let mut carry = (prod[bit / 32] >> (bit % 32)) & 1;
        for limb in r.iter_mut() {
            let next = *limb >> 31;
            *limb = (*limb << 1) | carry;
            carry = next;
        }
        if carry != 0 {
            r.push(carry);
        }
        if cmp(&r, m) != std::cmp::Ordering::Less {
            r = sub(&r, m);
        }
    }
    r
}

// ---- DER, for PKCS#8 and SubjectPublicKeyInfo -----------------------------------------------

/// One DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else {
        let bytes: Vec<u8> = n.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        v.push(0x80 | bytes.len() as u8);
        v.extend(bytes);
    }
    v.extend_from_slice(content);
    v
}

/// The next TLV of `b`: (tag, content, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = if l0 < 0x80 {
        (l0 as usize, rest)
    } else {
        let k = (l0 & 0x7f) as usize;
        if k == 0 || k > 4 || rest.len() < k {
            return None;
        }
        (rest[..k].iter().fold(0usize, |a, b| (a << 8) | *b as usize), &rest[k..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The EC private scalar of a PKCS#8 PrivateKeyInfo: SEQUENCE { version, algorithm,
/// OCTET STRING { ECPrivateKey SEQUENCE { version, OCTET STRING d, … } } }.
fn private_scalar_of_pkcs8(pkcs8: &[u8]) -> Option<Vec<u8>> {
    let (0x30, info, _) = tlv(pkcs8)? else { return None };
    let (0x02, _, rest) = tlv(info)? else { return None };
    let (0x30, _, rest) = tlv(rest)? else { return None };
    let (0x04, ec, _) = tlv(rest)? else { return None };
    let (0x30, ec, _) = tlv(ec)? else { return None };
    let (0x02, _, rest) = tlv(ec)? else { return None };
    let (0x04, d, _) = tlv(rest)? else { return None };
    Some(d.to_vec())
}

/// Four random bytes: the private section's check value.
fn random_u32() -> std::io::Result<u32> {
    use std::io::Read;
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

#[cfg(test)]
mod tests;
