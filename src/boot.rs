//! The boot sequence, one named step per line, for PID 1 and for service mode (`boot`).

/// PID-1 entry (the kernel started us). Never returns.
pub fn pid1(_argv: Vec<String>) -> ! {
    eprintln!("flower-init: PID-1 mode not built yet (issue #3)");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// `flower-init boot …`: the same boot without PID-1 duties.
pub fn cli_boot(_args: &mut crate::cli::Args) -> i32 {
    eprintln!("flower-init boot: not built yet (issue #3)");
    1
}
