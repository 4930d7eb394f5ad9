//! Connections to Flower on loopback: dialled with a timeout, TLS verified against the
//! cluster CA for the upstream address (127.0.0.1 is a SAN of every SuperLink certificate
//! flower-init makes or accepts), and kept in a small pool so that a SuperNode's poll every
//! 3 s does not cost Flower a TLS handshake each time.
//!
//! uvicorn closes an idle keep-alive connection after 5 s. A pooled connection is reused only
//! while younger than [`super::Limits::upstream_idle`] (2 s by default) and only if a
//! non-blocking peek shows it still open and silent; a request that finds its pooled
//! connection dead before any of its body was read is re-sent once on a fresh one.

use super::bufsock::BufSock;
use super::stats::UpstreamError;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How Flower is reached.
#[derive(Clone)]
pub struct UpstreamTarget {
    pub addr: SocketAddr,
    /// TLS client configuration trusting the cluster CA, and the name to verify.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    pub connect_timeout: Duration,
}

/// One connection to Flower.
pub struct Upstream {
    pub sock: BufSock,
    tls: Option<Box<ClientConnection>>,
    idle_since: Instant,
}

/// An upstream failure with the detail for the log.
#[derive(Debug)]
pub struct DialError {
    pub kind: UpstreamError,
    pub detail: String,
    /// The connection closed or reset before any byte of an answer (see `worker::resend`).
    pub unanswered: bool,
}

impl UpstreamTarget {
    /// Connect, set timeouts, and complete the TLS handshake (certificate checked).
    pub fn dial(&self, io_timeout: Duration) -> Result<Upstream, DialError> {
        let sock = TcpStream::connect_timeout(&self.addr, self.connect_timeout).map_err(|e| DialError {
            kind: if e.kind() == io::ErrorKind::TimedOut { UpstreamError::Timeout } else { UpstreamError::Connect },
            detail: format!("connect to {}: {e}", self.addr),
            unanswered: false,
        })?;
        let setup = |s: &TcpStream| -> io::Result<()> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(io_timeout))?;
            s.set_write_timeout(Some(io_timeout))
        };
        setup(&sock).map_err(|e| DialError { kind: UpstreamError::Connect, detail: format!("configure socket: {e}"), unanswered: false })?;
        let mut sock = BufSock::new(sock);
        sock.set_buffered(true);
        let mut up = Upstream { sock, tls: None, idle_since: Instant::now() };
        if let Some((config, name)) = &self.tls {
            let mut conn = ClientConnection::new(config.clone(), name.clone())
                .map_err(|e| DialError { kind: UpstreamError::Tls, detail: format!("TLS client: {e}"), unanswered: false })?;
            while conn.is_handshaking() {
                conn.complete_io(&mut up.sock).map_err(|e| DialError {
                    kind: match e.kind() {
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => UpstreamError::Timeout,
                        io::ErrorKind::InvalidData => UpstreamError::Tls,
                        _ => UpstreamError::Protocol,
                    },
                    detail: format!("TLS handshake with {}: {e}", self.addr),
                    unanswered: false,
                })?;
            }
            up.tls = Some(Box::new(conn));
        }
        Ok(up)
    }
}

impl Upstream {
    /// Set the read/write timeout for the next exchange (Fleet and Control differ).
    pub fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.sock.set_read_timeout(Some(t))?;
        self.sock.set_write_timeout(Some(t))
    }

    /// Whether the connection still looks usable: nothing to read (a close_notify, a FIN or
    /// stray bytes all mean Flower is done with it) and no error.
    fn looks_alive(&self) -> bool {
        if self.sock.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let alive = !self.sock.has_buffered() && matches!(self.sock.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        self.sock.set_nonblocking(false).is_ok() && alive
    }

    /// Say goodbye (TLS close_notify) and close; errors do not matter any more.
    pub fn close(mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut self.sock);
        }
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

impl Read for Upstream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            Some(tls) => rustls::Stream::new(tls, &mut self.sock).read(out),
            None => self.sock.read(out),
        }
    }
}

impl Write for Upstream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            Some(tls) => rustls::Stream::new(tls, &mut self.sock).write(data),
            None => self.sock.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            Some(tls) => rustls::Stream::new(tls, &mut self.sock).flush(),
            None => self.sock.flush(),
        }
    }
}

/// Idle upstream connections, newest last. The lock is held only to push or pop one.
pub struct Pool {
    idle: Mutex<Vec<Upstream>>,
    max_idle: usize,
    max_age: Duration,
}

impl Pool {
    /// An empty pool keeping at most `max_idle` connections, each for at most `max_age`.
    pub fn new(max_idle: usize, max_age: Duration) -> Pool {
        Pool { idle: Mutex::new(Vec::new()), max_idle, max_age }
    }

    /// A pooled connection that still looks alive, or `None` (dial a new one).
    pub fn take(&self) -> Option<Upstream> {
        loop {
            let up = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if up.idle_since.elapsed() < self.max_age && up.looks_alive() {
                let mut up = up;
                up.sock.set_buffered(true);
                return Some(up);
            }
            up.close();
        }
    }

    /// Return a connection whose last response was complete and framed.
    pub fn put(&self, mut up: Upstream) {
        up.idle_since = Instant::now();
        up.sock.set_buffered(false);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(up);
        } else {
            drop(idle);
            up.close();
        }
    }

    /// Close every idle connection (shutdown).
    pub fn clear(&self) {
        let all: Vec<Upstream> = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for up in all {
            up.close();
        }
    }
}
