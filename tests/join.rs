//! Issue #20: the join value end to end on the host, both halves: a SuperLink's own CA
//! (generated as at boot) made into a join value, and that value taken by a SuperNode's
//! configuration and trust step. The CA is public, the keys are not: no 16-character piece of
//! the CA key or the server key appears in the value, its decoded JSON, `flower-init join`'s
//! output or `check`'s plan (the tests/no_secret.rs rule).

use base64::Engine;
use flower_init::config::{ImageFacts, Join, resolve, values};
use flower_init::context::Context;
use flower_init::tls::{self, CaSource, ContainerUser};
use flower_init::vocab::San;
use std::path::Path;

/// A SuperLink's generated CA and server certificate under `dir`.
fn superlink(dir: &Path) -> tls::SuperLinkTls {
    let me = ContainerUser { uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() };
    let sans = tls::server_sans(&["10.0.0.5".parse().unwrap()], Some("superlink-0"), &[San::parse("203.0.113.7").unwrap()]);
    tls::superlink_generated(&dir.join("state"), &dir.join("run"), &sans, me).unwrap()
}

/// Every `*.key` file under `dir`, as text.
fn keys(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["state", "run"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "key") {
                out.push(std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    out
}

/// What must never show of a key: its private scalar (bytes 36..68 of rcgen's P-256 PKCS#8,
/// after the fixed header ending `04 20`), raw and as 16-character pieces of the PEM's base64
/// over it. The rest of a PKCS#8 key is public: the algorithm OIDs, and the public key, which
/// the CA certificate itself carries.
fn secret_parts(pem: &str) -> (Vec<u8>, Vec<String>) {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(&body).unwrap();
    assert!(der.len() > 68 && der[34..36] == [0x04, 0x20], "a P-256 PKCS#8 key");
    // Bytes 36..68 are base64 characters 48..90 (36 is a multiple of 3).
    let text = &body[48..90];
    let pieces = (0..=text.len() - 16).map(|i| text[i..i + 16].to_string()).collect();
    (der[36..68].to_vec(), pieces)
}

fn assert_no_key(shown: &[u8], keys: &[String]) {
    let text = String::from_utf8_lossy(shown);
    for k in keys {
        let (scalar, pieces) = secret_parts(k);
        assert!(!shown.windows(32).any(|w| w == scalar.as_slice()), "a private key's bytes are shown");
        assert!(pieces.iter().all(|p| !text.contains(p.as_str())), "a piece of a private key is shown");
    }
}

#[test]
fn a_superlinks_join_value_carries_its_ca_and_never_a_key() {
    let tmp = tempfile::tempdir().unwrap();
    let t = superlink(tmp.path());
    let endpoints = vec![values::host_port("203.0.113.7:8000").unwrap(), values::host_port("10.0.0.5:8000").unwrap()];
    let join = Join::new(endpoints, Some(&t.ca_pem)).unwrap();
    let value = join.encode();
    // About 1 KB for the generated CA: fits a OneGate attribute and a context variable.
    println!("join value of a generated CA and 2 endpoints: {} characters", value.len());
    assert!(value.len() < 1500, "{} characters", value.len());
    assert_eq!(join.fingerprints(), vec![t.ca_fingerprint.clone()], "the SHA-256 /status shows");

    let json = base64::engine::general_purpose::STANDARD_NO_PAD.decode(value.strip_prefix("flwr1:").unwrap()).unwrap();
    let shown = [
        value.clone(),
        String::from_utf8(json).unwrap(),
        join.summary().to_string(),
        flower_init::join::run(&value, false, &[]).unwrap(),
        flower_init::join::run(&value, true, &[]).unwrap(),
    ]
    .join("\n");
    let keys = keys(tmp.path());
    assert!(keys.len() >= 2, "the CA key and the server key were written");
    // The detector detects: a key file itself fails it.
    let k0 = keys[0].clone();
    let ks = keys.clone();
    assert!(std::panic::catch_unwind(move || assert_no_key(k0.as_bytes(), &ks)).is_err());
    assert_no_key(shown.as_bytes(), &keys);
    for der in &join.ca_der {
        assert_no_key(der, &keys);
    }

    // The SuperNode's side: FL_JOIN alone configures address, TLS and CA ...
    let ctx = Context::from_pairs([
        ("FL_ROLE", "supernode"),
        ("FL_NODE_CONFIG", "partition-id=0 num-partitions=1"),
        ("FL_JOIN", value.as_str()),
    ]);
    let r = resolve(&ctx, &ImageFacts::builtin(), None).unwrap();
    assert_no_key(r.plan.to_string().as_bytes(), &keys);
    assert_eq!(r.config.role.supernode().unwrap().superlink.as_ref().unwrap().to_string(), "203.0.113.7:8000");
    assert_eq!(r.config.tls.enabled, Some(true));
    // ... and the trust step takes its CA: the same certificate the SuperLink serves under.
    let decision = tls::decide_supernode(r.config.tls.enabled, None, r.config.tls.ca_pem.as_deref().map(str::as_bytes), None).unwrap();
    let tls::SuperNodeTls::Verify { ca_pem, .. } = decision else { panic!("{decision:?}") };
    let trust = tls::supernode_trust(&ca_pem, CaSource::Join, &tmp.path().join("supernode")).unwrap();
    assert_eq!(trust.fingerprints, vec![t.ca_fingerprint.clone()]);
    assert_eq!(CaSource::Join.name(), "FL_JOIN");
}

#[test]
fn the_binary_decodes_and_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let t = superlink(tmp.path());
    let value = Join::new(vec![values::host_port("10.0.0.5:8000").unwrap()], Some(&t.ca_pem)).unwrap().encode();
    let bin = env!("CARGO_BIN_EXE_flower-init");
    let out = std::process::Command::new(bin).args(["join", &value]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["ca_sha256"][0], t.ca_fingerprint.as_str());
    let out = std::process::Command::new(bin).args(["join", "flwr2:abc"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("version 2"), "{out:?}");
    let out = std::process::Command::new(bin).args(["join"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("VALUE is missing"), "{out:?}");
}

#[test]
fn check_validates_the_joined_ca_as_the_trust_step_will() {
    let tmp = tempfile::tempdir().unwrap();
    let t = superlink(tmp.path());
    let bin = env!("CARGO_BIN_EXE_flower-init");
    let image = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/image.json");
    let check = |name: &str, value: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ctx = format!(
            "FL_ROLE='supernode'\nFL_JOIN='{value}'\nFL_NODE_CONFIG='partition-id=0 num-partitions=1'\n"
        );
        std::fs::write(dir.join("context.sh"), ctx).unwrap();
        std::process::Command::new(bin).args(["check", "--image", image]).arg(&dir).output().unwrap()
    };
    let ep = || vec![values::host_port("10.0.0.5:8000").unwrap()];
    // The SuperLink's real CA: valid.
    let out = check("good", &Join::new(ep(), Some(&t.ca_pem)).unwrap().encode());
    assert!(out.status.success(), "{out:?}");
    // Its server certificate is no CA: refused by `check`, naming FL_JOIN, before any boot.
    let leaf = std::fs::read_to_string(&t.files.server_cert).unwrap();
    let out = check("leaf", &Join::new(ep(), Some(&leaf)).unwrap().encode());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("FL_JOIN: certificate") && err.contains("is not a CA certificate"), "{err}");
}
