//! The Control client against bytes: encodings compared with what flwr 1.42's own protobuf
//! classes serialize (hex below, from `SerializeToString(deterministic=True)`), and answers
//! captured from a real `flower-superlink` 1.42.0 (`testdata/*.http`, whole HTTP responses
//! as uvicorn sent them), plus hand-made malformed ones.

use crate::http::{self, HttpError, Response};
use super::proto::{self, Reader, Scalar, StartRunRequest, Wire};
use super::*;
use proptest::prelude::*;
use std::io::{self, Cursor, Read, Write};
use std::net::TcpListener;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// A captured answer, parsed as one complete response.
fn captured(name: &str) -> Response {
    let path = format!("{}/src/flower/control/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap();
    http::read_response(&bytes[..], "POST", MAX_BODY).unwrap()
}

// ---- encodings, byte for byte as Flower's own classes write them ----

#[test]
fn start_run_request_is_what_flwr_serializes() {
    let req = StartRunRequest {
        fab_content: b"PK\x03\x04zip".to_vec(),
        fab_hash: "ab12".into(),
        override_config: vec![
            ("lr".into(), Scalar::Double(0.5)),
            ("n".into(), Scalar::Sint64(-3)),
            ("ok".into(), Scalar::Bool(true)),
            ("s".into(), Scalar::String("FedAvg".into())),
        ],
        federation: String::new(),
    };
    let want = "0a0f0a04616231321207504b03047a6970120f0a026c72120909000000000000e03f12070a016e1202400512080a026f6b12026801120d0a017312087206466564417667";
    assert_eq!(req.encode(), hex(want));
}

#[test]
fn small_requests_are_what_flwr_serializes() {
    assert_eq!(proto::list_runs_request(Some(7), None), hex("0807"));
    assert_eq!(proto::list_runs_request(None, None), Vec::<u8>::new());
    assert_eq!(proto::register_node_request(b"PEM", Some("sn")), hex("0a0350454d1a02736e"));
    assert_eq!(proto::unregister_node_request(300), hex("08ac02"));
    assert_eq!(proto::stop_run_request(1), hex("0801"));
    assert_eq!(Scalar::Uint64(u64::MAX).encode(), hex("30ffffffffffffffffff01"));
    assert_eq!(Scalar::Sint64(i64::MIN).encode(), hex("40ffffffffffffffffff01"));
    assert_eq!(Scalar::Bytes(vec![]).encode(), hex("7a00"));
}

// ---- answers of a real SuperLink ----

#[test]
fn start_run_answer_gives_the_run_id() {
    let r = captured("start-run.http");
    assert_eq!((r.status, r.media_type.as_str()), (200, "application/protobuf"));
    let s = StartRunResponse::decode(&answer(r).unwrap()).unwrap();
    assert_eq!(s.run_id, Some(4336188037420768822));
    assert_eq!(s.federation, "@none/default");
    assert_eq!(s.note, None);
}

#[test]
fn list_runs_answer_gives_the_run_its_config_and_status() {
    let runs = proto::decode_list_runs(&answer(captured("list-runs.http")).unwrap()).unwrap();
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(r.run_id, 4336188037420768822);
    assert_eq!((r.fab_id.as_str(), r.fab_version.as_str()), ("flower-init/appliance", "1.0.0"));
    assert_eq!(r.fab_hash, "f6bf2db9fdbfb302267dd9a7be73e2c314052cdf4429060e22cc1d6f8868e4cb");
    assert_eq!(r.status, "pending");
    assert_eq!(r.pending_at, "2026-12-04T10:01:44.814583+00:00");
    assert_eq!(r.federation, "@none/default");
    assert_eq!(
        r.override_config,
        vec![
            ("num-server-rounds".into(), Scalar::Sint64(2)),
            ("proximal-mu".into(), Scalar::Double(0.5)),
            ("strategy".into(), Scalar::String("FedProx".into())),
        ]
    );
    assert!(proto::decode_list_runs(&answer(captured("list-runs-empty.http")).unwrap()).unwrap().is_empty());
}

#[test]
fn register_and_list_nodes_answers() {
    let id = proto::decode_register_node(&answer(captured("register-node.http")).unwrap()).unwrap();
    assert_eq!(id, Some(6529136994709298350));
    let nodes = proto::decode_list_nodes(&answer(captured("list-nodes.http")).unwrap()).unwrap();
    assert_eq!(nodes.len(), 2);
    let n = nodes.iter().find(|n| n.node_id == 6529136994709298350).expect("the registered node is listed");
    assert_eq!(n.status, "registered");
    assert_eq!(n.name.as_deref(), Some("sn-2"));
    assert_eq!(n.owner_name, "none");
    assert_eq!(n.unregistered_at, None);
    assert!(String::from_utf8_lossy(&n.public_key).starts_with("-----BEGIN PUBLIC KEY-----\n"));
}

#[test]
fn flower_refusals_are_api_errors_with_its_code() {
    let e = answer(captured("unregister-node-404.http")).unwrap_err();
    assert_eq!(e, ControlError::Api { status: 404, code: Some(code::NODE_NOT_FOUND), detail: "Node ID not found for account.".into() });
    let e = answer(captured("start-run-bad-key.http")).unwrap_err();
    assert_eq!(e.api_code(), Some(code::INVALID_RUN_CONFIG));
    assert_eq!(e.to_string(), "Flower refused (HTTP 412, code 15): Invalid run configuration.");
    // FastAPI's own errors have no code; a non-JSON error is unexpected.
    let r = Response { status: 404, media_type: "application/json".into(), body: br#"{"detail":"Not Found"}"#.to_vec() };
    assert_eq!(answer(r).unwrap_err(), ControlError::Api { status: 404, code: None, detail: "Not Found".into() });
    let r = Response { status: 502, media_type: "text/html".into(), body: b"<html>".to_vec() };
    assert_eq!(answer(r).unwrap_err(), ControlError::Unexpected { status: 502, media_type: "text/html".into() });
    let r = Response { status: 200, media_type: "application/json".into(), body: b"{}".to_vec() };
    assert!(matches!(answer(r), Err(ControlError::Unexpected { status: 200, .. })));
}

// ---- HTTP framing (the program's one client, crate::http, reads Flower's answers) ----

#[test]
fn every_cut_of_a_captured_answer_is_refused() {
    let bytes = std::fs::read(format!("{}/src/flower/control/testdata/list-nodes.http", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for n in 0..bytes.len() {
        let cut = http::read_response(&bytes[..n], "POST", MAX_BODY).unwrap_err();
        assert!(matches!(cut, HttpError::Malformed(_)), "prefix of {n} bytes: {cut:?}");
    }
    assert!(http::read_response(&bytes[..], "POST", MAX_BODY).is_ok());
}

#[test]
fn the_media_type_is_read_without_case_or_parameters() {
    let close = b"HTTP/1.0 200 OK\r\ncontent-type: Application/Protobuf; charset=x\r\n\r\n\x08\x01";
    let r = http::read_response(&close[..], "POST", MAX_BODY).unwrap();
    assert_eq!((r.media_type.as_str(), r.body.as_slice()), ("application/protobuf", &b"\x08\x01"[..]));
    assert_eq!(answer(r).unwrap(), b"\x08\x01");
}

// ---- protobuf decoding ----

#[test]
fn malformed_protobuf_is_refused_and_unknown_fields_skipped() {
    let bad: &[&[u8]] = &[
        b"\x08",                                         // truncated varint
        b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", // 65-bit varint
        b"\x0a\x05ab",                                   // length past the end
        b"\x0b",                                         // group start
        b"\x00\x01",                                     // field 0
        b"\x09\x01\x02",                                 // truncated fixed64
    ];
    for b in bad {
        assert!(proto::decode_list_nodes(b).is_err(), "{b:?}");
    }
    // Wrong wire type for a known field.
    assert!(proto::decode_register_node(b"\x0a\x00").is_err());
    assert!(RunInfo::decode(b"\x12\x02\xff\xfe").is_err(), "a string that is not UTF-8");
    // Unknown fields of every wire type are skipped.
    let msg = hex("08ac02f8010111000000000000000022036162631d00000000");
    let mut r = Reader::new(&msg);
    assert_eq!(r.next_field().unwrap(), Some((1, Wire::Varint(300))));
    assert_eq!(proto::decode_register_node(&msg).unwrap(), Some(300));
    assert!(Scalar::decode(b"").is_err(), "a Scalar with no value");
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = proto::decode_list_nodes(&bytes);
        let _ = proto::decode_list_runs(&bytes);
        let _ = StartRunResponse::decode(&bytes);
        let _ = Scalar::decode(&bytes);
        let _ = http::read_response(&bytes[..], "POST", MAX_BODY);
    }

    #[test]
    fn scalars_round_trip(i in any::<i64>(), u in any::<u64>(), f in any::<f64>().prop_filter("not NaN", |f| !f.is_nan()), s in ".{0,40}", b in any::<bool>()) {
        for v in [Scalar::Sint64(i), Scalar::Uint64(u), Scalar::Double(f), Scalar::String(s.clone()), Scalar::Bool(b), Scalar::Bytes(s.as_bytes().to_vec())] {
            prop_assert_eq!(Scalar::decode(&v.encode()).unwrap(), v);
        }
    }
}

// ---- the client, against a local listener serving captured answers ----

/// A listener on 127.0.0.1 that answers one connection with `answer` after reading the
/// request (until its body is complete); the request it read comes back through the handle.
fn serve_once(answer: Vec<u8>) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap();
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
                if req.len() >= end + 4 + len || n == 0 {
                    break;
                }
            }
        }
        // Byte by byte: the client must reassemble.
        for b in &answer {
            if s.write_all(&[*b]).is_err() {
                break;
            }
        }
        req
    });
    (addr, h)
}

