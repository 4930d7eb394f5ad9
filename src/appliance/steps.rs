//! The step recorder every boot script runs its steps through: [`Boot::step`] times a named
//! step into the `/status` timeline, logs its outcome and, on an error, marks the boot failed
//! (503 on `/health` naming the step and why). [`Boot`] is also what the steps share: the
//! event loop, where things are ([`Layout`]), the mounts to undo, OneGate, the `/status`
//! report.

use super::publication::Publication;
use super::report::Report;
use crate::error::Result;
use crate::power::{self, Mode, Pid1};
use crate::status::Outcome;
use crate::supervisor::Supervisor;
use crate::vocab::{Role, STATE_DIR};
use crate::{health, logger};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default port of flower-init's health endpoint (FL_HEALTH_PORT).
pub const HEALTH_PORT: u16 = 8081;

/// Where things are: fixed in a VM, given by flags in service mode.
#[derive(Debug, Clone)]
pub struct Layout {
    /// flower-init's runtime files (tmpfs): context copy, resolv.conf, hosts, certificates
    /// for the container, the OCI bundle, runc's state.
    pub run_dir: PathBuf,
    /// The context directory (`context.sh`, `token.txt`, FILES_DS files); None: find the CD.
    pub context_dir: Option<PathBuf>,
    /// The appliance image root (the container's rootfs and the manifest).
    pub image_root: PathBuf,
    /// The persistent state directory (`/var/lib/flower`, the FL_STATE disk in a VM).
    pub state_dir: PathBuf,
    /// The data directory given to the container at /app/data (the FL_DATA disk).
    pub data_dir: Option<PathBuf>,
    pub runc: PathBuf,
    pub health_addr: IpAddr,
    /// `--health-port`; None: FL_HEALTH_PORT (default 8081).
    pub health_port: Option<u16>,
    /// Configure the network from ETHx_* (always as PID 1; `--configure-network` otherwise).
    pub configure_network: bool,
    /// `--role`, overriding FL_ROLE (an input of validation; the role itself is the config's).
    pub role_flag: Option<Role>,
    /// `--container-id`; None: `flower-<role>`.
    pub container_id: Option<String>,
    /// How often a running SuperLink checks its certificates (daily; `--tls-check-every`).
    pub tls_check_every: Duration,
    /// When its own server certificate is re-issued, and for how long (`--tls-renew-before`,
    /// `--tls-server-validity`: tests make certificates that live minutes).
    pub tls_renewal: crate::tls::Renewal,
}

/// The certificate check's period in a VM: daily, as docs/tls.md says.
pub const TLS_CHECK_EVERY: Duration = Duration::from_secs(86_400);

impl Layout {
    /// The VM's layout after the root switch.
    pub fn vm() -> Layout {
        Layout {
            run_dir: PathBuf::from("/run/flower-init"),
            context_dir: None,
            image_root: PathBuf::from("/"),
            state_dir: PathBuf::from(STATE_DIR),
            data_dir: None,
            runc: PathBuf::from("/usr/sbin/runc"),
            health_addr: IpAddr::from([0, 0, 0, 0]),
            health_port: None,
            configure_network: true,
            role_flag: None,
            container_id: None,
            tls_check_every: TLS_CHECK_EVERY,
            tls_renewal: crate::tls::Renewal::default(),
        }
    }

    /// The image manifest.
    pub fn manifest(&self) -> PathBuf {
        crate::image::manifest_path_at(&self.image_root)
    }
}

/// How one step ended, with a detail for the timeline and the log.
pub enum Note {
    Ok(String),
    Warn(String),
    Skip(String),
}

/// A step that failed: the boot stops there (and stays up to say why).
#[derive(Debug)]
pub struct Failed {
    pub step: String,
    pub reason: String,
}

/// The boot's shared state: the event loop and what was done so far.
pub struct Boot {
    pub sv: Supervisor,
    pub layout: Layout,
    /// Mounts made at boot, in order; unmounted in reverse at power-off.
    pub mounts: Vec<PathBuf>,
    /// Present only when flower-init is the machine's init (never in `boot`).
    pub pid1: Option<Pid1>,
    /// What the GPU step found (SuperNode with FL_GPU_ENABLED).
    pub gpus: Option<crate::gpu::Gpus>,
    /// OneGate publication, from the moment the context says where OneGate is to power-off.
    pub onegate: Publication,
    /// The `/status` sections, typed; [`Boot::show`] serves them.
    pub report: Report,
    /// The port asked of the health server that listens (FL_HEALTH_PORT may move it later).
    health_port: Option<u16>,
}

impl Boot {
    pub fn new(sv: Supervisor, layout: Layout, pid1: Option<Pid1>) -> Boot {
        Boot { sv, layout, mounts: Vec::new(), pid1, gpus: None, onegate: Publication::default(), report: Report::default(), health_port: None }
    }

