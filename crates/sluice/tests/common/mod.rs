//! What the end-to-end tests share: the whole service in one process, and small helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)] // test code

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use futures::StreamExt;
use serde_json::Value;
use sluice_core::Config;
use sluice_engine::{Batcher, BatcherOptions, Deliverer, Executor, ExecutorOptions, Hub};
use sluice_server::auth::Tokens;
use sluice_server::ingest::Committer;
use sluice_server::{AppState, ServerOptions};
use sluice_sim::{RunningSim, Sim, SimConfig};
use sluice_store::{SqliteDurability, Store};

pub const SECRET: &str = "whsec_c2x1aWNlLWUyZS13ZWJob29rLXNlY3JldA==";

pub struct World {
    pub base: String,
    pub http: reqwest::Client,
    pub sim: RunningSim,
    pub store: Store,
    pub hooks: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    _dir: tempfile::TempDir,
    pub stop: tokio::sync::watch::Sender<bool>,
}

/// The whole service in one process over real sockets: the simulator, a webhook receiver, the
/// store, the executor, the batcher, the deliverer and the HTTP API, on the config `config(sim,
/// hook)` makes.
pub async fn world(
    sim_config: SimConfig,
    extra_headers: Vec<(String, String)>,
    config: impl Fn(&str, &str) -> String,
) -> World {
    world_with(sim_config, quick_options(extra_headers), config).await
}

/// The executor's options of [`world`]: quick retries, so that tests of faults take seconds,
/// and three attempts a task.
pub fn quick_options(extra_headers: Vec<(String, String)>) -> ExecutorOptions {
    let retry = sluice_providers::RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(1),
        ..sluice_providers::RetryPolicy::default()
    };
    ExecutorOptions { extra_headers, retry, max_attempts: 3, ..ExecutorOptions::default() }
}

/// [`world`] with the executor's options given.
pub async fn world_with(
    sim_config: SimConfig,
    opts: ExecutorOptions,
    config: impl Fn(&str, &str) -> String,
) -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Sim::start(sim_config, "127.0.0.1:0").await.unwrap();
    // A webhook receiver that records what it gets.
    let hooks: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
    let seen = hooks.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: HeaderMap, b: Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((h, b));
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });

    let config = Arc::new(Config::parse(&config(sim.base_url(), &hook), "e2e.toml").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &format!("sqlite://{}", dir.path().join("e2e.db").display()),
        SqliteDurability::Full,
    )
    .await
    .unwrap();
    let env = |name: &str| match name {
        "ANTHROPIC_API_KEY" | "OPENAI_API_KEY" => Some("sk-e2e".to_owned()),
        "E2E_HOOK_SECRET" => Some(SECRET.to_owned()),
        _ => None,
    };
    let hub = Hub::default();
    let executor = Executor::new(store.clone(), config.clone(), hub.clone(), env, opts).unwrap();
    let wake = executor.waker();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let handoff = executor.handoff();
    let budget = executor.budget();
    tokio::spawn(executor.run(stopping.clone()));
    let batch_opts = BatcherOptions {
        tick: Duration::from_millis(100),
        poll_min: Duration::from_millis(100),
        poll_max: Duration::from_millis(400),
        ..BatcherOptions::default()
    };
    let batcher = Batcher::new(store.clone(), config.clone(), env, Some(wake.clone()), batch_opts)
        .unwrap()
        .with_budget(budget);
    let turnarounds = batcher.turnarounds();
    tokio::spawn(batcher.run(stopping.clone()));
    tokio::spawn(
        Deliverer::new(store.clone(), config.clone(), env, Default::default())
            .unwrap()
            .run(stopping),
    );
    let (committer, committers) = Committer::with_handoff(store.clone(), 1, Some(handoff));
    let state = AppState {
        config,
        store: store.clone(),
        committer,
        tokens: Tokens::default(),
        hook_keys: Default::default(),
        metrics: sluice_server::metrics_handle(),
        options: ServerOptions::default(),
        hub: Some(hub),
        wake: Some(wake),
        turnarounds: Some(turnarounds),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running =
        sluice_server::start(listener, state, committers, std::future::pending()).unwrap();
    World {
        base: format!("http://{}", running.addr),
        http: reqwest::Client::new(),
        sim,
        store,
        hooks,
        _dir: dir,
        stop,
    }
}

