//! GPU detection and binding through sysfs, and the device nodes handed to the container. Issue #9.

/// `flower-init gpu …`.
pub fn cli(_args: &mut crate::cli::Args) -> i32 {
    eprintln!("flower-init gpu: not built yet (issue #9)");
    1
}
