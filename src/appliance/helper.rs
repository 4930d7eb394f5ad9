//! flower-init's own helper processes (the gateway, the SuperNode-key registrar): the running
//! binary started again with a subcommand, supervised by PID 1's loop. What parses untrusted
//! input runs there, so a bug ends the helper, never PID 1 (issue #14). One type serves them
//! all: start, restart with back-off after an exit, stop with a grace at shutdown.

use crate::supervisor::{Backoff, Output, Supervisor, TimerId};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// One helper process and its restarts.
pub(super) struct Helper {
    /// Its name in logs and the supervisor's table (`gateway`, `node-auth`).
    name: &'static str,
    /// The subcommand and its options (after the program).
    argv: Vec<String>,
    pub(super) pid: Option<Pid>,
    backoff: Backoff,
    started: Instant,
    /// Pending restart, while it is down.
    pub(super) restart: Option<TimerId>,
    /// Times it was started again after an exit.
    pub(super) restarts: u32,
    /// Between SIGTERM and SIGKILL at shutdown.
    grace: Duration,
}

impl Helper {
    pub(super) fn new(name: &'static str, argv: Vec<String>, grace: Duration) -> Helper {
        Helper { name, argv, pid: None, backoff: Backoff::default(), started: Instant::now(), restart: None, restarts: 0, grace }
    }

    /// Start it (the running binary, through /proc/self/exe: it stays reachable after the root
    /// switch), with an empty environment and its output as events.
    pub(super) fn spawn(&mut self, sv: &mut Supervisor) -> crate::error::Result<Pid> {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("flower-init").args(&self.argv).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        let pid = sv.spawn(self.name, cmd, Output::Events)?;
        self.pid = Some(pid);
        self.started = Instant::now();
        Ok(pid)
    }

    /// It exited: schedule its restart after the back-off (`what` says what it is, for the log).
    pub(super) fn on_exit(&mut self, sv: &mut Supervisor, status: nix::sys::wait::WaitStatus, what: &str) {
        self.pid = None;
        let delay = self.backoff.next_delay(self.started.elapsed());
        log::error!(
            "{}: {what} exited ({}); restarting it in {:.1}s (PID 1 is unaffected)",
            self.name,
            crate::supervisor::describe_wait_status(status),
            delay.as_secs_f64()
        );
        self.restart = Some(sv.set_timer(Instant::now() + delay));
    }

    /// The restart timer fired: start it again (or schedule another try).
    pub(super) fn on_restart(&mut self, sv: &mut Supervisor) {
        self.restart = None;
        self.restarts += 1;
        match self.spawn(sv) {
            Ok(pid) => log::info!("{}: restarted (pid {pid})", self.name),
            Err(e) => {
                let delay = self.backoff.next_delay(Duration::ZERO);
                log::error!("{}: restart failed: {e}; next try in {:.1}s", self.name, delay.as_secs_f64());
                self.restart = Some(sv.set_timer(Instant::now() + delay));
            }
        }
    }

    /// Shutdown: SIGTERM, wait up to the grace, then SIGKILL.
    pub(super) fn stop(&mut self, sv: &mut Supervisor) {
        if let Some(t) = self.restart.take() {
            sv.cancel_timer(t);
        }
        let Some(pid) = self.pid.take() else { return };
        let _ = kill(pid, Signal::SIGTERM);
        if sv.wait_exit(pid, Some(Instant::now() + self.grace)).is_none() {
            log::warn!("{}: still running {}s after SIGTERM: SIGKILL", self.name, self.grace.as_secs());
            let _ = kill(pid, Signal::SIGKILL);
            let _ = sv.wait_exit(pid, Some(Instant::now() + Duration::from_secs(5)));
        }
        log::info!("{}: stopped", self.name);
    }
}
