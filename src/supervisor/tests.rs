//! The loop for real: children, pipes, signals, the health port, timers, wakes. Each test runs
//! in a forked child (see [`in_child`]), because the test harness has other threads.

use super::*;
use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use std::io::{Read, Write};
use std::process::Command;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Run `f` in a forked child and return its result (or its panic message).
///
/// Why a child: signals for the signalfd must be blocked in *every* thread, and the test
/// harness runs other threads that do not block them (a SIGCHLD could be taken and dropped by
/// one of them). A forked child has only the forking thread, as flower-init has at start.
/// Bounded: a child still running after two minutes is killed and the test fails.
pub(crate) fn in_child(f: impl FnOnce() -> std::result::Result<(), String>) -> std::result::Result<(), String> {
    let (mut r, w) = std::io::pipe().map_err(|e| e.to_string())?;
    // SAFETY: the child runs `f` (the code under test: syscalls, std process and fs APIs),
    // writes its result to a pipe and `_exit`s, never returning into the test harness; the
    // harness's other threads do not exist in it and nothing of theirs is touched.
    match unsafe { nix::unistd::fork() }.map_err(|e| e.to_string())? {
        nix::unistd::ForkResult::Child => {
            let mut w = w;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
                let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                Err(format!("panic: {}", msg.unwrap_or_default()))
            });
            let _ = w.write_all(match &result {
                Ok(()) => b"ok",
                Err(e) => e.as_bytes(),
            });
            // SAFETY: _exit ends the child at once, without the harness's atexit handlers.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut fds = [nix::poll::PollFd::new(r.as_fd(), nix::poll::PollFlags::POLLIN)];
            let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(120_000i32).unwrap_or(nix::poll::PollTimeout::MAX)).unwrap_or(0);
            if ready == 0 {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            }
            let mut out = String::new();
            let _ = r.read_to_string(&mut out);
            let _ = waitpid(child, None);
            match out.as_str() {
                "ok" => Ok(()),
                "" => Err("test child hung or died without a result".into()),
                _ => Err(out),
            }
        }
    }
}

/// `in_child` that fails the test on error.
pub(crate) fn child_test(f: impl FnOnce() -> std::result::Result<(), String>) {
    if let Err(e) = in_child(f) {
        panic!("{e}");
    }
}

fn new_sv() -> Supervisor {
    Supervisor::new(block_signals().unwrap()).unwrap()
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.args(["-c", script]);
    c
}

fn secs(s: u64) -> Instant {
    Instant::now() + Duration::from_secs(s)
}

fn check(cond: bool, what: impl Into<String>) -> std::result::Result<(), String> {
    if cond { Ok(()) } else { Err(what.into()) }
}

#[test]
fn run_captures_lines_and_the_exit_code() {
    child_test(|| {
        let mut sv = new_sv();
        let out = sv.run("helper", sh("echo out1; echo err1 >&2; printf 'x\\377y\\n'; printf partial; exit 3"), Duration::from_secs(60)).unwrap();
        check(out.code == 3 && !out.timed_out && !out.success(), format!("{out:?}"))?;
        check(out.stdout == "out1\nx\u{fffd}y\npartial\n", format!("stdout {:?}", out.stdout))?;
        check(out.stderr == "err1\n", format!("stderr {:?}", out.stderr))
    });
}

/// `runc create` style: the helper exits while a process it started keeps its stdout open.
/// run() returns at the helper's exit, not at the pipe's end of file.
#[test]
fn run_returns_when_the_helper_exits_even_if_its_pipe_lives_on() {
    child_test(|| {
        let mut sv = new_sv();
        let out = sv.run("creator", sh("sleep 100 & echo $!"), Duration::from_secs(60)).unwrap();
        let holder: i32 = out.stdout.trim().parse().map_err(|_| format!("{out:?}"))?;
        let _ = nix::sys::signal::kill(Pid::from_raw(holder), Signal::SIGKILL);
        check(out.success(), format!("{out:?}"))
    });
}

#[test]
fn run_kills_a_helper_past_its_timeout() {
    child_test(|| {
        let mut sv = new_sv();
        // The helper and its own child (same process group) both ignore nothing and sleep.
        let out = sv.run("sleeper", sh("sleep 100 & sleep 100"), Duration::from_millis(300)).unwrap();
        check(out.timed_out && out.code == 137, format!("{out:?}"))?;
        check(matches!(out.status, WaitStatus::Signaled(_, Signal::SIGKILL, _)), format!("{out:?}"))
    });
}

#[test]
fn children_start_with_an_empty_signal_mask() {
    child_test(|| {
        let mut sv = new_sv();
        // grep directly: dash clears its mask at start-up, so `sh -c` would hide the bug.
        let mut grep = Command::new("grep");
        grep.args(["^SigBlk", "/proc/self/status"]);
        let out = sv.run("grep", grep, Duration::from_secs(60)).unwrap();
        // Rust's Command inherits the mask (rust-lang/rust#101077): pre_exec must clear it.
        check(out.stdout.contains("SigBlk:\t0000000000000000"), format!("{:?}", out.stdout))
    });
}

