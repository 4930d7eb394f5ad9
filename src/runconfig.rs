//! The Flower run config rendered from validated settings, checked against the keys the
//! bundled app declares, and the pure helpers to submit and follow a run with the `flwr` CLI
//! (config.toml, argv, `--format json` parsing, the app's status file). Issue #7.
//!
//! `flwr run --run-config 'k=v k=v'` splits its argument with the regex
//! `(\S+?)=('[^']*'|"[^"]*"|\S+)` and parses each `k = v` line as TOML
//! (flwr 1.42 `common/config.py` `parse_config_args`). So values are rendered as TOML with no
//! space outside quotes and no `"` inside a string: ints and bools bare, floats always with a
//! decimal point (`1.0`, `1.0e-7`: TOML keeps them floats), strings as TOML basic strings
//! whose `"` is written `\u0022` (a `\"` would end the regex match early). Flower checks
//! only that a key is declared (`[code: 15] Invalid run configuration.`), never its type, so
//! [`AppSchema::validate`] checks both, before submission, naming key, value and type.

use crate::config::SuperLink;
use crate::vocab::{Strategy, UseCase};
use std::collections::BTreeMap;
use std::fmt;

/// A run-config value: the TOML scalars Flower accepts (`UserConfigValue`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

/// The type of a declared key, taken from its default in `[tool.flwr.app.config]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Int,
    Float,
    Bool,
    Str,
}

impl Value {
    /// Its TOML type, compared with the declared one by [`AppSchema::validate`].
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Int(_) => ValueType::Int,
            Value::Float(_) => ValueType::Float,
            Value::Bool(_) => ValueType::Bool,
            Value::Str(_) => ValueType::Str,
        }
    }

    /// The TOML text of this value as `flwr run --run-config` needs it (see the module doc).
    pub fn render(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Float(f) => render_float(*f),
            Value::Str(s) => toml_basic_string(s),
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::Int => "integer",
            ValueType::Float => "float",
            ValueType::Bool => "boolean",
            ValueType::Str => "string",
        })
    }
}

/// A float that TOML reads back as the same float: Rust's shortest round-trip digits, with
/// `.0` added where Rust prints none (`1` → `1.0`, `1e-7` → `1.0e-7`). Non-finite values are
/// refused by [`AppSchema::validate`]; rendered anyway they are TOML's `inf`/`nan`.
fn render_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let s = format!("{f:?}");
    match s.find('e') {
        Some(e) if !s[..e].contains('.') => format!("{}.0{}", &s[..e], &s[e..]),
        None if !s.contains('.') => format!("{s}.0"),
        _ => s,
    }
}

/// A TOML basic string that also survives flwr's splitting regex: `"` and control
/// characters as `\uXXXX`, backslash as `\\`. Spaces, `'` and `=` need no escape there.
pub fn toml_basic_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\u0022"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Ordered key → value overrides for one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunConfig {
    pub entries: BTreeMap<String, Value>,
}

impl RunConfig {
    /// Set (or replace) one override; chains.
    pub fn set(&mut self, key: &str, value: Value) -> &mut Self {
        self.entries.insert(key.to_string(), value);
        self
    }

    /// The override of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(key)
    }

    /// Overrides given as a flat JSON object (JSON keeps 1.0 apart from 1, like TOML).
    pub fn from_json_object(obj: &serde_json::Value) -> Result<RunConfig, RunConfigError> {
        let table = AppSchema::from_config_table(obj)?;
        Ok(RunConfig { entries: table.defaults })
    }

    /// The single `--run-config` argument: `k=v` pairs separated by one space.
    pub fn render(&self) -> String {
        let pairs: Vec<String> = self.entries.iter().map(|(k, v)| format!("{k}={}", v.render())).collect();
        pairs.join(" ")
    }
}

/// Checkpointing of the global model (FL_CHECKPOINT_*).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpointing {
    /// FL_CHECKPOINT_INTERVAL: rounds between checkpoints (the last round is always saved).
    pub interval: u32,
    /// FL_CHECKPOINT_PATH as seen inside the SuperLink container (absolute).
    pub dir: String,
    /// Start from `dir/checkpoint_latest.npz` when it exists (a resubmission after a restart).
    pub resume: bool,
}

