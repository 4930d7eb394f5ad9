//! Signals and exits: blocking signals for the signalfd, reading it (shutdown requests,
//! forwarding), and the single `waitpid(-1, WNOHANG)` loop that dispatches every exit.

use super::{Event, ShutdownReason, Supervisor, Track, describe_wait_status};
use crate::error::{Ctx, Result};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Signals the kernel raises for a fault in this very process. Blocked, they would be fatal
/// without a message (or hang), so they stay unblocked (catatonit `kernel_signals[]`).
const KERNEL_FAULT_SIGNALS: [Signal; 7] =
    [Signal::SIGFPE, Signal::SIGILL, Signal::SIGSEGV, Signal::SIGBUS, Signal::SIGABRT, Signal::SIGTRAP, Signal::SIGSYS];

/// systemd's "power off" signal: SIGRTMIN+4 as glibc numbers it (SIGRTMIN = 34). A fixed number
/// because musl's SIGRTMIN is 35, while `kill -RTMIN+4 1` from a glibc tool sends 38.
pub const SIGRTMIN_PLUS_4: i32 = 38;

/// Proof that [`block_signals`] ran: [`Supervisor::new`] takes it, so the order cannot be wrong.
#[derive(Debug)]
pub struct SignalsBlocked {
    original: SigSet,
    blocked: SigSet,
}

impl SignalsBlocked {
    /// The mask the process had before (children get an empty mask, not this one).
    pub fn original(&self) -> &SigSet {
        &self.original
    }

    /// The blocked set, which the signalfd reads.
    pub(super) fn set(&self) -> &SigSet {
        &self.blocked
    }
}

/// Block every signal except the kernel-fault set, so they queue for the signalfd.
///
/// Must run before any thread or child exists: the mask is per thread, and a thread created
/// earlier would keep signals unblocked and swallow them (SIGCHLD's default is to discard).
pub fn block_signals() -> Result<SignalsBlocked> {
    let mut set = SigSet::all();
    for s in KERNEL_FAULT_SIGNALS {
        set.remove(s);
    }
    let mut original = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&set), Some(&mut original)).ctx("block signals")?;
    Ok(SignalsBlocked { original, blocked: set })
}

impl Supervisor {
    /// Drain the signalfd: reap on SIGCHLD, turn the shutdown set into a request, forward the rest.
    pub(super) fn on_signals(&mut self) {
        loop {
            let info = match self.sfd.read_signal() {
                Ok(Some(info)) => info,
                Ok(None) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => return log::warn!("read signalfd: {}", e.desc()),
            };
            let signo = info.ssi_signo as i32;
            match signo {
                libc::SIGCHLD => self.reap(),
                libc::SIGTERM | libc::SIGINT | libc::SIGPWR | SIGRTMIN_PLUS_4 => {
                    log::info!("received {} from pid {}", signal_name(signo), info.ssi_pid);
                    self.request_shutdown(ShutdownReason::Signal(signo));
                }
                // Terminal job control and broken pipes are not for the workload.
                libc::SIGPIPE | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => {}
                _ => self.forward(signo),
            }
        }
    }

    /// Pass a signal on to the workload, as tini and catatonit do (none set: drop it).
    pub(super) fn forward(&self, signo: i32) {
        let Some(pid) = self.forward_to else {
            return log::debug!("ignoring {} (no workload to forward it to)", signal_name(signo));
        };
        // SAFETY: kill(2) takes two integers and touches no memory of ours; nix's kill cannot
        // name real-time signals, hence libc.
        let r = Errno::result(unsafe { libc::kill(pid.as_raw(), signo) });
        match r {
            Ok(_) => log::debug!("forwarded {} to {pid}", signal_name(signo)),
            Err(e) => log::warn!("forward {} to {pid}: {}", signal_name(signo), e.desc()),
        }
    }

    /// `waitpid(-1, WNOHANG)` until nothing more has exited, dispatching each exit.
    pub(super) fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::StillAlive) => {
                    self.no_children = false;
                    return;
                }
                Ok(st @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _))) => self.on_exit(pid, st),
                Ok(_) => {} // stops and continues are not reported without WUNTRACED/WCONTINUED
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => {
                    self.no_children = true;
                    return;
                }
                Err(e) => return log::warn!("waitpid: {}", e.desc()),
            }
        }
    }

    /// Dispatch one exit: an orphan is counted, a tracked child's output is flushed first, then
    /// its exit is queued (spawn), kept for [`Supervisor::run`], or logged (abandoned).
    pub(super) fn on_exit(&mut self, pid: Pid, status: WaitStatus) {
        if self.forward_to == Some(pid) {
            self.forward_to = None; // the pid may be reused: never signal a stranger
        }
        if !self.children.contains_key(&pid) {
            self.orphans_reaped += 1;
            return log::debug!("reaped orphan {pid}: {}", describe_wait_status(status));
        }
        // Everything the child wrote is in the pipes now: deliver it before its exit.
        let ids: Vec<u64> = self.pipes.iter().filter(|p| p.pid == Some(pid)).map(|p| p.id).collect();
        for id in ids {
            self.drain_after_exit(id);
        }
        let Some(child) = self.children.get_mut(&pid) else { return };
        match child.track {
            Track::Run => child.status = Some(status),
            Track::Events => {
                let name = child.name.clone();
                self.children.remove(&pid);
                log::debug!("{name} (pid {pid}) exited: {}", describe_wait_status(status));
                self.events.push_back(Event::Exited { pid, name, status });
            }
            Track::Abandoned => {
                log::info!("{} (pid {pid}) finally exited: {}", child.name, describe_wait_status(status));
                self.children.remove(&pid);
            }
        }
    }
}

/// The group has a member. A group id cannot be reused while a member lives, so signalling a
/// group right after this check reaches our processes and no stranger's.
pub(super) fn group_alive(pgid: Pid) -> bool {
    !matches!(nix::sys::signal::killpg(pgid, None), Err(Errno::ESRCH))
}

/// Make orphaned descendants re-parent to us instead of to PID 1, so we reap them (service
/// mode; PID 1 gets them anyway). `PR_SET_CHILD_SUBREAPER`, as catatonit and tini `-s`.
pub fn become_subreaper() -> Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes plain integers and touches no memory of ours.
    Errno::result(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(|_| ()).ctx("become child subreaper")
}

/// "SIGTERM", or "signal 38" for numbers nix has no name for (real-time signals).
pub fn signal_name(signo: i32) -> String {
    Signal::try_from(signo).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {signo}"))
}