#[test]
fn client_posts_the_method_and_reads_the_answer() {
    let bytes = std::fs::read(format!("{}/src/flower/control/testdata/register-node.http", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let (addr, h) = serve_once(bytes);
    let c = Control::new(addr, None, Duration::from_secs(30)).unwrap();
    let pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    assert_eq!(c.register_node(pem, Some("sn-2")).unwrap(), 6529136994709298350);
    let req = h.join().unwrap();
    let text = String::from_utf8_lossy(&req);
    assert!(text.starts_with(&format!("POST /v1/control/register-node HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", addr.port())), "{text}");
    for h in ["\r\nContent-Type: application/protobuf\r\n", "\r\nAccept: application/protobuf\r\n", "\r\nConnection: close\r\n\r\n"] {
        assert!(text.contains(h), "{h:?} in {text}");
    }
    assert!(req.ends_with(&proto::register_node_request(pem.as_bytes(), Some("sn-2"))));
}

#[test]
fn client_reports_flower_refusals_and_cut_answers() {
    let bytes = std::fs::read(format!("{}/src/flower/control/testdata/unregister-node-404.http", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let (addr, h) = serve_once(bytes.clone());
    let c = Control::new(addr, None, Duration::from_secs(30)).unwrap();
    assert_eq!(c.unregister_node(12345).unwrap_err().api_code(), Some(code::NODE_NOT_FOUND));
    h.join().unwrap();
    let (addr, h) = serve_once(bytes[..bytes.len() - 5].to_vec());
    let c = Control::new(addr, None, Duration::from_secs(30)).unwrap();
    let e = c.unregister_node(12345).unwrap_err();
    assert!(matches!(e, ControlError::Http(HttpError::Malformed(_))), "{e:?}");
    h.join().unwrap();
}

#[test]
fn client_gives_up_at_its_timeout_and_on_refusal() {
    // A listener that accepts (the kernel's backlog) and never answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = Control::new(l.local_addr().unwrap(), None, Duration::from_millis(200)).unwrap();
    assert_eq!(c.list_nodes().unwrap_err(), ControlError::Timeout);
    let addr = l.local_addr().unwrap();
    drop(l);
    let c = Control::new(addr, None, Duration::from_secs(5)).unwrap();
    assert_eq!(c.list_nodes().unwrap_err(), ControlError::Refused);
}

#[test]
fn client_refuses_an_unusable_ca_and_a_too_large_fab() {
    let tls = ProbeTls { ca_pem: "not a certificate".into(), server_name: "127.0.0.1".into() };
    let addr: SocketAddr = "127.0.0.1:8000".parse().unwrap();
    assert!(matches!(Control::new(addr, Some(&tls), Duration::from_secs(1)), Err(ControlError::BadCa(_))));
    let c = Control::new(addr, None, Duration::from_secs(1)).unwrap();
    let req = StartRunRequest {
        fab_content: vec![0; FAB_MAX_SIZE + 1],
        fab_hash: String::new(),
        override_config: vec![],
        federation: String::new(),
    };
    assert!(matches!(c.start_run(&req), Err(ControlError::Api { status: 0, .. })));
}

#[test]
fn a_response_split_anywhere_is_read_whole() {
    /// A stream that hands out one byte per read.
    struct Trickle(Cursor<Vec<u8>>);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }
    let bytes = std::fs::read(format!("{}/src/flower/control/testdata/start-run.http", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let r = http::read_response(Trickle(Cursor::new(bytes)), "POST", MAX_BODY).unwrap();
    assert_eq!(StartRunResponse::decode(&answer(r).unwrap()).unwrap().run_id, Some(4336188037420768822));
}
