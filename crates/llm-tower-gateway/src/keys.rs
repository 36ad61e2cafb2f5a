//! Virtual keys in the gateway: loading them at start (config and state
//! file), the state file's writer, and the admin key API.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body as AxumBody;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use llm_tower::Llm;
use llm_tower::auth::{Grant, Identity, KeyRecord, KeySource, KeyStore, Keys, MemoryKeyStore, generate_key};
use llm_tower::config::{AuthMode, StackConfig};
use llm_tower::core::{ErrorInfo, InvalidRequest, Key};
use llm_tower::sqlite::{Flusher, SqliteState};
use llm_tower::tokens::BudgetStore;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::admin_refused;
use crate::app::{AppState, json};

/// How often spend and usage are written to the state file: the most a
/// crash loses.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The gateway's identity state: the key registry, where admin-created keys
/// persist, and the state file's writer.
pub(crate) struct Identities {
    /// `[auth] mode`.
    pub(crate) mode: AuthMode,
    /// Every key requests authenticate against.
    pub(crate) keys: Keys,
    /// Where keys the admin API creates are kept.
    store: Arc<dyn KeyStore>,
    /// Writes spend and usage every second; flushed at shutdown.
    flusher: Mutex<Option<Flusher<llm_tower::SpendStore>>>,
}

/// Why the state could not be loaded.
pub(crate) type LoadError = Box<dyn std::error::Error + Send + Sync>;

impl Identities {
    /// Opens the state file (if any) and restores spend and usage into the
    /// stack, then loads the config's keys and the stored ones, applying
    /// each key's limits and budget.
    pub(crate) async fn load(
        config: &StackConfig,
        llm: &Llm,
        redis: Option<&llm_tower::redis::Redis>,
    ) -> Result<Self, LoadError> {
        let mut store: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::default());
        let mut flusher = None;
        match config.state.as_ref().and_then(|s| s.path.as_ref()) {
            Some(path) => {
                let state = SqliteState::open(path).await?;
                if let Some(acc) = llm.accounting() {
                    let restored = state.restore(acc).await?;
                    flusher = Some(state.spawn_flusher(acc.clone(), FLUSH_EVERY));
                    tracing::info!(
                        path = %path.display(),
                        budget_accounts = restored.accounts,
                        ledger_lines = restored.ledger_lines,
                        "state: SQLite file (admin-created keys, budget spend and usage persist; \
                         a crash loses at most the last second of spend; with Redis, spend is kept there)"
                    );
                }
                store = Arc::new(state);
            }
            None => tracing::info!(
                "state: in memory (admin-created keys, budget spend and usage are lost on restart; \
                 set [state] path to keep them)"
            ),
        }
        let shared = redis.is_some();
        if let Some(r) = redis {
            // Keys in Redis: every gateway of the deployment sees the same ones.
            store = Arc::new(r.keys());
            tracing::info!(
                prefix = r.prefix(),
                "state: Redis (limits shared by every gateway on it, and the keys the admin API creates)"
            );
        }
        let keys = Keys::default();
        for k in &config.keys {
            let record = k.to_record().ok_or_else(|| format!("key {}: no key (validated)", k.name))?;
            keys.insert(record)?;
            llm.grant(&k.name, &k.grant());
        }
        for record in store.load().await? {
            if keys.get(&record.name).is_some() {
                tracing::warn!(name = %record.name, "a stored key has the name of a config key: the config's is used");
                continue;
            }
            let (name, grant) = (record.name.clone(), record.grant.clone());
            match keys.insert(record) {
                Ok(_) => llm.grant(&name, &grant),
                Err(e) => tracing::warn!(name = %name, error = %e, "stored key not loaded"),
            }
        }
        if config.auth.mode == AuthMode::Keys {
            tracing::info!(keys = keys.len(), "auth: every /v1 request needs a key");
        }
        let ids = Identities { mode: config.auth.mode, keys, store, flusher: Mutex::new(flusher) };
        Ok(ids.shared(shared, llm))
    }

    /// With a shared key store, reloads it every second: a key created on
    /// another gateway works here within a second, and one revoked there is
    /// refused here as soon.
    fn shared(self, shared: bool, llm: &Llm) -> Self {
        if shared && self.mode == AuthMode::Keys {
            let (keys, store, llm) = (self.keys.clone(), self.store.clone(), llm.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(KEY_SYNC_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    match store.load().await {
                        Ok(records) => sync(&keys, &llm, records),
                        Err(e) => tracing::debug!(error = %e, "could not reload the shared keys"),
                    }
                }
            });
        }
        self
    }

    /// Stops the state file's writer after one last flush.
    pub(crate) async fn shutdown(&self) {
        let flusher = self.flusher.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = flusher {
            match f.shutdown().await {
                Ok(done) => tracing::info!(
                    budget_accounts = done.accounts,
                    ledger_lines = done.ledger_lines,
                    "state saved"
                ),
                Err(e) => tracing::error!(error = %e, "could not save spend and usage at shutdown"),
            }
        }
    }
}

