//! The OneFlow service template (7.x and 6.x formats) and partition assignment from the
//! service's node list. Issue #4.

/// `flower-init oneflow-template [--one6]`.
pub fn cli_template(_args: &mut crate::cli::Args) -> i32 {
    eprintln!("flower-init oneflow-template: not built yet (issue #4)");
    1
}
