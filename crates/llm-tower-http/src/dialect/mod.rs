//! Dialects: an OpenAI chat completion served by a provider that speaks
//! another API. Today: Anthropic Messages (`kind = "anthropic"` serving
//! `POST /v1/chat/completions`). The request is translated before it is sent;
//! the answer is translated back, a JSON answer whole, a stream event by event
//! (bounded state per stream, never buffered).

pub(crate) mod anthropic;

/// What the response side needs to know of a translated request.
#[derive(Debug, Clone)]
pub(crate) struct Translation {
    /// The model name the client asked for (echoed in the answer).
    pub(crate) model: std::sync::Arc<str>,
    /// `stream_options.include_usage`: a usage chunk ends the stream.
    pub(crate) include_usage: bool,
}
