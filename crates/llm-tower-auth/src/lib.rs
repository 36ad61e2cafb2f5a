//! Virtual API keys as a tower layer.
//!
//! [`AuthLayer`] authenticates every request by the key it carries
//! (`Authorization: Bearer <key>`, or `x-api-key` / `api-key`) against a
//! [`Keys`] registry in memory, and writes who it is for every layer below:
//!
//! - **Refuses** a missing or unknown key with core's [`InvalidApiKey`]
//!   (401 `invalid_api_key`), and a model the key may not use with core's
//!   `ModelNotFound` (404 `model_not_found`, the same answer as for a model
//!   nobody serves, so a key learns nothing about models beyond its grant).
//!   Neither reaches the layers below.
//! - **Writes** the key's name as the request's tenant
//!   (`RequestInfo::tenant`, parsed here if no layer above did), so tenant
//!   limits, budgets, the cache scope and the ledger key on it; and the
//!   [`Identity`] (name and hash prefix) in the request's and the response's
//!   extensions ([`identity`]).
//! - **Reads** only the headers above; it leaves them on the request (the
//!   HTTP service below sends the provider's own key and removes the
//!   client's, unless the provider forwards client credentials).
//!
//! Keys are kept and compared as SHA-256 hashes ([`KeyHash`]); the key
//! itself is never stored, logged, or shown by `Debug`. Per-key limits and
//! budgets ([`Grant`]) are applied by the layers that own them, keyed by the
//! key's name (the gateway and `llm-tower`'s config wire them). Keys created
//! at run time persist in a [`KeyStore`] (`MemoryKeyStore` here, SQLite in
//! `llm-tower-sqlite`).
//!
//! [`InvalidApiKey`]: llm_tower_core::InvalidApiKey
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use llm_tower_auth::{AuthLayer, KeyHash, KeyRecord, KeySource, Keys, identity};
//! use llm_tower_core::{ErrorInfo, LlmBody};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! let keys = Keys::default();
//! keys.insert(KeyRecord {
//!     name: "team-a".into(),
//!     hash: KeyHash::of("llmt-team-a-secret"),
//!     grant: serde_json::from_str(r#"{"models": ["gpt-4o-mini"]}"#).unwrap(),
//!     created_unix: 0,
//!     source: KeySource::Config,
//! })
//! .unwrap();
//! let stack = ServiceBuilder::new().layer(AuthLayer::new(keys)).service_fn(|req: http::Request<LlmBody>| async move {
//!     let who = identity(req.extensions()).map(|i| i.name().to_string());
//!     Ok::<_, tower::BoxError>(http::Response::new(who.unwrap_or_default()))
//! });
//! let call = |key: &str, model: &str| {
//!     http::Request::post("/v1/chat/completions")
//!         .header("authorization", format!("Bearer {key}"))
//!         .body(LlmBody::from(format!(r#"{{"model":"{model}","messages":[]}}"#)))
//!         .unwrap()
//! };
//! let res = stack.clone().oneshot(call("llmt-team-a-secret", "gpt-4o-mini")).await.unwrap();
//! assert_eq!(res.into_body(), "team-a");
//! let err = stack.clone().oneshot(call("llmt-guess", "gpt-4o-mini")).await.unwrap_err();
//! assert_eq!(ErrorInfo::from_error(&*err).status, 401);
//! let err = stack.oneshot(call("llmt-team-a-secret", "gpt-4o")).await.unwrap_err();
//! assert_eq!(ErrorInfo::from_error(&*err).status, 404);
//! # }
//! ```
#![deny(missing_docs)]

mod future;
mod hash;
mod keys;
mod layer;
mod record;
pub mod section;
mod store;

pub use future::ResponseFuture;
pub use hash::{BadKeyHash, KeyHash, generate_key};
pub use keys::{Identity, KeyError, Keys, valid_name};
pub use layer::{Auth, AuthLayer, identity, presented_key};
pub use record::{BudgetPeriod, Grant, KeyBudget, KeyRecord, KeySource};
pub use store::{KeyStore, MemoryKeyStore, StoreError, StoreFuture, contract};
