//! 100,000 batch-mode tasks from ingest to stored results, through the simulator at zero
//! turnaround: sluice's own wall time, CPU time and peak memory, measured on the `sluice serve`
//! process (the simulator and the load generator run in this process, apart from it).
//!
//! `cargo bench -p sluice --bench batch_100k` (set `SLUICE_BENCH_TASKS` for another count).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_sim::{Sim, SimConfig};
use sluice_store::{SqliteDurability, Store};

fn config(sim: &str) -> String {
    format!(
        r#"
min_daily_savings = 0.0
[batch]
max_items = 10000
max_age = "1s"
[providers.openai]
kind = "openai"
base_url = "{sim}/v1"
batch_turnaround_p50 = "1s"
batch_turnaround_p95 = "2s"

[[workloads]]
name = "cleanup"
on = "record.imported"
provider = "openai"
model = "gpt-5-mini"
max_tokens = 60
prompt = "Normalize this CRM record and flag problems: {{{{ payload.record | tojson }}}}"
lane = "batch"
needed_within = "24h"
"#
    )
}

/// utime + stime of a process, in seconds (Linux: /proc/PID/stat, 100 ticks a second).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of a process, in MiB (VmHWM).
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize =
        std::env::var("SLUICE_BENCH_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut sim_config = SimConfig::instant();
    sim_config.charge_log_limit = 10;
    let sim = Sim::start(sim_config, "127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sluice.toml"), config(sim.base_url())).unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let bin = env!("CARGO_BIN_EXE_sluice");
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(dir.path().join("sluice.toml"))
        .args(["--listen", "127.0.0.1:0", "--store", &store_url])
        .current_dir(dir.path())
        .env("OPENAI_API_KEY", "sk-bench")
        // SLUICE_LOG=warn,sqlx::query=debug shows every statement with its time.
        .env("SLUICE_LOG", std::env::var("SLUICE_LOG").unwrap_or_else(|_| "warn".to_owned()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    let pid = child.id();
    let cpu_at_start = cpu_seconds(pid);

    let http = reqwest::Client::new();
    let started = Instant::now();
    // 1,000 events a request, four requests in flight.
    let per_request = 1_000;
    let requests: Vec<usize> = (0..n.div_ceil(per_request)).collect();
    let mut posted = 0;
    for chunk in requests.chunks(4) {
        let mut inflight = Vec::new();
        for &r in chunk {
            let events: Vec<Value> = (r * per_request..((r + 1) * per_request).min(n))
                .map(|i| {
                    json!({"type": "record.imported", "payload": {"record": {
                        "id": format!("rec-{i}"), "name": format!("ada lovelace {i}"), "email": format!("ADA{i}@Example.com "),
                        "phone": "+44 (0)20 7946 0018", "company": "analytical engines ltd"}}})
                })
                .collect();
            posted += events.len();
            let (http, base) = (http.clone(), base.clone());
            inflight.push(tokio::spawn(async move {
                let r = http.post(format!("{base}/v1/events")).json(&events).send().await.unwrap();
                assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
            }));
        }
        for f in inflight {
            f.await.unwrap();
        }
    }
    let ingested = started.elapsed();
    let cpu_ingest = cpu_seconds(pid) - cpu_at_start;

    let store = Store::open(&store_url, SqliteDurability::Full).await.unwrap();
    let limit = Instant::now() + Duration::from_secs(1800);
    let mut last = String::new();
    loop {
        let states = store.task_states().await.unwrap();
        let done = states.iter().find(|(s, _)| s == "succeeded").map_or(0, |(_, n)| *n) as usize;
        let summary = format!("{states:?}");
        if summary != last {
            eprintln!("{:>6.1}s {summary}", started.elapsed().as_secs_f64());
            last = summary;
        }
        if done >= posted || Instant::now() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let wall = started.elapsed();
    let cpu = cpu_seconds(pid) - cpu_at_start;
    let peak = peak_mib(pid);
    let batches = store.batches(1000).await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    println!(
        "| tasks | batches | ingest wall | ingest CPU | total wall | sluice CPU | sluice peak RSS |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {posted} | {} | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {:.0} MiB |",
        batches.len(),
        ingested.as_secs_f64(),
        cpu_ingest,
        wall.as_secs_f64(),
        cpu,
        peak
    );
}
