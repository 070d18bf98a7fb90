//! The stream path end to end, in one process over real sockets: ingest → stream executor →
//! the simulator → tokens to a watcher as they arrive → the stored result and ledger → a signed
//! webhook. Also: a permanent error fails cleanly without retries, a fault is retried, and the
//! simulator's charge log shows nothing paid twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{SECRET, World, sse, sse_to_end, wait_for};
use serde_json::{Value, json};
use sluice_sim::SimConfig;

async fn world(sim: SimConfig, headers: Vec<(String, String)>) -> World {
    common::world(sim, headers, config).await
}

/// A sim whose answers take `first_token_ms`, then `per_token_ms` a token.
fn slow_sim(first_token_ms: u64, per_token_ms: u64) -> SimConfig {
    let mut sim = SimConfig::default();
    sim.latency.time_to_first_token =
        sluice_sim::Dist::Fixed(Duration::from_millis(first_token_ms));
    sim.latency.per_token = sluice_sim::Dist::Fixed(Duration::from_millis(per_token_ms));
    sim
}

/// The whole service over [`slow_sim`].
async fn slow_world(first_token_ms: u64, per_token_ms: u64) -> World {
    world(slow_sim(first_token_ms, per_token_ms), Vec::new()).await
}

/// Another worker takes the task over while it runs, as after a lease it saw expire.
async fn take_over_while_running(w: &World, id: &str) {
    wait_for(Duration::from_secs(5), async || {
        let d = w.store.task(id).await.unwrap().unwrap();
        (d.task.state == sluice_store::TaskState::Running).then_some(())
    })
    .await;
    let later = sluice_engine::now_ms() + 120_000;
    let taken = w.store.claim(&["stream"], "another-worker", later, 60_000, 10).await.unwrap();
    assert!(taken.iter().any(|c| c.task.id == id), "the task is taken over");
}

/// The id of each event's first task, from a `202` for an array of events.
fn first_task_ids(accepted: &Value) -> Vec<String> {
    let events = accepted["events"].as_array().unwrap();
    events.iter().map(|e| e["tasks"][0]["id"].as_str().unwrap().to_owned()).collect()
}

