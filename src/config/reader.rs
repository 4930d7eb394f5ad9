//! The [`Reader`]: each variable read through the table (`crate::vars`): aliases, defaults,
//! rules, where the value came from, and the problems and warnings collected on the way (all
//! of them, not just the first). `resolve.rs` reads the whole context with it.

use crate::context::{Context, quote};
use crate::vars::{self, Rule, Var};
use serde::Serialize;
use serde_json::{Value as Json, json};
use std::fmt;
use std::str::FromStr;

/// One thing wrong with the context: the variable, its value as given (secrets redacted,
/// long values shortened) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub var: String,
    /// Already quoted for display (`'0'`, `<redacted 24 bytes>`); `None` when unset.
    pub value: Option<String>,
    pub msg: String,
}

impl fmt::Display for Problem {
    /// `FL_NUM_ROUNDS='0': must be an integer >= 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}: {}", self.var, self.msg),
            None => write!(f, "{}: {}", self.var, self.msg),
        }
    }
}

/// A value for messages: quoted as in context.sh, secrets redacted, long or multi-line values
/// shortened (base64 PEM, SSH keys).
pub fn show_value(v: &str, secret: bool) -> String {
    if secret {
        return format!("<redacted {} bytes>", v.len());
    }
    if v.len() <= 60 && !v.contains('\n') {
        return quote(v);
    }
    let head: String = v.chars().take_while(|&c| c != '\n').take(32).collect();
    format!("{}… ({} bytes)", quote(&head), v.len())
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Source {
    Default,
    Context,
    /// Given under another name (`ONEAPP_FL_…`).
    Alias {
        name: String,
    },
    /// From the image manifest.
    Image,
    /// `check --role`.
    Flag,
    /// Carried by FL_JOIN (the SuperLink's address, TLS setting and CA).
    Join,
}

/// One effective value for `check`'s plan.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub value: Json,
    #[serde(flatten)]
    pub source: Source,
    /// For unset values: what unset means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meaning: Option<&'static str>,
}

/// Reads the context through the table.
pub struct Reader<'a> {
    pub ctx: &'a Context,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    pub values: Vec<(&'static str, Entry)>,
}

/// The row of a name the code reads. Every name passed here is in the table (a unit test
/// resolves empty contexts for both roles, which reads every one).
fn row(name: &str) -> &'static Var {
    match vars::lookup(name) {
        Some((v, _)) => v,
        None => &vars::VARS[0], // unreachable for table names; keeps this free of panics
    }
}

/// Two spellings of one value are the same (case-insensitive for words and YES/NO).
fn same(rule: &Rule, a: &str, b: &str) -> bool {
    match rule {
        Rule::YesNo | Rule::Words(_) => a.trim().eq_ignore_ascii_case(b.trim()),
        _ => a.trim() == b.trim(),
    }
}

impl<'a> Reader<'a> {
    /// A resolver with nothing read yet.
    pub fn new(ctx: &'a Context) -> Self {
        Reader { ctx, problems: Vec::new(), warnings: Vec::new(), values: Vec::new() }
    }

    pub fn problem(&mut self, var: &str, value: Option<&str>, msg: impl Into<String>) {
        let secret = vars::lookup(var).is_some_and(|(v, _)| v.secret);
        let mut msg = msg.into();
        // Belt and braces: a rule's message about a secret never carries its value.
        if let Some(v) = value.map(str::trim).filter(|v| secret && v.len() >= 4) {
            msg = msg.replace(v, "<redacted>");
        }
        let p = Problem { var: var.to_string(), value: value.map(|v| show_value(v, secret)), msg };
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
    }

    pub fn warn(&mut self, msg: impl Into<String>) {
        self.warnings.push(msg.into());
    }

    /// Record an effective value for the plan (table rows only; `ETH<n>_…` go in the network plan).
    pub fn record(&mut self, name: &'static str, value: Json, source: Source) {
        let meaning = match row(name).default {
            vars::DefaultValue::Unset(m) if value.is_null() => Some(m),
            _ => None,
        };
        self.values.retain(|(n, _)| *n != name);
        self.values.push((name, Entry { value, source, meaning }));
    }

    /// The concrete names of a variable: itself and its aliases (`ETH<n>_` filled in).
    fn names(name: &str) -> Vec<String> {
        match vars::lookup(name) {
            Some((v, Some(n))) => std::iter::once(vars::nic_name(v.name, n))
                .chain(v.aliases.iter().map(|a| vars::nic_name(a, n)))
                .collect(),
            Some((v, None)) => std::iter::once(v.name).chain(v.aliases.iter().copied()).map(String::from).collect(),
            None => vec![name.to_string()],
        }
    }

    /// Whether any name of the variable has a non-empty value.
    pub fn is_set(&self, name: &str) -> bool {
        Self::names(name).iter().any(|n| self.ctx.get(n).is_some())
    }