#[test]
fn lines_are_tagged_and_come_before_the_exit() {
    child_test(|| {
        let mut sv = new_sv();
        let pid = sv.spawn("talker", sh("echo a; echo b >&2; printf c; exit 4"), Output::Events).unwrap();
        let mut lines = Vec::new();
        loop {
            match sv.next_event(Some(secs(60))) {
                Some(Event::Line { pid: p, name, stream, line }) if p == pid && name == "talker" => lines.push((stream, line)),
                Some(Event::Exited { pid: p, status, .. }) if p == pid => {
                    check(status == WaitStatus::Exited(pid, 4), format!("{status:?}"))?;
                    break;
                }
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        lines.sort_by_key(|(_, l)| l.clone());
        let want = vec![(Stream::Stdout, "a".into()), (Stream::Stderr, "b".into()), (Stream::Stdout, "c".into())];
        check(lines == want, format!("{lines:?}"))
    });
}

#[test]
fn orphans_are_reaped() {
    child_test(|| {
        let mut sv = new_sv();
        become_subreaper().unwrap();
        // Each subshell exits at once, leaving its `sleep` to us.
        let pid = sv.spawn("orphaner", sh("for i in $(seq 50); do (sleep 0.2 &); done"), Output::Null).unwrap();
        check(sv.wait_exit(pid, Some(secs(60))) == Some(WaitStatus::Exited(pid, 0)), "orphaner exit")?;
        check(sv.run_until(secs(60), |sv| sv.orphans_reaped() >= 50 && !sv.has_children()), format!("{} reaped", sv.orphans_reaped()))?;
        check(sv.orphans_reaped() == 50, format!("{} orphans", sv.orphans_reaped()))
    });
}

/// `sh` that prints "ready" once its traps are set, then loops.
fn trapper(traps: &str) -> Command {
    sh(&format!("{traps}; echo ready; while :; do sleep 0.05; done"))
}

fn wait_ready(sv: &mut Supervisor, pid: Pid) -> std::result::Result<(), String> {
    match sv.next_event(Some(secs(60))) {
        Some(Event::Line { pid: p, line, .. }) if p == pid && line == "ready" => Ok(()),
        other => Err(format!("expected ready, got {other:?}")),
    }
}

fn raise(sig: i32) {
    // SAFETY: kill(2) on our own pid with a plain signal number.
    unsafe { libc::kill(libc::getpid(), sig) };
}

#[test]
fn signals_are_forwarded_and_shutdown_signals_are_requests() {
    child_test(|| {
        let mut sv = new_sv();
        let pid = sv.spawn("trapper", trapper("trap 'exit 7' USR1; trap 'exit 9' TERM"), Output::Events).unwrap();
        wait_ready(&mut sv, pid)?;
        sv.forward_signals_to(Some(pid));
        raise(libc::SIGUSR1);
        check(sv.wait_exit(pid, Some(secs(60))) == Some(WaitStatus::Exited(pid, 7)), "USR1 forwarded")?;
        check(sv.shutdown_requested().is_none(), "USR1 is no shutdown")?;
        raise(libc::SIGTERM);
        // sleep() returns false as soon as a shutdown is requested.
        check(!sv.sleep(Duration::from_secs(60)), "sleep interrupted")?;
        check(sv.shutdown_requested() == Some(ShutdownReason::Signal(libc::SIGTERM)), "TERM is a request")?;
        check(sv.next_event(Some(Instant::now())) == Some(Event::Shutdown(ShutdownReason::Signal(libc::SIGTERM))), "event")?;
        // Later requests do not replace the first.
        raise(SIGRTMIN_PLUS_4);
        sv.sleep(Duration::from_millis(100));
        check(sv.shutdown_requested() == Some(ShutdownReason::Signal(libc::SIGTERM)), "sticky")
    });
}

#[test]
fn poweroff_signals_request_shutdown() {
    for sig in [libc::SIGPWR, SIGRTMIN_PLUS_4, libc::SIGINT] {
        child_test(|| {
            let mut sv = new_sv();
            raise(sig);
            check(!sv.sleep(Duration::from_secs(60)), "sleep interrupted")?;
            check(sv.shutdown_requested() == Some(ShutdownReason::Signal(sig)), format!("{sig}: {:?}", sv.shutdown_requested()))
        });
    }
}

#[test]
fn a_shutdown_during_run_is_recorded_and_run_finishes() {
    child_test(|| {
        let mut sv = new_sv();
        let out = sv.run("killer", sh("kill -TERM $PPID; sleep 0.2; echo done"), Duration::from_secs(60)).unwrap();
        check(out.success() && out.stdout == "done\n", format!("{out:?}"))?;
        check(sv.shutdown_requested() == Some(ShutdownReason::Signal(libc::SIGTERM)), "recorded")
    });
}

#[test]
fn wait_exit_or_shutdown_returns_whichever_comes_first() {
    child_test(|| {
        let mut sv = new_sv();
        let pid = sv.spawn("quick", sh("exit 5"), Output::Null).unwrap();
        check(sv.wait_exit_or_shutdown(pid) == Ok(WaitStatus::Exited(pid, 5)), "exit first")?;
        let pid = sv.spawn("slow", sh("sleep 100"), Output::Null).unwrap();
        raise(libc::SIGTERM);
        check(sv.wait_exit_or_shutdown(pid) == Err(ShutdownReason::Signal(libc::SIGTERM)), "shutdown first")?;
        // The stopping code then waits for the exit itself.
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let st = sv.wait_exit(pid, Some(secs(60)));
        check(matches!(st, Some(WaitStatus::Signaled(_, Signal::SIGKILL, _))), format!("{st:?}"))
    });
}

#[test]
fn spawn_failures_carry_the_errno() {
    child_test(|| {
        let mut sv = new_sv();
        let e = sv.spawn("nothing", Command::new("/nonexistent/cmd"), Output::Inherit).unwrap_err();
        check(exit_code_from_spawn_errno(e.errno()) == EXIT_NOT_FOUND, e.to_string())?;
        let e = sv.spawn("dir", Command::new("/"), Output::Inherit).unwrap_err();
        check(exit_code_from_spawn_errno(e.errno()) == EXIT_CANNOT_EXECUTE, e.to_string())?;
        check(sv.tracked().is_empty(), "nothing tracked")
    });
}

#[test]
fn a_waker_turns_the_loop_from_another_thread() {
    child_test(|| {
        let mut sv = new_sv();
        let waker = sv.waker().unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let start = Instant::now();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            f.store(true, Ordering::SeqCst);
            waker.wake();
        });
        // Nothing else would end this wait before the deadline.
        let met = sv.run_until(secs(120), |_| flag.load(Ordering::SeqCst));
        check(met && start.elapsed() < Duration::from_secs(60), format!("woken after {:?}", start.elapsed()))?;
        check(sv.next_event(Some(Instant::now())) == Some(Event::Woken), "Woken queued")?;
        t.join().map_err(|_| "thread".to_string())
    });
}

