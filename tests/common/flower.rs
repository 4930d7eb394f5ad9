//! Real Flower processes for tests: the venv from FLOWER_VENV, free loopback ports, and a
//! process in its own group whose drop kills the whole group (flower-superlink spawns
//! flower-superexec). As tests they may spawn and wait on processes directly.

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Flower's Python start-up on a loaded 2-core machine can take well over a minute.
pub const START_TIMEOUT: Duration = Duration::from_secs(300);
pub const POLL: Duration = Duration::from_millis(250);

/// The venv's bin directory, from FLOWER_VENV, holding every one of `tools`; fails clearly
/// (naming `make_target`, which sets it) when it is missing.
pub fn venv_bin(tools: &[&str], make_target: &str) -> PathBuf {
    let venv = std::env::var_os("FLOWER_VENV")
        .unwrap_or_else(|| panic!("FLOWER_VENV is not set: point it at a venv with flwr 1.42.0 (`make {make_target}` sets it)"));
    let bin = Path::new(&venv).join("bin");
    for tool in tools {
        assert!(bin.join(tool).is_file(), "FLOWER_VENV={}: no {tool} in {}", Path::new(&venv).display(), bin.display());
    }
    bin
}

/// An ephemeral port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Flower process in its own process group, its output in a log file; dropping it kills
/// the whole group.
pub struct Flower {
    pub name: &'static str,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Flower {
    /// `args[0]` from `bin` with the rest of `args`, in `dir`; its own FLWR_HOME there, as
    /// each VM of the federation has its own.
    pub fn spawn(name: &'static str, bin: &Path, args: &[&str], dir: &Path) -> Flower {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let child = Command::new(bin.join(args[0]))
            .args(&args[1..])
            .env("PATH", path)
            .env("FLWR_HOME", dir.join(format!("{name}-home")))
            .env("FLWR_TELEMETRY_ENABLED", "0")
            .env("FLWR_DISABLE_UPDATE_CHECK", "1")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Flower { name, child, log, status: None }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// Panic with the log if the process has died.
    pub fn assert_alive(&mut self) {
        if let Some(st) = self.exited() {
            panic!("{} exited ({st}) early; its log:\n{}", self.name, self.log_text());
        }
    }
}

impl Drop for Flower {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        assert!(pgid > 1, "refusing to signal process group {pgid}");
        let group = nix::unistd::Pid::from_raw(pgid);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        // The leader may be gone while superexec children linger: kill the group regardless.
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        if self.exited().is_none() {
            let _ = self.child.wait();
        }
    }
}
