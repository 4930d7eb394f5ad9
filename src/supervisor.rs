//! The single reaper and event loop: signalfd + sockets + timers in one `poll()`, children
//! with a clean signal mask, restart with exponential backoff. Issue #3.
//!
//! The structure is catatonit's and tini's (research/init.md §3.2-3.3): every signal but the
//! kernel-fault set is blocked before any child exists and read from a signalfd; on SIGCHLD,
//! `waitpid(-1, WNOHANG)` runs until 0 or ECHILD and each exit goes to the table entry of its
//! pid. This module owns every `waitpid` of the process: code running under it starts helpers
//! with [`Supervisor::spawn`] or [`Supervisor::run`], never `Command::status()`/`output()` or
//! `Child::wait()`, which would race the reaper (the kata `WAIT_PID_LOCKER` lesson).
//!
//! Single-threaded: the boot code, the health server and the reaper share one loop, so the
//! [`Status`] the health port serves is a plain field and needs no lock. Long boot steps keep
//! the loop turning by calling [`Supervisor::run`], [`Supervisor::run_until`] or
//! [`Supervisor::sleep`] instead of blocking.

mod output;
mod pipes;
mod policy;
mod reaper;
mod spawn;
#[cfg(test)]
pub(crate) mod tests;
mod waker;

pub use output::{LineBuf, MAX_LINE};
pub use reaper::{SIGRTMIN_PLUS_4, SignalsBlocked, become_subreaper, block_signals, signal_name};
pub use waker::Waker;
pub use policy::{
    Backoff, EXIT_CANNOT_EXECUTE, EXIT_INIT_FAILURE, EXIT_NOT_FOUND, describe_wait_status, exit_code_from_spawn_errno,
    exit_code_from_wait_status,
};

use crate::error::{Ctx, Result};
use crate::status::Status;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use reaper::group_alive;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// Lines of [`Output::Events`] children kept while nobody takes them; older ones are dropped.
const MAX_QUEUED_LINES: usize = 2000;
/// Bytes of each stream a [`Supervisor::run`] helper keeps (the tail).
const RUN_OUTPUT_CAP: usize = 64 * 1024;
/// How long a helper killed on timeout gets to be reaped before `run` gives up on it.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Where a spawned child's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The same as flower-init's (the console as PID 1).
    Inherit,
    /// /dev/null.
    Null,
    /// Through pipes, each line logged as `NAME: line` at info level.
    Log,
    /// Through pipes, each line delivered as [`Event::Line`].
    Events,
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Why the machine (or the service) should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// SIGTERM, SIGINT (Ctrl-Alt-Del once CAD is off), SIGPWR or SIGRTMIN+4 (number given).
    Signal(i32),
    /// The ACPI power button (`onevm terminate`, qemu `system_powerdown`).
    PowerButton,
    /// Asked for by flower-init itself (e.g. the workload finished for good).
    Requested,
}

impl std::fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShutdownReason::Signal(libc::SIGINT) => write!(f, "SIGINT (Ctrl-Alt-Del)"),
            ShutdownReason::Signal(SIGRTMIN_PLUS_4) => write!(f, "SIGRTMIN+4 (poweroff)"),
            ShutdownReason::Signal(n) => write!(f, "{}", signal_name(*n)),
            ShutdownReason::PowerButton => write!(f, "ACPI power button"),
            ShutdownReason::Requested => write!(f, "requested"),
        }
    }
}

/// A timer set with [`Supervisor::set_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

/// Something that happened, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A child started with [`Supervisor::spawn`] exited (its output was delivered first).
    Exited { pid: Pid, name: String, status: WaitStatus },
    /// A line of an [`Output::Events`] child.
    Line { pid: Pid, name: String, stream: Stream, line: String },
    /// The first shutdown request (later ones are only logged).
    Shutdown(ShutdownReason),
    /// A timer fired.
    Timer(TimerId),
    /// A [`Waker`] was woken (by another thread) since this event was last taken.
    Woken,
}


/// What a helper started with [`Supervisor::run`] did.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub status: WaitStatus,
    /// [`exit_code_from_wait_status`] of `status`.
    pub code: i32,
    /// The last 64 KiB of each stream, one `\n`-ended line at a time.
    pub stdout: String,
    pub stderr: String,
    /// It ran past its timeout and was killed.
    pub timed_out: bool,
}

impl RunOutput {
    /// Exited with code 0 in time.
    pub fn success(&self) -> bool {
        self.code == 0 && !self.timed_out
    }
}

