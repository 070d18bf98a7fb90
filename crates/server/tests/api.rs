//! The HTTP API over real sockets, on SQLite and (when `SLUICE_TEST_DATABASE_URL` is set)
//! PostgreSQL: fan-out, idempotency, bad input, auth, signed webhooks, pagination.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)] // test code: a failure should stop loudly

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_core::Config;
use sluice_server::auth::Tokens;
use sluice_server::hooks::{decode_secret, sign};
use sluice_server::ingest::Committer;
use sluice_server::{AppState, Running, ServerOptions};
use sluice_store::{SqliteDurability, Store};

const CONFIG: &str = r#"
min_daily_savings = 0.5

[providers.anthropic]
kind = "anthropic"

[[workloads]]
name = "triage"
on = "ticket.created"
provider = "anthropic"
model = "claude-haiku-5-5"
prompt = "{{ payload.subject }}: {{ payload.body }}"
max_tokens = 100
needed_within = "2m"
delay_cost = "significant"
volume_per_day = 1000

[[workloads]]
name = "digest"
on = "ticket.created"
after = "triage"
provider = "anthropic"
model = "claude-sonnet-5-5"
prompt = "{{ after.output }} {{ payload.customer.name }}"
max_tokens = 300
needed_within = "24h"
delay_cost = "minimal"
volume_per_day = 5000

[[workloads]]
name = "fraud"
on = "payment.created"
provider = "anthropic"
model = "claude-haiku-5-5"
prompt = "{{ payload.amount }}"
max_tokens = 50
needed_within = "10s"
volume_per_day = 100

[hooks.helpdesk]
secret_env = "HELPDESK_SECRET"
type_field = "/type"
payload_field = "/data"
[hooks.helpdesk.types]
"ticket.opened" = "ticket.created"
"#;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "test-token-1";

struct Api {
    base: String,
    http: reqwest::Client,
    token: Option<&'static str>,
    running: Option<Running>,
    _dir: Option<tempfile::TempDir>,
}

