//! A client connection (TCP, optionally TLS) that moves between the reactor, which drives it
//! non-blocking while it waits for a request, and a worker thread, which drives it blocking
//! (with socket timeouts) while a request is forwarded.
//!
//! The open-connections gauge is decremented in `Drop`, so it stays right whichever thread
//! ends the connection and however it ends.

use super::bufsock::BufSock;
use super::route::Port;
use super::stats::Stats;
use rustls::ServerConnection;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

pub struct ClientConn {
    pub id: u64,
    pub sock: BufSock,
    /// `None` when the gateway runs without TLS (FL_TLS_ENABLED=NO).
    pub tls: Option<Box<ServerConnection>>,
    pub peer: SocketAddr,
    pub port: Port,
    stats: Arc<Stats>,
}

/// What a non-blocking read achieved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Plaintext bytes appended to the buffer.
    pub bytes: usize,
    /// The peer finished sending (FIN, or TLS close_notify).
    pub eof: bool,
    /// The connection is unusable: a socket error or a TLS protocol error (text for debug logs).
    pub error: Option<String>,
}

impl ClientConn {
    /// Count a freshly accepted connection (the gauge goes back down in `Drop`).
    pub fn new(id: u64, sock: TcpStream, tls: Option<Box<ServerConnection>>, peer: SocketAddr, port: Port, stats: Arc<Stats>) -> ClientConn {
        stats.connections_open.fetch_add(1, Relaxed);
        stats.connections_total.fetch_add(1, Relaxed);
        ClientConn { id, sock: BufSock::new(sock), tls, peer, port, stats }
    }

    /// The client address, IPv4-mapped IPv6 shown as IPv4 (per-address limits, logs, X-Forwarded-For).
    pub fn peer_ip(&self) -> IpAddr {
        crate::vocab::canonical(self.peer.ip())
    }

    /// Whether the TLS handshake is still running (always false without TLS).
    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Non-blocking: read what is available into `buf`, stopping once `buf` holds `max`
    /// bytes. Plaintext that TLS already decrypted is taken first, so a connection handed
    /// back by a worker with a pipelined request in rustls's buffer is not stalled.
    pub fn read_available(&mut self, buf: &mut Vec<u8>, max: usize) -> ReadOutcome {
        let mut out = ReadOutcome::default();
        let mut tmp = [0u8; 8192];
        match self.tls.as_deref_mut() {
            None => fill(&mut self.sock, &mut tmp, buf, max, &mut out, |e, out| match e.kind() {
                io::ErrorKind::Interrupted => true,
                _ => {
                    out.error = Some(e.to_string());
                    false
                }
            }),
            Some(tls) => loop {
                // 1. Plaintext already decrypted.
                fill(&mut tls.reader(), &mut tmp, buf, max, &mut out, |e, out| {
                    // UnexpectedEof: TCP closed without close_notify.
                    out.eof = true;
                    if e.kind() != io::ErrorKind::UnexpectedEof {
                        out.error = Some(e.to_string());
                    }
                    false
                });
                if out.eof || out.error.is_some() || buf.len() >= max {
                    break;
                }
                // 2. More TLS records from the socket.
                match tls.read_tls(&mut self.sock) {
                    Ok(0) => {
                        out.eof = true;
                        break;
                    }
                    Ok(_) => {
                        if let Err(e) = tls.process_new_packets() {
                            // Queue the alert for the peer; the caller flushes it best-effort.
                            out.error = Some(format!("TLS: {e}"));
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        out.error = Some(e.to_string());
                        break;
                    }
                }
            },
        }
        self.stats.add_in(out.bytes);
        out
    }

    /// Non-blocking: queue `data` for the client. For TLS it is encrypted into rustls's
    /// buffer; for plain TCP it is appended to `pending`. [`Self::flush_available`] sends.
    pub fn queue(&mut self, data: &[u8], pending: &mut Vec<u8>) {
        self.stats.add_out(data.len());
        match self.tls.as_deref_mut() {
            Some(tls) => {
                // rustls buffers without limit unless one is set; our answers are small.
                let _ = tls.writer().write_all(data);
            }
            None => pending.extend_from_slice(data),
        }
    }

    /// Non-blocking: send what is queued (TLS records, or `pending`). `Ok(true)` when all is
    /// sent, `Ok(false)` when the socket is full (wait for writability).
    pub fn flush_available(&mut self, pending: &mut Vec<u8>) -> io::Result<bool> {
        match self.tls.as_deref_mut() {
            Some(tls) => {
                while tls.wants_write() {
                    match tls.write_tls(&mut self.sock) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(true)
            }
            None => {
                while !pending.is_empty() {
                    match self.sock.write(pending) {
                        Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed")),
                        Ok(n) => {
                            pending.drain(..n.min(pending.len()));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(true)
            }
        }
    }

    /// Queue a TLS close_notify (nothing for plain TCP): the client learns the response was
    /// complete, not cut.
    pub fn queue_close_notify(&mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
        }
    }

    /// Blocking: close cleanly after a final response: close_notify, flush, FIN.
    pub fn finish_blocking(&mut self) {
        self.queue_close_notify();
        let _ = self.flush();
        let _ = self.sock.shutdown(Shutdown::Write);
    }
}

/// Blocking reads for the worker (socket in blocking mode, with a read timeout).
impl Read for ClientConn {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = match self.tls.as_deref_mut() {
            Some(tls) => rustls::Stream::new(tls, &mut self.sock).read(out)?,
            None => self.sock.read(out)?,
        };
        self.stats.add_in(n);
        Ok(n)
    }
}

/// Blocking writes for the worker (rustls::Stream sends each write's records at once).
impl Write for ClientConn {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = match self.tls.as_deref_mut() {
            Some(tls) => rustls::Stream::new(tls, &mut self.sock).write(data)?,
            None => self.sock.write(data)?,
        };
        self.stats.add_out(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            Some(tls) => rustls::Stream::new(tls, &mut self.sock).flush(),
            None => self.sock.flush(),
        }
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.stats.connections_open.fetch_sub(1, Relaxed);
    }
}

/// Read from `r` into `buf` until it holds `max` bytes, `r` would block, or it ends (EOF, or an
/// error that `on_error` records and does not retry: it returns true to read again).
fn fill(
    r: &mut impl Read,
    tmp: &mut [u8],
    buf: &mut Vec<u8>,
    max: usize,
    out: &mut ReadOutcome,
    on_error: impl Fn(io::Error, &mut ReadOutcome) -> bool,
) {
    while buf.len() < max {
        let want = (max - buf.len()).min(tmp.len());
        match r.read(&mut tmp[..want]) {
            Ok(0) => {
                out.eof = true;
                break;
            }
            Ok(n) => {
                buf.extend_from_slice(tmp.get(..n).unwrap_or_default());
                out.bytes += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                if !on_error(e, out) {
                    break;
                }
            }
        }
    }
}
