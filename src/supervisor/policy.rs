//! Pure restart and exit-code policy: no syscalls, so every rule has a table test.

use nix::errno::Errno;
use nix::sys::wait::WaitStatus;
use std::time::Duration;

/// Exit code when flower-init itself failed (bad arguments aside), as `docker run` and libkrun.
pub const EXIT_INIT_FAILURE: i32 = 125;
/// Exit code when the command exists but could not be executed (EACCES, ENOEXEC …), as a shell.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit code when the command was not found (ENOENT), as a shell.
pub const EXIT_NOT_FOUND: i32 = 127;

/// The exit code a shell would report for a child's wait status: its own code, or 128 + the
/// signal that killed it (tini, catatonit, kata `signal.rs`). Stops and continues are not
/// exits; they map to [`EXIT_INIT_FAILURE`] so a caller that misuses this notices.
pub fn exit_code_from_wait_status(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => EXIT_INIT_FAILURE,
    }
}

/// The exit code for a command that could not be started, from the errno of the failed
/// `execve` (127 not found, 126 not executable; 125 when the failure was flower-init's own).
pub fn exit_code_from_spawn_errno(errno: Option<Errno>) -> i32 {
    match errno {
        Some(Errno::ENOENT | Errno::ENOTDIR) => EXIT_NOT_FOUND,
        Some(Errno::EACCES | Errno::ENOEXEC | Errno::EPERM | Errno::ETXTBSY | Errno::EISDIR | Errno::ELOOP) => {
            EXIT_CANNOT_EXECUTE
        }
        _ => EXIT_INIT_FAILURE,
    }
}

/// A wait status in words for logs: "exit code 3", "killed by SIGKILL (core dumped)".
pub fn describe_wait_status(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit code {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            format!("killed by {}{}", sig.as_str(), if core { " (core dumped)" } else { "" })
        }
        other => format!("{other:?}"),
    }
}

/// Exponential restart delay: `initial`, doubled after each quick exit up to `max`; a child that
/// stayed up for `reset_after` or longer starts over at `initial`. Pure: the caller measures the
/// uptime and sleeps (through the supervisor, so signals and health are still served).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    failures: u32,
}

impl Backoff {
    /// A policy; `max` below `initial` is raised to `initial`.
    pub fn new(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        Backoff { initial, max: max.max(initial), reset_after, failures: 0 }
    }

    /// The delay before the next start, given how long the child that just exited ran.
    pub fn next_delay(&mut self, uptime: Duration) -> Duration {
        if uptime >= self.reset_after {
            self.failures = 0;
        }
        // 2^failures, saturating: after ~30 quick exits the cap has long been reached anyway.
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.failures = self.failures.saturating_add(1);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Quick exits in a row so far (0 after a long run).
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

impl Default for Backoff {
    /// 1 s doubling to 60 s; a child that ran 2 minutes is considered healthy again.
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60), Duration::from_secs(120))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    #[test]
    fn wait_status_table() {
        let p = Pid::from_raw(42);
        let table = [
            (WaitStatus::Exited(p, 0), 0),
            (WaitStatus::Exited(p, 1), 1),
            (WaitStatus::Exited(p, 255), 255),
            (WaitStatus::Signaled(p, Signal::SIGHUP, false), 129),
            (WaitStatus::Signaled(p, Signal::SIGINT, false), 130),
            (WaitStatus::Signaled(p, Signal::SIGKILL, false), 137),
            (WaitStatus::Signaled(p, Signal::SIGSEGV, true), 139),
            (WaitStatus::Signaled(p, Signal::SIGTERM, false), 143),
            (WaitStatus::Stopped(p, Signal::SIGSTOP), EXIT_INIT_FAILURE),
            (WaitStatus::Continued(p), EXIT_INIT_FAILURE),
        ];
        for (status, code) in table {
            assert_eq!(exit_code_from_wait_status(status), code, "{status:?}");
        }
    }

    #[test]
    fn spawn_errno_table() {
        assert_eq!(exit_code_from_spawn_errno(Some(Errno::ENOENT)), 127);
        assert_eq!(exit_code_from_spawn_errno(Some(Errno::ENOTDIR)), 127);
        assert_eq!(exit_code_from_spawn_errno(Some(Errno::EACCES)), 126);
        assert_eq!(exit_code_from_spawn_errno(Some(Errno::ENOEXEC)), 126);
        assert_eq!(exit_code_from_spawn_errno(Some(Errno::EMFILE)), 125);
        assert_eq!(exit_code_from_spawn_errno(None), 125);
    }

    #[test]
    fn describe_names_code_or_signal() {
        let p = Pid::from_raw(1);
        assert_eq!(describe_wait_status(WaitStatus::Exited(p, 3)), "exit code 3");
        assert_eq!(describe_wait_status(WaitStatus::Signaled(p, Signal::SIGKILL, false)), "killed by SIGKILL");
        assert_eq!(
            describe_wait_status(WaitStatus::Signaled(p, Signal::SIGABRT, true)),
            "killed by SIGABRT (core dumped)"
        );
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(10), s(60));
        let quick = s(2);
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay(quick).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.failures(), 6);
        // A run as long as reset_after starts over.
        assert_eq!(b.next_delay(s(60)), s(1));
        assert_eq!(b.next_delay(quick), s(2));
    }

    #[test]
    fn backoff_never_overflows() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30), Duration::from_secs(60));
        for _ in 0..200 {
            assert!(b.next_delay(Duration::ZERO) <= Duration::from_secs(30));
        }
        assert_eq!(b.next_delay(Duration::ZERO), Duration::from_secs(30));
        // max below initial is raised to initial.
        let mut odd = Backoff::new(Duration::from_secs(5), Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(odd.next_delay(Duration::ZERO), Duration::from_secs(5));
    }
}
