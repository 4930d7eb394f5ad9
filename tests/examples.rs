//! `flower-init check` on every bundled example (examples/*/context.sh): the exit status, stdout
//! and stderr must equal examples/*/expected.txt. `FI_BLESS=1 cargo test --test examples`
//! rewrites the expected files (review the diff before committing).

use std::path::Path;
use std::process::Command;

/// `exit N`, then the stdout and stderr sections.
fn run(example: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flower-init"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check", "--image", "examples/image.json", &format!("examples/{example}")])
        .output()
        .expect("run flower-init check");
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn every_example_gives_its_expected_output() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("context.sh").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 8, "examples missing: {names:?}");
    let mut failed = Vec::new();
    for name in &names {
        let got = run(name);
        let path = dir.join(name).join("expected.txt");
        if std::env::var_os("FI_BLESS").is_some() {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            failed.push(format!("== {name}: got\n{got}\n== expected ({})\n{want}", path.display()));
        }
        // The outcome is in the name: valid examples pass, invalid-* fail with exit 2.
        let code = if name.starts_with("invalid-") { "exit 2\n" } else { "exit 0\n" };
        assert!(got.starts_with(code), "{name}: {got}");
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn invalid_examples_list_several_problems_each() {
    for name in ["invalid-superlink", "invalid-supernode", "invalid-syntax"] {
        let got = run(name);
        let stderr = got.split("--- stderr\n").nth(1).unwrap_or_default();
        let problems = stderr.lines().filter(|l| !l.starts_with("warning: ")).count();
        assert!(problems >= 4, "{name} shows {problems} problems:\n{stderr}");
    }
}

#[test]
fn io_errors_exit_1_and_usage_errors_exit_2() {
    let bin = env!("CARGO_BIN_EXE_flower-init");
    let out = Command::new(bin).args(["check", "/nonexistent/context.sh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("flower-init check: read /nonexistent/context.sh: "));
    let out = Command::new(bin).args(["check", "--role", "worker", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("flower-init check: --role \"worker\": must be one of superlink, supernode")
    );
    let out = Command::new(bin)
        .args(["check", "--image", "/nonexistent.json", "examples/superlink-minimal"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// The README shows `check examples/invalid-superlink`: its lines must be what check prints.
#[test]
fn readme_shows_real_check_output() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let cmd = "$ build/flower-init check examples/invalid-superlink; echo \"exit $?\"\n";
    let start = readme.find(cmd).expect("README shows check on examples/invalid-superlink") + cmd.len();
    let shown = &readme[start..start + readme[start..].find("exit 2\n").expect("README shows the exit status")];
    let expected =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/invalid-superlink/expected.txt"))
            .unwrap();
    let stderr = expected.split("--- stderr\n").nth(1).unwrap();
    assert_eq!(
        shown, stderr,
        "README.md's check output is stale: paste examples/invalid-superlink/expected.txt's stderr"
    );
}

/// Operator certificates are validated as boot will: a NIC address missing from the
/// certificate's SANs is a problem.
#[test]
fn operator_certificate_must_cover_the_nic_address() {
    let d = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/superlink-tls-operator");
    for f in ["ca.pem", "superlink.pem", "superlink.key"] {
        std::fs::copy(src.join(f), d.path().join(f)).unwrap();
    }
    let ctx =
        std::fs::read_to_string(src.join("context.sh")).unwrap().replace("ETH0_IP='10.0.0.5'", "ETH0_IP='10.0.0.99'");
    std::fs::write(d.path().join("context.sh"), ctx).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flower-init"))
        .args(["check", "--image"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/image.json"))
        .arg(d.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("FL_SSL_CERTFILE: ") && stderr.contains("10.0.0.99"), "{stderr}");
}

#[test]
fn a_printing_command_whose_reader_goes_away_ends_quietly() {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::process::ExitStatusExt;
    // `flower-init oneflow-template | head -c 1`: the reader closes the pipe after one byte; the
    // writer must end by SIGPIPE like any filter, not panic with "failed printing to stdout".
    // The pipe holds one page and the template is about 8 KB, so a write meets the closed pipe.
    // The pipe is made and shrunk before the child exists (shrinking a pipe that already
    // holds more than the new size fails with EBUSY).
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors that this test then owns (wrapped just below).
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read_end, write_end) = unsafe { (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a pipe descriptor this test owns; F_SETPIPE_SZ takes an int.
    let size = unsafe { libc::fcntl(read_end.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(size >= 4096, "F_SETPIPE_SZ: {}", std::io::Error::last_os_error());
    let mut child = Command::new(env!("CARGO_BIN_EXE_flower-init"))
        .arg("oneflow-template")
        .stdout(std::process::Stdio::from(write_end))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::fs::File::from(read_end);
    let mut one = [0u8; 1];
    out.read_exact(&mut one).unwrap();
    drop(out);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}: {err}");
}
