//! Starting children: a clean signal mask and a session of their own before exec, output
//! through non-blocking pipes, and [`Supervisor::run`] for helpers that must finish.

use super::{
    Child, KILL_WAIT, LineBuf, Output, Pipe, RunOutput, Sink, Stream, Supervisor, Track, describe_wait_status,
    exit_code_from_wait_status,
};
use super::reaper::group_alive;
use crate::error::{Ctx, Error, Result};
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::unistd::Pid;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

impl Supervisor {
    /// Start `cmd` as a tracked child: empty signal mask, its own session, output per `output`.
    /// Its exit arrives as [`Event::Exited`]. On failure to execute, the error carries the errno
    /// ([`exit_code_from_spawn_errno`] turns it into 127/126).
    pub fn spawn(&mut self, name: &str, cmd: Command, output: Output) -> Result<Pid> {
        let sink = match output {
            Output::Inherit | Output::Null => None,
            Output::Log => Some(Sink::Log),
            Output::Events => Some(Sink::Events),
        };
        self.spawn_tracked(name, cmd, output == Output::Null, sink, Track::Events)
    }

    /// The common start: dispositions, mask and session in the child, pipes for a sink, a table entry.
    pub(super) fn spawn_tracked(&mut self, name: &str, mut cmd: Command, null: bool, sink: Option<Sink>, track: Track) -> Result<Pid> {
        let empty = SigSet::empty();
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe work is allowed (another thread could have held a lock at fork):
        // 1. it calls only sigaction(2), sigprocmask(2) and setsid(2), all async-signal-safe
        //    (signal-safety(7));
        // 2. it allocates nothing and takes no lock: the empty set was built before the fork and
        //    is moved in by value, and an io::Error made from a raw errno does not allocate;
        // 3. it touches no state shared with the parent, which keeps running unaffected;
        // 4. std already restored SIGPIPE to its default; the empty mask undoes the parent's
        //    blocking, which std's Command inherits (rust-lang/rust#101077, research/init.md §3.3).
        unsafe {
            cmd.pre_exec(move || {
                // Default dispositions: a signal ignored where flower-init was started (nohup
                // ignores SIGHUP) stays ignored across exec, and a shell cannot even trap a
                // signal ignored on entry, so forwarding it would do nothing.
                reset_dispositions();
                sigprocmask(SigmaskHow::SIG_SETMASK, Some(&empty), None)?;
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        if null {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let mut readers = Vec::new();
        if sink.is_some() {
            for stream in [Stream::Stdout, Stream::Stderr] {
                let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx("create output pipe")?;
                set_nonblocking(&r).ctx("set output pipe non-blocking")?;
                match stream {
                    Stream::Stdout => cmd.stdout(Stdio::from(w)),
                    Stream::Stderr => cmd.stderr(Stdio::from(w)),
                };
                readers.push((stream, r));
            }
        }
        let child = cmd.spawn().with_ctx(|| format!("start {name}"))?;
        drop(cmd); // closes our copies of the pipes' write ends, so EOF can come
        let pid = Pid::from_raw(child.id() as i32);
        drop(child); // std's Child neither waits nor kills on drop: the reaper owns the pid
        log::debug!("started {name} (pid {pid})");
        for (stream, fd) in readers {
            let id = self.next_id();
            let sink = sink.unwrap_or(Sink::Log);
            self.pipes.push(Pipe { id, fd, pid: Some(pid), name: name.to_string(), stream, sink, buf: LineBuf::default() });
        }
        let child = Child { name: name.to_string(), track, status: None, stdout: String::new(), stderr: String::new() };
        self.children.insert(pid, child);
        self.no_children = false;
        self.groups.retain(|g| group_alive(*g));
        self.groups.push(pid);
        Ok(pid)
    }

    /// Run a helper (e.g. `runc create`) to completion while the loop keeps serving health and
    /// recording signals; its output is captured. Killed (with its process group) after
    /// `timeout`. A shutdown request does not interrupt it: check
    /// [`Supervisor::shutdown_requested`] afterwards. Err only if it could not be started.
    pub fn run(&mut self, name: &str, mut cmd: Command, timeout: Duration) -> Result<RunOutput> {
        cmd.stdin(Stdio::null());
        let pid = self.spawn_tracked(name, cmd, false, Some(Sink::Collect), Track::Run)?;
        let done = |sv: &Self| sv.children.get(&pid).is_none_or(|c| c.status.is_some());
        let mut timed_out = false;
        if !self.run_until(Instant::now() + timeout, done) {
            timed_out = true;
            log::warn!("{name} (pid {pid}) still running after {}s: killing it", timeout.as_secs_f32());
            let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
            self.run_until(Instant::now() + KILL_WAIT, done);
        }
        match self.children.remove(&pid) {
            Some(Child { status: Some(status), stdout, stderr, .. }) => {
                let code = exit_code_from_wait_status(status);
                log::debug!("{name} (pid {pid}) finished: {}", describe_wait_status(status));
                Ok(RunOutput { status, code, stdout, stderr, timed_out })
            }
            Some(mut c) => {
                c.track = Track::Abandoned;
                self.children.insert(pid, c);
                Err(Error::msg(format!("run {name}"), "it did not exit after SIGKILL"))
            }
            None => Err(Error::msg(format!("run {name}"), "its exit was lost")), // invariant: only run() removes it
        }
    }
}

pub(super) fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}

/// Every catchable signal back to its default action (in the forked child, before exec):
/// handlers are reset by exec anyway, `SIG_IGN` is not. No allocation, async-signal-safe.
fn reset_dispositions() {
    let dfl = nix::sys::signal::SigAction::new(nix::sys::signal::SigHandler::SigDfl, nix::sys::signal::SaFlags::empty(), SigSet::empty());
    for sig in nix::sys::signal::Signal::iterator() {
        if sig != nix::sys::signal::Signal::SIGKILL && sig != nix::sys::signal::Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL runs no code of ours; the old action is dropped.
            let _ = unsafe { nix::sys::signal::sigaction(sig, &dfl) };
        }
    }
}