impl Api {
    async fn start(backend: &str, tokens: &str) -> Option<Api> {
        let (url, dir) = match backend {
            "sqlite" => {
                let dir = tempfile::tempdir().unwrap();
                (format!("sqlite://{}", dir.path().join("s.db").display()), Some(dir))
            }
            _ => {
                let Ok(base) = std::env::var("SLUICE_TEST_DATABASE_URL") else {
                    eprintln!(
                        "skipped: SLUICE_TEST_DATABASE_URL is not set, so the PostgreSQL API tests did not run"
                    );
                    return None;
                };
                (Store::isolated_postgres_url(&base).await.unwrap(), None)
            }
        };
        let store = Store::open(&url, SqliteDurability::Full).await.unwrap();
        let config = Config::parse(CONFIG, "test.toml").unwrap();
        let (hook_keys, _) = sluice_server::hook_keys(&config, |name| {
            (name == "HELPDESK_SECRET").then(|| SECRET.to_owned())
        });
        let (committer, committers) = Committer::start(store.clone(), 2);
        let state = AppState {
            config: Arc::new(config),
            store,
            committer,
            tokens: Tokens::parse(tokens),
            hook_keys,
            metrics: sluice_server::metrics_handle(),
            options: ServerOptions { max_body_bytes: 64 * 1024, ..Default::default() },
            hub: None,
            wake: None,
            turnarounds: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running =
            sluice_server::start(listener, state, committers, std::future::pending()).unwrap();
        Some(Api {
            base: format!("http://{}", running.addr),
            http: client(),
            token: (!tokens.is_empty()).then_some(TOKEN),
            running: Some(running),
            _dir: dir,
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn post(&self, body: Value) -> (StatusCode, Value) {
        let r = self.req(reqwest::Method::POST, "/v1/events").json(&body).send().await.unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.unwrap();
        }
    }
}

/// reqwest is built without a default TLS provider (sluice picks ring once for the whole binary).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn ticket(key: Option<&str>) -> Value {
    let mut v = json!({
        "type": "ticket.created",
        "payload": {"subject": "Refund", "body": "Charged twice", "customer": {"name": "Ada"}},
    });
    if let Some(k) = key {
        v["idempotency_key"] = json!(k);
    }
    v
}

macro_rules! api_suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            async fn api() -> Option<Api> {
                Api::start(stringify!($backend), "").await
            }

            #[tokio::test]
            async fn an_event_fans_out_into_tasks_in_different_lanes() {
                let Some(api) = api().await else { return };
                let (status, body) = api.post(ticket(None)).await;
                assert_eq!(status, StatusCode::ACCEPTED, "{body}");
                let tasks = body["tasks"].as_array().unwrap();
                assert_eq!(tasks.len(), 2);
                assert_eq!((tasks[0]["workload"].as_str(), tasks[0]["lane"].as_str()), (Some("triage"), Some("stream")));
                assert_eq!((tasks[1]["workload"].as_str(), tasks[1]["lane"].as_str()), (Some("digest"), Some("batch")));
                assert_eq!(tasks[0]["stream_url"], format!("/v1/tasks/{}/stream", tasks[0]["id"].as_str().unwrap()));
                assert!(tasks[1].get("stream_url").is_none());
                assert_eq!(tasks[1]["state"], "pending");

                let (status, event) = api.get(&format!("/v1/events/{}", body["event_id"].as_str().unwrap())).await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(event["payload"]["subject"], "Refund");
                assert_eq!(event["tasks"].as_array().unwrap().len(), 2);

                let id = tasks[1]["id"].as_str().unwrap();
                let (status, task) = api.get(&format!("/v1/tasks/{id}")).await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(task["after_task_id"], tasks[0]["id"]);
                assert!(task["reason"].as_str().unwrap().contains("a batch fits"), "{task}");
                assert_eq!(task["decision"]["lane"], "batch");
                assert_eq!(task["cost_usd"], 0.0);
                api.stop().await;
            }

            #[tokio::test]
            async fn arrays_store_every_event_or_none() {
                let Some(api) = api().await else { return };
                let (status, body) = api.post(json!([ticket(None), {"type": "payment.created", "payload": {"amount": 12}}])).await;
                assert_eq!(status, StatusCode::ACCEPTED, "{body}");
                assert_eq!(body["events"].as_array().unwrap().len(), 2);
                // One bad event: the whole request is refused and nothing of it is stored.
                let (status, body) = api.post(json!([ticket(None), {"type": "payment.created", "payload": {}}])).await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
                assert!(body["error"]["message"].as_str().unwrap().contains("events[1]"), "{body}");
                let (_, page) = api.get("/v1/tasks?limit=100").await;
                assert_eq!(page["tasks"].as_array().unwrap().len(), 3);
                api.stop().await;
            }

            #[tokio::test]
            async fn idempotency_replays_the_same_body_and_refuses_another() {
                let Some(api) = api().await else { return };
                let (s1, first) = api.post(ticket(Some("tkt-1"))).await;
                let r = api.req(reqwest::Method::POST, "/v1/events").json(&ticket(Some("tkt-1"))).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                assert_eq!(r.headers().get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
                let again: Value = r.json().await.unwrap();
                assert_eq!(s1, StatusCode::ACCEPTED);
                assert_eq!(again["event_id"], first["event_id"]);
                assert_eq!(again["tasks"], first["tasks"]);
                assert_eq!(again["replayed"], true);

                let mut different = ticket(Some("tkt-1"));
                different["payload"]["subject"] = json!("Another");
                let (status, body) = api.post(different).await;
                assert_eq!(status, StatusCode::CONFLICT);
                assert_eq!(body["error"]["code"], "idempotency_conflict");
                assert!(body["error"]["message"].as_str().unwrap().contains(first["event_id"].as_str().unwrap()));

                // The Idempotency-Key header works for a single event too.
                let post = |k: &str| api.req(reqwest::Method::POST, "/v1/events").header("idempotency-key", k).json(&ticket(None)).send();
                let a: Value = post("hdr-1").await.unwrap().json().await.unwrap();
                let b: Value = post("hdr-1").await.unwrap().json().await.unwrap();
                assert_eq!(a["event_id"], b["event_id"]);
                // A header key that would be ignored is refused: on an array, beside another key
                // in the event, or not ASCII.
                let refused = |r: reqwest::Response, code: &'static str| async move {
                    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
                    let body: Value = r.json().await.unwrap();
                    assert_eq!(body["error"]["code"], code, "{body}");
                };
                let with_header = |k: &[u8], body: Value| {
                    let k = reqwest::header::HeaderValue::from_bytes(k).unwrap();
                    api.req(reqwest::Method::POST, "/v1/events").header("idempotency-key", k).json(&body).send()
                };
                refused(with_header(b"hdr-2", json!([ticket(None)])).await.unwrap(), "idempotency_key_header_on_array").await;
                refused(with_header(b"hdr-3", ticket(Some("tkt-9"))).await.unwrap(), "idempotency_key_mismatch").await;
                refused(with_header("clé".as_bytes(), ticket(None)).await.unwrap(), "invalid_idempotency_key").await;
                let (_, page) = api.get("/v1/tasks?limit=100").await;
                assert_eq!(page["tasks"].as_array().unwrap().len(), 4, "nothing more stored");
                api.stop().await;
            }

            #[tokio::test]
            async fn bad_input_gets_a_clear_error_and_changes_nothing() {
                let Some(api) = api().await else { return };
                let raw = |body: &'static str| api.req(reqwest::Method::POST, "/v1/events").header("content-type", "application/json").body(body).send();

                let r = raw("{\"type\": ").await.unwrap();
                assert_eq!(r.status(), StatusCode::BAD_REQUEST);
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "invalid_json");
                assert!(body["error"]["message"].as_str().unwrap().contains("line 1"), "{body}");

                let big = format!("{{\"type\":\"ticket.created\",\"payload\":{{\"body\":\"{}\"}}}}", "x".repeat(70 * 1024));
                let r = api.req(reqwest::Method::POST, "/v1/events").body(big).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "body_too_large");

