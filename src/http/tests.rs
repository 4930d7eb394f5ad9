//! The client against servers on 127.0.0.1 (and ::1) made here: exact request bytes, the three
//! body framings, interim answers, limits, early ends, timeouts, refused connections, https
//! against a rustls server with a CA made by rcgen. No test waits for a clock: the timeout test
//! holds its server on a channel until the client has given up.

use super::chunked::encode_chunk;
use super::*;
use proptest::prelude::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn get(path: &str) -> Request<'_> {
    Request { method: "GET", path, headers: &[], body: b"" }
}

fn plain(addr: SocketAddr) -> Endpoint {
    Endpoint { host: addr.ip().to_string(), port: addr.port(), tls: None, addr: None }
}

/// Read one request (head and `Content-Length` body) from `s`.
fn read_request(s: &mut impl Read) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        if let Some(end) = head::find(&buf, b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if buf.len() >= end + 4 + len {
                return buf;
            }
        }
        match s.read(&mut b) {
            Ok(0) | Err(_) => return buf,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
}

/// A server on 127.0.0.1 answering one connection with `reply`, then closing; the request it
/// read comes back through the handle.
fn serve(reply: Vec<u8>) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let req = read_request(&mut s);
        let _ = s.write_all(&reply);
        req
    });
    (addr, h)
}

/// `reply` sent once, through [`send`] with a body limit.
fn answer(reply: &[u8], max_body: usize) -> Result<Response, HttpError> {
    let (addr, h) = serve(reply.to_vec());
    let r = send(&plain(addr), &get("/x"), LONG, max_body);
    h.join().unwrap();
    r
}

/// A reader that hands out one byte per read: every parser state meets a buffer boundary.
struct OneByte<'a>(&'a [u8]);

