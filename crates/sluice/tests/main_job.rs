//! The main job as a user runs it: `sluice demo`, `sluice run` (interrupted and resumed),
//! `sluice report` (the HTML one in headless Chromium) and `sluice advise`, through the real
//! binary, checked against the store and the simulator's charge log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)] // test code: a failure should stop loudly

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_sim::{Dist, Sim, SimConfig};
use sluice_store::{SqliteDurability, Store};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .env_remove("SLUICE_STORE")
        .env_remove("SLUICE_DATA_DIR")
        .output()
        .expect("run sluice")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn open(db: &Path) -> Store {
    Store::open(&format!("sqlite://{}", db.display()), SqliteDurability::Full).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_plays_a_day_and_its_ledger_matches_the_simulators_charges() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("demo");
    // A day in a second: the demo's own pace (1440) is for people.
    let out = sluice(&["demo", "--speed", "86400", "--dir", out_dir.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("they agree"), "{stdout}");
    assert!(stdout.contains("saved"), "{stdout}");

    let summary: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
    let store = open(&out_dir.join("sluice.db")).await;
    let rows = store.history(0).await.unwrap();
    assert!(rows.len() > 500, "a day of the examples is several hundred tasks: {}", rows.len());
    assert!(rows.iter().all(|r| r.state == "succeeded"), "every task finished");
    for lane in ["stream", "flex", "batch"] {
        assert!(rows.iter().any(|r| r.lane == lane), "some work ran in {lane}");
    }
    // `support-digest` is needed by 18:00 of the demo's compressed day, not of the wall clock:
    // the tickets of its morning and afternoon are batched whatever the hour the demo runs (64–67
    // of 70 here; at this pace a millisecond late is a minute and a half of the day).
    let digests: Vec<_> = rows.iter().filter(|r| r.workload == "support-digest").collect();
    let batched = digests.iter().filter(|r| r.lane == "batch").count();
    assert!(batched >= 40, "{batched} of {} digests batched", digests.len());
    // The ledger, summed here from the store, against what the simulator charged.
    let ledger = store.ledger_since(0).await.unwrap();
    let ledger_nano: i64 = ledger.iter().map(|l| l.cost_nanousd).sum();
    let sim_nano = summary["sim_charged_pico_usd"].as_i64().unwrap() / 1000;
    assert!(ledger_nano > 0);
    assert!(
        (ledger_nano - sim_nano).abs() <= ledger.len() as i64,
        "ledger {ledger_nano} n$ vs simulator {sim_nano} n$"
    );
    assert_eq!(
        summary["sim_charges"].as_u64().unwrap() as usize,
        ledger.len(),
        "one charge per ledger entry"
    );
    assert_eq!(jsonl(&out_dir.join("results.jsonl")).len(), rows.len());
    let triage = jsonl(&out_dir.join("results/ticket-triage.jsonl"));
    assert_eq!(triage.len(), rows.iter().filter(|r| r.workload == "ticket-triage").count());
    assert!(
        triage.iter().any(|t| t.to_string().contains("category")),
        "answers come from the examples' responders"
    );

    // `report` reads the same store: its totals are the ledger's.
    let store_url = format!("sqlite://{}", out_dir.join("sluice.db").display());
    let out = sluice(&["report", "--store", &store_url, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ledger_nanousd"].as_i64().unwrap(), ledger_nano);
    assert_eq!(report["total"]["items"].as_u64().unwrap() as usize, rows.len());
    assert!(report["total"]["saving_usd"].as_f64().unwrap() > 0.0);
    let out = sluice(&["report", "--store", &store_url, "--since", "1h"]);
    assert!(out.status.success() && text(&out.stdout).contains("ticket-triage"));

    // `advise` on the same history names every workload and says what it would do.
    let out = sluice(&[
        "advise",
        "--config",
        "examples/sluice.toml",
        "--store",
        &store_url,
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let advice: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(advice["workloads"].as_array().unwrap().len(), 12);

    html_report_renders_in_chromium(&out_dir.join("report.html"));
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"].iter().find_map(
        |name| {
            let out = Command::new("which").arg(name).output().ok()?;
            out.status.success().then(|| PathBuf::from(text(&out.stdout).trim()))
        },
    )
}

/// Opens the report in headless Chromium: after its script ran, every chart is drawn and no
/// script error was recorded; and a screenshot of it is taken.
fn html_report_renders_in_chromium(html: &Path) {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED: headless Chromium not found (apt-get install chromium); the HTML report was not rendered"
        );
        return;
    };
    let page = format!("file://{}", html.display());
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(&browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--window-size=1280,1600"])
            .args(extra)
            .arg(&page)
            .stderr(Stdio::null())
            .output()
            .expect("run chromium")
    };
    let dom = text(&run(&["--dump-dom"]).stdout);
    assert!(
        dom.contains("data-charts-drawn=\"3\""),
        "three charts drawn: {}",
        &dom[..dom.len().min(400)]
    );
    assert!(!dom.contains("data-script-error=\""), "a script error was recorded");
    for id in ["cost-over-time", "stream-latency", "batch-turnaround"] {
        assert!(dom.contains(&format!("data-chart=\"{id}\"")), "chart {id} is on the page");
    }
    let shot = html.with_extension("png");
    let out = run(&[&format!("--screenshot={}", shot.display())]);
    assert!(out.status.success());
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "a screenshot with charts in it, not a blank page: {size} bytes");
}

/// The example config pointed at a simulator.
fn example_config(dir: &Path, sim: &str) -> PathBuf {
    let src = std::fs::read_to_string(repo().join("examples/sluice.toml")).unwrap();
    let src = src
        .replace("kind = \"anthropic\"\n", &format!("kind = \"anthropic\"\nbase_url = \"{sim}\"\n"))
        .replace("kind = \"openai\"\n", &format!("kind = \"openai\"\nbase_url = \"{sim}/v1\"\n"))
        // Deliveries to files in the test's folder; the CRM webhook goes nowhere here.
        .replace("deliver = { file = \"results/", &format!("deliver = {{ file = \"{}/sinks/", dir.display()))
        .replace(
            "deliver = { webhook = \"https://crm.example.com/hooks/sluice\", secret_env = \"SLUICE_WEBHOOK_SECRET\" }",
            &format!("deliver = {{ file = \"{}/sinks/lead-routing.jsonl\" }}", dir.display()),
        );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, src).unwrap();
    path
}

