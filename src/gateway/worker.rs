//! One forwarded request, on its own thread, with blocking I/O and socket timeouts:
//! request head and body to Flower, response head and body back, each re-framed. Then the
//! client connection goes back to the reactor (keep-alive) or is closed.
//!
//! Every failure is a value that ends here: counted, logged once (rate-limited), answered
//! with 4xx/5xx when no response has started, and the connection closed. Nothing a client or
//! Flower sends can make this code panic, and one broken exchange never touches another.

use super::body::{self, copy_body, CopyError, OutFraming, Pace};
use super::conn::ClientConn;
use super::http::{self, BodyLen, RequestHead, RequestMeta, ResponseHead};
use super::route::Api;
use super::stats::{Reject, UpstreamError};
use super::upstream::{DialError, Upstream};
use super::Shared;
use std::io::{self, Read, Write};
use std::time::Duration;

/// A request whose head the reactor accepted, handed to a worker.
pub struct Job {
    pub conn: ClientConn,
    /// Bytes read after the head (start of the body, or more).
    pub pre: Vec<u8>,
    pub head: RequestHead,
    pub meta: RequestMeta,
    pub api: Api,
}

/// A connection for the reactor to keep reading, with what was read past the last body.
pub type KeepAlive = (ClientConn, Vec<u8>);

/// Largest response head accepted from Flower.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_RESPONSE_HEADERS: usize = 128;

