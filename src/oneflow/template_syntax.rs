//! oned's template parser, ported rule by rule (test-only): the flex scanner
//! `src/parsers/template_parser.l` and the bison grammar `src/parsers/template_syntax.y` of
//! OpenNebula (`release-6.10.5`, 57575b4d; unchanged in `release-7.4.0`). Every template text
//! this project writes (the VM templates, the image template `import.sh` writes, what OneFlow
//! sends to oned) goes through it, so a text oned would refuse fails a test.
//!
//! The scanner has two start conditions, `INITIAL` and the exclusive `VALUE` (entered after
//! `=`). In each, flex takes the longest match among the active rules, the first rule on a tie,
//! and copies a character no rule matches to its output (the default rule: it is skipped).

/// An attribute as the grammar builds it: a single value or a vector (`std::map`: sub-names
/// upper-cased, sorted, the first of two equal sub-names kept).
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Single(String),
    Vector(std::collections::BTreeMap<String, String>),
}

/// The scanner's tokens (template_syntax.y `%token`).
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Variable(String),
    Equal,
    EqualEmpty,
    Comma,
    OBracket,
    CBracket,
    Str(String),
    CData,
}

/// `[[:blank:]]`.
fn blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Length of `[[:blank:]]*` at `i`.
fn blanks(b: &[u8], i: usize) -> usize {
    b[i..].iter().take_while(|c| blank(**c)).count()
}

/// Length of `[[:blank:]\n]*` at `i`.
fn blanks_nl(b: &[u8], i: usize) -> usize {
    b[i..].iter().take_while(|c| blank(**c) || **c == b'\n').count()
}

/// The scanner: `template_parser.l` L48-107.
fn scan(text: &str) -> Vec<Tok> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut value = false; // start condition VALUE
    let mut out = Vec::new();
    while i < b.len() {
        // (length, token or None for a skipped match, next start condition)
        let mut best: (usize, Option<Tok>, bool) = (0, None, value);
        let mut offer = |len: usize, tok: Option<Tok>, next: bool| {
            if len > best.0 {
                best = (len, tok, next);
            }
        };
        if !value {
            // [[:blank:]]*#.*\n
            let n = blanks(b, i);
            if b.get(i + n) == Some(&b'#') {
                if let Some(nl) = b[i + n..].iter().position(|c| *c == b'\n') {
                    offer(n + nl + 1, None, false);
                }
            }
            // [[:blank:]\n]+
            offer(blanks_nl(b, i), None, false);
            // [[:alnum:]_]+
            let v = b[i..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
            offer(v, Some(Tok::Variable(text[i..i + v].to_string())), false);
            // [[:blank:]]*=[[:blank:]]*  and  [[:blank:]]*=[[:blank:]]*\n
            if b.get(i + n) == Some(&b'=') {
                let e = n + 1 + blanks(b, i + n + 1);
                offer(e, Some(Tok::Equal), true);
                if b.get(i + e) == Some(&b'\n') {
                    offer(e + 1, Some(Tok::EqualEmpty), false);
                }
            }
            // [[:blank:]\n]*,[[:blank:]\n]*  and  [[:blank:]\n]*\][[:blank:]\n]*
            let m = blanks_nl(b, i);
            match b.get(i + m) {
                Some(b',') => offer(m + 1 + blanks_nl(b, i + m + 1), Some(Tok::Comma), false),
                Some(b']') => offer(m + 1 + blanks_nl(b, i + m + 1), Some(Tok::CBracket), false),
                _ => {}
            }
        } else {
            // <VALUE>[[:blank:]]*\[[[:blank:]\n]*
            let n = blanks(b, i);
            if b.get(i + n) == Some(&b'[') {
                offer(n + 1 + blanks_nl(b, i + n + 1), Some(Tok::OBracket), false);
            }
            // <VALUE>.*{CDATA}.*   ("." is anything but a newline)
            let line = b[i..].iter().position(|c| *c == b'\n').unwrap_or(b.len() - i);
            if text[i..i + line].contains("]]>") {
                offer(line, Some(Tok::CData), false);
            }
            // <VALUE>\"{VALUE_STRING}\"  with VALUE_STRING ([^\"]|"\\\"")*: every quote inside
            // is escaped; the longest match ends at the first unescaped quote, or at the last
            // escaped one when none follows.
            if b[i] == b'"' {
                let mut end = None;
                for j in i + 1..b.len() {
                    if b[j] == b'"' {
                        end = Some(j);
                        if b[j - 1] != b'\\' || j == i + 1 {
                            break;
                        }
                    }
                }
                if let Some(j) = end {
                    offer(j + 1 - i, Some(Tok::Str(text[i + 1..j].to_string())), false);
                }
            }
            // <VALUE>{STRING}  with STRING [^=#[:blank:]\n,\[\]]+
            let s = b[i..].iter().take_while(|c| !b"=#\n,[] \t".contains(c)).count();
            offer(s, Some(Tok::Str(text[i..i + s].to_string())), false);
        }
        if best.0 == 0 {
            i += 1; // flex's default rule: ECHO the character
            continue;
        }
        i += best.0;
        value = best.2;
        if let Some(t) = best.1 {
            out.push(t);
        }
    }
    out
}

