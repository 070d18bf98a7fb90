//! Nothing accepted is lost: `kill -9` the real server under load from concurrent clients, start it
//! again on the same store, and check that every event that got a `202` is there with all its
//! tasks, and none twice. On SQLite and (when `SLUICE_TEST_DATABASE_URL` is set) PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)] // test code: a failure should stop loudly

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_store::{SqliteDurability, Store};
use tokio::sync::Mutex;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The example config with its providers pointed at a simulator, written into `dir`.
fn example_config(dir: &Path, sim: &str) -> PathBuf {
    let src = std::fs::read_to_string(repo().join("examples/sluice.toml")).unwrap();
    let src = src
        .replace("kind = \"anthropic\"\n", &format!("kind = \"anthropic\"\nbase_url = \"{sim}\"\n"))
        .replace("kind = \"openai\"\n", &format!("kind = \"openai\"\nbase_url = \"{sim}/v1\"\n"));
    let path = dir.join("sluice.toml");
    std::fs::write(&path, src).unwrap();
    path
}

/// Starts `sluice serve` on a free port against a simulator; returns the child and its base URL.
fn serve(store_url: &str, dir: &Path, sim: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(example_config(dir, sim))
        .args(["--listen", "127.0.0.1:0", "--store", store_url])
        .current_dir(dir)
        .env_remove("SLUICE_API_TOKENS")
        .env("ANTHROPIC_API_KEY", "sk-crash-test")
        .env("OPENAI_API_KEY", "sk-crash-test")
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read the address line");
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (child, addr.to_owned())
}

