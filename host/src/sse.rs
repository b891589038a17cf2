//! Server-sent events framing: the one module that splits a byte stream into SSE events.
//!
//! [`SseParser`] is incremental: feed it whatever the network delivers, take out complete events. Each event keeps
//! its original bytes (`raw`, including the terminating blank line) so forwarding it is a zero-copy pass-through;
//! the fields are parsed lazily, only when the usage tap asks. Lines may end in `\n`, `\r\n` or `\r`, as the
//! specification allows.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

/// One complete event as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub raw: Bytes,
}

/// The fields of an event that matter to the gateway.
#[derive(Debug, PartialEq, Eq)]
pub struct Fields<'a> {
    /// The `event:` field, if any.
    pub event: Option<&'a str>,
    /// All `data:` lines joined with `\n` (borrowed when there is one line, the common case).
    pub data: Cow<'a, str>,
}

impl SseEvent {
    pub fn fields(&self) -> Fields<'_> {
        let text = std::str::from_utf8(&self.raw).unwrap_or("");
        let mut event = None;
        let mut data: Option<Cow<str>> = None;
        for line in text.split(['\n', '\r']) {
            let (name, value) = match line.find(':') {
                Some(0) => continue, // comment
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(' ').unwrap_or(v))
                }
                None => (line, ""),
            };
            match name {
                "event" => event = Some(value),
                "data" => {
                    data = Some(match data {
                        None => Cow::Borrowed(value),
                        Some(prev) => Cow::Owned(format!("{prev}\n{value}")),
                    })
                }
                _ => {}
            }
        }
        Fields { event, data: data.unwrap_or(Cow::Borrowed("")) }
    }
}

/// Incremental SSE splitter.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: BytesMut,
    /// Next byte to scan.
    pos: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// The previous byte was a `\r` line end (so a following `\n` belongs to it).
    after_cr: bool,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Every event of complete SSE text (framed events, e.g. what a client was sent), as (`event:` name, `data:`).
    pub fn events_of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<(Option<String>, String)> {
        let mut parser = SseParser::new();
        for p in parts {
            parser.push(p);
        }
        let mut out = Vec::new();
        while let Some(ev) = parser.next_event().or_else(|| parser.finish()) {
            let f = ev.fields();
            out.push((f.event.map(str::to_string), f.data.to_string()));
        }
        out
    }

    /// Appends bytes from the network.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Splits off the next complete event, if the buffer holds one.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        while let Some(&b) = self.buf.get(self.pos) {
            let i = self.pos;
            self.pos += 1;
            if b == b'\n' && self.after_cr {
                // Second half of a `\r\n` line end.
                self.after_cr = false;
                self.line_start = self.pos;
                continue;
            }
            self.after_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                let empty_line = i == self.line_start;
                self.line_start = self.pos;
                if empty_line {
                    // A `\r` ending the blank line may still be followed by `\n`: include it if it has arrived.
                    if b == b'\r' && self.buf.get(self.pos) == Some(&b'\n') {
                        self.pos += 1;
                        self.after_cr = false;
                    }
                    let raw = self.buf.split_to(self.pos).freeze();
                    self.pos = 0;
                    self.line_start = 0;
                    return Some(SseEvent { raw });
                }
            }
        }
        None
    }

    /// At the end of the stream: the last event, if the stream ended at an event boundary without the final blank
    /// line (its last line is complete), as a complete event. An event cut inside a line is incomplete and is never
    /// dispatched (the WHATWG rule); it is dropped here. Whitespace-only rest (a lone line end) is nothing.
    pub fn finish(&mut self) -> Option<SseEvent> {
        self.pos = 0;
        self.line_start = 0;
        self.after_cr = false;
        let rest = self.buf.split().freeze();
        let complete_line = rest.last().is_some_and(|b| *b == b'\n' || *b == b'\r');
        if !complete_line || rest.iter().all(|b| b.is_ascii_whitespace()) {
            return None;
        }
        let mut raw = BytesMut::from(&rest[..]);
        raw.extend_from_slice(b"\n");
        Some(SseEvent { raw: raw.freeze() })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\ndata: {\"a\":1}\n\n: comment\n\ndata: one\ndata: two\n\nevent: x\r\ndata: crlf\r\n\r\ndata: [DONE]\n\n";

    fn collect(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c);
            while let Some(e) = p.next_event() {
                out.push(e);
            }
        }
        assert_eq!(p.finish(), None);
        out
    }

    #[test]
    fn splits_events_and_reads_fields() {
        let evs = collect(&[STREAM.as_bytes()]);
        assert_eq!(evs.len(), 5);
        assert_eq!(evs[0].fields(), Fields { event: Some("message_start"), data: "{\"a\":1}".into() });
        assert_eq!(evs[1].fields().data, "");
        assert_eq!(evs[2].fields().data, "one\ntwo");
        assert_eq!(evs[3].fields(), Fields { event: Some("x"), data: "crlf".into() });
        assert_eq!(evs[4].fields().data, "[DONE]");
        let joined: Vec<u8> = evs.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(joined, STREAM.as_bytes(), "raw bytes are passed through unchanged");
    }

    /// What a reader sees: each event's fields, and every byte passed through in order. (A `\r\n` blank line
    /// split between its `\r` and `\n` ends the event at the `\r`, without waiting; the `\n` then leads the next
    /// event's raw bytes, which changes no field.)
    fn observed(evs: &[SseEvent]) -> (Vec<(Option<String>, String)>, Vec<u8>) {
        let fields = evs
            .iter()
            .map(|e| {
                let f = e.fields();
                (f.event.map(str::to_string), f.data.into_owned())
            })
            .collect();
        (fields, evs.iter().flat_map(|e| e.raw.to_vec()).collect())
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let whole = observed(&collect(&[STREAM.as_bytes()]));
        let b = STREAM.as_bytes();
        for i in 0..=b.len() {
            assert_eq!(observed(&collect(&[&b[..i], &b[i..]])), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = b.chunks(1).collect();
        assert_eq!(observed(&collect(&bytes)), whole, "byte by byte");
    }

    #[test]
    fn an_event_cut_mid_line_is_never_dispatched() {
        let mut p = SseParser::new();
        p.push(b"data: a\n\ndata: {\"partial\":");
        assert!(p.next_event().is_some());
        assert!(p.next_event().is_none());
        assert_eq!(p.finish(), None, "cut inside a line: dropped");
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn a_stream_ending_at_an_event_boundary_is_complete_without_the_final_blank_line() {
        for tail in ["\n", "\r\n", "\r"] {
            let mut p = SseParser::new();
            p.push(format!("event: message_stop\ndata: {{\"type\":\"message_stop\"}}{tail}").as_bytes());
            assert!(p.next_event().is_none());
            let ev = p.finish().expect("complete last event");
            let f = ev.fields();
            assert_eq!((f.event, f.data.as_ref()), (Some("message_stop"), "{\"type\":\"message_stop\"}"));
        }
        let mut p = SseParser::new();
        p.push(b"data: a\n\n\n");
        while p.next_event().is_some() {}
        assert_eq!(p.finish(), None, "nothing is left after complete events");
    }
}