                let (status, body) = api.post(json!({"type": "ticket.create", "payload": {}})).await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
                assert_eq!(body["error"]["code"], "unknown_event_type");
                assert!(body["error"]["message"].as_str().unwrap().contains("did you mean \"ticket.created\""), "{body}");
                assert_eq!(body["error"]["detail"]["known_event_types"], json!(["payment.created", "ticket.created"]));

                let (status, body) = api.post(json!({"type": "ticket.created", "payload": {"subject": "s", "body": "b"}})).await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
                assert_eq!(body["error"]["code"], "payload_does_not_render");
                assert!(body["error"]["message"].as_str().unwrap().contains("payload.customer.name"), "{body}");

                let (status, body) = api.post(json!({"type": "ticket.created"})).await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
                assert!(body["error"]["message"].as_str().unwrap().contains("missing field `payload`"), "{body}");

                let (status, body) = api.post(json!({"type": "payment.created", "payload": {"amount": 1}, "needed_within": "soon"})).await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
                assert!(body["error"]["message"].as_str().unwrap().contains("\"soon\""), "{body}");

                let (status, body) = api.get("/v1/tasks?state=done").await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
                assert!(body["error"]["message"].as_str().unwrap().contains("queued"), "{body}");
                let (status, _) = api.get("/v1/tasks/tsk_nope").await;
                assert_eq!(status, StatusCode::NOT_FOUND);

                // NUL, which PostgreSQL's text cannot hold: refused before the store, so that it
                // cannot fail a commit other requests share, nor turn a lookup into a 503.
                let (status, body) = api.post(json!({"type": "payment.created", "payload": {"amount": 1}, "idempotency_key": "a\u{0}b"})).await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
                assert!(body["error"]["message"].as_str().unwrap().contains("idempotency_key"), "{body}");
                for path in ["/v1/tasks/tsk%00", "/v1/events/evt%00", "/v1/batches/bat%00"] {
                    let (status, _) = api.get(path).await;
                    assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
                }
                for query in ["cursor=%00", "workload=tri%00age"] {
                    let (status, body) = api.get(&format!("/v1/tasks?{query}")).await;
                    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
                    assert_eq!(body["error"]["code"], "invalid_query", "{query}");
                }

