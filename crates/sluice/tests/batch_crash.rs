//! Nothing submitted twice, nothing lost: `kill -9` the real server again and again while batches
//! are being cut, recorded, submitted, polled and stored, then let it finish; every task ends
//! with its result, and the simulator's charge log shows each paid exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_sim::{Sim, SimConfig};
use sluice_store::{SqliteDurability, Store, TaskState};

fn config(sim: &str) -> String {
    format!(
        r#"
min_daily_savings = 0.0
[batch]
max_items = 5
max_age = "300ms"
margin = "5s"
[providers.anthropic]
kind = "anthropic"
base_url = "{sim}"
[providers.openai]
kind = "openai"
base_url = "{sim}/v1"

[[workloads]]
name = "scoring"
on = "lead.created"
provider = "anthropic"
model = "claude-sonnet-5-5"
max_tokens = 100
prompt = "Score {{{{ payload.name }}}}"
lane = "batch"
needed_within = "24h"

[[workloads]]
name = "cleanup"
on = "record.imported"
provider = "openai"
model = "gpt-5-mini"
max_tokens = 100
prompt = "Clean {{{{ payload.name }}}}"
lane = "batch"
needed_within = "24h"
"#
    )
}

fn serve(dir: &Path, store: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(dir.join("sluice.toml"))
        .args(["--listen", "127.0.0.1:0", "--store", store])
        .current_dir(dir)
        .env_remove("SLUICE_API_TOKENS")
        .env("ANTHROPIC_API_KEY", "sk-crash")
        .env("OPENAI_API_KEY", "sk-crash")
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    (child, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_the_batch_lifecycle_submits_nothing_twice_and_loses_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut sim_config = SimConfig::instant();
    sim_config.batch.turnaround_median = Duration::from_millis(300);
    sim_config.batch.turnaround_p95 = Duration::from_millis(600);
    let sim = Sim::start(sim_config, "127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sluice.toml"), config(sim.base_url())).unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("batch.db").display());
    let http = reqwest::Client::new();

    // Eight rounds: post work, let the batcher get somewhere, kill -9 at a different moment.
    let mut posted = 0;
    for round in 0..8u64 {
        let (mut server, base) = serve(dir.path(), &store_url);
        let events: Vec<Value> = (0..12)
            .map(|i| {
                let n = posted + i;
                let kind = if n % 2 == 0 { "lead.created" } else { "record.imported" };
                json!({"type": kind, "idempotency_key": format!("k-{n}"), "payload": {"name": format!("n{n}")}})
            })
            .collect();
        let r = http.post(format!("{base}/v1/events")).json(&events).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
        posted += 12;
        tokio::time::sleep(Duration::from_millis(150 + (round * 97) % 700)).await;
        server.kill().unwrap();
        server.wait().unwrap();
    }

    // Then let it run to the end.
    let (mut server, _) = serve(dir.path(), &store_url);
    let store = Store::open(&store_url, SqliteDurability::Full).await.unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let tasks = loop {
        let q = sluice_store::TaskQuery { limit: 500, ..Default::default() };
        let tasks = store.tasks(&q).await.unwrap();
        if tasks.len() == posted && tasks.iter().all(|t| t.state.is_final()) {
            break tasks;
        }
        assert!(
            Instant::now() < end,
            "not all tasks finished: {:?}",
            tasks.iter().map(|t| t.state).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    server.kill().unwrap();
    server.wait().unwrap();

    let charges = sim.charges().all();
    for t in &tasks {
        assert_eq!(t.state, TaskState::Succeeded, "{}: {:?}", t.id, t.last_error);
        let paid = charges.iter().filter(|c| c.custom_id.as_deref() == Some(t.id.as_str())).count();
        assert_eq!(paid, 1, "task {} paid {paid} times", t.id);
    }
    // And the ledger shows each line once, however often a kill interrupted its poller.
    let ledger = store.ledger_since(0).await.unwrap();
    assert_eq!(ledger.len(), charges.len(), "ledger lines against the provider's charges");
    for t in &tasks {
        let lines = ledger.iter().filter(|l| l.task_id == t.id).count();
        assert_eq!(lines, 1, "task {} has {lines} ledger lines", t.id);
    }
    // Every provider batch is one of ours, known by its id: none was created twice.
    let ours: Vec<String> = store
        .batches(1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|b| b.provider_batch_id)
        .collect();
    let mut billed_batches: Vec<&str> =
        charges.iter().filter_map(|c| c.batch_id.as_deref()).collect();
    billed_batches.sort_unstable();
    billed_batches.dedup();
    for b in billed_batches {
        assert!(
            ours.iter().any(|o| o == b),
            "provider batch {b} is not in the store: submitted twice?"
        );
    }
}
