//! Streaming a message body from one side to the other, re-framed: never more than one
//! buffer (32 KiB) in memory per request, and blocking writes give backpressure for free (a
//! slow reader stops the gateway reading from the fast writer).

use super::chunked::{encode_chunk, ChunkError, ChunkedDecoder, LAST_CHUNK};
use super::http::BodyLen;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// Bytes read per call, and the most a body copy holds in memory (a TLS record carries at
/// most 16 KiB, so larger reads would rarely fill).
pub const BUFFER: usize = 32 * 1024;

/// Why a body copy stopped. `Read` is the sending side, `Write` the receiving side: the
/// caller decides whom to blame (client or Flower) from that.
#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
    /// The sender's chunked framing is invalid.
    Framing(ChunkError),
    /// The body is larger than the limit.
    TooLarge,
    /// The body moved slower than the minimum rate (after the grace period).
    TooSlow,
}

/// A floor under the transfer rate: after `grace`, on average at least `min_rate` bytes a
/// second must have moved, so a client trickling a body (or reading a response) one byte a
/// minute cannot hold a worker for hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub min_rate: u64,
    pub grace: Duration,
}

impl Pace {
    /// `TooSlow` once the grace is over and fewer than `min_rate` bytes a second have moved.
    fn check(&self, start: Instant, moved: u64) -> Result<(), CopyError> {
        let over = start.elapsed().saturating_sub(self.grace);
        if over.is_zero() || moved >= (over.as_secs_f64() * self.min_rate as f64) as u64 {
            Ok(())
        } else {
            Err(CopyError::TooSlow)
        }
    }
}

/// How the body leaves: as it came (Content-Length), or chunked (chunked in, or a
/// close-delimited response out to a keep-alive client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFraming {
    Raw,
    Chunked,
}

/// Copy one body framed as `framing` from `pre` (bytes already read past the head) then
/// `src`, to `dst`, re-framed as `out`. Returns the body length and the bytes read past its
/// end (the start of a pipelined next message). `limit` caps the decoded length (`u64::MAX`
/// for none); `Content-Length` is checked before the call, so a chunked body is what can hit
/// it here. `pace`, if given, is checked after every piece.
pub fn copy_body(
    src: &mut impl Read,
    pre: Vec<u8>,
    framing: BodyLen,
    dst: &mut impl Write,
    out: OutFraming,
    limit: u64,
    pace: Option<Pace>,
) -> Result<(u64, Vec<u8>), CopyError> {
    let end = pre.len();
    let mut stage = Stage { buf: pre, pos: 0, end };
    let mut encoded = Vec::new();
    let mut total: u64 = 0;
    let start = Instant::now();
    let paced = |total: u64| pace.map_or(Ok(()), |p| p.check(start, total));
    match framing {
        BodyLen::Empty => {}
        BodyLen::Length(n) => {
            let mut remaining = n;
            while remaining > 0 {
                if stage.is_empty() {
                    stage.refill(src, remaining.min(BUFFER as u64) as usize, false)?;
                }
                let data = stage.take(remaining);
                remaining -= data.len() as u64;
                total += data.len() as u64;
                send(dst, data, out, &mut encoded)?;
                paced(total)?;
            }
        }
        BodyLen::Chunked => {
            let mut dec = ChunkedDecoder::default();
            while !dec.is_done() {
                if stage.is_empty() {
                    stage.refill(src, BUFFER, false)?;
                }
                let d = dec.decode(stage.rest()).map_err(CopyError::Framing)?;
                if let Some(r) = d.data {
                    let data = stage.rest().get(r).unwrap_or_default();
                    total = total.saturating_add(data.len() as u64);
                    if total > limit {
                        return Err(CopyError::TooLarge);
                    }
                    send(dst, data, out, &mut encoded)?;
                }
                stage.advance(d.consumed);
                paced(total)?;
            }
        }
        BodyLen::UntilClose => loop {
            if stage.is_empty() && !stage.refill(src, BUFFER, true)? {
                break;
            }
            let data = stage.take(u64::MAX);
            total += data.len() as u64;
            send(dst, data, out, &mut encoded)?;
            paced(total)?;
        },
    }
    if out == OutFraming::Chunked && framing != BodyLen::Empty {
        dst.write_all(LAST_CHUNK).map_err(CopyError::Write)?;
    }
    dst.flush().map_err(CopyError::Write)?;
    Ok((total, stage.into_rest()))
}

