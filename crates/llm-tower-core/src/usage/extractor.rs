//! The incremental extractor: fed a body's bytes as they pass, one parse per JSON body or SSE event.

use super::*;
use smallvec::SmallVec;

/// Incremental usage extractor. See the [module docs](crate::usage).
///
/// ```
/// use bytes::Bytes;
/// use llm_tower_core::usage::{BodyKind, StreamEnd, UsageExtractor};
/// let mut x = UsageExtractor::new(BodyKind::Sse);
/// for part in ["data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,", "\"completion_tokens\":1}}\n\n", "data: [DONE]\n\n"] {
///     x.feed(&Bytes::from(part));
/// }
/// let r = x.finish(StreamEnd::Complete);
/// assert_eq!(r.end, StreamEnd::Complete);
/// assert_eq!(r.usage.unwrap().input, 2);
/// ```
#[derive(Debug)]
pub struct UsageExtractor {
    kind: BodyKind,
    sse: SseParser,
    /// A JSON body's chunks (most answers arrive in one: kept inline).
    json: SmallVec<[Bytes; 1]>,
    json_len: usize,
    acc: Acc,
}

/// Most output text kept by [`UsageExtractor::with_text`] (4 MiB).
pub const MAX_TEXT_BYTES: usize = 4 << 20;

/// Raw event data kept past a stream's key-scan for the text count:
/// parsed only when the body ends without usage, or each time it grows past
/// [`KEEP_BYTES`] (so a long stream holds at most that much).
const KEEP_BYTES: usize = 64 << 10;

#[derive(Debug, Default)]
pub(crate) struct Kept {
    /// Text read from events already parsed (at most [`MAX_TEXT_BYTES`]).
    text: String,
    /// Event data not parsed for text yet, end to end.
    raw: Vec<u8>,
    /// Where each event in `raw` ends.
    ends: Vec<usize>,
}

impl Kept {
    fn keep(&mut self, data: &[u8]) {
        self.raw.extend_from_slice(data);
        self.ends.push(self.raw.len());
        if self.raw.len() > KEEP_BYTES {
            self.parse_kept();
        }
    }

    /// Reads the text of every kept event into `text`.
    fn parse_kept(&mut self) {
        let mut start = 0;
        for &end in &self.ends {
            if let Ok(p) = crate::json::from_bytes::<Probe<'_>>(&self.raw[start..end]) {
                collect_text(&mut self.text, &p);
            }
            start = end;
        }
        self.raw.clear();
        self.ends.clear();
    }
}

#[derive(Debug, Default)]
pub(crate) struct Acc {
    /// Generated text, when collecting (`with_text`).
    text: Option<Kept>,
    input: Option<u64>,
    output: Option<u64>,
    cached: Option<u64>,
    reasoning: Option<u64>,
    finish_reason: Option<String>,
    terminated: bool,
    error: Option<String>,
    bytes: u64,
}

impl UsageExtractor {
    /// An extractor for a body of the given kind.
    pub fn new(kind: BodyKind) -> Self {
        Self { kind, sse: SseParser::default(), json: SmallVec::new(), json_len: 0, acc: Acc::default() }
    }

    /// Also collects the generated text (message content, text deltas, tool
    /// call arguments; at most [`MAX_TEXT_BYTES`]), so that a caller can count
    /// the output of a provider that reports no usage. The text is read only
    /// when the body ends without usage (a stream's events are kept, at
    /// most 64 KiB of them at a time, and parsed for it then): a body that
    /// reports usage pays nothing for it. See
    /// [`finish_with_text`](Self::finish_with_text).
    ///
    /// ```
    /// use llm_tower_core::usage::{BodyKind, StreamEnd, UsageExtractor};
    /// let mut x = UsageExtractor::new(BodyKind::Sse).with_text();
    /// x.feed(&bytes::Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"));
    /// let (report, text) = x.finish_with_text(StreamEnd::Complete);
    /// assert!(report.usage.is_none());
    /// assert_eq!(text, "Hi");
    /// ```
    pub fn with_text(mut self) -> Self {
        self.keep_text();
        self
    }

    /// [`with_text`](Self::with_text) in place (a boxed meter is not moved
    /// into a new box for it).
    pub(crate) fn keep_text(&mut self) {
        if self.acc.text.is_none() {
            self.acc.text = Some(Kept::default());
        }
    }

    /// Whether this extractor collects the generated text ([`with_text`](Self::with_text)).
    ///
    /// ```
    /// use llm_tower_core::usage::{BodyKind, UsageExtractor};
    /// assert!(!UsageExtractor::new(BodyKind::Sse).collects_text());
    /// assert!(UsageExtractor::new(BodyKind::Sse).with_text().collects_text());
    /// ```
    pub fn collects_text(&self) -> bool {
        self.acc.text.is_some()
    }

    /// The kind of body this extractor reads.
    ///
    /// ```
    /// use llm_tower_core::usage::{BodyKind, UsageExtractor};
    /// assert_eq!(UsageExtractor::new(BodyKind::Sse).kind(), BodyKind::Sse);
    /// ```
    pub fn kind(&self) -> BodyKind {
        self.kind
    }