    /// Run one named step, timing it into the timeline and logging its outcome. An error marks
    /// the boot failed: `/health` then answers 503 with this step and reason.
    pub fn step<T>(&mut self, name: &str, f: impl FnOnce(&mut Boot) -> Result<(T, Note)>) -> std::result::Result<T, Failed> {
        let i = self.sv.status_mut().begin(name, logger::uptime());
        let started = logger::uptime();
        let result = f(self);
        let took = logger::uptime().saturating_sub(started).as_secs_f64();
        match result {
            Ok((v, note)) => {
                let (outcome, detail) = match note {
                    Note::Ok(d) => (Outcome::Ok, d),
                    Note::Warn(d) => (Outcome::Warning, d),
                    Note::Skip(d) => (Outcome::Skipped, d),
                };
                let sep = if detail.is_empty() { "" } else { ": " };
                match outcome {
                    Outcome::Warning => log::warn!("step {name}: warning ({took:.3}s){sep}{detail}"),
                    _ => log::info!("step {name}: {} ({took:.3}s){sep}{detail}", format!("{outcome:?}").to_lowercase()),
                }
                self.sv.status_mut().end(i, logger::uptime(), outcome, detail);
                Ok(v)
            }
            Err(e) => {
                let reason = e.to_string();
                log::error!("step {name}: failed ({took:.3}s): {reason}");
                let st = self.sv.status_mut();
                st.end(i, logger::uptime(), Outcome::Failed, reason.clone());
                st.fail(name, reason.clone());
                Err(Failed { step: name.to_string(), reason })
            }
        }
    }

    /// A sleep that keeps the loop turning (health answers, signals are noticed) for modules
    /// that wait (`cdrom`, `net`, OneGate discovery).
    pub fn sleeper(&mut self) -> impl FnMut(Duration) + '_ {
        |d| {
            self.sv.sleep(d);
        }
    }

    /// Serve the report as `/status`'s sections.
    pub fn show(&mut self) {
        self.sv.status_mut().set_sections(&self.report);
    }

    /// Serve the health port, or log why not (a busy port must not stop the boot). Already
    /// listening on `port` (FL_HEALTH_PORT repeats the default or the flag): nothing to do.
    pub fn listen_health(&mut self, port: u16) {
        if self.health_port == Some(port) {
            return;
        }
        let addr = self.layout.health_addr;
        match self.sv.listen_health(&health::Config::on(addr, port)) {
            Ok(a) => {
                self.health_port = Some(port);
                log::info!("health port: http://{a}/health and /status")
            }
            Err(e) => log::error!("health port {port}: {e}"),
        }
    }

    /// Wait for a shutdown request, then shut down: `stop_workload` stops what runs, OneGate
    /// gets its last words out, PID 1 powers off (never returns), service mode returns the
    /// exit code.
    pub fn finish(mut self, stop_workload: impl FnOnce(&mut Supervisor, Duration) -> Option<i32>) -> i32 {
        while self.sv.shutdown_requested().is_none() {
            self.sv.pump(None);
        }
        let reason = self.sv.shutdown_requested().map(|r| r.to_string()).unwrap_or_default();
        log::info!("shutdown requested: {reason}");
        let plan = power::Plan { unmount: self.mounts.clone(), ..power::Plan::default() };
        let failed = self.sv.status().failure().is_some();
        let mode = match self.pid1.take() {
            Some(p) => Mode::Pid1(p),
            None => Mode::Service,
        };
        let onegate = std::mem::take(&mut self.onegate);
        let code = power::shutdown(&mut self.sv, mode, &plan, move |sv, grace| {
            let code = stop_workload(sv, grace);
            onegate.stop();
            code
        });
        exit_code(code, failed)
    }
}

/// The exit code of a stopped appliance (service mode; docs/supervisor.md "Exit code of
/// `flower-init boot`"): the workload's own code, except that an appliance stopped while
/// `/health` said failed exits non-zero even when the container of the moment (a restart
/// caught mid-way, say) stopped cleanly on our SIGTERM. Whether it failed is read from
/// `/health`'s state at the moment the stop was requested, so it does not depend on where in
/// its restart cycle Flower happened to be.
fn exit_code(workload: Option<i32>, failed: bool) -> i32 {
    match workload {
        Some(0) | None if failed => 1,
        Some(c) => c,
        None => 0,
    }
}

/// The boot failed before the workload: stay up (503 on the health port, FL_ERROR published)
/// until told to stop, then shut down.
pub fn stay_failed(boot: Boot) -> i32 {
    if let Some(f) = boot.sv.status().failure() {
        log::error!("boot failed at {}: {}; staying up so /health can say why (power off to stop)", f.step, f.reason);
    }
    boot.finish(|_, _| None)
}

#[cfg(test)]
mod tests {
    use super::exit_code;

    #[test]
    fn healthy_appliance_exits_with_the_workloads_code() {
        assert_eq!(exit_code(Some(0), false), 0);
        assert_eq!(exit_code(Some(143), false), 143);
        assert_eq!(exit_code(None, false), 0);
    }

    #[test]
    fn stopped_while_failing_never_exits_zero() {
        // The wrong-CA drill: the SuperNode's container of the moment may be a fresh restart
        // that stops cleanly on SIGTERM (0), or none at all between two restarts (None).
        assert_eq!(exit_code(Some(0), true), 1);
        assert_eq!(exit_code(None, true), 1);
        // A code of its own stays visible.
        assert_eq!(exit_code(Some(137), true), 137);
    }
}
