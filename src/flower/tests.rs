use super::probe::{ProbeError, ProbeTls, Prober, probe};
use super::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;

/// The value of `--flag=value` in `v`.
fn val<'a>(v: &'a [String], flag: &str) -> Option<&'a str> {
    v.iter().find_map(|x| x.strip_prefix(flag).and_then(|r| r.strip_prefix('=')))
}

fn superlink(tls: bool) -> SuperLinkArgs {
    SuperLinkArgs {
        host: "0.0.0.0".into(),
        port: SUPERLINK_PORT,
        tls: tls.then(ServerTls::in_certs_dir),
        database: default_database(),
        isolation: Isolation::Subprocess,
        supernode_auth: false,
    }
}

fn supernode() -> SuperNodeArgs {
    SuperNodeArgs {
        superlink: "10.0.0.5:8000".into(),
        root_certificates: Some("/certs/ca.crt".into()),
        auth_private_key: None,
        node_config: Some("partition-id=0 num-partitions=2".into()),
        max_retries: Some(5),
        max_wait_time: Some(Duration::from_secs(30)),
        runtime_port: SUPERNODE_RUNTIME_PORT,
        isolation: Isolation::Subprocess,
    }
}

#[test]
fn superlink_tls_command_line() {
    assert_eq!(
        superlink_args(&superlink(true)).join(" "),
        "/opt/flower/venv/bin/flower-superlink --ssl-ca-certfile=/certs/ca.crt --ssl-certfile=/certs/server.pem \
         --ssl-keyfile=/certs/server.key --host=0.0.0.0 --port=8000 --database=/state/state.db --isolation=subprocess \
         --disable-runtime-dependency-installation"
    );
}

#[test]
fn authentication_flags_on_both_sides() {
    let mut sl = superlink(true);
    assert!(!superlink_args(&sl).iter().any(|a| a.contains("auth")));
    sl.supernode_auth = true;
    assert_eq!(superlink_args(&sl).last().map(String::as_str), Some("--enable-supernode-auth"));
    let sn = SuperNodeArgs { auth_private_key: Some(NODE_KEY_PATH.into()), ..supernode() };
    assert_eq!(val(&supernode_args(&sn), "--auth-supernode-private-key"), Some("/certs/node.key"));
    assert!(!supernode_args(&supernode()).iter().any(|a| a.contains("auth")));
}

#[test]
fn superlink_insecure_has_no_certificate_flags() {
    let mut a = superlink(false);
    a.isolation = Isolation::Process;
    a.database = ":flwr-in-memory:".into();
    let v = superlink_args(&a);
    assert!(v.contains(&"--insecure".to_string()));
    assert!(!v.iter().any(|x| x.starts_with("--ssl")));
    assert_eq!(val(&v, "--isolation"), Some("process"));
    assert_eq!(val(&v, "--database"), Some(":flwr-in-memory:"));
}

#[test]
fn supernode_command_lines() {
    assert_eq!(
        supernode_args(&supernode()).join(" "),
        "/opt/flower/venv/bin/flower-supernode --superlink=10.0.0.5:8000 --root-certificates=/certs/ca.crt \
         --node-config=partition-id=0 num-partitions=2 --max-retries=5 --max-wait-time=30 --host=127.0.0.1 \
         --port=9094 --isolation=subprocess"
    );
    let a = SuperNodeArgs {
        root_certificates: None,
        node_config: None,
        max_retries: None,
        max_wait_time: Some(Duration::from_millis(2500)),
        ..supernode()
    };
    let v = supernode_args(&a);
    assert!(v.contains(&"--insecure".to_string()) && val(&v, "--root-certificates").is_none());
    assert!(val(&v, "--node-config").is_none() && val(&v, "--max-retries").is_none());
    assert_eq!(val(&v, "--max-wait-time"), Some("2.5"));
}