    /// Feeds the next chunk of the body.
    pub fn feed(&mut self, chunk: &Bytes) {
        self.acc.bytes += chunk.len() as u64;
        match self.kind {
            BodyKind::Sse => {
                let acc = &mut self.acc;
                self.sse.feed(chunk, |ev| acc.on_event(ev.event, ev.data));
            }
            BodyKind::Json => {
                if self.json_len + chunk.len() <= MAX_JSON_BYTES {
                    self.json_len += chunk.len();
                    self.json.push(chunk.clone());
                } else {
                    self.json.clear();
                    self.json_len = usize::MAX / 2;
                }
            }
        }
    }

    /// Whether a stream sent an event over the parser's limit (see
    /// [`SseParser::with_max_event_bytes`]): the extractor stopped reading it,
    /// and its report will say `Failed`.
    pub fn overflowed(&self) -> bool {
        self.sse.overflowed()
    }

    /// Bytes of event data kept for the text count, not parsed yet.
    #[cfg(test)]
    pub(super) fn acc_kept_bytes(&self) -> usize {
        self.acc.text.as_ref().map_or(0, |k| k.raw.len())
    }

    /// Usage seen so far (streams report it before they end).
    ///
    /// ```
    /// let x = llm_tower_core::usage::UsageExtractor::new(llm_tower_core::usage::BodyKind::Sse);
    /// assert!(x.usage().is_none());
    /// ```
    pub fn usage(&self) -> Option<Usage> {
        self.acc.usage()
    }

    /// Whether a stream terminator (`[DONE]`, `message_stop`, `response.completed`) was seen.
    ///
    /// ```
    /// let mut x = llm_tower_core::usage::UsageExtractor::new(llm_tower_core::usage::BodyKind::Sse);
    /// x.feed(&bytes::Bytes::from_static(b"data: [DONE]\n\n"));
    /// assert!(x.saw_terminator());
    /// ```
    pub fn saw_terminator(&self) -> bool {
        self.acc.terminated
    }

    /// Ends extraction. `end` is how the body itself ended; a stream that ended
    /// cleanly without its terminator or a finish reason is reported `EndedEarly`.
    pub fn finish(self, end: StreamEnd) -> UsageReport {
        self.finish_with_text(end).0
    }

    /// Like [`finish`](Self::finish), and also returns the generated text
    /// when the body reported no usage (empty when it did, or unless
    /// [`with_text`](Self::with_text) was asked): the text is there to count
    /// what the provider did not.
    pub fn finish_with_text(mut self, end: StreamEnd) -> (UsageReport, String) {
        let mut json_valid = None;
        if self.kind == BodyKind::Json && end == StreamEnd::Complete && self.json_len <= MAX_JSON_BYTES {
            let whole: Cow<'_, [u8]> = match self.json.as_slice() {
                [one] => Cow::Borrowed(&one[..]),
                many => Cow::Owned(many.concat()),
            };
            json_valid = Some(match crate::json::from_bytes::<Probe<'_>>(&whole) {
                Ok(p) => {
                    self.acc.absorb(&p);
                    let reported = self.acc.usage().is_some();
                    if let Some(k) = self.acc.text.as_mut().filter(|_| !reported) {
                        collect_text(&mut k.text, &p);
                    }
                    true
                }
                // Valid JSON of another shape (rare): asked once more, to say so.
                Err(_) => serde_json::from_slice::<IgnoredAny>(&whole).is_ok(),
            });
        }
        let end = match (self.kind, end) {
            // An event past the parser's limit: whatever came after is unknown.
            (BodyKind::Sse, _) if self.sse.overflowed() => StreamEnd::Failed,
            (BodyKind::Sse, StreamEnd::Complete)
                if !self.acc.terminated && self.acc.finish_reason.is_none() =>
            {
                StreamEnd::EndedEarly
            }
            (_, end) => end,
        };
        let report = UsageReport {
            usage: self.acc.usage(),
            finish_reason: self.acc.finish_reason,
            end,
            error: self.acc.error,
            bytes: self.acc.bytes,
            json_valid,
        };
        let text = match self.acc.text {
            Some(mut k) if report.usage.is_none() => {
                k.parse_kept();
                k.text
            }
            _ => String::new(),
        };
        (report, text)
    }
}

impl Acc {
    fn usage(&self) -> Option<Usage> {
        if self.input.is_none() && self.output.is_none() {
            return None;
        }
        Some(Usage {
            input: self.input.unwrap_or(0),
            output: self.output.unwrap_or(0),
            cached_input: self.cached.unwrap_or(0),
            reasoning: self.reasoning.unwrap_or(0),
        })
    }

    fn on_event(&mut self, event: Option<&str>, data: &[u8]) {
        if data == b"[DONE]" {
            self.terminated = true;
            return;
        }
        match event {
            Some("message_stop") => self.terminated = true,
            Some("error") if self.error.is_none() => {
                self.error = Some(String::from_utf8_lossy(data).into_owned());
            }
            _ => {}
        }
        if let Some(k) = self.text.as_mut() {
            k.keep(data);
        }
        // Most events (a chat chunk's text delta) carry nothing the report
        // reads: a key scan, not a parse, says so.
        if key_scan::may_report(data)
            && let Ok(p) = crate::json::from_bytes::<Probe<'_>>(data)
        {
            self.absorb(&p);
        }
    }

