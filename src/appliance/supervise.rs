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
//! watchdog asked whether it can still progress), and `/status`
//! is refreshed every [`REFRESH`] (and whenever a background thread wakes the loop), until a
//! shutdown request; then everything stops (and PID 1 powers off).

use super::steps::Boot;
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
    };
    loop {
        let Some(ev) = b.sv.next_event(None) else { continue };
        match ev {
            Event::Shutdown(_) => break,
            Event::Exited { pid, status, .. } if Some(pid) == node.pid => {
                node.pid = None;
                b.sv.forward_signals_to(None);
                let delay = l.backoff.next_delay(l.started.elapsed());
                let why = format!("the Flower container exited ({}){}", supervisor::describe_wait_status(status), workload::last_lines(&node.ring, 4));
                log::warn!("{}: {why}; restarting in {:.1}s", node.id, delay.as_secs_f64());
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
    b.finish(move |sv, grace| {
        if let Some(mut g) = gateway {
            g.stop(Duration::from_secs(5));
        }
        workload::stop(sv, &runc, &id, pid, grace)
    })
}
