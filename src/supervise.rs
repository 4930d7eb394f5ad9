//! `flower-init supervise [options] -- CMD [ARGS...]`: the supervisor on its own, like tini.
//!
//! Runs CMD with a clean signal mask in its own session, forwards signals to it, reaps every
//! process that ends up as our child (as PID 1 of a PID namespace, or as a subreaper), answers
//! the health port (200 while CMD runs, 503 while stopping) and exits with CMD's exit code
//! (128 + n when a signal killed it). SIGTERM, SIGINT, SIGPWR and SIGRTMIN+4 stop CMD: the
//! signal (SIGTERM for the last two) goes to CMD, then after `--grace` its process group gets
//! SIGKILL. Service mode: never `kill(-1)`, never `reboot(2)`.

use crate::args::{Args, EXIT_USAGE};
use crate::error::Result;
use crate::health;
use crate::power::{self, Mode, Plan};
use crate::supervisor::{
    EXIT_INIT_FAILURE, Output, ShutdownReason, SignalsBlocked, Supervisor, become_subreaper, block_signals,
    describe_wait_status, exit_code_from_spawn_errno, exit_code_from_wait_status, signal_name,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: flower-init supervise [options] -- CMD [ARGS...]
  --health-port N     health port (default 8081; 0 picks a free one, logged)
  --health-addr IP    address to listen on (default 0.0.0.0)
  --no-health         no health port
  --grace S           seconds CMD gets to exit after SIGTERM before SIGKILL (default 10)
  --log-level L       error, warn, info (default) or debug";

/// Default `--grace`, as `docker stop`.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// How long a SIGKILLed CMD may take to be reaped before we stop waiting.
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Opts {
    cmd: Vec<String>,
    health: Option<health::Config>,
    grace: Duration,
    level: log::LevelFilter,
}

/// Entry point of `flower-init supervise`; returns the exit code.
pub fn cli(args: &mut Args) -> i32 {
    // First of all: signals must be blocked before any thread or child exists.
    let blocked = match block_signals() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("flower-init supervise: {e}");
            return EXIT_INIT_FAILURE;
        }
    };
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("flower-init supervise: {e}\n{USAGE}");
            return EXIT_USAGE;
        }
    };
    crate::logger::init(opts.level);
    match supervise(blocked, &opts) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            EXIT_INIT_FAILURE
        }
    }
}

fn parse(args: &mut Args) -> std::result::Result<Opts, String> {
    if args.flag("--help") || args.flag("-h") {
        return Err("help".into());
    }
    let cmd = args.command().filter(|c| !c.is_empty()).ok_or("no command given (put it after --)")?;
    let mut health = health::Config::default();
    if let Some(p) = args.opt("--health-port")? {
        health.addr.set_port(p.parse().map_err(|_| format!("--health-port {p:?}: must be a port number 0-65535"))?);
    }
    if let Some(a) = args.opt("--health-addr")? {
        let ip: IpAddr = a.parse().map_err(|_| format!("--health-addr {a:?}: must be an IP address"))?;
        health.addr.set_ip(ip);
    }
    let health = (!args.flag("--no-health")).then_some(health);
    let grace = match args.opt("--grace")? {
        None => DEFAULT_GRACE,
        Some(g) => g
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or(format!("--grace {g:?}: must be a number of seconds >= 0"))?,
    };
    let level = match args.opt("--log-level")?.as_deref() {
        None | Some("info") => log::LevelFilter::Info,
        Some("debug") => log::LevelFilter::Debug,
        Some("warn" | "warning") => log::LevelFilter::Warn,
        Some("error") => log::LevelFilter::Error,
        Some(l) => return Err(format!("--log-level {l:?}: must be error, warn, info or debug")),
    };
    args.finish()?;
    Ok(Opts { cmd, health, grace, level })
}

