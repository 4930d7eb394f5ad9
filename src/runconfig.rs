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

use crate::config::{Strategy, UseCase};
use serde::Deserialize;
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
    pub fn set(&mut self, key: &str, value: Value) -> &mut Self {
        self.entries.insert(key.to_string(), value);
        self
    }

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
    /// Where the ServerApp writes its progress (container path); flower-init reads it back.
    pub status_file: String,
}

impl RunSettings {
    /// Every key the appliance sets, always all of them (the app's defaults never decide).
    /// `UseCase::None` has no run to configure.
    pub fn to_run_config(&self) -> Result<RunConfig, RunConfigError> {
        if self.use_case == UseCase::None {
            return Err(RunConfigError::NoUseCase);
        }
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

// ---------------------------------------------------------------------------------------
// Submitting and following a run with the flwr CLI (inside the SuperLink's container).
// ---------------------------------------------------------------------------------------

/// Name of the connection flower-init writes into `$FLWR_HOME/config.toml`.
pub const CONNECTION: &str = "appliance";

/// How the CLI reaches the SuperLink.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    Insecure,
    /// Absolute path of the CA certificate (flwr refuses relative paths).
    RootCertificates(String),
}

/// `$FLWR_HOME/config.toml` with one default connection `name` to `address` (host:port,
/// normally 127.0.0.1:8000: the server certificate carries the 127.0.0.1 SAN).
pub fn flwr_config_toml(name: &str, address: &str, transport: &Transport) -> Result<String, String> {
    if !is_bare_key(name) || name.contains('.') {
        return Err(format!("connection name {name:?} must be a bare TOML key"));
    }
    let mut out = format!("[superlink]\ndefault = {}\n\n[superlink.{name}]\naddress = {}\n", toml_basic_string(name), toml_basic_string(address));
    match transport {
        Transport::Insecure => out.push_str("insecure = true\n"),
        Transport::RootCertificates(path) if path.starts_with('/') => {
            out.push_str(&format!("root-certificates = {}\n", toml_basic_string(path)));
        }
        Transport::RootCertificates(path) => return Err(format!("root-certificates {path:?} must be an absolute path")),
    }
    Ok(out)
}

/// `flwr run APP CONNECTION [--run-config '…'] --format json`.
pub fn flwr_run_argv(flwr: &str, app_dir: &str, connection: &str, rc: &RunConfig) -> Vec<String> {
    let mut argv = vec![flwr.to_string(), "run".into(), app_dir.into(), connection.into()];
    if !rc.entries.is_empty() {
        argv.push("--run-config".into());
        argv.push(rc.render());
    }
    argv.extend(["--format".into(), "json".into()]);
    argv
}

/// `flwr ls CONNECTION [--run-id ID] --format json`.
pub fn flwr_ls_argv(flwr: &str, connection: &str, run_id: Option<u64>) -> Vec<String> {
    let mut argv = vec![flwr.to_string(), "ls".into(), connection.into()];
    if let Some(id) = run_id {
        argv.extend(["--run-id".into(), id.to_string()]);
    }
    argv.extend(["--format".into(), "json".into()]);
    argv
}

/// What a `flwr … --format json` call said. flwr exits 0 even when it failed: the JSON's
/// `success` is the only reliable signal.
#[derive(Debug, Clone, PartialEq)]
pub enum FlwrError {
    /// `success: false`, with flwr's `error-message` (e.g. `[code: 15] Invalid run configuration.`).
    Refused(String),
    /// Not the JSON flwr prints (a crash, a traceback, a version change).
    Unreadable(String),
}

impl fmt::Display for FlwrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlwrError::Refused(m) => write!(f, "flwr refused: {}", m.trim()),
            FlwrError::Unreadable(m) => write!(f, "read flwr output: {m}"),
        }
    }
}

impl std::error::Error for FlwrError {}

