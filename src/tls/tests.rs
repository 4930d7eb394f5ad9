//! Scenario tests over real files in a tempdir: first boot, reboots, SAN changes, expiry,
//! corruption, permissions, operator certificates, SuperNode trust. Certificates are checked
//! with rustls/webpki as a client would (including a real in-memory handshake per name).
//! Writing the container's key as uid 49999 needs root: these tests fail without it.

use super::verify::{certs_from_pem, handshake, key_from_pem, server_config};
use super::x509::{self, CertFacts};
use super::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

const DAY: i64 = 86_400;

fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "tls tests chown the container's key to uid 49999: run them as root");
}

fn ip(s: &str) -> San {
    San::Ip(s.parse().unwrap())
}
fn dns(s: &str) -> San {
    San::Dns(s.into())
}

/// A state dir and a runtime dir in one tempdir.
struct Dirs {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    run: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    Dirs { state: tmp.path().join("state/tls"), run: tmp.path().join("run/tls"), _tmp: tmp }
}

fn sans_for(nics: &[&str]) -> Vec<San> {
    let nics: Vec<std::net::IpAddr> = nics.iter().map(|s| s.parse().unwrap()).collect();
    server_sans(&nics, Some("flower-superlink-0"), &[dns("fl.example.org"), ip("203.0.113.7")])
}

fn boot(d: &Dirs, sans: &[San], now: i64) -> SuperLinkTls {
    require_root();
    superlink::provision_at(&d.state, &d.run, sans, ContainerUser::FLOWER, now, &Renewal::default()).unwrap()
}

