//! What the init knows about itself: the boot timeline and the state served on the health port.
//!
//! The boot sequence records each step here ([`Status::begin`], [`Status::end`]); the health
//! server renders `GET /health` from [`Status::health`] and `GET /status` from
//! [`Status::to_json`]. What the concerns report (OneGate, the container, the run, the
//! gateway...) is one typed document owned by whoever runs them (the appliance's report,
//! `supervise`'s), set whole with [`Status::set_sections`], so this type does not grow a
//! field per module and nothing inserts keys into it piecemeal.

use serde::Serialize;
use std::time::Duration;

/// Longest failure reason or step detail kept (a refused context's problems are already
/// capped in count; this bounds whatever else a step reports).
pub const MAX_REASON_BYTES: usize = 8 * 1024;
/// Longest `/health` body line: probes need the verdict, `/status` has the rest.
pub const MAX_HEALTH_LINE: usize = 300;

/// `text` cut to at most `max` bytes on a character boundary, saying how much was left out.
pub fn cap_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Running,
    Ok,
    /// Finished, with a problem worth an operator's attention (e.g. GPU fallback to CPU).
    Warning,
    Skipped,
    Failed,
}

/// One boot step: when it started (seconds since boot) and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub start_s: f64,
    pub duration_s: Option<f64>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The ordered list of boot steps.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    pub steps: Vec<Step>,
}

impl Timeline {
    /// Open a step at time `now` (seconds since boot); returns its index for [`Timeline::end`].
    pub fn begin(&mut self, name: &str, now: Duration) -> usize {
        self.steps.push(Step {
            name: name.to_string(),
            start_s: now.as_secs_f64(),
            duration_s: None,
            outcome: Outcome::Running,
            detail: String::new(),
        });
        self.steps.len() - 1
    }

    /// Close step `idx` at time `now` (the detail capped at [`MAX_REASON_BYTES`]).
    pub fn end(&mut self, idx: usize, now: Duration, outcome: Outcome, detail: impl Into<String>) {
        if let Some(s) = self.steps.get_mut(idx) {
            s.duration_s = Some((now.as_secs_f64() - s.start_s).max(0.0));
            s.outcome = outcome;
            s.detail = cap_text(&detail.into(), MAX_REASON_BYTES);
        }
    }

    /// One line per step, for the console summary at the end of boot.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            let d = s.duration_s.map(|d| format!("{d:8.3}s")).unwrap_or_else(|| "     ...".into());
            out.push_str(&format!("  {:>9.3}s {d}  {:<9} {}", s.start_s, format!("{:?}", s.outcome).to_lowercase(), s.name));
            if !s.detail.is_empty() {
                out.push_str(&format!(" ({})", s.detail));
            }
            out.push('\n');
        }
        out
    }
}

/// Where the appliance is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Booting,
    /// Flower answers and READY was reported (or would have been).
    Ready,
    /// A step failed; the init stays up so an operator can read why.
    Failed,
    ShuttingDown,
}

/// Everything `/health` and `/status` show.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    phase: Phase,
    /// The step that failed and why (set with `Phase::Failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<Failure>,
    timeline: Timeline,
    /// Per-concern details (`"onegate"`, `"container"`, `"run"`, `"gateway"`...): one object,
    /// serialised from its owner's typed struct by [`Status::set_sections`].
    sections: serde_json::Value,
    /// Bumped by every change, so the health port renders `/status` once per change.
    #[serde(skip)]
    version: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub step: String,
    pub reason: String,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            phase: Phase::Booting,
            failure: None,
            timeline: Timeline::default(),
            sections: serde_json::Value::Object(Default::default()),
            version: 0,
        }
    }
}

impl Status {
    /// Where the appliance is.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The failed step and why, while failed.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Changes so far: equal versions serve equal documents.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The per-concern sections (`/status`'s `"sections"`; `/metrics` is rendered from them).
    pub fn sections(&self) -> &serde_json::Value {
        &self.sections
    }

    /// The boot steps so far.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Open step `name` at `now` (seconds since boot); its index for [`Status::end`].
    pub fn begin(&mut self, name: &str, now: Duration) -> usize {
        self.version += 1;
        self.timeline.begin(name, now)
    }

    /// Close step `idx` at `now`.
    pub fn end(&mut self, idx: usize, now: Duration, outcome: Outcome, detail: impl Into<String>) {
        self.version += 1;
        self.timeline.end(idx, now, outcome, detail)
    }

