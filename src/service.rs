//! Service mode, `flower-init boot …`: the appliance under another init (an image that keeps
//! systemd, the host federation of `make e2e`, development). Read [`run`] top to bottom:
//! flags → [`Layout`] → `context` → `image` (the manifest's facts) → `validate` → the same
//! appliance steps as PID 1 ([`crate::appliance::run`]). It never mounts over `/`, never
//! `kill(-1)`s, never reboots.

use crate::appliance::{self, Boot, Failed, HEALTH_PORT, Layout, Note};
use crate::args::{Args, EXIT_USAGE, version};
use crate::config::Config;
use crate::power::{self, Mode};
use crate::supervisor::{self, Supervisor};
use crate::logger;
use std::path::PathBuf;

const BOOT_USAGE: &str = "\
usage: flower-init boot [options]      the appliance boot as a service (no PID-1 duties)
  --context DIR          the context (context.sh, token.txt, FILES_DS files); default: find the CD
  --image DIR            the appliance image root (default /)
  --state DIR            persistent state (default /var/lib/flower)
  --data DIR             data for the container's /app/data (read-only)
  --run-dir DIR          runtime files (default /run/flower-init)
  --runc PATH            the OCI runtime (default /usr/sbin/runc)
  --health-port N        health port (default FL_HEALTH_PORT, 8081)
  --health-addr IP       health listen address (default 0.0.0.0)
  --configure-network    apply ETHx_* from the context (off: the host's network is used)
  --role ROLE            superlink or supernode (overrides FL_ROLE)
  --container-id ID      runc container id (default flower-ROLE)
  --tls-check-every S    SuperLink: check its certificates every S seconds (default 86400)
  --tls-renew-before S   re-issue its own server certificate when fewer than S seconds remain
                         (default 2592000, 30 days)
  --tls-server-validity S  lifetime of a new server certificate in seconds (default 31536000);
                         tests use minutes";

/// `flower-init boot …`: the same boot without PID-1 duties; returns the exit code.
pub fn run(args: &mut Args) -> i32 {
    let blocked = match supervisor::block_signals() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("flower-init boot: {e}");
            return supervisor::EXIT_INIT_FAILURE;
        }
    };
    if args.flag("--help") {
        println!("{BOOT_USAGE}");
        return 0;
    }
    let layout = match parse_boot_args(args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("flower-init boot: {e}\n{BOOT_USAGE}");
            return EXIT_USAGE;
        }
    };
    logger::init(log::LevelFilter::Info);
    log::info!("{} starting in service mode", version());
    power::set_panic_hook(&Mode::Service);
    if nix::unistd::getpid().as_raw() != 1 {
        if let Err(e) = supervisor::become_subreaper() {
            log::warn!("{e}: orphans of the container go to the real init");
        }
    }
    let sv = match Supervisor::new(blocked) {
        Ok(sv) => sv,
        Err(e) => {
            log::error!("{e}");
            return supervisor::EXIT_INIT_FAILURE;
        }
    };
    let port = layout.health_port.unwrap_or(HEALTH_PORT);
    let mut boot = Boot::new(sv, layout, None);
    boot.listen_health(port);
    match steps(&mut boot) {
        Ok(Some(cfg)) => appliance::run(boot, cfg),
        Ok(None) | Err(_) => appliance::stay_failed(boot),
    }
}

/// Service mode's own steps, up to a validated configuration: the context (a directory, or
/// the CD), the image's facts from its manifest. Ok(None): validation failed.
fn steps(boot: &mut Boot) -> std::result::Result<Option<Config>, Failed> {
    let ctx = appliance::context_step(boot)?;
    let manifest = boot.layout.manifest();
    let facts = boot.step("image", |_| {
        let f = crate::image::load_file(&manifest)?.facts;
        let note = format!("{}: Flower {}, {}", manifest.display(), f.flower_version, f.framework);
        Ok((f, Note::Ok(note)))
    })?;
    appliance::validate_step(boot, &ctx, &facts)
}

