//! Command-line entry: PID-1 mode, service mode (`boot`) and the operator/test commands.
//!
//! flower-init is PID 1 only when the kernel started it (`getpid() == 1` and no subcommand);
//! `flower-init boot` inside a PID namespace is also PID 1 of that namespace, but runs in
//! service mode, which never touches `/`, never calls `reboot(2)` and never `kill(-1)`s.

use crate::args::{Args, EXIT_USAGE, version};

const USAGE: &str = "\
usage: flower-init                        (as PID 1, started by the kernel)
       flower-init boot [options]         the appliance boot in service mode
       flower-init check [--role superlink|supernode] [--image MANIFEST_JSON] PATH
       flower-init gpu scan [--sysfs ROOT] [--json]
       flower-init gpu bundle --rootfs DIR --out DIR [--driver-dir DIR] -- CMD [ARGS...]
       flower-init join [--ca-pem] [--endpoint HOST:PORT]... VALUE|-
       flower-init node-auth --control ADDR --record FILE [...]   (the SuperLink's key registrar)
       flower-init supervise [--health-port N] [--grace S] -- CMD [ARGS...]
       flower-init oneflow-template [--one6] [--values --network ID] | --vm-context
       flower-init vm-template --role superlink|supernode [--image NAME] [--firmware F]
       flower-init marketplace --framework F --version V ... --out DIR
       flower-init version
Run `flower-init COMMAND --help` for a command's options.";

/// Subcommands; anything else given to PID 1 is a kernel command-line word and is ignored.
const COMMANDS: &[&str] = &["boot", "check", "gateway", "gpu", "join", "node-auth", "oneflow-template", "vm-template", "marketplace", "supervise", "version", "help", "--help", "-h"];

/// Commands that only print (to a terminal, a file or `| head`); the others own sockets or
/// children and keep SIGPIPE ignored, as Rust starts every program.
const PRINTERS: &[&str] = &["check", "gpu", "join", "oneflow-template", "vm-template", "marketplace", "version", "help", "--help", "-h"];

/// A printing command whose reader went away (`flower-init check … | head`) ends as every Unix
/// filter does, silently by SIGPIPE, instead of Rust's "failed printing to stdout" panic.
fn quiet_on_closed_pipe() {
    // SAFETY: SIG_DFL installs no handler, so nothing runs in signal context; this runs before
    // any thread is started.
    let _ = unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) };
}

/// Parse `argv` and run; returns the process exit code.
pub fn run(argv: Vec<String>) -> i32 {
    let sub = argv.get(1).cloned();
    if nix::unistd::getpid().as_raw() == 1 && !sub.as_deref().is_some_and(|s| COMMANDS.contains(&s)) {
        crate::pid1::run(argv); // never returns
    }
    if sub.as_deref().is_some_and(|s| PRINTERS.contains(&s)) {
        quiet_on_closed_pipe();
    }
    // `gpu bundle` wires the image and the appliance's container spec: a command of its own.
    let gpu_bundle = sub.as_deref() == Some("gpu") && argv.get(2).map(String::as_str) == Some("bundle");
    let mut args = Args::new(argv.into_iter().skip(if gpu_bundle { 3 } else { 2 }).collect());
    match sub.as_deref() {
        Some("boot") => crate::service::run(&mut args),
        Some("check") => crate::check::cli(&mut args),
        Some("gateway") => crate::gateway::cli(&mut args),
        Some("gpu") if gpu_bundle => crate::gpu_bundle::cli(&mut args),
        Some("gpu") => crate::gpu::cli(&mut args),
        Some("join") => crate::join::cli(&mut args),
        Some("node-auth") => crate::nodeauth::cli(&mut args),
        Some("oneflow-template") => crate::oneflow::cli_template(&mut args),
        Some("vm-template") => crate::oneflow::cli_vm_template(&mut args),
        Some("marketplace") => crate::oneflow::cli_marketplace(&mut args),
        Some("supervise") => crate::supervise::cli(&mut args),
        Some("version") => {
            println!("{}", version());
            0
        }
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            0
        }
        Some(other) => {
            eprintln!("flower-init: unknown command {other:?}\n{USAGE}");
            EXIT_USAGE
        }
        None => {
            eprintln!("{USAGE}");
            EXIT_USAGE
        }
    }
}