    /// Serving: `/health` answers 200 (and a failure that was being retried is over).
    pub fn ready(&mut self) {
        self.version += 1;
        self.phase = Phase::Ready;
        self.failure = None;
    }

    /// Stopping: `/health` answers 503 from here on.
    pub fn shutting_down(&mut self) {
        self.version += 1;
        self.phase = Phase::ShuttingDown;
    }

    /// Replace the per-concern sections with `sections` (a struct whose fields are the keys).
    pub fn set_sections(&mut self, sections: &impl Serialize) {
        self.version += 1;
        self.sections = serde_json::to_value(sections).unwrap_or_default();
    }

    /// Mark the boot failed at `step`: `/health` turns 503 with this reason (capped at
    /// [`MAX_REASON_BYTES`]).
    pub fn fail(&mut self, step: &str, reason: impl Into<String>) {
        self.version += 1;
        self.phase = Phase::Failed;
        self.failure = Some(Failure { step: step.to_string(), reason: cap_text(&reason.into(), MAX_REASON_BYTES) });
    }

    /// HTTP status code and one-line body for `GET /health`: the verdict and the start of the
    /// reason, at most [`MAX_HEALTH_LINE`] bytes of it (the port is open to the network).
    pub fn health(&self) -> (u16, String) {
        match (&self.phase, &self.failure) {
            (Phase::Ready, _) => (200, "ready".into()),
            (Phase::Failed, Some(f)) => {
                let first = f.reason.lines().next().unwrap_or("");
                let more = if first.len() < f.reason.len() { " (more in /status)" } else { "" };
                (503, format!("failed at {}: {}{more}", f.step, cap_text(first, MAX_HEALTH_LINE)))
            }
            (Phase::Failed, None) => (503, "failed".into()),
            (Phase::ShuttingDown, _) => (503, "shutting down".into()),
            (Phase::Booting, _) => {
                let step = self.timeline.steps.iter().rev().find(|s| s.outcome == Outcome::Running);
                (503, format!("booting: {}", step.map(|s| s.name.as_str()).unwrap_or("starting")))
            }
        }
    }

    /// The JSON document served on `GET /status`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_phase() {
        let mut st = Status::default();
        let i = st.begin("context", Duration::from_millis(1500));
        assert_eq!(st.health(), (503, "booting: context".into()));
        st.end(i, Duration::from_millis(1750), Outcome::Failed, "");
        st.fail("validate", "FL_NUM_ROUNDS='0': must be an integer >= 1");
        assert_eq!(st.health().0, 503);
        assert!(st.health().1.contains("FL_NUM_ROUNDS"));
        st.ready();
        assert_eq!(st.health(), (200, "ready".into()));
        assert!(st.failure().is_none());
        assert!((st.timeline().steps[0].duration_s.unwrap() - 0.25).abs() < 1e-9);
        assert!(st.to_json().contains("\"phase\": \"ready\""));
    }

    /// Issue #14 item 5: a huge reason is capped in the status and to one short line on
    /// `/health`; every change bumps the version.
    #[test]
    fn reasons_are_capped_and_changes_counted() {
        let mut st = Status::default();
        let v0 = st.version();
        let huge: String = (0..400_000).map(|i| format!("line {i}: bad\n")).collect();
        st.fail("context", huge.clone());
        assert!(st.version() > v0);
        let (code, body) = st.health();
        assert_eq!(code, 503);
        assert_eq!(body, "failed at context: line 0: bad (more in /status)");
        st.fail("context", "x".repeat(10_000));
        let (_, body) = st.health();
        assert!(body.len() < MAX_HEALTH_LINE + 60 && body.ends_with(" more bytes)"), "{body}");
        assert!(st.failure().unwrap().reason.len() < MAX_REASON_BYTES + 40);
        let i = st.begin("x", Duration::ZERO);
        st.end(i, Duration::ZERO, Outcome::Failed, huge);
        assert!(st.to_json().len() < 3 * MAX_REASON_BYTES, "{}", st.to_json().len());
        let v = st.version();
        let _ = (st.health(), st.to_json());
        assert_eq!(st.version(), v, "reading is not a change");
    }

    #[test]
    fn cap_text_cuts_on_char_boundaries() {
        assert_eq!(cap_text("abc", 3), "abc");
        assert_eq!(cap_text("ééé", 3), "é… (4 more bytes)");
    }
}
