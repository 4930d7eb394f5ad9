//! `flower-init gateway …`: the gateway as a process of its own. The appliance runs it so, as
//! a supervised child of PID 1 (issue #14: a parser bug reachable from the network ends this
//! process, which is restarted, never PID 1); also for debugging and for the real-Flower
//! tests (which measure its memory). Certificates are read from the files named on the
//! command line (paths, never key material, are on argv), again on SIGHUP.

use super::{start, ControlConfig, GatewayConfig, Limits, ServerTlsFiles};
use crate::vocab::parse_cidr_list;
use crate::args::{Args, EXIT_USAGE};
use nix::sys::signal::{SigSet, Signal};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "\
usage: flower-init gateway --listen ADDR[,ADDR…] --upstream ADDR
           [--cert server.pem --key server.key] [--upstream-ca ca.crt]
           [--control-listen ADDR[,ADDR…] [--control-allow CIDR[,CIDR…]]]
           [--max-connections N] [--max-active N] [--max-body BYTES]
           [--header-timeout SECS] [--idle-timeout SECS] [--body-timeout SECS]
           [--stats-every SECS] [--log-level error|warn|info|debug]
Runs the SuperLink gateway in the foreground until SIGTERM or SIGINT; SIGHUP re-reads the
certificate and key (new connections get them, open ones keep theirs).
Without --cert/--key it serves plain HTTP; without --upstream-ca it dials Flower in plain HTTP.
Prints `listening fleet|control ADDR` once bound, `stats JSON` every --stats-every seconds,
and `stats-final JSON` when stopped.";

/// Run the subcommand; returns the exit code.
pub fn cli(args: &mut Args) -> i32 {
    if args.flag("--help") || args.flag("-h") {
        println!("{USAGE}");
        return 0;
    }
    let (config, stats_every, level) = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flower-init gateway: {e}\n{USAGE}");
            return EXIT_USAGE;
        }
    };
    crate::logger::init(level);
    // Block the stop signals before any thread exists, so that all inherit the mask and the
    // main thread receives them with sigwait.
    let mut stop_signals = SigSet::empty();
    stop_signals.add(Signal::SIGTERM);
    stop_signals.add(Signal::SIGINT);
    stop_signals.add(Signal::SIGHUP);
    if let Err(e) = stop_signals.thread_block() {
        eprintln!("flower-init gateway: block signals: {e}");
        return 1;
    }
    let mut gw = match start(config) {
        Ok(gw) => gw,
        Err(e) => {
            log::error!("gateway: {e}");
            return 1;
        }
    };
    for (port, addr) in gw.local_addrs() {
        println!("listening {} {addr}", port.name());
    }
    let _ = std::io::stdout().flush();
    let done = Arc::new(AtomicBool::new(false));
    if let Some(every) = stats_every {
        let (stats, done) = (gw.stats(), done.clone());
        let _ = std::thread::Builder::new().name("gateway-stats".into()).spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                println!("stats {}", stats.to_json());
                let _ = std::io::stdout().flush();
            }
        });
    }
    let sig = loop {
        match stop_signals.wait() {
            Ok(Signal::SIGHUP) => {
                if let Err(e) = gw.reload_tls() {
                    log::error!("gateway: SIGHUP: {e}; keeping the certificate loaded before");
                }
            }
            other => break other,
        }
    };
    done.store(true, Ordering::Relaxed);
    log::info!("gateway: {} received, stopping", sig.map(|s| s.as_str()).unwrap_or("signal"));
    let stopped = gw.stop(Duration::from_secs(10));
    println!("stats-final {}", gw.stats_json());
    let _ = std::io::stdout().flush();
    if stopped { 0 } else { 1 }
}

type Parsed = (GatewayConfig, Option<Duration>, log::LevelFilter);

/// The options → a configuration, the stats interval and the log level; errors name the option.
pub(crate) fn parse(args: &mut Args) -> Result<Parsed, String> {
    let addrs = |v: String, what: &str| -> Result<Vec<SocketAddr>, String> {
        v.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<SocketAddr>().map_err(|e| format!("{what} {s:?}: {e}")))
            .collect()
    };
    let secs = |name: &str, v: Option<String>| -> Result<Option<Duration>, String> {
        v.map(|s| {
            s.parse::<f64>()
                .ok()
                .filter(|x| *x > 0.0)
                .and_then(|x| Duration::try_from_secs_f64(x).ok())
                .ok_or(format!("{name} {s:?}: not a positive number of seconds"))
        })
        .transpose()
    };
    let num = |name: &str, v: Option<String>| -> Result<Option<u64>, String> {
        v.map(|s| s.parse::<u64>().ok().filter(|n| *n > 0).ok_or(format!("{name} {s:?}: not a positive integer"))).transpose()
    };
    let listen = addrs(args.opt("--listen")?.ok_or("--listen is required")?, "--listen")?;
    let upstream = args
        .opt("--upstream")?
        .ok_or("--upstream is required")?
        .parse::<SocketAddr>()
        .map_err(|e| format!("--upstream: {e}"))?;
    let tls = match (args.opt("--cert")?, args.opt("--key")?) {
        (Some(cert), Some(key)) => Some(ServerTlsFiles { cert: PathBuf::from(cert), key: PathBuf::from(key) }),
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    let upstream_ca = args.opt("--upstream-ca")?.map(PathBuf::from);
    let control_allow = parse_cidr_list(&args.opt("--control-allow")?.unwrap_or_default())?;
    let control = match args.opt("--control-listen")? {
        Some(v) => Some(ControlConfig { listen: addrs(v, "--control-listen")?, allow: control_allow }),
        None if !control_allow.is_empty() => return Err("--control-allow needs --control-listen".into()),
        None => None,
    };
    let mut limits = Limits::default();
    if let Some(n) = num("--max-connections", args.opt("--max-connections")?)? {
        limits.max_connections = n as usize;
    }
    if let Some(n) = num("--max-active", args.opt("--max-active")?)? {
        limits.max_active = n as usize;
    }
    if let Some(n) = num("--max-body", args.opt("--max-body")?)? {
        limits.max_body = n;
    }
    if let Some(d) = secs("--header-timeout", args.opt("--header-timeout")?)? {
        limits.header_timeout = d;
    }
    if let Some(d) = secs("--idle-timeout", args.opt("--idle-timeout")?)? {
        limits.idle_timeout = d;
    }
    if let Some(d) = secs("--body-timeout", args.opt("--body-timeout")?)? {
        limits.body_timeout = d;
    }
    let stats_every = secs("--stats-every", args.opt("--stats-every")?)?;
    let level = match args.opt("--log-level")?.as_deref() {
        None | Some("info") => log::LevelFilter::Info,
        Some("debug") => log::LevelFilter::Debug,
        Some("warn" | "warning") => log::LevelFilter::Warn,
        Some("error") => log::LevelFilter::Error,
        Some(other) => return Err(format!("--log-level {other:?}: use error, warn, info or debug")),
    };
    args.finish()?;
    Ok((GatewayConfig { listen, control, tls, upstream, upstream_ca, limits }, stats_every, level))
}