/// Seconds the ServerApp waits for the replies of one train or evaluate phase. Flower's own
/// default is 3600 s: a SuperNode killed mid-round would stall the run for an hour. Flower
/// answers for a node it marks offline (about 60 s without heartbeat) sooner anyway.
pub const ROUND_TIMEOUT_S: u32 = 300;

/// The typed training settings flower-init derives from the validated context variables.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    pub use_case: UseCase,
    /// FL_NUM_ROUNDS
    pub num_rounds: u32,
    /// FL_STRATEGY
    pub strategy: Strategy,
    /// FL_MIN_FIT_CLIENTS (the n of the Krum/Bulyan bounds)
    pub min_train_nodes: u32,
    /// FL_MIN_EVALUATE_CLIENTS
    pub min_evaluate_nodes: u32,
    /// FL_MIN_AVAILABLE_CLIENTS
    pub min_available_nodes: u32,
    /// FL_PROXIMAL_MU (FedProx)
    pub proximal_mu: f64,
    /// FL_SERVER_LR (FedAdam eta)
    pub server_learning_rate: f64,
    /// FL_NUM_MALICIOUS (Krum, Bulyan)
    pub num_malicious_nodes: u32,
    /// FL_TRIM_BETA (FedTrimmedAvg)
    pub trim_beta: f64,
    /// FL_CHECKPOINT_ENABLED=YES; None = off
    pub checkpoint: Option<Checkpointing>,
    /// Where the ServerApp writes its progress (container path, absolute); flower-init reads
    /// it back from the state disk with [`parse_status_file`].
    pub status_file: String,
    /// `round-timeout`: [`ROUND_TIMEOUT_S`] unless the caller knows better.
    pub round_timeout_s: u32,
}

impl RunSettings {
    /// The settings of the bundled run from the validated SuperLink configuration.
    /// `checkpoint_dir` is where FL_CHECKPOINT_PATH appears inside the SuperLink container
    /// (`None`: at the same path, the state disk being mounted at the same place); `status_file`
    /// is the container path of the status file. A checkpointed run resumes from the latest
    /// checkpoint, so a run resubmitted after a restart goes on from the last saved model.
    pub fn from_superlink(
        sl: &SuperLink,
        use_case: UseCase,
        checkpoint_dir: Option<&str>,
        status_file: &str,
    ) -> Result<RunSettings, RunConfigError> {
        let checkpoint = sl.checkpoint.as_ref().map(|c| Checkpointing {
            interval: c.interval,
            dir: checkpoint_dir.map_or_else(|| c.path.display().to_string(), str::to_string),
            resume: true,
        });
        let settings = RunSettings {
            use_case,
            num_rounds: sl.num_rounds,
            strategy: sl.strategy,
            min_train_nodes: sl.min_fit_clients,
            min_evaluate_nodes: sl.min_evaluate_clients,
            min_available_nodes: sl.min_available_clients,
            proximal_mu: sl.proximal_mu,
            server_learning_rate: sl.server_lr,
            num_malicious_nodes: sl.num_malicious,
            trim_beta: sl.trim_beta,
            checkpoint,
            status_file: status_file.to_string(),
            round_timeout_s: ROUND_TIMEOUT_S,
        };
        settings.check()?;
        Ok(settings)
    }

