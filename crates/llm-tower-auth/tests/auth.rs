//! The auth layer over a service that echoes what it was given.

use std::sync::Arc;

use llm_tower_auth::{
    AuthLayer, Grant, Identity, KeyError, KeyHash, KeyRecord, KeySource, Keys, MemoryKeyStore, contract,
    identity,
};
use llm_tower_core::{ErrorInfo, LlmBody, RequestInfo};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

fn record(name: &str, key: &str, grant: Grant) -> KeyRecord {
    KeyRecord { name: name.into(), hash: KeyHash::of(key), grant, created_unix: 0, source: KeySource::Admin }
}

/// Answers with the tenant the layers below see and counts its calls.
fn stack(
    keys: Keys,
    calls: Arc<std::sync::atomic::AtomicUsize>,
) -> impl Service<http::Request<LlmBody>, Response = http::Response<String>, Error = BoxError> + Clone {
    ServiceBuilder::new().layer(AuthLayer::new(keys)).service_fn(move |req: http::Request<LlmBody>| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let tenant = RequestInfo::get(&req).and_then(|i| i.tenant.clone());
            Ok::<_, BoxError>(http::Response::new(tenant.map_or("-".into(), |t| t.to_string())))
        }
    })
}

fn chat(_model: &str) -> http::request::Builder {
    http::Request::post("/v1/chat/completions")
}

fn body(model: &str) -> LlmBody {
    LlmBody::from(format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#))
}

fn status(err: &BoxError) -> (u16, Option<&'static str>) {
    let info = ErrorInfo::from_error(&**err);
    (info.status.as_u16(), info.code)
}

#[tokio::test]
async fn a_key_is_needed_and_names_the_tenant() {
    let keys = Keys::default();
    keys.insert(record("team-a", "llmt-a", Grant::default())).unwrap();
    keys.insert(record("team-b", "llmt-b", Grant::default())).unwrap();
    let calls = Arc::default();
    let svc = stack(keys, Arc::clone(&calls));

    let none = svc.clone().oneshot(chat("m").body(body("m")).unwrap()).await.unwrap_err();
    assert_eq!(status(&none), (401, Some("invalid_api_key")));
    let wrong = svc
        .clone()
        .oneshot(chat("m").header("authorization", "Bearer llmt-c").body(body("m")).unwrap())
        .await;
    assert_eq!(status(&wrong.unwrap_err()), (401, Some("invalid_api_key")));
    let basic =
        svc.clone().oneshot(chat("m").header("authorization", "Basic llmt-a").body(body("m")).unwrap());
    assert_eq!(status(&basic.await.unwrap_err()).0, 401, "only a bearer token is a key");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0, "refused requests never reach below");

    // The client's tenant header means nothing: the key names the tenant.
    let req = chat("m").header("authorization", "bearer llmt-a").header("x-tenant", "team-b").body(body("m"));
    let res = svc.clone().oneshot(req.unwrap()).await.unwrap();
    assert_eq!(res.extensions().get::<Arc<Identity>>().map(|i| &**i.name()), Some("team-a"));
    assert_eq!(res.into_body(), "team-a");
    let anthropic = chat("m").header("x-api-key", "llmt-b").body(body("m")).unwrap();
    assert_eq!(svc.clone().oneshot(anthropic).await.unwrap().into_body(), "team-b");
    let azure = chat("m").header("api-key", "llmt-b").body(body("m")).unwrap();
    assert_eq!(svc.oneshot(azure).await.unwrap().into_body(), "team-b");
}

#[tokio::test]
async fn a_model_outside_the_grant_is_not_found_and_a_revoked_key_is_refused_at_once() {
    let keys = Keys::default();
    let grant = Grant { models: Some(vec!["gpt-4o-mini".into()]), ..Grant::default() };
    keys.insert(record("team-a", "llmt-a", grant)).unwrap();
    let calls = Arc::default();
    let svc = stack(keys.clone(), Arc::clone(&calls));
    let as_a = |m: &str| chat(m).header("authorization", "Bearer llmt-a").body(body(m)).unwrap();

    let err = svc.clone().oneshot(as_a("gpt-4o")).await.unwrap_err();
    assert_eq!(status(&err), (404, Some("model_not_found")));
    assert!(err.to_string().contains("does not exist or you do not have access"));
    assert_eq!(svc.clone().oneshot(as_a("gpt-4o-mini")).await.unwrap().into_body(), "team-a");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    assert!(keys.remove("team-a").is_some());
    assert_eq!(status(&svc.oneshot(as_a("gpt-4o-mini")).await.unwrap_err()).0, 401);
}

#[tokio::test]
async fn identities_show_their_name_and_prefix_never_the_key() {
    let keys = Keys::default();
    keys.insert(record("team-a", "llmt-very-secret-value", Grant::default())).unwrap();
    let id = keys.authenticate("llmt-very-secret-value").unwrap();
    let hash = KeyHash::of("llmt-very-secret-value").to_string();
    for shown in [format!("{id:?}"), id.to_string(), format!("{keys:?}"), format!("{:?}", id.record())] {
        assert!(!shown.contains("llmt-very-secret-value"), "{shown}");
        assert!(!shown.contains(&hash[7..]), "not even the full hash: {shown}");
    }
    assert_eq!(id.to_string(), format!("team-a ({})", &hash[7..15]));
    assert!(identity(&http::Extensions::new()).is_none());
}

#[test]
fn the_registry_refuses_a_shared_secret_a_bad_name_and_past_its_bound() {
    let keys = Keys::new(2);
    keys.insert(record("a", "k1", Grant::default())).unwrap();
    assert_eq!(
        keys.insert(record("b", "k1", Grant::default())),
        Err(KeyError::DuplicateKey { name: "a".into() })
    );
    assert_eq!(keys.insert(record("has space", "k2", Grant::default())), Err(KeyError::BadName));
    keys.insert(record("b", "k2", Grant::default())).unwrap();
    assert_eq!(keys.insert(record("c", "k3", Grant::default())), Err(KeyError::Full { max: 2 }));
    // Replacing a key's secret retires the old one.
    let old = keys.insert(record("a", "k4", Grant::default())).unwrap();
    assert!(old.is_some());
    assert!(keys.authenticate("k1").is_none());
    assert_eq!(&**keys.authenticate("k4").unwrap().name(), "a");
    assert_eq!(keys.len(), 2);
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    contract::key_store(&MemoryKeyStore::default()).await;
}
