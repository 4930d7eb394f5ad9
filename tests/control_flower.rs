//! `flower_init::flower::control` against a real `flower-superlink` 1.42.0 (issues #17.2, #19):
//! two SuperLinks on 127.0.0.1, one `--insecure` and one with TLS certificates made by
//! `flower_init::tls` (the appliance serves the Control API over TLS when TLS is on). Over
//! each: ListNodes, RegisterNode of a P-256 key made by rcgen (then listed with the same PEM,
//! refused twice, a bad key refused), StartRun of the bundled app's FAB built by Flower's own
//! `flwr build` (the run is listed by ListRuns with its hash and overrides; an undeclared key
//! is refused), StopRun, UnregisterNode. Over TLS also: a client trusting another CA fails
//! the handshake, and a plain client gets no answer it accepts.
//!
//! `#[ignore]`d: it needs a venv with Flower. Run it with `make control-flower-test` (which
//! sets FLOWER_VENV), or `FLOWER_VENV=/path/to/venv cargo test --test control_flower --
//! --ignored`. Loopback only, ephemeral ports; every process is killed at the end, also when
//! the test fails. As a test it may spawn and wait on processes directly.

use flower_init::flower::control::{Control, ControlError, Scalar, StartRunRequest, code};
use flower_init::flower::{ProbeTls, Prober};
use flower_init::tls::{self, ContainerUser};
mod common;

use common::flower::{Flower, POLL, START_TIMEOUT, free_port};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One Control call (StartRun stores the FAB in SQLite and parses its pyproject).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The venv's bin directory (FLOWER_VENV).
fn venv_bin() -> PathBuf {
    common::flower::venv_bin(&["flower-superlink", "flower-superexec", "flwr"], "control-flower-test")
}

/// A SuperLink on 127.0.0.1:<free port>, TLS with `files` or `--insecure`, in-memory state.
fn spawn_superlink(name: &'static str, bin: &Path, files: Option<&tls::ContainerFiles>, dir: &Path) -> (Flower, SocketAddr) {
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["flower-superlink"];
    let paths;
    match files {
        Some(f) => {
            paths = [f.ca_cert.to_str().unwrap(), f.server_cert.to_str().unwrap(), f.server_key.to_str().unwrap()];
            args.extend(["--ssl-ca-certfile", paths[0], "--ssl-certfile", paths[1], "--ssl-keyfile", paths[2]]);
        }
        None => args.push("--insecure"),
    }
    args.extend(["--host", "127.0.0.1", "--port", &port_s, "--database", ":flwr-in-memory:", "--disable-runtime-dependency-installation"]);
    (Flower::spawn(name, bin, &args, dir), SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Wait until Flower's `/health` answers 200 (what the appliance waits for too).
fn wait_healthy(proc: &mut Flower, addr: SocketAddr, tls: Option<&ProbeTls>) {
    let prober = Prober::new(addr, tls).unwrap();
    let deadline = Instant::now() + START_TIMEOUT;
    while prober.check(Duration::from_secs(5)).is_err() {
        proc.assert_alive();
        assert!(Instant::now() < deadline, "timed out waiting for {} /health; its log:\n{}", proc.name, proc.log_text());
        std::thread::sleep(POLL);
    }
}

/// The bundled app's FAB, built by Flower's own `flwr build` from a copy of apps/appliance.
fn build_fab(bin: &Path, dir: &Path) -> Vec<u8> {
    let app = dir.join("app");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("apps/appliance");
    let st = Command::new("cp").arg("-r").arg(&src).arg(&app).status().unwrap();
    assert!(st.success(), "copy {}", src.display());
    let out = Command::new(bin.join("flwr"))
        .arg("build")
        .current_dir(&app)
        .env("FLWR_HOME", dir.join("cli-home"))
        .env("FLWR_TELEMETRY_ENABLED", "0")
        .env("FLWR_DISABLE_UPDATE_CHECK", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "flwr build: {}", String::from_utf8_lossy(&out.stderr));
    let fab = fs::read_dir(&app)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "fab"))
        .expect("flwr build wrote a .fab");
    fs::read(fab).unwrap()
}

