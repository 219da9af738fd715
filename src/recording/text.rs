//! Turning a byte stream cut into arbitrary chunks into text events: UTF-8 sequences split across
//! chunks are carried over, and streams that stop looking like terminal text are detected.

/// Decodes one direction of a stream chunk by chunk, carrying an incomplete UTF-8 sequence at the
/// end of a chunk over to the next one. Invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub(crate) struct Utf8Decoder {
    /// Bytes of an incomplete (so far valid) sequence left at the end of the previous chunk.
    carry: Vec<u8>,
}

/// What decoding one chunk found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// Invalid UTF-8 (other than an incomplete sequence at the very end) was replaced.
    pub invalid: bool,
}

impl Utf8Decoder {
    /// Append the text of `chunk` to `out`; an incomplete sequence at its end is kept for the
    /// next call.
    pub fn decode(&mut self, chunk: &[u8], out: &mut String) -> Decoded {
        if self.carry.is_empty() {
            self.decode_inner(chunk, out)
        } else {
            // Rare (only after a split); one copy in the writer task is cheaper than the JSON
            // escaping that follows anyway.
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(chunk);
            self.decode_inner(&joined, out)
        }
    }

    /// Emit whatever is still carried (an incomplete sequence at the end of the stream) as U+FFFD.
    pub fn finish(&mut self, out: &mut String) -> bool {
        if self.carry.is_empty() {
            return false;
        }
        self.carry.clear();
        out.push(char::REPLACEMENT_CHARACTER);
        true
    }

    /// Forget any carried bytes (the stream is no longer recorded as text).
    pub fn reset(&mut self) {
        self.carry.clear();
    }

    fn decode_inner(&mut self, bytes: &[u8], out: &mut String) -> Decoded {
        let mut decoded = Decoded::default();
        out.reserve(bytes.len());
        let mut consumed = 0;
        for piece in bytes.utf8_chunks() {
            out.push_str(piece.valid());
            consumed += piece.valid().len();
            let bad = piece.invalid();
            if bad.is_empty() {
                continue;
            }
            consumed += bad.len();
            let at_end = consumed == bytes.len();
            // An incomplete sequence at the end is a valid prefix: `from_utf8` reports it
            // without an `error_len`.
            let incomplete = at_end
                && bad.len() < 4
                && std::str::from_utf8(bad).is_err_and(|e| e.error_len().is_none());
            if incomplete {
                self.carry.extend_from_slice(bad);
            } else {
                out.push(char::REPLACEMENT_CHARACTER);
                decoded.invalid = true;
            }
        }
        decoded
    }
}

/// Whether a chunk of output on a channel without a PTY looks like binary data rather than text:
/// it contains NUL, or more than 1 in 16 of its bytes (counted over at least 64) are control bytes
/// that terminals text does not use.
pub(crate) fn looks_binary(chunk: &[u8]) -> bool {
    let mut control = 0usize;
    for &b in chunk {
        match b {
            0 => return true,
            // Tab, newline, carriage return, escape, bell, backspace, form feed: normal text.
            b'\t' | b'\n' | b'\r' | 0x1b | 0x07 | 0x08 | 0x0c => {}
            0x01..=0x1f | 0x7f => control += 1,
            _ => {}
        }
    }
    control * 16 > chunk.len().max(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> (Vec<String>, bool) {
        let mut d = Utf8Decoder::default();
        let mut invalid = false;
        let mut events = Vec::new();
        for c in chunks {
            let mut s = String::new();
            invalid |= d.decode(c, &mut s).invalid;
            events.push(s);
        }
        let mut s = String::new();
        d.finish(&mut s);
        events.push(s);
        (events, invalid)
    }

    #[test]
    fn split_sequence_is_carried_whole_to_the_next_chunk() {
        let euro = "€".as_bytes(); // e2 82 ac
        let (events, invalid) = decode_all(&[b"a\xe2", b"\x82", b"\xacb"]);
        assert_eq!(events, ["a", "", "€b", ""]);
        assert!(!invalid);
        assert_eq!(euro, b"\xe2\x82\xac");
        let (events, _) = decode_all(&[b"\xf0\x9f", b"\x98\x80!"]);
        assert_eq!(events, ["", "😀!", ""]);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (events, invalid) = decode_all(&[b"a\xffb", b"\xe2\x28"]);
        assert_eq!(events, ["a\u{fffd}b", "\u{fffd}(", ""]);
        assert!(invalid);
        // A carried prefix followed by a non-continuation byte is invalid too.
        let (events, invalid) = decode_all(&[b"x\xe2", b"y"]);
        assert_eq!(events, ["x", "\u{fffd}y", ""]);
        assert!(invalid);
        // An incomplete sequence at the end of the stream is flushed as one U+FFFD.
        let (events, invalid) = decode_all(&[b"z\xe2\x82"]);
        assert_eq!(events, ["z", "\u{fffd}"]);
        assert!(!invalid);
    }

    #[test]
    fn binary_heuristics() {
        assert!(looks_binary(b"abc\0def"));
        assert!(!looks_binary(
            b"total 4\r\n\x1b[01;34mdir\x1b[0m\tfile\x07\x08\n"
        ));
        assert!(!looks_binary(b"\x01"));
        assert!(looks_binary(&[0x01u8; 100]));
        let mut mostly_text = vec![b'a'; 1000];
        mostly_text[..10].fill(0x02);
        assert!(!looks_binary(&mostly_text));
    }
}