    /// Rules the app would otherwise fail the run for, checked before submission: a use case,
    /// absolute container paths, and the Byzantine bounds (config validates them at boot too;
    /// Flower itself never does).
    pub fn check(&self) -> Result<(), RunConfigError> {
        if self.use_case == UseCase::None {
            return Err(RunConfigError::NoUseCase);
        }
        let ck_dir = self.checkpoint.as_ref().map(|c| c.dir.as_str());
        for (key, path) in [("status-file", Some(self.status_file.as_str())), ("checkpoint-dir", ck_dir)] {
            if let Some(p) = path.filter(|p| !p.starts_with('/')) {
                return Err(RunConfigError::Invalid { key: key.into(), value: toml_basic_string(p), rule: "must be an absolute path".into() });
            }
        }
        let (n, f) = (self.min_train_nodes, self.num_malicious_nodes);
        let bound = match self.strategy {
            Strategy::Krum => Some((2, 2 * f + 3)),
            Strategy::Bulyan => Some((4, 4 * f + 3)),
            _ => None,
        };
        if let Some((k, need)) = bound.filter(|(_, need)| n < *need) {
            return Err(RunConfigError::Invalid {
                key: "min-train-nodes".into(),
                value: n.to_string(),
                rule: format!("{} needs n >= {k}f+3: n={n}, f={f}, {k}*{f}+3={need}", self.strategy),
            });
        }
        if self.round_timeout_s == 0 {
            return Err(RunConfigError::Invalid { key: "round-timeout".into(), value: "0".into(), rule: "must be > 0".into() });
        }
        Ok(())
    }

    /// Every key the appliance sets, always all of them (the app's defaults never decide),
    /// after [`RunSettings::check`].
    pub fn to_run_config(&self) -> Result<RunConfig, RunConfigError> {
        self.check()?;
        let mut rc = RunConfig::default();
        let int = |v: u32| Value::Int(i64::from(v));
        rc.set("use-case", Value::Str(self.use_case.as_str().into()))
            .set("num-server-rounds", int(self.num_rounds))
            .set("strategy", Value::Str(self.strategy.as_str().into()))
            .set("min-train-nodes", int(self.min_train_nodes))
            .set("min-evaluate-nodes", int(self.min_evaluate_nodes))
            .set("min-available-nodes", int(self.min_available_nodes))
            .set("proximal-mu", Value::Float(self.proximal_mu))
            .set("server-learning-rate", Value::Float(self.server_learning_rate))
            .set("num-malicious-nodes", int(self.num_malicious_nodes))
            .set("trim-beta", Value::Float(self.trim_beta))
            .set("round-timeout", Value::Float(f64::from(self.round_timeout_s)))
            .set("status-file", Value::Str(self.status_file.clone()));
        let ck = self.checkpoint.as_ref();
        rc.set("checkpoint-enabled", Value::Bool(ck.is_some()))
            .set("checkpoint-interval", int(ck.map_or(1, |c| c.interval)))
            .set("checkpoint-dir", Value::Str(ck.map_or(String::new(), |c| c.dir.clone())))
            .set("checkpoint-resume", Value::Bool(ck.is_some_and(|c| c.resume)));
        Ok(rc)
    }
}

/// Why a run config cannot be submitted.
#[derive(Debug, Clone, PartialEq)]
pub enum RunConfigError {
    /// FL_USE_CASE=none: there is no bundled run.
    NoUseCase,
    /// The app does not declare this key (flwr would answer `[code: 15]`).
    Undeclared { key: String, value: String },
    /// Declared with another type (Flower would pass the wrong type to the app).
    WrongType { key: String, value: String, expected: ValueType },
    /// A key flwr's parser would split or TOML would reject.
    BadKey { key: String },
    /// NaN or infinity.
    NotFinite { key: String, value: String },
    /// A setting the app would refuse (rule broken), caught before submission.
    Invalid { key: String, value: String, rule: String },
    /// The app's config table could not be read.
    Schema(String),
}

impl fmt::Display for RunConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunConfigError::NoUseCase => write!(f, "FL_USE_CASE=none: no bundled run to configure"),
            RunConfigError::Undeclared { key, value } => {
                write!(f, "run config key {key:?} (value {value}) is not declared in the app's [tool.flwr.app.config]")
            }
            RunConfigError::WrongType { key, value, expected } => {
                write!(f, "run config key {key:?}: value {value} is not of type {expected}, the type the app declares")
            }
            RunConfigError::BadKey { key } => {
                write!(f, "run config key {key:?} is not a TOML bare key (letters, digits, '-', '_', '.')")
            }
            RunConfigError::NotFinite { key, value } => write!(f, "run config key {key:?}: value {value} is not a finite number"),
            RunConfigError::Invalid { key, value, rule } => write!(f, "run config key {key:?}: value {value}: {rule}"),
            RunConfigError::Schema(m) => write!(f, "read the app's run-config declaration: {m}"),
        }
    }
}

