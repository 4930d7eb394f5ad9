//! Typed, validated configuration for both roles, and `flower-init check`. Issue #2.

/// `flower-init check [--role superlink|supernode] PATH`.
pub fn cli_check(_args: &mut crate::cli::Args) -> i32 {
    eprintln!("flower-init check: not built yet (issue #2)");
    1
}
