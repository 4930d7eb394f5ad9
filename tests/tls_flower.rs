//! Real Flower (flwr 1.42) over TLS with certificates made by `flower_init::tls` (issue #5):
//! a `flower-superlink` started with the generated ca.crt / server.pem / server.key answers
//! https `/health` to a client trusting the CA, a `flower-supernode` trusting the CA registers,
//! and a SuperNode given another CA fails with a TLS error.
//!
//! `#[ignore]`d: it needs a venv with Flower. Run it with `make tls-flower-test` (which sets
//! FLOWER_VENV), or `FLOWER_VENV=/path/to/venv cargo test --test tls_flower -- --ignored`.
//! Loopback only (127.0.0.1), ephemeral ports; every process is killed at the end, also when
//! the test fails. As a test it may spawn and wait on processes directly.

use flower_init::config::OperatorPem;
use flower_init::tls::{self, ContainerUser};
use flower_init::vocab::San;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
mod common;

use common::flower::{Flower, POLL, START_TIMEOUT, free_port};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The venv's bin directory (FLOWER_VENV).
fn venv_bin() -> PathBuf {
    common::flower::venv_bin(&["flower-superlink", "flower-supernode", "flower-superexec"], "tls-flower-test")
}

/// `GET /health` over TLS trusting only `ca_pem`, dialling 127.0.0.1 under `name`. Returns the
/// status line, or the error (TLS or connection).
fn https_health(port: u16, ca_pem: &[u8], name: &str) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), server).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(format!("GET /health HTTP/1.1\r\nHost: {name}:{port}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    match tls.read_to_end(&mut resp) {
        Ok(_) => {}
        // uvicorn may close without close_notify; what was read is enough.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !resp.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(String::from_utf8_lossy(&resp).lines().next().unwrap_or_default().to_string())
}

/// Wait until `done` is true, checking that `proc` is alive; panic after START_TIMEOUT.
fn wait_for(what: &str, proc: &mut Flower, mut done: impl FnMut(&Flower) -> bool) {
    let deadline = Instant::now() + START_TIMEOUT;
    while !done(proc) {
        proc.assert_alive();
        assert!(Instant::now() < deadline, "timed out waiting for {what}; {} log:\n{}", proc.name, proc.log_text());
        std::thread::sleep(POLL);
    }
}

/// Start `flower-superlink` with the three TLS files on 127.0.0.1:<free port>; returns once
/// https `/health` answers 200 to a client trusting `files.ca_cert`.
fn start_superlink(bin: &Path, files: &tls::ContainerFiles, dir: &Path) -> (Flower, u16) {
    let port = free_port();
    let port_s = port.to_string();
    let (ca, cert, key) =
        (files.ca_cert.to_str().unwrap(), files.server_cert.to_str().unwrap(), files.server_key.to_str().unwrap());
    let mut superlink = Flower::spawn(
        "superlink",
        bin,
        &[
            "flower-superlink",
            "--ssl-ca-certfile",
            ca,
            "--ssl-certfile",
            cert,
            "--ssl-keyfile",
            key,
            "--host",
            "127.0.0.1",
            "--port",
            &port_s,
            "--disable-runtime-dependency-installation",
        ],
        dir,
    );
    let ca_pem = fs::read(&files.ca_cert).unwrap();
    wait_for("https /health", &mut superlink, |_| {
        https_health(port, &ca_pem, "127.0.0.1").is_ok_and(|status| status.contains(" 200"))
    });
    (superlink, port)
}

#[test]
#[ignore = "needs a Flower venv: make tls-flower-test"]
fn flower_superlink_serves_generated_certificates_to_supernodes() {
    let bin = venv_bin();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // The SuperLink's certificates, as boot makes them: state dir + runtime copies.
    let sans = tls::server_sans(&["127.0.0.1".parse().unwrap()], Some("flower-superlink-test"), &[]);
    let sl = tls::superlink_generated(&dir.join("state"), &dir.join("run"), &sans, ContainerUser::FLOWER).unwrap();
    println!("{}", sl.summary());
    assert!(sl.sans.contains(&San::Dns("localhost".into())));
    let ca_pem = fs::read(&sl.files.ca_cert).unwrap();
    // Another cluster's CA, for the negative cases.
    let other = tls::superlink_generated(&dir.join("other-state"), &dir.join("other-run"), &sans, ContainerUser::FLOWER).unwrap();
    assert_ne!(other.ca_fingerprint, sl.ca_fingerprint);

    let (mut superlink, port) = start_superlink(&bin, &sl.files, dir);
    let ca = sl.files.ca_cert.to_str().unwrap();
    // The DNS SAN works against uvicorn too; a client trusting another CA is refused.
    let status = https_health(port, &ca_pem, "localhost").unwrap();
    assert!(status.contains(" 200"), "{status}");
    let e = https_health(port, other.ca_pem.as_bytes(), "127.0.0.1").unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");

    // A SuperNode trusting the CA registers.
    let (sn_port, bad_port) = (free_port().to_string(), free_port().to_string());
    let superlink_addr = format!("127.0.0.1:{port}");
    let mut good = Flower::spawn(
        "supernode-good",
        &bin,
        &["flower-supernode", "--superlink", &superlink_addr, "--root-certificates", ca, "--host", "127.0.0.1", "--port", &sn_port],
        dir,
    );
    wait_for("`SuperNode ID` in the good SuperNode's log", &mut good, |p| p.log_text().contains("SuperNode ID"));
    println!("good SuperNode: {}", good.log_text().lines().find(|l| l.contains("SuperNode ID")).unwrap_or_default());

    // A SuperNode given another CA fails with a TLS error and a non-zero status.
    let other_ca = other.files.ca_cert.to_str().unwrap();
    let mut bad = Flower::spawn(
        "supernode-bad",
        &bin,
        &["flower-supernode", "--superlink", &superlink_addr, "--root-certificates", other_ca, "--host", "127.0.0.1", "--port", &bad_port],
        dir,
    );
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(st) = bad.exited() {
            break st;
        }
        assert!(Instant::now() < deadline, "the SuperNode with the wrong CA is still running; log:\n{}", bad.log_text());
        std::thread::sleep(POLL);
    };
    let log = bad.log_text();
    assert!(!status.success(), "the SuperNode with the wrong CA exited {status}; log:\n{log}");
    assert!(log.contains("CERTIFICATE_VERIFY_FAILED"), "no TLS error in the log:\n{log}");
    assert!(!log.contains("SuperNode ID"), "the SuperNode with the wrong CA registered:\n{log}");
    println!("bad SuperNode: {status}; {}", log.lines().find(|l| l.contains("CERTIFICATE_VERIFY_FAILED")).unwrap_or_default());

    // Both are still fine: the SuperLink kept running and the good SuperNode too.
    superlink.assert_alive();
    good.assert_alive();
}

