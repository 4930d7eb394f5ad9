//! The chunked transfer coding (RFC 9112 §7.1), as an incremental decoder that never copies
//! data (it points at the data inside the caller's buffer) and an encoder.
//!
//! The gateway decodes every chunked body and re-encodes it in canonical form: chunk
//! extensions and trailers are dropped, so what reaches the other side has one framing only.

use std::fmt;
use std::ops::Range;

/// Longest chunk-size line accepted, extensions included (Flower sends none).
pub const MAX_CHUNK_LINE: usize = 1024;
/// Most bytes of trailer fields accepted (they are read and discarded).
pub const MAX_TRAILERS: usize = 8 * 1024;
/// The last chunk with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A violation of the chunked syntax or of the limits above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid chunked body: {}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size { value: u64, digits: u8 },
    /// Skipping a chunk extension up to CR; `line` counts the bytes of the size line.
    Ext { value: u64, line: usize },
    /// After the CR of a size line.
    SizeLf { value: u64 },
    Data { remaining: u64 },
    DataCr,
    DataLf,
    /// Reading (and discarding) trailer fields after the last chunk.
    Trailer { line: usize, total: usize },
    TrailerLf { empty: bool, total: usize },
    Done,
}

/// One call's result: how much of the input was used, and the data found (a range of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub consumed: usize,
    pub data: Option<Range<usize>>,
}

/// Incremental decoder: feed it what was read, take the data ranges, feed the rest.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: State::Size { value: 0, digits: 0 } }
    }
}

impl ChunkedDecoder {
    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Process `input` until data is found (returned as a range of `input`; `consumed` is its
    /// end), the input is used up, or the body ends (`consumed` stops after the final CRLF;
    /// later bytes belong to the next message).
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            if let State::Data { remaining } = self.state {
                let avail = (input.len() - i) as u64;
                let take = remaining.min(avail);
                // take <= avail, which is a usize.
                let end = i + take as usize;
                self.state = if take == remaining { State::DataCr } else { State::Data { remaining: remaining - take } };
                return Ok(Decoded { consumed: end, data: Some(i..end) });
            }
            let Some(&b) = input.get(i) else { break };
            i += 1;
            self.state = match self.state {
                State::Size { value, digits } => match hex_value(b) {
                    Some(d) => {
                        if digits >= 16 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        State::Size { value: (value << 4) | u64::from(d), digits: digits + 1 }
                    }
                    None if digits == 0 => return Err(ChunkError("chunk size is not hexadecimal")),
                    None if b == b'\r' => State::SizeLf { value },
                    None if b == b';' || b == b' ' || b == b'\t' => State::Ext { value, line: usize::from(digits) + 1 },
                    None => return Err(ChunkError("unexpected byte after the chunk size")),
                },
                State::Ext { value, line } => match b {
                    b'\r' => State::SizeLf { value },
                    b'\n' => return Err(ChunkError("bare LF in a chunk extension")),
                    _ if line >= MAX_CHUNK_LINE => return Err(ChunkError("chunk extension too long")),
                    _ => State::Ext { value, line: line + 1 },
                },
                State::SizeLf { value } => match (b, value) {
                    (b'\n', 0) => State::Trailer { line: 0, total: 0 },
                    (b'\n', n) => State::Data { remaining: n },
                    _ => return Err(ChunkError("chunk size line not ended by CRLF")),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(ChunkError("chunk data longer than its size")),
                },
                State::DataLf => match b {
                    b'\n' => State::Size { value: 0, digits: 0 },
                    _ => return Err(ChunkError("chunk data not followed by CRLF")),
                },
                State::Trailer { line, total } => match b {
                    b'\r' => State::TrailerLf { empty: line == 0, total },
                    b'\n' => return Err(ChunkError("bare LF in the trailer section")),
                    _ if total >= MAX_TRAILERS => return Err(ChunkError("trailer section too large")),
                    _ => State::Trailer { line: line + 1, total: total + 1 },
                },
                State::TrailerLf { empty, total } => match (b, empty) {
                    (b'\n', true) => {
                        self.state = State::Done;
                        return Ok(Decoded { consumed: i, data: None });
                    }
                    (b'\n', false) => State::Trailer { line: 0, total },
                    _ => return Err(ChunkError("trailer line not ended by CRLF")),
                },
                State::Data { .. } => self.state, // handled above
                State::Done => return Ok(Decoded { consumed: i - 1, data: None }),
            };
        }
        Ok(Decoded { consumed: i.min(input.len()), data: None })
    }
}

