//! Shutdown and power-off: stop the workload with a grace period, TERM then KILL the rest,
//! reap, sync, unmount, `reboot(RB_POWER_OFF)`; the panic hook that powers off. Issue #3.
//!
//! The sequence is LinuxKit's `doShutdown` (research/init.md §3.4). Everything that can end
//! every process on a machine (`kill(-1)`, `reboot(2)`, CAD off) takes a [`Pid1`] value, which
//! only [`Pid1::claim`] makes and only when this process really is PID 1. The service mode
//! (`flower-init boot`/`supervise`, maybe PID 1 of a PID namespace only) never holds one: it
//! signals its own children's process groups, reaps, and returns an exit code.

use crate::supervisor::Supervisor;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the rest of the processes get between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);
/// How long to wait for SIGKILLed processes to be reaped before going on regardless.
const REAP_AFTER_KILL: Duration = Duration::from_secs(5);

/// Proof that this process is the machine's init: the only way to reach `kill(-1)` and
/// `reboot(2)`. Not `Clone`: [`Pid1::claim`] is the single source.
#[derive(Debug)]
pub struct Pid1 {
    _private: (),
}

impl Pid1 {
    /// `Some` only when `getpid() == 1` (raw syscall, as NVRC does: no cached value).
    /// The CLI claims it only when the kernel started flower-init with no subcommand; inside
    /// `unshare --pid` getpid() is 1 as well, and then `kill(-1)` and `reboot(2)` only reach
    /// that namespace (the kernel turns a power-off into killing the namespace's init).
    pub fn claim() -> Option<Pid1> {
        // SAFETY: getpid takes no arguments and cannot fail.
        let pid = unsafe { libc::syscall(libc::SYS_getpid) };
        (pid == 1).then_some(Pid1 { _private: () })
    }
}

/// Whether the shutdown may touch the whole machine.
#[derive(Debug)]
pub enum Mode {
    Pid1(Pid1),
    /// Only our own children and their process groups; return instead of powering off.
    Service,
}

/// What the shutdown does besides stopping the workload.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Handed to the workload-stopping closure (e.g. `runc kill TERM`, wait, `runc kill KILL`).
    pub grace: Duration,
    /// Between SIGTERM and SIGKILL for everything else.
    pub kill_grace: Duration,
    /// Mount points in the order they were mounted; unmounted in reverse (PID-1 mode only).
    pub unmount: Vec<PathBuf>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan { grace: Duration::from_secs(10), kill_grace: DEFAULT_KILL_GRACE, unmount: Vec::new() }
    }
}

/// Ctrl-Alt-Del then reaches PID 1 as SIGINT (a shutdown request) instead of an immediate
/// reboot by the kernel. Call once, early, in PID-1 mode.
///
/// Returns `Err(NotAMachine)` when the kernel refuses with EINVAL: reboot(2) answers CAD
/// commands that way only in a PID namespace other than the initial one, i.e. this "PID 1" is
/// `unshare --pid` or a container's, not a machine's: the caller stops instead of booting.
pub fn disable_cad(_: &Pid1) -> Result<(), NotAMachine> {
    match nix::sys::reboot::set_cad_enabled(false) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => Err(NotAMachine),
        Err(e) => {
            log::warn!("disable Ctrl-Alt-Del: {}", e.desc());
            Ok(())
        }
    }
}

/// PID 1 of a nested PID namespace (see [`disable_cad`]).
#[derive(Debug)]
pub struct NotAMachine;

/// The whole shutdown. `stop_workload(sv, plan.grace)` runs first and returns the workload's
/// exit code if it knows one. Service mode returns that code after cleaning up its own
/// process groups; PID-1 mode goes on to power off and never returns.
pub fn shutdown(
    sv: &mut Supervisor,
    mode: Mode,
    plan: &Plan,
    stop_workload: impl FnOnce(&mut Supervisor, Duration) -> Option<i32>,
) -> Option<i32> {
    sv.status_mut().shutting_down(); // /health answers 503 from here on
    log::info!("shutting down: stopping the workload ({}s grace)", plan.grace.as_secs_f32());
    let code = stop_workload(sv, plan.grace);
    match mode {
        Mode::Service => {
            stop_own_groups(sv, plan.kill_grace);
            code
        }
        Mode::Pid1(pid1) => {
            if let Some(c) = code {
                log::info!("workload exit code {c}");
            }
            let left = terminate_all(sv, &pid1, plan.kill_grace);
            if left > 0 {
                log::warn!("{left} processes survived SIGKILL (uninterruptible?); powering off anyway");
            }
            sync();
            unmount_all(sv, &plan.unmount);
            power_off(&pid1)
        }
    }
}

