//! The operator's certificates as the context gives them: FL_SSL_CA_CERTFILE, FL_SSL_CERTFILE,
//! FL_SSL_KEYFILE, each base64 PEM, PEM, or the name of a FILES_DS file on the context CD.
//! Resolved to PEM text here; `tls` validates what they are.

use crate::secret::Secret;
use base64::Engine;
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

/// One FL_SSL_* value as PEM text: PEM itself, base64-encoded PEM (which always starts
/// `LS0tLS`, the encoding of `-----`), or the name of a FILES_DS file in the root of the
/// context CD. The error is the rule broken (the caller names the variable); a value is quoted
/// only when it is short enough to be a file name and `secret` is false: never the key's value
/// (a raw 64-character base64 key is short enough to look like a file name).
pub fn operator_value(value: &str, context_dir: &Path, secret: bool) -> Result<Secret, String> {
    let fail = |reason: String| reason;
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
    let shown = if secret {
        "the value".to_string()
    } else if v.len() <= 100 {
        format!("{v:?}")
    } else {
        format!("a value of {} characters", v.len())
    };
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
            _ if secret => Err(fail("the file it names on the context CD is not PEM text".into())),
            _ => Err(fail(format!("file {shown} on the context CD is not PEM text"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(fail(format!(
            "{shown} is neither base64-encoded PEM nor the name of a file on the context CD (no such file in {}; \
             FILES_DS files are named after their image's NAME)",
            context_dir.display()
        ))),
        Err(source) => Err(format!("read {}: {source}", path.display())),
    }
}

/// Base64 (padding optional, whitespace ignored) that decodes to PEM text, else `None`.
pub fn decode_base64_pem(v: &str) -> Option<String> {
    let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let text = String::from_utf8(engine.decode(compact).ok()?).ok()?;
    text.trim_start().starts_with("-----BEGIN").then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn values_resolve_from_base64_files_or_pem() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("superlink cert"), PEM).unwrap();
        std::fs::write(ctx.path().join("notes.txt"), "hello").unwrap();
        // base64 (with line breaks, without padding), a FILES_DS file name (spaces allowed), raw PEM.
        let wrapped: String = b64(PEM).trim_end_matches('=').as_bytes().chunks(76).map(|c| String::from_utf8_lossy(c) + "\n").collect();
        let ok = |v: &str| operator_value(v, ctx.path(), false).unwrap().expose().to_string();
        assert_eq!(ok(&wrapped), PEM);
        assert_eq!(ok("superlink cert"), PEM);
        assert_eq!(ok(PEM), PEM.trim());
        let r = |v: &str| operator_value(v, ctx.path(), false).unwrap_err();
        let e = r("server.pem");
        assert!(e.starts_with("\"server.pem\" is neither base64-encoded PEM nor the name of a file on the context CD"), "{e}");
        assert!(r("notes.txt").contains("\"notes.txt\" on the context CD is not PEM"));
        assert!(r("/etc/ssl/ca.pem").contains("not a path"));
        assert!(r("LS0tLS1CRUdJTiBD!!").contains("does not decode"));
        // A long value that is neither (say, base64 of a DER key) is never echoed.
        let e = r(&b64(&"k".repeat(150)));
        assert!(e.starts_with("a value of 200 characters is neither") && !e.contains("aaa"), "{e}");
        // The key's value is never quoted, however short (a raw base64 key, issue #14).
        let raw_key = b64(&"k".repeat(48));
        for e in [operator_value(&raw_key, ctx.path(), true).unwrap_err(), operator_value("key.pem", ctx.path(), true).unwrap_err()] {
            assert!(e.starts_with("the value is neither") && !e.contains(&raw_key[..16]) && !e.contains("key.pem"), "{e}");
        }
        std::fs::write(ctx.path().join("raw.key"), "not pem").unwrap();
        let e = operator_value("raw.key", ctx.path(), true).unwrap_err();
        assert!(e.contains("the file it names") && !e.contains("raw.key"), "{e}");
    }
}