/// A run that `flwr run` started.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub run_id: u64,
    pub fab_id: String,
    pub fab_version: String,
    pub fab_hash: String,
}

#[derive(Deserialize)]
struct Envelope {
    success: bool,
    #[serde(rename = "error-message", default)]
    error_message: String,
}

/// flwr prints run ids as JSON strings (u64 exceeds JSON-safe integers); accept numbers too.
fn run_id_of(v: &serde_json::Value) -> Result<u64, FlwrError> {
    match v {
        serde_json::Value::String(s) => s.parse().map_err(|_| FlwrError::Unreadable(format!("run id {s:?} is not a u64"))),
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(|| FlwrError::Unreadable(format!("run id {n} is not a u64"))),
        other => Err(FlwrError::Unreadable(format!("run id {other} is not a u64"))),
    }
}

fn envelope(stdout: &str) -> Result<serde_json::Value, FlwrError> {
    let doc: serde_json::Value = serde_json::from_str(stdout.trim()).map_err(|e| FlwrError::Unreadable(format!("{e}: {:.200}", stdout.trim())))?;
    let env: Envelope = serde_json::from_value(doc.clone()).map_err(|e| FlwrError::Unreadable(e.to_string()))?;
    if !env.success {
        return Err(FlwrError::Refused(env.error_message));
    }
    Ok(doc)
}

fn field_str(doc: &serde_json::Value, key: &str) -> String {
    doc.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string()
}

/// Parse the stdout of `flwr run … --format json`.
pub fn parse_run_output(stdout: &str) -> Result<Submitted, FlwrError> {
    let doc = envelope(stdout)?;
    let id = doc.get("run-id").ok_or_else(|| FlwrError::Unreadable("no run-id".into()))?;
    Ok(Submitted {
        run_id: run_id_of(id)?,
        fab_id: field_str(&doc, "fab-id"),
        fab_version: field_str(&doc, "fab-version"),
        fab_hash: field_str(&doc, "fab-hash"),
    })
}

/// A run's lifecycle state as `flwr ls` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Pending,
    Starting,
    Running,
    Completed,
    Failed,
    Stopped,
    /// A status this flwr version did not have: shown as is, treated as not finished.
    Other(String),
}

impl RunState {
    pub fn parse(s: &str) -> RunState {
        match s {
            "pending" => RunState::Pending,
            "starting" => RunState::Starting,
            "running" => RunState::Running,
            "finished:completed" => RunState::Completed,
            "finished:failed" => RunState::Failed,
            "finished:stopped" => RunState::Stopped,
            other => RunState::Other(other.into()),
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, RunState::Completed | RunState::Failed | RunState::Stopped) || matches!(self, RunState::Other(s) if s.starts_with("finished:"))
    }

    /// The FL_RUN_STATUS word: pending, starting, running, completed, failed, stopped.
    pub fn as_str(&self) -> &str {
        match self {
            RunState::Pending => "pending",
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Stopped => "stopped",
            RunState::Other(s) => s,
        }
    }
}

/// One row of `flwr ls --format json`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub run_id: u64,
    pub state: RunState,
    /// flwr's `status-details` ("N/A" becomes empty), e.g. the ServerApp's exception.
    pub details: String,
    pub fab_id: String,
    pub fab_version: String,
    pub elapsed_s: f64,
    /// `YYYY-MM-DD HH:MM:SSZ` or empty.
    pub pending_at: String,
    pub finished_at: String,
}