/// Service mode: SIGTERM the process group of each child we started that still has members,
/// wait up to `grace`, SIGKILL the groups left, reap. Orphans that left those groups are left to
/// the caller's environment (a PID namespace ends them when its init exits). Returns how many
/// groups survived SIGKILL (0 normally).
pub fn stop_own_groups(sv: &mut Supervisor, grace: Duration) -> usize {
    let groups = sv.live_groups();
    if groups.is_empty() {
        return 0;
    }
    log::info!("sending SIGTERM to {} process group(s)", groups.len());
    for g in &groups {
        let _ = killpg(*g, Signal::SIGTERM);
    }
    if !sv.run_until(Instant::now() + grace, |sv| sv.live_groups().is_empty()) {
        for g in sv.live_groups() {
            log::warn!("process group {g} still running after {}s: SIGKILL", grace.as_secs_f32());
            let _ = killpg(g, Signal::SIGKILL);
        }
        sv.run_until(Instant::now() + REAP_AFTER_KILL, |sv| sv.live_groups().is_empty());
    }
    sv.reap_now();
    sv.live_groups().len()
}

/// PID-1 mode: `kill(-1, SIGTERM)`, up to `grace` for everything to exit, `kill(-1, SIGKILL)`,
/// reap until ECHILD (bounded). Returns the number of children still not reaped (0 normally).
pub fn terminate_all(sv: &mut Supervisor, _: &Pid1, grace: Duration) -> usize {
    if !sv.has_children() {
        return 0;
    }
    log::info!("sending SIGTERM to all processes");
    kill_all(Signal::SIGTERM);
    if !sv.run_until(Instant::now() + grace, |sv| !sv.has_children()) {
        log::info!("sending SIGKILL to all processes");
        kill_all(Signal::SIGKILL);
        sv.run_until(Instant::now() + REAP_AFTER_KILL, |sv| !sv.has_children());
    }
    if sv.has_children() { count_children() } else { 0 }
}

/// `kill(-1, sig)`: every process but ourselves (and kernel threads). Private, and only
/// reachable through functions that take a [`Pid1`].
fn kill_all(sig: Signal) {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => log::warn!("kill(-1, {}): {}", sig.as_str(), e.desc()),
    }
}

/// Children we could not reap, for the log (counts /proc entries whose parent is us).
fn count_children() -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else { return 1 };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid …: comm may contain spaces and parentheses, so split after the last ')'.
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).is_some_and(|ppid| ppid == me)
        })
        .count()
}

/// Flush every filesystem's dirty data.
pub fn sync() {
    nix::unistd::sync();
}

/// Unmount `mounts` in reverse order ([`crate::mount::unmount_all`]: a few plain tries, then
/// `MNT_DETACH`), turning the loop between tries, then sync. Returns what could not be
/// unmounted cleanly (also logged).
pub fn unmount_all(sv: &mut Supervisor, mounts: &[PathBuf]) -> Vec<String> {
    let problems = crate::mount::unmount_all(mounts, &mut |d| {
        sv.run_until(Instant::now() + d, |_| false);
    });
    for p in &problems {
        log::warn!("unmount {p}");
    }
    sync();
    problems
}

/// The bare syscall, for the panic hook (no logging: the logger's lock may be held).
fn reboot_power_off(_: &Pid1) {
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
}

/// `reboot(RB_POWER_OFF)`: the VM stops (ACPI S5 under qemu/KVM). Should it fail, stay alive
/// without spinning: exiting PID 1 would be a kernel panic.
pub fn power_off(_: &Pid1) -> ! {
    log::info!("powering off");
    sync();
    let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF).unwrap_err();
    log::error!("reboot(RB_POWER_OFF): {}; halting here", err.desc());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Write a panic's message to the console and the kernel log, then run `action` (with the
/// message). A panic in PID 1 would otherwise be "Attempted to kill init!" and, with
/// `panic=-1`, a reboot loop. Tests pass their own action; see [`set_panic_hook`].
pub fn set_panic_hook_with(action: impl Fn(&str) + Send + Sync + 'static) {
    std::panic::set_hook(Box::new(move |info| {
        let msg = format!("flower-init: panic: {info}");
        // Straight to the fds: the logger's lock may be held by the panicking code.
        let _ = std::io::stderr().write_all(format!("{msg}\n").as_bytes());
        if let Ok(mut k) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
            let _ = k.write_all(format!("<2>{msg}").as_bytes()); // KERN_CRIT
        }
        action(&msg);
    }));
}

/// The production hook: PID-1 mode syncs and powers off; service mode only logs (the process
/// then aborts or unwinds as usual).
pub fn set_panic_hook(mode: &Mode) {
    match mode {
        Mode::Pid1(_) => set_panic_hook_with(|_| {
            sync();
            // A Pid1 was claimed, so this process is PID 1: powering off is what it may do.
            if let Some(p) = Pid1::claim() {
                reboot_power_off(&p);
            }
        }),
        Mode::Service => set_panic_hook_with(|_| {}),
    }
}

#[cfg(test)]
mod tests;