/// `unescape` (template_syntax.y): every `\"` becomes `"`; other backslashes stay.
fn unescape(s: &str) -> String {
    s.replace("\\\"", "\"")
}

/// The grammar (template_syntax.y L95-205): `(NAME, attribute)` in the order oned inserts them,
/// names upper-cased (`Attribute::Attribute` calls `one_util::toupper`). `Err` is oned's
/// "syntax error" (the CDATA rule's `YYABORT` included).
pub fn parse(text: &str) -> Result<Vec<(String, Parsed)>, String> {
    let toks = scan(text);
    let mut at = 0;
    let mut out = Vec::new();
    let err = |at: usize, what: &str| -> String {
        format!("syntax error, unexpected {} (token {at}), expecting {what}", toks_name(toks.get(at)))
    };
    while at < toks.len() {
        let Some(Tok::Variable(name)) = toks.get(at) else { return Err(err(at, "VARIABLE")) };
        let name = name.to_uppercase();
        at += 1;
        match toks.get(at) {
            Some(Tok::EqualEmpty) => {
                out.push((name, Parsed::Single(String::new())));
                at += 1;
            }
            Some(Tok::Equal) => {
                at += 1;
                match toks.get(at) {
                    Some(Tok::Str(v)) => {
                        out.push((name, Parsed::Single(unescape(v))));
                        at += 1;
                    }
                    Some(Tok::CData) => return Err("syntax error: CDATA in a value (YYABORT)".into()),
                    Some(Tok::OBracket) => {
                        at += 1;
                        let mut map = std::collections::BTreeMap::new();
                        if toks.get(at) != Some(&Tok::CBracket) {
                            loop {
                                let Some(Tok::Variable(k)) = toks.get(at) else { return Err(err(at, "VARIABLE")) };
                                if toks.get(at + 1) != Some(&Tok::Equal) {
                                    return Err(err(at + 1, "EQUAL"));
                                }
                                let Some(Tok::Str(v)) = toks.get(at + 2) else { return Err(err(at + 2, "STRING")) };
                                map.entry(k.to_uppercase()).or_insert_with(|| unescape(v));
                                at += 3;
                                match toks.get(at) {
                                    Some(Tok::Comma) => at += 1,
                                    Some(Tok::CBracket) => break,
                                    _ => return Err(err(at, "COMMA or CBRACKET")),
                                }
                            }
                        }
                        at += 1; // CBRACKET
                        out.push((name, Parsed::Vector(map)));
                    }
                    _ => return Err(err(at, "STRING or OBRACKET")),
                }
            }
            _ => return Err(err(at, "EQUAL or EQUAL_EMPTY")),
        }
    }
    Ok(out)
}

/// A token's name in an error message.
fn toks_name(t: Option<&Tok>) -> String {
    match t {
        None => "end of file".into(),
        Some(Tok::Variable(v)) => format!("VARIABLE {v:?}"),
        Some(Tok::Str(v)) => format!("STRING {v:?}"),
        Some(t) => format!("{t:?}").to_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Single, empty, quoted with escapes and newlines, unquoted, vectors, comments: what oned
    /// reads for each (names upper-cased, the first of two sub-names kept).
    #[test]
    fn parses_what_oned_parses() {
        let t = parse(
            "# c\nname = \"a \\\"b\\\" c\\d\"\nE =\nU = x/y:1\nM = \"two\nlines\"\n\
             v = [ k = \"1\", K = \"2\",\n  l = u ]\nW = [ ]\nA = \"1\" B = \"2\"",
        )
        .unwrap();
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["NAME", "E", "U", "M", "V", "W", "A", "B"]);
        assert_eq!(t[0].1, Parsed::Single("a \"b\" c\\d".into()));
        assert_eq!(t[1].1, Parsed::Single(String::new()));
        assert_eq!(t[2].1, Parsed::Single("x/y:1".into()));
        assert_eq!(t[3].1, Parsed::Single("two\nlines".into()));
        let Parsed::Vector(v) = &t[4].1 else { panic!() };
        assert_eq!((v["K"].as_str(), v["L"].as_str(), v.len()), ("1", "u", 2));
        assert_eq!(t[5].1, Parsed::Vector(Default::default()));
    }

    /// What oned refuses: an empty value or a trailing comma inside a vector, `=` without a
    /// value at the end, a CDATA end, a value with a blank unquoted.
    #[test]
    fn refuses_what_oned_refuses() {
        for bad in [
            "V = [ A =\n ]",
            "V = [ A = \"1\", ]",
            "V = [ A = , B = \"1\" ]",
            "A = \"x]]>\"",
            "A =",
            "A = \"1\" =",
            "V = [ A \"1\" ]",
            "A = two words",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed: {:?}", parse(bad));
        }
    }

    /// The scanner's longest-match corners: an unquoted value may contain quotes, and a
    /// quoted one ends at the first unescaped quote.
    #[test]
    fn longest_match_corners() {
        assert_eq!(parse("A = \"a\"b").unwrap()[0].1, Parsed::Single("\"a\"b".into()));
        assert_eq!(parse("A = \"a\" B = \"c\"").unwrap().len(), 2);
        assert_eq!(parse("A = \"\"").unwrap()[0].1, Parsed::Single(String::new()));
    }
}
