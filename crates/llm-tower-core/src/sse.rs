//! An incremental server-sent-events parser that never buffers a stream.
//!
//! Bytes are fed as they arrive, split anywhere; only the unfinished last line
//! and the current event's data are kept. Follows the WHATWG event-stream rules:
//! `\n`, `\r\n` and lone `\r` end lines, `:` starts a comment, several `data:`
//! lines join with `\n`, one space after the colon is dropped, an unfinished
//! event at end of input is discarded.
//!
//! Every reader is bounded: [`SseParser`] keeps at most
//! [`DEFAULT_MAX_EVENT_BYTES`] of one event (then stops and says
//! [`overflowed`](SseParser::overflowed)), and [`EventSizeLimit`] lets a body
//! end a stream whose event grows past the limit with a typed
//! [`EventTooLarge`](crate::EventTooLarge), without parsing it.

/// One dispatched event.
///
/// ```
/// use llm_tower_core::sse::SseParser;
/// let mut p = SseParser::default();
/// let mut seen = Vec::new();
/// p.feed(b"event: ping\ndata: {}\n\n", |e| seen.push((e.event.map(str::to_owned), e.data.to_vec())));
/// assert_eq!(seen, vec![(Some("ping".to_owned()), b"{}".to_vec())]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field, if the event had one.
    pub event: Option<&'a str>,
    /// The joined `data:` lines.
    pub data: &'a [u8],
}

/// Incremental event-stream parser. See the [module docs](self).
///
/// ```
/// use llm_tower_core::sse::SseParser;
/// let mut p = SseParser::default();
/// let mut n = 0;
/// for chunk in [&b"da"[..], b"ta: a\r", b"\n\r\ndata: b\n", b"\n"] {
///     p.feed(chunk, |_| n += 1);
/// }
/// assert_eq!(n, 2);
/// ```
#[derive(Debug)]
pub struct SseParser {
    /// Unfinished line carried over from the previous chunk.
    line: Vec<u8>,
    /// Data of the event being assembled (each line followed by `\n`).
    data: Vec<u8>,
    event: String,
    has_event: bool,
    has_data: bool,
    /// The previous chunk ended with `\r`: a leading `\n` in the next one belongs to it.
    after_cr: bool,
    /// Most bytes of one event (its unfinished line and data) kept.
    max: usize,
    /// An event went past `max`: nothing more is parsed.
    overflowed: bool,
}

/// The default limit on one event (4 MiB): far above any LLM stream's
/// events (a few KiB; a Responses API `response.completed` carries the whole
/// answer), far below what would hurt a server with many streams.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 << 20;

impl Default for SseParser {
    fn default() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser that keeps at most `max` bytes of one event.
    ///
    /// ```
    /// let mut p = llm_tower_core::sse::SseParser::with_max_event_bytes(16);
    /// let mut n = 0;
    /// p.feed(b"data: short\n\n", |_| n += 1);
    /// p.feed(b"data: this line never ends and never will", |_| n += 1);
    /// assert!(p.overflowed());
    /// p.feed(b"\n\ndata: x\n\n", |_| n += 1); // ignored from now on
    /// assert_eq!(n, 1);
    /// ```
    pub fn with_max_event_bytes(max: usize) -> Self {
        SseParser {
            line: Vec::new(),
            data: Vec::new(),
            event: String::new(),
            has_event: false,
            has_data: false,
            after_cr: false,
            max,
            overflowed: false,
        }
    }

    /// Whether an event went past the limit (the parser then stops: its
    /// memory stays bounded, and the caller should treat the stream as failed).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    fn overflow(&mut self) {
        self.overflowed = true;
        self.line = Vec::new();
        self.data = Vec::new();
        self.event = String::new();
        self.has_data = false;
        self.has_event = false;
    }

    /// Feeds the next bytes, calling `on_event` for every event they complete.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) {
        if self.overflowed {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let [b'\n', rest @ ..] = chunk {
                chunk = rest;
            }
        }
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', chunk) {
            let (line, rest) = chunk.split_at(pos);
            chunk = match rest {
                [b'\r', b'\n', rest @ ..] => rest,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, rest @ ..] => rest,
                [] => unreachable!("position found a terminator"),
            };
            if self.line.is_empty() {
                self.process_line(line, &mut on_event);
            } else {
                let mut full = std::mem::take(&mut self.line);
                full.extend_from_slice(line);
                self.process_line(&full, &mut on_event);
                full.clear();
                self.line = full;
            }
            if self.data.len() > self.max {
                return self.overflow();
            }
        }
        if self.line.len().saturating_add(chunk.len()).saturating_add(self.data.len()) > self.max {
            return self.overflow();
        }
        self.line.extend_from_slice(chunk);
    }

    fn process_line(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if line.is_empty() {
            if self.has_data {
                if self.data.last() == Some(&b'\n') {
                    self.data.pop();
                }
                let event = self.has_event.then_some(self.event.as_str());
                on_event(SseEvent { event, data: &self.data });
            }
            self.data.clear();
            self.event.clear();
            self.has_data = false;
            self.has_event = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
                self.has_event = true;
            }
            _ => {}
        }
    }

    /// Whether bytes of an unfinished event are pending (the stream stopped mid-event).
    ///
    /// ```
    /// let mut p = llm_tower_core::sse::SseParser::default();
    /// p.feed(b"data: x", |_| {});
    /// assert!(p.has_pending());
    /// ```
    pub fn has_pending(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }
}

