//! The latency sluice adds to a streamed call, and the highest rate its stream path sustains.
//!
//! `cargo bench -p sluice --bench stream_latency` (rates per second as arguments to change them:
//! `cargo bench -p sluice --bench stream_latency -- 20 100 300`). One process holds the
//! simulator (zero latency; `SLUICE_BENCH_SIM_TTFT_MS` delays its first token), sluice (SQLite
//! with the default `synchronous=FULL`, ingest, stream executor, deliverer, HTTP API, as
//! `tests/stream.rs` wires them) and the load generator; all on 127.0.0.1. For each rate,
//! open-loop (a call starts on schedule whether or not earlier ones have answered, and is timed
//! from its scheduled start):
//!
//! - **direct**: `POST /v1/messages` with `stream: true` to the sim, until the first
//!   `content_block_delta`;
//! - **sluice, one request**: `POST /v1/events` (one streamed workload on the sim's Anthropic API)
//!   with `Accept: text/event-stream`, until the first `delta` in the same response;
//! - **sluice, two requests**: `POST /v1/events`, then `GET` the task's `stream_url`, until the
//!   first `delta` (or `done`, when the task ended before the watcher connected: its result then
//!   carries every token at once).
//!
//! The added latency is sluice's percentile minus direct's. Then, unless `SLUICE_BENCH_NO_LITELLM`
//! is set, `litellm_yardstick.sh` beside this file measures the same calls through the LiteLLM
//! proxy in front of the same sim, and its table is printed after ours. Prints markdown for
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
use std::time::{Duration, Instant};

use common::{MAX_TOKENS, MODEL, config};
use futures::StreamExt;
use serde_json::{Value, json};
use sluice_core::Config;
use sluice_engine::{Deliverer, Executor, Hub};
use sluice_server::auth::Tokens;
use sluice_server::ingest::Committer;
use sluice_server::{AppState, ServerOptions};
use sluice_sim::Sim;
use sluice_store::{SqliteDurability, Store};

/// As in the sluice binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_RATES: [u32; 7] = [20, 50, 100, 200, 300, 500, 1000];
/// Each rate runs this long (so at most `rate × RUN` calls)...
const RUN: Duration = Duration::from_secs(3);
/// ...and never starts more calls than this.
const MAX_CALLS: usize = 3000;
/// A call that has not ended by then counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The run of one rate is abandoned (its unfinished calls failed) after this.
const PHASE_LIMIT: Duration = Duration::from_secs(30);
/// First-token p99 under which a rate counts as sustained (and nothing may fail).
const SUSTAINED_P99: Duration = Duration::from_millis(100);

/// `synchronous=FULL`, what users get, unless `SLUICE_BENCH_SQLITE_SYNC=normal` asks for the
/// diagnostic run that shows what the fsyncs cost.
fn durability() -> SqliteDurability {
    match std::env::var("SLUICE_BENCH_SQLITE_SYNC").as_deref() {
        Ok("normal") => SqliteDurability::Normal,
        _ => SqliteDurability::Full,
    }
}