fn supervise(blocked: SignalsBlocked, opts: &Opts) -> Result<i32> {
    let mut sv = Supervisor::new(blocked)?;
    if std::process::id() != 1 {
        become_subreaper()?;
    }
    if let Some(cfg) = &opts.health {
        let addr = sv.listen_health(cfg)?;
        log::info!("health: listening on {addr}");
    }
    let name = opts.cmd[0].rsplit('/').next().unwrap_or(&opts.cmd[0]).to_string();
    let mut cmd = Command::new(&opts.cmd[0]);
    cmd.args(&opts.cmd[1..]);
    let pid = match sv.spawn(&name, cmd, Output::Inherit) {
        Ok(pid) => pid,
        Err(e) => {
            log::error!("{e}");
            return Ok(exit_code_from_spawn_errno(e.errno()));
        }
    };
    log::info!("started {name} (pid {pid})");
    sv.forward_signals_to(Some(pid));
    sv.status_mut().ready();
    let init = Init { version: crate::args::version() };
    sv.status_mut().set_sections(&Sections { supervise: Child { command: &opts.cmd, pid: pid.as_raw() }, init });
    let plan = Plan { grace: opts.grace, ..Plan::default() };
    let code = match sv.wait_exit_or_shutdown(pid) {
        Ok(status) => {
            log::info!("{name} (pid {pid}) exited: {}", describe_wait_status(status));
            sv.status_mut().shutting_down();
            if power::stop_own_groups(&mut sv, plan.kill_grace) > 0 {
                log::warn!("some of {name}'s processes survived SIGKILL");
            }
            exit_code_from_wait_status(status)
        }
        Err(reason) => {
            let sig = match reason {
                ShutdownReason::Signal(s @ (libc::SIGTERM | libc::SIGINT)) => s,
                _ => libc::SIGTERM,
            };
            let stop = |sv: &mut Supervisor, grace: Duration| stop_child(sv, &name, pid, sig, grace);
            power::shutdown(&mut sv, Mode::Service, &plan, stop).unwrap_or(EXIT_INIT_FAILURE)
        }
    };
    sv.reap_now();
    log::info!("exit code {code}; reaped {} orphan(s)", sv.orphans_reaped());
    Ok(code)
}

/// `/status` sections of `supervise`: the command it runs, and flower-init's version (what
/// `/metrics`' `flower_init_info` shows).
#[derive(serde::Serialize)]
struct Sections<'a> {
    supervise: Child<'a>,
    init: Init,
}

#[derive(serde::Serialize)]
struct Init {
    version: String,
}

#[derive(serde::Serialize)]
struct Child<'a> {
    command: &'a [String],
    pid: i32,
}

/// Send `sig` to CMD, give it `grace`, then SIGKILL its process group. Its exit code, if reaped.
fn stop_child(sv: &mut Supervisor, name: &str, pid: Pid, sig: i32, grace: Duration) -> Option<i32> {
    log::info!("sending {} to {name} (pid {pid})", signal_name(sig));
    // SAFETY: kill(2) takes two integers; `pid` is our unreaped child, so it is not reused.
    unsafe { libc::kill(pid.as_raw(), sig) };
    let status = sv.wait_exit(pid, Some(Instant::now() + grace)).or_else(|| {
        log::warn!("{name} (pid {pid}) still running after {}s: SIGKILL", grace.as_secs_f32());
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL); // in case it left its group
        sv.wait_exit(pid, Some(Instant::now() + KILL_WAIT))
    })?;
    log::info!("{name} (pid {pid}) exited: {}", describe_wait_status(status));
    Some(exit_code_from_wait_status(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_v(v: &[&str]) -> std::result::Result<Opts, String> {
        parse(&mut Args::new(v.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn options_before_the_command_only() {
        let o = parse_v(&["--grace", "2.5", "--health-port", "0", "--", "sh", "--grace", "1"]).unwrap();
        assert_eq!(o.cmd, ["sh", "--grace", "1"]);
        assert_eq!(o.grace, Duration::from_millis(2500));
        assert_eq!(o.health.unwrap().addr.port(), 0);
        let o = parse_v(&["--no-health", "--health-addr", "127.0.0.1", "--", "true"]).unwrap();
        assert!(o.health.is_none());
        let o = parse_v(&["--", "true"]).unwrap();
        assert_eq!(o.grace, DEFAULT_GRACE);
        assert_eq!(o.health.unwrap().addr.port(), health::DEFAULT_PORT);
    }

    #[test]
    fn bad_options_name_the_option_and_value() {
        let err = |v: &[&str]| parse_v(v).unwrap_err();
        assert!(err(&["--grace", "-1", "--", "x"]).contains("--grace \"-1\""));
        assert!(err(&["--health-port", "70000", "--", "x"]).contains("--health-port \"70000\""));
        assert!(err(&["--health-addr", "localhost", "--", "x"]).contains("must be an IP address"));
        assert!(err(&["--grace", "1"]).contains("no command"));
        assert!(err(&["--"]).contains("no command"));
        assert!(err(&["--bogus", "--", "x"]).contains("--bogus"));
    }
}
