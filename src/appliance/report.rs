//! `/status`'s sections as one typed document: each concern's part is a field, filled by the
//! step that learns it and served whole by [`super::Boot::show`]. The JSON keys are the field
//! names (`container`, `gateway`, `gpu`, `init`, `join`, `machine`, `network`, `onegate`, `run`,
//! `tls`, `wireguard`); absent
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
    /// SuperLink: the join value for SuperNodes at other sites (FL_JOIN), and what it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<Join>,
    /// The machine: its architecture and memory (the edge profile's numbers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<net::Applied>,
    /// SuperNode authentication: the node's key, or the SuperLink's registrar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_auth: Option<NodeAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onegate: Option<OneGate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<runconfig::AppStatus>,
    /// SuperNode: its partition and the rounds it took part in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supernode: Option<Participation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// The FL_WG_* overlay: the public key to give to peers, and the peers as the kernel sees
    /// them now (last handshake, bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<WireGuard>,
}

/// `/status`'s `wireguard` (overlay.rs fills it; the peers are read again at each refresh).
#[derive(Debug, Clone, Serialize)]
pub struct WireGuard {
    pub interface: &'static str,
    pub address: String,
    pub public_key: String,
    pub listen_port: u16,
    /// Where the private key came from (never the key).
    pub private_key: &'static str,
    pub peers: Vec<crate::wg::ShownPeer>,
}

/// `/status`'s `node_auth` (admit.rs fills it): SuperNode authentication.
#[derive(Debug, Clone, Serialize)]
pub struct NodeAuth {
    pub enabled: bool,
    /// Why it is on or off, in words.
    pub reason: String,
    /// SuperNode: the public key it signs with (what the SuperLink's operator registers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// SuperNode: the SuperLink refused this node's key (not registered), while that is so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// SuperLink: the registrar's last cycle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registrar: Option<serde_json::Value>,
}

/// The Flower container.
#[derive(Debug, Serialize)]
pub struct Container {
    pub id: String,
    pub pid: Option<i32>,
    pub state: &'static str,
    /// Times it was started again after an exit.
    pub restarts: u32,
    /// How it last exited (none yet: absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<LastExit>,
    /// Its last output lines.
    pub output: Vec<String>,
    /// Memory its cgroup uses now and at most so far (Flower and the apps it starts: cgroup
    /// v2's memory.current / memory.peak); absent where the kernel does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_peak_kib: Option<u64>,
}

/// `/status`'s `machine`: what flower-init runs on.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// `x86_64` or `aarch64` (the binary's, which is the machine's).
    pub arch: &'static str,
    /// /proc/meminfo's MemTotal and MemAvailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_total_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_available_kib: Option<u64>,
}

/// The value of `key` (e.g. `VmHWM:`) in a /proc file of `Key:   value kB` lines, in KiB.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
}

/// A cgroup v2 file holding one byte count, in KiB.
fn cgroup_kib(dir: &std::path::Path, file: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(file)).ok()?.trim().parse::<u64>().ok().map(|b| b / 1024)
}

/// How a process ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LastExit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl LastExit {
    /// From the reaper's wait status (None for a stop or continue).
    pub fn of(status: nix::sys::wait::WaitStatus) -> Option<LastExit> {
        use nix::sys::wait::WaitStatus;
        match status {
            WaitStatus::Exited(_, code) => Some(LastExit { code: Some(code), signal: None }),
            WaitStatus::Signaled(_, sig, _) => Some(LastExit { code: None, signal: Some(sig as i32) }),
            _ => None,
        }
    }
}

/// A SuperNode's part in the federation, from the partition step and Flower's output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Participation {
    pub partition_id: Option<u32>,
    /// Training replies sent (Flower's `Sending: train message` lines): rounds taken part in.
    pub rounds_participated: u64,
    /// The round of the newest message (Flower's `[RUN r, ROUND n]`), when it is a number.
    pub last_round: Option<u32>,
}