/// sha256 in hex (Flower's `Fab.hash_str`), by coreutils: the test needs no hash crate.
fn sha256_hex(bytes: &[u8], dir: &Path) -> String {
    let p = dir.join("fab.bin");
    fs::write(&p, bytes).unwrap();
    let out = Command::new("sha256sum").arg(&p).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// A SuperNode key as issue #19 makes it: P-256, its public half as PEM SubjectPublicKeyInfo.
fn node_key() -> String {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().public_key_pem()
}

/// Every call the appliance makes, against one SuperLink; `label` names it in messages.
fn exercise(label: &str, c: &Control, fab: &[u8], fab_hash: &str) {
    let t0 = Instant::now();
    assert!(c.list_nodes().unwrap().is_empty(), "{label}: a fresh SuperLink has no nodes");

    // RegisterNode: listed with the key it was given.
    let pem = node_key();
    let id = c.register_node(&pem, Some("sn-a")).unwrap();
    let nodes = c.list_nodes().unwrap();
    let n = nodes.iter().find(|n| n.node_id == id).unwrap_or_else(|| panic!("{label}: node {id} not listed: {nodes:?}"));
    assert_eq!(n.status, "registered", "{label}");
    assert_eq!(n.name.as_deref(), Some("sn-a"));
    assert_eq!(String::from_utf8_lossy(&n.public_key), pem, "{label}: the PEM Flower stored");
    let again = c.register_node(&pem, None).unwrap_err();
    assert_eq!(again.api_code(), Some(code::PUBLIC_KEY_ALREADY_IN_USE), "{label}: {again}");
    let bad = c.register_node("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", None).unwrap_err();
    assert_eq!(bad.api_code(), Some(code::PUBLIC_KEY_NOT_VALID), "{label}: {bad}");

    // StartRun with the run config as the appliance renders it (ints sint64, floats double).
    let req = StartRunRequest {
        fab_content: fab.to_vec(),
        fab_hash: fab_hash.to_string(),
        override_config: vec![
            ("min-available-nodes".into(), Scalar::Sint64(2)),
            ("num-server-rounds".into(), Scalar::Sint64(1)),
            ("proximal-mu".into(), Scalar::Double(0.25)),
            ("strategy".into(), Scalar::String("FedProx".into())),
        ],
        federation: String::new(),
    };
    let started = c.start_run(&req).unwrap();
    let run_id = started.run_id.unwrap();
    assert_eq!(started.federation, "@none/default", "{label}");
    let runs = c.list_runs(Some(run_id), None).unwrap();
    assert_eq!(runs.len(), 1, "{label}: {runs:?}");
    let r = &runs[0];
    assert_eq!((r.run_id, r.fab_id.as_str()), (run_id, "flower-init/appliance"), "{label}");
    assert_eq!(r.fab_hash, fab_hash, "{label}: Flower's hash of the FAB is ours");
    assert_eq!(r.override_config, req.override_config, "{label}");
    assert!(["pending", "starting", "running"].contains(&r.status.as_str()), "{label}: {r:?}");
    assert!(c.list_runs(None, None).unwrap().iter().any(|r| r.run_id == run_id), "{label}: the run is in the latest runs");
    let mut bad = req.clone();
    bad.override_config.push(("no-such-key".into(), Scalar::Sint64(1)));
    assert_eq!(c.start_run(&bad).unwrap_err().api_code(), Some(code::INVALID_RUN_CONFIG), "{label}");
    assert_eq!(c.list_runs(Some(u64::MAX - 1), None).unwrap_err().api_code(), Some(code::RUN_ID_NOT_FOUND));

    // StopRun: finished, stopped.
    assert!(c.stop_run(run_id).unwrap(), "{label}: StopRun");
    let r = &c.list_runs(Some(run_id), None).unwrap()[0];
    assert_eq!((r.status.as_str(), r.sub_status.as_str()), ("finished", "stopped"), "{label}: {r:?}");

    // UnregisterNode: listed as unregistered; an unknown node is Flower's 404.
    c.unregister_node(id).unwrap();
    let nodes = c.list_nodes().unwrap();
    let n = nodes.iter().find(|n| n.node_id == id);
    assert!(n.is_none_or(|n| n.status == "unregistered"), "{label}: {n:?}");
    assert_eq!(c.unregister_node(id ^ 1).unwrap_err().api_code(), Some(code::NODE_NOT_FOUND), "{label}");
    println!("{label}: 15 Control calls in {:.2}s", t0.elapsed().as_secs_f64());
}

#[test]
#[ignore = "needs a Flower venv: make control-flower-test"]
fn control_api_of_a_real_superlink_plain_and_tls() {
    let t0 = Instant::now();
    let bin = venv_bin();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sans = tls::server_sans(&["127.0.0.1".parse().unwrap()], Some("flower-control-test"), &[]);
    let sl = tls::superlink_generated(&dir.join("state"), &dir.join("run"), &sans, ContainerUser::FLOWER).unwrap();
    let ca_pem = fs::read_to_string(&sl.files.ca_cert).unwrap();
    let tls_cfg = ProbeTls { ca_pem: ca_pem.clone(), server_name: "127.0.0.1".into() };

    // Both start at once: each is a Python start of ~10-60 s on this machine.
    let (mut plain, plain_addr) = spawn_superlink("superlink-plain", &bin, None, dir);
    let (mut tls_sl, tls_addr) = spawn_superlink("superlink-tls", &bin, Some(&sl.files), dir);
    let fab = build_fab(&bin, dir);
    let fab_hash = sha256_hex(&fab, dir);
    wait_healthy(&mut plain, plain_addr, None);
    wait_healthy(&mut tls_sl, tls_addr, Some(&tls_cfg));
    println!("superlinks serving and FAB built ({} bytes) after {:.1}s", fab.len(), t0.elapsed().as_secs_f64());

    let c = Control::new(plain_addr, None, CALL_TIMEOUT).unwrap();
    exercise("insecure", &c, &fab, &fab_hash);
    let c = Control::new(tls_addr, Some(&tls_cfg), CALL_TIMEOUT).unwrap();
    exercise("tls", &c, &fab, &fab_hash);

    // Over TLS, another CA fails the handshake; a plain client is not answered in protobuf.
    let other = tls::superlink_generated(&dir.join("other-state"), &dir.join("other-run"), &sans, ContainerUser::FLOWER).unwrap();
    let other_ca = fs::read_to_string(&other.files.ca_cert).unwrap();
    let wrong = Control::new(tls_addr, Some(&ProbeTls { ca_pem: other_ca, server_name: "127.0.0.1".into() }), CALL_TIMEOUT).unwrap();
    let e = wrong.list_nodes().unwrap_err();
    assert!(matches!(e, ControlError::Tls(_)), "another CA: {e:?}");
    let plain_to_tls = Control::new(tls_addr, None, CALL_TIMEOUT).unwrap();
    let e = plain_to_tls.list_nodes().unwrap_err();
    assert!(!matches!(e, ControlError::Api { .. }), "plain HTTP to the TLS port: {e:?}");
    plain.assert_alive();
    tls_sl.assert_alive();
    println!("control-flower-test: {:.1}s in all", t0.elapsed().as_secs_f64());
}
