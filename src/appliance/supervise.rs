//! Supervision: a small state machine over the Flower container, driven by the event loop.
//!
//! ```text
//!            exits                   restart timer             /health 200 and up >= 5 s
//!   Up ─────────────────▶ Restarting ─────────────▶ Probing ───────────────────────────▶ Up
//!                              ▲  restart failed │     │ exits
//!                              └─────────────────┘     └──────────────▶ Restarting
//! ```
//!
//! Besides: the run's status file is read every [`RUN_POLL`] until the run ends (and its
//! watchdog asked whether it can still progress), `/status` is refreshed every [`REFRESH`]
//! (and whenever a background thread wakes the loop), and a SuperLink with TLS checks its
//! certificates every `Layout::tls_check_every` (daily; [`renew`]: a renewed certificate
//! restarts Flower's container at once, without back-off), until a shutdown request; then
//! everything stops (and PID 1 powers off).

use super::steps::Boot;
use super::renew::{self, Checked};
use super::{Node, run, workload};
use crate::supervisor::{self, Backoff, Event, TimerId};
use std::time::{Duration, Instant};

/// After a restart, how long the container must stay up before /health says 200 again.
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// After a restart, `/health` is probed this often until Flower answers again.
const PROBE_AGAIN: Duration = Duration::from_secs(1);
/// The run's status file is read this often.
const RUN_POLL: Duration = Duration::from_secs(5);
/// `/status` is refreshed at least this often.
const REFRESH: Duration = Duration::from_secs(5);

/// Where the Flower container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flower {
    /// Running (healthy once `/health` said so); watched for its exit.
    Up,
    /// Exited: started again when the timer fires (with back-off).
    Restarting(TimerId),
    /// Started again: `/health` is probed when the timer fires until it answers and the
    /// container has stayed up [`STABLE_AFTER`].
    Probing(TimerId),
}

/// The loop's state: the container's, and the timers of the side duties.
struct Loop {
    flower: Flower,
    backoff: Backoff,
    /// When the container was last started (the back-off resets after a long run).
    started: Instant,
    /// Next read of the run's status file, while a run is followed and not ended.
    run_poll: Option<TimerId>,
    refresh: TimerId,
    /// Next certificate check (SuperLink with TLS).
    tls_check: Option<TimerId>,
    /// Flower was stopped on purpose to take a renewed certificate: restart it at once.
    planned_restart: bool,
}

