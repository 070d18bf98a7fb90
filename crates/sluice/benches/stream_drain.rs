//! How fast the stream executor works through a backlog: tasks already stored queued (as after a
//! burst beyond every call slot, or a restart), run to the end through the sim at zero latency.
//!
//! `cargo bench -p sluice --bench stream_drain` (`-- 5000` for another backlog size). One
//! process holds the sim, the store (SQLite, `synchronous=FULL`, on disk) and the executor with
//! its default options; the backlog is stored through ingest with no executor running, then the
//! executor starts and is timed until every task has succeeded. Beside it, in the same run, the
//! same number of streamed calls made straight to the sim by as many concurrent clients as the
//! executor has call slots (the ceiling: what the calls alone cost here). Prints markdown for
//! docs/benchmarks.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)] // test code: a failure should stop loudly

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{MAX_TOKENS, MODEL, config};
use futures::StreamExt;
use serde_json::json;
use sluice_core::Config;
use sluice_engine::{Executor, Hub};
use sluice_server::auth::Tokens;
use sluice_server::ingest::Committer;
use sluice_server::{AppState, ServerOptions};
use sluice_sim::Sim;
use sluice_store::{SqliteDurability, Store, TaskQuery, TaskState};

/// As in the sluice binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_BACKLOG: usize = 3000;
const ROUNDS: usize = 3;
/// A drain (or the direct calls) not done by then is reported as such; the bench stops anyway.
const LIMIT: Duration = Duration::from_secs(120);

/// Whether every task has ended: two index look-ups, so that watching costs the drain little
/// (a count by state every 10 ms scanned every task, and took half a core from it).
async fn all_ended(store: &Store) -> bool {
    for state in [TaskState::Queued, TaskState::Running] {
        let q = TaskQuery { state: Some(state), workload: None, after_id: None, limit: 1 };
        if !store.tasks(&q).await.unwrap().is_empty() {
            return false;
        }
    }
    true
}

/// Stores `n` events (one streamed task each) with no executor running, then runs one and
/// returns how long it took to finish them all, or `None` past [`LIMIT`].
async fn drain(sim: &str, n: usize, dir: &std::path::Path) -> Option<Duration> {
    let config = Arc::new(Config::parse(&config(sim), "bench.toml").unwrap());
    let url = format!("sqlite://{}", dir.join("drain.db").display());
    let store = Store::open(&url, SqliteDurability::Full).await.unwrap();
    let (committer, committers) = Committer::start(store.clone(), 1);
    let state = AppState {
        config: config.clone(),
        store: store.clone(),
        committer,
        tokens: Tokens::default(),
        hook_keys: Default::default(),
        metrics: None,
        options: ServerOptions::default(),
        hub: None,
        wake: None,
        turnarounds: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running =
        sluice_server::start(listener, state, committers, std::future::pending()).unwrap();
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let events: Vec<_> = chunk
            .iter()
            .map(|i| json!({"type": "bench.asked", "payload": {"question": format!("q{i}")}}))
            .collect();
        let r = http.post(format!("{base}/v1/events")).json(&events).send().await.unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    }

    let env = |name: &str| (name == "ANTHROPIC_API_KEY").then(|| "sk-bench".to_owned());
    let opts = common::executor_options(&config);
    let executor = Executor::new(store.clone(), config, Hub::default(), env, opts).unwrap();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    tokio::spawn(executor.run(stopping));
    let done = loop {
        if all_ended(&store).await {
            break Some(started.elapsed());
        }
        if started.elapsed() > LIMIT {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = stop.send(true);
    let states = store.task_states().await.unwrap();
    let ok = states.iter().find(|(s, _)| s == "succeeded").map_or(0, |(_, n)| *n);
    assert_eq!(ok, n as i64, "every task succeeded: {states:?}");
    done
}

/// `n` streamed calls straight to the sim, `clients` at a time, each read to its end.
async fn direct(sim: &str, n: usize, clients: usize) -> Option<Duration> {
    let http = reqwest::Client::builder().tcp_nodelay(true).build().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, next, sim) = (http.clone(), next.clone(), sim.to_owned());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n && started.elapsed() < LIMIT {
                let body = json!({
                    "model": MODEL, "max_tokens": MAX_TOKENS, "stream": true,
                    "messages": [{"role": "user", "content": "Answer: q"}],
                });
                let resp = http
                    .post(format!("{sim}/v1/messages"))
                    .header("x-api-key", "sk-bench")
                    .header("anthropic-version", "2023-06-01")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let mut body = resp.bytes_stream();
                while body.next().await.is_some() {}
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (started.elapsed() <= LIMIT).then(|| started.elapsed())
}

fn rate(n: usize, took: Option<Duration>) -> String {
    match took {
        Some(d) => format!("{:.0}", n as f64 / d.as_secs_f64()),
        None => format!("not done in {}s", LIMIT.as_secs()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(DEFAULT_BACKLOG);
    let sim = Sim::start(common::sim_config(), "127.0.0.1:0").await.unwrap();
    let bench_config = Config::parse(&config(sim.base_url()), "bench.toml").unwrap();
    let slots = common::executor_options(&bench_config).max_in_flight;
    println!(
        "| round | direct to the sim, {slots} at a time (calls/s) | sluice drains a backlog of {n} (tasks/s) |"
    );
    println!("| ---: | ---: | ---: |");
    for round in 1..=ROUNDS {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let d = direct(sim.base_url(), n, slots).await;
        let s = drain(sim.base_url(), n, dir.path()).await;
        println!("| {round} | {} | {} |", rate(n, d), rate(n, s));
    }
    println!(
        "\nSQLite with synchronous=FULL on disk; executor with the options `sluice serve` gives this config ({slots} call slots; `SLUICE_BENCH_SLOTS` for another count); the sim's first token after {} ms, `max_tokens: {MAX_TOKENS}`; all in one process.",
        common::sim_first_token_ms()
    );
}
