//! The container's output, line by line: bytes read from its stdout/stderr pipe are split into
//! lines, cleaned (Flower colours its log lines unconditionally), prefixed with the role for
//! the console, and the last [`OutputRing::capacity`] lines are kept for `/status`.

use std::collections::VecDeque;

/// Longest line kept (bytes); the rest of a longer line is cut (a runaway line must not grow
/// memory without bound).
pub const MAX_LINE: usize = 4096;
/// Lines kept by default.
pub const DEFAULT_LINES: usize = 200;

/// Splits a byte stream into prefixed lines and remembers the last ones.
#[derive(Debug, Clone)]
pub struct OutputRing {
    prefix: String,
    capacity: usize,
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl OutputRing {
    /// A ring of `capacity` lines whose lines read `"{prefix}: {line}"`, e.g. `superlink`.
    pub fn new(prefix: &str, capacity: usize) -> OutputRing {
        OutputRing { prefix: prefix.to_string(), capacity: capacity.max(1), lines: VecDeque::new(), partial: Vec::new() }
    }

    /// How many lines are kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Feed bytes read from the pipe; returns the lines completed by them (for the console).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let raw = std::mem::take(&mut self.partial);
                done.push(self.keep(&raw));
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
        done
    }

    /// At end of stream: the unterminated last line, if any.
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let raw = std::mem::take(&mut self.partial);
        Some(self.keep(&raw))
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    fn keep(&mut self, raw: &[u8]) -> String {
        let line = format!("{}: {}", self.prefix, clean(raw));
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line.clone());
        line
    }
}

/// Text of one raw line: invalid UTF-8 replaced, ANSI escape sequences (CSI `ESC [ … final`)
/// and other control characters removed, trailing `\r` and blanks dropped.
pub fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, up to the final byte 0x40..=0x7e.
                for f in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&f) {
                        break;
                    }
                }
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out.truncate(out.trim_end().len());
    out
}
