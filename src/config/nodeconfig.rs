//! FL_NODE_CONFIG: Flower's `--node-config` syntax, validated here so a typo is a boot-time
//! problem with the variable's name rather than a SuperNode that exits.
//!
//! Flower 1.42 (`flwr/common/config.py` `parse_config_args`) finds `(\S+?)=('[^']*'|"[^"]*"|\S+)`
//! pairs and parses `key = value` as TOML; values must be TOML booleans, integers, floats or
//! strings (`flatten_dict` refuses arrays, tables and dates). Flower silently skips text that
//! is not a pair; we refuse it. Dotted keys (`a.b=1`) are TOML dotted keys, as in Flower.

use std::fmt;

/// A value as Flower types it.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// `key=value` pairs in the order given.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeConfig(pub Vec<(String, NodeValue)>);

impl NodeConfig {
    /// Parse FL_NODE_CONFIG; the error says which pair is wrong and why.
    pub fn parse(s: &str) -> Result<NodeConfig, String> {
        let mut out: Vec<(String, NodeValue)> = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_whitespace() {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= b.len() || b[i] != b'=' {
                return Err(format!("{:?} is not key=value", &s[start..i]));
            }
            let key = &s[start..i];
            i += 1;
            let vstart = i;
            match b.get(i) {
                Some(&q @ (b'\'' | b'"')) => {
                    i += 1;
                    while i < b.len() && b[i] != q {
                        i += 1;
                    }
                    if i >= b.len() {
                        return Err(format!("the value of {key:?} has an unclosed {}", q as char));
                    }
                    i += 1;
                    if i < b.len() && !b[i].is_ascii_whitespace() {
                        return Err(format!("unexpected text after the quoted value of {key:?}"));
                    }
                }
                _ => {
                    while i < b.len() && !b[i].is_ascii_whitespace() {
                        i += 1;
                    }
                }
            }
            let raw = &s[vstart..i];
            check_key(key)?;
            let value = parse_value(raw).map_err(|why| format!("{key}={raw}: {why}"))?;
            for (k, _) in &out {
                if k == key {
                    return Err(format!("{key:?} is given twice"));
                }
                if k.starts_with(&format!("{key}.")) || key.starts_with(&format!("{k}.")) {
                    return Err(format!("{k:?} and {key:?} conflict (a key cannot be both a value and a table)"));
                }
            }
            out.push((key.to_string(), value));
        }
        if out.is_empty() {
            return Err("has no key=value pair".into());
        }
        Ok(NodeConfig(out))
    }

    /// The `--node-config` argument Flower parses back into these values.
    pub fn to_arg(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }

    pub fn get(&self, key: &str) -> Option<&NodeValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl fmt::Display for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_arg())
    }
}

/// TOML bare keys (`[A-Za-z0-9_-]+`), possibly dotted.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a pair has an empty key".into());
    }
    let ok =
        key.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    if ok { Ok(()) } else { Err(format!("key {key:?} must be letters, digits, '-' and '_' (dots separate tables)")) }
}

/// Digits with single underscores between digits (TOML).
fn digits(s: &str, radix: u32) -> Option<String> {
    if s.is_empty() || s.starts_with('_') || s.ends_with('_') || s.contains("__") {
        return None;
    }
    let clean: String = s.chars().filter(|&c| c != '_').collect();
    clean.chars().all(|c| c.is_digit(radix)).then_some(clean)
}

