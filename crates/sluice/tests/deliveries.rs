//! Delivering results to sinks over real HTTP: what counts as delivered, how failures are retried
//! (same message id, fresh signature, the receiver's `retry-after`), when a delivery is given up,
//! and that a receiver that does not answer holds up only its own deliveries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::{SECRET, wait_for};
use serde_json::json;
use sluice_engine::Deliverer;
use sluice_engine::sinks::DelivererOptions;
use sluice_store::{Lease, Store, TaskState};

/// Two workloads on one event type: `a` delivers to `sink_a`, `b` to `sink_b` (TOML values).
fn config(sink_a: &str, sink_b: &str) -> sluice_core::Config {
    let toml = format!(
        r#"
[providers.anthropic]
kind = "anthropic"

[[workloads]]
name = "a"
on = "ticket.created"
provider = "anthropic"
model = "claude-haiku-5-5"
max_tokens = 50
prompt = "A: {{{{ payload.subject }}}}"
lane = "stream"
deliver = {sink_a}

[[workloads]]
name = "b"
on = "ticket.created"
provider = "anthropic"
model = "claude-haiku-5-5"
max_tokens = 50
prompt = "B: {{{{ payload.subject }}}}"
lane = "stream"
deliver = {sink_b}
"#
    );
    sluice_core::Config::parse(&toml, "deliveries.toml").unwrap()
}

async fn store(dir: &tempfile::TempDir) -> Store {
    let url = format!("sqlite://{}", dir.path().join("deliveries.db").display());
    Store::open(&url, sluice_store::SqliteDurability::Full).await.unwrap()
}

/// A finished task of `workload`, its result stored as the executor stores it: with a delivery
/// to the workload's sink. Returns the task id.
async fn finished(store: &Store, config: &sluice_core::Config, workload: &str, n: usize) -> String {
    let now = sluice_engine::now_ms();
    let label = format!("{workload}{n}");
    let mut task = common::task(&label, workload, "stream", TaskState::Running);
    task.lease = Some(Lease { owner: "test".into(), expires_at: now + 60_000 });
    let id = task.id.clone();
    let event = common::event_with_task(&label, "ticket.created", json!({"subject": label}), task);
    store.ingest(&[vec![event]]).await.unwrap().remove(0).unwrap();
    let answer = sluice_providers::ChatResponse {
        text: format!("answer {label}"),
        stop_reason: sluice_providers::StopReason::EndTurn,
        usage: sluice_providers::Usage { input_tokens: 9, output_tokens: 2, ..Default::default() },
        model: "claude-haiku-5-5".into(),
        provider_request_id: None,
        rate_limit: None,
    };
    let done =
        sluice_engine::executor::completion_for(config, workload, "stream", &answer, now, Some(1));
    store.complete(&id, 1, &done).await.unwrap().unwrap();
    id
}

/// The delivery of a task as the store holds it: state, attempts, last status.
async fn delivery(store: &Store, task_id: &str) -> (String, i64, Option<i64>) {
    use sqlx::Row as _;
    let Store::Sqlite(pool, _) = store else { panic!("a SQLite store") };
    let row = sqlx::query("SELECT state, attempts, last_status FROM deliveries WHERE task_id = $1")
        .bind(task_id)
        .fetch_one(pool)
        .await
        .unwrap();
    (row.get("state"), row.get("attempts"), row.get("last_status"))
}

/// Quick retries, so that a test of a schedule takes a second.
fn quick(delays_ms: &[u64]) -> DelivererOptions {
    DelivererOptions {
        retry_delays: delays_ms.iter().map(|ms| Duration::from_millis(*ms)).collect(),
        poll: Duration::from_millis(20),
        ..DelivererOptions::default()
    }
}

/// What a receiver saw: each request's headers and when it came.
type Seen = Arc<Mutex<Vec<(HeaderMap, Instant, String)>>>;

