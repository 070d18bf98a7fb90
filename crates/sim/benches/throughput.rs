//! How many plain (non-streamed) requests per second the sim serves at zero latency.
//!
//! Not a timed test: it prints figures. Run with
//! `cargo bench -p sluice-sim --bench throughput` (optionally `-- SECONDS CONNECTIONS`).
//! Client and server share the machine (and this process), as they do when sluice's own
//! benchmarks drive the sim.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_sim::{Sim, SimConfig};

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let secs: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let conns: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let sim = Sim::start(SimConfig::instant(), "127.0.0.1:0").await.unwrap();
    println!("sim throughput: {conns} connections, {secs} s per case, zero latency, no limits");
    for provider in ["anthropic", "openai"] {
        let rps = run(&sim, provider, Duration::from_secs(secs), conns).await;
        println!("{provider:>9}: {rps:>8.0} requests/s");
    }
    sim.shutdown().await;
}

async fn run(
    sim: &sluice_sim::RunningSim,
    provider: &'static str,
    d: Duration,
    conns: usize,
) -> f64 {
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(conns).tcp_nodelay(true).build().unwrap();
    let (url, body) = match provider {
        "anthropic" => (
            format!("{}/v1/messages", sim.base_url()),
            json!({"model": "claude-haiku-5-5", "max_tokens": 16, "messages": [{"role": "user", "content": "Classify this ticket, please."}]}),
        ),
        _ => (
            format!("{}/v1/chat/completions", sim.base_url()),
            json!({"model": "gpt-4.1-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "Classify this ticket, please."}]}),
        ),
    };
    let body = Arc::new(serde_json::to_vec(&body).unwrap());
    let done = Arc::new(AtomicU64::new(0));
    // Warm-up: open the connections.
    let warm = Instant::now() + Duration::from_millis(500);
    let end = warm + d;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, url, body, done) =
            (client.clone(), url.clone(), Arc::clone(&body), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let r = client
                    .post(&url)
                    .header("x-api-key", "bench")
                    .header("authorization", "Bearer bench")
                    .header("anthropic-version", "2023-06-01")
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.status());
                let _ = r.bytes().await.unwrap();
                if Instant::now() >= warm {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / d.as_secs_f64()
}