/// How often a gateway with a shared key store reloads it.
const KEY_SYNC_EVERY: Duration = Duration::from_secs(1);

/// Makes the registry's admin-created keys those of `records` (config keys
/// stay as the file says).
fn sync(keys: &Keys, llm: &Llm, records: Vec<KeyRecord>) {
    let names: std::collections::HashSet<&str> = records.iter().map(|r| r.name.as_str()).collect();
    for id in keys.list() {
        if id.record().source == KeySource::Admin && !names.contains(&**id.name()) {
            keys.remove(id.name());
            llm.ungrant(id.name());
            tracing::info!(key = %id, "key revoked (by another gateway)");
        }
    }
    for record in records {
        match keys.get(&record.name) {
            Some(id) if id.record().source == KeySource::Config || *id.record() == record => continue,
            _ => {}
        }
        let (name, grant) = (record.name.clone(), record.grant.clone());
        match keys.insert(record) {
            Ok(_) => llm.grant(&name, &grant),
            Err(e) => tracing::warn!(name = %name, error = %e, "shared key not loaded"),
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn refusal(status: StatusCode, message: impl Into<String>) -> Response {
    ErrorInfo::new(status, "invalid_request_error", message).into_response().map(AxumBody::new)
}

fn bad_request(err: InvalidRequest) -> Response {
    ErrorInfo::from_error(&err).into_response().map(AxumBody::new)
}

fn server_error(what: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "{what}");
    ErrorInfo::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        format!("{what}: the state store failed"),
    )
    .into_response()
    .map(AxumBody::new)
}

/// What `GET /admin/keys` shows of a key: never the key, never its full hash.
fn describe(app: &AppState, id: &Identity) -> Value {
    let rec = id.record();
    let spend = app.llm.accounting().map(|a| {
        let budget = a.budget_for(id.name());
        let (spent, reserved) = a.budgets().balance(&Key::from(&**id.name())).unwrap_or((0, 0));
        json!({
            "period": budget.map(|b| b.period.name()),
            "spent_usd": spent as f64 / 1e6,
            "reserved_usd": reserved as f64 / 1e6,
        })
    });
    json!({
        "name": &**id.name(),
        "prefix": id.prefix(),
        "source": rec.source,
        "created_unix": rec.created_unix,
        "models": rec.grant.models,
        "requests_per_minute": rec.grant.requests_per_minute,
        "tokens_per_minute": rec.grant.tokens_per_minute,
        "budget": rec.grant.budget,
        "spend": spend,
    })
}

async fn read_json(req: Request) -> Result<Value, Response> {
    let body = Limited::new(req.into_body(), 64 << 10)
        .collect()
        .await
        .map_err(|_| bad_request(InvalidRequest::new("could not read the request body (at most 64 KiB)")))?
        .to_bytes();
    serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| bad_request(InvalidRequest::new("the body must be a JSON object")))
}

fn checked(grant: &Grant) -> Option<Response> {
    let e = grant.check("").into_iter().next()?;
    Some(bad_request(InvalidRequest::new(format!("{}: {}", e.field, e.message)).with_param(e.field)))
}