/// Sluice as `sluice serve` runs it, in this process; returns its base URL.
/// The sender stops the executor and deliverer when dropped or set: keep it for the whole run.
async fn start_sluice(
    sim: &str,
    db: &std::path::Path,
) -> (String, tokio::sync::watch::Sender<bool>) {
    let config = Arc::new(Config::parse(&config(sim), "bench.toml").unwrap());
    let store = Store::open(&format!("sqlite://{}", db.display()), durability()).await.unwrap();
    let env = |name: &str| (name == "ANTHROPIC_API_KEY").then(|| "sk-bench".to_owned());
    let hub = Hub::default();
    let executor = Executor::new(
        store.clone(),
        config.clone(),
        hub.clone(),
        env,
        common::executor_options(&config),
    )
    .unwrap();
    let wake = executor.waker();
    let handoff = executor.handoff();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(executor.run(stopping.clone()));
    tokio::spawn(
        Deliverer::new(store.clone(), config.clone(), env, Default::default())
            .unwrap()
            .run(stopping),
    );
    let (committer, committers) = Committer::with_handoff(store.clone(), 1, Some(handoff));
    let state = AppState {
        config,
        store,
        committer,
        tokens: Tokens::default(),
        hook_keys: Default::default(),
        metrics: sluice_server::metrics_handle(),
        options: ServerOptions::default(),
        hub: Some(hub),
        wake: Some(wake),
        // No batcher here: the bench drives the stream lane only.
        turnarounds: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running =
        sluice_server::start(listener, state, committers, std::future::pending()).unwrap();
    (format!("http://{}", running.addr), stop)
}

/// What one call measured.
#[derive(Debug, Clone, Copy)]
enum Sample {
    /// Times from the scheduled start to the response's headers (sluice: the event's `202`) and
    /// to the first token.
    Ok {
        ack: Duration,
        first: Duration,
        kind: FirstKind,
    },
    Failed(&'static str),
}

/// How the first token reached a sluice watcher.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FirstKind {
    /// A `delta` event, straight after connecting.
    Delta,
    /// A `delta` after a `status` event: the task was not yet running when the watcher connected
    /// (the watcher is woken when it starts).
    DeltaAfterStatus,
    /// The `done` event: the task had ended before the watcher connected.
    Done,
}

/// Reads SSE blocks from `resp` until one whose event name is in `first` (its time is kept),
/// then on to the end of the body (so the connection is reused), within `CALL_TIMEOUT` of
/// `start`. Returns the name of the first matching event and when it came.
async fn read_sse(
    resp: reqwest::Response,
    start: Instant,
    first: &[&str],
    end_on: &[&str],
) -> Option<(String, Duration, bool)> {
    let deadline = start + CALL_TIMEOUT;
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut got: Option<(String, Duration)> = None;
    let mut saw_status = false;
    // Bounded by the deadline.
    loop {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let chunk = match tokio::time::timeout(deadline - now, body.next()).await {
            Ok(Some(Ok(c))) => c,
            Ok(None) => return got.map(|(n, d)| (n, d, saw_status)),
            _ => return None,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find("\n\n") {
            let block: String = buf.drain(..i + 2).collect();
            let Some(name) = block.lines().find_map(|l| l.strip_prefix("event: ")) else {
                continue;
            };
            if name == "status" {
                saw_status = true;
            }
            if std::env::var_os("SLUICE_BENCH_TRACE").is_some() {
                eprintln!("{:?} {block:?}", start.elapsed());
            }
            if name == "failed" || name == "error" {
                return None;
            }
            if got.is_none() && first.contains(&name) {
                got = Some((name.to_owned(), start.elapsed()));
            }
            if end_on.contains(&name) {
                return got.map(|(n, d)| (n, d, saw_status));
            }
        }
    }
}

async fn direct_call(http: reqwest::Client, sim: Arc<str>, i: usize, start: Instant) -> Sample {
    let body = json!({
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "stream": true,
        "messages": [{"role": "user", "content": format!("Answer: question {i}")}],
    });
    let send = http
        .post(format!("{sim}/v1/messages"))
        .header("x-api-key", "sk-bench")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .timeout(CALL_TIMEOUT)
        .send()
        .await;
    let Ok(resp) = send else { return Sample::Failed("direct: send") };
    if !resp.status().is_success() {
        return Sample::Failed("direct: status");
    }
    let ack = start.elapsed();
    match read_sse(resp, start, &["content_block_delta"], &["message_stop"]).await {
        Some((_, first, _)) => Sample::Ok { ack, first, kind: FirstKind::Delta },
        None => Sample::Failed("direct: stream"),
    }
}

/// How a call follows its task's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `POST /v1/events` with `Accept: text/event-stream`: the tokens in the same response.
    OneRequest,
    /// `POST /v1/events`, then `GET` the task's `stream_url`.
    TwoRequests,
}

async fn sluice_call(
    http: reqwest::Client,
    base: Arc<str>,
    mode: Mode,
    i: usize,
    start: Instant,
) -> Sample {
    let event = json!({"type": "bench.asked", "payload": {"question": format!("question {i}")}});
    let mut post = http.post(format!("{base}/v1/events")).json(&event).timeout(CALL_TIMEOUT);
    if mode == Mode::OneRequest {
        post = post.header("accept", "text/event-stream");
    }
    let Ok(resp) = post.send().await else {
        return Sample::Failed("event: send (timeout or error)");
    };
    if resp.status() != reqwest::StatusCode::ACCEPTED {
        return Sample::Failed("event: not 202");
    }
    // In one request too, the headers leave once the commit is durable, as a plain 202 does.
    let ack = start.elapsed();
    let stream = match mode {
        Mode::OneRequest => resp,
        Mode::TwoRequests => {
            let Ok(body) = resp.json::<Value>().await else { return Sample::Failed("event: body") };
            let Some(url) = body["tasks"][0]["stream_url"].as_str() else {
                return Sample::Failed("event: no stream_url");
            };
            let get = http.get(format!("{base}{url}")).timeout(CALL_TIMEOUT).send().await;
            match get {
                Ok(r) if r.status().is_success() => r,
                Ok(_) => return Sample::Failed("stream: status"),
                Err(_) => return Sample::Failed("stream: send (timeout or error)"),
            }
        }
    };
    match read_sse(stream, start, &["delta", "done"], &["done"]).await {
        Some((name, first, saw_status)) => Sample::Ok { ack, first, kind: kind(&name, saw_status) },
        None => Sample::Failed("stream: no first token within the timeout, or failed"),
    }
}

fn kind(first_event: &str, saw_status: bool) -> FirstKind {
    match (first_event, saw_status) {
        ("done", _) => FirstKind::Done,
        (_, true) => FirstKind::DeltaAfterStatus,
        _ => FirstKind::Delta,
    }
}

/// Starts `rate` calls a second for `RUN` (at most `MAX_CALLS`), each on its schedule, and waits
/// for them all (at most `PHASE_LIMIT`).
async fn open_loop<F, Fut>(rate: u32, call: F) -> Vec<Sample>
where
    F: Fn(usize, Instant) -> Fut,
    Fut: Future<Output = Sample> + Send + 'static,
{
    let n = ((f64::from(rate) * RUN.as_secs_f64()) as usize).clamp(1, MAX_CALLS);
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let begin = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..n {
        let at = begin + interval * u32::try_from(i).unwrap();
        tokio::time::sleep_until(at.into()).await;
        // Timed from the schedule, not from when the runtime got round to it.
        calls.spawn(call(i, at));
    }
    let mut samples = Vec::with_capacity(n);
    let stop = begin + PHASE_LIMIT;
    while samples.len() < n {
        match tokio::time::timeout_at(stop.into(), calls.join_next()).await {
            Ok(Some(Ok(s))) => samples.push(s),
            Ok(Some(Err(_))) => samples.push(Sample::Failed("panicked")),
            Ok(None) => break,
            Err(_) => {
                calls.abort_all();
                break;
            }
        }
    }
    samples.resize(n, Sample::Failed("unfinished at the phase limit"));
    samples
}

#[derive(Debug, Default)]
struct Stats {
    n: usize,
    failed: usize,
    p50: Duration,
    p99: Duration,
    ack_p50: Duration,
    ack_p99: Duration,
    kinds: [usize; 3],
    reasons: std::collections::BTreeMap<&'static str, usize>,
}

fn stats(samples: &[Sample]) -> Stats {
    let (mut firsts, mut acks) = (Vec::new(), Vec::new());
    let mut s = Stats { n: samples.len(), ..Stats::default() };
    for x in samples {
        match x {
            Sample::Ok { ack, first, kind } => {
                firsts.push(*first);
                acks.push(*ack);
                s.kinds[*kind as usize] += 1;
            }
            Sample::Failed(why) => {
                s.failed += 1;
                *s.reasons.entry(why).or_default() += 1;
            }
        }
    }
    (s.p50, s.p99) = (pct(&mut firsts, 0.50), pct(&mut firsts, 0.99));
    (s.ack_p50, s.ack_p99) = (pct(&mut acks, 0.50), pct(&mut acks, 0.99));
    s
}

/// The nearest-rank percentile.
fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// A row's figures, or a dash for a column with no successful call.
fn col(s: &Stats, d: Duration) -> String {
    if s.failed == s.n { "—".to_owned() } else { ms(d) }
}

fn diff(a: Duration, b: Duration) -> String {
    format!("{:+.2}", (a.as_secs_f64() - b.as_secs_f64()) * 1000.0)
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .no_proxy()
        .build()
        .unwrap()
}

fn rates() -> Vec<u32> {
    let args: Vec<u32> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if args.is_empty() { DEFAULT_RATES.to_vec() } else { args }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rates = rates();
    let sim = Sim::start(common::sim_config(), "127.0.0.1:0").await.unwrap();
    let sim_url: Arc<str> = sim.base_url().into();
    // On the disk (ext4 here), so that synchronous=FULL pays its fsyncs.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (sluice, stop) = start_sluice(&sim_url, &dir.path().join("bench.db")).await;
    let sluice: Arc<str> = sluice.into();
    eprintln!("sim {sim_url}, sluice {sluice}, db {}", dir.path().display());

    // Warm both paths: connections, the SQLite file, the first-call costs.
    let http = http_client();
    let (h, s) = (http.clone(), sim_url.clone());
    let _ = open_loop(50, move |i, at| direct_call(h.clone(), s.clone(), i, at)).await;
    let modes = [Mode::OneRequest, Mode::TwoRequests];
    for mode in modes {
        let (h, b) = (http.clone(), sluice.clone());
        let _ = open_loop(50, move |i, at| sluice_call(h.clone(), b.clone(), mode, i, at)).await;
    }

    // Per rate: direct, then each way of following a call, one after another.
    let mut rows: [Vec<(u32, Stats, Stats)>; 2] = [Vec::new(), Vec::new()];
    let mut sustained = [None, None];
    for &rate in &rates {
        for (m, &mode) in modes.iter().enumerate() {
            let (h, s) = (http.clone(), sim_url.clone());
            let direct = stats(
                &open_loop(rate, move |i, at| direct_call(h.clone(), s.clone(), i, at)).await,
            );
            let (h, b) = (http.clone(), sluice.clone());
            let via = stats(
                &open_loop(rate, move |i, at| sluice_call(h.clone(), b.clone(), mode, i, at)).await,
            );
            eprintln!(
                "{rate}/s {mode:?}: direct p50 {} p99 {} ({} failed); sluice p50 {} p99 {} ({} failed; 202 p50 {} p99 {}; first token by delta {}, by delta after a status {}, by done {})",
                ms(direct.p50),
                ms(direct.p99),
                direct.failed,
                ms(via.p50),
                ms(via.p99),
                via.failed,
                ms(via.ack_p50),
                ms(via.ack_p99),
                via.kinds[0],
                via.kinds[1],
                via.kinds[2]
            );
            for (why, n) in direct.reasons.iter().chain(&via.reasons) {
                eprintln!("  {n} failed: {why}");
            }
            if via.failed == 0 && direct.failed == 0 && via.p99 < SUSTAINED_P99 {
                sustained[m] = Some(rate);
            }
            rows[m].push((rate, direct, via));
        }
    }

    let sync = match durability() {
        SqliteDurability::Normal => "NORMAL (diagnostic, not the default)",
        SqliteDurability::Full => "FULL",
    };
    for (m, mode) in modes.iter().enumerate() {
        let (rows, sustained) = (&rows[m], sustained[m]);
        let how = match mode {
            Mode::OneRequest => "one request: `POST /v1/events` with `Accept: text/event-stream`",
            Mode::TwoRequests => "two requests: `POST /v1/events`, then `GET` the `stream_url`",
        };
        println!("### sluice (SQLite, synchronous={sync}), {how}\n");
        println!(
            "| rate (calls/s) | calls | direct p50 | direct p99 | sluice p50 | sluice p99 | added p50 | added p99 | event `202` p50 / p99 | failed | first token by: delta / delta after status / done |"
        );
        println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        for (rate, d, v) in rows {
            println!(
                "| {rate} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} / {} / {} |",
                v.n,
                col(d, d.p50),
                col(d, d.p99),
                col(v, v.p50),
                col(v, v.p99),
                if v.failed == v.n || d.failed == d.n {
                    "—".to_owned()
                } else {
                    diff(v.p50, d.p50)
                },
                if v.failed == v.n || d.failed == d.n {
                    "—".to_owned()
                } else {
                    diff(v.p99, d.p99)
                },
                col(v, v.ack_p50),
                col(v, v.ack_p99),
                v.failed + d.failed,
                v.kinds[0],
                v.kinds[1],
                v.kinds[2]
            );
        }
        println!(
            "\nTimes in ms to the first token, open loop, timed from each call's scheduled start; {}s per rate (at most {MAX_CALLS} calls), `max_tokens: {MAX_TOKENS}`.",
            RUN.as_secs()
        );
        match sustained {
            Some(r) => println!(
                "Highest rate sustained (sluice first-token p99 under {} ms, nothing failed): **{r}/s**.",
                SUSTAINED_P99.as_millis()
            ),
            None => println!(
                "No rate tried was sustained (sluice first-token p99 under {} ms, nothing failed).",
                SUSTAINED_P99.as_millis()
            ),
        }
        println!();
    }

    if std::env::var_os("SLUICE_BENCH_NO_LITELLM").is_some() {
        eprintln!("LiteLLM skipped: SLUICE_BENCH_NO_LITELLM is set");
    } else {
        // The yardstick runs while the sim keeps serving from this process.
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/litellm_yardstick.sh");
        let args: Vec<String> =
            std::iter::once(sim_url.to_string()).chain(rates.iter().map(u32::to_string)).collect();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("bash")
                .arg(script)
                .args(args)
                .stderr(std::process::Stdio::inherit())
                .output()
        })
        .await
        .unwrap();
        match out {
            Ok(o) if o.status.success() => {
                println!("\n### LiteLLM proxy (yardstick)\n");
                print!("{}", String::from_utf8_lossy(&o.stdout));
            }
            Ok(o) => {
                println!(
                    "\nLiteLLM yardstick failed ({}); its output:\n{}",
                    o.status,
                    String::from_utf8_lossy(&o.stdout)
                );
            }
            Err(e) => println!("\nLiteLLM yardstick could not be started: {e}"),
        }
    }
    let _ = stop.send(true);
    sim.shutdown().await;
}