/// Forward one request; `Some` to keep the client connection.
pub fn exchange(job: Job, sh: &Shared) -> Option<KeepAlive> {
    let Job { mut conn, pre, head, meta, api } = job;
    let began = std::time::Instant::now();
    let limits = &sh.limits;
    if let Err(e) = conn.sock.set_nonblocking(false).and_then(|_| conn.sock.set_read_timeout(Some(limits.body_timeout))).and_then(|_| conn.sock.set_write_timeout(Some(limits.body_timeout))) {
        sh.log.debug(format!("gateway: configure connection from {}: {e}", conn.peer));
        return None;
    }
    conn.sock.set_buffered(true);
    let up_timeout = if api == Api::Control { limits.control_upstream_timeout } else { limits.upstream_timeout };
    let forwarded = http::forward_request_head(&head, meta.body, &conn.peer_ip().to_string(), if conn.tls.is_some() { "https" } else { "http" });

    // 1. A connection to Flower, and the request head on it. A pooled connection that turns
    //    out to be closed is replaced once: nothing of the body has been read yet.
    let (mut up, reused) = match open_and_send_head(sh, &forwarded, up_timeout) {
        Ok(r) => r,
        Err(e) => {
            upstream_failed(sh, &e, &conn, &head);
            sh.stats.answered(api, 502, began.elapsed());
            respond_and_close(&mut conn, 502, "bad gateway: Flower is not reachable\n");
            return None;
        }
    };
    sh.register_upstream(conn.id, &up.sock);

    // 2. 100-continue: the client waits for this before sending its body (curl does; httpx
    //    does not ask).
    if meta.expect_continue && meta.body != BodyLen::Empty && conn.write_all(http::CONTINUE).and_then(|_| conn.flush()).is_err() {
        sh.stats.client_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        up.close();
        return None;
    }

    // 3. The body, streamed.
    let out = if meta.body == BodyLen::Chunked { OutFraming::Chunked } else { OutFraming::Raw };
    let pace = Pace { min_rate: limits.min_body_rate, grace: limits.body_timeout };
    let replay = (reused && pre.len() <= body::BUFFER).then(|| pre.clone());
    let leftover = match copy_body(&mut conn, pre, meta.body, &mut up, out, limits.max_body, Some(pace)) {
        Ok((_, left)) => left,
        Err(e) => {
            up.close();
            match e {
                CopyError::Write(e) => {
                    let e = DialError { kind: kind_of(&e), detail: format!("send request body: {e}"), unanswered: false };
                    upstream_failed(sh, &e, &conn, &head);
                    sh.stats.answered(api, 502, began.elapsed());
                    respond_and_close(&mut conn, 502, "bad gateway: Flower closed the connection\n");
                }
                CopyError::TooLarge => {
                    sh.stats.reject(Reject::BodyTooLarge, true);
                    sh.log.warn(format!("gateway: 413 {} {} from {}: body over {} bytes", head.method, head.target, conn.peer, limits.max_body));
                    respond_and_close(&mut conn, 413, "content too large\n");
                }
                CopyError::Framing(e) => {
                    sh.stats.reject(Reject::BadRequest, true);
                    sh.log.debug(format!("gateway: 400 {} {} from {}: {e}", head.method, head.target, conn.peer));
                    respond_and_close(&mut conn, 400, "bad request: invalid chunked body\n");
                }
                CopyError::TooSlow => {
                    sh.stats.reject(Reject::BodyTimeout, true);
                    sh.log.warn(format!("gateway: 408 {} {} from {}: body slower than {} bytes/s", head.method, head.target, conn.peer, limits.min_body_rate));
                    respond_and_close(&mut conn, 408, "request timeout: the body is too slow\n");
                }
                CopyError::Read(e) if is_timeout(&e) => {
                    sh.stats.reject(Reject::BodyTimeout, true);
                    sh.log.debug(format!("gateway: 408 {} {} from {}: body stalled", head.method, head.target, conn.peer));
                    respond_and_close(&mut conn, 408, "request timeout: the body stalled\n");
                }
                CopyError::Read(e) => {
                    sh.stats.client_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    sh.log.debug(format!("gateway: {} {} from {}: client broke off the body: {e}", head.method, head.target, conn.peer));
                }
            }
            return None;
        }
    };

    // 4. The response head (interim 1xx responses are dropped).
    let (resp, resp_pre) = match read_response_head(&mut up) {
        Ok(r) => r,
        Err(e) if e.unanswered && replay.is_some() => {
            up.close();
            match resend(sh, &forwarded, replay.unwrap_or_default(), meta.body, out, up_timeout) {
                Some((fresh, resp, pre)) => {
                    up = fresh;
                    sh.register_upstream(conn.id, &up.sock);
                    (resp, pre)
                }
                None => {
                    upstream_failed(sh, &e, &conn, &head);
                    sh.stats.answered(api, 502, began.elapsed());
                    respond_and_close(&mut conn, 502, "bad gateway: Flower's answer was unusable\n");
                    return None;
                }
            }
        }
        Err(e) => {
            upstream_failed(sh, &e, &conn, &head);
            up.close();
            let (code, text) = if e.kind == UpstreamError::Timeout { (504, "gateway timeout: Flower did not answer\n") } else { (502, "bad gateway: Flower's answer was unusable\n") };
            sh.stats.answered(api, code, began.elapsed());
            respond_and_close(&mut conn, code, text);
            return None;
        }
    };
    let framing = match http::response_body(&head.method, &resp) {
        Ok(f) => f,
        Err(e) => {
            let e = DialError { kind: UpstreamError::Protocol, detail: format!("response framing: {e}"), unanswered: false };
            upstream_failed(sh, &e, &conn, &head);
            up.close();
            sh.stats.answered(api, 502, began.elapsed());
            respond_and_close(&mut conn, 502, "bad gateway: Flower's answer was unusable\n");
            return None;
        }
    };

    // 5. The response, streamed back.
    let close_client = meta.close || sh.stopping();
    let out = if matches!(framing, BodyLen::Chunked | BodyLen::UntilClose) { OutFraming::Chunked } else { OutFraming::Raw };
    if let Err(e) = conn.write_all(&http::forward_response_head(&resp, framing, close_client)) {
        sh.stats.client_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        sh.log.debug(format!("gateway: {} {} from {}: client went away before the response: {e}", head.method, head.target, conn.peer));
        up.close();
        return None;
    }
    // Control responses may be long streams with quiet spells (`flwr log --stream`).
    let resp_pace = (api != Api::Control).then_some(pace);
    let up_left = match copy_body(&mut up, resp_pre, framing, &mut conn, out, u64::MAX, resp_pace) {
        Ok((_, left)) => left,
        Err(CopyError::Write(e)) => {
            sh.stats.client_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sh.log.debug(format!("gateway: {} {} from {}: client went away mid-response: {e}", head.method, head.target, conn.peer));
            up.close();
            return None;
        }
        Err(CopyError::TooSlow) => {
            sh.stats.client_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sh.log.debug(format!("gateway: {} {} from {}: response moved slower than {} bytes/s; cut", head.method, head.target, conn.peer, limits.min_body_rate));
            up.close();
            return None;
        }
        Err(e) => {
            let detail = match e {
                CopyError::Read(e) => format!("response body: {e}"),
                CopyError::Framing(e) => format!("response body: {e}"),
                _ => "response body".to_string(),
            };
            upstream_failed(sh, &DialError { kind: UpstreamError::Protocol, detail, unanswered: false }, &conn, &head);
            up.close();
            return None; // the client sees a cut body (no final chunk / short length)
        }
    };

    sh.stats.answered(api, resp.status, began.elapsed());
    // 6. Keep what can be kept.
    let up_reusable = framing != BodyLen::UntilClose && !http::wants_close(&resp.headers) && up_left.is_empty() && !sh.stopping();
    sh.unregister_upstream(conn.id);
    if up_reusable {
        sh.pool.put(up);
    } else {
        up.close();
    }
    if close_client {
        conn.finish_blocking();
        return None;
    }
    conn.sock.set_buffered(false);
    if conn.sock.set_nonblocking(true).is_err() {
        return None;
    }
    Some((conn, leftover))
}