impl Participation {
    /// One line of the SuperNode's output (Flower 1.42's `start_client_internal` log lines).
    pub fn on_line(&mut self, line: &str) {
        if line.contains("Sending: train message") {
            self.rounds_participated += 1;
        }
        if let Some(rest) = line.split_once("[RUN ").map(|(_, r)| r) {
            let round = rest.split_once(", ROUND ").and_then(|(_, r)| r.split(']').next()).and_then(|n| n.trim().parse().ok());
            if round.is_some() {
                self.last_round = round;
            }
        }
    }
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
    /// `superlink` or `supernode`.
    pub role: &'static str,
    pub peak_rss_kib: Option<u64>,
    /// Resident set size now (VmRSS).
    pub rss_kib: Option<u64>,
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

/// The SuperLink's join value: what to copy into a SuperNode's FL_JOIN, and what it holds (no
/// secret: endpoints, TLS, the public CA and its SHA-256).
#[derive(Debug, Serialize)]
pub struct Join {
    pub value: String,
    pub endpoints: Vec<String>,
    pub tls: bool,
    pub ca_sha256: Vec<String>,
    /// Characters of `value`.
    pub length: usize,
}

impl Join {
    /// The section of a join value.
    pub fn of(j: &crate::config::Join) -> Join {
        let value = j.encode();
        Join {
            length: value.len(),
            value,
            endpoints: j.endpoints.iter().map(|e| e.to_string()).collect(),
            tls: j.tls(),
            ca_sha256: j.fingerprints(),
        }
    }
}

/// The SuperLink's certificate.
#[derive(Debug, Serialize)]
pub struct Tls {
    pub ca_sha256: String,
    pub sans: Vec<String>,
    /// The server certificate's notAfter (UTC): renewed ahead of it while the SuperLink runs.
    pub server_valid_until: String,
    /// The same, in seconds since the Unix epoch (for `/metrics`).
    pub server_not_after_unix: i64,
}

impl From<&tls::SuperLinkTls> for Tls {
    fn from(t: &tls::SuperLinkTls) -> Tls {
        Tls {
            ca_sha256: t.ca_fingerprint.clone(),
            sans: t.sans.iter().map(|s| s.to_string()).collect(),
            server_valid_until: tls::utc(t.server_not_after),
            server_not_after_unix: t.server_not_after,
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
        if let (Some(a), Some(s)) = (&node.admit, self.node_auth.as_mut()) {
            s.registrar = Some(a.section());
        }
        let cgroup = std::path::Path::new("/sys/fs/cgroup").join(crate::container::cgroup_path(&node.id).trim_start_matches('/'));
        self.container = Some(Container {
            id: node.id.clone(),
            pid: node.pid.map(|p| p.as_raw()),
            state: if node.pid.is_some() { "running" } else { "stopped" },
            restarts: node.restarts,
            last_exit: node.last_exit,
            output: node.ring.lines().map(str::to_string).collect(),
            memory_kib: cgroup_kib(&cgroup, "memory.current"),
            memory_peak_kib: cgroup_kib(&cgroup, "memory.peak"),
        });
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        self.machine = Some(Machine {
            arch: std::env::consts::ARCH,
            mem_total_kib: kib_field(&meminfo, "MemTotal:"),
            mem_available_kib: kib_field(&meminfo, "MemAvailable:"),
        });
        if node.role() == crate::vocab::Role::SuperNode {
            self.supernode = Some(node.participation.clone());
        }
        if let Some(w) = self.wireguard.as_mut() {
            // The kernel's view now (handshakes, bytes); kept as it was when it cannot be read.
            if let Ok(shown) = crate::wg::Genl::open().and_then(|mut g| g.show(w.interface)) {
                w.peers = shown.peers;
            }
        }
        if let Ok(text) = std::fs::read_to_string("/proc/self/status") {
            self.init = Some(Init {
                version: crate::args::version(),
                role: node.role().as_str(),
                peak_rss_kib: kib_field(&text, "VmHWM:"),
                rss_kib: kib_field(&text, "VmRSS:"),
                orphans_reaped: sv.orphans_reaped(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    /// The edge profile's numbers (issue #22): /proc fields and cgroup v2 byte counts in KiB;
    /// anything missing or unreadable is absent, never 0.
    #[test]
    fn memory_numbers_come_from_proc_and_the_containers_cgroup() {
        let status = "Name:\tflower-init\nVmHWM:\t    2840 kB\nVmRSS:\t    2512 kB\n";
        assert_eq!(super::kib_field(status, "VmHWM:"), Some(2840));
        assert_eq!(super::kib_field(status, "VmSwap:"), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.peak"), "314572800\n").unwrap();
        std::fs::write(dir.path().join("memory.current"), "max\n").unwrap();
        assert_eq!(super::cgroup_kib(dir.path(), "memory.peak"), Some(307200));
        assert_eq!(super::cgroup_kib(dir.path(), "memory.current"), None);
        assert_eq!(super::cgroup_kib(dir.path(), "memory.stat"), None);
        let m = super::Machine { arch: std::env::consts::ARCH, mem_total_kib: Some(1_000_000), mem_available_kib: None };
        let v = serde_json::to_value(super::Report { machine: Some(m), ..Default::default() }).unwrap();
        assert_eq!(v["machine"]["arch"], std::env::consts::ARCH);
        assert!(v["machine"].get("mem_available_kib").is_none(), "{v}");
        assert_eq!(crate::container::cgroup_path("flower-supernode"), "/flower-init/flower-supernode");
    }

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

    /// Flower 1.42's SuperNode lines (start_client_internal.py): a train reply is a round taken
    /// part in; the round number of the newest message is kept.
    #[test]
    fn the_join_section_shows_the_value_and_what_it_holds_but_metrics_do_not() {
        let ca = include_str!("../tls/testdata/rsa-ca.crt");
        let ep = crate::config::values::host_port("203.0.113.7:8000").unwrap();
        let j = crate::config::Join::new(vec![ep], Some(ca)).unwrap();
        let report = super::Report { join: Some(super::Join::of(&j)), ..Default::default() };
        let v = serde_json::to_value(&report).unwrap();
        let value = v["join"]["value"].as_str().unwrap();
        assert_eq!(crate::config::Join::decode(value).unwrap(), j);
        assert_eq!(v["join"]["endpoints"], serde_json::json!(["203.0.113.7:8000"]));
        assert_eq!((v["join"]["tls"].as_bool(), v["join"]["length"].as_u64()), (Some(true), Some(value.len() as u64)));
        assert_eq!(v["join"]["ca_sha256"][0], j.fingerprints()[0].as_str());
        // /status serves it; /metrics carries no free text, so not the value.
        let mut st = crate::status::Status::default();
        st.set_sections(&report);
        let page = crate::health::metrics::render(&st, &crate::health::Stats::default());
        assert!(!page.contains("flwr1:"), "{page}");
    }

    #[test]
    fn participation_counts_train_replies_and_the_round() {
        let mut p = super::Participation { partition_id: Some(1), ..Default::default() };
        for line in [
            "INFO :      [RUN 4242, ROUND 1]",
            "INFO :      Receiving: train message (ID: 9d1c)",
            "INFO :      [RUN 4242, ROUND 1]",
            "INFO :      Sending: train message (ID: 77aa)",
            "INFO :      [RUN 4242, ROUND 2]",
            "INFO :      Sending: evaluate message (ID: 12)",
            "INFO :      [RUN 4242, ROUND x]",
            "INFO :      [RUN 4242]",
            "INFO :      Sending: train message (ID: 88bb)",
        ] {
            p.on_line(line);
        }
        assert_eq!(p, super::Participation { partition_id: Some(1), rounds_participated: 2, last_round: Some(2) });
    }

    /// `/metrics` pages of the real report types (issue #21): a SuperLink mid-run with its
    /// gateway, the same SuperLink waiting for its nodes while its gateway restarts, a
    /// SuperNode with a GPU, a SuperLink failed at its TLS step. `make metrics-test` writes them ([`write_metrics_pages`]) and runs `promtool check metrics` on each.
    pub(crate) fn metrics_pages() -> Vec<(&'static str, String)> {
        use super::*;
        use crate::status::{Outcome, Status};
        use std::time::Duration;
        let steps = |st: &mut Status, names: &[&str], last: Outcome| {
            for (n, name) in names.iter().enumerate() {
                let i = st.begin(name, Duration::from_millis(300 + 700 * n as u64));
                let outcome = if n + 1 == names.len() { last } else { Outcome::Ok };
                st.end(i, Duration::from_millis(900 + 700 * n as u64), outcome, "detail");
            }
        };
        let init = |role| Init { version: "flower-init 0.1.0 (test)".into(), role, peak_rss_kib: Some(3100), rss_kib: Some(2900), orphans_reaped: 2 };
        let publisher = |pending: Vec<String>, failures| onegate::PublisherState {
            published: pending.is_empty(),
            pending,
            attempts: 12,
            failures,
            consecutive_failures: 0,
            last_error: None,
            ready_reported: true,
            next_retry_in_s: None,
            failing: Default::default(),
            attributes: [("FL_CA_CERT".to_string(), "1234 bytes".to_string())].into(),
        };
        let container = |role: &str, restarts, last_exit| Container {
            id: format!("flower-{role}"),
            pid: Some(420),
            state: "running",
            restarts,
            last_exit,
            output: vec!["INFO :      Starting Flower".into()],
            memory_kib: Some(180_000),
            memory_peak_kib: Some(240_000),
        };
        let mut pages = Vec::new();

        // SuperLink, round 2 of 3, gateway counters of a real `gateway::Stats`.
        let gw = crate::gateway::Stats::default();
        for _ in 0..40 {
            gw.request(crate::gateway::Api::Fleet);
            gw.answered(crate::gateway::Api::Fleet, 200, Duration::from_millis(7));
        }
        gw.request(crate::gateway::Api::Control);
        gw.answered(crate::gateway::Api::Control, 200, Duration::from_secs(2));
        gw.answered(crate::gateway::Api::Fleet, 502, Duration::from_millis(1));
        gw.reject(crate::gateway::Reject::ForbiddenPath, true);
        gw.reject(crate::gateway::Reject::SourceNotAllowed, false);
        gw.upstream_error(crate::gateway::UpstreamError::Connect);
        gw.add_in(52_000);
        gw.add_out(91_000);
        let info = serde_json::json!({"tls": true, "upstream": "127.0.0.1:9092", "upstream_tls": true, "control_allow": ["10.0.0.0/24"]});
        let mut st = Status::default();
        steps(&mut st, &["manifest", "network", "onegate", "tls", "container", "flower", "gateway", "publish", "run"], Outcome::Ok);
        st.ready();
        let report = Report {
            container: Some(container("superlink", 1, Some(LastExit { code: Some(1), signal: None }))),
            gateway: Some(super::super::expose::section(Some(gw.to_json()), &info, Some(431), 0)),
            init: Some(init("superlink")),
            onegate: Some(OneGate::On { enabled: true, state: publisher(Vec::new(), 1) }),
            run: Some(runconfig::AppStatus {
                run_id: 13_906_583_735_017_349_000,
                status: "running".into(),
                round: 2,
                num_rounds: Some(3),
                loss: Some(0.4215),
                accuracy: Some(0.8731),
                strategy: Some("fedavg".into()),
                use_case: Some("tabular".into()),
                connected_nodes: None,
                message: String::new(),
                checkpoint: None,
                updated: "2026-12-04T10:00:00Z".into(),
            }),
            tls: Some(Tls { ca_sha256: "ab".repeat(32), sans: vec!["10.0.0.5".into()], server_valid_until: "2027-12-04 10:00:00 UTC".into(), server_not_after_unix: 1_827_914_400 }),
            ..Report::default()
        };
        st.set_sections(&report);
        pages.push(("superlink", crate::health::metrics::render(&st, &crate::health::Stats { answered: 30, ..Default::default() })));
        // The same SuperLink earlier: its run waits for the minimum of nodes, the gateway
        // process restarting (no counters yet).
        let mut waiting = report;
        waiting.gateway = Some(super::super::expose::section(None, &info, None, 1));
        waiting.run = waiting.run.map(|r| runconfig::AppStatus { status: "waiting".into(), round: 0, loss: None, accuracy: None, connected_nodes: Some(1), ..r });
        st.set_sections(&waiting);
        pages.push(("superlink-waiting", crate::health::metrics::render(&st, &crate::health::Stats::default())));

        // SuperNode with a GPU, two rounds in.
        let mut st = Status::default();
        steps(&mut st, &["manifest", "gpu", "network", "onegate", "discovery", "tls", "container", "flower", "publish"], Outcome::Ok);
        st.ready();
        let report = Report {
            container: Some(container("supernode", 0, None)),
            gpu: Some(Gpu { available: true, model: "nvidia".into(), gpus: vec!["0000:01:00.0".into()], reason: None, warnings: Vec::new() }),
            init: Some(init("supernode")),
            onegate: Some(OneGate::On { enabled: true, state: publisher(vec!["FL_NODE_READY".into()], 3) }),
            supernode: Some(Participation { partition_id: Some(1), rounds_participated: 2, last_round: Some(3) }),
            ..Report::default()
        };
        st.set_sections(&report);
        pages.push(("supernode", crate::health::metrics::render(&st, &crate::health::Stats::default())));

        // A SuperLink that failed at its TLS step, OneGate not usable.
        let mut st = Status::default();
        steps(&mut st, &["manifest", "network", "onegate", "tls"], Outcome::Failed);
        st.fail("tls", "FL_SSL_CERT: not a certificate");
        let mut report = Report { init: Some(init("superlink")), ..Report::default() };
        report.onegate_off("OneGate is not usable: ONEGATE_ENDPOINT is missing", None);
        st.set_sections(&report);
        pages.push(("failed", crate::health::metrics::render(&st, &crate::health::Stats { forbidden: 3, ..Default::default() })));
        pages
    }

    /// The pages follow the format (the test's own lint; promtool in `make metrics-test`) and
    /// carry what each node knows.
    #[test]
    fn metrics_pages_of_real_reports() {
        let pages: std::collections::BTreeMap<_, _> = metrics_pages().into_iter().collect();
        for page in pages.values() {
            crate::health::metrics::tests::lint(page);
            assert!(!page.contains("not a certificate") && !page.contains("Starting Flower") && !page.contains("1234 bytes"), "{page}");
        }
        let has = |node: &str, line: &str| assert!(pages[node].contains(&format!("{line}\n")), "{line} missing on {node}:\n{}", pages[node]);
        has("superlink", "flower_init_info{version=\"flower-init 0.1.0 (test)\",role=\"superlink\"} 1");
        has("superlink", "flower_init_phase{phase=\"ready\"} 1");
        has("superlink", "flower_init_flower_up 1");
        has("superlink", "flower_init_flower_restarts_total 1");
        has("superlink", "flower_init_flower_last_exit_code 1");
        has("superlink", "flower_init_gateway_up 1");
        has("superlink", "flower_init_gateway_requests_total{api=\"fleet\"} 40");
        has("superlink", "flower_init_gateway_responses_total{api=\"fleet\",code=\"2xx\"} 40");
        has("superlink", "flower_init_gateway_responses_total{api=\"fleet\",code=\"5xx\"} 1");
        has("superlink", "flower_init_gateway_request_duration_seconds_bucket{api=\"fleet\",le=\"0.01\"} 41");
        has("superlink", "flower_init_gateway_request_duration_seconds_count{api=\"control\"} 1");
        has("superlink", "flower_init_gateway_rejected_total{reason=\"source_not_allowed\"} 1");
        has("superlink", "flower_init_gateway_upstream_errors_total{kind=\"connect\"} 1");
        has("superlink", "flower_init_gateway_received_bytes_total 52000");
        has("superlink", "flower_init_run_info{run_id=\"13906583735017349000\"} 1");
        has("superlink", "flower_init_run_status{status=\"running\"} 1");
        has("superlink", "flower_init_run_round 2");
        has("superlink", "flower_init_run_rounds 3");
        has("superlink", "flower_init_run_accuracy 0.8731");
        has("superlink", "flower_init_tls_cert_expiry_timestamp_seconds 1827914400");
        has("superlink", "flower_init_onegate_requests_total{result=\"ok\"} 11");
        has("supernode", "flower_init_gpu_available 1");
        has("supernode", "flower_init_gpus 1");
        has("supernode", "flower_init_supernode_partition_id 1");
        has("supernode", "flower_init_supernode_rounds_participated_total 2");
        has("supernode", "flower_init_onegate_pending_attributes 1");
        has("failed", "flower_init_phase{phase=\"failed\"} 1");
        has("failed", "flower_init_boot_step_outcome{step=\"tls\",outcome=\"failed\"} 1");
        has("failed", "flower_init_onegate_enabled 0");
        has("failed", "flower_init_health_forbidden_total 3");
        assert!(!pages["supernode"].contains("flower_init_run_"), "a SuperNode has no run");
        assert!(!pages["failed"].contains("flower_init_flower_up"), "no container yet");
        has("superlink-waiting", "flower_init_run_connected_nodes 1");
        has("superlink-waiting", "flower_init_run_status{status=\"waiting\"} 1");
        has("superlink-waiting", "flower_init_gateway_up 0");
        has("superlink-waiting", "flower_init_gateway_restarts_total 1");
        assert!(!pages["superlink-waiting"].contains("flower_init_run_loss") && !pages["superlink-waiting"].contains("flower_init_gateway_requests_total"));
    }

    /// `make metrics-test`: the pages above written to `$FI_METRICS_PAGES/<node>.prom` for
    /// `promtool check metrics`.
    #[test]
    #[ignore = "writes files for make metrics-test"]
    fn write_metrics_pages() {
        let dir = std::path::PathBuf::from(std::env::var("FI_METRICS_PAGES").expect("FI_METRICS_PAGES: where to write the pages"));
        std::fs::create_dir_all(&dir).unwrap();
        for (node, page) in metrics_pages() {
            std::fs::write(dir.join(format!("{node}.prom")), page).unwrap();
        }
    }
}
