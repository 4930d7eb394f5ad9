//! The gateway's parsers on arbitrary bytes (issue #14 item 6): request heads, response heads
//! and chunked bodies are what the network sends, so they must end in a value or an error,
//! never a panic or a hang. Invariants checked on what parses: the head the gateway forwards
//! parses again to the same method, target and framing (so Flower reads what the gateway
//! checked); the chunked decoder gives the same data whether fed at once or byte by byte.
//! The OneGate client's answer reader (`http::read_response`, issue #17) reads the same bytes
//! as a whole answer: a value or an error, and never a body past its limit.
#![no_main]
use flower_init::gateway::chunked::ChunkedDecoder;
use flower_init::gateway::http::{self, HeadLimits};
use flower_init::gateway::Port;
use flower_init::gateway::route::route;
use libfuzzer_sys::fuzz_target;

const LIMITS: HeadLimits = HeadLimits { max_line: 8192, max_head: 65536, max_headers: 100 };

/// Decode `data` as a chunked body, feeding `step` bytes at a time: (data, done, error).
fn dechunk(data: &[u8], step: usize) -> (Vec<u8>, bool, bool) {
    let mut d = ChunkedDecoder::default();
    let mut out = Vec::new();
    let mut fed = 0;
    while fed < data.len() && !d.is_done() {
        let end = (fed + step).min(data.len());
        let mut pos = fed;
        while pos < end && !d.is_done() {
            match d.decode(&data[pos..end]) {
                Ok(r) => {
                    if let Some(range) = r.data {
                        out.extend_from_slice(&data[pos + range.start..pos + range.end]);
                    }
                    assert!(r.consumed > 0 || pos == end, "no progress");
                    pos += r.consumed;
                }
                Err(_) => return (out, false, true),
            }
        }
        fed = end;
    }
    (out, d.is_done(), false)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(end)) = http::find_head_end(data, &LIMITS) {
        if let Ok(head) = http::parse_request_head(&data[..end], &LIMITS) {
            let _ = route(Port::Fleet, &head.method, &head.target);
            let _ = route(Port::Control, &head.method, &head.target);
            if let Ok(meta) = http::request_meta(&head) {
                let out = http::forward_request_head(&head, meta.body, "10.0.0.7", "https");
                let again = http::parse_request_head(&out, &LIMITS).expect("the forwarded head parses");
                assert_eq!((&again.method, &again.target), (&head.method, &head.target));
                let m2 = http::request_meta(&again).expect("the forwarded head is valid");
                assert_eq!(m2.body, meta.body, "the framing survives forwarding");
                assert!(!again.headers.iter().any(|h| h.is("x-real-ip") || h.is("forwarded")));
                assert_eq!(again.headers.iter().filter(|h| h.is("host")).count(), head.headers.iter().filter(|h| h.is("host")).count(), "Host is kept");
            }
        }
    }
    if let Ok(resp) = http::parse_response_head(data, 100) {
        for method in ["GET", "HEAD", "POST"] {
            if let Ok(body) = http::response_body(method, &resp) {
                let _ = http::forward_response_head(&resp, body, false);
            }
        }
    }
    for method in ["GET", "HEAD"] {
        if let Ok(r) = flower_init::http::read_response(data, method, 4096) {
            assert!(r.body.len() <= 4096, "a body past the limit");
        }
    }
    let (whole, done, err) = dechunk(data, data.len().max(1));
    let (bytes, done1, err1) = dechunk(data, 1);
    if !err && !err1 {
        assert_eq!((whole, done), (bytes, done1), "chunked decoding depends on how the input is split");
    }
});
