//! The run's watchdog: a submitted run that cannot progress is reported failed within minutes
//! instead of hanging silently (issue #13).
//!
//! The app reports its own failures (a phase without replies within `round-timeout`, nodes
//! that never come), but only once its ServerApp runs. What it cannot report is Flower never
//! starting it, or losing it: when an app process makes its first Runtime call later than the
//! task-start window after the SuperExec claimed its task (Flower 1.42: `claim_task`,
//! HEARTBEAT_DEFAULT_INTERVAL), every call of that process answers 401 and the SuperLink logs
//! `Runtime task-token authentication failed.` while the SuperExec starts yet another process,
//! forever. Two rules, checked on every read of the status file:
//! - the ServerApp has not written its status [`START_WITHIN`] after the submission;
//! - the SuperLink refused at least [`REFUSALS`] Runtime calls that way and the run's status
//!   has not changed for [`STALL_AFTER`].
//!
//! The reasons name counts and durations only: Flower's lines carry no token, and none of
//! their text is copied.

use std::time::{Duration, Instant};

/// How long a submitted run's ServerApp may take to write its first status. A cold app start
/// takes ~50 s under qemu TCG; the warm start (the zygote) a few seconds.
pub(super) const START_WITHIN: Duration = Duration::from_secs(600);
/// Token refusals (401) since the run's status last changed that mean the loop described above.
pub(super) const REFUSALS: u32 = 4;
/// ... once the status has not changed for this long: one late process can be refused once
/// or twice (after a SuperLink restart, say) without the run being lost.
pub(super) const STALL_AFTER: Duration = Duration::from_secs(180);
/// The SuperLink's line for a Runtime call whose task token is unknown or expired
/// (flwr/supercore/dependencies/task.py).
const REFUSAL: &str = "task-token authentication failed";

/// What the watchdog knows about one submitted run.
#[derive(Debug, Clone)]
pub(super) struct Watchdog {
    submitted: Instant,
    last_progress: Instant,
    /// The ServerApp has written a status for this run.
    started: bool,
    refusals: u32,
    refusals_total: u32,
}

impl Watchdog {
    /// A run submitted at `now`.
    pub(super) fn new(now: Instant) -> Watchdog {
        Watchdog { submitted: now, last_progress: now, started: false, refusals: 0, refusals_total: 0 }
    }

    /// One line of the SuperLink's output: counts the task-token refusals.
    pub(super) fn on_line(&mut self, line: &str) {
        if line.contains(REFUSAL) {
            self.refusals += 1;
            self.refusals_total += 1;
        }
    }

    /// The run's status changed at `now` (the ServerApp wrote it): the run progresses.
    pub(super) fn on_progress(&mut self, now: Instant) {
        self.started = true;
        self.last_progress = now;
        self.refusals = 0;
    }

    /// Why the run cannot progress, if it cannot (checked at `now`).
    pub(super) fn verdict(&self, now: Instant) -> Option<String> {
        let since = now.saturating_duration_since(self.last_progress);
        let refused = |n: u32| {
            format!(
                "the SuperLink refused {n} Runtime call(s) with \"task-token authentication failed\": app processes start \
                 later than Flower's task-start window allows (see docs/app.md, \"How apps start\")"
            )
        };
        if !self.started && now.saturating_duration_since(self.submitted) >= START_WITHIN {
            let mut why = format!("the ServerApp did not start within {}s of the submission", START_WITHIN.as_secs());
            if self.refusals_total > 0 {
                why.push_str("; ");
                why.push_str(&refused(self.refusals_total));
            }
            return Some(why);
        }
        if self.refusals >= REFUSALS && since >= STALL_AFTER {
            let what = if self.started { "no progress" } else { "the ServerApp never started" };
            return Some(format!("{what} for {}s; {}", since.as_secs(), refused(self.refusals)));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "\x1b[91mERROR \x1b[0m:     [/v1/runtime/pull-task-input][ApiError:1008] Runtime task-token authentication failed.";

    #[test]
    fn a_run_whose_apps_are_refused_is_failed_after_the_stall_bound_not_before() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0);
        assert_eq!(w.verdict(t0 + Duration::from_secs(30)), None);
        for _ in 0..REFUSALS {
            w.on_line(LINE);
        }
        w.on_line("INFO :      [/v1/runtime/pull-task-input] 200");
        assert_eq!(w.verdict(t0 + STALL_AFTER - Duration::from_secs(1)), None, "too early");
        let why = w.verdict(t0 + STALL_AFTER).expect("stalled");
        assert!(why.starts_with("the ServerApp never started for 180s; the SuperLink refused 4 Runtime call(s)"), "{why}");
        assert!(why.contains("docs/app.md"), "{why}");
        assert!(!why.contains("ApiError") && !why.contains('\x1b'), "no Flower text copied: {why}");
    }

    #[test]
    fn progress_resets_the_refusals_and_a_few_refusals_are_tolerated() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0);
        for _ in 0..REFUSALS {
            w.on_line(LINE);
        }
        w.on_progress(t0 + Duration::from_secs(60));
        assert_eq!(w.verdict(t0 + Duration::from_secs(60) + STALL_AFTER * 10), None, "progress cleared them");
        w.on_line(LINE);
        w.on_line(LINE);
        assert_eq!(w.verdict(t0 + Duration::from_secs(60) + STALL_AFTER * 10), None, "two late calls are not a loop");
        for _ in 0..REFUSALS {
            w.on_line(LINE);
        }
        let why = w.verdict(t0 + Duration::from_secs(60) + STALL_AFTER).expect("stalled mid-run");
        assert!(why.starts_with("no progress for 180s; the SuperLink refused 6 Runtime call(s)"), "{why}");
    }

    #[test]
    fn a_serverapp_that_never_writes_its_status_is_failed_after_the_start_bound() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0);
        assert_eq!(w.verdict(t0 + START_WITHIN - Duration::from_secs(1)), None);
        assert_eq!(
            w.verdict(t0 + START_WITHIN).as_deref(),
            Some("the ServerApp did not start within 600s of the submission")
        );
        w.on_line(LINE);
        let why = w.verdict(t0 + START_WITHIN).unwrap();
        assert!(why.ends_with("(see docs/app.md, \"How apps start\")") && why.contains("refused 1 Runtime"), "{why}");
        w.on_progress(t0 + Duration::from_secs(5));
        assert_eq!(w.verdict(t0 + START_WITHIN * 3), None, "a started run is judged by its progress only");
    }
}