fn config(sim: &str, hook: &str) -> String {
    format!(
        r#"
min_daily_savings = 0.5
[providers.anthropic]
kind = "anthropic"
base_url = "{sim}"
[providers.openai]
kind = "openai"
base_url = "{sim}/v1"

[[workloads]]
name = "triage"
on = "ticket.created"
provider = "anthropic"
model = "claude-haiku-5-5"
max_tokens = 200
prompt = "Triage: {{{{ payload.subject }}}}"
needed_within = "2m"
delay_cost = "significant"
volume_per_day = 1000
deliver = {{ webhook = "{hook}", secret_env = "E2E_HOOK_SECRET" }}

[[workloads]]
name = "reply"
on = "ticket.created"
after = "triage"
provider = "openai"
model = "gpt-5.4-mini"
max_tokens = 100
prompt = "Reply given {{{{ after.output }}}}"
lane = "stream"

[[workloads]]
name = "broken"
on = "broken.thing"
provider = "openai"
model = "gpt-unknown-model"
max_tokens = 50
prompt = "{{{{ payload.x }}}}"
lane = "stream"

[[workloads]]
name = "social"
on = "social.mention"
provider = "openai"
model = "gpt-5.4-mini"
max_tokens = 100
prompt = "Reply to {{{{ payload.text }}}}"
needed_within = "45m"
lane = "flex"

[providers.openai.prices."gpt-unknown-model"]
input = 1.0
output = 1.0
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_streams_tokens_to_its_watcher_and_a_signed_result_to_its_webhook() {
    // Slow enough tokens that the watcher, connecting right after the 202, sees them arrive
    // even on a loaded machine.
    let w = slow_world(400, 10).await;
    let r: Value = w.post_events(&json!({"type": "ticket.created", "payload": {"subject": "Refund for a double charge"}})).await;
    let triage = &r["tasks"][0];
    // Stored already claimed by the executor, which started the call before the 202 was sent.
    assert_eq!(triage["state"], "running", "{r}");
    let url = format!("{}{}", w.base, triage["stream_url"].as_str().unwrap());
    let events = sse(w.http.get(&url).send().await.unwrap(), Duration::from_secs(10)).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "delta")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().filter(|n| **n == "delta").count() >= 2,
        "tokens arrive as produced: {names:?}"
    );
    let done = &events.last().unwrap().1;
    assert_eq!(done["output"].as_str().unwrap(), deltas, "the deltas add up to the result");
    assert!(done["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(matches!(done["stop_reason"].as_str(), Some("end_turn" | "max_tokens")), "{done}");

    // A watcher that connects after the end gets the whole result at once, read from the
    // store: the same final event as the live watcher's, which the executor told.
    let late = sse(w.http.get(&url).send().await.unwrap(), Duration::from_secs(5)).await;
    assert_eq!(&late.last().unwrap().1, done);

    // The task that runs after it is released, streamed, and uses its output.
    let reply_id = r["tasks"][1]["id"].as_str().unwrap().to_owned();
    let reply = wait_for(Duration::from_secs(10), async || {
        let d = w.store.task(&reply_id).await.unwrap().unwrap();
        (d.task.state == sluice_store::TaskState::Succeeded).then_some(d)
    })
    .await;
    assert_eq!(reply.task.lane, "stream");

    // The webhook got the signed result.
    let (headers, body) =
        wait_for(Duration::from_secs(10), async || w.hooks.lock().unwrap().first().cloned()).await;
    let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
    let key = sluice_core::webhook::decode_secret(SECRET).unwrap();
    let ts: i64 = h("webhook-timestamp").parse().unwrap();
    assert!(sluice_core::webhook::matches(
        &key,
        &h("webhook-id"),
        ts,
        &body,
        &h("webhook-signature")
    ));
    let delivered: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(delivered["task_id"], triage["id"]);
    assert_eq!(delivered["output"], done["output"]);

    // Each task paid once, at the standard price, and the ledger agrees with the sim.
    let charges = w.sim.charges().all();
    for id in [triage["id"].as_str().unwrap(), reply_id.as_str()] {
        let n = charges
            .iter()
            .filter(|c| c.user_id.as_deref() == Some(id) || c.user.as_deref() == Some(id))
            .count();
        assert_eq!(n, 1, "task {id} charged {n} times");
    }
    let ledger = w.store.task(triage["id"].as_str().unwrap()).await.unwrap().unwrap().cost_nanousd
        as f64
        / 1e9;
    let charged: f64 = charges
        .iter()
        .filter(|c| c.user_id.as_deref() == triage["id"].as_str())
        .map(|c| c.total_usd)
        .sum();
    assert!((ledger - charged).abs() < 1e-9, "ledger {ledger} vs sim {charged}");
    assert_eq!(
        done["cost_usd"].as_f64().unwrap(),
        ledger,
        "the final event tells the ledger's cost"
    );
    let _ = w.stop.send(true);
    w.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_for_an_event_stream_answers_with_the_tokens_of_every_streamed_task() {
    let w = slow_world(100, 5).await;
    let post = |body: Value| {
        w.http
            .post(format!("{}/v1/events", w.base))
            .header("accept", "text/event-stream")
            .json(&body)
            .send()
    };
    let ticket = json!({"type": "ticket.created", "payload": {"subject": "Refund"}});
    let resp = post(ticket).await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::ACCEPTED);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = sse_to_end(resp, Duration::from_secs(20)).await.expect("the response ends");

    // First what a plain 202 says, then both streamed tasks (triage, and the reply that runs
    // after it) to their ends, each event naming its task.
    let (first, accepted) = &events[0];
    assert_eq!(first, "accepted");
    let ids: Vec<&str> =
        accepted["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{accepted}");
    for id in &ids {
        let of_task = |name: &'static str| {
            events.iter().filter(move |(n, d)| n == name && d["task_id"] == *id).map(|(_, d)| d)
        };
        let deltas: String = of_task("delta").map(|d| d["text"].as_str().unwrap()).collect();
        let done: Vec<&Value> = of_task("done").collect();
        assert_eq!(done.len(), 1, "one done for {id}: {events:?}");
        assert!(of_task("delta").count() >= 2, "tokens arrive as produced");
        assert_eq!(done[0]["output"].as_str().unwrap(), deltas, "the deltas add up to the result");
    }
    let last = |id: &str| events.iter().rposition(|(_, d)| d["task_id"] == id).unwrap();
    let first_reply_delta =
        events.iter().position(|(n, d)| n == "delta" && d["task_id"] == ids[1]).unwrap();
    assert!(first_reply_delta > last(ids[0]), "the reply runs after triage is done");

    // Several events cannot share one response, and asking for it stores nothing.
    let before = w.store.counts().await.unwrap();
    let resp =
        post(json!([{"type": "ticket.created", "payload": {"subject": "A"}}])).await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "stream_one_event", "{body}");
    assert_eq!(w.store.counts().await.unwrap(), before);
    let _ = w.stop.send(true);
    w.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_hears_when_the_result_cannot_be_stored_instead_of_waiting_forever() {
    // A call long enough to take the task over while it runs, even on a loaded machine (the
    // lease is renewed only every 10 s, so the executor learns of it when it writes the result).
    let w = slow_world(1000, 20).await;
    let ticket = json!({"type": "ticket.created", "payload": {"subject": "Refund"}});
    let r: Value = w.post_events(&ticket).await;
    let id = r["tasks"][0]["id"].as_str().unwrap().to_owned();
    let url = format!("{}/v1/tasks/{id}/stream", w.base);
    let watcher = tokio::spawn({
        let request = w.http.get(&url).send();
        async move { sse(request.await.unwrap(), Duration::from_secs(8)).await }
    });

    take_over_while_running(&w, &id).await;

    // The call ends, its result is refused (the lease is lost): the watcher is told, not left
    // waiting on a stream that will never end.
    let events = watcher.await.unwrap();
    let told = events.iter().any(|(name, d)| {
        name == "status" && d["message"].as_str().is_some_and(|m| m.contains("another worker"))
    });
    assert!(told, "{events:?}");
    let _ = w.stop.send(true);
    w.sim.shutdown().await;
}

/// A worker that loses its lease during a call (its heartbeats found another worker owns the
/// task) does not drop the call: the provider bills it all the same. Its watchers are told at
/// once, the call runs to its end, and it is recorded as paid for and superseded, so that the
/// ledger still shows everything the provider billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_loses_its_lease_midway_is_still_in_the_ledger() {
    let opts = sluice_engine::ExecutorOptions {
        lease: Duration::from_millis(1500),
        ..common::quick_options(Vec::new())
    };
    let w = common::world_with(slow_sim(1500, 15), opts, config).await;
    let ticket = json!({"type": "ticket.created", "payload": {"subject": "Refund"}});
    let r: Value = w.post_events(&ticket).await;
    let id = r["tasks"][0]["id"].as_str().unwrap().to_owned();
    let url = format!("{}/v1/tasks/{id}/stream", w.base);
    // When the watcher hears of it: read as it comes, not at the stream's end.
    let watcher = tokio::spawn({
        let request = w.http.get(&url).send();
        async move {
            use futures::StreamExt;
            let mut body = request.await.unwrap().bytes_stream();
            let mut text = String::new();
            let limit = tokio::time::Instant::now() + Duration::from_secs(10);
            while let Ok(Some(chunk)) = tokio::time::timeout_at(limit, body.next()).await {
                text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                if text.contains("another worker") {
                    return Some(sluice_engine::now_ms());
                }
            }
            None
        }
    });
    take_over_while_running(&w, &id).await;

    let told_at = watcher.await.unwrap().expect("the watcher is told another worker took over");
    let d = wait_for(Duration::from_secs(15), async || {
        let d = w.store.task(&id).await.unwrap().unwrap();
        d.attempt_log.iter().any(|a| a.outcome == "superseded").then_some(d)
    })
    .await;
    assert_eq!(d.task.lease_owner.as_deref(), Some("another-worker"), "its new owner is kept");
    let call = d.attempt_log.iter().find(|a| a.outcome == "superseded").unwrap();
    assert!(told_at < call.ended_at.unwrap(), "the watcher was told only when the call ended");
    assert!(d.result.is_none(), "a superseded answer is not kept");
    let charges = w.sim.charges().all();
    let paid: Vec<_> = charges.iter().filter(|c| c.user_id.as_deref() == Some(&*id)).collect();
    assert_eq!(paid.len(), 1, "{paid:?}");
    let billed_nano = paid[0].total_pico_usd as f64 / 1000.0;
    assert!(
        (d.cost_nanousd as f64 - billed_nano).abs() <= 1.0,
        "ledger {} vs billed {billed_nano} nano-dollars",
        d.cost_nanousd
    );
    let _ = w.stop.send(true);
    w.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_result_is_stored_once_the_store_is_back_not_paid_for_again() {
    let w = slow_world(600, 5).await;
    let ticket = json!({"type": "ticket.created", "payload": {"subject": "Refund"}});
    let r: Value = w.post_events(&ticket).await;
    let id = r["tasks"][0]["id"].as_str().unwrap().to_owned();
    wait_for(Duration::from_secs(5), async || {
        let d = w.store.task(&id).await.unwrap().unwrap();
        (d.task.state == sluice_store::TaskState::Running).then_some(())
    })
    .await;
    // While the call runs, results cannot be written (as in a database outage); the call ends
    // and is paid for meanwhile.
    common::sql(&w.store, "ALTER TABLE results RENAME TO results_away").await;
    wait_for(Duration::from_secs(10), async || {
        let paid = w.sim.charges().all().iter().any(|c| c.user_id.as_deref() == Some(&*id));
        paid.then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    common::sql(&w.store, "ALTER TABLE results_away RENAME TO results").await;

    // The executor kept trying: the result is stored well before the lease (30 s) would have
    // handed the task to a new call.
    let d = wait_for(Duration::from_secs(10), async || {
        let d = w.store.task(&id).await.unwrap().unwrap();
        d.task.state.is_final().then_some(d)
    })
    .await;
    assert_eq!(d.task.state, sluice_store::TaskState::Succeeded, "{:?}", d.attempt_log);
    assert!(d.result.is_some());
    let charges = w.sim.charges().all();
    let paid = charges.iter().filter(|c| c.user_id.as_deref() == Some(&*id)).count();
    assert_eq!(paid, 1, "paid for once");
    let _ = w.stop.send(true);
    w.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_tasks_start_from_ingest_while_call_slots_last_and_wait_queued_beyond() {
    // Calls that hold their slot a while: 4 slots, 8 places to wait for one in memory, and 17
    // tasks at once.
    let (slots, waiting) = (4, 8);
    let opts = sluice_engine::ExecutorOptions {
        max_in_flight: slots,
        max_waiting: waiting,
        ..sluice_engine::ExecutorOptions::default()
    };
    let w = common::world_with(slow_sim(300, 0), opts, config).await;
    let events: Vec<Value> = (0..slots + waiting + 5)
        .map(|i| json!({"type": "ticket.created", "payload": {"subject": format!("Ticket {i}")}}))
        .collect();
    let r: Value = w.post_events(&events).await;
    let triage: Vec<&Value> =
        r["events"].as_array().unwrap().iter().map(|e| &e["tasks"][0]).collect();
    let state = |s: &str| triage.iter().filter(|t| t["state"] == s).count();
    assert_eq!(
        state("running"),
        slots + waiting,
        "handed over at ingest: one task per free slot, then as many as may wait for one"
    );
    assert_eq!(state("queued"), 5, "the rest wait in the store for a slot");
    // Operators see the split on /metrics (the recorder is shared by this file's tests: at least).
    let metrics =
        w.http.get(format!("{}/metrics", w.base)).send().await.unwrap().text().await.unwrap();
    let count = |outcome: &str| -> u64 {
        let name = format!("sluice_ingest_stream_handoffs_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };
    assert!(count("handed") >= (slots + waiting) as u64 && count("queued") >= 5);

    // All of them run, once each: those handed over and those claimed later.
    let ids: Vec<String> = triage.iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect();
    for id in &ids {
        let d = wait_for(Duration::from_secs(30), async || {
            let d = w.store.task(id).await.unwrap().unwrap();
            (d.task.state == sluice_store::TaskState::Succeeded).then_some(d)
        })
        .await;
        assert_eq!(d.task.attempts, 1, "task {id} ran {} times", d.task.attempts);
    }
    let charges = w.sim.charges().all();
    for id in &ids {
        let n = charges.iter().filter(|c| c.user_id.as_deref() == Some(id.as_str())).count();
        assert_eq!(n, 1, "task {id} charged {n} times");
    }
    let _ = w.stop.send(true);
    w.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_event_cannot_be_read_for_a_moment_runs_later_instead_of_failing() {
    let opts = sluice_engine::ExecutorOptions {
        lease: Duration::from_secs(2),
        max_attempts: 5,
        ..common::quick_options(Vec::new())
    };
    let w = common::world_with(SimConfig::default(), opts, config).await;
    // A task of a worker that died: the executor takes it over when its lease ends, and reads
    // its event from the store to render the call, while the store cannot give it.
    let lease = sluice_store::Lease {
        owner: "dead-worker".into(),
        expires_at: sluice_engine::now_ms() + 300,
    };
    let ticket = claimed_ticket(lease, "outage");
    let id = ticket.tasks[0].id.clone();
    w.store.ingest(&[vec![ticket]]).await.unwrap().remove(0).unwrap();
    common::sql(&w.store, "ALTER TABLE events RENAME TO events_away").await;
    let taken = wait_for(Duration::from_secs(10), async || {
        let d = w.store.task(&id).await.unwrap().unwrap();
        (d.task.lease_owner.as_deref() != Some("dead-worker")).then_some(d)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = w.store.task(&id).await.unwrap().unwrap();
    assert_eq!(d.task.state, sluice_store::TaskState::Running, "not failed: {:?}", d.attempt_log);
    assert_eq!(d.task.fence, taken.task.fence);
    common::sql(&w.store, "ALTER TABLE events_away RENAME TO events").await;

    // Its lease ends, it is taken again, and this time it runs.
    let d = wait_for(Duration::from_secs(15), async || {
        let d = w.store.task(&id).await.unwrap().unwrap();
        d.task.state.is_final().then_some(d)
    })
    .await;
    assert_eq!(d.task.state, sluice_store::TaskState::Succeeded, "{:?}", d.attempt_log);
    let _ = w.stop.send(true);
    w.sim.shutdown().await;
}

/// A ticket with its triage task, to be stored already claimed under `lease`.
fn claimed_ticket(lease: sluice_store::Lease, label: &str) -> sluice_store::NewEvent {
    let mut task = common::task(label, "triage", "stream", sluice_store::TaskState::Running);
    task.lease = Some(lease);
    let payload = json!({"subject": format!("Ticket {label}")});
    common::event_with_task(label, "ticket.created", payload, task)
}

/// A stopping service delivers the results it has just stored before it exits, rather than leave
/// them for its next start (the demo's results files missed their last lines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_deliverer_first_delivers_what_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("triage.jsonl");
    let toml = format!(
        r#"
[providers.anthropic]
kind = "anthropic"

[[workloads]]
name = "triage"
on = "ticket.created"
provider = "anthropic"
model = "claude-haiku-5-5"
max_tokens = 50
prompt = "Triage: {{{{ payload.subject }}}}"
lane = "stream"
deliver = {{ file = "{}" }}
"#,
        sink.display()
    );
    let config = sluice_core::Config::parse(&toml, "deliver.toml").unwrap();
    let url = format!("sqlite://{}", dir.path().join("deliver.db").display());
    let store =
        sluice_store::Store::open(&url, sluice_store::SqliteDurability::Full).await.unwrap();
    let now = sluice_engine::now_ms();
    let lease = sluice_store::Lease { owner: "test".into(), expires_at: now + 60_000 };
    let ticket = claimed_ticket(lease, "delivered");
    let id = ticket.tasks[0].id.clone();
    store.ingest(&[vec![ticket]]).await.unwrap().remove(0).unwrap();
    let answer = sluice_providers::ChatResponse {
        text: "billing".into(),
        stop_reason: sluice_providers::StopReason::EndTurn,
        usage: sluice_providers::Usage { input_tokens: 9, output_tokens: 1, ..Default::default() },
        model: "claude-haiku-5-5".into(),
        provider_request_id: None,
        rate_limit: None,
    };
    let completion =
        sluice_engine::executor::completion_for(&config, "triage", "stream", &answer, now, Some(1));
    store.complete(&id, 1, &completion).await.unwrap().unwrap();

    // Told to stop before it has looked at the store even once.
    let (_stop, stopped) = tokio::sync::watch::channel(true);
    let deliverer = sluice_engine::Deliverer::new(
        store,
        std::sync::Arc::new(config),
        |_| None,
        Default::default(),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(15), deliverer.run(stopped)).await.unwrap();
    let lines = std::fs::read_to_string(&sink).unwrap_or_default();
    assert_eq!(lines.lines().count(), 1, "{lines:?}");
    assert!(lines.contains(&id) && lines.contains("billing"), "{lines}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_as_calls_end_without_waiting_for_a_poll() {
    // Two call slots, calls that hold one for 100 ms, and a poll so rare that only the ends of
    // calls can start the tasks left queued (nothing runs after these, so nothing else wakes
    // the executor): 12 tasks take about six rounds of calls.
    // No place to wait in memory: every task beyond the two slots is stored queued.
    let opts = sluice_engine::ExecutorOptions {
        max_in_flight: 2,
        max_waiting: 0,
        poll: Duration::from_secs(600),
        ..sluice_engine::ExecutorOptions::default()
    };
    let solo = |sim: &str, _hook: &str| {
        format!(
            r#"
[providers.anthropic]
kind = "anthropic"
base_url = "{sim}"

[[workloads]]
name = "answer"
on = "question.asked"
provider = "anthropic"
model = "claude-haiku-5-5"
max_tokens = 20
prompt = "Answer: {{{{ payload.q }}}}"
lane = "stream"
"#
        )
    };
    let w = common::world_with(slow_sim(100, 0), opts, solo).await;
    let events: Vec<Value> = (0..12)
        .map(|i| json!({"type": "question.asked", "payload": {"q": format!("Question {i}")}}))
        .collect();
    let r: Value = w.post_events(&events).await;
    let ids = first_task_ids(&r);
    for id in &ids {
        wait_for(Duration::from_secs(20), async || {
            let d = w.store.task(id).await.unwrap().unwrap();
            (d.task.state == sluice_store::TaskState::Succeeded).then_some(())
        })
        .await;
    }
    let _ = w.stop.send(true);
    w.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_to_success_and_paid_once() {
    // One call in three meets a fault: 429, 500, 529, a reset or a cut stream.
    let mut sim = SimConfig::default();
    sim.faults.rate_429 = 0.07;
    sim.faults.rate_500 = 0.07;
    sim.faults.rate_529 = 0.07;
    sim.faults.rate_reset = 0.06;
    sim.faults.rate_cut = 0.06;
    sim.faults.retry_after = Duration::from_millis(100);
    // An attempt fails when a stream is cut after its first tokens or its in-call retries run
    // out (about one in ten here): with three attempts one task in a thousand would fail, and
    // one of these thirty in 3% of runs. With five, about 3e-4 of runs.
    let opts =
        sluice_engine::ExecutorOptions { max_attempts: 5, ..common::quick_options(Vec::new()) };
    let w = common::world_with(sim, opts, config).await;
    let events: Vec<Value> = (0..30)
        .map(|i| json!({"type": "ticket.created", "payload": {"subject": format!("ticket {i}")}}))
        .collect();
    let r: Value = w.post_events(&events).await;
    let ids = first_task_ids(&r);
    for id in &ids {
        let d = wait_for(Duration::from_secs(60), async || {
            let d = w.store.task(id).await.unwrap().unwrap();
            d.task.state.is_final().then_some(d)
        })
        .await;
        assert_eq!(d.task.state, sluice_store::TaskState::Succeeded, "{:?}", d.attempt_log);
        // Paid once for the answer it kept (a cut stream is billed by the sim too: the model ran).
        let charges = w.sim.charges().all();
        let paid: Vec<_> =
            charges.iter().filter(|c| c.user_id.as_deref() == Some(id.as_str())).collect();
        assert!(!paid.is_empty(), "task {id} was never billed");
        assert!(paid.len() <= 1 + d.attempt_log.len(), "task {id} billed {} times", paid.len());
    }
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_on_every_attempt_fails_the_task_cleanly_and_unbilled() {
    let w = world(SimConfig::default(), vec![("x-sim-fault".into(), "529".into())]).await;
    let r: Value =
        w.post_events(&json!({"type": "ticket.created", "payload": {"subject": "x"}})).await;
    let id = r["tasks"][0]["id"].as_str().unwrap().to_owned();
    let d = wait_for(Duration::from_secs(30), async || {
        let d = w.store.task(&id).await.unwrap().unwrap();
        d.task.state.is_final().then_some(d)
    })
    .await;
    assert_eq!(d.task.state, sluice_store::TaskState::Failed);
    assert_eq!(d.attempt_log.len(), 3, "{:?}", d.attempt_log);
    assert!(
        d.task.last_error.as_deref().unwrap().contains("overloaded"),
        "{:?}",
        d.task.last_error
    );
    // The task that runs after it fails with it.
    let (_, tasks) = w.store.event(&d.task.event_id).await.unwrap().unwrap();
    assert!(tasks.iter().all(|t| t.state == sluice_store::TaskState::Failed));
    assert!(w.sim.charges().all().is_empty(), "a 529 is not billed");
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_fails_the_task_without_retrying() {
    // A model the provider does not know: 404, permanent.
    let w = world(SimConfig::default(), Vec::new()).await;
    let r: Value = w.post_events(&json!({"type": "broken.thing", "payload": {"x": "y"}})).await;
    let id = r["tasks"][0]["id"].as_str().unwrap().to_owned();
    let d = wait_for(Duration::from_secs(10), async || {
        let d = w.store.task(&id).await.unwrap().unwrap();
        d.task.state.is_final().then_some(d)
    })
    .await;
    assert_eq!(d.task.state, sluice_store::TaskState::Failed);
    assert_eq!(d.attempt_log.len(), 1, "not retried: {:?}", d.attempt_log);
    assert!(
        d.task.last_error.as_deref().unwrap().contains("gpt-unknown-model"),
        "{:?}",
        d.task.last_error
    );
    let _ = w.stop.send(true);
}

async fn post_social(w: &World, needed_within: &str) -> String {
    let r: Value = w.post_events(&json!({"type": "social.mention", "payload": {"text": "love it"}, "needed_within": needed_within})).await;
    assert_eq!(r["tasks"][0]["lane"], "flex", "{r}");
    r["tasks"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flex_is_billed_at_the_flex_price() {
    let w = world(SimConfig::default(), Vec::new()).await;
    let id = post_social(&w, "45m").await;
    let d = wait_for(Duration::from_secs(10), async || {
        let d = w.store.task(&id).await.unwrap().unwrap();
        d.task.state.is_final().then_some(d)
    })
    .await;
    assert_eq!((d.task.state, d.task.lane.as_str()), (sluice_store::TaskState::Succeeded, "flex"));
    let charges = w.sim.charges().all();
    let c = charges.iter().find(|c| c.user.as_deref() == Some(id.as_str())).expect("billed");
    assert_eq!(format!("{:?}", c.tier), "Flex");
    let ledger = d.cost_nanousd as f64 / 1e9;
    assert!((ledger - c.total_usd).abs() < 1e-9, "ledger {ledger} vs sim {}", c.total_usd);
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_flex_call_falls_back_to_stream_when_the_deadline_is_near() {
    let mut sim = SimConfig::default();
    sim.flex.refuse_rate = 1.0;
    let w = world(sim, Vec::new()).await;
    // Needed within 30 s: no time to wait for flex capacity.
    let id = post_social(&w, "30s").await;
    let d = wait_for(Duration::from_secs(10), async || {
        let d = w.store.task(&id).await.unwrap().unwrap();
        d.task.state.is_final().then_some(d)
    })
    .await;
    assert_eq!(
        (d.task.state, d.task.lane.as_str()),
        (sluice_store::TaskState::Succeeded, "stream")
    );
    assert!(d.task.reason.contains("fell back to stream"), "{}", d.task.reason);
    assert_eq!(d.attempt_log[0].outcome, "flex_unavailable");
    let charges = w.sim.charges().all();
    let paid: Vec<_> = charges.iter().filter(|c| c.user.as_deref() == Some(id.as_str())).collect();
    assert_eq!(paid.len(), 1, "the refusal is not billed; the stream call is");
    assert_eq!(format!("{:?}", paid[0].tier), "Standard");
    let _ = w.stop.send(true);
}
