//! Durable ingest throughput, beside the ceiling of a plain axum handler that stores nothing.
//!
//! `cargo bench -p sluice-server --bench ingest` (PostgreSQL too when `SLUICE_TEST_DATABASE_URL`
//! is set). Clients and server share the machine, as they do for the ceiling. Prints a markdown
//! table for docs/benchmarks.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)] // test code: a failure should stop loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use sluice_core::Config;
use sluice_server::auth::Tokens;
use sluice_server::ingest::Committer;
use sluice_server::{AppState, ServerOptions};
use sluice_store::{SqliteDurability, Store};

/// As in the sluice binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrent clients; `SLUICE_BENCH_CLIENTS` overrides.
fn clients() -> usize {
    std::env::var("SLUICE_BENCH_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}
const RUN: Duration = Duration::from_secs(6);
const WARMUP: Duration = Duration::from_secs(1);
const ARRAY: usize = 20;

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn samples() -> Vec<Value> {
    std::fs::read_to_string(repo().join("examples/events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("idempotency_key");
            v
        })
        .collect()
}

/// The ceiling: parse the same JSON, answer 202, store nothing.
async fn plain(body: Bytes) -> (StatusCode, axum::Json<Value>) {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = v.as_array().map_or(1, Vec::len);
    (StatusCode::ACCEPTED, axum::Json(json!({ "events": n, "event_id": "evt_0" })))
}

async fn start_plain() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/v1/events", post(plain));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// `synchronous=FULL`, what users get, unless `SLUICE_BENCH_SQLITE_SYNC=normal` asks for the
/// diagnostic run that shows what the fsyncs cost.
fn durability() -> SqliteDurability {
    match std::env::var("SLUICE_BENCH_SQLITE_SYNC").as_deref() {
        Ok("normal") => SqliteDurability::Normal,
        _ => SqliteDurability::Full,
    }
}

async fn start_sluice(url: &str) -> String {
    let store = Store::open(url, durability()).await.unwrap();
    let config = Config::parse(
        &std::fs::read_to_string(repo().join("examples/sluice.toml")).unwrap(),
        "sluice.toml",
    )
    .unwrap();
    let workers = if store.backend() == "postgres" { 4 } else { 1 };
    let (committer, committers) = Committer::start(store.clone(), workers);
    let state = AppState {
        config: Arc::new(config),
        store,
        committer,
        tokens: Tokens::default(),
        hook_keys: Default::default(),
        // Metrics recorded, as `sluice serve` records them.
        metrics: sluice_server::metrics_handle(),
        options: ServerOptions::default(),
        hub: None,
        wake: None,
        turnarounds: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running =
        sluice_server::start(listener, state, committers, std::future::pending()).unwrap();
    format!("http://{}", running.addr)
}

/// What one cell measured.
struct Cell {
    /// Events accepted with `202` per second.
    rate: f64,
    /// Each accepted request's time to its `202`, in microseconds, sorted.
    latencies: Vec<u64>,
}

impl Cell {
    /// The `q` quantile of the time to `202`, in milliseconds.
    fn ms(&self, q: f64) -> f64 {
        let i = ((self.latencies.len() as f64 * q) as usize)
            .min(self.latencies.len().saturating_sub(1));
        self.latencies.get(i).map_or(f64::NAN, |&us| us as f64 / 1000.0)
    }
}

/// Events per second accepted with `202` by [`clients`] concurrent clients over `RUN`, and how
/// long each request waited for its answer.
async fn load(base: &str, per_request: usize) -> Cell {
    let samples = Arc::new(samples());
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(clients())
        .build()
        .unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + RUN;
    let mut tasks = Vec::new();
    for c in 0..clients() {
        let (http, samples, accepted, failed, base) =
            (http.clone(), samples.clone(), accepted.clone(), failed.clone(), base.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut i = c * 7;
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let body = if per_request == 1 {
                    samples[i % samples.len()].clone()
                } else {
                    Value::Array(
                        (0..per_request)
                            .map(|k| samples[(i + k) % samples.len()].clone())
                            .collect(),
                    )
                };
                i += per_request;
                let sent = Instant::now();
                match http.post(format!("{base}/v1/events")).json(&body).send().await {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => {
                        let _ = r.bytes().await;
                        if sent >= measure_from && Instant::now() < end {
                            accepted.fetch_add(per_request as u64, Ordering::Relaxed);
                            latencies.push(sent.elapsed().as_micros() as u64);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap_or_default());
    }
    latencies.sort_unstable();
    let f = failed.load(Ordering::Relaxed);
    if f > 0 {
        eprintln!("  ({f} requests failed)");
    }
    Cell { rate: accepted.load(Ordering::Relaxed) as f64 / RUN.as_secs_f64(), latencies }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut targets: Vec<(String, String)> = vec![
        ("plain axum handler, no storage (ceiling)".into(), start_plain().await),
        (
            match durability() {
                SqliteDurability::Full => "sluice, SQLite, synchronous=FULL",
                SqliteDurability::Normal => "sluice, SQLite, synchronous=NORMAL (diagnostic)",
            }
            .into(),
            start_sluice(&format!("sqlite://{}", dir.path().join("a.db").display())).await,
        ),
    ];
    if let Ok(base) = std::env::var("SLUICE_TEST_DATABASE_URL") {
        let url = Store::isolated_postgres_url(&base).await.unwrap();
        targets.push(("sluice, PostgreSQL".into(), start_sluice(&url).await));
    } else {
        eprintln!("PostgreSQL skipped: SLUICE_TEST_DATABASE_URL is not set");
    }
    println!(
        "| target | single events (events/s) | arrays of {ARRAY} (events/s) | `202` p50 / p99 / p99.9, single (ms) | `202` p50 / p99 / p99.9, arrays (ms) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut ceiling = (0.0, 0.0);
    for (i, (name, base)) in targets.iter().enumerate() {
        let single = load(base, 1).await;
        let array = load(base, ARRAY).await;
        let times = |c: &Cell| format!("{:.2} / {:.2} / {:.2}", c.ms(0.5), c.ms(0.99), c.ms(0.999));
        let (s, a) = (single.rate, array.rate);
        if i == 0 {
            ceiling = (s, a);
            println!("| {name} | {s:.0} | {a:.0} | {} | {} |", times(&single), times(&array));
        } else {
            println!(
                "| {name} | {s:.0} ({:.0}% of ceiling) | {a:.0} ({:.0}% of ceiling) | {} | {} |",
                100.0 * s / ceiling.0,
                100.0 * a / ceiling.1,
                times(&single),
                times(&array)
            );
        }
    }
    println!(
        "\n{} concurrent clients in the same process, {}s per cell after {}s warm-up; payloads from examples/events.jsonl fanned out by examples/sluice.toml.",
        clients(),
        RUN.as_secs(),
        WARMUP.as_secs()
    );
}