    /// Whether the variable has a value other than its table default (the same text, or the
    /// same number: OneFlow's templates send every default, `1.0` for `1`).
    pub fn is_set_to_other_than_default(&self, name: &str) -> bool {
        let default = match row(name).default {
            vars::DefaultValue::Value(d) => Some(d),
            _ => None,
        };
        let rule = row(name).rule;
        Self::names(name).iter().filter_map(|n| self.ctx.get(n)).any(|v| match default {
            None => true,
            Some(d) => {
                let numbers = v.trim().parse::<f64>().ok().zip(d.trim().parse::<f64>().ok());
                !(same(&rule, v, d) || numbers.is_some_and(|(a, b)| a == b))
            }
        })
    }

    /// The non-empty value under the variable's name or an alias, and where it came from.
    /// Two names with different values are a problem (the first one given is used).
    pub fn lookup(&mut self, name: &str) -> Option<(String, Source)> {
        let names = Self::names(name);
        let given: Vec<(String, String)> =
            names.iter().filter_map(|n| self.ctx.get(n).map(|v| (n.clone(), v.to_string()))).collect();
        let (first_name, first_value) = given.first()?.clone();
        let rule = row(name).rule;
        for (other, value) in &given[1..] {
            if !same(&rule, &first_value, value) {
                let secret = row(name).secret;
                let msg = format!(
                    "differs from {other}={}: both name the same variable; give one",
                    show_value(value, secret)
                );
                self.problem(&first_name, Some(&first_value), msg);
            }
        }
        let source = if first_name == names[0] { Source::Context } else { Source::Alias { name: first_name } };
        Some((first_value, source))
    }

    /// The name a value was given under (an alias, or the canonical `name`), for messages.
    pub fn given_name(name: &str, source: &Source) -> String {
        match source {
            Source::Alias { name } => name.clone(),
            _ => name.to_string(),
        }
    }