/// What the reaper does with an exit.
#[derive(Debug, PartialEq, Eq)]
enum Track {
    /// Queue [`Event::Exited`].
    Events,
    /// Keep the status for [`Supervisor::run`].
    Run,
    /// `run` gave up on it: log the exit when it comes.
    Abandoned,
}

#[derive(Debug)]
struct Child {
    name: String,
    track: Track,
    status: Option<WaitStatus>,
    stdout: String,
    stderr: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Log,
    Events,
    Collect,
}

#[derive(Debug)]
struct Pipe {
    id: u64,
    fd: OwnedFd,
    /// The child it belongs to; None once that child exited and someone else (a grandchild that
    /// inherited the pipe, e.g. a container started by `runc create`) still writes to it, except
    /// for [`Sink::Events`], whose lines keep naming the child that was started.
    pid: Option<Pid>,
    name: String,
    stream: Stream,
    sink: Sink,
    buf: LineBuf,
}

/// What poll() reported ready.
#[derive(Debug, Clone, Copy)]
enum Token {
    Signal,
    Waker,
    Acpi,
    Pipe(u64),
    Health(crate::health::Token),
}

/// The reaper, signal handler, health server and timer wheel of flower-init.
pub struct Supervisor {
    /// What `/health` and `/status` serve; its owner updates it between loop turns
    /// ([`Supervisor::status_mut`]).
    status: Status,
    sfd: SignalFd,
    children: HashMap<Pid, Child>,
    /// Process groups (= sessions: children call setsid) of the children we started, for the
    /// service-mode shutdown; groups without members are pruned.
    groups: Vec<Pid>,
    pipes: Vec<Pipe>,
    events: VecDeque<Event>,
    queued_lines: usize,
    dropped_lines: u64,
    timers: Vec<(Instant, TimerId)>,
    next_id: u64,
    health: Option<crate::health::Server>,
    acpi: Option<crate::acpi::Listener>,
    waker: Option<waker::WakeFd>,
    shutdown: Option<ShutdownReason>,
    forward_to: Option<Pid>,
    orphans_reaped: u64,
    no_children: bool,
}

impl Supervisor {
    /// The loop, with nothing registered yet but the signalfd.
    pub fn new(blocked: SignalsBlocked) -> Result<Self> {
        let flags = SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC;
        let sfd = SignalFd::with_flags(blocked.set(), flags).ctx("create signalfd")?;
        let mut sv = Supervisor {
            status: Status::default(),
            sfd,
            children: HashMap::new(),
            groups: Vec::new(),
            pipes: Vec::new(),
            events: VecDeque::new(),
            queued_lines: 0,
            dropped_lines: 0,
            timers: Vec::new(),
            next_id: 0,
            health: None,
            acpi: None,
            waker: None,
            shutdown: None,
            forward_to: None,
            orphans_reaped: 0,
            no_children: false,
        };
        sv.reap(); // children that exited before the signalfd existed
        Ok(sv)
    }

    /// Serve the health port from this loop; returns the bound address (port 0 picks one).
    pub fn listen_health(&mut self, cfg: &crate::health::Config) -> Result<std::net::SocketAddr> {
        let server = crate::health::Server::bind(cfg)?;
        let addr = server.local_addr();
        self.health = Some(server);
        Ok(addr)
    }

    /// The health server, when it listens (to change who may read `/status`).
    pub fn health_mut(&mut self) -> Option<&mut crate::health::Server> {
        self.health.as_mut()
    }

    /// The health server's counters, when it listens.
    pub fn health_stats(&self) -> Option<crate::health::Stats> {
        self.health.as_ref().map(|h| h.stats())
    }

    /// Turn an ACPI power-button press into a shutdown request. `Err(NotAvailable)` when the
    /// kernel has no `acpi_event` family (no ACPI, or button.ko not loaded): warn and go on.
    pub fn watch_acpi(&mut self) -> std::result::Result<(), crate::acpi::AcpiError> {
        self.acpi = Some(crate::acpi::Listener::open()?);
        Ok(())
    }

    /// What `/health` and `/status` serve.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The served status, to record a step, a failure or the sections.
    pub fn status_mut(&mut self) -> &mut Status {
        &mut self.status
    }

    /// A handle other threads use to make the loop turn (created on first use).
    pub fn waker(&mut self) -> Result<Waker> {
        if self.waker.is_none() {
            self.waker = Some(waker::WakeFd::new().ctx("create eventfd")?);
        }
        // Invariant: set just above.
        Ok(self.waker.as_ref().map(|w| w.waker()).expect("waker set"))
    }

