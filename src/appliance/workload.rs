//! Flower in its container: start it (runc create, adopt the container's init, runc start),
//! wait for its `/health`, restart it, stop it. Every runc call runs under the supervisor
//! (the one reaper); the container's output lines reach the console and the `/status` ring.

use super::Node;
use super::spec;
use super::steps::{Boot, Failed, Note};
use crate::config;
use crate::container::{self, OutputRing, Runc};
use crate::error::{Ctx, Error, Result};
use crate::flower::probe::Prober;
use crate::flower::ProbeTls;
use crate::supervisor::{self, Event, Output, Supervisor};
use crate::vocab::Role;
use nix::unistd::Pid;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long Flower may take from `runc start` to answering `/health` before the boot fails.
/// Generous: a SuperLink's first start takes ~25 s under TCG on one CPU (BENCHMARKS.md).
const FLOWER_READY_TIMEOUT: Duration = Duration::from_secs(600);
/// The readiness probe's cadence, as the baseline's probe (research/baseline-systemd-vm.md).
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long one probe of `/health` may take.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Starts of the container during boot before a Flower that exits at once fails the boot (a
/// wrong CA or a bad flag never gets better; a transient failure does).
const BOOT_ATTEMPTS: u32 = 3;
/// Entries of the data disk looked at for files the container user cannot read (a bound on
/// the boot's time with a disk of many small files).
const DATA_SCAN_LIMIT: usize = 20_000;
/// runc create/start/kill/delete must each finish in this time.
const RUNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Write the bundle and start the Flower container (runc create, adopt its init, runc start).
pub(super) fn start(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    boot.step("container", |b| {
        let rootfs = spec::container_rootfs(b)?;
        container::prepare_state_dir(&spec::host_state_dir(b), container::CONTAINER_UID, container::CONTAINER_GID)?;
        seed_state_db(b, node, &rootfs);
        let args = spec::with_warm_app_start(&rootfs, spec::flower_args(node)?);
        let s = spec::spec(b, node, &node.id, args, &rootfs);
        let bundle = container::write_bundle(&b.layout.run_dir.join("bundle").join(&node.id), &s)?;
        std::fs::create_dir_all(&node.runc.root).with_ctx(|| format!("create {}", node.runc.root.display()))?;
        // A container of ours left by an earlier run (a crash, a service restart) is removed.
        let runc = node.runc.clone();
        let stale = container::cleanup_stale(&runc, &node.id, |argv| run_argv(&mut b.sv, "runc", argv))?;
        if let Some(st) = stale {
            log::warn!("container: removed a stale {:?} container {} left by an earlier run", st.status, node.id);
        }
        let pid = create_and_start(&mut b.sv, node, &bundle)?;
        let note = format!("{} running (init pid {pid}): {}", node.id, s.args.join(" "));
        // The data disk is bound read-only for the container user: say now what it cannot read.
        let access = s.data_dir.as_deref().map(|d| container::data_access(d, container::CONTAINER_UID, container::CONTAINER_GID, DATA_SCAN_LIMIT));
        match access.and_then(|a| a.problem(container::CONTAINER_UID)) {
            Some(p) => Ok(((), Note::Warn(format!("{note}; {p}")))),
            None => Ok(((), Note::Ok(note))),
        }
    })
}

/// The SuperLink's first boot with its database on the state disk: start from the image's
/// migrated empty database (`container::seed_state_db`). Failing to copy it only costs time
/// (Flower creates the database itself), so it is a warning.
fn seed_state_db(b: &Boot, node: &Node, rootfs: &Path) {
    let config::RoleConfig::SuperLink(sl) = &node.cfg.role else { return };
    let config::Database::File(p) = &sl.database else { return };
    let Ok(db) = spec::host_state_path(b, p) else { return };
    match container::seed_state_db(&rootfs.join(container::STATE_DB_TEMPLATE), &db, container::CONTAINER_UID, container::CONTAINER_GID) {
        Ok(true) => log::info!("container: {} seeded with the image's migrated empty state database", p.display()),
        Ok(false) => {}
        Err(e) => log::warn!("container: {e}; Flower creates the database itself"),
    }
}

/// Poll Flower's `/health` every 100 ms until it answers 200 (the DESIGN's readiness), while
/// the container's output flows to the console and a shutdown request ends the wait.
pub(super) fn wait_healthy(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    boot.step("flower", |b| {
        let started = Instant::now();
        let addr = spec::health_addr(node.role());
        let tls = match node.role() {
            Role::SuperLink => node.tls.as_ref().map(|(ca, _)| ProbeTls { ca_pem: ca.clone(), server_name: "127.0.0.1".into() }),
            // The SuperNode's local Runtime API (plain HTTP on loopback).
            Role::SuperNode => None,
        };
        let prober = Prober::new(addr, tls.as_ref()).map_err(|e| Error::msg("prepare the health probe", e.to_string()))?;
        let mut deadline = started + FLOWER_READY_TIMEOUT;
        let mut attempts = 0u32;
        let mut last;
        loop {
            match prober.check(PROBE_TIMEOUT) {
                Ok(()) => break,
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(Error::msg("wait for Flower's /health", format!("no 200 within {}s; last: {last}", FLOWER_READY_TIMEOUT.as_secs())));
            }
            let until = Instant::now() + PROBE_EVERY;
            while let Some(ev) = b.sv.next_event(Some(until)) {
                match ev {
                    Event::Exited { pid, status, .. } if Some(pid) == node.pid => {
                        node.pid = None;
                        if let Some(why) = super::admit::refused_now(node) {
                            // Not registered yet (the SuperLink registers the service's keys
                            // every few seconds): not a failed attempt; wait, and try again.
                            super::admit::report_refusal(b, &why);
                            deadline = Instant::now() + FLOWER_READY_TIMEOUT;
                            b.sv.sleep(super::admit::REFUSED_RETRY);
                            restart(b, node)?;
                            continue;
                        }
                        let why = format!("the container exited ({}) before /health answered{}", supervisor::describe_wait_status(status), last_lines(&node.ring, 5));
                        attempts += 1;
                        if attempts >= BOOT_ATTEMPTS {
                            return Err(Error::msg("start Flower", format!("{why} (attempt {attempts} of {BOOT_ATTEMPTS})")));
                        }
                        log::warn!("{why}; starting it again (attempt {} of {BOOT_ATTEMPTS})", attempts + 1);
                        b.sv.sleep(Duration::from_secs(attempts as u64));
                        restart(b, node)?;
                    }
                    Event::Shutdown(r) => return Err(Error::msg("wait for Flower's /health", format!("interrupted: {r}"))),
                    other => on_event(b, node, other),
                }
            }
        }
        let took = started.elapsed().as_secs_f64();
        super::admit::clear_refusal(b);
        log::info!("flower healthy: {addr} /health answered 200 after {took:.2}s");
        node.prober = Some(prober);
        Ok(((), Note::Ok(format!("/health 200 after {took:.2}s"))))
    })
}

/// `runc create` with the container's stdio on pipes (lines reach the console and the ring),
/// adopt the container init re-parented to us, `runc start`.
fn create_and_start(sv: &mut Supervisor, node: &mut Node, bundle: &Path) -> Result<Pid> {
    let pid_file = bundle.join("init.pid");
    let _ = std::fs::remove_file(&pid_file);
    let argv = node.runc.create(bundle, &pid_file, &node.id);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // The container inherits runc's stdout/stderr: spawn (not run) so the pipes outlive runc.
    let creator = sv.spawn(node.role().as_str(), cmd, Output::Events)?;
    let status = sv.wait_exit(creator, Some(Instant::now() + RUNC_TIMEOUT));
    let ok = matches!(status, Some(nix::sys::wait::WaitStatus::Exited(_, 0)));
    if !ok {
        let why = node.runc.last_error().unwrap_or_else(|| format!("{status:?}"));
        return Err(Error::msg(format!("runc create {}", node.id), why));
    }
    let text = std::fs::read_to_string(&pid_file).with_ctx(|| format!("read {}", pid_file.display()))?;
    let pid = Pid::from_raw(text.trim().parse().map_err(|_| Error::msg("read the container pid", text.clone()))?);
    sv.adopt(pid, node.role().as_str());
    run_argv(sv, "runc start", &node.runc.start(&node.id)).map_err(|e| Error::msg(format!("runc start {}", node.id), e))?;
    node.pid = Some(pid);
    sv.forward_signals_to(Some(pid));
    Ok(pid)
}

/// Restart: remove what is left of the old container, create and start a new one, wait for
/// `/health` again (the wait keeps serving health and noticing shutdown).
pub(super) fn restart(b: &mut Boot, node: &mut Node) -> Result<()> {
    let _ = run_argv(&mut b.sv, "runc delete", &node.runc.delete(&node.id, true));
    let bundle = b.layout.run_dir.join("bundle").join(&node.id);
    let pid = create_and_start(&mut b.sv, node, &bundle)?;
    log::info!("{}: restarted (init pid {pid})", node.id);
    Ok(())
}

/// `runc kill TERM`, wait up to `grace` for the init, `KILL`, wait, `delete`.
pub(super) fn stop(sv: &mut Supervisor, runc: &Runc, id: &str, pid: Option<Pid>, grace: Duration) -> Option<i32> {
    let Some(pid) = pid else {
        let _ = run_argv(sv, "runc delete", &runc.delete(id, true));
        return None;
    };
    let _ = run_argv(sv, "runc kill", &runc.kill(id, "TERM"));
    let code = match sv.wait_exit(pid, Some(Instant::now() + grace)) {
        // Stopped by the SIGTERM we sent (tini passes a signalled child on as 128+N): that is
        // the clean stop asked for, exit 0.
        Some(st) => match supervisor::exit_code_from_wait_status(st) {
            c if c == 128 + libc::SIGTERM => Some(0),
            c => Some(c),
        },
        None => {
            log::warn!("{id}: still running {}s after SIGTERM: SIGKILL", grace.as_secs());
            let _ = run_argv(sv, "runc kill", &runc.kill(id, "KILL"));
            sv.wait_exit(pid, Some(Instant::now() + Duration::from_secs(10))).map(supervisor::exit_code_from_wait_status)
        }
    };
    if let Err(e) = run_argv(sv, "runc delete", &runc.delete(id, true)) {
        log::warn!("{id}: runc delete: {e}");
    }
    match code {
        Some(c) => log::info!("{id}: stopped (exit {c})"),
        None => log::error!("{id}: its init did not exit even after SIGKILL"),
    }
    code
}

/// Run one argv (runc state/delete …) under the supervisor; stdout on success.
pub(super) fn run_argv(sv: &mut Supervisor, name: &str, argv: &[std::ffi::OsString]) -> std::result::Result<String, String> {
    let Some((bin, rest)) = argv.split_first() else { return Err("empty command".into()) };
    let mut cmd = Command::new(bin);
    cmd.args(rest);
    match sv.run(name, cmd, RUNC_TIMEOUT) {
        Ok(o) if o.success() => Ok(o.stdout),
        Ok(o) => Err(format!("{}{}", o.stderr.trim(), if o.timed_out { " (timed out)" } else { "" })),
        Err(e) => Err(e.to_string()),
    }
}

/// Handle one event outside the main loop's own cases: output lines and status refreshes.
pub(super) fn on_event(b: &mut Boot, node: &mut Node, ev: Event) {
    match ev {
        Event::Line { line, .. } => {
            if let Some(run) = &mut node.run {
                run.on_output_line(&line);
            }
            if node.role() == crate::vocab::Role::SuperNode {
                node.participation.on_line(&line);
            }
            for l in node.ring.push(format!("{line}\n").as_bytes()) {
                log::info!("{l}");
            }
        }
        Event::Woken => super::refresh(b, node),
        _ => {}
    }
}

/// ": line | line" of the container's last output lines, for messages: the last `n` that read
/// like errors (Flower's "ERROR", a Python traceback, "failed") when there are any, since a
/// server's last words are usually its orderly shutdown; else the last `n`.
pub(super) fn last_lines(ring: &OutputRing, n: usize) -> String {
    let all: Vec<&str> = ring.lines().collect();
    let errors: Vec<&str> = all.iter().copied().filter(|l| looks_like_error(l)).collect();
    let pick = if errors.is_empty() { &all } else { &errors };
    let tail = &pick[pick.len().saturating_sub(n)..];
    if tail.is_empty() { String::new() } else { format!(": {}", tail.join(" | ")) }
}

fn looks_like_error(line: &str) -> bool {
    ["ERROR", "Error", "error:", "Traceback", "Exception", "failed", "Failed", "FAILED"].iter().any(|w| line.contains(w))
}

pub(super) fn tail(out: &str, err: &str) -> String {
    let all: Vec<&str> = out.lines().chain(err.lines()).filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(4)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_prefer_the_errors_over_the_orderly_shutdown() {
        let mut ring = OutputRing::new("supernode", 50);
        ring.push(b"INFO : Starting Flower SuperNode\n\x1b[91mERROR \x1b[0m: SSL/TLS handshake error detected.\n");
        ring.push(b"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed\nINFO: Shutting down\nINFO: Finished server process [6]\n");
        let s = last_lines(&ring, 2);
        assert_eq!(s, ": supernode: ERROR : SSL/TLS handshake error detected. | supernode: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed");
        let mut calm = OutputRing::new("superlink", 50);
        calm.push(b"a\nb\nc\n");
        assert_eq!(last_lines(&calm, 2), ": superlink: b | superlink: c");
        assert_eq!(last_lines(&OutputRing::new("x", 5), 3), "");
    }
}
