//! The `log` backend: one line per record, `[ seconds] flower-init: level: message`.
//!
//! Lines go to stderr, which is `/dev/console` when flower-init runs as PID 1. As PID 1 each
//! record is written to `/dev/kmsg` (so `dmesg` and the hypervisor's log keep it) with the
//! kernel priority of its level, and to stderr only when the kernel's console log level would
//! not print it (`quiet`): each line reaches the console exactly once. Timestamps come from `CLOCK_BOOTTIME`, the clock of
//! the kernel's own log lines, so the two interleave in order on the console.
//!
//! Secrets never reach this module: values that are secret travel as [`crate::secret::Secret`],
//! whose `Display` prints a placeholder.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

struct Logger {
    level: Mutex<log::LevelFilter>,
    kmsg: Mutex<Option<File>>,
}

static LOGGER: Logger = Logger { level: Mutex::new(log::LevelFilter::Info), kmsg: Mutex::new(None) };

/// Seconds since boot on `CLOCK_BOOTTIME` (the kernel log's clock).
pub fn uptime() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
        .unwrap_or_default()
}

/// Install the logger at `level`. Safe to call more than once (later calls change the level).
pub fn init(level: log::LevelFilter) {
    set_level(level);
    let _ = log::set_logger(&LOGGER);
}

/// Change the level, e.g. once FL_LOG_LEVEL has been read from the context.
pub fn set_level(level: log::LevelFilter) {
    *LOGGER.level.lock().unwrap_or_else(|e| e.into_inner()) = level;
    log::set_max_level(level);
}

/// Also write every record to `/dev/kmsg` (PID 1 only: the device exists once /dev is mounted).
pub fn enable_kmsg() {
    if let Ok(f) = OpenOptions::new().write(true).open("/dev/kmsg") {
        *LOGGER.kmsg.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }
}

/// Format one console line (pure, for tests).
pub fn format_line(t: Duration, level: log::Level, msg: &str) -> String {
    let lvl = match level {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    };
    format!("[{:>5}.{:06}] flower-init: {lvl}: {msg}\n", t.as_secs(), t.subsec_micros())
}

/// Kernel log priority (`<N>` prefix of /dev/kmsg) for a level, as in syslog(3).
fn kmsg_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Whether the kernel copies a /dev/kmsg message of priority `prio` to the console: the first
/// field of /proc/sys/kernel/printk (the console log level; `quiet` lowers it to 4, `loglevel=`
/// and `dmesg -n` change it) must exceed it. Read per record, as it can change at run time;
/// unreadable means "no" (the line then goes to stderr: printed once either way).
fn console_prints(prio: u8) -> bool {
    std::fs::read_to_string("/proc/sys/kernel/printk")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|l| l.parse::<u8>().ok()))
        .is_some_and(|level| prio < level)
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= *self.level.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let line = format_line(uptime(), record.level(), &msg);
        let prio = kmsg_priority(record.level());
        let mut echoed = false;
        if let Some(k) = self.kmsg.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            // One write per record: /dev/kmsg takes exactly one message per write(2). The text
            // after the timestamp is the console line's, so both paths read the same.
            let text = &line[line.find("flower-init: ").unwrap_or(0)..];
            if k.write_all(format!("<{prio}>{text}").as_bytes()).is_ok() {
                // The kernel prints it on the console itself when the console log level lets it.
                echoed = console_prints(prio);
            }
        }
        if !echoed {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_seconds_micros_and_level() {
        let l = format_line(Duration::from_micros(2_345_678), log::Level::Warn, "no GPU");
        assert_eq!(l, "[    2.345678] flower-init: warning: no GPU\n");
    }
}