/// `POST /admin/keys`: `{"name": ..., "models": [...], "requests_per_minute": ..,
/// "tokens_per_minute": .., "budget": {"usd": .., "period": "day"}}` creates a
/// key; the answer holds the key itself, shown this once.
pub(crate) async fn create(State(app): State<Arc<AppState>>, req: Request) -> Response {
    if let Some(refused) = admin_refused(&app, req.headers()) {
        return refused;
    }
    // The grant's own fields are checked by `Grant` (unknown ones refused).
    #[derive(Deserialize)]
    struct Create {
        name: String,
        #[serde(flatten)]
        grant: Value,
    }
    let body = match read_json(req).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    let parsed = serde_json::from_value::<Create>(body).map_err(|e| e.to_string()).and_then(|c| {
        let grant: Grant = serde_json::from_value(c.grant).map_err(|e| e.to_string())?;
        Ok((c.name, grant))
    });
    let (name, grant) = match parsed {
        Ok(p) => p,
        Err(e) => return bad_request(InvalidRequest::new(format!("invalid body: {e}"))),
    };
    if !llm_tower::auth::valid_name(&name) {
        return bad_request(
            InvalidRequest::new("name: 1 to 64 characters from [A-Za-z0-9._:@-]").with_param("name"),
        );
    }
    if let Some(res) = checked(&grant) {
        return res;
    }
    let ids = &app.identities;
    if ids.keys.get(&name).is_some() {
        return refusal(
            StatusCode::CONFLICT,
            format!("a key named {name} exists (PATCH changes it, DELETE revokes it)"),
        );
    }
    let secret = match generate_key() {
        Ok(s) => s,
        Err(e) => return server_error("could not make a key", &e),
    };
    let record = KeyRecord {
        name: name.clone(),
        hash: llm_tower::auth::KeyHash::of(secret.expose()),
        grant: grant.clone(),
        created_unix: now_unix(),
        source: KeySource::Admin,
    };
    // Stored first: a key that answered 201 survives a restart.
    if let Err(e) = ids.store.put(record.clone()).await {
        return server_error("could not store the key", &*e);
    }
    if let Err(e) = ids.keys.insert(record) {
        let _ = ids.store.remove(&name).await;
        return refusal(StatusCode::CONFLICT, e.to_string());
    }
    app.llm.grant(&name, &grant);
    let id = ids.keys.get(&name).expect("just inserted");
    tracing::info!(key = %id, "key created");
    let mut body = describe(&app, &id);
    body["key"] = Value::String(secret.expose().to_owned());
    json(StatusCode::CREATED, Bytes::from(body.to_string()))
}

/// `POST /admin/keys/reload`: reads the key store again now (a gateway
/// with a shared store also does every second).
pub(crate) async fn reload(State(app): State<Arc<AppState>>, req: Request) -> Response {
    if let Some(refused) = admin_refused(&app, req.headers()) {
        return refused;
    }
    match app.identities.store.load().await {
        Ok(records) => {
            sync(&app.identities.keys, &app.llm, records);
            let body = json!({ "keys": app.identities.keys.len() });
            json(StatusCode::OK, Bytes::from(body.to_string()))
        }
        Err(e) => server_error("could not read the key store", &*e),
    }
}

/// `GET /admin/keys`: every key's name, hash prefix, grant and spend.
pub(crate) async fn list(State(app): State<Arc<AppState>>, req: Request) -> Response {
    if let Some(refused) = admin_refused(&app, req.headers()) {
        return refused;
    }
    let data: Vec<Value> = app.identities.keys.list().iter().map(|id| describe(&app, id)).collect();
    json(StatusCode::OK, Bytes::from(json!({ "object": "list", "data": data }).to_string()))
}

/// The admin-created key `name` for a caller with the admin token, or the
/// answer refusing to touch it.
fn admin_key(app: &AppState, headers: &http::HeaderMap, name: &str) -> Result<Arc<Identity>, Box<Response>> {
    if let Some(refused) = admin_refused(app, headers) {
        return Err(Box::new(refused));
    }
    let Some(id) = app.identities.keys.get(name) else {
        return Err(Box::new(refusal(StatusCode::NOT_FOUND, format!("no key named {name}"))));
    };
    if id.record().source == KeySource::Config {
        return Err(Box::new(refusal(
            StatusCode::CONFLICT,
            format!("key {name} is defined in the config file: change it there"),
        )));
    }
    Ok(id)
}