impl Read for OneByte<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), out.first_mut()) {
            (Some((b, rest)), Some(o)) => {
                *o = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn requests_are_written_exactly() {
    let headers = [("X-ONEGATE-VMID", "7".to_string()), ("Content-Type", "application/x-www-form-urlencoded".into())];
    let put = Request { method: "PUT", path: "/vm", headers: &headers, body: b"data=READY%3DYES&type=1" };
    assert_eq!(
        String::from_utf8(request_bytes("10.0.0.1:5030", &put).unwrap()).unwrap(),
        "PUT /vm HTTP/1.1\r\nHost: 10.0.0.1:5030\r\nX-ONEGATE-VMID: 7\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 23\r\nConnection: close\r\n\r\n\
         data=READY%3DYES&type=1"
    );
    assert_eq!(
        request_bytes("h", &get("/service?extended=true")).unwrap(),
        b"GET /service?extended=true HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    );
    let empty_put = Request { method: "PUT", path: "/vm", headers: &[], body: b"" };
    assert!(String::from_utf8(request_bytes("h", &empty_put).unwrap()).unwrap().contains("Content-Length: 0\r\n"));
    let ep = |host: &str, port, tls| Endpoint { host: host.into(), port, tls, addr: None };
    let cfg = mozilla_roots().unwrap();
    assert_eq!(ep("fd00::1", 5030, None).host_header(), "[fd00::1]:5030");
    assert_eq!(ep("onegate", 80, None).host_header(), "onegate");
    assert_eq!(ep("onegate", 443, Some(cfg.clone())).host_header(), "onegate");
    assert_eq!(ep("onegate", 80, Some(cfg)).host_header(), "onegate:80");
}

#[test]
fn a_line_break_in_a_header_is_refused_without_quoting_it() {
    let headers = [("X-ONEGATE-TOKEN", "s3cret\r\nX-Evil: 1".to_string())];
    let req = Request { method: "GET", path: "/vm", headers: &headers, body: b"" };
    let e = request_bytes("h", &req).unwrap_err();
    assert_eq!(e.to_string(), "cannot send the request: header \"X-ONEGATE-TOKEN\" holds a line break");
    assert!(!format!("{e:?}").contains("s3cret"));
    assert!(request_bytes("h", &get("/vm HTTP/1.1\r\nX: y")).is_err());
}

#[test]
fn a_content_length_body_is_read_and_the_server_sees_one_request() {
    let (addr, h) =
        serve(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello".to_vec());
    let headers = [("X-ONEGATE-VMID", "3".to_string())];
    let req = Request { method: "PUT", path: "/vm", headers: &headers, body: b"a=b" };
    let r = send(&plain(addr), &req, LONG, 100).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    let seen = String::from_utf8(h.join().unwrap()).unwrap();
    assert_eq!(
        seen,
        format!(
            "PUT /vm HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-ONEGATE-VMID: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\na=b",
            addr.port()
        )
    );
}

#[test]
fn chunked_bodies_are_decoded_with_extensions_and_trailers() {
    let reply: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
    assert_eq!(answer(reply, 100).unwrap().body, b"hello world");
    // The same bytes one at a time: every state of the parser meets a read boundary.
    assert_eq!(read_response(OneByte(reply), "GET", 100).unwrap().body, b"hello world");
    // Exactly at the limit is accepted.
    assert_eq!(read_response(OneByte(reply), "GET", 11).unwrap().body, b"hello world");
}

#[test]
fn a_body_without_length_ends_with_the_connection() {
    let r = answer(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", 100).unwrap();
    assert_eq!(r.body, b"until the end");
}

#[test]
fn interim_answers_are_skipped_and_bodiless_statuses_have_no_body() {
    let r = answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", 100).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (201, &b"ok"[..]));
    let r = answer(b"HTTP/1.1 204 No Content\r\n\r\n", 100).unwrap();
    assert_eq!((r.status, r.body.len()), (204, 0));
}

#[test]
fn redirects_are_returned_not_followed() {
    let r = answer(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n", 100)
        .unwrap();
    assert_eq!(r.status, 302);
}

#[test]
fn oversize_answers_are_refused_in_every_framing() {
    let too_long = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world";
    assert_eq!(answer(too_long, 10), Err(HttpError::TooLarge(10)));
    let huge = b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n";
    assert_eq!(read_response(&huge[..], "GET", 1 << 20), Err(HttpError::TooLarge(1 << 20)));
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        encode_chunk(&mut chunked, b"abcd");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(read_response(&chunked[..], "GET", 16).unwrap().body.len(), 16);
    assert_eq!(answer(&chunked, 15), Err(HttpError::TooLarge(15)));
    assert_eq!(read_response(OneByte(&chunked), "GET", 15), Err(HttpError::TooLarge(15)));
    let until_close = b"HTTP/1.1 200 OK\r\n\r\n0123456789abcdef";
    assert_eq!(answer(until_close, 15), Err(HttpError::TooLarge(15)));
    assert_eq!(read_response(&until_close[..], "GET", 16).unwrap().body.len(), 16);
    let mut big_head = b"HTTP/1.1 200 OK\r\n".to_vec();
    big_head.extend(std::iter::repeat_n(b"X-Pad: 0123456789abcdef\r\n".as_slice(), 2000).flatten());
    let e = read_response(&big_head[..], "GET", 100).unwrap_err();
    assert!(
        matches!(e, HttpError::Malformed(ref m) if m.contains("head larger") || m.contains("header fields")),
        "{e}"
    );
}

#[test]
fn answers_that_end_early_or_are_not_http_are_errors() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "the server closed the connection without answering"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "the connection closed inside the answer's head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "the body ended after 3 of 10 bytes"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            "the connection closed inside a chunked body",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "invalid chunked body: chunk size is not hexadecimal",
        ),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", "bare LF in the head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "more than one Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "a transfer coding other than chunked"),
    ];
    for (reply, why) in cases {
        let e = read_response(*reply, "GET", 100).unwrap_err();
        assert_eq!(e, HttpError::Malformed((*why).into()), "{:?}", String::from_utf8_lossy(reply));
        assert_eq!(answer(reply, 100).unwrap_err(), e, "over a socket: {:?}", String::from_utf8_lossy(reply));
    }
}

#[test]
fn a_server_that_never_answers_times_out() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let req = read_request(&mut s);
        // Hold the connection open, silent, until the client has given up.
        let _ = done_rx.recv();
        req
    });
    let e = send(&plain(addr), &get("/vm"), Duration::from_millis(300), 100).unwrap_err();
    done_tx.send(()).unwrap();
    assert_eq!(e, HttpError::Timeout("reading the answer"));
    assert_eq!(e.to_string(), "timeout while reading the answer");
    assert!(h.join().unwrap().starts_with(b"GET /vm HTTP/1.1\r\n"));
}

