//! The shutdown sequences for real. The PID-1 one runs as PID 1 of a fresh PID namespace
//! (root; `make supervisor-test`), where `kill(-1)` reaches only that namespace and
//! `reboot(RB_POWER_OFF)` makes the kernel kill the namespace's init with SIGINT.

use super::*;
use crate::supervisor::tests::{child_test, in_child};
use crate::status::Phase;
use crate::supervisor::{Output, block_signals};
use nix::mount::MsFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn sh(script: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.args(["-c", script]);
    c
}

fn check(cond: bool, what: impl Into<String>) -> std::result::Result<(), String> {
    if cond { Ok(()) } else { Err(what.into()) }
}

#[test]
fn pid1_cannot_be_claimed_outside_pid_1() {
    assert!(std::process::id() != 1);
    assert!(Pid1::claim().is_none());
}

#[test]
fn panic_hook_runs_its_action_with_the_message() {
    child_test(|| {
        // The hook writes the message to stderr by design; keep it out of the test output.
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
        // SAFETY: dup2 onto fd 2 of this forked child only; both fds are open.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 2) };
        static RAN: AtomicBool = AtomicBool::new(false);
        let msg = Arc::new(std::sync::Mutex::new(String::new()));
        let m = msg.clone();
        set_panic_hook_with(move |text| {
            *m.lock().unwrap() = text.to_string();
            RAN.store(true, Ordering::SeqCst);
        });
        let _ = std::panic::catch_unwind(|| panic!("the context CD vanished"));
        let text = msg.lock().unwrap().clone();
        check(RAN.load(Ordering::SeqCst) && text.contains("panic") && text.contains("the context CD vanished"), text)
    });
}

/// Service mode signals its own process groups only: a TERM-ignoring child is SIGKILLed after
/// the grace, a process outside its groups (here: started by the test itself) survives.
#[test]
fn service_shutdown_stops_own_groups_and_nothing_else() {
    let mut outsider = Command::new("sleep").arg("100").spawn().unwrap();
    let outsider_pid = Pid::from_raw(outsider.id() as i32);
    let result = in_child(|| {
        let mut sv = Supervisor::new(block_signals().unwrap()).unwrap();
        crate::supervisor::become_subreaper().unwrap(); // as `supervise` does: orphans are ours to reap
        let stubborn = sv.spawn("stubborn", sh("trap '' TERM; sleep 100 & sleep 100; wait"), Output::Null).unwrap();
        let polite = sv.spawn("polite", sh("sleep 100"), Output::Null).unwrap();
        sv.run_until(Instant::now() + Duration::from_millis(300), |_| false);
        let plan = Plan { grace: Duration::from_secs(30), kill_grace: Duration::from_secs(1), unmount: vec![] };
        let code = shutdown(&mut sv, Mode::Service, &plan, |sv, grace| {
            let _ = nix::sys::signal::kill(polite, Signal::SIGTERM);
            sv.wait_exit(polite, Some(Instant::now() + grace)).map(crate::supervisor::exit_code_from_wait_status)
        });
        check(code == Some(143), format!("polite: {code:?}"))?;
        check(*sv.status().phase() == Phase::ShuttingDown, "503 while stopping")?;
        check(sv.live_groups().is_empty(), format!("left: {:?}", sv.live_groups()))?;
        let st = sv.wait_exit(stubborn, Some(Instant::now() + Duration::from_secs(30)));
        check(matches!(st, Some(WaitStatus::Signaled(_, Signal::SIGKILL, _))), format!("stubborn: {st:?}"))
    });
    let alive = nix::sys::signal::kill(outsider_pid, None).is_ok();
    let _ = outsider.kill();
    let _ = outsider.wait();
    result.unwrap_or_else(|e| panic!("{e}"));
    assert!(alive, "service mode must not signal processes outside its groups");
}

/// Everything PID-1 mode does, in a PID namespace: TERM-ignoring processes and orphans are
/// killed, a busy mount is unmounted once its user is gone, and the power-off ends the
/// namespace (its init "killed by SIGINT", as the kernel reports a namespace power-off).
#[test]
#[ignore = "root: runs as PID 1 of a new PID namespace (make supervisor-test)"]
fn pid1_shutdown_in_a_pid_namespace() {
    assert!(nix::unistd::geteuid().is_root(), "needs root: unshare(CLONE_NEWPID | CLONE_NEWNS)");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let report = dir.path().join("report");
    std::fs::create_dir(&mnt).unwrap();
    let (m, r) = (mnt.clone(), report.clone());
    let outcome = in_child(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID | nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("unshare: {e}"))?;
        nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
            .map_err(|e| format!("make / private: {e}"))?;
        // SAFETY: the forked test child is single-threaded; the grandchild runs the sequence
        // below and ends by power-off (the kernel kills it) or `_exit`, never returning here.
        match unsafe { nix::unistd::fork() }.map_err(|e| e.to_string())? {
            ForkResult::Child => {
                let result = ns_init(&m, &r);
                let _ = std::fs::write(&r, format!("error: {}", result.err().unwrap_or_default()));
                // SAFETY: leave at once; reaching here means power_off did not happen.
                unsafe { libc::_exit(3) }
            }
            ForkResult::Parent { child } => {
                let st = waitpid(child, None).map_err(|e| e.to_string())?;
                check(st == WaitStatus::Signaled(child, Signal::SIGINT, false), format!("namespace init ended with {st:?}, not a power-off"))
            }
        }
    });
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    outcome.unwrap_or_else(|e| panic!("{e}; report: {text}"));
    assert_eq!(text, "left=0 others=0 stubborn=0 mounted=false orphans>=2=true", "report");
}

/// PID 1 of the namespace: start stubborn processes, run the PID-1 steps, report, power off.
fn ns_init(mnt: &std::path::Path, report: &std::path::Path) -> std::result::Result<(), String> {
    nix::mount::mount(Some("proc"), "/proc", Some("proc"), MsFlags::empty(), None::<&str>).map_err(|e| format!("mount proc: {e}"))?;
    nix::mount::mount(Some("tmpfs"), mnt, Some("tmpfs"), MsFlags::empty(), None::<&str>).map_err(|e| format!("mount tmpfs: {e}"))?;
    let mut sv = Supervisor::new(block_signals().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let pid1 = Pid1::claim().ok_or("not PID 1: refusing to go on")?;
    let m = mnt.display();
    // A TERM-ignoring tracked child keeping the mount busy, and orphans (one ignoring TERM).
    sv.spawn("busy", sh(&format!("trap '' TERM; cd {m} && sleep 1000")), Output::Null).map_err(|e| e.to_string())?;
    let orphaner = sv.spawn("orphaner", sh("(trap '' TERM; exec sleep 1000) & sleep 1000 & exit 0"), Output::Null).map_err(|e| e.to_string())?;
    sv.wait_exit(orphaner, Some(Instant::now() + Duration::from_secs(30)));
    sv.run_until(Instant::now() + Duration::from_millis(300), |_| false);
    let left = terminate_all(&mut sv, &pid1, Duration::from_secs(1));
    let others = std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok_and(|p| p != 1))
        .count();
    let stubborn = unmount_all(&mut sv, &[mnt.to_path_buf()]).len();
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?.contains(&format!(" {m} "));
    let orphans = sv.orphans_reaped();
    std::fs::write(report, format!("left={left} others={others} stubborn={stubborn} mounted={mounted} orphans>=2={}", orphans >= 2))
        .map_err(|e| e.to_string())?;
    power_off(&pid1)
}
