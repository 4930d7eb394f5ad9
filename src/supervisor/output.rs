//! Splitting a child's output into lines: partial lines wait for their end, over-long lines are
//! cut, bytes that are not UTF-8 are replaced rather than dropped. Pure, so it is tested here.

/// Longest line delivered; a longer one is cut into pieces of this size (in bytes, on a
/// character boundary where the bytes are UTF-8), so one runaway line cannot grow memory.
pub const MAX_LINE: usize = 4096;

/// Bytes received but not yet ended by a newline.
#[derive(Debug, Default)]
pub struct LineBuf {
    pending: Vec<u8>,
}

impl LineBuf {
    /// Feed bytes; returns every line completed by them (without the newline or a trailing `\r`).
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&bytes[..nl]);
            bytes = &bytes[nl + 1..];
            self.cut_long(&mut lines);
            let mut line = std::mem::take(&mut self.pending);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(to_text(&line));
        }
        self.pending.extend_from_slice(bytes);
        self.cut_long(&mut lines);
        lines
    }

    /// The unterminated rest, as a last line, at end of stream (None when there is none).
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        Some(to_text(&std::mem::take(&mut self.pending)))
    }

    /// Deliver full `MAX_LINE` pieces of a line that has not ended yet.
    fn cut_long(&mut self, lines: &mut Vec<String>) {
        while self.pending.len() > MAX_LINE {
            let cut = char_boundary(&self.pending, MAX_LINE);
            let rest = self.pending.split_off(cut);
            lines.push(to_text(&std::mem::replace(&mut self.pending, rest)));
        }
    }
}

/// The largest cut ≤ `at` that does not split a UTF-8 sequence (at most 3 bytes back).
fn char_boundary(bytes: &[u8], at: usize) -> usize {
    (at.saturating_sub(3)..=at)
        .rev()
        .find(|&i| i == 0 || i >= bytes.len() || (bytes[i] & 0xC0) != 0x80)
        .filter(|&i| i > 0)
        .unwrap_or(at)
}

fn to_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Append `line` to a bounded log, dropping the oldest lines beyond `cap` bytes (the end of a
/// helper's output, where its error is, is what matters).
pub fn push_bounded(buf: &mut String, line: &str, cap: usize) {
    buf.push_str(line);
    buf.push('\n');
    if buf.len() > cap {
        let excess = buf.len() - cap;
        let cut = buf[excess..].find('\n').map(|i| excess + i + 1).unwrap_or(buf.len());
        buf.drain(..cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_lines_wait_for_their_end() {
        let mut b = LineBuf::default();
        assert!(b.push(b"hel").is_empty());
        assert_eq!(b.push(b"lo\nwor"), ["hello"]);
        assert_eq!(b.push(b"ld\r\n\nx"), ["world", ""]);
        assert_eq!(b.finish().as_deref(), Some("x"));
        assert_eq!(b.finish(), None);
    }

    #[test]
    fn long_lines_are_cut() {
        let mut b = LineBuf::default();
        let long = vec![b'a'; MAX_LINE * 2 + 10];
        let lines = b.push(&long);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == MAX_LINE));
        assert_eq!(b.push(b"\n"), ["a".repeat(10)]);
    }

    #[test]
    fn cuts_do_not_split_characters() {
        let mut b = LineBuf::default();
        // 'é' is 2 bytes: place one across the MAX_LINE boundary.
        let mut s = "a".repeat(MAX_LINE - 1);
        s.push('é');
        s.push_str("tail\n");
        let lines = b.push(s.as_bytes());
        assert_eq!(lines[0], "a".repeat(MAX_LINE - 1));
        assert_eq!(lines[1], "étail");
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        let mut b = LineBuf::default();
        assert_eq!(b.push(b"ok \xff\xfe end\n"), ["ok \u{fffd}\u{fffd} end"]);
    }

    #[test]
    fn bounded_log_keeps_the_tail() {
        let mut s = String::new();
        for i in 0..100 {
            push_bounded(&mut s, &format!("line {i}"), 40);
        }
        assert!(s.len() <= 40);
        assert!(s.ends_with("line 99\n"));
        assert!(s.starts_with("line "));
    }
}
