//! Submitting and following a run with the `flwr` CLI (inside the SuperLink's container):
//! the connection file, the argv, and parsers for `flwr run`/`flwr ls --format json` and the
//! app's status file. Pure: the caller runs the commands and reads the files.

use super::{RunConfig, is_bare_key, toml_basic_string};
use serde::Deserialize;
use std::fmt;

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

/// The JSON document when flwr says `success: true`, else its error message.
fn envelope(stdout: &str) -> Result<serde_json::Value, FlwrError> {
    let doc: serde_json::Value = serde_json::from_str(stdout.trim()).map_err(|e| FlwrError::Unreadable(format!("{e}: {:.200}", stdout.trim())))?;
    let env: Envelope = serde_json::from_value(doc.clone()).map_err(|e| FlwrError::Unreadable(e.to_string()))?;
    if !env.success {
        return Err(FlwrError::Refused(env.error_message));
    }
    Ok(doc)
}

/// A string field, empty when absent (flwr omits fields between versions).
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
    /// From `flwr ls`'s `status` field; unknown words are kept as [`RunState::Other`].
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

    /// Any `finished:*` state: stop polling.
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
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
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

/// The status file's run id: a string (u64) or a number.
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
    use crate::runconfig::Value;

    #[test]
    fn connection_config_and_argv() {
        let toml_text = flwr_config_toml(CONNECTION, "127.0.0.1:8000", &Transport::Insecure).unwrap();
        assert_eq!(toml_text, "[superlink]\ndefault = \"appliance\"\n\n[superlink.appliance]\naddress = \"127.0.0.1:8000\"\ninsecure = true\n");
        let tls = flwr_config_toml(CONNECTION, "127.0.0.1:8000", &Transport::RootCertificates("/certs/ca.crt".into())).unwrap();
        let doc: toml::Table = tls.parse().unwrap();
        assert_eq!(doc["superlink"]["appliance"]["root-certificates"].as_str(), Some("/certs/ca.crt"));
        assert_eq!(doc["superlink"]["default"].as_str(), Some("appliance"));
        assert!(flwr_config_toml(CONNECTION, "x", &Transport::RootCertificates("ca.crt".into())).is_err());
        let mut rc = RunConfig::default();
        rc.set("strategy", Value::Str("FedProx".into())).set("checkpoint-dir", Value::Str("/a b".into()));
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

}