#[test]
#[ignore = "needs a Flower venv: make tls-flower-test"]
fn flower_superlink_loads_validated_operator_rsa_certificates() {
    let bin = venv_bin();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // An operator's RSA PKI with a PKCS#1 key, validated and re-encoded by flower-init.
    let pem = OperatorPem {
        ca: include_str!("../src/tls/testdata/rsa-ca.crt").into(),
        cert: include_str!("../src/tls/testdata/rsa-server.crt").into(),
        key: flower_init::secret::Secret::new(include_str!("../src/tls/testdata/rsa-server.key")),
    };
    let sl = tls::superlink_operator(&pem, &[], &dir.join("run"), ContainerUser::FLOWER).unwrap();
    println!("{}", sl.summary());
    let (mut superlink, port) = start_superlink(&bin, &sl.files, dir);
    let sn_port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let ca = sl.files.ca_cert.to_str().unwrap();
    let mut node = Flower::spawn(
        "supernode-rsa",
        &bin,
        &["flower-supernode", "--superlink", &addr, "--root-certificates", ca, "--host", "127.0.0.1", "--port", &sn_port],
        dir,
    );
    wait_for("`SuperNode ID` in the SuperNode's log", &mut node, |p| p.log_text().contains("SuperNode ID"));
    superlink.assert_alive();
}
