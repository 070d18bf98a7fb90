//! The batch path end to end against the simulator with fast turnaround: batches cut by items
//! and by age, every task ending with its result paid once at the batch price; and a task whose
//! batch runs too long for its deadline escalated to stream and delivered in time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{World, wait_for};
use serde_json::{Value, json};
use sluice_engine::{Batcher, BatcherOptions};
use sluice_sim::SimConfig;
use sluice_store::TaskState;

fn config(sim: &str, _hook: &str) -> String {
    format!(
        r#"
min_daily_savings = 0.0
[batch]
max_items = 4
max_age = "1s"
margin = "5s"

[providers.anthropic]
kind = "anthropic"
base_url = "{sim}"
batch_turnaround_p50 = "1s"
batch_turnaround_p95 = "2s"
[providers.openai]
kind = "openai"
base_url = "{sim}/v1"
batch_turnaround_p50 = "1s"
batch_turnaround_p95 = "2s"

[[workloads]]
name = "scoring"
on = "lead.created"
provider = "anthropic"
model = "claude-sonnet-5-5"
max_tokens = 200
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

async fn post(w: &World, kind: &str, n: usize, needed_within: Option<&str>) -> Vec<String> {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            let mut e = json!({"type": kind, "payload": {"name": format!("item {i}")}});
            if let Some(d) = needed_within {
                e["needed_within"] = json!(d);
            }
            e
        })
        .collect();
    let r: Value = w.post_events(&events).await;
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tasks"][0]["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn finished(w: &World, ids: &[String], limit: Duration) -> Vec<sluice_store::TaskDetail> {
    let mut out = Vec::new();
    for id in ids {
        out.push(
            wait_for(limit, async || {
                let d = w.store.task(id).await.unwrap().unwrap();
                d.task.state.is_final().then_some(d)
            })
            .await,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_cut_by_items_and_age_and_each_task_is_paid_once_at_the_batch_price() {
    let w = common::world(SimConfig::instant(), Vec::new(), config).await;
    // 10 leads: two full batches of 4 at once, the last 2 when they have waited a second.
    let leads = post(&w, "lead.created", 10, None).await;
    let records = post(&w, "record.imported", 3, None).await;
    let done = finished(&w, &leads, Duration::from_secs(20)).await;
    let done2 = finished(&w, &records, Duration::from_secs(20)).await;

    let mut batches: Vec<String> = Vec::new();
    for d in done.iter().chain(&done2) {
        assert_eq!(d.task.state, TaskState::Succeeded, "{:?}", d.attempt_log);
        assert_eq!(d.task.lane, "batch");
        let b = d
            .attempt_log
            .iter()
            .find(|a| a.outcome == "succeeded")
            .unwrap()
            .batch_id
            .clone()
            .unwrap();
        if !batches.contains(&b) {
            batches.push(b);
        }
    }
    // A batch is marked ended in the write after its results', so it may lag them a moment.
    let stored = wait_for(Duration::from_secs(10), async || {
        let stored = w.store.batches(100).await.unwrap();
        stored.iter().all(|b| b.state == "ended").then_some(stored)
    })
    .await;
    let sizes = |provider: &str| {
        let mut s: Vec<i64> =
            stored.iter().filter(|b| b.provider == provider).map(|b| b.item_count).collect();
        s.sort_unstable();
        s
    };
    assert_eq!(sizes("anthropic"), [2, 4, 4], "cut by items, then by age");
    assert_eq!(sizes("openai"), [3], "cut by age");
    assert!(stored.iter().all(|b| b.state == "ended" && b.provider_batch_id.is_some()));
    // The API shows them too.
    let list: Value =
        w.http.get(format!("{}/v1/batches", w.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["batches"].as_array().unwrap().len(), 4);
    let one: Value = w
        .http
        .get(format!("{}/v1/batches/{}", w.base, batches[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["state"], "ended");
    assert_eq!(one["counts"]["succeeded"], one["items"]);

    // Paid once each, at the batch tier, and the ledger agrees with the simulator to the cent.
    let charges = w.sim.charges().all();
    for d in done.iter().chain(&done2) {
        let paid: Vec<_> =
            charges.iter().filter(|c| c.custom_id.as_deref() == Some(d.task.id.as_str())).collect();
        assert_eq!(paid.len(), 1, "task {} paid {} times", d.task.id, paid.len());
        assert_eq!(format!("{:?}", paid[0].tier), "Batch");
        let ledger = d.cost_nanousd as f64 / 1e9;
        assert!(
            (ledger - paid[0].total_usd).abs() < 1e-9,
            "ledger {ledger} vs sim {}",
            paid[0].total_usd
        );
    }
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_slow_for_a_deadline_is_escalated_to_stream() {
    // Batches take 30 s here, their lines spread evenly over it; these leads are needed within
    // 30 s and the guard leaves a stream call some 12 s, so it cancels each batch about 17 s
    // into it (the batch is cut about 1 s after the post), when about half its lines have run
    // and been billed, and well before it would end by itself.
    let mut sim = SimConfig::instant();
    sim.batch.turnaround_median = Duration::from_secs(30);
    sim.batch.turnaround_p95 = Duration::from_secs(30);
    let w = common::world(sim, Vec::new(), config).await;
    // Sixteen, so that some line runs before its batch is cancelled: that none does has odds of
    // about 0.45^16 (3e-6). With 60 s batches they were near 0.75^16, and CI met that 1% once.
    let urgent = post(&w, "lead.created", 16, Some("30s")).await;
    // Within the deadline, which the test checks below; the escalation comes near it.
    let done = finished(&w, &urgent, Duration::from_secs(30)).await;
    for d in &done {
        assert_eq!(d.task.state, TaskState::Succeeded, "{:?}", d.attempt_log);
        assert_eq!(d.task.lane, "stream", "escalated");
        assert!(d.task.reason.contains("escalated to stream"), "{}", d.task.reason);
        assert!(d.task.updated_at <= d.task.deadline, "delivered on time");
    }
    // Every task of the batch left it: the batch is cancelled and ends. A line the provider had
    // already run before the cancel is billed all the same: it is kept in the ledger, but the
    // delivered result stays the streamed one.
    wait_for(Duration::from_secs(15), async || {
        let b = w.store.batches(10).await.unwrap();
        (!b.is_empty() && b.iter().all(|b| b.state == "ended")).then_some(())
    })
    .await;
    let charges = w.sim.charges().all();
    let mut billed_lines = 0;
    for d in &done {
        let id = d.task.id.as_str();
        let streamed: Vec<_> = charges
            .iter()
            .filter(|c| c.custom_id.is_none() && c.user_id.as_deref() == Some(id))
            .collect();
        assert_eq!(streamed.len(), 1, "the stream call is paid once: {streamed:?}");
        let batched: Vec<_> =
            charges.iter().filter(|c| c.custom_id.as_deref() == Some(id)).collect();
        assert!(batched.len() <= 1, "at most one batch line: {batched:?}");
        billed_lines += batched.len();
        let after = w.store.task(id).await.unwrap().unwrap();
        assert_eq!(after.task.lane, "stream");
        assert_eq!(
            after.result.as_ref().map(|r| r.output.clone()),
            d.result.as_ref().map(|r| r.output.clone())
        );
        let paid: f64 = streamed.iter().chain(&batched).map(|c| c.total_usd).sum();
        let ledger = after.cost_nanousd as f64 / 1e9;
        assert!((ledger - paid).abs() < 1e-9, "the ledger holds every charge: {ledger} vs {paid}");
    }
    assert!(billed_lines > 0, "some line ran before its batch was cancelled");
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errored_and_expired_lines_and_expired_batches_are_rebatched_until_done() {
    let mut sim = SimConfig::instant();
    sim.batch.line_error_rate = 0.25;
    sim.batch.line_expire_rate = 0.15;
    sim.batch.expire_rate = 0.2;
    // A batch that expires whole does so at the end of its 24 h window: make that milliseconds.
    sim.batch.acceleration = 1_000_000.0;
    let w = common::world(sim, Vec::new(), config).await;
    let leads = post(&w, "lead.created", 12, None).await;
    let records = post(&w, "record.imported", 6, None).await;
    let done = finished(&w, &[leads, records].concat(), Duration::from_secs(60)).await;
    let charges = w.sim.charges().all();
    let mut retried = 0;
    for d in &done {
        assert_eq!(d.task.state, TaskState::Succeeded, "{:?}", d.attempt_log);
        retried += d.attempt_log.iter().filter(|a| a.outcome == "retry").count();
        // Errored and expired lines are not billed: one charge per task, for the line that ran.
        let paid =
            charges.iter().filter(|c| c.custom_id.as_deref() == Some(d.task.id.as_str())).count();
        assert_eq!(paid, 1, "task {} paid {paid} times", d.task.id);
    }
    assert!(retried > 0, "with these fault rates some lines must have gone round again");
    // The first pass alone cuts five (twelve leads and six records, four a batch).
    assert!(w.store.batches(100).await.unwrap().len() > 5, "re-batched work makes more batches");
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_off_peak_window_only_a_deadline_cuts_a_batch() {
    // An off-peak window six hours from now (UTC, the config's clock): items and age wait for it,
    // a near deadline does not.
    let hour =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
            / 3600
            % 24;
    let window = format!("{:02}:00-{:02}:00", (hour + 6) % 24, (hour + 7) % 24);
    let config = move |sim: &str, hook: &str| {
        config(sim, hook).replacen(
            "max_items = 4\n",
            &format!("max_items = 2\noff_peak = [\"{window}\"]\n"),
            1,
        )
    };
    let w = common::world(SimConfig::instant(), Vec::new(), config).await;
    let relaxed = post(&w, "lead.created", 3, None).await;
    // Needed within 20 s: its deadline minus turnaround p95, stream p99 and margin is already past.
    let urgent = post(&w, "record.imported", 1, Some("20s")).await;
    let done = finished(&w, &urgent, Duration::from_secs(15)).await;
    assert_eq!(done[0].task.state, TaskState::Succeeded);
    assert_eq!(done[0].task.lane, "batch", "cut early for its deadline, not escalated");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &relaxed {
        let d = w.store.task(id).await.unwrap().unwrap();
        assert_eq!(d.task.state, TaskState::Queued, "waits for the off-peak window");
    }
    let stored = w.store.batches(10).await.unwrap();
    assert_eq!(stored.len(), 1, "only the deadline-forced batch was cut");
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_batch_is_cut_over_max_bytes() {
    let config = |sim: &str, hook: &str| {
        config(sim, hook).replacen("max_items = 4\n", "max_items = 100\nmax_bytes = 1500\n", 1)
    };
    let w = common::world(SimConfig::instant(), Vec::new(), config).await;
    let leads = post(&w, "lead.created", 12, None).await;
    let done = finished(&w, &leads, Duration::from_secs(20)).await;
    assert!(done.iter().all(|d| d.task.state == TaskState::Succeeded));
    let stored = w.store.batches(100).await.unwrap();
    assert!(
        stored.len() >= 2,
        "12 lines of a few hundred bytes need several batches of 1,500: {stored:?}"
    );
    assert_eq!(stored.iter().map(|b| b.item_count).sum::<i64>(), 12);
    assert!(stored.iter().all(|b| b.bytes <= 1500), "{stored:?}");
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observed_turnaround_replaces_the_prior_in_decisions() {
    // The config expects OpenAI batches to take hours, so work needed within 2 minutes streams;
    // once batches are seen to take well under a second, the same work is batched.
    let config = |sim: &str, hook: &str| {
        let c = config(sim, hook).replace(
            &format!("base_url = \"{sim}/v1\"\nbatch_turnaround_p50 = \"1s\"\nbatch_turnaround_p95 = \"2s\""),
            &format!("base_url = \"{sim}/v1\"\nbatch_turnaround_p50 = \"1h\"\nbatch_turnaround_p95 = \"3h\""),
        );
        format!(
            "{c}\n[[workloads]]\nname = \"enrich\"\non = \"contact.added\"\nprovider = \"openai\"\nmodel = \"gpt-5-mini\"\n\
             max_tokens = 100\nprompt = \"Enrich {{{{ payload.name }}}}\"\nneeded_within = \"2m\"\ndelay_cost = \"minimal\"\n\
             volume_per_day = 100000\n"
        )
    };
    let w = common::world(SimConfig::instant(), Vec::new(), config).await;
    let lane = async |w: &World| {
        let r: Value =
            w.post_events(&json!({"type": "contact.added", "payload": {"name": "Ada"}})).await;
        (
            r["tasks"][0]["lane"].as_str().unwrap().to_owned(),
            r["tasks"][0]["reason"].as_str().unwrap().to_owned(),
        )
    };
    let (before, why) = lane(&w).await;
    assert_eq!(before, "stream", "{why}");
    let records = post(&w, "record.imported", 20, None).await;
    finished(&w, &records, Duration::from_secs(30)).await;
    let (after, why) = lane(&w).await;
    assert_eq!(after, "batch", "{why}");
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_are_paced_under_the_enqueued_token_quota() {
    // Room for one batch of four short lines at a time: the next waits for it to end.
    let config = |sim: &str, hook: &str| {
        config(sim, hook).replace(
            &format!("base_url = \"{sim}/v1\"\n"),
            &format!("base_url = \"{sim}/v1\"\nbatch_enqueued_tokens = 300\n"),
        )
    };
    let mut sim = SimConfig::instant();
    sim.batch.turnaround_median = Duration::from_millis(400);
    sim.batch.turnaround_p95 = Duration::from_millis(500);
    let w = common::world(sim, Vec::new(), config).await;
    let records = post(&w, "record.imported", 12, None).await;
    let done = finished(&w, &records, Duration::from_secs(30)).await;
    assert!(done.iter().all(|d| d.task.state == TaskState::Succeeded));
    let mut batches = w.store.batches(100).await.unwrap();
    batches.sort_by_key(|b| b.created_at);
    assert!(batches.len() >= 3, "{batches:?}");
    for pair in batches.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            b.created_at >= a.ended_at.unwrap(),
            "batch {} was cut while {} still ran",
            b.id,
            a.id
        );
    }
    let _ = w.stop.send(true);
}

/// A TCP proxy in front of the simulator that can play dead: while `down`, it drops every open
/// connection and every new one, as a provider outage or a network partition would.
struct Proxy {
    url: String,
    down: tokio::sync::watch::Sender<bool>,
}

fn proxy(target: &str) -> Proxy {
    use tokio::net::{TcpListener, TcpStream};
    let target = target.trim_start_matches("http://").to_owned();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(std_listener).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (down, watching) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if *watching.borrow() {
                continue; // dropped: the client sees its connection closed
            }
            let mut outage = watching.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(&target).await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = outage.wait_for(|d| *d) => {}
                }
            });
        }
    });
    Proxy { url, down }
}

/// The providers' proxies of a world, to take them down and up together.
#[derive(Clone, Default)]
struct Proxies(Arc<std::sync::Mutex<Vec<Proxy>>>);

impl Proxies {
    fn set_down(&self, on: bool) {
        for p in self.0.lock().unwrap().iter() {
            p.down.send_replace(on);
        }
    }
}

/// The whole service with a [`proxy`] between it and each provider of the config.
async fn behind_proxies(sim: SimConfig) -> (World, Proxies) {
    let proxies = Proxies::default();
    let made = proxies.clone();
    let w = common::world(sim, Vec::new(), move |sim: &str, hook: &str| {
        let p = proxy(sim);
        let c = config(&p.url, hook);
        made.0.lock().unwrap().push(p);
        c
    })
    .await;
    (w, proxies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_while_polling_delays_results_but_loses_and_repays_nothing() {
    let mut sim = SimConfig::instant();
    sim.batch.turnaround_median = Duration::from_secs(2);
    sim.batch.turnaround_p95 = Duration::from_secs(2);
    let (w, proxies) = behind_proxies(sim).await;
    let down = |on: bool| proxies.set_down(on);
    let leads = post(&w, "lead.created", 4, None).await;
    // The batch is submitted and known by its provider id; then the provider goes away.
    wait_for(Duration::from_secs(10), async || {
        let b = w.store.batches(10).await.unwrap();
        b.first().filter(|b| b.provider_batch_id.is_some()).map(|_| ())
    })
    .await;
    down(true);
    // Well past the batch's turnaround: every poll in this time fails.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for id in &leads {
        let d = w.store.task(id).await.unwrap().unwrap();
        assert_eq!(
            d.task.state,
            TaskState::Batched,
            "still waiting for its batch: {:?}",
            d.attempt_log
        );
    }
    let stored = w.store.batches(10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].state, "submitted", "an unreachable provider does not fail a batch");

    down(false);
    let done = finished(&w, &leads, Duration::from_secs(30)).await;
    let charges = w.sim.charges().all();
    for d in &done {
        assert_eq!(d.task.state, TaskState::Succeeded, "{:?}", d.attempt_log);
        let paid =
            charges.iter().filter(|c| c.custom_id.as_deref() == Some(d.task.id.as_str())).count();
        assert_eq!(paid, 1, "task {} paid {paid} times", d.task.id);
    }
    // The batch is marked ended in the write after its results', so it may lag them a moment.
    let stored = wait_for(Duration::from_secs(10), async || {
        let stored = w.store.batches(10).await.unwrap();
        stored.iter().all(|b| b.state == "ended").then_some(stored)
    })
    .await;
    assert_eq!(stored.len(), 1, "nothing was submitted again: {stored:?}");
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_is_kept_while_the_batch_cannot_be_polled() {
    // Batches take 30 s; these leads are needed within 30 s, so the guard must send them to the
    // stream lane about 17 s into their batch, whether or not the provider answers polls then.
    let mut sim = SimConfig::instant();
    sim.batch.turnaround_median = Duration::from_secs(30);
    sim.batch.turnaround_p95 = Duration::from_secs(30);
    let (w, proxies) = behind_proxies(sim).await;
    let down = |on: bool| proxies.set_down(on);
    let urgent = post(&w, "lead.created", 4, Some("30s")).await;
    wait_for(Duration::from_secs(10), async || {
        let b = w.store.batches(10).await.unwrap();
        b.first().filter(|b| b.provider_batch_id.is_some()).map(|_| ())
    })
    .await;
    down(true);
    // Every poll fails from here; the tasks leave the batch for the stream lane all the same.
    wait_for(Duration::from_secs(25), async || {
        for id in &urgent {
            let d = w.store.task(id).await.unwrap().unwrap();
            if d.task.lane != "stream" {
                return None;
            }
        }
        Some(())
    })
    .await;
    down(false);
    let done = finished(&w, &urgent, Duration::from_secs(20)).await;
    for d in &done {
        assert_eq!(d.task.state, TaskState::Succeeded, "{:?}", d.attempt_log);
        assert!(d.task.reason.contains("escalated to stream"), "{}", d.task.reason);
    }
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_left_unsent_whose_tasks_no_longer_render_fails_them_instead_of_holding_them() {
    let w = common::world(SimConfig::instant(), Vec::new(), config).await;
    // As a crash leaves it: a batch recorded (`submitting`) and never sent, holding a task of a
    // workload since removed from the config.
    let now = sluice_engine::now_ms();
    let task = common::task("gone", "retired", "batch", TaskState::Queued);
    let task_id = task.id.clone();
    let event = common::event_with_task("gone", "lead.created", json!({"name": "Ada"}), task);
    w.store.ingest(&[vec![event]]).await.unwrap().remove(0).unwrap();
    let batch = sluice_store::BatchRecord {
        id: format!("bat_gone_{now}"),
        provider: "anthropic".into(),
        model: "claude-sonnet-5-5".into(),
        state: "submitting".into(),
        provider_batch_id: None,
        item_count: 1,
        bytes: 100,
        created_at: now,
        submitted_at: None,
        ended_at: None,
        last_error: None,
        reserved_nanousd: 0,
    };
    // Its submitter's lease ran out with it.
    let crashed = sluice_store::Lease { owner: "crashed".into(), expires_at: 0 };
    assert!(w.store.record_batch(&batch, std::slice::from_ref(&task_id), &crashed).await.unwrap());

    let d = wait_for(Duration::from_secs(10), async || {
        let d = w.store.task(&task_id).await.unwrap().unwrap();
        d.task.state.is_final().then_some(d)
    })
    .await;
    assert_eq!(d.task.state, TaskState::Failed);
    let why = d.attempt_log.iter().filter_map(|a| a.error.as_deref()).collect::<Vec<_>>();
    assert!(why.iter().any(|e| e.contains("no longer in the config")), "{why:?}");
    let b = wait_for(Duration::from_secs(10), async || {
        let (b, _) = w.store.batch(&batch.id).await.unwrap().unwrap();
        (b.state == "ended").then_some(b)
    })
    .await;
    assert_eq!(b.last_error.as_deref(), Some("no task left to submit"));
    assert!(w.sim.charges().all().is_empty(), "nothing sent");
    let _ = w.stop.send(true);
}

/// Two instances on one store (as on PostgreSQL): while one is still sending a batch (its
/// create call slow), the other sees it `submitting` with no provider id; it must leave it to
/// its sender, not find it missing at the provider and send it again, paying every line twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_another_instance_is_still_sending_is_not_sent_again() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = sluice_sim::Sim::start(SimConfig::instant(), "127.0.0.1:0").await.unwrap();
    let config =
        Arc::new(sluice_core::Config::parse(&config(sim.base_url(), ""), "two.toml").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("two.db").display());
    let store =
        sluice_store::Store::open(&url, sluice_store::SqliteDurability::Full).await.unwrap();
    let env = |_: &str| Some("sk-two".to_owned());
    // A lease far shorter than the slow create: the sender keeps the batch only by renewing it.
    let instance = |headers: Vec<(String, String)>| {
        let opts = BatcherOptions {
            extra_headers: headers,
            submit_lease: Duration::from_millis(400),
            ..BatcherOptions::default()
        };
        Batcher::new(store.clone(), config.clone(), env, None, opts).unwrap()
    };
    let mut slow = instance(vec![("x-sim-fault".into(), "stall=2s".into())]);
    let mut other = instance(Vec::new());
    // A full batch (max_items 4) for each provider, cut at the first tick.
    let mut tasks = Vec::new();
    for i in 0..4 {
        for (workload, kind) in [("scoring", "lead.created"), ("cleanup", "record.imported")] {
            let label = format!("{workload}{i}");
            let t = common::task(&label, workload, "batch", TaskState::Queued);
            tasks.push(t.id.clone());
            let e = common::event_with_task(&label, kind, json!({"name": label}), t);
            store.ingest(&[vec![e]]).await.unwrap().remove(0).unwrap();
        }
    }

    let sending = tokio::spawn(async move {
        slow.tick().await.unwrap();
        slow
    });
    wait_for(Duration::from_secs(5), async || {
        let open = store.open_batches().await.unwrap();
        open.iter().any(|b| b.state == "submitting").then_some(())
    })
    .await;
    // The other instance ticks all through the slow create.
    let mut seen_submitting = 0;
    while !sending.is_finished() {
        let open = store.open_batches().await.unwrap();
        seen_submitting += open.iter().filter(|b| b.state == "submitting").count();
        other.tick().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut slow = sending.await.unwrap();

    // Both follow the batches to their end.
    wait_for(Duration::from_secs(30), async || {
        slow.tick().await.unwrap();
        other.tick().await.unwrap();
        let q = sluice_store::TaskQuery { limit: 100, ..Default::default() };
        let all = store.tasks(&q).await.unwrap();
        all.iter().all(|t| t.state.is_final()).then_some(())
    })
    .await;
    let charges = sim.charges().all();
    for t in &tasks {
        let d = store.task(t).await.unwrap().unwrap();
        assert_eq!(d.task.state, TaskState::Succeeded, "{t}: {:?}", d.task.last_error);
        let paid = charges.iter().filter(|c| c.custom_id.as_deref() == Some(t.as_str())).count();
        assert_eq!(paid, 1, "task {t} paid {paid} times");
    }
    let ours: Vec<String> =
        store.batches(100).await.unwrap().into_iter().filter_map(|b| b.provider_batch_id).collect();
    for c in &charges {
        let b = c.batch_id.as_deref().unwrap_or_default();
        assert!(ours.iter().any(|o| o == b), "provider batch {b} is not in the store: sent twice");
    }
    // Not a vacuous pass: the other instance did tick while a batch was being sent.
    assert!(seen_submitting >= 5, "saw a batch being sent {seen_submitting} times");
}

/// A queued batch task whose prompt cannot be built (its template changed since the event was
/// accepted and asks for a field the payload lacks) fails with the reason, and so does what runs
/// after it, instead of staying queued with a warning at every tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_task_that_cannot_be_rendered_fails_with_what_follows_it() {
    let w = common::world(SimConfig::instant(), Vec::new(), config).await;
    let first = common::task("nameless", "scoring", "batch", TaskState::Queued);
    let mut then = common::task("nameless-then", "cleanup", "batch", TaskState::Pending);
    then.after_task_id = Some(first.id.clone());
    let ids = [first.id.clone(), then.id.clone()];
    let mut event = common::event_with_task("nameless", "lead.created", json!({}), first);
    event.tasks.push(then);
    w.store.ingest(&[vec![event]]).await.unwrap().remove(0).unwrap();

    let d = wait_for(Duration::from_secs(10), async || {
        let d = w.store.task(&ids[0]).await.unwrap().unwrap();
        d.task.state.is_final().then_some(d)
    })
    .await;
    assert_eq!(d.task.state, TaskState::Failed);
    let why = d.task.last_error.unwrap_or_default();
    assert!(why.contains("cannot build its request") && why.contains("name"), "{why}");
    let then = w.store.task(&ids[1]).await.unwrap().unwrap();
    assert_eq!(then.task.state, TaskState::Failed, "what runs after it cannot run");
    assert!(w.sim.charges().all().is_empty(), "nothing sent");
    let _ = w.stop.send(true);
}

/// Every task of a running batch was escalated elsewhere (by another instance following the same
/// batch, or by a poll whose cancel failed): no task waits for it, so it is cancelled, rather than
/// run to the end and every line paid for and thrown away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_no_task_waits_for_is_cancelled_whoever_escalated_its_tasks() {
    let mut sim = SimConfig::instant();
    sim.batch.turnaround_median = Duration::from_secs(60);
    sim.batch.turnaround_p95 = Duration::from_secs(60);
    let w = common::world(sim, Vec::new(), config).await;
    let ids = post(&w, "lead.created", 4, None).await;
    let (batch, provider_id) = wait_for(Duration::from_secs(10), async || {
        let b = w.store.batches(10).await.unwrap();
        b.into_iter().find_map(|b| Some((b.id.clone(), b.provider_batch_id?)))
    })
    .await;
    // Another instance escalates all four.
    for id in &ids {
        let now = sluice_engine::now_ms();
        let escalated = sluice_store::AttemptRecord {
            id: format!("att_elsewhere_{id}"),
            lane: "batch".into(),
            batch_id: Some(batch.clone()),
            started_at: now,
            ended_at: Some(now),
            outcome: "escalated".into(),
            error: Some("escalated by another instance".into()),
            provider_request_id: None,
        };
        let moved = w
            .store
            .unbatch(id, &batch, TaskState::Queued, "stream", now, Some("escalated"), &escalated)
            .await
            .unwrap();
        assert!(moved);
    }
    let url = format!("{}/v1/messages/batches/{provider_id}", w.sim.base_url());
    let status = wait_for(Duration::from_secs(10), async || {
        let r = w
            .http
            .get(&url)
            .header("x-api-key", "sk-e2e")
            .header("anthropic-version", "2023-06-01")
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        let s = v["processing_status"].as_str().unwrap_or_default().to_owned();
        (s != "in_progress").then_some(s)
    })
    .await;
    assert!(status == "canceling" || status == "ended", "{status}");
    let _ = w.stop.send(true);
}
