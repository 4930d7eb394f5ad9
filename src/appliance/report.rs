//! `/status`'s sections as one typed document: each concern's part is a field, filled by the
//! step that learns it and served whole by [`super::Boot::show`]. The JSON keys are the field
//! names (`container`, `gateway`, `gpu`, `init`, `network`, `onegate`, `run`, `tls`); absent
//! parts are left out.

use super::Node;
use crate::supervisor::Supervisor;
use crate::{gpu, net, onegate, runconfig, tls};
use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// The gateway's counters and listeners, as the gateway renders them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<Init>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<net::Applied>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onegate: Option<OneGate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<runconfig::AppStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// The Flower container.
#[derive(Debug, Serialize)]
pub struct Container {
    pub id: String,
    pub pid: Option<i32>,
    pub state: &'static str,
    /// Its last output lines.
    pub output: Vec<String>,
}

/// What the GPU step found.
#[derive(Debug, Serialize)]
pub struct Gpu {
    pub available: bool,
    pub model: String,
    pub gpus: Vec<String>,
    pub reason: Option<String>,
    pub warnings: Vec<String>,
}

impl From<&gpu::Gpus> for Gpu {
    fn from(g: &gpu::Gpus) -> Gpu {
        Gpu { available: g.available, model: g.model.clone(), gpus: g.gpus.clone(), reason: g.reason.clone(), warnings: g.warnings.clone() }
    }
}

/// flower-init itself.
#[derive(Debug, Serialize)]
pub struct Init {
    pub version: String,
    pub peak_rss_kib: Option<u64>,
    pub orphans_reaped: u64,
}

/// OneGate publication: the publisher's state, or why there is none.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum OneGate {
    On {
        enabled: bool,
        #[serde(flatten)]
        state: onegate::PublisherState,
    },
    Off {
        enabled: bool,
        reason: String,
        /// REPORT_READY=YES asked for READY=YES, and why it could not be reported (OneGate is
        /// best-effort: Flower runs anyway).
        #[serde(skip_serializing_if = "Option::is_none")]
        ready_not_reported: Option<String>,
    },
}

/// The SuperLink's certificate.
#[derive(Debug, Serialize)]
pub struct Tls {
    pub ca_sha256: String,
    pub sans: Vec<String>,
    /// The server certificate's notAfter (UTC): renewed ahead of it while the SuperLink runs.
    pub server_valid_until: String,
}

impl From<&tls::SuperLinkTls> for Tls {
    fn from(t: &tls::SuperLinkTls) -> Tls {
        Tls {
            ca_sha256: t.ca_fingerprint.clone(),
            sans: t.sans.iter().map(|s| s.to_string()).collect(),
            server_valid_until: tls::utc(t.server_not_after),
        }
    }
}

impl Report {
    /// OneGate is not used, why, and why READY=YES could not be reported when it was asked for.
    pub fn onegate_off(&mut self, reason: &str, ready_not_reported: Option<String>) {
        self.onegate = Some(OneGate::Off { enabled: false, reason: reason.into(), ready_not_reported });
    }

    /// Take in what the background threads (OneGate publisher, gateway), the container and
    /// flower-init itself say now.
    pub(super) fn refresh(&mut self, sv: &Supervisor, node: &Node, publisher: Option<&onegate::Publisher>) {
        if let Some(p) = publisher {
            self.onegate = Some(OneGate::On { enabled: true, state: p.state() });
        }
        if let Some(g) = &node.gateway {
            self.gateway = Some(g.stats_json());
        }
        self.container = Some(Container {
            id: node.id.clone(),
            pid: node.pid.map(|p| p.as_raw()),
            state: if node.pid.is_some() { "running" } else { "stopped" },
            output: node.ring.lines().map(str::to_string).collect(),
        });
        if let Ok(rss) = std::fs::read_to_string("/proc/self/status") {
            let hwm = rss.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok());
            self.init = Some(Init { version: crate::args::version(), peak_rss_kib: hwm, orphans_reaped: sv.orphans_reaped() });
        }
    }
}

#[cfg(test)]
mod tests {
    /// Issue #13 point 5: /status says why READY=YES was not reported, only when it was asked for.
    #[test]
    fn onegate_off_says_why_ready_was_not_reported() {
        let mut r = super::Report::default();
        let why = "REPORT_READY='YES': READY=YES cannot be reported: the token (token.txt or ONEGATE_TOKEN) is missing";
        r.onegate_off("OneGate is not usable: the token (token.txt or ONEGATE_TOKEN) is missing", Some(why.into()));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["onegate"]["enabled"], false);
        assert_eq!(v["onegate"]["ready_not_reported"], why);
        r.onegate_off("OneGate is not usable: ONEGATE_ENDPOINT is missing", None);
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["onegate"].get("ready_not_reported").is_none(), "{v}");
    }
}