fn facts_of(path: &Path) -> CertFacts {
    let der = certs_from_pem("test", &fs::read(path).unwrap()).unwrap().remove(0);
    x509::parse(&der).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn outcomes(t: &SuperLinkTls) -> (CaOutcome, ServerOutcome) {
    match &t.origin {
        Origin::Generated { ca, server } => (ca.clone(), server.clone()),
        Origin::Operator => panic!("not generated"),
    }
}

/// A rustls server from the container's copies, as Flower will load them.
fn server_from(files: &ContainerFiles) -> rustls::ServerConfig {
    let chain = certs_from_pem("server.pem", &fs::read(&files.server_cert).unwrap()).unwrap();
    let key = key_from_pem("server.key", &fs::read(&files.server_key).unwrap()).unwrap();
    server_config("server.pem", "server.key", chain, key).unwrap()
}

fn cas_from(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    certs_from_pem("ca.crt", &fs::read(path).unwrap()).unwrap()
}

#[test]
fn first_boot_chain_verifies_for_every_san_and_rejects_others() {
    let d = dirs();
    let now = unix_now();
    let sans = sans_for(&["10.0.0.5", "fd00::5"]);
    let t = boot(&d, &sans, now);
    assert_eq!(outcomes(&t), (CaOutcome::Created, ServerOutcome::Issued { reason: "new CA".into() }));
    assert_eq!(t.sans, sans);
    for want in ["IP:10.0.0.5", "IP:fd00::5", "IP:127.0.0.1", "IP:::1", "DNS:localhost", "DNS:flower-superlink-0", "DNS:fl.example.org", "IP:203.0.113.7"] {
        assert!(t.sans.iter().any(|s| s.to_string() == want), "{want} missing from {:?}", t.sans);
    }
    // A real rustls client trusting only ca.crt accepts every SAN (IPs and DNS names)...
    let cas = cas_from(&t.files.ca_cert);
    for san in &sans {
        handshake("generated", server_from(&t.files), &cas, san).unwrap_or_else(|e| panic!("{san}: {e}"));
    }
    // ...and refuses names outside them.
    for other in [ip("10.0.0.6"), ip("127.0.0.2"), dns("evil.example.org"), dns("superlink")] {
        let e = handshake("generated", server_from(&t.files), &cas, &other).unwrap_err().to_string();
        assert!(e.contains("certificate not valid for name"), "{other}: {e}");
    }
    // ...and a client trusting another CA refuses the server.
    let (other_ca, _) = issue::generate_ca(now).unwrap();
    let other = certs_from_pem("other", other_ca.as_bytes()).unwrap();
    let e = handshake("generated", server_from(&t.files), &other, &ip("127.0.0.1")).unwrap_err().to_string();
    assert!(e.contains("UnknownIssuer"), "{e}");
    assert!(facts_of(&t.files.ca_cert).common_name.unwrap().starts_with("flower-init SuperLink CA "));

    // CA: 10 years, pathLen-limited CA; server: 1 year, not a CA, serverAuth EKU, AKI.
    let ca = facts_of(&t.files.ca_cert);
    let leaf = facts_of(&t.files.server_cert);
    assert!(ca.is_ca && !leaf.is_ca);
    assert_eq!((ca.not_before, ca.not_after), (now - BACKDATE_SECS, now + CA_VALIDITY_DAYS * DAY));
    assert_eq!((leaf.not_before, leaf.not_after), (now - BACKDATE_SECS, now + SERVER_VALIDITY_DAYS * DAY));
    let leaf_der = fs::read(&t.files.server_cert).unwrap();
    let leaf_der = certs_from_pem("x", &leaf_der).unwrap().remove(0);
    let has = |needle: &[u8]| leaf_der.windows(needle.len()).any(|w| w == needle);
    assert!(has(&[0x06, 0x08, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01]), "serverAuth EKU");
    assert!(has(&[0x06, 0x03, 0x55, 0x1D, 0x23]), "authorityKeyIdentifier");
    assert_eq!(t.ca_fingerprint, fingerprint(&cas[0]));
    assert_eq!(t.ca_fingerprint.len(), 32 * 3 - 1);
    assert_eq!(t.ca_pem, fs::read_to_string(d.state.join(CA_CERT)).unwrap());
}

#[test]
fn permissions_and_the_container_never_sees_the_ca_key() {
    let d = dirs();
    let t = boot(&d, &sans_for(&["10.0.0.5"]), unix_now());
    assert_eq!(mode(&d.state), 0o700);
    for (name, want) in [(CA_CERT, 0o644), (CA_KEY, 0o600), (SERVER_CERT, 0o644), (SERVER_KEY, 0o600)] {
        let p = d.state.join(name);
        assert_eq!(mode(&p), want, "{name}");
        assert_eq!(fs::metadata(&p).unwrap().uid(), 0, "{name}");
    }
    let mut names: Vec<String> = fs::read_dir(&d.run).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, [CA_CERT, SERVER_KEY, SERVER_CERT]);
    let key = fs::metadata(&t.files.server_key).unwrap();
    assert_eq!((key.uid(), key.gid(), key.permissions().mode() & 0o7777), (49999, 49999, 0o400));
    for p in [&t.files.ca_cert, &t.files.server_cert] {
        let m = fs::metadata(p).unwrap();
        assert_eq!((m.uid(), m.permissions().mode() & 0o7777), (0, 0o644));
    }
    assert_eq!(fs::read(&t.files.server_key).unwrap(), fs::read(d.state.join(SERVER_KEY)).unwrap());
    let ca_key = fs::read_to_string(d.state.join(CA_KEY)).unwrap();
    for p in [&t.files.ca_cert, &t.files.server_cert, &t.files.server_key] {
        assert!(!fs::read_to_string(p).unwrap().contains(ca_key.lines().nth(1).unwrap()), "{}", p.display());
    }
    let mounts = t.files.bind_mounts("/run/flower-tls/");
    assert_eq!(mounts.len(), 3);
    assert!(mounts.iter().all(|m| m.read_only && !m.source.ends_with(CA_KEY) && m.destination.starts_with("/run/flower-tls/")));
    assert_eq!(mounts[2].destination, "/run/flower-tls/server.key");
    // The container's user can read its three files, and not the CA key.
    fs::set_permissions(d._tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let read_as_flower = |p: &Path| {
        use std::os::unix::process::CommandExt;
        let u = ContainerUser::FLOWER;
        std::process::Command::new("cat").arg(p).uid(u.uid).gid(u.gid).output().unwrap()
    };
    for p in [&t.files.ca_cert, &t.files.server_cert, &t.files.server_key] {
        let out = read_as_flower(p);
        assert!(out.status.success(), "uid 49999 cannot read {}: {}", p.display(), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, fs::read(p).unwrap());
    }
    for p in [d.state.join(CA_KEY), d.state.join(SERVER_KEY)] {
        assert!(!read_as_flower(&p).status.success(), "uid 49999 can read {}", p.display());
    }
    // Nothing printable carries a key.
    assert!(!t.summary().contains("PRIVATE") && !format!("{t:?}").contains("PRIVATE"));

    // A widened key mode is put back on the next boot.
    fs::set_permissions(d.state.join(CA_KEY), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(d.state.join(SERVER_KEY), fs::Permissions::from_mode(0o640)).unwrap();
    boot(&d, &sans_for(&["10.0.0.5"]), unix_now());
    assert_eq!(mode(&d.state.join(CA_KEY)), 0o600);
    assert_eq!(mode(&d.state.join(SERVER_KEY)), 0o600);
}

#[test]
fn reboot_reuses_ca_and_server_certificate() {
    let d = dirs();
    let now = unix_now();
    let sans = sans_for(&["10.0.0.5"]);
    let first = boot(&d, &sans, now);
    let leaf = fs::read(d.state.join(SERVER_CERT)).unwrap();
    // Another order of the same SANs is the same set.
    let mut shuffled = sans.clone();
    shuffled.reverse();
    let again = boot(&d, &shuffled, now + 40 * DAY);
    assert_eq!(outcomes(&again), (CaOutcome::Reused, ServerOutcome::Reused));
    assert_eq!(again.ca_fingerprint, first.ca_fingerprint);
    assert_eq!(fs::read(d.state.join(SERVER_CERT)).unwrap(), leaf);
    assert_eq!(fs::read(&again.files.server_cert).unwrap(), leaf);
}

#[test]
fn san_change_reissues_the_server_certificate_only() {
    let d = dirs();
    let now = unix_now();
    let first = boot(&d, &sans_for(&["10.0.0.5"]), now);
    let ca_before = fs::read(d.state.join(CA_CERT)).unwrap();
    let ca_key_before = fs::read(d.state.join(CA_KEY)).unwrap();
    let leaf_before = facts_of(&d.state.join(SERVER_CERT));
    let key_before = fs::read(d.state.join(SERVER_KEY)).unwrap();

    let sans = sans_for(&["10.0.0.6"]);
    let t = boot(&d, &sans, now + DAY);
    let (ca, server) = outcomes(&t);
    assert_eq!(ca, CaOutcome::Reused);
    let ServerOutcome::Issued { reason } = server else { panic!("not re-issued") };
    assert_eq!(reason, "the SAN set changed (added: IP:10.0.0.6; removed: IP:10.0.0.5)");
    assert_eq!(t.ca_fingerprint, first.ca_fingerprint);
    assert_eq!(fs::read(d.state.join(CA_CERT)).unwrap(), ca_before);
    assert_eq!(fs::read(d.state.join(CA_KEY)).unwrap(), ca_key_before);
    let leaf = facts_of(&d.state.join(SERVER_CERT));
    assert_ne!(leaf.serial, leaf_before.serial);
    assert_ne!(leaf.spki, leaf_before.spki);
    assert_ne!(fs::read(d.state.join(SERVER_KEY)).unwrap(), key_before);
    // The new certificate is trusted by the unchanged CA, for the new address.
    handshake("reissued", server_from(&t.files), &cas_from(&d.state.join(CA_CERT)), &ip("10.0.0.6")).unwrap();
}

#[test]
fn near_expiry_reissues_and_an_old_ca_is_regenerated() {
    let d = dirs();
    let now = unix_now();
    let sans = sans_for(&["10.0.0.5"]);
    let first = boot(&d, &sans, now);
    // 300 days on: 65 days left, kept.
    assert_eq!(outcomes(&boot(&d, &sans, now + 300 * DAY)).1, ServerOutcome::Reused);
    // 340 days on: 25 days left (< 30): re-issued from the same CA, valid a year from then.
    let later = now + 340 * DAY;
    let t = boot(&d, &sans, later);
    let (ca, server) = outcomes(&t);
    assert_eq!(ca, CaOutcome::Reused);
    let ServerOutcome::Issued { reason } = server else { panic!("not re-issued") };
    assert!(reason.starts_with("it expires on ") && reason.contains("renewed 30 days ahead"), "{reason}");
    assert_eq!(t.ca_fingerprint, first.ca_fingerprint);
    assert_eq!(t.server_not_after, later + 365 * DAY);
    assert!(!t.renewal_due(later) && t.renewal_due(later + 340 * DAY));
    // Nearly ten years on, the CA itself is renewed (loudly), and the leaf with it; the leaf
    // never outlives its CA.
    let decade = now + (CA_VALIDITY_DAYS - 20) * DAY;
    let t = boot(&d, &sans, decade);
    let (ca, server) = outcomes(&t);
    let CaOutcome::Regenerated { reason } = ca else { panic!("CA not regenerated") };
    assert!(reason.contains("ca.crt expires on"), "{reason}");
    assert_eq!(server, ServerOutcome::Issued { reason: "the CA was regenerated".into() });
    assert_ne!(t.ca_fingerprint, first.ca_fingerprint);
    assert!(t.server_not_after <= t.ca_not_after);
}

/// A named way to damage the state directory, and the reason the next boot must give.
type Breakage<'a> = (&'a str, &'a dyn Fn(&Path), &'a str);

#[test]
fn server_files_that_are_corrupt_or_missing_are_reissued() {
    let d = dirs();
    let now = unix_now();
    let sans = sans_for(&["10.0.0.5"]);
    let first = boot(&d, &sans, now);
    let other_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem();
    let cases: [Breakage; 5] = [
        ("garbage cert", &|s| fs::write(s.join(SERVER_CERT), b"not a certificate").unwrap(), "no CERTIFICATE block"),
        ("truncated cert", &|s| {
            let pem = fs::read_to_string(s.join(SERVER_CERT)).unwrap();
            fs::write(s.join(SERVER_CERT), &pem[..pem.len() / 2]).unwrap()
        }, "no END line"),
        ("missing key", &|s| fs::remove_file(s.join(SERVER_KEY)).unwrap(), "server.key is missing"),
        ("foreign key", &|s| fs::write(s.join(SERVER_KEY), &other_key).unwrap(), "server.key does not belong to server.pem"),
        ("garbage key", &|s| fs::write(s.join(SERVER_KEY), b"\x00\x01").unwrap(), "server.key is not"),
    ];
    for (name, break_it, why) in cases {
        break_it(&d.state);
        let t = boot(&d, &sans, now);
        let (ca, server) = outcomes(&t);
        assert_eq!(ca, CaOutcome::Reused, "{name}");
        let ServerOutcome::Issued { reason } = server else { panic!("{name}: not re-issued") };
        assert!(reason.contains(why), "{name}: {reason}");
        assert_eq!(t.ca_fingerprint, first.ca_fingerprint, "{name}");
        handshake(name, server_from(&t.files), &cas_from(&t.files.ca_cert), &ip("10.0.0.5")).unwrap();
    }
}

#[test]
fn a_corrupt_ca_is_set_aside_and_regenerated() {
    let now = unix_now();
    let sans = sans_for(&["10.0.0.5"]);
    let other_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem();
    let cases: [Breakage; 4] = [
        ("garbage key", &|s| fs::write(s.join(CA_KEY), b"garbage").unwrap(), "ca.key is not a usable private key"),
        ("foreign key", &|s| fs::write(s.join(CA_KEY), &other_key).unwrap(), "ca.key does not belong to ca.crt"),
        ("missing cert", &|s| fs::remove_file(s.join(CA_CERT)).unwrap(), "ca.crt is missing"),
        ("leaf as CA", &|s| fs::copy(s.join(SERVER_CERT), s.join(CA_CERT)).map(drop).unwrap(), "ca.crt is not a CA certificate"),
    ];
    for (name, break_it, why) in cases {
        let d = dirs();
        let first = boot(&d, &sans, now);
        let key_before = fs::read(d.state.join(CA_KEY)).unwrap();
        break_it(&d.state);
        let t = boot(&d, &sans, now);
        let CaOutcome::Regenerated { reason } = outcomes(&t).0 else { panic!("{name}: CA not regenerated") };
        assert!(reason.contains(why), "{name}: {reason}");
        assert_ne!(t.ca_fingerprint, first.ca_fingerprint, "{name}");
        // What was there is kept for the operator, the new pair is in place.
        assert!(d.state.join("ca.key.corrupt").exists(), "{name}");
        assert_ne!(fs::read(d.state.join(CA_KEY)).unwrap(), key_before, "{name}");
        handshake(name, server_from(&t.files), &cas_from(&t.files.ca_cert), &ip("10.0.0.5")).unwrap();
        // And the boot after that reuses the new CA.
        assert_eq!(outcomes(&boot(&d, &sans, now)), (CaOutcome::Reused, ServerOutcome::Reused), "{name}");
    }
}

#[test]
fn a_ca_not_made_by_flower_init_is_an_error_not_overwritten() {
    require_root();
    let d = dirs();
    fs::create_dir_all(&d.state).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "Someone else's CA");
    fs::write(d.state.join(CA_CERT), p.self_signed(&key).unwrap().pem()).unwrap();
    fs::write(d.state.join(CA_KEY), key.serialize_pem()).unwrap();
    let e = superlink_generated(&d.state, &d.run, &sans_for(&[]), ContainerUser::FLOWER).unwrap_err();
    assert!(matches!(e, TlsError::SelfCheck { .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains("not made by flower-init") && e.contains("unknown issuer"), "{e}");
    assert_eq!(fs::read(d.state.join(CA_KEY)).unwrap(), key.serialize_pem().as_bytes());
}

#[test]
fn a_crash_between_writes_leaves_no_partial_file() {
    let d = dirs();
    let now = unix_now();
    let sans = sans_for(&["10.0.0.5"]);
    let first = boot(&d, &sans, now);
    // A crash mid-write leaves at most a temp file; the real files are whole and reused.
    fs::write(d.state.join(".server.key.tmp"), b"-----BEGIN PRIV").unwrap();
    fs::write(d.state.join(".ca.key.tmp"), b"").unwrap();
    let t = boot(&d, &sans, now);
    assert_eq!(outcomes(&t), (CaOutcome::Reused, ServerOutcome::Reused));
    assert_eq!(t.ca_fingerprint, first.ca_fingerprint);
    // The next write of a file replaces its stale temp.
    boot(&d, &sans_for(&["10.0.0.9"]), now);
    assert!(!d.state.join(".server.key.tmp").exists());
    // A crash between the key and the certificate (new key, old certificate) is a mismatch,
    // repaired by re-issuing.
    let other_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem();
    fs::write(d.state.join(SERVER_KEY), other_key).unwrap();
    assert!(matches!(outcomes(&boot(&d, &sans, now)).1, ServerOutcome::Issued { .. }));
}

// ---- operator certificates ----

/// A test PKI made with rcgen, as an operator's would be.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn make_pki(cn: &str) -> Pki {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name.push(DnType::CommonName, cn);
    let ca_pem = p.self_signed(&key).unwrap().pem();
    Pki { ca_pem, issuer: Issuer::new(p, key) }
}

/// A leaf for `sans` valid from `from` to `to` (Unix seconds): (cert PEM, key PEM).
fn leaf(pki: &Pki, sans: &[&str], from: i64, to: i64) -> (String, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "operator superlink");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p.not_before = (std::time::UNIX_EPOCH + Duration::from_secs(from as u64)).into();
    p.not_after = (std::time::UNIX_EPOCH + Duration::from_secs(to as u64)).into();
    (p.signed_by(&key, &pki.issuer).unwrap().pem(), key.serialize_pem())
}