/// A TOML boolean, integer, float or string, as Flower accepts them.
fn parse_value(raw: &str) -> Result<NodeValue, String> {
    const HINT: &str = "values are TOML: true/false, 1, 0.5, or a quoted \"string\"";
    match raw {
        "true" => return Ok(NodeValue::Bool(true)),
        "false" => return Ok(NodeValue::Bool(false)),
        "" => return Err(format!("empty value ({HINT})")),
        _ => {}
    }
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).filter(|_| raw.len() >= 2) {
        return basic_string(inner).map(NodeValue::Str);
    }
    if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')).filter(|_| raw.len() >= 2) {
        if inner.chars().any(|c| c.is_control() && c != '\t') {
            return Err("control characters are not allowed in a string".into());
        }
        return Ok(NodeValue::Str(inner.to_string()));
    }
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(d) = raw.strip_prefix(prefix) {
            return digits(d, radix)
                .and_then(|d| i64::from_str_radix(&d, radix).ok())
                .map(NodeValue::Int)
                .ok_or_else(|| format!("not a valid integer ({HINT})"));
        }
    }
    let (sign, body) = match raw.strip_prefix(['+', '-']) {
        Some(b) => (&raw[..1], b),
        None => ("", raw),
    };
    if body == "inf" || body == "nan" {
        let x = if body == "inf" { f64::INFINITY } else { f64::NAN };
        return Ok(NodeValue::Float(if sign == "-" { -x } else { x }));
    }
    // Integer part, then an optional fraction and exponent.
    let split = body.find(['.', 'e', 'E']).unwrap_or(body.len());
    let (int_part, rest) = body.split_at(split);
    let Some(int_digits) = digits(int_part, 10) else {
        return Err(format!("unquoted text ({HINT})"));
    };
    if int_digits.len() > 1 && int_digits.starts_with('0') {
        return Err("leading zeros are not allowed in TOML numbers".into());
    }
    if rest.is_empty() {
        return format!("{sign}{int_digits}").parse().map(NodeValue::Int).map_err(|_| "integer out of range".into());
    }
    let (frac, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut text = format!("{sign}{int_digits}");
    if !frac.is_empty() {
        let f =
            frac.strip_prefix('.').and_then(|f| digits(f, 10)).ok_or_else(|| format!("not a valid number ({HINT})"))?;
        text.push('.');
        text.push_str(&f);
    }
    if let Some(e) = exp {
        let (esign, ed) = match e.strip_prefix(['+', '-']) {
            Some(d) => (&e[..1], d),
            None => ("", e),
        };
        let ed = digits(ed, 10).ok_or_else(|| format!("not a valid number ({HINT})"))?;
        text.push_str(&format!("e{esign}{ed}"));
    }
    text.parse::<f64>().map(NodeValue::Float).map_err(|_| format!("not a valid number ({HINT})"))
}

