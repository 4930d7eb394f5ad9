//! The command line's plumbing, shared by every subcommand: the argument reader, the usage
//! exit code and the version line. Bottom layer: it imports nothing of this crate, so a
//! subcommand's `cli.rs` takes it without importing the dispatcher (`cli.rs`) back.

use std::collections::VecDeque;

/// Exit code for a usage error (as sysexits EX_USAGE is too obscure, 2 like most CLIs).
pub const EXIT_USAGE: i32 = 2;

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

    /// Remove `--` and everything after it: a command line to run (None without `--`).
    pub fn command(&mut self) -> Option<Vec<String>> {
        let i = self.rest.iter().position(|a| a == "--")?;
        let cmd = self.rest.split_off(i + 1).into();
        self.rest.truncate(i);
        Some(cmd)
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
    fn command_after_double_dash_keeps_its_options() {
        let mut a = args(&["--grace", "5", "--", "sh", "--grace", "-c", "x"]);
        assert_eq!(a.command().unwrap(), ["sh", "--grace", "-c", "x"]);
        assert_eq!(a.opt("--grace").unwrap().as_deref(), Some("5"));
        assert!(a.finish().is_ok());
        assert_eq!(args(&["x"]).command(), None);
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