impl std::error::Error for RunConfigError {}

/// The keys and types `[tool.flwr.app.config]` declares (from the image manifest).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppSchema {
    pub keys: BTreeMap<String, ValueType>,
    pub defaults: BTreeMap<String, Value>,
}

impl AppSchema {
    /// From the `[tool.flwr.app.config]` table as JSON (`json.dumps` of what tomllib read).
    /// Nested tables are flattened with `.` like Flower does; JSON keeps 1.0 apart from 1.
    pub fn from_config_table(table: &serde_json::Value) -> Result<Self, RunConfigError> {
        let mut schema = AppSchema::default();
        let obj = table.as_object().ok_or_else(|| RunConfigError::Schema("the config table is not a JSON object".into()))?;
        flatten_into(&mut schema, "", obj)?;
        Ok(schema)
    }

    /// From a whole `pyproject.toml` converted to JSON (`tool.flwr.app.config` inside).
    pub fn from_pyproject_json(text: &str) -> Result<Self, RunConfigError> {
        let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| RunConfigError::Schema(e.to_string()))?;
        let table = ["tool", "flwr", "app", "config"]
            .iter()
            .try_fold(&doc, |v, k| v.get(k))
            .ok_or_else(|| RunConfigError::Schema("no tool.flwr.app.config table".into()))?;
        Self::from_config_table(table)
    }

    /// Every problem of `rc` against the declaration: undeclared keys, wrong types, keys
    /// flwr would mangle, non-finite floats. Empty means flwr will accept it as typed.
    pub fn validate(&self, rc: &RunConfig) -> Result<(), Vec<RunConfigError>> {
        let mut problems = Vec::new();
        for (key, value) in &rc.entries {
            let shown = value.render();
            if !is_bare_key(key) {
                problems.push(RunConfigError::BadKey { key: key.clone() });
            } else if let Some(expected) = self.keys.get(key) {
                if value.value_type() != *expected {
                    problems.push(RunConfigError::WrongType { key: key.clone(), value: shown, expected: *expected });
                } else if matches!(value, Value::Float(f) if !f.is_finite()) {
                    problems.push(RunConfigError::NotFinite { key: key.clone(), value: shown });
                }
            } else {
                problems.push(RunConfigError::Undeclared { key: key.clone(), value: shown });
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

/// Flower flattens nested config tables into dotted keys; the schema does the same.
fn flatten_into(schema: &mut AppSchema, prefix: &str, obj: &serde_json::Map<String, serde_json::Value>) -> Result<(), RunConfigError> {
    for (k, v) in obj {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        let value = match v {
            serde_json::Value::Object(inner) => {
                flatten_into(schema, &key, inner)?;
                continue;
            }
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) if !n.is_f64() => Value::Int(i),
                _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            other => return Err(RunConfigError::Schema(format!("key {key:?}: {other} is not an int, float, bool or string"))),
        };
        schema.keys.insert(key.clone(), value.value_type());
        schema.defaults.insert(key, value);
    }
    Ok(())
}

/// TOML bare keys, dotted for nested tables: what `(\S+?)=` and TOML both read unchanged.
fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('.').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

mod flwr;
pub use flwr::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Strategy as FlStrategy;
    use proptest::prelude::{Strategy as _, any, proptest};

    /// flwr 1.42 `parse_config_args`: the same regex, then TOML, then flattening with ".".
    fn flwr_parse(arg: &str) -> Result<BTreeMap<String, toml::Value>, String> {
        let re = regex::Regex::new(r#"(\S+?)=('[^']*'|"[^"]*"|\S+)"#).unwrap();
        let lines: Vec<String> = re.captures_iter(arg).map(|c| format!("{} = {}", &c[1], &c[2])).collect();
        let table: toml::Table = lines.join("\n").parse().map_err(|e: toml::de::Error| e.to_string())?;
        let mut out = BTreeMap::new();
        fn flat(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match v {
                    toml::Value::Table(inner) => flat(&key, inner, out),
                    other => {
                        out.insert(key, other.clone());
                    }
                }
            }
        }
        flat("", &table, &mut out);
        Ok(out)
    }

    fn same(v: &Value, t: &toml::Value) -> bool {
        match (v, t) {
            (Value::Int(a), toml::Value::Integer(b)) => a == b,
            (Value::Float(a), toml::Value::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Value::Bool(a), toml::Value::Boolean(b)) => a == b,
            (Value::Str(a), toml::Value::String(b)) => a == b,
            _ => false,
        }
    }

    fn round_trips(rc: &RunConfig) {
        let parsed = flwr_parse(&rc.render()).unwrap_or_else(|e| panic!("{:?} does not parse: {e}", rc.render()));
        assert_eq!(parsed.len(), rc.entries.len(), "{:?}", rc.render());
        for (k, v) in &rc.entries {
            let got = parsed.get(k).unwrap_or_else(|| panic!("{k} missing from {:?}", rc.render()));
            assert!(same(v, got), "{k}: {v:?} came back as {got:?} from {:?}", rc.render());
        }
    }

    fn settings() -> RunSettings {
        RunSettings {
            use_case: UseCase::TabularClassification,
            num_rounds: 3,
            strategy: FlStrategy::FedProx,
            min_train_nodes: 2,
            min_evaluate_nodes: 2,
            min_available_nodes: 2,
            proximal_mu: 0.1,
            server_learning_rate: 0.1,
            num_malicious_nodes: 0,
            trim_beta: 0.2,
            checkpoint: Some(Checkpointing { interval: 2, dir: "/var/lib/flower/checkpoints".into(), resume: true }),
            status_file: "/var/lib/flower/run-status.json".into(),
            round_timeout_s: ROUND_TIMEOUT_S,
        }
    }

    /// The app's real declaration, converted the way the image build does (TOML → JSON).
    fn app_schema() -> AppSchema {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/apps/appliance/pyproject.toml")).unwrap();
        let doc: toml::Table = text.parse().unwrap();
        AppSchema::from_pyproject_json(&serde_json::to_string(&doc).unwrap()).unwrap()
    }

    #[test]
    fn floats_always_carry_a_decimal_point() {
        for (f, s) in [(1.0, "1.0"), (0.1, "0.1"), (-2.0, "-2.0"), (1e-7, "1.0e-7"), (1e21, "1.0e21"), (2.5e-8, "2.5e-8"), (3600.0, "3600.0")] {
            assert_eq!(render_float(f), s);
        }
    }

    #[test]
    fn strings_are_toml_basic_strings_safe_from_flwrs_regex() {
        assert_eq!(toml_basic_string(r#"a "b" \c"#), r#""a \u0022b\u0022 \\c""#);
        assert_eq!(toml_basic_string("x\ny\u{1}"), r#""x\ny\u0001""#);
        let mut rc = RunConfig::default();
        rc.set("checkpoint-dir", Value::Str("/state/my ckpt=1 'q' \"dq\" \\".into())).set("a", Value::Str(String::new()));
        round_trips(&rc);
    }

    #[test]
    fn settings_render_every_key_and_round_trip() {
        let rc = settings().to_run_config().unwrap();
        let s = rc.render();
        assert!(s.contains(r#"strategy="FedProx""#), "{s}");
        assert!(s.contains("proximal-mu=0.1 "), "{s}");
        assert!(s.contains("checkpoint-enabled=true "), "{s}");
        assert!(s.contains("num-server-rounds=3 "), "{s}");
        round_trips(&rc);
        let off = RunSettings { checkpoint: None, ..settings() }.to_run_config().unwrap();
        assert_eq!(off.get("checkpoint-enabled"), Some(&Value::Bool(false)));
        assert_eq!(off.get("checkpoint-dir"), Some(&Value::Str(String::new())));
        assert_eq!(RunSettings { use_case: UseCase::None, ..settings() }.to_run_config(), Err(RunConfigError::NoUseCase));
    }

    #[test]
    fn settings_render_to_the_exact_argument() {
        let rc = RunSettings { strategy: FlStrategy::Krum, min_train_nodes: 5, num_malicious_nodes: 1, ..settings() };
        assert_eq!(
            rc.to_run_config().unwrap().render(),
            "checkpoint-dir=\"/var/lib/flower/checkpoints\" checkpoint-enabled=true checkpoint-interval=2 \
             checkpoint-resume=true min-available-nodes=2 min-evaluate-nodes=2 min-train-nodes=5 \
             num-malicious-nodes=1 num-server-rounds=3 proximal-mu=0.1 round-timeout=300.0 \
             server-learning-rate=0.1 status-file=\"/var/lib/flower/run-status.json\" strategy=\"Krum\" \
             trim-beta=0.2 use-case=\"tabular-classification\""
        );
    }

    fn superlink() -> SuperLink {
        SuperLink {
            num_rounds: 4,
            strategy: FlStrategy::Bulyan,
            min_fit_clients: 7,
            min_evaluate_clients: 3,
            min_available_clients: 8,
            proximal_mu: 0.25,
            server_lr: 0.05,
            num_malicious: 1,
            trim_beta: 0.1,
            checkpoint: Some(crate::config::Checkpoint { interval: 2, path: "/var/lib/flower/ckpt".into() }),
            database: crate::config::Database::InMemory,
            control_allow: vec![],
            node_auth: true,
            node_keys: vec![],
        }
    }

    #[test]
    fn settings_from_the_validated_superlink_config() {
        let s = RunSettings::from_superlink(&superlink(), UseCase::ImageClassification, None, "/var/lib/flower/status.json").unwrap();
        assert_eq!(
            s,
            RunSettings {
                use_case: UseCase::ImageClassification,
                num_rounds: 4,
                strategy: FlStrategy::Bulyan,
                min_train_nodes: 7,
                min_evaluate_nodes: 3,
                min_available_nodes: 8,
                proximal_mu: 0.25,
                server_learning_rate: 0.05,
                num_malicious_nodes: 1,
                trim_beta: 0.1,
                checkpoint: Some(Checkpointing { interval: 2, dir: "/var/lib/flower/ckpt".into(), resume: true }),
                status_file: "/var/lib/flower/status.json".into(),
                round_timeout_s: ROUND_TIMEOUT_S,
            }
        );
        assert_eq!(app_schema().validate(&s.to_run_config().unwrap()), Ok(()));
        // The container sees the state disk elsewhere: the caller says where.
        let moved = RunSettings::from_superlink(&superlink(), UseCase::ImageClassification, Some("/state/ckpt"), "/state/s.json").unwrap();
        assert_eq!(moved.checkpoint.unwrap().dir, "/state/ckpt");
        let off = SuperLink { checkpoint: None, ..superlink() };
        let s = RunSettings::from_superlink(&off, UseCase::TabularClassification, Some("/ignored"), "/s.json").unwrap();
        assert_eq!(s.checkpoint, None);
        assert_eq!(
            RunSettings::from_superlink(&superlink(), UseCase::None, None, "/s.json"),
            Err(RunConfigError::NoUseCase)
        );
    }

    #[test]
    fn settings_the_app_would_refuse_are_refused_before_submission() {
        let err = |s: RunSettings| s.to_run_config().unwrap_err().to_string();
        assert_eq!(
            err(RunSettings { strategy: FlStrategy::Krum, min_train_nodes: 4, num_malicious_nodes: 1, ..settings() }),
            r#"run config key "min-train-nodes": value 4: Krum needs n >= 2f+3: n=4, f=1, 2*1+3=5"#
        );
        assert_eq!(
            err(RunSettings { strategy: FlStrategy::Bulyan, min_train_nodes: 6, num_malicious_nodes: 1, ..settings() }),
            r#"run config key "min-train-nodes": value 6: Bulyan needs n >= 4f+3: n=6, f=1, 4*1+3=7"#
        );
        let sl = SuperLink { strategy: FlStrategy::Krum, min_fit_clients: 2, num_malicious: 0, ..superlink() };
        let e = RunSettings::from_superlink(&sl, UseCase::TabularClassification, None, "/s.json").unwrap_err();
        assert!(e.to_string().contains("Krum needs n >= 2f+3: n=2, f=0, 2*0+3=3"), "{e}");
        assert!(err(RunSettings { status_file: "status.json".into(), ..settings() }).contains("\"status-file\": value \"status.json\": must be an absolute path"));
        let rel = Checkpointing { interval: 1, dir: "ckpt".into(), resume: false };
        assert!(err(RunSettings { checkpoint: Some(rel), ..settings() }).contains("\"checkpoint-dir\""));
        assert!(err(RunSettings { round_timeout_s: 0, ..settings() }).contains("\"round-timeout\": value 0: must be > 0"));
    }

    #[test]
    fn the_bundled_app_declares_every_key_the_appliance_sets_with_its_type() {
        let schema = app_schema();
        for uc in [UseCase::TabularClassification, UseCase::ImageClassification, UseCase::LlmFineTuning] {
            for st in FlStrategy::ALL {
                let rc = RunSettings { use_case: uc, strategy: *st, min_train_nodes: 7, ..settings() }.to_run_config().unwrap();
                assert_eq!(schema.validate(&rc), Ok(()));
            }
        }
        assert_eq!(schema.keys.get("proximal-mu"), Some(&ValueType::Float));
        assert_eq!(schema.defaults.get("strategy"), Some(&Value::Str("FedAvg".into())));
        assert_eq!(schema.keys.get("checkpoint-enabled"), Some(&ValueType::Bool));
    }

    #[test]
    fn wrong_type_and_undeclared_key_are_named_with_value_and_type() {
        let schema = app_schema();
        let mut rc = settings().to_run_config().unwrap();
        rc.set("num-server-rounds", Value::Float(3.0)).set("proximal-mu", Value::Int(1)).set("no-such-key", Value::Str("x".into()));
        rc.set("bad key", Value::Int(1)).set("trim-beta", Value::Float(f64::NAN));
        let errs = schema.validate(&rc).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 5, "{text:#?}");
        assert!(text.contains(&r#"run config key "num-server-rounds": value 3.0 is not of type integer, the type the app declares"#.to_string()), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("\"proximal-mu\": value 1 is not of type float")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("\"no-such-key\" (value \"x\") is not declared")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("\"bad key\" is not a TOML bare key")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("\"trim-beta\": value nan is not a finite number")), "{text:#?}");
    }

    #[test]
    fn schema_from_table_keeps_float_apart_from_int_and_flattens() {
        let t = serde_json::json!({"a": 1, "b": 1.0, "c": "s", "d": false, "e": {"f": 2}});
        let s = AppSchema::from_config_table(&t).unwrap();
        assert_eq!(s.keys.get("a"), Some(&ValueType::Int));
        assert_eq!(s.keys.get("b"), Some(&ValueType::Float));
        assert_eq!(s.keys.get("e.f"), Some(&ValueType::Int));
        let mut rc = RunConfig::default();
        rc.set("e.f", Value::Int(3));
        assert_eq!(s.validate(&rc), Ok(()));
        round_trips(&rc);
        assert!(AppSchema::from_config_table(&serde_json::json!({"x": [1]})).is_err());
        assert!(AppSchema::from_pyproject_json("{}").is_err());
    }

    proptest! {
        #[test]
        fn any_string_round_trips(s in "\\PC*", t in any::<String>()) {
            let mut rc = RunConfig::default();
            rc.set("a", Value::Str(s)).set("b-c", Value::Str(t)).set("z", Value::Int(1));
            round_trips(&rc);
        }

        #[test]
        fn any_finite_float_and_int_round_trip(f in any::<f64>().prop_filter("finite", |f| f.is_finite()), i in any::<i64>(), b in any::<bool>()) {
            let mut rc = RunConfig::default();
            rc.set("f", Value::Float(f)).set("i", Value::Int(i)).set("b", Value::Bool(b));
            round_trips(&rc);
        }
    }
}