#[test]
fn hostile_values_stay_one_literal_argument() {
    for evil in ["partition-id=0; rm -rf /", "a=1\nb=2", "x=\"$(reboot)\" `id`", "--insecure", "-h"] {
        let mut a = supernode();
        a.node_config = Some(evil.into());
        let v = supernode_args(&a);
        assert_eq!(val(&v, "--node-config"), Some(evil), "the value is exactly one argument");
        assert!(v.contains(&format!("--node-config={evil}")), "glued to its flag: argparse cannot take it for an option");
        assert_eq!(v.len(), supernode_args(&supernode()).len());
        assert!(!v.contains(&"--insecure".to_string()), "TLS stays on");
    }
    let mut a = superlink(false);
    a.database = "/state/x.db; rm -rf /\n--insecure".into();
    let v = superlink_args(&a);
    assert_eq!(val(&v, "--database"), Some(a.database.as_str()));
    assert_eq!(v.iter().filter(|x| *x == "--insecure").count(), 1);
}

/// A one-shot plain server answering `answer` and returning the request it read.
fn serve_once(answer: &'static [u8]) -> (SocketAddr, thread::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = vec![0u8; 4096];
        let n = s.read(&mut req).unwrap();
        s.write_all(answer).unwrap();
        req.truncate(n);
        req
    });
    (addr, h)
}

#[test]
fn plain_probe_ok_status_and_refused() {
    let (addr, h) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    assert_eq!(probe(addr, None, Duration::from_secs(10)), Ok(()));
    assert_eq!(
        h.join().unwrap(),
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: flower-init\r\nAccept: */*\r\nConnection: close\r\n\r\n", addr.port())
            .into_bytes()
    );
    let (addr, _h) = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
    assert_eq!(probe(addr, None, Duration::from_secs(10)), Err(ProbeError::Status(503)));
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    assert_eq!(probe(free, None, Duration::from_secs(10)), Err(ProbeError::Refused));
    for bad in [&b"SSH-2.0-OpenSSH\r\n"[..], b"HTTP/1.1 20 OK\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n", b"\x15\x03\x03\x00\x02\x02\x50", b""] {
        let (addr, _h) = serve_once(bad);
        assert!(matches!(probe(addr, None, Duration::from_secs(10)), Err(ProbeError::Malformed(_))), "{bad:?}");
    }
}

/// A CA and a server certificate for 127.0.0.1 made with rcgen; returns (ca PEM, server config).
fn pki() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca_cert.pem(), Arc::new(config))
}

/// A TLS server answering 200 to `n` connections (handshake failures are ignored).
fn serve_tls(config: Arc<rustls::ServerConfig>, n: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for _ in 0..n {
            let (tcp, _) = l.accept().unwrap();
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 2048];
            if s.read(&mut buf).is_ok() {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                let _ = s.flush();
            }
        }
    });
    addr
}

#[test]
fn tls_probe_verifies_ca_and_name() {
    let (ca_pem, config) = pki();
    let addr = serve_tls(config, 4);
    let t = |ca: &str, name: &str| ProbeTls { ca_pem: ca.into(), server_name: name.into() };
    let timeout = Duration::from_secs(20);
    assert_eq!(probe(addr, Some(&t(&ca_pem, "127.0.0.1")), timeout), Ok(()));
    assert_eq!(Prober::new(addr, Some(&t(&ca_pem, "localhost"))).unwrap().check(timeout), Ok(()));
    let e = probe(addr, Some(&t(&ca_pem, "10.9.9.9")), timeout).unwrap_err();
    assert!(matches!(&e, ProbeError::Tls(m) if m.contains("not valid for name")), "{e}");
    let (other_ca, _) = pki();
    let e = probe(addr, Some(&t(&other_ca, "127.0.0.1")), timeout).unwrap_err();
    // Same (empty) subject as the real CA: rustls finds the issuer and rejects the signature.
    assert!(matches!(&e, ProbeError::Tls(m) if m.contains("invalid peer certificate")), "{e}");
    assert!(matches!(Prober::new(addr, Some(&t("nope", "127.0.0.1"))), Err(ProbeError::BadCa(_))));
}

#[test]
fn tls_probe_of_a_plain_http_port_is_a_tls_error() {
    let (ca_pem, _) = pki();
    let (addr, _h) = serve_once(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let e = probe(addr, Some(&ProbeTls { ca_pem, server_name: "127.0.0.1".into() }), Duration::from_secs(10)).unwrap_err();
    assert!(matches!(e, ProbeError::Tls(_)), "{e}");
}
