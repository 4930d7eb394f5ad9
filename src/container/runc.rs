//! runc command lines (pure argument vectors), `runc state` / `runc list` parsing, and the
//! clean-up of a container left over by an earlier run.
//!
//! Life of the container (linuxkit's `runc.go` pattern; the supervisor owns every pid):
//! `create` (runc forks the container init and exits; the init is re-parented to us and we
//! reap it), `start`, then on shutdown `kill ID TERM`, grace, `kill ID KILL`, and `delete`.

use serde::Deserialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// How to call runc: the binary, its state directory and its log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runc {
    pub binary: PathBuf,
    /// `--root`: on tmpfs; several flower-inits on one host (tests) each use their own.
    pub root: PathBuf,
    /// `--log` (JSON lines, `--log-format json`): runc's own errors, read when a call fails.
    pub log: PathBuf,
}

impl Runc {
    /// `/usr/sbin/runc` with state in `root` and its log at `root/runc.log`.
    pub fn new(root: &Path) -> Runc {
        Runc { binary: PathBuf::from("/usr/sbin/runc"), root: root.to_path_buf(), log: root.join("runc.log") }
    }

    /// The global options, after the binary.
    fn base(&self, verb: &str) -> Vec<OsString> {
        vec![
            self.binary.clone().into(),
            "--root".into(),
            self.root.clone().into(),
            "--log".into(),
            self.log.clone().into(),
            "--log-format".into(),
            "json".into(),
            verb.into(),
        ]
    }

    /// `runc … create --bundle B --pid-file P ID`: sets up the container and leaves its init
    /// waiting for `start`; the init's stdio are runc's (pass pipes).
    pub fn create(&self, bundle: &Path, pid_file: &Path, id: &str) -> Vec<OsString> {
        let mut a = self.base("create");
        a.extend(["--bundle".into(), bundle.into(), "--pid-file".into(), pid_file.into(), id.into()]);
        a
    }

    /// `runc … run --bundle B ID`: create, start and wait, for one-shot commands (runc stays
    /// the parent, proxies signals and exits with the container's code).
    pub fn run(&self, bundle: &Path, id: &str) -> Vec<OsString> {
        let mut a = self.base("run");
        a.extend(["--bundle".into(), bundle.into(), id.into()]);
        a
    }

    /// `runc … start ID`.
    pub fn start(&self, id: &str) -> Vec<OsString> {
        let mut a = self.base("start");
        a.push(id.into());
        a
    }

    /// `runc … kill ID SIGNAL` (e.g. `TERM`, `KILL`): signals the container's init.
    pub fn kill(&self, id: &str, signal: &str) -> Vec<OsString> {
        let mut a = self.base("kill");
        a.extend([id.into(), signal.into()]);
        a
    }

    /// `runc … delete [--force] ID`: removes the state and cgroup (`--force` kills first).
    pub fn delete(&self, id: &str, force: bool) -> Vec<OsString> {
        let mut a = self.base("delete");
        if force {
            a.push("--force".into());
        }
        a.push(id.into());
        a
    }

    /// `runc … state ID`: JSON, see [`parse_state`].
    pub fn state(&self, id: &str) -> Vec<OsString> {
        let mut a = self.base("state");
        a.push(id.into());
        a
    }

    /// `runc … list --format json`: see [`parse_list`].
    pub fn list(&self) -> Vec<OsString> {
        let mut a = self.base("list");
        a.extend(["--format".into(), "json".into()]);
        a
    }

    /// The last error runc logged (its `--log` file holds JSON lines `{"level","msg","time"}`),
    /// to explain a failed call.
    pub fn last_error(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        last_log_error(&text)
    }
}

/// The `msg` of the last `error`/`fatal` line of a runc JSON log.
pub fn last_log_error(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Line {
        level: String,
        msg: String,
    }
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .find(|l| l.level == "error" || l.level == "fatal")
        .map(|l| l.msg)
}

/// A container's status as runc reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
    Other(String),
}

impl Status {
    fn from_word(s: &str) -> Status {
        match s {
            "creating" => Status::Creating,
            "created" => Status::Created,
            "running" => Status::Running,
            "paused" => Status::Paused,
            "stopped" => Status::Stopped,
            other => Status::Other(other.to_string()),
        }
    }
}

/// The fields of `runc state` (and of each `runc list --format json` entry) we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub id: String,
    /// The container init's pid in our namespace (0 once stopped).
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
}

#[derive(Deserialize)]
struct RawState {
    id: String,
    pid: i32,
    status: String,
    bundle: PathBuf,
}

impl From<RawState> for State {
    fn from(r: RawState) -> State {
        State { id: r.id, pid: r.pid, status: Status::from_word(&r.status), bundle: r.bundle }
    }
}

/// Parse the output of `runc state ID`.
pub fn parse_state(json: &str) -> Result<State, String> {
    serde_json::from_str::<RawState>(json).map(State::from).map_err(|e| format!("runc state output: {e}"))
}

/// Parse the output of `runc list --format json` (runc prints `null` when there is none).
pub fn parse_list(json: &str) -> Result<Vec<State>, String> {
    serde_json::from_str::<Option<Vec<RawState>>>(json)
        .map(|l| l.unwrap_or_default().into_iter().map(State::from).collect())
        .map_err(|e| format!("runc list output: {e}"))
}

/// If runc still knows a container `id` (a crashed earlier run in service mode, or a restart),
/// `delete --force` it so `create` can reuse the id. `run` runs a runc command to completion
/// through the caller's reaper (runc's stdout, or an error text): list, find `id`, delete it.
/// Returns the state that was removed.
pub fn cleanup_stale(
    runc: &Runc,
    id: &str,
    mut run: impl FnMut(&[OsString]) -> Result<String, String>,
) -> crate::error::Result<Option<State>> {
    use crate::error::Ctx;
    let listed = run(&runc.list()).ctx("list runc containers")?;
    let stale = parse_list(&listed).ctx("list runc containers")?.into_iter().find(|s| s.id == id);
    if stale.is_some() {
        run(&runc.delete(id, true)).with_ctx(|| format!("delete stale container {id}"))?;
    }
    Ok(stale)
}