/// Take a pooled connection (or dial), send the head; on a pooled connection that fails,
/// dial once more. Also says whether the connection came from the pool.
fn open_and_send_head(sh: &Shared, head: &[u8], timeout: Duration) -> Result<(Upstream, bool), DialError> {
    if let Some(mut up) = sh.pool.take() {
        if up.set_timeout(timeout).is_ok() && up.write_all(head).and_then(|_| up.flush()).is_ok() {
            return Ok((up, true));
        }
        sh.stats.upstream_retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        up.close();
    }
    Ok((dial_and_send_head(sh, head, timeout)?, false))
}

/// A fresh connection to Flower with the request head sent.
fn dial_and_send_head(sh: &Shared, head: &[u8], timeout: Duration) -> Result<Upstream, DialError> {
    let mut up = sh.target.dial(timeout)?;
    up.write_all(head)
        .and_then(|_| up.flush())
        .map_err(|e| DialError { kind: kind_of(&e), detail: format!("send request head: {e}"), unanswered: false })?;
    Ok(up)
}

/// A pooled connection that Flower closed just as the request went out (before any byte of
/// an answer): send the request again on a fresh connection, if its whole body is still at
/// hand (`replay`: the bytes read with the head; small Fleet requests such as the poll
/// arrive whole with their head). Flower never saw the first copy, as browsers assume too.
fn resend(sh: &Shared, head: &[u8], replay: Vec<u8>, body: BodyLen, out: OutFraming, timeout: Duration) -> Option<(Upstream, ResponseHead, Vec<u8>)> {
    let mut up = dial_and_send_head(sh, head, timeout).ok()?;
    match copy_body(&mut io::empty(), replay, body, &mut up, out, u64::MAX, None) {
        Ok(_) => {}
        Err(_) => {
            up.close();
            return None;
        }
    }
    sh.stats.upstream_retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match read_response_head(&mut up) {
        Ok((resp, pre)) => Some((up, resp, pre)),
        Err(_) => {
            up.close();
            None
        }
    }
}

/// Read Flower's response head (skipping 1xx); returns it and the body bytes read with it.
/// An error says whether nothing at all had arrived (`unanswered`: the connection was closed
/// or reset under the request).
fn read_response_head(up: &mut Upstream) -> Result<(ResponseHead, Vec<u8>), DialError> {
    let limits = http::HeadLimits { max_line: MAX_RESPONSE_HEAD, max_head: MAX_RESPONSE_HEAD, max_headers: MAX_RESPONSE_HEADERS };
    let protocol = |detail: String| DialError { kind: UpstreamError::Protocol, detail, unanswered: false };
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut scanner = http::HeadScanner::default();
    let mut tmp = [0u8; 8192];
    let mut received = false;
    loop {
        let end = scanner.scan(&buf, &limits).map_err(|e| protocol(format!("response head: {e}")))?;
        if let Some(end) = end {
            let head = http::parse_response_head(buf.get(..end).unwrap_or_default(), MAX_RESPONSE_HEADERS)
                .map_err(|e| protocol(format!("response head: {e}")))?;
            let rest = buf.get(end..).unwrap_or_default().to_vec();
            if head.status == 101 {
                return Err(protocol("unexpected 101 Switching Protocols".into()));
            }
            if head.status < 200 {
                // Interim response: drop it and read the final one.
                buf = rest;
                scanner = http::HeadScanner::default();
                continue;
            }
            return Ok((head, rest));
        }
        match up.read(&mut tmp) {
            Ok(0) => {
                return Err(DialError {
                    kind: UpstreamError::Protocol,
                    detail: "Flower closed the connection before answering".into(),
                    unanswered: !received,
                });
            }
            Ok(n) => {
                received = true;
                buf.extend_from_slice(tmp.get(..n).unwrap_or_default());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let reset = matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe);
                return Err(DialError { kind: kind_of(&e), detail: format!("read response: {e}"), unanswered: reset && !received });
            }
        }
    }
}

/// A socket timeout (SO_RCVTIMEO/SO_SNDTIMEO report WouldBlock).
fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// The counter an upstream I/O error belongs to.
fn kind_of(e: &io::Error) -> UpstreamError {
    if is_timeout(e) {
        UpstreamError::Timeout
    } else if e.kind() == io::ErrorKind::InvalidData {
        UpstreamError::Tls
    } else {
        UpstreamError::Protocol
    }
}

/// Count and log (rate-limited) a failure on Flower's side of an exchange.
fn upstream_failed(sh: &Shared, e: &DialError, conn: &ClientConn, head: &RequestHead) {
    sh.stats.upstream_error(e.kind);
    sh.log.warn(format!("gateway: {} {} from {}: upstream {}: {}", head.method, head.target, conn.peer, e.kind.key(), e.detail));
}

/// Best effort: a final error response, then close.
fn respond_and_close(conn: &mut ClientConn, status: u16, text: &str) {
    let _ = conn.write_all(&http::simple_response(status, text));
    conn.finish_blocking();
}