impl World {
    /// `POST /v1/events` with `body` (one event or an array); the `202`'s body.
    pub async fn post_events(&self, body: &impl serde::Serialize) -> Value {
        let r = self.http.post(format!("{}/v1/events", self.base)).json(body).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
        r.json().await.unwrap()
    }
}

/// Reads an SSE response into (event, data) pairs until `done` or `failed`, within `limit`.
pub async fn sse(resp: reqwest::Response, limit: Duration) -> Vec<(String, Value)> {
    read_sse(resp, limit, true).await.0
}

/// Reads an SSE response into (event, data) pairs to the end of the body; `None` if it has not
/// ended within `limit`.
pub async fn sse_to_end(resp: reqwest::Response, limit: Duration) -> Option<Vec<(String, Value)>> {
    let (events, ended) = read_sse(resp, limit, false).await;
    ended.then_some(events)
}

/// The events read, and whether the body ended (rather than the limit, or a final event when
/// `until_final`).
async fn read_sse(
    resp: reqwest::Response,
    limit: Duration,
    until_final: bool,
) -> (Vec<(String, Value)>, bool) {
    let mut events = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    let end = Instant::now() + limit;
    while Instant::now() < end {
        match tokio::time::timeout(end - Instant::now(), body.next()).await {
            Ok(Some(chunk)) => buf.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
            Ok(None) => return (events, true),
            Err(_) => break,
        }
        while let Some(i) = buf.find("\n\n") {
            let block: String = buf.drain(..i + 2).collect();
            let name = block.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("");
            let data = block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("null");
            if name.is_empty() {
                continue;
            }
            let finished = name == "done" || name == "failed";
            events.push((name.to_owned(), serde_json::from_str(data).unwrap_or(Value::Null)));
            if until_final && finished {
                return (events, false);
            }
        }
    }
    (events, false)
}

pub async fn wait_for<T>(limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs raw SQL on a SQLite store, to make it fail the way an outage would (a table renamed away
/// under the running service, then back).
pub async fn sql(store: &Store, sql: &'static str) {
    let Store::Sqlite(pool, _) = store else { panic!("a SQLite store") };
    sqlx::query(sql).execute(pool).await.unwrap();
}

/// An event with one task, to be written straight into the store, as a crash or another
/// instance leaves one.
pub fn event_with_task(
    label: &str,
    event_type: &str,
    payload: Value,
    task: sluice_store::NewTask,
) -> sluice_store::NewEvent {
    let now = sluice_engine::now_ms();
    sluice_store::NewEvent {
        id: format!("evt_{label}_{now}"),
        event_type: event_type.into(),
        payload: serde_json::value::RawValue::from_string(payload.to_string()).unwrap(),
        idempotency_key: None,
        request_hash: String::new(),
        needed_within_ms: None,
        source: "api".into(),
        received_at: now,
        tasks: vec![task],
    }
}

/// A task of `workload` in `lane`, for [`event_with_task`]; due in two minutes.
pub fn task(
    label: &str,
    workload: &str,
    lane: &str,
    state: sluice_store::TaskState,
) -> sluice_store::NewTask {
    let now = sluice_engine::now_ms();
    sluice_store::NewTask {
        id: format!("tsk_{label}_{now}"),
        workload: workload.into(),
        lane: lane.into(),
        state,
        rule: "test".into(),
        reason: "stored by the test".into(),
        decision: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
        deadline: now + 120_000,
        priority: 0,
        after_task_id: None,
        lease: None,
    }
}