/// Write one piece of body, as is or as a chunk (one write, so TLS makes one record run).
fn send(dst: &mut impl Write, data: &[u8], out: OutFraming, encoded: &mut Vec<u8>) -> Result<(), CopyError> {
    if data.is_empty() {
        return Ok(());
    }
    match out {
        OutFraming::Raw => dst.write_all(data).map_err(CopyError::Write),
        OutFraming::Chunked => {
            encoded.clear();
            encode_chunk(encoded, data);
            dst.write_all(encoded).map_err(CopyError::Write)
        }
    }
}

/// Bytes read but not yet used: `buf[pos..end]`. `buf` is allocated once and reused
/// without zeroing it again for every read.
struct Stage {
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl Stage {
    /// Nothing left to use.
    fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// The bytes not used yet.
    fn rest(&self) -> &[u8] {
        self.buf.get(self.pos..self.end).unwrap_or_default()
    }

    /// Mark `n` more bytes used.
    fn advance(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.end);
    }

    /// Up to `max` unused bytes, marked used.
    fn take(&mut self, max: u64) -> &[u8] {
        let n = (self.end - self.pos.min(self.end)).min(usize::try_from(max).unwrap_or(usize::MAX));
        let start = self.pos;
        self.pos += n;
        self.buf.get(start..start + n).unwrap_or_default()
    }