fn run_job(config: &Path, dir: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg(repo().join("examples/events.jsonl"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--output")
        .arg(dir.join("results.jsonl"))
        .arg("--ignore-off-peak")
        .current_dir(dir)
        .env("ANTHROPIC_API_KEY", "sk-run-test")
        .env("OPENAI_API_KEY", "sk-run-test")
        .env("SLUICE_LOG", "warn")
        .env_remove("SLUICE_STORE")
        .env_remove("SLUICE_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice run")
}

fn wait(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("sluice run did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_interrupted_half_way_resumes_without_paying_twice() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Calls slow enough that an interruption lands in the middle of the work.
    let mut sim_config = SimConfig::default();
    sim_config.latency.time_to_first_token = Dist::Fixed(Duration::from_millis(150));
    sim_config.latency.per_token = Dist::Fixed(Duration::from_millis(4));
    let sim = Sim::start(sim_config, "127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path(), sim.base_url());

    let mut first = run_job(&config, dir.path());
    let db = dir.path().join("data/sluice.db");
    // Interrupt once some, not all, of the work is done.
    let end = Instant::now() + Duration::from_secs(120);
    let (done_then, total) = loop {
        assert!(Instant::now() < end, "no progress within two minutes");
        if db.exists() {
            let store = open(&db).await;
            let p = store.progress(0).await.unwrap();
            let total: i64 = p.iter().map(|r| r.count).sum();
            let done: i64 = p.iter().filter(|r| r.state == "succeeded").map(|r| r.count).sum();
            if total > 0 && done * 5 >= total {
                break (done, total);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let kill = Command::new("kill").args(["-INT", &first.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = tokio::task::block_in_place(|| wait(&mut first, Duration::from_secs(60)));
    let mut stderr = String::new();
    std::io::Read::read_to_string(first.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "interrupted: {stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");
    assert!(!dir.path().join("results.jsonl").exists(), "no results file from an unfinished run");
    let left: i64 = {
        let store = open(&db).await;
        let p = store.progress(0).await.unwrap();
        p.iter().filter(|r| r.state != "succeeded").map(|r| r.count).sum()
    };
    assert!(left > 0, "the interruption left work to do ({done_then}/{total} done when it came)");

    // Meanwhile other work shares the store (as a `sluice serve` on the same file would), and
    // stays open: a batch task of a workload this config does not know. The run neither waits
    // for it nor reports it.
    let foreign = {
        use sluice_store::{NewEvent, NewTask, TaskState};
        let store = open(&db).await;
        let now = sluice_engine::now_ms();
        let event = NewEvent {
            id: "evt_elsewhere".into(),
            event_type: "other.thing".into(),
            payload: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            idempotency_key: None,
            request_hash: "h-elsewhere".into(),
            needed_within_ms: None,
            source: "api".into(),
            received_at: now,
            tasks: vec![NewTask {
                id: "tsk_elsewhere".into(),
                workload: "elsewhere".into(),
                lane: "batch".into(),
                state: TaskState::Queued,
                rule: "cheapest".into(),
                reason: "batched".into(),
                decision: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
                deadline: now + 86_400_000,
                priority: 0,
                after_task_id: None,
                lease: None,
            }],
        };
        store.ingest(&[vec![event]]).await.unwrap().remove(0).unwrap();
        "evt_elsewhere"
    };

    let mut second = run_job(&config, dir.path());
    let status = tokio::task::block_in_place(|| wait(&mut second, Duration::from_secs(240)));
    let mut out = String::new();
    std::io::Read::read_to_string(second.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{out}");

    // One result line per task, every task done.
    let store = open(&db).await;
    let mut rows = store.history(0).await.unwrap();
    let theirs = rows.iter().position(|r| r.event_id == foreign).unwrap();
    assert_eq!(rows.remove(theirs).state, "queued", "the other work was left alone");
    assert_eq!(rows.len() as i64, total, "resuming stored no event twice");
    let results = jsonl(&dir.path().join("results.jsonl"));
    assert_eq!(results.len(), rows.len(), "one result line per task");
    let mut seen = HashMap::new();
    for r in &results {
        assert_eq!(r["state"], "succeeded", "{r}");
        assert!(r["output"].as_str().is_some_and(|o| !o.is_empty()));
        assert!(r["line"].as_u64().is_some());
        *seen.entry(r["task_id"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "each task once in the results");

    // The charge log: every task paid exactly once, across both runs.
    let charges = sim.charges().all();
    let mut paid: HashMap<&str, usize> = HashMap::new();
    for c in &charges {
        let id = c.custom_id.as_deref().or(c.user_id.as_deref()).or(c.user.as_deref()).unwrap();
        *paid.entry(id).or_insert(0) += 1;
    }
    for r in &rows {
        assert_eq!(
            paid.get(r.task_id.as_str()),
            Some(&1),
            "task {} ({}) paid once",
            r.task_id,
            r.workload
        );
    }
    assert_eq!(charges.len(), rows.len(), "no charge for anything else");
}

/// A day of history written through the store's own API, as sluice would have left it: every
/// event, its task, its batch (submitted and ended at the given times) and its result.
async fn history(
    store: &Store,
    workload: &str,
    n: usize,
    day_start: i64,
    deadline_ms: i64,
    batch_hours: f64,
    tokens: (i64, i64),
) {
    use sluice_store::{BatchRecord, Completion, LedgerEntry, NewEvent, NewTask, TaskState};
    let hour = 3_600_000i64;
    let spacing = 86_400_000 / n as i64;
    let mut ids = Vec::new();
    let events: Vec<NewEvent> = (0..n)
        .map(|i| {
            let at = day_start + i as i64 * spacing;
            let task = format!("tsk_{workload}_{i}");
            ids.push((task.clone(), at));
            NewEvent {
                id: format!("evt_{workload}_{i}"),
                event_type: "x".into(),
                payload: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
                idempotency_key: None,
                request_hash: format!("h{i}"),
                needed_within_ms: None,
                source: "api".into(),
                received_at: at,
                tasks: vec![NewTask {
                    id: task,
                    workload: workload.into(),
                    lane: "batch".into(),
                    state: TaskState::Queued,
                    rule: "cheapest".into(),
                    reason: "batched".into(),
                    decision: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
                    deadline: at + deadline_ms,
                    priority: 0,
                    after_task_id: None,
                    lease: None,
                }],
            }
        })
        .collect();
    for chunk in events.chunks(500) {
        store.ingest(&[chunk.to_vec()]).await.unwrap().remove(0).unwrap();
    }
    // A batch an hour's worth of items, taking `batch_hours` each.
    for (b, group) in ids.chunks(n.div_ceil(24).max(1)).enumerate() {
        let created = group.last().unwrap().1;
        let ended = created + (batch_hours * hour as f64) as i64;
        let record = BatchRecord {
            id: format!("bat_{workload}_{b}"),
            provider: "anthropic".into(),
            model: "m".into(),
            state: "submitting".into(),
            provider_batch_id: None,
            item_count: group.len() as i64,
            bytes: 1,
            created_at: created,
            submitted_at: None,
            ended_at: None,
            last_error: None,
            reserved_nanousd: 0,
        };
        let task_ids: Vec<String> = group.iter().map(|(t, _)| t.clone()).collect();
        assert!(
            store
                .record_batch(
                    &record,
                    &task_ids,
                    &sluice_store::Lease { owner: "gone".into(), expires_at: 0 }
                )
                .await
                .unwrap()
        );
        store.batch_submitted(&record.id, &format!("msgbatch_{b}"), created).await.unwrap();
        let lines: Vec<(String, Completion)> = group
            .iter()
            .map(|(t, _)| {
                let c = Completion {
                    attempt_id: format!("att_{t}"),
                    started_at: created,
                    finished_at: ended,
                    provider_request_id: None,
                    output: "{}".into(),
                    stop_reason: "end_turn".into(),
                    input_tokens: tokens.0,
                    cached_input_tokens: 0,
                    output_tokens: tokens.1,
                    first_token_ms: None,
                    ledger: LedgerEntry {
                        id: format!("led_{t}"),
                        workload: workload.into(),
                        provider: "anthropic".into(),
                        model: "m".into(),
                        lane: "batch".into(),
                        input_tokens: tokens.0,
                        cached_input_tokens: 0,
                        output_tokens: tokens.1,
                        cost_nanousd: 1,
                        stream_cost_nanousd: 2,
                        created_at: ended,
                    },
                    deliveries: Vec::new(),
                };
                (t.clone(), c)
            })
            .collect();
        store.batch_lines(&record.id, &lines).await.unwrap();
        store.finish_batch(&record.id, "ended", ended, None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advise_streams_a_batch_that_misses_its_deadline_and_batches_a_busy_idle_stream() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::copy(repo().join("crates/sluice/tests/fixtures/advise.toml"), &config).unwrap();
    let db = dir.path().join("history.db");
    let store =
        Store::open(&format!("sqlite://{}", db.display()), SqliteDurability::Normal).await.unwrap();
    let day = 1_764_000_000_000i64;
    // Lead scoring's batches took five and a half hours against its four-hour deadline; tagging,
    // declared at 5 a day, came 20,000 times.
    history(&store, "lead-scoring", 300, day, 4 * 3_600_000, 5.5, (3500, 900)).await;
    history(&store, "tagging", 20_000, day, 48 * 3_600_000, 5.5, (400, 60)).await;
    drop(store);

    let url = format!("sqlite://{}", db.display());
    let out = sluice(&[
        "advise",
        "--config",
        config.to_str().unwrap(),
        "--store",
        &url,
        "--days",
        "1",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let a: Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = |name: &str| {
        a["workloads"].as_array().unwrap().iter().find(|w| w["workload"] == name).unwrap().clone()
    };
    let scoring = w("lead-scoring");
    assert_eq!(
        (scoring["current"].as_str(), scoring["recommended"].as_str()),
        (Some("batch"), Some("stream"))
    );
    let month = scoring["monthly_saving_usd"].as_f64().unwrap();
    // 300 a day of opus at 3,500 in / 900 out: streaming costs the other half of $0.032 an item.
    assert!((month + 0.016 * 300.0 * 30.0).abs() < 10.0, "costs about $144 a month more: {month}");
    let tagging = w("tagging");
    assert_eq!(
        (tagging["current"].as_str(), tagging["recommended"].as_str()),
        (Some("stream"), Some("batch"))
    );
    assert!(tagging["monthly_saving_usd"].as_f64().unwrap() > 1.0, "{tagging}");

    let out =
        sluice(&["advise", "--config", config.to_str().unwrap(), "--store", &url, "--days", "1"]);
    let table = text(&out.stdout);
    assert!(table.contains("→ stream") && table.contains("→ batch"), "{table}");
    assert!(table.contains("a month"), "{table}");
}