                let (_, page) = api.get("/v1/tasks").await;
                assert!(page["tasks"].as_array().unwrap().is_empty(), "nothing stored: {page}");
                api.stop().await;
            }

            #[tokio::test]
            async fn tokens_guard_every_v1_route() {
                let Some(mut api) = Api::start(stringify!($backend), "other, test-token-1").await else { return };
                let (status, _) = api.post(ticket(None)).await;
                assert_eq!(status, StatusCode::ACCEPTED);
                api.token = None;
                let (status, body) = api.post(ticket(None)).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                assert!(body["error"]["message"].as_str().unwrap().contains("Bearer"), "{body}");
                let (status, _) = api.get("/v1/tasks").await;
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                api.token = Some("wrong");
                let (status, body) = api.get("/v1/tasks").await;
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                assert!(!body.to_string().contains("wrong"), "the token is never echoed");
                // Health needs no token.
                let r = api.http.get(format!("{}/healthz", api.base)).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                api.stop().await;
            }

            #[tokio::test]
            async fn signed_webhooks_are_verified_and_deduplicated() {
                let Some(api) = Api::start(stringify!($backend), TOKEN).await else { return };
                let key = decode_secret(SECRET).unwrap();
                let body = serde_json::to_vec(&json!({
                    "type": "ticket.opened",
                    "data": {"subject": "Login", "body": "SSO fails", "customer": {"name": "Bo"}},
                })).unwrap();
                let now = chrono::Utc::now().timestamp();
                let send = |id: &str, ts: i64, sig: String, body: Vec<u8>| {
                    api.http
                        .post(format!("{}/v1/hooks/helpdesk", api.base))
                        .header("webhook-id", id)
                        .header("webhook-timestamp", ts.to_string())
                        .header("webhook-signature", sig)
                        .body(body)
                        .send()
                };
                // Valid: no bearer token needed, the signature authenticates.
                let r = send("msg_1", now, sign(&key, "msg_1", now, &body), body.clone()).await.unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                let first: Value = r.json().await.unwrap();
                assert_eq!(first["tasks"].as_array().unwrap().len(), 2);

                // Replayed: the same delivery again is the same event.
                let r = send("msg_1", now, sign(&key, "msg_1", now, &body), body.clone()).await.unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                let again: Value = r.json().await.unwrap();
                assert_eq!(again["event_id"], first["event_id"]);
                assert_eq!(again["replayed"], true);

                // Wrong: signed with another secret, or the body changed after signing.
                let other = decode_secret("whsec_c2VjcmV0LXNlY3JldA==").unwrap();
                let r = send("msg_2", now, sign(&other, "msg_2", now, &body), body.clone()).await.unwrap();
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
                let e: Value = r.json().await.unwrap();
                assert_eq!(e["error"]["code"], "bad_signature");
                let mut tampered = body.clone();
                tampered.extend_from_slice(b" ");
                let r = send("msg_3", now, sign(&key, "msg_3", now, &body), tampered).await.unwrap();
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

                // Stale: correctly signed ten minutes ago.
                let old = now - 600;
                let r = send("msg_4", old, sign(&key, "msg_4", old, &body), body.clone()).await.unwrap();
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
                let e: Value = r.json().await.unwrap();
                assert_eq!(e["error"]["code"], "stale_timestamp");

                let r = api.http.post(format!("{}/v1/hooks/nobody", api.base)).body("{}").send().await.unwrap();
                assert_eq!(r.status(), StatusCode::NOT_FOUND);

                let (_, page) = api.get("/v1/tasks?limit=100").await;
                assert_eq!(page["tasks"].as_array().unwrap().len(), 2, "only the one valid delivery is stored");
                api.stop().await;
            }

            #[tokio::test]
            async fn listing_pages_with_a_cursor_and_filters() {
                let Some(api) = api().await else { return };
                let events: Vec<Value> = (0..7).map(|_| ticket(None)).collect();
                let (status, _) = api.post(Value::Array(events)).await;
                assert_eq!(status, StatusCode::ACCEPTED);
                let mut seen = HashMap::new();
                let mut path = "/v1/tasks?limit=4".to_owned();
                for _ in 0..10 {
                    let (status, page) = api.get(&path).await;
                    assert_eq!(status, StatusCode::OK);
                    for t in page["tasks"].as_array().unwrap() {
                        assert!(seen.insert(t["id"].as_str().unwrap().to_owned(), ()).is_none(), "no task twice");
                    }
                    match page["next_cursor"].as_str() {
                        Some(c) => path = format!("/v1/tasks?limit=4&cursor={c}"),
                        None => break,
                    }
                }
                assert_eq!(seen.len(), 14);
                let (_, pending) = api.get("/v1/tasks?state=pending&limit=100").await;
                assert_eq!(pending["tasks"].as_array().unwrap().len(), 7);
                let (_, triage) = api.get("/v1/tasks?workload=triage&state=queued&limit=100").await;
                assert_eq!(triage["tasks"].as_array().unwrap().len(), 7);
                let (status, _) = api.get("/v1/tasks?limit=0").await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
                api.stop().await;
            }

            #[tokio::test]
            async fn concurrent_requests_share_commits_and_all_land() {
                let Some(api) = api().await else { return };
                let api = Arc::new(api);
                let mut joins = Vec::new();
                for i in 0..200 {
                    let api = api.clone();
                    joins.push(tokio::spawn(async move { api.post(ticket(Some(&format!("c-{i}")))).await.0 }));
                }
                for j in joins {
                    assert_eq!(j.await.unwrap(), StatusCode::ACCEPTED);
                }
                let (_, page) = api.get("/v1/tasks?limit=500").await;
                assert_eq!(page["tasks"].as_array().unwrap().len(), 400);
                let text = api.http.get(format!("{}/metrics", api.base)).send().await.unwrap().text().await.unwrap();
                assert!(text.contains("sluice_ingest_group_size"), "{text}");
            }
        }
    };
}

