//! A TCP socket whose reads can go through a buffer. rustls asks for at most 4 KiB per
//! `read_tls`, which would cost one system call per 4 KiB of a model upload; while a request
//! is forwarded the socket reads 32 KiB at a time instead. Idle connections hold no buffer:
//! it is allocated when a worker turns buffering on and freed when it is off and drained, so
//! 4,000 idle connections do not cost 128 MB.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::Deref;

/// Bytes read from the socket at once while buffering.
pub const READ_AHEAD: usize = 32 * 1024;

pub struct BufSock {
    sock: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    buffered: bool,
}

impl BufSock {
    /// A socket with read-ahead off (and no buffer allocated).
    pub fn new(sock: TcpStream) -> BufSock {
        BufSock { sock, buf: Vec::new(), start: 0, end: 0, buffered: false }
    }

    /// Turn read-ahead on (a worker forwarding a body) or off (back to the reactor, or into
    /// the pool). Bytes already read ahead are still returned first either way.
    pub fn set_buffered(&mut self, on: bool) {
        self.buffered = on;
        self.release_if_drained();
    }

    /// Whether read-ahead bytes are waiting (the socket may be silent while they are).
    pub fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// Free the buffer when read-ahead is off and nothing is left in it.
    fn release_if_drained(&mut self) {
        if !self.buffered && self.start >= self.end && !self.buf.is_empty() {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }
}

impl Deref for BufSock {
    type Target = TcpStream;

    /// The socket itself, for options, shutdown and the descriptor. Reads through it would
    /// skip the buffer; callers read through `BufSock`'s own `Read`.
    fn deref(&self) -> &TcpStream {
        &self.sock
    }
}

impl Read for BufSock {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start >= self.end {
            if !self.buffered || out.len() >= READ_AHEAD {
                return self.sock.read(out);
            }
            if self.buf.len() < READ_AHEAD {
                self.buf.resize(READ_AHEAD, 0);
            }
            let n = self.sock.read(&mut self.buf)?;
            self.start = 0;
            self.end = n.min(self.buf.len());
            if n == 0 {
                return Ok(0);
            }
        }
        let avail = self.buf.get(self.start..self.end).unwrap_or_default();
        let n = avail.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.start += n;
        self.release_if_drained();
        Ok(n)
    }
}

impl Write for BufSock {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.sock.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn buffers_only_while_asked_and_never_loses_bytes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut rx = BufSock::new(l.accept().unwrap().0);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        tx.write_all(&data).unwrap();
        drop(tx);
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        rx.set_buffered(true);
        // Small reads are served from one large socket read.
        let n = rx.read(&mut small).unwrap();
        got.extend_from_slice(&small[..n]);
        assert!(rx.has_buffered(), "read ahead");
        // Turning buffering off keeps what was read ahead.
        rx.set_buffered(false);
        while rx.has_buffered() {
            let n = rx.read(&mut small).unwrap();
            got.extend_from_slice(&small[..n]);
        }
        assert!(rx.buf.is_empty(), "the buffer is freed once drained");
        loop {
            let n = rx.read(&mut small).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert!(got == data);
    }
}