fn sample_events() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("examples/events.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[derive(Debug, Clone)]
struct Acked {
    event_id: String,
    tasks: usize,
}

async fn crash_and_recover(store_url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let sim =
        sluice_sim::Sim::start(sluice_sim::SimConfig::default(), "127.0.0.1:0").await.unwrap();
    let (mut server, base) = serve(store_url, dir.path(), sim.base_url());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let samples = Arc::new(sample_events());
    let acked: Arc<Mutex<HashMap<String, Acked>>> = Arc::default();
    let sent = Arc::new(AtomicUsize::new(0));
    const CLIENTS: usize = 16;
    const MAX_EVENTS: usize = 6_000;
    const KILL_AFTER_ACKS: usize = 1_500;
    let deadline = Instant::now() + Duration::from_secs(30);

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, base, samples, acked, sent) =
            (http.clone(), base.clone(), samples.clone(), acked.clone(), sent.clone());
        clients.push(tokio::spawn(async move {
            // Half the clients post single events, half arrays of five.
            let per_request = if c % 2 == 0 { 1 } else { 5 };
            while Instant::now() < deadline {
                let start = sent.fetch_add(per_request, Ordering::SeqCst);
                if start >= MAX_EVENTS {
                    break;
                }
                let batch: Vec<(String, Value)> = (start..start + per_request)
                    .map(|i| {
                        let mut ev = samples[i % samples.len()].clone();
                        let key = format!("crash-{i}");
                        ev["idempotency_key"] = json!(key);
                        (key, ev)
                    })
                    .collect();
                let body = if per_request == 1 {
                    batch[0].1.clone()
                } else {
                    Value::Array(batch.iter().map(|b| b.1.clone()).collect())
                };
                let Ok(r) = http.post(format!("{base}/v1/events")).json(&body).send().await else {
                    break;
                };
                if r.status() != reqwest::StatusCode::ACCEPTED {
                    break;
                }
                let Ok(v) = r.json::<Value>().await else { break };
                let outs: Vec<Value> = if per_request == 1 {
                    vec![v]
                } else {
                    v["events"].as_array().cloned().unwrap_or_default()
                };
                let mut acked = acked.lock().await;
                for ((key, _), out) in batch.iter().zip(outs) {
                    let tasks = out["tasks"].as_array().map_or(0, Vec::len);
                    acked.insert(
                        key.clone(),
                        Acked {
                            event_id: out["event_id"].as_str().unwrap_or_default().to_owned(),
                            tasks,
                        },
                    );
                }
            }
        }));
    }

    // Mid-load, while requests are in flight: kill -9.
    while acked.lock().await.len() < KILL_AFTER_ACKS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill().expect("SIGKILL the server");
    server.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() >= KILL_AFTER_ACKS,
        "only {} events acknowledged before the kill",
        acked.len()
    );
    let in_flight = sent.load(Ordering::SeqCst).min(MAX_EVENTS);
    assert!(in_flight > acked.len(), "the kill should have cut requests in flight");

    // Restart on the same store: it must come up, and hold every acknowledged event.
    let (mut again, base) = serve(store_url, dir.path(), sim.base_url());
    let store = Store::open(store_url, SqliteDurability::Full).await.unwrap();
    for (key, a) in &acked {
        let (event, tasks) = store
            .event(&a.event_id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged event {key} is lost"));
        assert_eq!(event.idempotency_key.as_deref(), Some(key.as_str()));
        assert_eq!(tasks.len(), a.tasks, "event {key} lost tasks");
    }
    // None twice: one event per key, and every task belongs to a stored event.
    let (events, tasks) = store.counts().await.unwrap();
    assert!(events as usize >= acked.len());
    assert!(events as usize <= in_flight, "{events} events stored for {in_flight} sent");
    let page = http.get(format!("{base}/v1/tasks?limit=1")).send().await.unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert!(tasks >= events);
    // A client retrying after the crash gets its original event back, not a second one.
    let (key, a) = acked.iter().next().unwrap();
    let i: usize = key.trim_start_matches("crash-").parse().unwrap();
    let mut ev = sample_events()[i % samples.len()].clone();
    ev["idempotency_key"] = json!(key);
    let r: Value = http
        .post(format!("{base}/v1/events"))
        .json(&ev)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["event_id"].as_str(), Some(a.event_id.as_str()));
    assert_eq!(r["replayed"], true);
    assert_eq!(store.counts().await.unwrap().0, events);
    again.kill().unwrap();
    again.wait().unwrap();
    eprintln!(
        "crash test ({}): {} acknowledged, {events} stored, {in_flight} sent",
        store.backend(),
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_loses_no_acknowledged_event_on_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    crash_and_recover(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_loses_no_acknowledged_event_on_kill_9() {
    let Ok(base) = std::env::var("SLUICE_TEST_DATABASE_URL") else {
        eprintln!(
            "skipped: SLUICE_TEST_DATABASE_URL is not set, so the PostgreSQL crash test did not run"
        );
        return;
    };
    crash_and_recover(&Store::isolated_postgres_url(&base).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("term.db").display());
    let sim =
        sluice_sim::Sim::start(sluice_sim::SimConfig::default(), "127.0.0.1:0").await.unwrap();
    let (mut server, base) = serve(&url, dir.path(), sim.base_url());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let samples = sample_events();
    let mut posts = Vec::new();
    for (i, ev) in samples.iter().take(200).enumerate() {
        let mut ev = ev.clone();
        ev["idempotency_key"] = json!(format!("term-{i}"));
        let (http, base) = (http.clone(), base.clone());
        posts.push(tokio::spawn(async move {
            let r = http.post(format!("{base}/v1/events")).json(&ev).send().await.ok()?;
            (r.status() == reqwest::StatusCode::ACCEPTED).then_some(())?;
            r.json::<Value>().await.ok().and_then(|v| v["event_id"].as_str().map(str::to_owned))
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let status = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut acked = Vec::new();
    for p in posts {
        if let Some(id) = p.await.unwrap() {
            acked.push(id);
        }
    }
    let exit = server.wait().unwrap();
    assert!(exit.success(), "sluice should exit 0 on SIGTERM, got {exit}");
    let store = Store::open(&url, SqliteDurability::Full).await.unwrap();
    for id in &acked {
        assert!(
            store.event(id).await.unwrap().is_some(),
            "acknowledged event {id} lost on SIGTERM"
        );
    }
}

/// SIGTERM while a streamed call runs: the call finishes, and its result reaches its sink before
/// the process exits, rather than wait for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_the_results_of_the_calls_it_lets_finish() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut sim_config = sluice_sim::SimConfig::default();
    sim_config.latency.time_to_first_token = sluice_sim::Dist::Fixed(Duration::from_millis(1_500));
    let sim = sluice_sim::Sim::start(sim_config, "127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("term.db").display());
    let (mut server, base) = serve(&url, dir.path(), sim.base_url());
    let ticket = sample_events().into_iter().find(|e| e["type"] == "ticket.created").unwrap();
    let r = reqwest::Client::new().post(format!("{base}/v1/events")).json(&ticket).send().await;
    let accepted: Value = r.unwrap().json().await.unwrap();
    let triage = accepted["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["workload"] == "ticket-triage")
        .and_then(|t| t["id"].as_str())
        .unwrap()
        .to_owned();
    // Into the call's wait for its first token.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(server.wait().unwrap().success());
    let store = Store::open(&url, SqliteDurability::Full).await.unwrap();
    let done = store.task(&triage).await.unwrap().unwrap();
    assert_eq!(done.task.state, sluice_store::TaskState::Succeeded);
    let lines =
        std::fs::read_to_string(dir.path().join("results/ticket-triage.jsonl")).unwrap_or_default();
    assert!(lines.contains(&triage), "the result was not delivered before exit: {lines:?}");
}

/// Stream tasks are written already claimed at ingest and handed to the executor in memory: a
/// `kill -9` while their calls run must leave them to be taken over (once their lease runs out)
/// and finished once each after a restart — not lost, not stuck as `running`, not stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_tasks_handed_over_at_ingest_are_taken_over_after_kill_9() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // First tokens slow enough that every call is still running when the server dies.
    let mut sim_config = sluice_sim::SimConfig::default();
    sim_config.latency.time_to_first_token = sluice_sim::Dist::Fixed(Duration::from_secs(3));
    let sim = sluice_sim::Sim::start(sim_config, "127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("handoff.db").display());
    let (mut server, base) = serve(&url, dir.path(), sim.base_url());
    let http = reqwest::Client::new();
    let events: Vec<Value> = (0..12)
        .map(|i| {
            json!({"type": "ticket.created", "idempotency_key": format!("handoff-{i}"),
                   "payload": {"ticket_id": format!("T-{i}"), "subject": "Charged twice",
                               "body": "Please refund one.", "channel": "email",
                               "customer": {"name": "Ada", "email": "ada@example.com", "plan": "team"}}})
        })
        .collect();
    let r = http.post(format!("{base}/v1/events")).json(&events).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    let handed: Vec<String> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["tasks"].as_array().unwrap().iter())
        .filter(|t| t["state"] == "running")
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(handed.len(), 12, "each ticket's triage is handed to the executor: {body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill().expect("SIGKILL the server");
    server.wait().unwrap();

    let store = Store::open(&url, SqliteDurability::Full).await.unwrap();
    for id in &handed {
        let d = store.task(id).await.unwrap().unwrap();
        assert_eq!(d.task.state, sluice_store::TaskState::Running, "task {id} after the kill");
    }
    // Restarted, the server takes the tasks over when the dead process's leases run out (30 s).
    let (mut again, _) = serve(&url, dir.path(), sim.base_url());
    let end = Instant::now() + Duration::from_secs(90);
    for id in &handed {
        loop {
            let d = store.task(id).await.unwrap().unwrap();
            if d.task.state == sluice_store::TaskState::Succeeded {
                assert_eq!(d.task.attempts, 2, "task {id}: claimed at ingest, then taken over");
                assert!(d.result.is_some());
                break;
            }
            assert!(Instant::now() < end, "task {id} still {:?} after 90 s", d.task.state);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // One result and one ledger line each. The calls cut by the kill had started, and the
    // simulator bills a call when it starts answering, as a provider may: at most one more.
    let charges = sim.charges().all();
    for id in &handed {
        let d = store.task(id).await.unwrap().unwrap();
        let paid = charges.iter().filter(|c| c.user_id.as_deref() == Some(id.as_str())).count();
        assert!((1..=2).contains(&paid), "task {id} charged {paid} times");
        let ledger = d.attempt_log.iter().filter(|a| a.outcome == "succeeded").count();
        assert_eq!(ledger, 1, "task {id} stored once");
    }
    again.kill().unwrap();
    again.wait().unwrap();
}
