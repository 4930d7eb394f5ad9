//! The training run (SuperLink with FL_USE_CASE): the bundled app submitted with the run
//! config built from the context (its FAB, built at image-build time, over the loopback
//! Control API; `flwr run` in a one-shot container for an image without one), then followed round by round through the app's status file into `/status`
//! and OneGate (FL_RUN_*). A completed run is not submitted again on reboot.

use super::steps::{Boot, Failed, Note};
use super::watchdog::Watchdog;
use super::{Node, spec, workload};
use crate::container::{self, BindMount};
use crate::error::{Ctx, Error, Result};
use crate::flower::control;
use crate::{flower, runconfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `flwr run` (a one-shot container: a Python start, the FAB upload) may take this long.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(600);
/// One Control API call may take this long (StartRun stores the FAB in Flower's database).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);
/// Where the run's status file is, as the container sees it (on the state directory).
const STATUS_FILE: &str = "/state/run-status.json";

/// A submitted training run being followed through the app's status file.
pub(super) struct Follow {
    run_id: u64,
    host_status_file: PathBuf,
    last: Option<runconfig::AppStatus>,
    /// Notices a run that cannot progress (watchdog.rs).
    watch: Watchdog,
    /// The watchdog's verdict was published (until the app's own status replaces it).
    judged: bool,
}

impl Follow {
    /// Follow run `run_id` through `host_status_file`, submitted now.
    fn new(run_id: u64, host_status_file: PathBuf) -> Follow {
        Follow { run_id, host_status_file, last: None, watch: Watchdog::new(Instant::now()), judged: false }
    }
}

impl Follow {
    /// The run has ended (completed or failed): nothing more to follow.
    pub(super) fn ended(&self) -> bool {
        self.last.as_ref().is_some_and(|s| s.status == "completed" || s.status == "failed")
    }

    /// One line of the SuperLink's output, for the run's watchdog.
    pub(super) fn on_output_line(&mut self, line: &str) {
        self.watch.on_line(line);
    }
}

/// SuperLink with FL_USE_CASE: submit the bundled app with the run config from the context
/// over the loopback Control API.
pub(super) fn submit(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    boot.step("run", |b| {
        let sl = node.cfg.role.superlink().ok_or_else(|| Error::msg("submit the run", "not a SuperLink"))?;
        let ckpt = sl.checkpoint.as_ref().map(|c| spec::state_path_in_container(&c.path)).transpose()?;
        let settings = runconfig::RunSettings::from_superlink(sl, node.cfg.common.use_case, ckpt.as_deref(), STATUS_FILE)
            .map_err(|e| Error::msg("build the run config", e.to_string()))?;
        let rc = settings.to_run_config().map_err(|e| Error::msg("build the run config", e.to_string()))?;
        if let Err(problems) = node.manifest.app.config.validate(&rc) {
            let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            return Err(Error::msg("check the run config against the app", text.join("; ")));
        }
        let host_status = spec::host_state_dir(b).join("run-status.json");
        // The status of the last run, if any: a completed run of this configuration is not
        // submitted again on reboot (submit a new one with `flwr run`).
        let marker = spec::host_state_dir(b).join("submitted-run.json");
        let rendered = rc.render();
        if let Ok(prev) = std::fs::read_to_string(&marker) {
            let prev: serde_json::Value = serde_json::from_str(&prev).unwrap_or_default();
            let done = std::fs::read_to_string(&host_status).ok().and_then(|t| runconfig::parse_status_file(&t).ok()).filter(|s| s.status == "completed");
            if prev["run_config"] == rendered && done.is_some() {
                let id = prev["run_id"].as_u64().unwrap_or(0);
                node.run = Some(Follow::new(id, host_status));
                return Ok(((), Note::Skip(format!("run {id} with this configuration already completed; not submitted again"))));
            }
        }
        // The image's FAB over the Control API (milliseconds); an image built before the FAB
        // was part of it: `flwr run` in a one-shot container (a Python start).
        let submitted = match &node.manifest.app.fab {
            Some(fab) => submit_over_control(b, node, fab, &rc),
            None => submit_with_flwr_run(b, node, &rc),
        };
        let run_id = match submitted {
            Ok(id) => id,
            Err(e) => {
                // Flower is up and serving; only the submission failed (a timeout on a slow
                // host, a Flower error, a FAB that does not match the image manifest). The SuperLink stays up and says the run failed; an operator
                // can submit one with `flwr run` through the Control port.
                let msg = e.to_string();
                log::error!("run not submitted: {msg}; the SuperLink stays up (submit one with `flwr run`)");
                let st = runconfig::AppStatus {
                    run_id: 0,
                    status: "failed".into(),
                    round: 0,
                    num_rounds: Some(sl.num_rounds),
                    loss: None,
                    accuracy: None,
                    strategy: Some(sl.strategy.to_string()),
                    use_case: Some(node.cfg.common.use_case.to_string()),
                    connected_nodes: None,
                    message: format!("not submitted: {msg}"),
                    checkpoint: None,
                    updated: String::new(),
                };
                b.onegate.set_pairs(st.attributes());
                b.report.run = Some(st);
                b.show();
                return Ok(((), Note::Warn(format!("run not submitted: {msg}"))));
            }
        };
        let rec = serde_json::json!({"run_id": run_id, "run_config": rendered});
        crate::fsutil::write_atomic(&marker, rec.to_string().as_bytes(), 0o644, None).with_ctx(|| format!("write {}", marker.display()))?;
        log::info!("run {run_id} submitted: {} rounds of {} with {}", sl.num_rounds, node.cfg.common.use_case, sl.strategy);
        node.run = Some(Follow::new(run_id, host_status));
        Ok(((), Note::Ok(format!("run {run_id} submitted ({rendered})"))))
    })
}

/// The run config as Flower's own CLI sends it (`common/serde.py`
/// `user_config_value_to_proto`): integers `sint64`, floats `double`, booleans, strings.
pub(super) fn override_config(rc: &runconfig::RunConfig) -> Vec<(String, control::Scalar)> {
    rc.entries
        .iter()
        .map(|(k, v)| {
            let s = match v {
                runconfig::Value::Int(i) => control::Scalar::Sint64(*i),
                runconfig::Value::Float(f) => control::Scalar::Double(*f),
                runconfig::Value::Bool(b) => control::Scalar::Bool(*b),
                runconfig::Value::Str(s) => control::Scalar::String(s.clone()),
            };
            (k.clone(), s)
        })
        .collect()
}

/// StartRun over the loopback Control API (docs/control-api.md): the FAB built at
/// image-build time (size and sha256 checked against the manifest first), the run config as
/// overrides, the default federation. Then ListRuns: Flower's own hash of what it stored
/// must be the manifest's.
fn submit_over_control(b: &Boot, node: &Node, fab: &crate::image::Fab, rc: &runconfig::RunConfig) -> Result<u64> {
    let content = fab.read_at(&b.layout.image_root)?;
    let tls = node.tls.as_ref().map(|(ca, _)| flower::ProbeTls { ca_pem: ca.clone(), server_name: "127.0.0.1".into() });
    let addr = SocketAddr::from(([127, 0, 0, 1], flower::SUPERLINK_PORT));
    let what = || format!("submit the run over the Control API ({addr})");
    let api = control::Control::new(addr, tls.as_ref(), CONTROL_TIMEOUT).map_err(|e| Error::msg(what(), e.to_string()))?;
    let req = control::StartRunRequest {
        fab_content: content,
        fab_hash: fab.sha256.clone(),
        override_config: override_config(rc),
        federation: String::new(),
    };
    let t0 = Instant::now();
    let started = api.start_run(&req).map_err(|e| Error::msg(what(), e.to_string()))?;
    let run_id = started.run_id.ok_or_else(|| Error::msg(what(), "no run id"))?;
    let listed = api.list_runs(Some(run_id), None).map_err(|e| Error::msg(format!("list run {run_id} (Control API)"), e.to_string()))?;
    match listed.iter().find(|r| r.run_id == run_id) {
        Some(r) if r.fab_hash == fab.sha256 => {}
        Some(r) => log::warn!("run {run_id}: Flower hashed the FAB as {}, the image manifest says {}", r.fab_hash, fab.sha256),
        None => log::warn!("run {run_id}: not in Flower's ListRuns answer"),
    }
    log::info!(
        "run {run_id} submitted over the Control API in {} ms ({} bytes of FAB, federation {})",
        t0.elapsed().as_millis(),
        req.fab_content.len(),
        started.federation
    );
    Ok(run_id)
}

/// `flwr run` in a one-shot container against the loopback Control API (images without a
/// FAB in their manifest): the run id it prints.
fn submit_with_flwr_run(b: &mut Boot, node: &Node, rc: &runconfig::RunConfig) -> Result<u64> {
    let home = b.layout.run_dir.join("flwr-cli");
    std::fs::create_dir_all(&home).with_ctx(|| format!("create {}", home.display()))?;
    std::os::unix::fs::chown(&home, Some(container::CONTAINER_UID), Some(container::CONTAINER_GID))
        .with_ctx(|| format!("chown {}", home.display()))?;
    let transport = match &node.tls {
        Some(_) => runconfig::Transport::RootCertificates(flower::supernode_ca_path()),
        None => runconfig::Transport::Insecure,
    };
    let toml = runconfig::flwr_config_toml(runconfig::CONNECTION, &format!("127.0.0.1:{}", flower::SUPERLINK_PORT), &transport)
        .map_err(|e| Error::msg("write the Flower CLI config", e))?;
    crate::fsutil::write_atomic(
        &home.join("config.toml"),
        toml.as_bytes(),
        0o644,
        Some((container::CONTAINER_UID, container::CONTAINER_GID)),
    )
    .with_ctx(|| format!("write {}", home.join("config.toml").display()))?;
    let argv = runconfig::flwr_run_argv(
        &format!("{}/flwr", container::VENV_BIN),
        &node.manifest.app.path.display().to_string(),
        runconfig::CONNECTION,
        rc,
    );
    let out = one_shot(b, node, "submit", argv, &home)?;
    let submitted = runconfig::parse_run_output(&out).map_err(|e| Error::msg("submit the run (flwr run)", e.to_string()))?;
    Ok(submitted.run_id)
}

/// Run a Flower CLI command in a one-shot container (same image, same certificates, the CLI's
/// `$FLWR_HOME` bound from `home`), under the supervisor; its stdout.
fn one_shot(b: &mut Boot, node: &Node, suffix: &str, argv: Vec<String>, home: &Path) -> Result<String> {
    let id = format!("{}-{suffix}", node.id);
    let rootfs = spec::container_rootfs(b)?;
    let mut s = spec::spec(b, node, &id, argv, &rootfs);
    s.mounts.push(BindMount { source: home.to_path_buf(), destination: format!("{}/.flwr", container::HOME_DIR), read_only: false });
    let bundle = container::write_bundle(&b.layout.run_dir.join("bundle").join(&id), &s)?;
    let _ = workload::run_argv(&mut b.sv, "runc delete", &node.runc.delete(&id, true));
    let mut argv = node.runc.run(&bundle, &id);
    let bin = argv.remove(0);
    let mut cmd = Command::new(bin);
    cmd.args(argv);
    let o = b.sv.run(&id, cmd, SUBMIT_TIMEOUT)?;
    if !o.success() {
        let why = format!("exit {}{}: {}", o.code, if o.timed_out { " (timed out)" } else { "" }, workload::tail(&o.stdout, &o.stderr));
        return Err(Error::msg(format!("run {}", s.args.join(" ")), why));
    }
    Ok(o.stdout)
}

/// Read the run's status file; publish and show what changed.
pub(super) fn follow(b: &mut Boot, node: &mut Node) {
    let Some(run) = &mut node.run else { return };
    let Ok(text) = std::fs::read_to_string(&run.host_status_file) else { return };
    let Ok(st) = runconfig::parse_status_file(&text) else { return };
    if st.run_id != run.run_id && run.run_id != 0 {
        return; // the file of an earlier run, not rewritten yet
    }
    if run.last.as_ref() == Some(&st) {
        return;
    }
    log::info!(
        "run {}: {} round {}/{}{}{}",
        st.run_id,
        st.status,
        st.round,
        st.num_rounds.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
        st.loss.map(|l| format!(" loss={l:.4}")).unwrap_or_default(),
        st.accuracy.map(|a| format!(" accuracy={a:.4}")).unwrap_or_default()
    );
    b.onegate.set_pairs(st.attributes());
    b.report.run = Some(st.clone());
    b.show();
    run.watch.on_progress(Instant::now());
    run.judged = false;
    run.last = Some(st);
}


/// Ask the watchdog whether the followed run can still progress; when it cannot, report it
/// failed (FL_RUN_STATUS, FL_RUN_ERROR, `/status`) once. The run is left to Flower: should
/// its app write a status later, that status replaces the verdict.
pub(super) fn check_progress(b: &mut Boot, node: &mut Node) {
    let Some(run) = &mut node.run else { return };
    if run.ended() || run.judged {
        return;
    }
    let Some(why) = run.watch.verdict(Instant::now()) else { return };
    log::error!("run {}: {why}", run.run_id);
    let sl = node.cfg.role.superlink();
    let last = run.last.clone();
    let st = runconfig::AppStatus {
        run_id: run.run_id,
        status: "failed".into(),
        round: last.as_ref().map_or(0, |s| s.round),
        num_rounds: last.as_ref().and_then(|s| s.num_rounds).or(sl.map(|s| s.num_rounds)),
        loss: last.as_ref().and_then(|s| s.loss),
        accuracy: last.as_ref().and_then(|s| s.accuracy),
        strategy: sl.map(|s| s.strategy.to_string()),
        use_case: Some(node.cfg.common.use_case.to_string()),
        connected_nodes: None,
        message: why,
        checkpoint: last.as_ref().and_then(|s| s.checkpoint.clone()),
        updated: String::new(),
    };
    b.onegate.set_pairs(st.attributes());
    b.report.run = Some(st);
    b.show();
    run.judged = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::Scalar;

    /// The overrides as `flwr run --run-config` would send them: same keys, and the protobuf
    /// types of Flower's `user_config_value_to_proto` (ints sint64, floats double).
    #[test]
    fn run_config_becomes_flowers_overrides() {
        let mut rc = runconfig::RunConfig::default();
        rc.set("num-server-rounds", runconfig::Value::Int(3))
            .set("proximal-mu", runconfig::Value::Float(0.1))
            .set("checkpoint-enabled", runconfig::Value::Bool(false))
            .set("strategy", runconfig::Value::Str("FedProx".into()));
        assert_eq!(
            override_config(&rc),
            vec![
                ("checkpoint-enabled".to_string(), Scalar::Bool(false)),
                ("num-server-rounds".to_string(), Scalar::Sint64(3)),
                ("proximal-mu".to_string(), Scalar::Double(0.1)),
                ("strategy".to_string(), Scalar::String("FedProx".into())),
            ]
        );
        assert!(override_config(&runconfig::RunConfig::default()).is_empty());
    }
}