fn op(ca: &str, cert: &str, key: &str) -> OperatorPem {
    OperatorPem { ca: ca.into(), cert: cert.into(), key: crate::secret::Secret::new(key) }
}

#[test]
fn operator_certificates_that_are_right_are_installed() {
    require_root();
    let now = unix_now();
    let pki = make_pki("Example Corp Root");
    let (cert, key) = leaf(&pki, &["127.0.0.1", "::1", "10.0.0.5", "fl.example.org"], now - DAY, now + 90 * DAY);
    let d = dirs();
    let t = superlink_operator(&op(&pki.ca_pem, &cert, &key), &[ip("10.0.0.5"), dns("fl.example.org")], &d.run, ContainerUser::FLOWER)
        .unwrap();
    assert_eq!(t.origin, Origin::Operator);
    assert_eq!(t.server_not_after, now + 90 * DAY);
    assert_eq!(t.ca_fingerprint, fingerprint(&cas_from(&t.files.ca_cert)[0]));
    assert!(!t.renewal_due(now + 89 * DAY));
    let key_meta = fs::metadata(&t.files.server_key).unwrap();
    assert_eq!((key_meta.uid(), key_meta.permissions().mode() & 0o7777), (49999, 0o400));
    handshake("operator", server_from(&t.files), &cas_from(&t.files.ca_cert), &ip("10.0.0.5")).unwrap();
    assert!(!d.state.exists(), "operator certificates touch no state");

    // An intermediate in FL_SSL_CERTFILE is carried along.
    let mut ip_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ip_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ip_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    ip_params.distinguished_name.push(DnType::CommonName, "Example Corp Issuing");
    ip_params.use_authority_key_identifier_extension = true;
    let ikey = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let inter_pem = ip_params.signed_by(&ikey, &pki.issuer).unwrap().pem();
    let inter = Pki { ca_pem: inter_pem.clone(), issuer: Issuer::new(ip_params, ikey) };
    let (cert, key) = leaf(&inter, &["127.0.0.1", "10.0.0.5"], now - DAY, now + DAY);
    let t = superlink_operator(&op(&pki.ca_pem, &format!("{cert}{inter_pem}"), &key), &[ip("10.0.0.5")], &d.run, ContainerUser::FLOWER)
        .unwrap();
    assert_eq!(certs_from_pem("x", &fs::read(&t.files.server_cert).unwrap()).unwrap().len(), 2);
    handshake("operator chain", server_from(&t.files), &cas_from(&t.files.ca_cert), &ip("10.0.0.5")).unwrap();
}