/// A TOML basic string body (between `"`; Flower's pattern excludes `"` inside).
fn basic_string(inner: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('b') => out.push('\u{8}'),
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some('f') => out.push('\u{c}'),
                Some('r') => out.push('\r'),
                Some('\\') => out.push('\\'),
                Some(u @ ('u' | 'U')) => {
                    let n = if u == 'u' { 4 } else { 8 };
                    let hex: String = chars.by_ref().take(n).collect();
                    let ch = (hex.len() == n)
                        .then(|| u32::from_str_radix(&hex, 16).ok())
                        .flatten()
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("bad \\{u} escape in a string"))?;
                    out.push(ch);
                }
                other => {
                    return Err(format!(
                        "unknown escape \\{} in a string",
                        other.map(String::from).unwrap_or_default()
                    ));
                }
            },
            c if c.is_control() && c != '\t' => return Err("control characters are not allowed in a string".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl fmt::Display for NodeValue {
    /// TOML Flower reads back to the same value: floats always with `.` or an exponent,
    /// strings in `"…"` with `\\`, `\uXXXX` escapes (a string holding `"` uses `'…'`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeValue::Bool(b) => write!(f, "{b}"),
            NodeValue::Int(i) => write!(f, "{i}"),
            NodeValue::Float(x) if x.is_nan() => f.write_str("nan"),
            NodeValue::Float(x) if x.is_infinite() => f.write_str(if *x > 0.0 { "inf" } else { "-inf" }),
            NodeValue::Float(x) => {
                let s = format!("{x:?}"); // Debug keeps ".0" and uses an exponent for extremes
                f.write_str(&s)
            }
            NodeValue::Str(s) if !s.contains('"') => {
                f.write_str("\"")?;
                for c in s.chars() {
                    match c {
                        '\\' => f.write_str("\\\\")?,
                        c if c.is_control() => write!(f, "\\u{:04X}", c as u32)?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
            NodeValue::Str(s) => write!(f, "'{s}'"),
        }
    }
}

impl NodeValue {
    /// Whether [`fmt::Display`] gives text Flower parses back to this value. Flower's pattern
    /// allows no `"` inside `"…"`, so a string with `"` needs the literal form `'…'`, which
    /// cannot hold `'` or control characters other than tab.
    pub fn representable(&self) -> bool {
        match self {
            NodeValue::Str(s) if s.contains('"') => {
                !s.contains('\'') && !s.chars().any(|c| c.is_control() && c != '\t')
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Vec<(String, NodeValue)> {
        NodeConfig::parse(s).unwrap().0
    }

    #[test]
    fn flower_examples() {
        assert_eq!(
            p("partition-id=0 num-partitions=2"),
            vec![("partition-id".into(), NodeValue::Int(0)), ("num-partitions".into(), NodeValue::Int(2))]
        );
        assert_eq!(
            p(r#"key1="value1" lr=0.05 on=true name='site a' big=1_000 h=0xff e=1e-3 neg=-2 path="C:\\x""#),
            vec![
                ("key1".into(), NodeValue::Str("value1".into())),
                ("lr".into(), NodeValue::Float(0.05)),
                ("on".into(), NodeValue::Bool(true)),
                ("name".into(), NodeValue::Str("site a".into())),
                ("big".into(), NodeValue::Int(1000)),
                ("h".into(), NodeValue::Int(255)),
                ("e".into(), NodeValue::Float(0.001)),
                ("neg".into(), NodeValue::Int(-2)),
                ("path".into(), NodeValue::Str("C:\\x".into())),
            ]
        );
        assert_eq!(p("a.b=1 a.c=2").len(), 2);
    }

    #[test]
    fn what_flower_refuses_or_silently_drops_is_an_error() {
        for (bad, why) in [
            ("strategy=fedprox", "unquoted text"),
            ("garbage partition-id=0", "\"garbage\" is not key=value"),
            ("a=1 a=2", "given twice"),
            ("a=1 a.b=2", "conflict"),
            ("x=\"open", "unclosed"),
            ("x=\"a\"b", "unexpected text"),
            ("k=", "empty value"),
            ("=1", "empty key"),
            ("k@=1", "must be letters"),
            ("n=007", "leading zeros"),
            ("d=1979-05-27", "unquoted text"),
            ("l=[1,2]", "unquoted text"),
            ("s=\"bad \\q\"", "unknown escape"),
            ("f=1.", "not a valid number"),
            ("i=99999999999999999999", "out of range"),
            ("", "no key=value"),
        ] {
            let e = NodeConfig::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn renders_floats_and_strings_as_toml() {
        assert_eq!(NodeValue::Float(1.0).to_string(), "1.0");
        assert_eq!(NodeValue::Float(1e-7).to_string(), "1e-7");
        assert_eq!(NodeValue::Str("a\"b".into()).to_string(), "'a\"b'");
        assert_eq!(NodeValue::Str("tab\there".into()).to_string(), "\"tab\\u0009here\"");
        assert!(!NodeValue::Str("a\"b'c".into()).representable());
        let c = NodeConfig(vec![
            ("partition-id".into(), NodeValue::Int(1)),
            ("name".into(), NodeValue::Str("site a".into())),
        ]);
        assert_eq!(c.to_arg(), "partition-id=1 name=\"site a\"");
    }

    fn value() -> impl Strategy<Value = NodeValue> {
        prop_oneof![
            any::<bool>().prop_map(NodeValue::Bool),
            any::<i64>().prop_map(NodeValue::Int),
            any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(NodeValue::Float),
            "[^\u{0}]{0,20}".prop_map(NodeValue::Str),
        ]
    }

    proptest! {
        /// What we render, we (and so Flower's grammar) parse back to the same value.
        #[test]
        fn render_then_parse_round_trips(pairs in proptest::collection::vec(("[a-z][a-z0-9_-]{0,8}", value()), 1..6)) {
            let mut seen = std::collections::BTreeSet::new();
            let pairs: Vec<_> = pairs.into_iter().filter(|(k, v)| seen.insert(k.clone()) && v.representable()).collect();
            prop_assume!(!pairs.is_empty());
            let c = NodeConfig(pairs);
            prop_assert_eq!(NodeConfig::parse(&c.to_arg()).map_err(TestCaseError::fail)?, c);
        }

        #[test]
        fn never_panics(s in "[a-z=\"' .0-9_\\\\eE+-]{0,40}") {
            let _ = NodeConfig::parse(&s);
        }
    }
}
