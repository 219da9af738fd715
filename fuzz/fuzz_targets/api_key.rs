//! API-key authentication: the `Authorization: Bearer jgk_...` check every API route runs.
//!
//! `api::auth::authenticate` is private; its only public entry is the axum extractor
//! `Caller::from_request_parts`, driven here with a real `AppState` (example configuration,
//! SQLite store and audit log in a scratch directory) exactly as the router calls it.
//!
//! Input: `<Authorization header value>` [`\n<request path>`]. Besides "never panics":
//! - the caller is admitted exactly when the header is `Bearer `/`bearer ` + optional
//!   whitespace + alice's example key + optional whitespace, and is then alice;
//! - bob's key is always refused: his `api_key_expires` is in the past;
//! - any refusal is a 401 (a fresh limiter per call, so never the throttled 429), never a 500,
//!   and its message does not echo a key.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::extract::FromRequestParts as _;
use axum::http::StatusCode;
use jitgate::api::AppState;
use jitgate::api::auth::Caller;
use jitgate::config::Config;
use libfuzzer_sys::fuzz_target;

const ALICE_KEY: &str = "jgk_example_alice_do_not_use_in_production";
const BOB_KEY: &str = "jgk_example_bob_do_not_use_in_production";

fuzz_target!(|data: &[u8]| {
    let (header, path) = jitgate_fuzz::split_line(data);
    let state = state();
    let mut req = http::Request::builder().method("GET");
    req = match std::str::from_utf8(path) {
        Ok(p) if p.starts_with('/') && p.parse::<http::Uri>().is_ok() => req.uri(p),
        _ => req.uri("/api/v1/whoami"),
    };
    let header_value = http::HeaderValue::from_bytes(header).ok();
    if let Some(v) = &header_value {
        req = req.header(http::header::AUTHORIZATION, v.clone());
    }
    let (mut parts, ()) = req.body(()).expect("request").into_parts();
    // A fresh limiter per call: the rate limit is not what is being tested.
    let state = AppState {
        auth_limiter: Arc::default(),
        ..state.clone()
    };
    let result = jitgate_fuzz::runtime().block_on(Caller::from_request_parts(&mut parts, &state));

    if jitgate_fuzz::debug() {
        eprintln!(
            "api key: {:?}",
            result
                .as_ref()
                .map(|c| c.0.name.to_string())
                .map_err(|e| &e.message)
        );
    }
    let expect_alice = header_value
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .is_some_and(|k| k.trim() == ALICE_KEY);
    match result {
        Ok(Caller(user)) => {
            assert!(
                expect_alice,
                "admitted a header that does not carry alice's key"
            );
            assert_eq!(user.name.as_str(), "alice");
        }
        Err(e) => {
            assert!(!expect_alice, "refused alice's valid key: {}", e.message);
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{}", e.message);
            assert!(!e.message.contains(BOB_KEY) && !e.message.contains(ALICE_KEY));
        }
    }
});

/// The API state, built once: the example configuration with bob's key expired.
fn state() -> &'static AppState {
    static STATE: OnceLock<AppState> = OnceLock::new();
    STATE.get_or_init(|| {
        let dir = jitgate_fuzz::scratch_dir("api-key");
        let text = jitgate_fuzz::EXAMPLE_CONFIG.replace(
            "name = \"bob\"\n",
            "name = \"bob\"\napi_key_expires = \"2001-01-01\"\n",
        );
        assert!(text.contains("api_key_expires"));
        let cfg = Config::from_text(&text, &jitgate_fuzz::example_config_path())
            .unwrap_or_else(|e| panic!("fuzz configuration: {e}"));
        jitgate_fuzz::runtime().block_on(build(cfg, &dir))
    })
}

async fn build(cfg: Config, dir: &Path) -> AppState {
    use jitgate::store::Store;
    let cfg = Arc::new(cfg);
    let store: Arc<dyn Store> = Arc::new(
        jitgate::store::sqlite::SqliteStore::open(&dir.join("jitgate.db")).expect("open store"),
    );
    let (key, _) = jitgate::crypto::SigningKey::generate();
    let audit = Arc::new(
        jitgate::audit::Log::open(dir, Arc::new(key), store.clone())
            .await
            .expect("open audit log"),
    );
    let policy = Arc::new(jitgate::policy::Engine::load(&cfg).expect("load policies"));
    let bus: Arc<dyn jitgate::grant::bus::GrantBus> =
        Arc::new(jitgate::grant::bus::LocalBus::default());
    let metrics = Arc::new(jitgate::metrics::Metrics::new());
    let grants = Arc::new(jitgate::grant::Service::new(
        cfg.clone(),
        store.clone(),
        audit.clone(),
        policy,
        bus,
    ));
    let sessions = jitgate::session::Registry::new(
        tokio_util::sync::CancellationToken::new(),
        store,
        audit,
        metrics.clone(),
        dir.join("recordings"),
        std::time::Duration::from_secs(60),
    );
    AppState {
        grants,
        metrics,
        webhook_secret: None,
        metrics_token: None,
        auth_limiter: Arc::default(),
        sessions,
    }
}