/// The value of one hexadecimal digit.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Append `data` as one chunk (nothing for empty data: an empty chunk would end the body).
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` fed in pieces of `step` bytes; returns (data, bytes consumed in all).
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut dec = ChunkedDecoder::default();
        let mut data = Vec::new();
        let mut pos = 0;
        let mut pending: Vec<u8> = Vec::new();
        while pos < input.len() && !dec.is_done() {
            let end = (pos + step).min(input.len());
            pending.extend_from_slice(&input[pos..end]);
            pos = end;
            let mut used = 0;
            while used < pending.len() && !dec.is_done() {
                let d = dec.decode(&pending[used..])?;
                if let Some(r) = d.data {
                    data.extend_from_slice(&pending[used + r.start..used + r.end]);
                }
                if d.consumed == 0 {
                    break;
                }
                used += d.consumed;
            }
            pending.drain(..used);
        }
        Ok((data, pos - pending.len(), dec.is_done()))
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let body = b"5\r\nhello\r\n6;name=value\r\n world\r\nA \r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 1000] {
            let (data, consumed, done) = decode_in_steps(body, step).unwrap();
            assert_eq!(data, b"hello world0123456789", "step {step}");
            assert!(done);
            assert_eq!(&body[consumed..], b"NEXT", "step {step}: the next message is left alone");
        }
        let (data, _, done) = decode_in_steps(b"0\r\n\r\n", 1).unwrap();
        assert!(data.is_empty() && done);
        let (_, _, done) = decode_in_steps(b"5\r\nhel", 2).unwrap();
        assert!(!done, "an unfinished body is not done");
    }

    #[test]
    fn refuses_malformed_framing() {
        let bad: &[(&[u8], &str)] = &[
            (b"x\r\n", "not hexadecimal"),
            (b"\r\n", "not hexadecimal"),
            (b"-5\r\nhello\r\n", "not hexadecimal"),
            (b"5\nhello\r\n", "unexpected byte"),
            (b"5\r\nhello world\r\n", "longer than its size"),
            (b"5\r\nhello\n", "longer than its size"),
            (b"5\r\nhello\rX", "not followed by CRLF"),
            (b"5;a\nb\r\n", "bare LF"),
            (b"0\r\nx: 1\n\r\n", "bare LF in the trailer"),
            (b"0\r\nx: 1\rz", "trailer line not ended"),
            (b"10000000000000000\r\n", "too large"),
            (b"0x5\r\n", "unexpected byte"),
        ];
        for (input, want) in bad {
            let e = decode_in_steps(input, 1).unwrap_err();
            assert!(e.0.contains(want), "{:?}: {e}", String::from_utf8_lossy(input));
        }
        // 16 hex digits is the most a u64 holds.
        let (_, _, done) = decode_in_steps(b"000000000000000A\r\n0123456789\r\n0\r\n\r\n", 5).unwrap();
        assert!(done);
    }

    #[test]
    fn limits_extension_and_trailer_sizes() {
        let mut long_ext = b"5;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE + 10));
        assert!(decode_in_steps(&long_ext, 64).unwrap_err().0.contains("extension too long"));
        let mut big_trailer = b"0\r\n".to_vec();
        for _ in 0..MAX_TRAILERS / 9 + 2 {
            big_trailer.extend_from_slice(b"x-a: 1234\r\n");
        }
        assert!(decode_in_steps(&big_trailer, 512).unwrap_err().0.contains("trailer section too large"));
    }

    #[test]
    fn encoder_writes_canonical_chunks() {
        let mut out = Vec::new();
        encode_chunk(&mut out, b"hello");
        encode_chunk(&mut out, b"");
        encode_chunk(&mut out, &[b'x'; 26]);
        out.extend_from_slice(LAST_CHUNK);
        assert!(out.starts_with(b"5\r\nhello\r\n1a\r\nxxxxxxxx"));
        let (data, consumed, done) = decode_in_steps(&out, 4).unwrap();
        assert_eq!(data.len(), 31);
        assert!(done && consumed == out.len());
    }

    proptest::proptest! {
        /// Any data, chunked any way and fed in any step size, decodes to itself.
        #[test]
        fn encode_then_decode_round_trips(data in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
                                          sizes in proptest::collection::vec(1usize..700, 1..20),
                                          step in 1usize..300) {
            let mut out = Vec::new();
            let (mut pos, mut k) = (0, 0);
            while pos < data.len() {
                let n = sizes[k % sizes.len()].min(data.len() - pos);
                encode_chunk(&mut out, &data[pos..pos + n]);
                pos += n;
                k += 1;
            }
            out.extend_from_slice(LAST_CHUNK);
            out.extend_from_slice(b"GET /");
            let (decoded, consumed, done) = decode_in_steps(&out, step).unwrap();
            proptest::prop_assert_eq!(decoded, data);
            proptest::prop_assert!(done);
            proptest::prop_assert_eq!(&out[consumed..], b"GET /");
        }

        /// Arbitrary bytes never panic the decoder, and it never claims more than it was given.
        #[test]
        fn arbitrary_input_is_safe(input in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let mut dec = ChunkedDecoder::default();
            let mut rest: &[u8] = &input;
            while !rest.is_empty() {
                match dec.decode(rest) {
                    Ok(d) => {
                        proptest::prop_assert!(d.consumed <= rest.len());
                        if let Some(r) = &d.data { proptest::prop_assert!(r.end <= rest.len()); }
                        if d.consumed == 0 { break; }
                        rest = &rest[d.consumed..];
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