#[test]
fn operator_rsa_certificates_with_a_pkcs1_key_are_accepted() {
    require_root();
    let (ca, cert, key) = (
        include_str!("testdata/rsa-ca.crt"),
        include_str!("testdata/rsa-server.crt"),
        include_str!("testdata/rsa-server.key"),
    );
    let d = dirs();
    let t = superlink_operator(&op(ca, cert, key), &[ip("10.0.0.5")], &d.run, ContainerUser::FLOWER).unwrap();
    assert!(fs::read_to_string(&t.files.server_key).unwrap().starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    handshake("rsa", server_from(&t.files), &cas_from(&t.files.ca_cert), &dns("localhost")).unwrap();
    let e = validate_operator(&op(ca, cert, key), &[ip("10.0.0.6")], unix_now()).err().unwrap().to_string();
    assert!(e.contains("entries for IP:10.0.0.6 (") && e.contains("it has: IP:127.0.0.1, IP:::1, DNS:localhost, IP:10.0.0.5"), "{e}");
}

#[test]
fn operator_certificates_that_are_wrong_fail_with_what_is_wrong() {
    let now = unix_now();
    let pki = make_pki("Example Corp Root");
    let ok_sans = ["127.0.0.1", "10.0.0.5"];
    let (cert, key) = leaf(&pki, &ok_sans, now - DAY, now + 90 * DAY);
    let (_, other_key) = leaf(&pki, &ok_sans, now - DAY, now + 90 * DAY);
    let (expired, expired_key) = leaf(&pki, &ok_sans, now - 400 * DAY, now - 35 * DAY);
    let (future, future_key) = leaf(&pki, &ok_sans, now + 10 * DAY, now + 400 * DAY);
    let (no_sans, no_sans_key) = leaf(&pki, &["10.0.0.4", "localhost"], now - DAY, now + 90 * DAY);
    let stranger = make_pki("Stranger Root");
    let (foreign, foreign_key) = leaf(&stranger, &ok_sans, now - DAY, now + 90 * DAY);
    let endpoints = [ip("10.0.0.5")];
    let check = |pem: OperatorPem, endpoints: &[San]| validate_operator(&pem, endpoints, now).err().map(|e| (e.to_string(), e));

    let (msg, e) = check(op(&pki.ca_pem, &cert, &other_key), &endpoints).unwrap();
    assert!(matches!(e, TlsError::KeyMismatch { .. }));
    assert_eq!(msg, "FL_SSL_KEYFILE: the private key does not belong to the certificate in FL_SSL_CERTFILE");

    let (msg, e) = check(op(&pki.ca_pem, &expired, &expired_key), &endpoints).unwrap();
    assert!(matches!(e, TlsError::Expired { .. }));
    let when = error::utc(now - 35 * DAY);
    assert!(msg.starts_with(&format!("FL_SSL_CERTFILE: certificate \"CN=operator superlink\" expired on {when}")), "{msg}");

    let (msg, _) = check(op(&pki.ca_pem, &future, &future_key), &endpoints).unwrap();
    assert!(msg.contains("is not valid before") && msg.contains("check the clock"), "{msg}");

    let (msg, e) = check(op(&pki.ca_pem, &no_sans, &no_sans_key), &[ip("10.0.0.5"), dns("fl.example.org")]).unwrap();
    assert!(matches!(e, TlsError::MissingSans { .. }));
    assert!(
        msg.starts_with("FL_SSL_CERTFILE: certificate lacks subjectAltName entries for IP:127.0.0.1, IP:10.0.0.5, DNS:fl.example.org")
            && msg.ends_with("it has: IP:10.0.0.4, DNS:localhost"),
        "{msg}"
    );

    let (msg, e) = check(op(&pki.ca_pem, &foreign, &foreign_key), &endpoints).unwrap();
    assert!(matches!(e, TlsError::ChainUntrusted { .. }));
    assert_eq!(msg, "FL_SSL_CERTFILE: certificate is not trusted by the CA in FL_SSL_CA_CERTFILE: it is not signed by that CA (unknown issuer)");

    let (msg, e) = check(op(&cert, &cert, &key), &endpoints).unwrap();
    assert!(matches!(e, TlsError::NotACa { .. }), "{msg}");
    assert!(msg.starts_with("FL_SSL_CA_CERTFILE: certificate \"CN=operator superlink\" is not a CA"), "{msg}");

    let (msg, _) = check(op(&pki.ca_pem, &cert, &cert), &endpoints).unwrap();
    assert!(msg.starts_with("FL_SSL_KEYFILE: not usable PEM: no unencrypted private key"), "{msg}");
    let (msg, _) = check(op(&pki.ca_pem, &key, &key), &endpoints).unwrap();
    assert_eq!(msg, "FL_SSL_CERTFILE: not usable PEM: no CERTIFICATE block");
    // No message quotes the key.
    let key_line = key.lines().nth(1).unwrap();
    assert!(!msg.contains(key_line));
}

// ---- SuperNode ----

#[test]
fn supernode_trusts_a_valid_ca_and_refuses_what_is_not_one() {
    let now = unix_now();
    let d = dirs();
    let pki = make_pki("Example Corp Root");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pki.ca_pem);
    let t = supernode_trust(b64.as_bytes(), CaSource::OneGate, &d.run).unwrap();
    assert_eq!(supernode_trust(pki.ca_pem.as_bytes(), CaSource::OneGate, &d.run).unwrap(), t);
    assert_eq!(t.ca_cert, d.run.join(CA_CERT));
    assert_eq!(fs::read_to_string(&t.ca_cert).unwrap(), pki.ca_pem.replace("\r\n", "\n"));
    assert_eq!(mode(&t.ca_cert), 0o644);
    assert_eq!(t.fingerprints, vec![fingerprint(&cas_from(&t.ca_cert)[0])]);
    assert_eq!(t.bind_mount("/run/flower-tls/ca.crt").destination, "/run/flower-tls/ca.crt");

    let (cert, _) = leaf(&pki, &["127.0.0.1"], now - DAY, now + DAY);
    let e = supernode_trust(cert.as_bytes(), CaSource::Context, &d.run).unwrap_err().to_string();
    assert!(e.starts_with("FL_SSL_CA_CERTFILE: certificate \"CN=operator superlink\" is not a CA"), "{e}");
    let e = supernode_trust(b"garbage", CaSource::OneGate, &d.run).unwrap_err().to_string();
    assert_eq!(e, "OneGate FL_CA_CERT: not usable PEM: no CERTIFICATE block");
    // An expired CA (OpenSSL checks a root's dates; webpki does not, so we do).
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "Old Root");
    p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let e = supernode_trust(p.self_signed(&key).unwrap().pem().as_bytes(), CaSource::OneGate, &d.run).unwrap_err();
    assert!(e.to_string().starts_with("OneGate FL_CA_CERT: certificate \"CN=Old Root\" expired on 2001-01-01 00:00:00 UTC"), "{e}");
    // The file written before is untouched by the failures.
    assert_eq!(fs::read_to_string(&t.ca_cert).unwrap(), pki.ca_pem.replace("\r\n", "\n"));
}