/// Tracks the size of the event in progress across chunks, without parsing
/// it: a body that passes a stream on checks each chunk and ends the stream
/// with [`EventTooLarge`](crate::EventTooLarge) when one event (the bytes
/// since the last blank line) grows past the limit.
///
/// ```
/// use llm_tower_core::sse::EventSizeLimit;
/// let mut l = EventSizeLimit::new(48);
/// assert!(l.check(b"data: a small event\n\n").is_ok());
/// assert!(l.check(b"data: a longer one, split ").is_ok());
/// assert!(l.check(b"across chunks\n\n").is_ok(), "40 bytes, then the blank line");
/// assert!(l.check(&[b'x'; 50]).is_err(), "an event of 50 bytes and counting");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct EventSizeLimit {
    max: usize,
    /// Bytes of the event in progress (terminators included).
    event: usize,
    /// Bytes of the line in progress.
    line: usize,
    after_cr: bool,
}

impl EventSizeLimit {
    /// A limit of `max` bytes per event.
    pub fn new(max: usize) -> Self {
        EventSizeLimit { max, event: 0, line: 0, after_cr: false }
    }

    /// Accounts `chunk`; an error once an event is longer than the limit.
    pub fn check(&mut self, chunk: &[u8]) -> Result<(), crate::EventTooLarge> {
        let mut start = 0;
        for i in memchr::memchr2_iter(b'\n', b'\r', chunk) {
            let seg = i - start;
            start = i + 1;
            let cr_lf = self.after_cr && seg == 0 && chunk[i] == b'\n';
            self.after_cr = chunk[i] == b'\r';
            if cr_lf {
                // The second half of a `\r\n` terminator.
                self.event += 1;
                continue;
            }
            self.line += seg;
            if self.line == 0 {
                // A blank line: the event ends.
                self.event = 0;
                continue;
            }
            self.event = self.event.saturating_add(seg + 1);
            self.line = 0;
            // Checked per line: a blank line later in the chunk must not hide it.
            if self.event > self.max {
                return Err(crate::EventTooLarge { limit: self.max });
            }
        }
        let tail = chunk.len() - start;
        if tail > 0 {
            self.after_cr = false;
        }
        self.line = self.line.saturating_add(tail);
        self.event = self.event.saturating_add(tail);
        if self.event > self.max { Err(crate::EventTooLarge { limit: self.max }) } else { Ok(()) }
    }
}

/// The SSE event that ends a stream that broke after it started: `event:
/// error` with an OpenAI-format error object as data (OpenAI's SDKs raise it).
///
/// ```
/// let err: llm_tower_core::BoxError = Box::new(llm_tower_core::StreamAborted::new("reset"));
/// let ev = llm_tower_core::sse::error_event(&*err);
/// assert!(ev.starts_with(b"event: error\ndata: {\"error\":"));
/// assert!(ev.ends_with(b"\n\n"));
/// ```
pub fn error_event(err: &(dyn std::error::Error + 'static)) -> bytes::Bytes {
    let body = crate::ErrorInfo::from_error(err).body();
    let json = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
    bytes::Bytes::from(format!("event: error\ndata: {json}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<(Option<String>, String)> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |e| {
                out.push((e.event.map(str::to_owned), String::from_utf8(e.data.to_vec()).unwrap()))
            });
        }
        out
    }

    #[test]
    fn spec_cases() {
        assert_eq!(events(&[b"data: a\ndata: b\n\n"]), vec![(None, "a\nb".into())]);
        assert_eq!(events(&[b": comment\n\ndata:x\n\n"]), vec![(None, "x".into())]);
        assert_eq!(events(&[b"data:  two\n\n"]), vec![(None, " two".into())]);
        assert_eq!(events(&[b"data\n\n"]), vec![(None, "".into())]);
        assert_eq!(events(&[b"event: e\n\n"]), vec![], "no data, no dispatch");
        assert_eq!(events(&[b"data: a\r\rdata: b\r\n\r\n"]), vec![(None, "a".into()), (None, "b".into())]);
        assert_eq!(events(&[b"data: unfinished"]), vec![]);
        assert_eq!(
            events(&[b"event: message_stop\nid: 3\nretry: 10\ndata: {}\n\n"]),
            vec![(Some("message_stop".into()), "{}".into())]
        );
    }

    #[test]
    fn an_over_long_event_stops_the_parser_with_bounded_memory() {
        let mut p = SseParser::with_max_event_bytes(1024);
        let mut n = 0;
        // Many short lines and no blank line: the data grows, the line never does.
        for _ in 0..1_000 {
            p.feed(b"data: 0123456789\n", |_| n += 1);
        }
        assert!(p.overflowed());
        assert!(p.data.capacity() == 0 && p.line.capacity() == 0, "buffers freed");
        assert_eq!(n, 0);
    }

    #[test]
    fn event_size_limit_agrees_with_the_parser_on_boundaries() {
        // Whatever the split, a stream of small events never trips the limit,
        // and one event of 2 KiB always does.
        let small = b"event: x\r\ndata: {\"a\":1}\r\n\r\ndata: b\n\ndata: c\r\r".repeat(100);
        for split in [1, 2, 3, 7, 64] {
            let mut l = EventSizeLimit::new(64);
            for c in small.chunks(split) {
                assert!(l.check(c).is_ok(), "split {split}");
            }
            let mut big = b"data: ".to_vec();
            big.extend(std::iter::repeat_n(b'y', 2048));
            assert!(big.chunks(split).any(|c| l.check(c).is_err()), "split {split}");
        }
    }

    #[test]
    fn cr_lf_split_across_chunks_is_one_terminator() {
        assert_eq!(events(&[b"data: a\r", b"\n", b"\r", b"\n"]), vec![(None, "a".into())]);
    }
}