    /// Replace the (used-up) contents with one read of at most `want` bytes. End of stream
    /// is an error unless `eof_ok` (then `Ok(false)`). A TLS peer that closes without
    /// close_notify counts as end of stream only when `eof_ok`.
    fn refill(&mut self, src: &mut impl Read, want: usize, eof_ok: bool) -> Result<bool, CopyError> {
        let want = want.clamp(1, BUFFER);
        if self.buf.len() < want {
            self.buf.resize(BUFFER, 0);
        }
        self.pos = 0;
        self.end = 0;
        loop {
            match src.read(self.buf.get_mut(..want).unwrap_or_default()) {
                Ok(0) => {
                    return if eof_ok {
                        Ok(false)
                    } else {
                        Err(CopyError::Read(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-body")))
                    };
                }
                Ok(n) => {
                    self.end = n.min(want);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if eof_ok && e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(CopyError::Read(e)),
            }
        }
    }

    /// What was read past the body (the start of the next message), without copying when possible.
    fn into_rest(mut self) -> Vec<u8> {
        if self.pos == 0 && self.end == self.buf.len() {
            return self.buf;
        }
        let rest = self.rest().to_vec();
        self.buf.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// (what arrived, body length, bytes read past the body, bytes left unread).
    type Copied = (Vec<u8>, u64, Vec<u8>, Vec<u8>);

    fn copy(pre: &[u8], rest: &[u8], step: usize, framing: BodyLen, out: OutFraming, limit: u64) -> Result<Copied, CopyError> {
        let mut src = Trickle { data: rest, step };
        let mut dst = Vec::new();
        let (n, left) = copy_body(&mut src, pre.to_vec(), framing, &mut dst, out, limit, None)?;
        Ok((dst, n, left, src.data.to_vec()))
    }

    #[test]
    fn content_length_body_stops_at_its_length() {
        let (dst, n, left, unread) = copy(b"hel", b"lo world, GET / next", 2, BodyLen::Length(11), OutFraming::Raw, u64::MAX).unwrap();
        assert_eq!(dst, b"hello world");
        assert_eq!(n, 11);
        // Reads never go past the body: the rest stays in the socket.
        assert!(left.is_empty());
        assert_eq!(unread, b", GET / next");
        // A head read that already holds more than the body keeps the excess.
        let (dst, _, left, _) = copy(b"abcGET /", b"", 1, BodyLen::Length(3), OutFraming::Raw, u64::MAX).unwrap();
        assert_eq!((dst.as_slice(), left.as_slice()), (&b"abc"[..], &b"GET /"[..]));
    }

    #[test]
    fn chunked_body_is_re_encoded_and_the_next_request_kept() {
        let body = b"3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nTrailer: x\r\n\r\nPOST /next";
        for step in [1, 5, 100] {
            let (dst, n, left, unread) = copy(&body[..4], &body[4..], step, BodyLen::Chunked, OutFraming::Chunked, u64::MAX).unwrap();
            assert_eq!(n, 7);
            let text = String::from_utf8_lossy(&dst).into_owned();
            assert!(!text.contains("ext") && !text.contains("Trailer"), "canonical chunks: {text:?}");
            assert!(dst.ends_with(b"\r\n0\r\n\r\n"));
            let mut dec = ChunkedDecoder::default();
            let (mut data, mut rest) = (Vec::new(), &dst[..]);
            while !dec.is_done() {
                let d = dec.decode(rest).unwrap();
                if let Some(r) = d.data {
                    data.extend_from_slice(&rest[r]);
                }
                rest = &rest[d.consumed..];
            }
            assert_eq!(data, b"abcdefg");
            let mut next = left;
            next.extend_from_slice(&unread);
            assert_eq!(next, b"POST /next", "step {step}");
        }
    }

    #[test]
    fn chunked_limit_and_framing_errors() {
        let body = b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n";
        assert!(matches!(copy(b"", body, 3, BodyLen::Chunked, OutFraming::Chunked, 9), Err(CopyError::TooLarge)));
        assert!(copy(b"", body, 3, BodyLen::Chunked, OutFraming::Chunked, 10).is_ok());
        assert!(matches!(copy(b"", b"5\r\nhelloXX", 3, BodyLen::Chunked, OutFraming::Raw, 100), Err(CopyError::Framing(_))));
        assert!(matches!(copy(b"", b"5\r\nhel", 3, BodyLen::Chunked, OutFraming::Raw, 100), Err(CopyError::Read(_))));
        assert!(matches!(copy(b"", b"short", 3, BodyLen::Length(10), OutFraming::Raw, 100), Err(CopyError::Read(_))));
    }

    #[test]
    fn close_delimited_response_is_sent_chunked() {
        let (dst, n, _, _) = copy(b"ab", b"cdef", 3, BodyLen::UntilClose, OutFraming::Chunked, u64::MAX).unwrap();
        assert_eq!(n, 6);
        assert_eq!(dst, b"2\r\nab\r\n3\r\ncde\r\n1\r\nf\r\n0\r\n\r\n");
        let (dst, n, _, _) = copy(b"", b"", 3, BodyLen::Empty, OutFraming::Chunked, u64::MAX).unwrap();
        assert!(dst.is_empty() && n == 0);
    }

    /// A reader that sleeps before every read.
    struct Slow<'a> {
        data: &'a [u8],
        nap: Duration,
    }

    impl Read for Slow<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.nap);
            let n = 1.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_trickled_body_is_cut_after_the_grace_period() {
        let data = [b'x'; 100];
        let pace = Pace { min_rate: 1000, grace: Duration::from_millis(50) };
        let mut src = Slow { data: &data, nap: Duration::from_millis(20) };
        let r = copy_body(&mut src, Vec::new(), BodyLen::Length(100), &mut Vec::new(), OutFraming::Raw, u64::MAX, Some(pace));
        assert!(matches!(r, Err(CopyError::TooSlow)), "{r:?}");
        let mut src = Slow { data: &data, nap: Duration::ZERO };
        let pace = Pace { min_rate: 1000, grace: Duration::from_secs(60) };
        assert!(copy_body(&mut src, Vec::new(), BodyLen::Length(100), &mut Vec::new(), OutFraming::Raw, u64::MAX, Some(pace)).is_ok());
    }

    #[test]
    fn a_large_body_streams_through_one_buffer() {
        let data: Vec<u8> = (0..3 * BUFFER + 17).map(|i| (i % 251) as u8).collect();
        let (dst, n, _, _) = copy(b"", &data, BUFFER, BodyLen::Length(data.len() as u64), OutFraming::Raw, u64::MAX).unwrap();
        assert_eq!(n as usize, data.len());
        assert!(dst == data);
    }
}