api_suite!(sqlite);
api_suite!(postgres);

#[test]
fn a_source_whose_secret_is_empty_has_no_key() {
    // An empty key would let anyone sign deliveries: the source is listed as missing instead
    // (its deliveries get 503), whether the variable is empty or holds a bare `whsec_`.
    let config = Config::parse(CONFIG, "test.toml").unwrap();
    for secret in ["", "whsec_", "not base64!"] {
        let (keys, missing) = sluice_server::hook_keys(&config, |name| {
            (name == "HELPDESK_SECRET").then(|| secret.into())
        });
        assert!(keys.is_empty(), "{secret:?}");
        assert_eq!(missing, ["helpdesk (HELPDESK_SECRET)"], "{secret:?}");
    }
}

#[tokio::test]
async fn every_example_event_is_accepted_by_the_example_config() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config = Config::parse(
        &std::fs::read_to_string(root.join("examples/sluice.toml")).unwrap(),
        "examples/sluice.toml",
    )
    .unwrap();
    let events = std::fs::read_to_string(root.join("examples/events.jsonl")).unwrap();
    let now = chrono::Utc::now();
    let mut tasks = 0;
    for (i, line) in events.lines().enumerate() {
        let (evs, _) = sluice_server::plan::parse_body(line.as_bytes(), None)
            .unwrap_or_else(|e| panic!("line {}: {e:?}", i + 1));
        for ev in evs {
            let planned =
                sluice_server::plan::plan(&config, ev, None, now, &Default::default(), "api", None)
                    .unwrap_or_else(|e| panic!("line {}: {}", i + 1, e.message));
            tasks += planned.tasks.len();
        }
    }
    assert!(tasks > events.lines().count(), "some events fan out into several tasks");
}