#[test]
fn a_closed_port_is_refused_and_a_bad_name_does_not_resolve() {
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    assert_eq!(send(&plain(free), &get("/"), LONG, 100), Err(HttpError::Refused));
    let ep = Endpoint { host: "no-such-host.invalid".into(), port: 80, tls: None, addr: None };
    let e = send(&ep, &get("/"), LONG, 100).unwrap_err();
    assert!(matches!(e, HttpError::Resolve(ref m) if m.starts_with("no-such-host.invalid: ")), "{e:?}");
}

#[test]
fn ipv6_literals_connect() {
    let Ok(l) = TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let req = read_request(&mut s);
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv6").unwrap();
        req
    });
    let r = send(&plain(addr), &get("/vm"), LONG, 100).unwrap();
    assert_eq!(r.body, b"v6");
    let seen = String::from_utf8(h.join().unwrap()).unwrap();
    assert!(seen.contains(&format!("\r\nHost: [::1]:{}\r\n", addr.port())), "{seen}");
}

/// A CA and a server certificate for 127.0.0.1 and localhost; (client config trusting the
/// CA, server config).
fn pki() -> (Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>) {
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
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(client), Arc::new(server))
}

/// A TLS server answering `n` connections with `reply` (a failed handshake ends that one);
/// the requests it read come back through the handle.
fn serve_tls(config: Arc<rustls::ServerConfig>, n: usize, reply: &'static [u8]) -> (u16, JoinHandle<Vec<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (tcp, _) = l.accept().unwrap();
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let req = read_request(&mut s);
            if !req.is_empty() {
                let _ = s.write_all(reply);
                s.conn.send_close_notify();
                let _ = s.flush();
            }
            seen.push(req);
        }
        seen
    });
    (port, h)
}

#[test]
fn https_against_a_server_of_a_test_ca() {
    let (client, server) = pki();
    let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"a\":1}\r\n0\r\n\r\n";
    let (port, h) = serve_tls(server, 3, reply);
    // By IP address (the certificate's IP SAN) and by name (resolved, SNI, DNS SAN).
    for host in ["127.0.0.1", "localhost"] {
        let ep = Endpoint { host: host.into(), port, tls: Some(client.clone()), addr: None };
        let r = send(&ep, &get("/vm"), LONG, 100).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &br#"{"a":1}"#[..]), "{host}");
    }
    // Mozilla's roots do not know the test CA: refused during the handshake.
    let ep = Endpoint { host: "127.0.0.1".into(), port, tls: Some(mozilla_roots().unwrap()), addr: None };
    let e = send(&ep, &get("/vm"), LONG, 100).unwrap_err();
    assert!(matches!(e, HttpError::Tls(ref m) if m.contains("UnknownIssuer")), "{e:?}");
    let seen = h.join().unwrap();
    assert!(seen[0].starts_with(b"GET /vm HTTP/1.1\r\nHost: 127.0.0.1:"));
    assert!(seen[1].starts_with(b"GET /vm HTTP/1.1\r\nHost: localhost:"));
    assert!(seen[2].is_empty());
}

#[test]
fn https_to_a_plain_http_port_is_a_tls_error() {
    let (client, _) = pki();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        // A plain HTTP server answers the ClientHello it cannot read with a 400.
        s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    });
    let ep = Endpoint { host: "127.0.0.1".into(), port, tls: Some(client), addr: None };
    let e = send(&ep, &get("/vm"), LONG, 100).unwrap_err();
    h.join().unwrap();
    assert!(matches!(e, HttpError::Tls(_)), "{e:?}");
}

#[test]
fn the_mozilla_roots_are_there() {
    let cfg = mozilla_roots().unwrap();
    assert!(Arc::ptr_eq(&cfg, &mozilla_roots().unwrap()), "built once");
    assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
}

proptest! {
    #[test]
    fn any_bytes_give_an_answer_or_an_error(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = read_response(&data[..], "GET", 256);
        let mut framed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        framed.extend_from_slice(&data);
        let _ = read_response(OneByte(&framed), "GET", 256);
    }

    #[test]
    fn chunked_bodies_decode_to_what_was_encoded(
        body in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(1usize..300, 1..20),
    ) {
        let mut framed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let mut rest = body.as_slice();
        for c in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (a, b) = rest.split_at((*c).min(rest.len()));
            encode_chunk(&mut framed, a);
            rest = b;
        }
        framed.extend_from_slice(b"0\r\n\r\n");
        prop_assert_eq!(&read_response(&framed[..], "GET", 2000).unwrap().body, &body);
        prop_assert_eq!(&read_response(OneByte(&framed), "GET", 2000).unwrap().body, &body);
    }
}
