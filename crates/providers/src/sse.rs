//! A Server-Sent Events decoder over raw bytes, after the WHATWG algorithm the official SDKs
//! implement (spec §7.1).
//!
//! Hand-written rather than `sse-stream` because the decoder has to sit under our own per-chunk
//! timeouts and error classification (a cut stream is a retryable error, not an end), and because
//! the whole algorithm is ~100 lines that a property test can pin down completely: bytes in, events
//! out, no I/O, no dependency on a body type.
//!
//! Correct across arbitrary chunk boundaries: bytes are buffered until a full line is seen, so a
//! line, a JSON document or a UTF-8 character split across reads is reassembled before it is
//! decoded; a `\r` at the end of a read is remembered so that a `\n` starting the next read does
//! not count as a second line end.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any (Anthropic names every event; OpenAI Chat names none).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    pub id: Option<String>,
}

/// The stream broke the framing itself (as opposed to carrying a bad JSON payload).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("SSE line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("SSE event with more than {0} bytes of data")]
    EventTooLong(usize),
}

/// A line longer than this is not an LLM event; stop before it eats the memory. The same bound
/// holds for an event's data gathered over many lines.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` at the start of this one belongs to it.
    skip_lf: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    /// A line has been decoded: a byte order mark can only start the first.
    past_first_line: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes as they arrive; complete events are appended to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        // An empty read must not forget a pending `\r` (found by the property test).
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.append(&chunk[..pos])?;
            let line = std::mem::take(&mut self.line);
            let done = self.line_done(&line, out);
            self.line = line;
            done?;
            self.line.clear();
            let ending = chunk[pos];
            chunk = &chunk[pos + 1..];
            if ending == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
        }
        self.append(chunk)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > MAX_LINE {
            return Err(SseError::LineTooLong(MAX_LINE));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// True when bytes of an unfinished line or event are buffered (an EOF now cuts something).
    pub fn is_mid_event(&self) -> bool {
        !self.line.is_empty() || self.has_data || self.event.is_some()
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        // WHATWG: one leading byte order mark is dropped (without that, the first field's name
        // would not match: Anthropic's first `event:` would be lost).
        let line = match std::mem::replace(&mut self.past_first_line, true) {
            false => line.strip_prefix("\u{FEFF}".as_bytes()).unwrap_or(line),
            true => line,
        };
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        // Decoding whole lines only: a multi-byte character split across reads is whole by now.
        // Invalid bytes become U+FFFD, as in the WHATWG decoder; a damaged JSON payload is then
        // caught by the JSON parser.
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.data.len() + value.len() + 1 > MAX_LINE {
                    return Err(SseError::EventTooLong(MAX_LINE));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if !std::mem::take(&mut self.has_data) {
            // WHATWG: an event without data is not dispatched.
            return;
        }
        out.push(SseEvent {
            event: event.filter(|e| !e.is_empty()),
            data: std::mem::take(&mut self.data),
            id: self.id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out).unwrap();
        }
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent { event: event.map(str::to_owned), data: data.to_owned(), id: None }
    }

    #[test]
    fn anthropic_shape() {
        let s =
            b"event: message_start\ndata: {\"a\":1}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n";
        assert_eq!(
            decode_chunks(&[s]),
            vec![ev(Some("message_start"), "{\"a\":1}"), ev(Some("ping"), "{\"type\":\"ping\"}")]
        );
    }

    #[test]
    fn line_endings_comments_and_multiline_data() {
        let s = b": keep-alive\r\ndata: one\r\ndata:two\r\n\r\ndata: three\r\rdata\n\n";
        assert_eq!(
            decode_chunks(&[s]),
            vec![ev(None, "one\ntwo"), ev(None, "three"), ev(None, "")]
        );
    }

    #[test]
    fn cr_at_chunk_end_then_lf() {
        let out = decode_chunks(&[b"data: a\r", b"\n\r", b"\ndata: b\n\n"]);
        assert_eq!(out, vec![ev(None, "a"), ev(None, "b")]);
    }

    #[test]
    fn empty_read_between_cr_and_lf() {
        let out = decode_chunks(&[b"data: a\r", b"", b"\ndata: b\r\n\r\n"]);
        assert_eq!(out, vec![ev(None, "a\nb")]);
    }

    #[test]
    fn split_utf8_character() {
        let s = "data: héllo ✓\n\n".as_bytes();
        let (a, b) = s.split_at(8); // inside "é"
        assert_eq!(decode_chunks(&[a, b]), vec![ev(None, "héllo ✓")]);
    }

    #[test]
    fn a_leading_byte_order_mark_is_dropped_even_split_across_reads() {
        let bom = "\u{FEFF}event: message_start\ndata: {}\n\n".as_bytes();
        let want = vec![ev(Some("message_start"), "{}")];
        assert_eq!(decode_chunks(&[bom]), want);
        assert_eq!(decode_chunks(&[&bom[..1], &bom[1..2], &bom[2..]]), want);
        // Only at the start of the stream.
        let later = "data: a\n\n\u{FEFF}data: b\n\n".as_bytes();
        assert_eq!(decode_chunks(&[later]), vec![ev(None, "a")]);
    }

    #[test]
    fn an_event_of_endless_data_lines_is_refused() {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        let line = format!("data: {}\n", "x".repeat(1 << 20));
        let mut refused = None;
        for _ in 0..(MAX_LINE >> 20) + 2 {
            if let Err(e) = d.push(line.as_bytes(), &mut out) {
                refused = Some(e);
                break;
            }
        }
        assert_eq!(refused, Some(SseError::EventTooLong(MAX_LINE)));
        assert!(out.is_empty());
    }

    #[test]
    fn colon_in_value_is_kept() {
        assert_eq!(
            decode_chunks(&[b"data: {\"k\": \"v: w\"}\n\n"]),
            vec![ev(None, "{\"k\": \"v: w\"}")]
        );
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_id_is_kept() {
        let out = decode_chunks(&[b"event: x\n\nid: 7\nevent: y\ndata: d\n\n"]);
        assert_eq!(
            out,
            vec![SseEvent { event: Some("y".into()), data: "d".into(), id: Some("7".into()) }]
        );
    }

    #[test]
    fn mid_event_is_visible() {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        d.push(b"data: {\"partial", &mut out).unwrap();
        assert!(d.is_mid_event());
        d.push(b"\"}\n\n", &mut out).unwrap();
        assert!(!d.is_mid_event());
        assert_eq!(out.len(), 1);
    }

    /// One event as generated by the property test: name, data lines, and how it is written.
    #[derive(Debug, Clone)]
    struct GenEvent {
        name: Option<String>,
        lines: Vec<String>,
        comment: bool,
        eol: &'static str,
    }

    fn gen_event() -> impl Strategy<Value = GenEvent> {
        (
            proptest::option::of("[a-z_]{1,12}"),
            proptest::collection::vec("[ -~é✓日本\u{1F600}]{0,20}", 1..4),
            any::<bool>(),
            prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        )
            .prop_map(|(name, lines, comment, eol)| GenEvent { name, lines, comment, eol })
    }

    fn render(events: &[GenEvent]) -> Vec<u8> {
        let mut s = String::new();
        for e in events {
            let eol = e.eol;
            if e.comment {
                s.push_str(&format!(": comment{eol}"));
            }
            if let Some(n) = &e.name {
                s.push_str(&format!("event: {n}{eol}"));
            }
            for l in &e.lines {
                s.push_str(&format!("data: {l}{eol}"));
            }
            s.push_str(eol);
        }
        s.into_bytes()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn same_events_whatever_the_chunking(
            events in proptest::collection::vec(gen_event(), 1..12),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..24),
        ) {
            let bytes = render(&events);
            let expected: Vec<SseEvent> = events
                .iter()
                .map(|e| SseEvent { event: e.name.clone(), data: e.lines.join("\n"), id: None })
                .collect();
            prop_assert_eq!(&decode_chunks(&[&bytes]), &expected);

            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&bytes[last..p]);
                last = p;
            }
            chunks.push(&bytes[last..]);
            prop_assert_eq!(decode_chunks(&chunks), expected);
        }
    }
}