/// From a healthy, published Flower to shutdown; returns the exit code (service mode).
pub(super) fn supervise(mut b: Boot, mut node: Node) -> i32 {
    b.sv.status_mut().ready();
    super::refresh(&mut b, &node);
    log::info!("ready: {} {} supervised; /health answers 200", node.role(), node.id);
    let now = Instant::now();
    let mut l = Loop {
        flower: Flower::Up,
        backoff: Backoff::default(),
        started: now,
        run_poll: node.run.is_some().then(|| b.sv.set_timer(now + Duration::from_secs(1))),
        refresh: b.sv.set_timer(now + REFRESH),
        tls_check: node.superlink_tls.is_some().then(|| b.sv.set_timer(now + b.layout.tls_check_every)),
        planned_restart: false,
    };
    loop {
        let Some(ev) = b.sv.next_event(None) else { continue };
        match ev {
            Event::Shutdown(_) => break,
            Event::Line { pid, stream, ref line, .. } if node.gateway.as_ref().is_some_and(|g| g.proc.pid == Some(pid)) => {
                if let Some(g) = node.gateway.as_mut() {
                    g.on_line(pid, stream, line);
                }
            }
            Event::Exited { pid, status, .. } if node.gateway.as_ref().is_some_and(|g| g.proc.pid == Some(pid)) => {
                if let Some(g) = node.gateway.as_mut() {
                    g.on_exit(&mut b.sv, pid, status);
                }
            }
            Event::Timer(t) if node.gateway.as_ref().is_some_and(|g| g.proc.restart == Some(t)) => {
                if let Some(g) = node.gateway.as_mut() {
                    g.proc.on_restart(&mut b.sv);
                }
            }
            Event::Line { pid, stream, ref line, .. } if node.admit.as_ref().is_some_and(|a| a.proc.pid == Some(pid)) => {
                if let Some(a) = node.admit.as_mut() {
                    a.on_line(stream, line);
                }
            }
            Event::Exited { status, pid, .. } if node.admit.as_ref().is_some_and(|a| a.proc.pid == Some(pid)) => {
                if let Some(a) = node.admit.as_mut() {
                    a.proc.on_exit(&mut b.sv, status, "the key registrar");
                }
            }
            Event::Timer(t) if node.admit.as_ref().is_some_and(|a| a.proc.restart == Some(t)) => {
                if let Some(a) = node.admit.as_mut() {
                    a.proc.on_restart(&mut b.sv);
                }
            }
            Event::Exited { pid, status, .. } if Some(pid) == node.pid => {
                node.pid = None;
                node.last_exit = super::report::LastExit::of(status);
                b.sv.forward_signals_to(None);
                let (delay, why) = if std::mem::take(&mut l.planned_restart) {
                    log::info!("{}: stopped to take the renewed certificate; starting it again", node.id);
                    (Duration::ZERO, "restarting with the renewed certificate".to_string())
                } else if let Some(why) = super::admit::refused_now(&node) {
                    super::admit::report_refusal(&mut b, &why);
                    (super::admit::REFUSED_RETRY, why)
                } else {
                    let delay = l.backoff.next_delay(l.started.elapsed());
                    let why = format!("the Flower container exited ({}){}", supervisor::describe_wait_status(status), workload::last_lines(&node.ring, 4));
                    log::warn!("{}: {why}; restarting in {:.1}s", node.id, delay.as_secs_f64());
                    (delay, why)
                };
                // /health says so until Flower answers again (a wrong CA, for one, never does).
                b.sv.status_mut().fail("flower", why);
                if let Flower::Probing(t) = l.flower {
                    b.sv.cancel_timer(t);
                }
                l.flower = Flower::Restarting(b.sv.set_timer(Instant::now() + delay));
                super::refresh(&mut b, &node);
            }
            Event::Timer(t) if l.flower == Flower::Restarting(t) => {
                l.started = Instant::now();
                node.restarts += 1;
                l.flower = match workload::restart(&mut b, &mut node) {
                    Ok(()) => Flower::Probing(b.sv.set_timer(Instant::now() + PROBE_AGAIN)),
                    Err(e) => {
                        let delay = l.backoff.next_delay(Duration::ZERO);
                        log::error!("{}: restart failed: {e}; next try in {:.1}s", node.id, delay.as_secs_f64());
                        b.sv.status_mut().fail("flower", format!("restart failed: {e}"));
                        Flower::Restarting(b.sv.set_timer(Instant::now() + delay))
                    }
                };
                super::refresh(&mut b, &node);
            }
            Event::Timer(t) if l.flower == Flower::Probing(t) => {
                // Healthy again once /health answers and the container has stayed up a while: a
                // SuperNode answers /health before it reaches its SuperLink, and one that cannot
                // (a wrong CA) exits a moment later; that must not flap /health back to 200.
                let healthy = node.pid.is_some()
                    && l.started.elapsed() >= STABLE_AFTER
                    && node.prober.as_ref().is_some_and(|p| p.check(workload::PROBE_TIMEOUT).is_ok());
                l.flower = if healthy {
                    log::info!("flower healthy again after the restart");
                    super::admit::clear_refusal(&mut b);
                    b.sv.status_mut().ready();
                    Flower::Up
                } else if node.pid.is_some() {
                    Flower::Probing(b.sv.set_timer(Instant::now() + PROBE_AGAIN))
                } else {
                    // Exited meanwhile: its exit event moves to Restarting.
                    Flower::Up
                };
            }
            Event::Timer(t) if l.run_poll == Some(t) => {
                run::follow(&mut b, &mut node);
                run::check_progress(&mut b, &mut node);
                l.run_poll = node.run.as_ref().filter(|r| !r.ended()).map(|_| b.sv.set_timer(Instant::now() + RUN_POLL));
            }
            Event::Timer(t) if l.tls_check == Some(t) => {
                if renew::check(&mut b, &mut node, crate::tls::unix_now()) == Checked::Reissued {
                    // Flower holds the certificate (read at its start): stop it; its exit
                    // event restarts it at once with the new files bound in.
                    if node.pid.is_some() {
                        l.planned_restart = true;
                        if let Err(e) = workload::run_argv(&mut b.sv, "runc kill", &node.runc.kill(&node.id, "TERM")) {
                            l.planned_restart = false;
                            log::error!("{}: could not stop it for the renewed certificate: {e}", node.id);
                        }
                    }
                    super::refresh(&mut b, &node);
                }
                l.tls_check = Some(b.sv.set_timer(Instant::now() + b.layout.tls_check_every));
            }
            Event::Timer(t) if t == l.refresh => {
                super::refresh(&mut b, &node);
                l.refresh = b.sv.set_timer(Instant::now() + REFRESH);
            }
            other => workload::on_event(&mut b, &mut node, other),
        }
    }
    let runc = node.runc.clone();
    let id = node.id.clone();
    let pid = node.pid;
    let gateway = node.gateway.take();
    let admit = node.admit.take();
    b.finish(move |sv, grace| {
        if let Some(mut a) = admit {
            a.proc.stop(sv);
        }
        if let Some(mut g) = gateway {
            g.proc.stop(sv);
        }
        workload::stop(sv, &runc, &id, pid, grace)
    })
}
