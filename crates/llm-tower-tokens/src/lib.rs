//! Token counting, model facts and cost for LLM calls.
//!
//! - [`Tiktoken`]: exact counts for OpenAI models (`o200k_base` for gpt-4o,
//!   gpt-4.1, o-series and gpt-5; `cl100k_base` for gpt-4 and gpt-3.5), with
//!   OpenAI's chat framing; encoders load once per process.
//! - [`Heuristic`]: a calibrated estimate for families without a public
//!   tokenizer (Anthropic, Llama, Mistral, Gemini), with a documented bound.
//! - [`ModelInfo`]: a built-in table of context windows and list prices;
//!   [`Prices::cost_micros`] computes cost in integer micro-dollars.
//!
//! - [`TokenCountLayer`]: counts each request once into its `RequestInfo`
//!   (limiters and budgets read it) and enforces the context window before
//!   anything is sent.
//!
//! - [`TokenAccountingLayer`]: budgets reserved before a call and settled
//!   with the real cost after it; usage read from JSON and SSE as it passes;
//!   a [`Ledger`] per tenant and model; streams asked for usage.
//!
//! ```
//! use llm_tower_core::chat::{ChatCompletionRequest, ChatMessage};
//! use llm_tower_tokens::{counter_for, ModelInfo, Usage};
//!
//! let req = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("Say hello.")]);
//! let input = counter_for(&req.model).count_chat(&req);
//! let model = ModelInfo::lookup(&req.model);
//! assert!(input < model.context_window);
//! let cost = model.prices.cost_micros(&Usage { input: u64::from(input), output: 100, ..Default::default() });
//! assert!(cost > 0);
//! ```
#![deny(missing_docs)]

mod accounting;
mod bpe;
mod budget;
mod counter;
mod layer;
mod ledger;
mod meters;
mod models;
#[cfg(feature = "serde")]
pub mod section;
mod split;
mod view;

pub use accounting::{AccountingConfig, TokenAccounting, TokenAccountingLayer};
pub use budget::{AccountSnapshot, Budget, BudgetStore, MemoryBudgets, Period, Reservation};
pub use counter::{Heuristic, Tiktoken, TokenCounter, counter_for};
pub use layer::{Preflight, ResponseFuture, TokenCount, TokenCountLayer, count_body, count_input};
pub use ledger::{Ledger, LedgerEntry, LedgerLine, OVERFLOW, Series, Totals};
pub use llm_tower_core::Usage;
pub use models::{Family, ModelInfo, Prices, UNKNOWN};