/// A receiver on loopback answering each request with the next of `answers` (then 200), at
/// `/hook`; `/elsewhere` answers 200 and is recorded with its method. Returns its base URL.
async fn receiver(answers: Vec<(StatusCode, Vec<(&'static str, &'static str)>)>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    let (hook_seen, other_seen) = (seen.clone(), seen.clone());
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(move |h: HeaderMap, body: String| {
                let (seen, answers) = (hook_seen.clone(), answers.clone());
                async move {
                    seen.lock().unwrap().push((h, Instant::now(), body));
                    let next = answers.lock().unwrap().pop_front();
                    let (status, headers) = next.unwrap_or((StatusCode::OK, Vec::new()));
                    let mut r = status.into_response();
                    for (k, v) in headers {
                        r.headers_mut().insert(k, v.parse().unwrap());
                    }
                    r
                }
            }),
        )
        .route(
            "/elsewhere",
            axum::routing::any(move |m: axum::http::Method, h: HeaderMap| {
                let seen = other_seen.clone();
                async move {
                    seen.lock().unwrap().push((h, Instant::now(), format!("{m} /elsewhere")));
                    "ok"
                }
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (base, seen)
}

fn run(deliverer: Deliverer) -> tokio::sync::watch::Sender<bool> {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(deliverer.run(stopping));
    stop
}

/// A receiver down for a while (one `503` asking for a second's patience, then two plain `503`s)
/// gets the result once it is back: the same message id each time, signed afresh each time, the
/// first retry no sooner than it asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_was_down_gets_the_delivery_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let down = StatusCode::SERVICE_UNAVAILABLE;
    let (base, seen) =
        receiver(vec![(down, vec![("retry-after", "1")]), (down, vec![]), (down, vec![])]).await;
    let config = config(
        &format!(r#"{{ webhook = "{base}/hook", secret_env = "HOOK_SECRET" }}"#),
        r#""none""#,
    );
    let store = store(&dir).await;
    let task = finished(&store, &config, "a", 0).await;
    let env = |name: &str| (name == "HOOK_SECRET").then(|| SECRET.to_owned());
    let deliverer =
        Deliverer::new(store.clone(), Arc::new(config), env, quick(&[50, 50, 50, 50])).unwrap();
    let stop = run(deliverer);

    let (state, attempts, status) = wait_for(Duration::from_secs(10), async || {
        let d = delivery(&store, &task).await;
        (d.0 == "delivered").then_some(d)
    })
    .await;
    assert_eq!((state.as_str(), attempts, status), ("delivered", 4, Some(200)));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    let key = sluice_core::webhook::decode_secret(SECRET).unwrap();
    let id = seen[0].0["webhook-id"].to_str().unwrap().to_owned();
    for (headers, _, body) in &seen {
        assert_eq!(headers["webhook-id"], id.as_str(), "one message, one id");
        let ts: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
        let signature = headers["webhook-signature"].to_str().unwrap();
        assert!(sluice_core::webhook::matches(&key, &id, ts, body.as_bytes(), signature));
        assert!(body.contains(&task));
    }
    let asked = seen[1].1 - seen[0].1;
    assert!(asked >= Duration::from_millis(950), "retried after {asked:?}, asked for 1 s");
    let _ = stop.send(true);
}

/// A receiver that never stops failing: the delivery is given up after the schedule's last
/// retry, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_given_up_after_its_last_retry() {
    let dir = tempfile::tempdir().unwrap();
    let failing = (StatusCode::INTERNAL_SERVER_ERROR, vec![]);
    let (base, seen) = receiver(vec![failing.clone(), failing.clone(), failing]).await;
    let config = config(&format!(r#"{{ webhook = "{base}/hook" }}"#), r#""none""#);
    let store = store(&dir).await;
    let task = finished(&store, &config, "a", 0).await;
    let deliverer =
        Deliverer::new(store.clone(), Arc::new(config), |_| None, quick(&[20, 20])).unwrap();
    let stop = run(deliverer);

    let (_, attempts, status) = wait_for(Duration::from_secs(10), async || {
        let d = delivery(&store, &task).await;
        (d.0 == "failed").then_some(d)
    })
    .await;
    assert_eq!((attempts, status), (3, Some(500)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.lock().unwrap().len(), 3, "nothing after it was given up");
    let _ = stop.send(true);
}

/// 410 Gone says the endpoint was removed: the delivery fails at once, not after hours of
/// retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_gone_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (base, seen) = receiver(vec![(StatusCode::GONE, vec![])]).await;
    let config = config(&format!(r#"{{ webhook = "{base}/hook" }}"#), r#""none""#);
    let store = store(&dir).await;
    let task = finished(&store, &config, "a", 0).await;
    let deliverer =
        Deliverer::new(store.clone(), Arc::new(config), |_| None, quick(&[20, 20])).unwrap();
    let stop = run(deliverer);

    let (_, attempts, status) = wait_for(Duration::from_secs(10), async || {
        let d = delivery(&store, &task).await;
        (d.0 == "failed").then_some(d)
    })
    .await;
    assert_eq!((attempts, status), (1, Some(410)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.lock().unwrap().len(), 1);
    let _ = stop.send(true);
}

/// A redirect is not a delivery: followed, it would re-send as a bodiless GET and count that
/// GET's 200 as delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_taken_for_a_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let moved = (StatusCode::FOUND, vec![("location", "/elsewhere")]);
    let (moving, moving_seen) = receiver(vec![moved.clone(), moved]).await;
    let config = config(&format!(r#"{{ webhook = "{moving}/hook" }}"#), r#""none""#);
    let store = store(&dir).await;
    let task = finished(&store, &config, "a", 0).await;
    let deliverer =
        Deliverer::new(store.clone(), Arc::new(config), |_| None, quick(&[10_000])).unwrap();
    let stop = run(deliverer);

    let (state, attempts, status) = wait_for(Duration::from_secs(10), async || {
        let d = delivery(&store, &task).await;
        (d.1 >= 1 && d.0 != "sending").then_some(d)
    })
    .await;
    assert_eq!((state.as_str(), attempts, status), ("pending", 1, Some(302)));
    let paths: Vec<String> = moving_seen.lock().unwrap().iter().map(|s| s.2.clone()).collect();
    assert!(
        !paths.iter().any(|p| p.contains("/elsewhere")),
        "the redirect was followed: {paths:?}"
    );
    let _ = stop.send(true);
}

/// A webhook whose signing secret is missing is not sent unsigned: its delivery waits, retried,
/// and says why; the deliveries of other workloads go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_without_its_secret_is_held_not_sent_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let (base, seen) = receiver(vec![]).await;
    let file = dir.path().join("b.jsonl");
    let config = config(
        &format!(r#"{{ webhook = "{base}/hook", secret_env = "HOOK_SECRET" }}"#),
        &format!(r#"{{ file = "{}" }}"#, file.display()),
    );
    let store = store(&dir).await;
    let held = finished(&store, &config, "a", 0).await;
    let sent = finished(&store, &config, "b", 0).await;
    let deliverer =
        Deliverer::new(store.clone(), Arc::new(config), |_| None, quick(&[10_000])).unwrap();
    let stop = run(deliverer);

    wait_for(Duration::from_secs(10), async || {
        (delivery(&store, &sent).await.0 == "delivered").then_some(())
    })
    .await;
    let (state, attempts, _) = wait_for(Duration::from_secs(10), async || {
        let d = delivery(&store, &held).await;
        (d.0 == "pending").then_some(d)
    })
    .await;
    assert_eq!((state.as_str(), attempts), ("pending", 1));
    assert!(seen.lock().unwrap().is_empty(), "nothing went out unsigned");
    let detail = store.task(&held).await.unwrap().unwrap();
    assert_eq!(detail.task.state, TaskState::Succeeded);
    let _ = stop.send(true);
}

/// A receiver that takes a connection and never answers holds the deliveries to it, one slot
/// each, and not the others': a file sink's lines are all written while the webhooks wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_holds_up_only_its_own_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections, reads nothing, answers nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let file = dir.path().join("b.jsonl");
    let config = config(
        &format!(r#"{{ webhook = "{silent_url}" }}"#),
        &format!(r#"{{ file = "{}" }}"#, file.display()),
    );
    let store = store(&dir).await;
    // The silent receiver's deliveries are older: a claim takes them first.
    for n in 0..6 {
        finished(&store, &config, "a", n).await;
    }
    let mut written = Vec::new();
    for n in 0..12 {
        written.push(finished(&store, &config, "b", n).await);
    }
    let opts = DelivererOptions {
        in_flight: 8,
        attempt_timeout: Duration::from_secs(20),
        ..quick(&[10_000])
    };
    let deliverer = Deliverer::new(store.clone(), Arc::new(config), |_| None, opts).unwrap();
    let stop = run(deliverer);

    // Well within the webhooks' 20 s timeout: had the file's deliveries waited for a slot
    // held by a silent webhook, none past the first two could have been written by then.
    let lines = wait_for(Duration::from_secs(10), async || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        (text.lines().count() == written.len()).then_some(text)
    })
    .await;
    for id in &written {
        assert!(lines.contains(id.as_str()), "{id} not written");
        // A line is synced before its delivery is marked delivered: the mark may trail it.
        wait_for(Duration::from_secs(5), async || {
            (delivery(&store, id).await.0 == "delivered").then_some(())
        })
        .await;
    }
    for line in lines.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    let _ = stop.send(true);
}

/// A failed delivery is listed and can be sent again over the API: the receiver was gone (410),
/// is back, and gets the result with the same `webhook-id`; only a failed delivery is resent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_listed_and_sent_again_on_request() {
    let (receiver, seen) = receiver(vec![(StatusCode::GONE, vec![])]).await;
    let w = common::world(sluice_sim::SimConfig::instant(), Vec::new(), |sim, _| {
        format!(
            r#"
[providers.anthropic]
kind = "anthropic"
base_url = "{sim}"

[[workloads]]
name = "triage"
on = "ticket.created"
provider = "anthropic"
model = "claude-haiku-5-5"
max_tokens = 50
prompt = "Triage {{{{ payload.subject }}}}"
lane = "stream"
deliver = {{ webhook = "{receiver}/hook?token=receivers-secret" }}
"#
        )
    })
    .await;
    w.post_events(&json!({"type": "ticket.created", "payload": {"subject": "refund"}})).await;
    let get = |path: String| {
        let http = w.http.clone();
        async move {
            let r = http.get(path).send().await.unwrap();
            (r.status(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let failed = wait_for(Duration::from_secs(15), async || {
        let (status, body) = get(format!("{}/v1/deliveries?state=failed", w.base)).await;
        assert_eq!(status, StatusCode::OK);
        body["deliveries"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(failed["last_status"], 410);
    assert_eq!(failed["attempts"], 1);
    let sink = failed["sink"].as_str().unwrap();
    assert!(sink.starts_with("webhook:http://127.0.0.1:") && sink.ends_with("/…"), "{sink}");
    assert!(!sink.contains("receivers-secret") && !sink.contains("/hook"), "{sink}");
    let id = failed["id"].as_str().unwrap();

    let retry = |id: String| {
        let http = w.http.clone();
        let url = format!("{}/v1/deliveries/{id}/retry", w.base);
        async move {
            let r = http.post(url).send().await.unwrap();
            (r.status(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = retry(id.to_owned()).await;
    assert_eq!((status, body["state"].as_str()), (StatusCode::ACCEPTED, Some("pending")), "{body}");
    let delivered = wait_for(Duration::from_secs(15), async || {
        let (_, body) = get(format!("{}/v1/deliveries?state=delivered", w.base)).await;
        body["deliveries"].as_array().unwrap().first().cloned()
    })
    .await;
    // Attempts in all: the one given up, and the one sent on request.
    assert_eq!((delivered["id"].as_str(), delivered["attempts"].as_i64()), (Some(id), Some(2)));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0["webhook-id"], seen[1].0["webhook-id"], "the same message, resent");

    let (status, body) = retry(id.to_owned()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("is delivered"), "{body}");
    let (status, _) = retry("dlv_unknown".to_owned()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = get(format!("{}/v1/deliveries?state=lost", w.base)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["message"].as_str().unwrap().contains("pending, sending"), "{body}");
    let _ = w.stop.send(true);
}