/// `PATCH /admin/keys/{name}`: replaces the fields given (`models`,
/// `requests_per_minute`, `tokens_per_minute`, `budget`; `null` removes one).
pub(crate) async fn update(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let id = match admin_key(&app, req.headers(), &name) {
        Ok(id) => id,
        Err(res) => return *res,
    };
    let changes = match read_json(req).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    let mut merged = serde_json::to_value(&id.record().grant).unwrap_or_else(|_| json!({}));
    for (k, v) in changes.as_object().into_iter().flatten() {
        merged[k.as_str()] = v.clone();
    }
    if let Some(m) = merged.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    let grant: Grant = match serde_json::from_value(merged) {
        Ok(g) => g,
        Err(e) => return bad_request(InvalidRequest::new(format!("invalid body: {e}"))),
    };
    if let Some(res) = checked(&grant) {
        return res;
    }
    let record = KeyRecord { grant: grant.clone(), ..id.record().clone() };
    if let Err(e) = app.identities.store.put(record.clone()).await {
        return server_error("could not store the key", &*e);
    }
    if let Err(e) = app.identities.keys.insert(record) {
        return refusal(StatusCode::CONFLICT, e.to_string());
    }
    app.llm.grant(&name, &grant);
    let id = app.identities.keys.get(&name).expect("just replaced");
    tracing::info!(key = %id, "key changed");
    json(StatusCode::OK, Bytes::from(describe(&app, &id).to_string()))
}

/// `DELETE /admin/keys/{name}`: revokes at once (a stream already running
/// finishes; the next request with the key is a 401). Its spend stays in the
/// ledger.
pub(crate) async fn revoke(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let id = match admin_key(&app, req.headers(), &name) {
        Ok(id) => id,
        Err(res) => return *res,
    };
    // Refused from now on, whatever the store says.
    app.identities.keys.remove(&name);
    app.llm.ungrant(&name);
    tracing::info!(key = %id, "key revoked");
    if let Err(e) = app.identities.store.remove(&name).await {
        return server_error(
            "the key is revoked in this process but could not be removed from the store",
            &*e,
        );
    }
    json(StatusCode::OK, Bytes::from(json!({ "name": name, "deleted": true }).to_string()))
}

/// Per-key usage as counters, set from the ledger when scraped (keys mode
/// only: key names are bounded, unlike open mode's client-chosen tenants).
pub(crate) fn scrape(app: &AppState) {
    if app.identities.mode != AuthMode::Keys {
        return;
    }
    let Some(acc) = app.llm.accounting() else { return };
    let mut by_key: std::collections::HashMap<String, (u64, u64, u64)> = std::collections::HashMap::new();
    for e in acc.ledger().entries() {
        if app.identities.keys.get(&e.tenant).is_none() {
            continue;
        }
        let t = by_key.entry(e.tenant).or_default();
        t.0 = t.0.saturating_add(e.total.input_tokens);
        t.1 = t.1.saturating_add(e.total.output_tokens);
        t.2 = t.2.saturating_add(e.total.cost_micros);
    }
    for (key, (input, output, cost)) in by_key {
        metrics::counter!("llm_tower_key_tokens_total", "key" => key.clone(), "kind" => "input")
            .absolute(input);
        metrics::counter!("llm_tower_key_tokens_total", "key" => key.clone(), "kind" => "output")
            .absolute(output);
        metrics::counter!("llm_tower_key_cost_microusd_total", "key" => key).absolute(cost);
    }
}

/// The caller of a route outside the LLM stack (`/v1/models`): in keys mode
/// its identity, or the 401 refusing it; in open mode nobody.
pub(crate) fn caller(
    app: &AppState,
    headers: &http::HeaderMap,
) -> Result<Option<Arc<Identity>>, Box<Response>> {
    if app.identities.mode != AuthMode::Keys {
        return Ok(None);
    }
    let refused = |e: llm_tower::core::InvalidApiKey| {
        Box::new(ErrorInfo::from_error(&e).into_response().map(AxumBody::new))
    };
    let key = llm_tower::auth::presented_key(headers)
        .ok_or_else(|| refused(llm_tower::core::InvalidApiKey::Missing))?;
    app.identities
        .keys
        .authenticate(key)
        .map(Some)
        .ok_or_else(|| refused(llm_tower::core::InvalidApiKey::Unknown))
}