#[test]
fn timers_fire_in_order_and_cancelled_ones_never() {
    child_test(|| {
        let mut sv = new_sv();
        let now = Instant::now();
        let late = sv.set_timer(now + Duration::from_millis(200));
        let early = sv.set_timer(now + Duration::from_millis(100));
        let cancelled = sv.set_timer(now + Duration::from_millis(150));
        sv.cancel_timer(cancelled);
        check(sv.next_event(Some(secs(60))) == Some(Event::Timer(early)), "early")?;
        check(sv.next_event(Some(secs(60))) == Some(Event::Timer(late)), "late")?;
        check(sv.next_event(Some(Instant::now() + Duration::from_millis(200))).is_none(), "nothing else")
    });
}

/// A loop that wakes late (a loaded machine: the test failed in CI this way) finds several
/// timers due at once; they still come in the order they were due, not the order they were set.
#[test]
fn timers_due_together_come_in_due_order() {
    child_test(|| {
        let mut sv = new_sv();
        let now = Instant::now();
        let late = sv.set_timer(now + Duration::from_millis(30));
        let early = sv.set_timer(now + Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(60));
        check(sv.next_event(Some(secs(60))) == Some(Event::Timer(early)), "early first")?;
        check(sv.next_event(Some(secs(60))) == Some(Event::Timer(late)), "then late")
    });
}

#[test]
fn health_answers_while_the_loop_waits() {
    child_test(|| {
        let mut sv = new_sv();
        let addr = sv.listen_health(&crate::health::Config::on([127, 0, 0, 1].into(), 0)).unwrap();
        sv.status_mut().fail("validate", "FL_NUM_ROUNDS='0': must be an integer >= 1");
        let waker = sv.waker().unwrap();
        let answer = Arc::new(std::sync::Mutex::new(None::<String>));
        let a = answer.clone();
        let t = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            *a.lock().unwrap() = Some(out);
            waker.wake();
        });
        let got = sv.run_until(secs(120), |_| answer.lock().unwrap().is_some());
        t.join().map_err(|_| "client thread".to_string())?;
        let text = answer.lock().unwrap().clone().unwrap_or_default();
        check(got && text.starts_with("HTTP/1.1 503 ") && text.ends_with("failed at validate: FL_NUM_ROUNDS='0': must be an integer >= 1\n"), text)?;
        check(sv.health_stats().map(|s| s.answered) == Some(1), format!("{:?}", sv.health_stats()))
    });
}
