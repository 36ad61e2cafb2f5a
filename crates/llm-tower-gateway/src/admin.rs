//! The admin routes: `/stats`, cache invalidation, and the admin token check.

use std::sync::Arc;

use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{StatusCode, header};
use http_body_util::{BodyExt, Limited};
use llm_tower::cache::CacheKey;
use llm_tower::core::{ErrorInfo, InvalidRequest};

use crate::app::{AppState, error, json};

/// `GET /stats`: per provider, its breaker (state per key) and retry counters;
/// per upstream host, its connections and requests.
pub(crate) async fn stats(State(app): State<Arc<AppState>>, req: Request) -> Response {
    if !app.stats_public
        && let Some(refused) = admin_refused(&app, req.headers())
    {
        return refused;
    }
    let llm = &app.llm;
    let providers: Vec<serde_json::Value> = llm
        .providers()
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": &*p.name,
                "circuit_breaker": p.breaker.stats(),
                "retry": p.retry.stats(),
                "rate_limit": p.limiter.stats(),
            })
        })
        .collect();
    let tenants = llm.tenant_limits().map(|t| {
        let overrides: serde_json::Map<String, serde_json::Value> = t
            .limited_keys()
            .into_iter()
            .map(|name| {
                let stats = serde_json::to_value(t.stats_for(&name)).unwrap_or_default();
                (name, stats)
            })
            .collect();
        serde_json::json!({
            "header": app.tenant_header.as_str(),
            "default": t.stats(),
            "overrides": overrides,
        })
    });
    let body = serde_json::json!({
        "providers": providers,
        "backends": llm.failover().stats(),
        "tenants": tenants,
        "usage": llm.accounting().map(|a| a.ledger().entries()),
        "cache": llm.cache().map(|c| c.stats()),
        "upstream_hosts": llm.http_client().stats(),
        "redis": match &app.redis {
            Some((r, closed)) => serde_json::json!({
                "prefix": r.prefix(),
                "up": r.ping().await.is_ok(),
                "on_error": if *closed { "closed" } else { "local" },
                "limiters_without_redis": llm.providers().iter().filter(|p| p.limiter.store().is_down()).count(),
                "budgets_without_redis": llm.accounting().is_some_and(|a| a.budgets().is_down()),
            }),
            None => serde_json::Value::Null,
        },
    });
    json(StatusCode::OK, Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
}

/// Constant-time comparison (the token's length is not secret).
/// The 401 for a request without the admin token (`None`: it has it). With
/// no token configured nobody has it.
pub(crate) fn admin_refused(app: &AppState, headers: &http::HeaderMap) -> Option<Response> {
    let want = app.admin_token.as_ref().map(|t| t.expose().as_bytes()).unwrap_or_default();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !want.is_empty() && same_token(given.as_bytes(), want) {
        return None;
    }
    let mut info = ErrorInfo::new(StatusCode::UNAUTHORIZED, "invalid_request_error", "invalid admin token");
    info.code = Some("invalid_api_key");
    Some(info.into_response().map(AxumBody::new))
}

fn same_token(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len() && given.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// `POST /admin/cache/invalidate` with `{"key": "<hex>"}`, `{"tenant": "<name>"}`
/// or `{"all": true}`; `authorization: Bearer <server.admin_token>`.
pub(crate) async fn invalidate_cache(State(app): State<Arc<AppState>>, req: Request) -> Response {
    if let Some(refused) = admin_refused(&app, req.headers()) {
        return refused;
    }
    let Some(cache) = app.llm.cache() else {
        return error(&InvalidRequest::new("the cache is not configured"));
    };
    let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(&InvalidRequest::new("could not read the request body")),
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Invalidate {
        key: Option<String>,
        tenant: Option<String>,
        #[serde(default)]
        all: bool,
    }
    let what = match serde_json::from_slice::<Invalidate>(&body) {
        Ok(w) => w,
        Err(e) => return error(&InvalidRequest::new(format!("invalid body: {e}"))),
    };
    let done = match (what.key, what.tenant, what.all) {
        (Some(k), None, false) => match k.parse::<CacheKey>() {
            Ok(key) => {
                cache.invalidate(key).await;
                serde_json::json!({"invalidated": "key", "key": k})
            }
            Err(_) => {
                return error(&InvalidRequest::new("key: not a cache key (32 hex digits)").with_param("key"));
            }
        },
        (None, Some(t), false) => {
            cache.invalidate_scope(&t).await;
            serde_json::json!({"invalidated": "tenant", "tenant": t})
        }
        (None, None, true) => {
            cache.invalidate_all().await;
            serde_json::json!({"invalidated": "all"})
        }
        _ => return error(&InvalidRequest::new("give exactly one of key, tenant, all")),
    };
    tracing::info!(what = %done, "cache invalidated");
    json(StatusCode::OK, Bytes::from(done.to_string()))
}
