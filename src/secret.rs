//! Values that must never reach a log: the OneGate token, private keys, passwords.
//!
//! `Secret` prints as `<redacted N bytes>` through `Display`, `Debug` and serde, so a secret
//! that ends up in a log line, an error or the `check` plan shows only that it was present.

use std::fmt;

/// A secret string. Read it with [`Secret::expose`], only where it is used.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself. Call sites are where secrets leave the program (an HTTP header, a file).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("yCxieDUS7kra7Vn9ILA0+g==");
        assert_eq!(format!("{s} {s:?}"), "<redacted 24 bytes> <redacted 24 bytes>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted 24 bytes>\"");
        assert_eq!(s.expose(), "yCxieDUS7kra7Vn9ILA0+g==");
    }
}