/// Parse the stdout of `flwr ls … --format json` (all runs, or the one of `--run-id`).
pub fn parse_ls_output(stdout: &str) -> Result<Vec<RunInfo>, FlwrError> {
    let doc = envelope(stdout)?;
    let runs = doc.get("runs").and_then(|r| r.as_array()).ok_or_else(|| FlwrError::Unreadable("no runs array".into()))?;
    let na = |s: String| if s == "N/A" { String::new() } else { s };
    runs.iter()
        .map(|r| {
            Ok(RunInfo {
                run_id: run_id_of(r.get("run-id").unwrap_or(&serde_json::Value::Null))?,
                state: RunState::parse(&field_str(r, "status")),
                details: na(field_str(r, "status-details")),
                fab_id: field_str(r, "fab-id"),
                fab_version: field_str(r, "fab-version"),
                elapsed_s: r.get("elapsed").and_then(|v| v.as_f64()).unwrap_or(0.0),
                pending_at: na(field_str(r, "pending-at")),
                finished_at: na(field_str(r, "finished-at")),
            })
        })
        .collect()
}

/// The app's progress as its ServerApp wrote it to `status-file` (apps/appliance, files.py).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AppStatus {
    #[serde(deserialize_with = "de_run_id")]
    pub run_id: u64,
    /// waiting | running | completed | failed
    pub status: String,
    /// Last finished round (0 before the first).
    pub round: u32,
    pub num_rounds: Option<u32>,
    /// Federated evaluation after `round` (None before round 1).
    pub loss: Option<f64>,
    pub accuracy: Option<f64>,
    pub strategy: Option<String>,
    pub use_case: Option<String>,
    /// While waiting for the minimum nodes.
    pub connected_nodes: Option<u32>,
    /// Why it failed (or a note such as "resumed from …").
    #[serde(default)]
    pub message: String,
    /// The newest checkpoint file, if checkpointing.
    pub checkpoint: Option<String>,
    /// UTC time of the last write.
    pub updated: String,
}

fn de_run_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    run_id_of(&v).map_err(serde::de::Error::custom)
}

/// Parse the status file (read from the state directory the container bind-mounts).
pub fn parse_status_file(text: &str) -> Result<AppStatus, String> {
    serde_json::from_str(text).map_err(|e| format!("parse app status file: {e}"))
}