    /// Turn the loop until `done` holds (true) or `deadline` passes (false). `done` is checked
    /// first and after every turn; include `sv.shutdown_requested().is_some()` to stop early.
    pub fn run_until(&mut self, deadline: Instant, mut done: impl FnMut(&Self) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.pump(Some(deadline));
        }
    }

    /// The events received and not yet taken by [`Supervisor::next_event`], oldest first (a
    /// boot step waiting for a child's first lines reads them without taking them).
    pub fn pending(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// Turn the loop for `d`, or less: false as soon as a shutdown is (or was already) requested.
    pub fn sleep(&mut self, d: Duration) -> bool {
        !self.run_until(Instant::now() + d, |sv| sv.shutdown.is_some())
    }

    /// The next event, turning the loop until one comes or `deadline` (None: wait for ever).
    pub fn next_event(&mut self, deadline: Option<Instant>) -> Option<Event> {
        loop {
            if let Some(e) = self.events.pop_front() {
                if matches!(e, Event::Line { .. }) {
                    self.queued_lines -= 1;
                }
                return Some(e);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            self.pump(deadline);
        }
    }

    /// Wait for a spawned child's exit, taking its [`Event::Exited`] out of the queue (other
    /// events stay queued). None if the deadline passed or `pid` is not a child of ours.
    /// Shutdown requests do not end the wait (this is what stopping a workload uses).
    pub fn wait_exit(&mut self, pid: Pid, deadline: Option<Instant>) -> Option<WaitStatus> {
        loop {
            if let Some(status) = self.take_exit(pid) {
                return Some(status);
            }
            if !self.children.contains_key(&pid) || deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            self.pump(deadline);
        }
    }

    /// Supervise one workload run: wait for `pid` to exit, or for a shutdown request, whichever
    /// comes first (other events stay queued; after a shutdown the exit stays queued for
    /// [`Supervisor::wait_exit`]). For a pid that is not ours this waits for a shutdown.
    pub fn wait_exit_or_shutdown(&mut self, pid: Pid) -> std::result::Result<WaitStatus, ShutdownReason> {
        loop {
            if let Some(reason) = self.shutdown {
                return Err(reason);
            }
            if let Some(status) = self.take_exit(pid) {
                return Ok(status);
            }
            self.pump(None);
        }
    }

    /// Remove `pid`'s [`Event::Exited`] from the queue, if it is there.
    fn take_exit(&mut self, pid: Pid) -> Option<WaitStatus> {
        let i = self.events.iter().position(|e| matches!(e, Event::Exited { pid: p, .. } if *p == pid))?;
        match self.events.remove(i) {
            Some(Event::Exited { status, .. }) => Some(status),
            _ => None,
        }
    }

    /// Fire [`Event::Timer`] at `at`.
    pub fn set_timer(&mut self, at: Instant) -> TimerId {
        let id = TimerId(self.next_id());
        self.timers.push((at, id));
        id
    }

    /// Track a process we did not spawn but that is (or will be) re-parented to us — the init
    /// of a container started with `runc create`, whose parent runc exits — so that its exit is
    /// delivered as [`Event::Exited`] instead of being counted as an orphan. Call it before the
    /// process can exit (a created container's init waits for `runc start`).
    pub fn adopt(&mut self, pid: Pid, name: &str) {
        self.children.insert(
            pid,
            Child { name: name.to_string(), track: Track::Events, status: None, stdout: String::new(), stderr: String::new() },
        );
    }

    /// Forget a timer (no-op if it already fired).
    pub fn cancel_timer(&mut self, id: TimerId) {
        self.timers.retain(|(_, t)| *t != id);
    }

    /// The first shutdown request, if any (sticky: it stays set once made).
    pub fn shutdown_requested(&self) -> Option<ShutdownReason> {
        self.shutdown
    }

    /// Ask for a shutdown from inside flower-init; only the first request counts.
    pub fn request_shutdown(&mut self, reason: ShutdownReason) {
        if let Some(first) = self.shutdown {
            log::info!("{reason}: shutdown already requested ({first})");
            return;
        }
        log::warn!("shutdown requested: {reason}");
        self.shutdown = Some(reason);
        self.events.push_back(Event::Shutdown(reason));
    }

    /// Forward signals that are not shutdown requests (SIGHUP, SIGUSR1, SIGQUIT …) to `pid`.
    pub fn forward_signals_to(&mut self, pid: Option<Pid>) {
        self.forward_to = pid;
    }

    /// Children that exited without being ours to track (orphans re-parented to us).
    pub fn orphans_reaped(&self) -> u64 {
        self.orphans_reaped
    }

    /// Process groups of children started here that still have members (the children lead
    /// their own sessions; grandchildren stay in them unless they move out).
    pub fn live_groups(&self) -> Vec<Pid> {
        self.groups.iter().copied().filter(|g| group_alive(*g)).collect()
    }

    /// Pids of the children started here that have not exited yet.
    pub fn tracked(&self) -> Vec<Pid> {
        self.children.iter().filter(|(_, c)| c.status.is_none()).map(|(p, _)| *p).collect()
    }

    /// Whether any child, tracked or orphan, was left at the last reap (every SIGCHLD reaps,
    /// so this is current once the loop has turned).
    pub fn has_children(&self) -> bool {
        !self.no_children
    }

    /// Collect exits now without waiting for SIGCHLD (e.g. before counting what is left).
    pub fn reap_now(&mut self) {
        self.reap();
    }

    /// One turn: wait for readiness or the next deadline (the caller's, a timer's, a health
    /// connection's), then handle everything ready, signals first.
    pub fn pump(&mut self, deadline: Option<Instant>) {
        let now = Instant::now();
        let health_deadline = self.health.as_ref().and_then(|h| h.next_deadline());
        let timer = self.timers.iter().map(|(t, _)| *t).min();
        let wake = [deadline, health_deadline, timer].into_iter().flatten().min();
        let timeout = match wake {
            None => PollTimeout::NONE,
            Some(t) => {
                // Round up, or we would wake a little early and spin until the deadline.
                let ms = t.saturating_duration_since(now).as_micros().div_ceil(1000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let ready = {
            let mut tokens = vec![Token::Signal];
            let mut fds = vec![PollFd::new(self.sfd.as_fd(), PollFlags::POLLIN)];
            if let Some(w) = &self.waker {
                tokens.push(Token::Waker);
                fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
            }
            if let Some(a) = &self.acpi {
                tokens.push(Token::Acpi);
                fds.push(PollFd::new(a.as_fd(), PollFlags::POLLIN));
            }
            for p in &self.pipes {
                tokens.push(Token::Pipe(p.id));
                fds.push(PollFd::new(p.fd.as_fd(), PollFlags::POLLIN));
            }
            if let Some(h) = &self.health {
                let mut interest = Vec::new();
                h.poll_fds(now, &mut interest);
                for (tok, fd, ev) in interest {
                    tokens.push(Token::Health(tok));
                    fds.push(PollFd::new(fd, ev));
                }
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => log::warn!("poll: {}", e.desc()),
            }
            let ready: Vec<(Token, PollFlags)> = tokens
                .into_iter()
                .zip(fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())))
                .filter(|(_, r)| !r.is_empty())
                .collect();
            ready
        };
        for (token, revents) in ready {
            match token {
                Token::Signal => self.on_signals(),
                Token::Waker => self.on_wake(),
                Token::Acpi => self.on_acpi(),
                Token::Pipe(id) => self.on_pipe(id),
                Token::Health(tok) => {
                    if let Some(h) = self.health.as_mut() {
                        h.on_ready(tok, revents, &self.status, Instant::now());
                    }
                }
            }
        }
        let now = Instant::now();
        if let Some(h) = self.health.as_mut() {
            h.expire(now);
        }
        let (mut due, rest): (Vec<_>, Vec<_>) = self.timers.drain(..).partition(|(t, _)| *t <= now);
        self.timers = rest;
        // In the order they were due (not set): a loop that woke late finds several at once.
        due.sort_by_key(|(t, _)| *t);
        self.events.extend(due.into_iter().map(|(_, id)| Event::Timer(id)));
    }

    /// Ids for pipes and timers, unique for the life of the loop.
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The eventfd was written: clear it and queue one [`Event::Woken`] (wakes coalesce).
    fn on_wake(&mut self) {
        let woken = self.waker.as_ref().is_some_and(|w| w.clear());
        if woken && !self.events.iter().any(|e| *e == Event::Woken) {
            self.events.push_back(Event::Woken);
        }
    }

    /// ACPI events arrived: a power-button press is a shutdown request, the rest is logged.
    fn on_acpi(&mut self) {
        let Some(acpi) = &self.acpi else { return };
        for ev in acpi.read_events() {
            if ev.is_power_button() {
                log::info!("ACPI event {ev}");
                self.request_shutdown(ShutdownReason::PowerButton);
            } else {
                log::debug!("ignoring ACPI event {ev}");
            }
        }
    }
}