    /// The value (or the table default), parsed: `Ok(None)` when unset without a default,
    /// `Err(())` when invalid (the problem is recorded). `show` gives the plan's JSON.
    pub fn value<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        show: impl FnOnce(&T) -> Json,
    ) -> Result<Option<T>, ()> {
        let (text, source) = match self.lookup(name) {
            Some(v) => v,
            None => match row(name).default {
                vars::DefaultValue::Value(d) => (d.to_string(), Source::Default),
                _ => {
                    if !name.contains('<') {
                        self.record(name, Json::Null, Source::Default);
                    }
                    return Ok(None);
                }
            },
        };
        match parse(&text) {
            Ok(v) => {
                let shown = if row(name).secret { json!(show_value(&text, true)) } else { show(&v) };
                self.record(name, shown, source);
                Ok(Some(v))
            }
            Err(msg) => {
                self.problem(&Self::given_name(name, &source), Some(&text), msg);
                Err(())
            }
        }
    }

    /// [`Reader::value`] for NIC variables (`ETH3_IP`): no plan entry, the network plan shows them.
    pub fn nic<T>(&mut self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, ()> {
        let (text, source) = match self.lookup(name) {
            Some(v) => v,
            None => match row(name).default {
                vars::DefaultValue::Value(d) => (d.to_string(), Source::Default),
                _ => return Ok(None),
            },
        };
        parse(&text).map(Some).map_err(|msg| self.problem(&Self::given_name(name, &source), Some(&text), msg))
    }

    /// The rule text of a variable, for "must be …".
    pub fn rule(name: &str) -> String {
        row(name).rule.describe()
    }

    /// An integer by the table's range.
    pub fn int(&mut self, name: &'static str) -> Result<Option<i64>, ()> {
        let (min, max) = match row(name).rule {
            Rule::Int { min, max } => (min, max),
            _ => (i64::MIN, i64::MAX),
        };
        let rule = Self::rule(name);
        self.value(name, |s| super::values::int(s, min, max, &rule), |v| json!(v))
    }

    /// A number by the table's bounds.
    pub fn float(&mut self, name: &'static str) -> Result<Option<f64>, ()> {
        let (lo, hi) = match row(name).rule {
            Rule::Float { lo, hi } => (lo, hi),
            _ => (vars::Bound::None, vars::Bound::None),
        };
        let rule = Self::rule(name);
        self.value(name, |s| super::values::float(s, lo, hi, &rule), |v| json!(v))
    }

    pub fn yes_no(&mut self, name: &'static str) -> Result<Option<bool>, ()> {
        self.value(name, super::values::yes_no, |v| json!(if *v { "YES" } else { "NO" }))
    }

    /// One of an enum's words (the `words!` enums of `config`).
    pub fn word<T: FromStr<Err = String> + fmt::Display>(&mut self, name: &'static str) -> Result<Option<T>, ()> {
        self.value(name, |s| s.trim().parse::<T>().map_err(|e| e.to_string()), |v| json!(v.to_string()))
    }

    /// The plan's `values` (a JSON object: serde_json sorts its keys).
    pub fn values_json(&self) -> Json {
        let mut m = serde_json::Map::new();
        for v in vars::VARS {
            if let Some((_, e)) = self.values.iter().find(|(n, _)| *n == v.name) {
                m.insert(v.name.to_string(), serde_json::to_value(e).unwrap_or(Json::Null));
            }
        }
        Json::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_read_like_context_lines() {
        let p = Problem {
            var: "FL_NUM_ROUNDS".into(),
            value: Some(show_value("0", false)),
            msg: "must be an integer >= 1".into(),
        };
        assert_eq!(p.to_string(), "FL_NUM_ROUNDS='0': must be an integer >= 1");
        assert_eq!(show_value("x'y", false), r"'x'\''y'");
        assert_eq!(show_value("secret", true), "<redacted 6 bytes>");
        let long = "LS0tLS1CRUdJTi".repeat(10);
        assert_eq!(show_value(&long, false), format!("'{}'… (140 bytes)", &long[..32]));
        assert_eq!(show_value("ssh-rsa AAA a\nssh-ed25519 B", false), "'ssh-rsa AAA a'… (27 bytes)");
    }

    #[test]
    fn aliases_agree_or_conflict() {
        let ctx = Context::from_pairs([("FL_STRATEGY", "fedprox"), ("ONEAPP_FL_STRATEGY", "FedProx")]);
        let mut r = Reader::new(&ctx);
        assert_eq!(r.lookup("FL_STRATEGY"), Some(("fedprox".into(), Source::Context)));
        assert!(r.problems.is_empty());
        let ctx = Context::from_pairs([("ONEAPP_FL_NUM_ROUNDS", "5"), ("FL_NUM_ROUNDS", "")]);
        let mut r = Reader::new(&ctx);
        assert_eq!(r.int("FL_NUM_ROUNDS"), Ok(Some(5)));
        assert_eq!(r.values[0].1.source, Source::Alias { name: "ONEAPP_FL_NUM_ROUNDS".into() });
        let ctx = Context::from_pairs([("FL_NUM_ROUNDS", "5"), ("ONEAPP_FL_NUM_ROUNDS", "6")]);
        let mut r = Reader::new(&ctx);
        assert_eq!(r.int("FL_NUM_ROUNDS"), Ok(Some(5)));
        assert_eq!(
            r.problems[0].to_string(),
            "FL_NUM_ROUNDS='5': differs from ONEAPP_FL_NUM_ROUNDS='6': both name the same variable; give one"
        );
    }

    #[test]
    fn defaults_parse_by_the_same_rule() {
        let ctx = Context::default();
        let mut r = Reader::new(&ctx);
        assert_eq!(r.int("FL_NUM_ROUNDS"), Ok(Some(3)));
        assert_eq!(r.float("FL_TRIM_BETA"), Ok(Some(0.2)));
        assert_eq!(r.yes_no("FL_CHECKPOINT_ENABLED"), Ok(Some(false)));
        assert_eq!(r.word::<crate::vocab::Strategy>("FL_STRATEGY"), Ok(Some(crate::vocab::Strategy::FedAvg)));
        assert_eq!(
            r.value("FL_SUPERLINK_ADDRESS", super::super::values::host_port, |a| json!(a.to_string())),
            Ok(None)
        );
        let v = r.values_json();
        assert_eq!(v["FL_NUM_ROUNDS"], json!({"value": 3, "source": "default"}));
        assert_eq!(
            v["FL_SUPERLINK_ADDRESS"],
            json!({"value": null, "source": "default", "meaning": "discovered through OneGate"})
        );
        assert!(r.problems.is_empty());
    }

    #[test]
    fn secrets_never_reach_the_plan_or_problems() {
        let ctx = Context::from_pairs([("ONEGATE_TOKEN", "hunter2hunter2")]);
        let mut r = Reader::new(&ctx);
        r.value("ONEGATE_TOKEN", |s| Ok(s.to_string()), |s| json!(s)).unwrap();
        r.value("ONEGATE_TOKEN", |_| Err::<(), _>("bad".to_string()), |_| json!(null)).unwrap_err();
        let all = format!("{} {:?}", r.values_json(), r.problems);
        assert!(!all.contains("hunter2") && all.contains("<redacted 14 bytes>"), "{all}");
        // A rule that quotes its input does not leak a secret's value either.
        r.value("ONEGATE_TOKEN", |s| Err::<(), _>(format!("{s:?} is not allowed")), |_| json!(null)).unwrap_err();
        let all: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        assert!(!all.concat().contains("hunter2"), "{all:?}");
        assert_eq!(all[1], "ONEGATE_TOKEN=<redacted 14 bytes>: \"<redacted>\" is not allowed");
    }
}