impl AppStatus {
    /// The FL_RUN_* attributes for OneGate and /status (metrics only once there are some).
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("FL_RUN_ID", self.run_id.to_string()),
            ("FL_RUN_STATUS", self.status.clone()),
            ("FL_RUN_ROUND", match self.num_rounds {
                Some(n) => format!("{}/{n}", self.round),
                None => self.round.to_string(),
            }),
        ];
        if let Some(l) = self.loss {
            out.push(("FL_RUN_LOSS", format!("{l:.6}")));
        }
        if let Some(a) = self.accuracy {
            out.push(("FL_RUN_ACCURACY", format!("{a:.6}")));
        }
        if self.status == "failed" && !self.message.is_empty() {
            out.push(("FL_RUN_ERROR", self.message.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy as FlStrategy;
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
    fn the_bundled_app_declares_every_key_the_appliance_sets_with_its_type() {
        let schema = app_schema();
        for uc in [UseCase::TabularClassification, UseCase::ImageClassification, UseCase::LlmFineTuning] {
            for st in FlStrategy::ALL {
                let rc = RunSettings { use_case: uc, strategy: *st, ..settings() }.to_run_config().unwrap();
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

    #[test]
    fn connection_config_and_argv() {
        let toml_text = flwr_config_toml(CONNECTION, "127.0.0.1:8000", &Transport::Insecure).unwrap();
        assert_eq!(toml_text, "[superlink]\ndefault = \"appliance\"\n\n[superlink.appliance]\naddress = \"127.0.0.1:8000\"\ninsecure = true\n");
        let tls = flwr_config_toml(CONNECTION, "127.0.0.1:8000", &Transport::RootCertificates("/certs/ca.crt".into())).unwrap();
        let doc: toml::Table = tls.parse().unwrap();
        assert_eq!(doc["superlink"]["appliance"]["root-certificates"].as_str(), Some("/certs/ca.crt"));
        assert_eq!(doc["superlink"]["default"].as_str(), Some("appliance"));
        assert!(flwr_config_toml(CONNECTION, "x", &Transport::RootCertificates("ca.crt".into())).is_err());
        let rc = settings().to_run_config().unwrap();
        let argv = flwr_run_argv("flwr", "/opt/app", CONNECTION, &rc);
        assert_eq!(&argv[..5], ["flwr", "run", "/opt/app", "appliance", "--run-config"]);
        assert_eq!(argv[5], rc.render());
        assert_eq!(&argv[6..], ["--format", "json"]);
        assert_eq!(flwr_run_argv("flwr", ".", "c", &RunConfig::default()), ["flwr", "run", ".", "c", "--format", "json"]);
        assert_eq!(flwr_ls_argv("flwr", "c", Some(7)), ["flwr", "ls", "c", "--run-id", "7", "--format", "json"]);
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn parses_real_flwr_run_outputs() {
        let s = parse_run_output(&fixture("flwr/run-success.json")).unwrap();
        assert_eq!(s.run_id, 3644363968915653623);
        assert_eq!(s.fab_id, "flower-init/appliance");
        assert_eq!(s.fab_version, "1.0.0");
        match parse_run_output(&fixture("flwr/run-unknown-key.json")) {
            Err(FlwrError::Refused(m)) => assert!(m.contains("[code: 15] Invalid run configuration."), "{m}"),
            other => panic!("{other:?}"),
        }
        match parse_run_output(&fixture("flwr/run-bad-format.json")) {
            Err(FlwrError::Refused(m)) => assert!(m.contains("invalid format"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_run_output("Traceback (most recent call last):"), Err(FlwrError::Unreadable(_))));
    }

    #[test]
    fn parses_real_flwr_ls_outputs() {
        let starting = parse_ls_output(&fixture("flwr/ls-starting.json")).unwrap();
        assert_eq!(starting.len(), 1);
        assert_eq!(starting[0].state, RunState::Starting);
        assert!(!starting[0].state.is_finished());
        assert_eq!(starting[0].finished_at, "");
        let done = parse_ls_output(&fixture("flwr/ls-completed.json")).unwrap();
        assert_eq!(done[0].run_id, 3644363968915653623);
        assert_eq!(done[0].state, RunState::Completed);
        assert!(done[0].state.is_finished());
        assert!(done[0].elapsed_s > 0.0);
        assert_eq!(done[0].details, "");
        let failed = parse_ls_output(&fixture("flwr/ls-failed.json")).unwrap();
        assert_eq!(failed[0].state, RunState::Failed);
        assert!(failed[0].details.contains("n >= 2f+3"), "{}", failed[0].details);
        assert!(matches!(parse_ls_output(&fixture("flwr/ls-unknown-run.json")), Err(FlwrError::Refused(m)) if m.contains("[code: 16]")));
        assert!(RunState::parse("finished:weird").is_finished());
        assert_eq!(RunState::parse("queued"), RunState::Other("queued".into()));
    }

    #[test]
    fn parses_the_apps_status_files() {
        let done = parse_status_file(&fixture("app/status-completed.json")).unwrap();
        assert_eq!(done.run_id, 3644363968915653623);
        assert_eq!(done.status, "completed");
        assert_eq!((done.round, done.num_rounds), (2, Some(2)));
        assert!(done.accuracy.unwrap() > 0.9);
        let attrs = done.attributes();
        assert_eq!(attrs[0], ("FL_RUN_ID", "3644363968915653623".to_string()));
        assert_eq!(attrs[2], ("FL_RUN_ROUND", "2/2".to_string()));
        assert!(attrs.iter().any(|(k, _)| *k == "FL_RUN_ACCURACY"));
        let failed = parse_status_file(&fixture("app/status-failed-krum.json")).unwrap();
        assert_eq!(failed.status, "failed");
        assert_eq!(failed.loss, None);
        assert!(failed.attributes().iter().any(|(k, v)| *k == "FL_RUN_ERROR" && v.contains("2f+3")));
        assert!(parse_status_file("{}").is_err());
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