#[test]
fn the_generated_ca_is_what_a_supernode_then_trusts() {
    let d = dirs();
    let t = boot(&d, &sans_for(&["10.0.0.5"]), unix_now());
    let sn = dirs();
    let choice = decide_supernode(None, Some(true), None, Some(t.ca_pem.as_bytes())).unwrap();
    let SuperNodeTls::Verify { ca_pem, source } = choice else { panic!("insecure") };
    let trust = supernode_trust(&ca_pem, source, &sn.run).unwrap();
    assert_eq!(trust.fingerprints, vec![t.ca_fingerprint.clone()]);
    handshake("supernode", server_from(&t.files), &cas_from(&trust.ca_cert), &ip("10.0.0.5")).unwrap();
}

#[test]
fn insecure_is_said_loudly() {
    let w = insecure_warning(crate::vocab::Role::SuperLink);
    assert!(w.starts_with("TLS IS DISABLED (FL_TLS_ENABLED=NO)") && w.contains("--insecure"), "{w}");
    assert!(insecure_warning(crate::vocab::Role::SuperNode).contains("flower-supernode runs with --insecure"));
}

#[test]
fn a_certificate_that_lives_minutes_is_renewed_under_a_short_policy() {
    // Issue #14 item 2: the running SuperLink's check, with the lead time and lifetime a test
    // injects (`--tls-renew-before 60 --tls-server-validity 180`).
    require_root();
    let d = dirs();
    let sans = sans_for(&["10.0.0.5"]);
    let policy = Renewal { renew_before: 60, server_validity: 180 };
    let now = 1_800_000_000;
    let first = superlink::provision_at(&d.state, &d.run, &sans, ContainerUser::FLOWER, now, &policy).unwrap();
    assert_eq!(first.server_not_after, now + 180, "lives three minutes");
    assert!(!first.renewal_due_under(now + 100, &policy), "80 s left > 60 s lead");
    assert!(first.renewal_due_under(now + 130, &policy), "50 s left < 60 s lead");
    assert!(first.renewal_due(now), "under the default policy, 3 minutes is well inside 30 days");
    let again = superlink::provision_at(&d.state, &d.run, &sans, ContainerUser::FLOWER, now + 100, &policy).unwrap();
    assert_eq!(outcomes(&again).1, ServerOutcome::Reused);
    let renewed = superlink::provision_at(&d.state, &d.run, &sans, ContainerUser::FLOWER, now + 130, &policy).unwrap();
    assert!(matches!(outcomes(&renewed), (CaOutcome::Reused, ServerOutcome::Issued { reason }) if reason.contains("renewed 60 s ahead")));
    assert_eq!(renewed.server_not_after, now + 130 + 180);
    assert_eq!(renewed.ca_fingerprint, first.ca_fingerprint, "same CA: SuperNodes are unaffected");
    assert_eq!(facts_of(&d.run.join(SERVER_CERT)).not_after, now + 310, "the container's copy is the new one");
    // Operator certificates are only warned about.
    let mut op = renewed.clone();
    op.origin = Origin::Operator;
    assert!(!op.renewal_due_under(now + 300, &policy));
    let w = op.operator_expiry_warning(now + 300, &policy).unwrap();
    assert!(w.contains("FL_SSL_CERTFILE") && w.contains("renews only its own") && !w.contains("EXPIRED"), "{w}");
    assert!(op.operator_expiry_warning(now + 400, &policy).unwrap().contains("HAS EXPIRED"));
    assert_eq!(op.operator_expiry_warning(now, &policy), None);
    assert_eq!(renewed.operator_expiry_warning(now + 300, &policy), None);
}
