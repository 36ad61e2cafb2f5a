//! A streamed answer in another dialect, translated event by event.

use super::*;
use crate::dialect::StreamTranslator;
use llm_tower_core::sse::SseParser;

/// The upstream's event stream, each event parsed once and translated into
/// OpenAI chunks as it arrives (nothing is held back but a partial event,
/// bounded by the per-event size limit).
pub(crate) struct Translated {
    inner: Streaming,
    parser: SseParser,
    translator: StreamTranslator,
    max_event_bytes: usize,
    ended: bool,
}

impl Translated {
    pub(crate) fn new(inner: Streaming, t: Translation, max_event_bytes: usize) -> Self {
        Translated {
            inner,
            parser: SseParser::with_max_event_bytes(max_event_bytes),
            translator: t.stream(),
            max_event_bytes,
            ended: false,
        }
    }
}

impl Body for Translated {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let mut out = BytesMut::new();
                    let t = &mut this.translator;
                    this.parser.feed(&data, |e| t.event(e.event, e.data, &mut out));
                    if this.parser.overflowed() {
                        this.inner.fail();
                        let limit = this.max_event_bytes;
                        return Poll::Ready(Some(Err(llm_tower_core::EventTooLarge { limit }.into())));
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.ended = true;
                    let mut out = BytesMut::new();
                    this.translator.finish(&mut out);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}
