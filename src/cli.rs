//! Command-line entry: PID-1 mode, service mode (`boot`) and the operator/test commands.
//!
//! flower-init is PID 1 only when the kernel started it (`getpid() == 1` and no subcommand);
//! `flower-init boot` inside a PID namespace is also PID 1 of that namespace, but runs in
//! service mode, which never touches `/`, never calls `reboot(2)` and never `kill(-1)`s.

use std::collections::VecDeque;

/// Exit code for a usage error (as sysexits EX_USAGE is too obscure, 2 like most CLIs).
pub const EXIT_USAGE: i32 = 2;

const USAGE: &str = "\
usage: flower-init                        (as PID 1, started by the kernel)
       flower-init boot [options]         the appliance boot in service mode
       flower-init check [--role superlink|supernode] [--image MANIFEST_JSON] PATH
       flower-init gpu scan [--sysfs ROOT] [--json]
       flower-init oneflow-template [--one6]
       flower-init version
Run `flower-init COMMAND --help` for a command's options.";

/// Subcommands; anything else given to PID 1 is a kernel command-line word and is ignored.
const COMMANDS: &[&str] = &["boot", "check", "gpu", "oneflow-template", "version", "help", "--help", "-h"];

/// Parse `argv` and run; returns the process exit code.
pub fn run(argv: Vec<String>) -> i32 {
    let sub = argv.get(1).cloned();
    if nix::unistd::getpid().as_raw() == 1 && !sub.as_deref().is_some_and(|s| COMMANDS.contains(&s)) {
        crate::boot::pid1(argv); // never returns
    }
    let mut args = Args::new(argv.into_iter().skip(2).collect());
    match sub.as_deref() {
        Some("boot") => crate::boot::cli_boot(&mut args),
        Some("check") => crate::config::cli_check(&mut args),
        Some("gpu") => crate::gpu::cli(&mut args),
        Some("oneflow-template") => crate::oneflow::cli_template(&mut args),
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

/// `flower-init 0.1.0 (commit abc123def456)`.
pub fn version() -> String {
    format!("flower-init {} (commit {})", env!("CARGO_PKG_VERSION"), env!("FLOWER_INIT_COMMIT"))
}

/// A tiny argument reader: `--flag`, `--opt VALUE`, `--opt=VALUE` and positionals, in any order.
#[derive(Debug, Default)]
pub struct Args {
    rest: VecDeque<String>,
}

impl Args {
    pub fn new(v: Vec<String>) -> Self {
        Args { rest: v.into() }
    }

    /// Remove `--name` if present.
    pub fn flag(&mut self, name: &str) -> bool {
        if let Some(i) = self.rest.iter().position(|a| a == name) {
            self.rest.remove(i);
            true
        } else {
            false
        }
    }

    /// Remove `--name VALUE` or `--name=VALUE`; a missing value is an error.
    pub fn opt(&mut self, name: &str) -> Result<Option<String>, String> {
        let prefix = format!("{name}=");
        if let Some(i) = self.rest.iter().position(|a| a == name || a.starts_with(&prefix)) {
            let a = self.rest.remove(i).unwrap_or_default();
            if let Some(v) = a.strip_prefix(&prefix) {
                return Ok(Some(v.to_string()));
            }
            return match self.rest.remove(i) {
                Some(v) if !v.starts_with("--") => Ok(Some(v)),
                _ => Err(format!("{name} needs a value")),
            };
        }
        Ok(None)
    }

    /// The next positional argument (call after taking every option).
    pub fn positional(&mut self) -> Option<String> {
        let i = self.rest.iter().position(|a| !a.starts_with("--"))?;
        self.rest.remove(i)
    }

    /// Error if anything was not consumed.
    pub fn finish(&self) -> Result<(), String> {
        match self.rest.front() {
            None => Ok(()),
            Some(a) => Err(format!("unexpected argument {a:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Args {
        Args::new(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn options_flags_and_positionals_in_any_order() {
        let mut a = args(&["ctx/", "--role=superlink", "--json", "--sysfs", "/tmp/sys"]);
        assert_eq!(a.opt("--role").unwrap().as_deref(), Some("superlink"));
        assert_eq!(a.opt("--sysfs").unwrap().as_deref(), Some("/tmp/sys"));
        assert!(a.flag("--json"));
        assert!(!a.flag("--one6"));
        assert_eq!(a.positional().as_deref(), Some("ctx/"));
        assert!(a.finish().is_ok());
    }

    #[test]
    fn missing_value_and_leftovers_are_errors() {
        assert!(args(&["--role"]).opt("--role").is_err());
        assert!(args(&["--role", "--json"]).opt("--role").is_err());
        assert!(args(&["--bogus"]).finish().is_err());
    }

    #[test]
    fn version_names_the_commit() {
        assert!(version().starts_with("flower-init 0.1.0 (commit "));
    }
}