    fn absorb(&mut self, p: &Probe<'_>) {
        if let Some(u) = &p.usage {
            self.merge_usage(u);
        }
        if let Some(choices) = &p.choices {
            if let Some(r) = choices.iter().find_map(|c| c.finish_reason.as_deref()) {
                self.finish_reason = Some(r.to_owned());
            }
        }
        if let Some(r) = &p.stop_reason {
            self.finish_reason = Some(r.to_string());
        }
        if let Some(Delta::Object(d)) = &p.delta {
            if let Some(r) = &d.stop_reason {
                self.finish_reason = Some(r.to_string());
            }
        }
        if let Some(m) = &p.message {
            self.absorb(m);
        }
        if let Some(r) = &p.response {
            self.absorb(r);
        }
        if let Some(status) = p.status.as_deref() {
            if matches!(status, "completed" | "incomplete" | "failed") {
                let reason = p.incomplete_details.as_ref().and_then(|d| d.reason.as_deref());
                self.finish_reason = Some(reason.unwrap_or(status).to_owned());
            }
        }
        match p.kind.as_deref() {
            Some("message_stop" | "response.completed" | "response.incomplete" | "response.failed") => {
                self.terminated = true;
            }
            Some("error") if self.error.is_none() => self.error = Some("error event".to_owned()),
            _ => {}
        }
        if let Some(e) = &p.error {
            if self.error.is_none() {
                self.error = Some(match e {
                    ErrorProbe::Object { message: Some(m), .. } => m.clone(),
                    ErrorProbe::Object { kind: Some(k), .. } => k.clone(),
                    ErrorProbe::Text(t) => t.clone(),
                    ErrorProbe::Object { .. } => "error".to_owned(),
                });
            }
        }
    }

    fn merge_usage(&mut self, u: &UsageAny) {
        let anthropic = u.cache_read_input_tokens.is_some() || u.cache_creation_input_tokens.is_some();
        let cached = u
            .prompt_tokens_details
            .as_ref()
            .or(u.input_tokens_details.as_ref())
            .and_then(|d| d.cached_tokens)
            .or(u.cache_read_input_tokens);
        if let Some(c) = cached {
            self.cached = Some(c);
        }
        if let Some(i) = u.prompt_tokens.or(u.input_tokens) {
            self.input = Some(if anthropic {
                i + u.cache_read_input_tokens.unwrap_or(0) + u.cache_creation_input_tokens.unwrap_or(0)
            } else {
                i
            });
        }
        if let Some(o) = u.completion_tokens.or(u.output_tokens) {
            self.output = Some(o);
        }
        let reasoning = u
            .completion_tokens_details
            .as_ref()
            .or(u.output_tokens_details.as_ref())
            .and_then(|d| d.reasoning_tokens);
        if let Some(r) = reasoning {
            self.reasoning = Some(r);
        }
    }
}

/// Whether the full parse of one event's data would leave a fresh report
/// unchanged (what the key scan claims when it says "no").
#[cfg(test)]
pub(super) fn parse_changes_nothing(data: &[u8]) -> bool {
    let mut acc = Acc::default();
    if let Ok(p) = crate::json::from_bytes::<Probe<'_>>(data) {
        acc.absorb(&p);
    }
    acc.usage().is_none() && acc.finish_reason.is_none() && acc.error.is_none() && !acc.terminated
}

fn push_text(buf: &mut String, t: Option<&Cow<'_, str>>) {
    if let Some(t) = t
        && buf.len() + t.len() <= MAX_TEXT_BYTES
    {
        buf.push_str(t);
    }
}

/// Appends the generated text of any known shape to `buf`.
fn collect_text(buf: &mut String, p: &Probe<'_>) {
    for c in p.choices.iter().flatten() {
        for part in [&c.delta, &c.message].into_iter().flatten() {
            push_text(buf, part.content.as_ref());
            for call in part.tool_calls.as_ref().and_then(Lenient::get).into_iter().flatten() {
                let f = call.function.as_ref();
                push_text(buf, f.and_then(|f| f.name.as_ref()));
                push_text(buf, f.and_then(|f| f.arguments.as_ref()));
            }
        }
    }
    match &p.delta {
        Some(Delta::Text(t)) => push_text(buf, Some(t)),
        Some(Delta::Object(d)) => {
            push_text(buf, d.text.as_ref());
            push_text(buf, d.partial_json.as_ref());
            push_text(buf, d.thinking.as_ref());
        }
        _ => {}
    }
    let content = p.content.as_ref().and_then(Lenient::get).into_iter().flatten();
    let output = p.output.as_ref().and_then(Lenient::get).into_iter().flatten();
    let blocks =
        content.chain(output.flat_map(|o| o.content.as_ref().and_then(Lenient::get).into_iter().flatten()));
    for block in blocks {
        push_text(buf, block.text.as_ref());
    }
}