fn parse_boot_args(a: &mut Args) -> std::result::Result<Layout, String> {
    let mut l = Layout::vm();
    l.configure_network = false;
    let path = |v: Option<String>| v.map(PathBuf::from);
    if let Some(d) = path(a.opt("--context")?) {
        l.context_dir = Some(d);
    }
    if let Some(d) = path(a.opt("--image")?) {
        l.image_root = d;
    }
    if let Some(d) = path(a.opt("--state")?) {
        l.state_dir = d;
    }
    l.data_dir = path(a.opt("--data")?);
    if let Some(d) = path(a.opt("--run-dir")?) {
        l.run_dir = d;
    }
    if let Some(p) = path(a.opt("--runc")?) {
        l.runc = p;
    }
    if let Some(p) = a.opt("--health-port")? {
        l.health_port = Some(p.parse().map_err(|_| format!("--health-port {p:?}: not a port number"))?);
    }
    if let Some(ip) = a.opt("--health-addr")? {
        l.health_addr = ip.parse().map_err(|_| format!("--health-addr {ip:?}: not an IP address"))?;
    }
    l.configure_network = a.flag("--configure-network");
    if let Some(r) = a.opt("--role")? {
        l.role_flag = Some(r.parse().map_err(|e| format!("--role {r:?}: {e}"))?);
    }
    l.container_id = a.opt("--container-id")?;
    let secs = |flag: &str, v: String| match v.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} {v:?}: not a number of seconds > 0")),
    };
    if let Some(v) = a.opt("--tls-check-every")? {
        l.tls_check_every = std::time::Duration::from_secs(secs("--tls-check-every", v)?.into());
    }
    if let Some(v) = a.opt("--tls-renew-before")? {
        l.tls_renewal.renew_before = secs("--tls-renew-before", v)?.into();
    }
    if let Some(v) = a.opt("--tls-server-validity")? {
        l.tls_renewal.server_validity = secs("--tls-server-validity", v)?.into();
    }
    a.finish()?;
    for (flag, p) in [("--state", Some(&l.state_dir)), ("--run-dir", Some(&l.run_dir)), ("--image", Some(&l.image_root))] {
        if let Some(p) = p.filter(|p| p.is_relative()) {
            return Err(format!("{flag} {}: must be an absolute path", p.display()));
        }
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Role;
    use std::path::Path;

    fn args(v: &[&str]) -> Args {
        Args::new(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn boot_flags_fill_the_layout() {
        let l = parse_boot_args(&mut args(&[
            "--context", "/tmp/ctx", "--image", "/img", "--state", "/st", "--health-port", "9001", "--configure-network", "--role", "SuperNode",
        ]))
        .unwrap();
        assert_eq!(l.context_dir.as_deref(), Some(Path::new("/tmp/ctx")));
        assert_eq!(l.image_root, Path::new("/img"));
        assert_eq!(l.health_port, Some(9001));
        assert!(l.configure_network);
        assert_eq!(l.role_flag, Some(Role::SuperNode));
        assert!(parse_boot_args(&mut args(&["--state", "rel"])).unwrap_err().contains("absolute"));
        assert!(parse_boot_args(&mut args(&["--health-port", "x"])).is_err());
        assert!(parse_boot_args(&mut args(&["--bogus"])).is_err());
        assert_eq!(l.tls_check_every, std::time::Duration::from_secs(86_400), "daily by default");
        let l = parse_boot_args(&mut args(&["--tls-check-every", "5", "--tls-renew-before", "60", "--tls-server-validity", "180"])).unwrap();
        assert_eq!((l.tls_check_every.as_secs(), l.tls_renewal.renew_before, l.tls_renewal.server_validity), (5, 60, 180));
        assert!(parse_boot_args(&mut args(&["--tls-check-every", "0"])).unwrap_err().contains("--tls-check-every"));
    }
}
