//! Dialects: an OpenAI chat completion served by a provider that speaks
//! another API: Anthropic Messages (`kind = "anthropic"`) and Google Gemini
//! (`kind = "gemini"`). The request is translated before it is sent; the
//! answer is translated back, a JSON answer whole, a stream event by event
//! (bounded state per stream, never buffered).

use bytes::BytesMut;

pub(crate) mod anthropic;
pub(crate) mod gemini;

/// The provider's API, when it is not OpenAI's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Anthropic,
    Gemini,
}

/// What the response side needs to know of a translated request.
#[derive(Debug, Clone)]
pub(crate) struct Translation {
    pub(crate) dialect: Dialect,
    /// The model name the client asked for (echoed in the answer).
    pub(crate) model: std::sync::Arc<str>,
    /// `stream_options.include_usage`: a usage chunk ends the stream.
    pub(crate) include_usage: bool,
}

impl Translation {
    /// A whole 2xx answer as a `chat.completion` (`None`: not the dialect's answer).
    pub(crate) fn answer(&self, body: &[u8]) -> Option<Vec<u8>> {
        match self.dialect {
            Dialect::Anthropic => anthropic::to_chat_completion(body, self),
            Dialect::Gemini => gemini::to_chat_completion(body, self),
        }
    }

    /// An error body in OpenAI's shape.
    pub(crate) fn error(&self, body: &[u8]) -> Vec<u8> {
        match self.dialect {
            Dialect::Anthropic => anthropic::error_to_openai(body),
            Dialect::Gemini => gemini::error_to_openai(body),
        }
    }

    /// The stream translator for this answer.
    pub(crate) fn stream(self) -> StreamTranslator {
        match self.dialect {
            Dialect::Anthropic => StreamTranslator::Anthropic(anthropic::StreamTranslator::new(self)),
            Dialect::Gemini => StreamTranslator::Gemini(gemini::StreamTranslator::new(self)),
        }
    }
}

/// One stream's translator.
#[derive(Debug)]
pub(crate) enum StreamTranslator {
    Anthropic(anthropic::StreamTranslator),
    Gemini(gemini::StreamTranslator),
}

impl StreamTranslator {
    /// One upstream event.
    pub(crate) fn event(&mut self, name: Option<&str>, data: &[u8], out: &mut BytesMut) {
        match self {
            StreamTranslator::Anthropic(t) => t.event(name, data, out),
            StreamTranslator::Gemini(t) => t.event(data, out),
        }
    }

    /// The upstream body ended.
    pub(crate) fn finish(&mut self, out: &mut BytesMut) {
        match self {
            StreamTranslator::Anthropic(t) => t.finish(out),
            StreamTranslator::Gemini(t) => t.finish(out),
        }
    }
}
