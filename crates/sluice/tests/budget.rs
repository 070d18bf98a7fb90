//! Budget caps: past the soft cap, low-urgency stream work is demoted to batch where its deadline
//! allows or held where it does not, while critical work proceeds; past the hard cap, nothing is
//! sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{World, wait_for};
use serde_json::{Value, json};
use sluice_sim::SimConfig;
use sluice_store::{TaskDetail, TaskState};

fn config(sim: &str, budget: &str) -> String {
    format!(
        r#"
min_daily_savings = 0.0
[budget]
{budget}
[batch]
max_age = "200ms"
[providers.anthropic]
kind = "anthropic"
base_url = "{sim}"
batch_turnaround_p50 = "1s"
batch_turnaround_p95 = "2s"

[[workloads]]
name = "digest"
on = "ticket.created"
provider = "anthropic"
model = "claude-haiku-5-5"
max_tokens = 100
prompt = "Digest {{{{ payload.s }}}}"
lane = "stream"
needed_within = "24h"

[[workloads]]
name = "alert"
on = "ticket.created"
provider = "anthropic"
model = "claude-haiku-5-5"
max_tokens = 100
prompt = "Alert {{{{ payload.s }}}}"
lane = "stream"
needed_within = "1m"

[[workloads]]
name = "fraud"
on = "ticket.created"
provider = "anthropic"
model = "claude-haiku-5-5"
max_tokens = 100
prompt = "Fraud {{{{ payload.s }}}}"
lane = "stream"
needed_within = "1m"
critical = true
"#
    )
}

async fn post(w: &World) -> Vec<String> {
    let r: Value = w.post_events(&json!({"type": "ticket.created", "payload": {"s": "x"}})).await;
    r["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
}

async fn settled(w: &World, id: &str, done: impl Fn(&TaskDetail) -> bool) -> TaskDetail {
    wait_for(Duration::from_secs(15), async || {
        let d = w.store.task(id).await.unwrap().unwrap();
        done(&d).then_some(d)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_soft_cap_work_is_demoted_or_held_but_critical_work_proceeds() {
    let w =
        common::world(SimConfig::instant(), Vec::new(), |sim, _| config(sim, "daily_usd = 0.0"))
            .await;
    let ids = post(&w).await;
    let digest = settled(&w, &ids[0], |d| d.task.state.is_final()).await;
    assert_eq!((digest.task.state, digest.task.lane.as_str()), (TaskState::Succeeded, "batch"));
    assert!(
        digest.task.reason.contains("demoted to batch: the daily budget of $0.00 is reached"),
        "{}",
        digest.task.reason
    );
    let alert = settled(&w, &ids[1], |d| d.task.state == TaskState::Held).await;
    assert!(
        alert.task.last_error.as_deref().unwrap().contains("no cheaper lane meets its deadline"),
        "{:?}",
        alert.task.last_error
    );
    let fraud = settled(&w, &ids[2], |d| d.task.state.is_final()).await;
    assert_eq!((fraud.task.state, fraud.task.lane.as_str()), (TaskState::Succeeded, "stream"));
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_hard_cap_nothing_is_sent() {
    let w = common::world(SimConfig::instant(), Vec::new(), |sim, _| {
        config(sim, "hard_daily_usd = 0.0")
    })
    .await;
    let ids = post(&w).await;
    for id in [&ids[0], &ids[1], &ids[2]] {
        let d = settled(&w, id, |d| d.task.state == TaskState::Held).await;
        assert!(
            d.task.last_error.as_deref().unwrap().contains("hard daily cap"),
            "{:?}",
            d.task.last_error
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(w.store.batches(10).await.unwrap().is_empty(), "no batch is cut past the hard cap");
    assert!(w.sim.charges().all().is_empty(), "nothing was paid");
    let _ = w.stop.send(true);
}

/// Past the soft cap, work whose deadline allows flex but not a batch is demoted to flex, and
/// then runs there: flex is as cheap as its deadline allows, so it is not held until midnight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_demoted_to_flex_runs_in_flex() {
    let w = common::world(SimConfig::instant(), Vec::new(), |sim, _| {
        format!(
            r#"
min_daily_savings = 0.0
[budget]
daily_usd = 0.0
[providers.openai]
kind = "openai"
base_url = "{sim}/v1"
batch_turnaround_p50 = "6h"
batch_turnaround_p95 = "12h"

[[workloads]]
name = "summary"
on = "ticket.created"
provider = "openai"
model = "gpt-5-mini"
max_tokens = 100
prompt = "Summarise {{{{ payload.s }}}}"
lane = "stream"
needed_within = "30m"
"#
        )
    })
    .await;
    let ids = post(&w).await;
    let d =
        settled(&w, &ids[0], |d| d.task.state.is_final() || d.task.state == TaskState::Held).await;
    assert_eq!((d.task.state, d.task.lane.as_str()), (TaskState::Succeeded, "flex"), "{d:?}");
    assert!(d.task.reason.contains("demoted to flex"), "{}", d.task.reason);
    let _ = w.stop.send(true);
}

/// A payload long enough that input is a fair part of each call's cost.
fn long_text() -> String {
    "the customer writes about an order that arrived late and damaged; ".repeat(6)
}

fn capped_config(sim: &str, cap: &str, lane: &str, needed_within: &str) -> String {
    format!(
        r#"
min_daily_savings = 0.0
[budget]
hard_daily_usd = {cap}
[batch]
max_age = "200ms"
[providers.anthropic]
kind = "anthropic"
base_url = "{sim}"
batch_turnaround_p50 = "1s"
batch_turnaround_p95 = "2s"

[[workloads]]
name = "digest"
on = "ticket.created"
provider = "anthropic"
model = "claude-haiku-5-5"
max_tokens = 100
prompt = "Digest {{{{ payload.s }}}}"
lane = "{lane}"
needed_within = "{needed_within}"
"#
    )
}

/// Posts `n` tickets with long payloads in one array; the first task of each.
async fn post_many(w: &World, n: usize) -> Vec<String> {
    let events: Vec<Value> = (0..n)
        .map(
            |i| json!({"type": "ticket.created", "payload": {"s": format!("{i} {}", long_text())}}),
        )
        .collect();
    let r = w.post_events(&events).await;
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tasks"][0]["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The tasks, once every one of them is in one of `states`.
async fn all_in(
    w: &World,
    ids: &[String],
    states: &[TaskState],
    limit: Duration,
) -> Vec<TaskDetail> {
    wait_for(limit, async || {
        let mut all = Vec::new();
        for id in ids {
            let d = w.store.task(id).await.unwrap().unwrap();
            if !states.contains(&d.task.state) {
                return None;
            }
            all.push(d);
        }
        Some(all)
    })
    .await
}

async fn ledger_usd(w: &World) -> f64 {
    let rows = w.store.spend_since(0).await.unwrap();
    rows.iter().map(|(_, n)| *n as f64 / 1e9).sum()
}

/// The hard cap bounds what is spent, not only when spending stops: many calls at once each
/// reserve the most they can cost, so together they cannot pass it; those that do not fit wait
/// for the others, and are held once nothing in flight can free room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_together_stay_under_the_hard_cap() {
    const CAP: f64 = 0.001;
    let w = common::world(SimConfig::instant(), Vec::new(), |sim, _| {
        capped_config(sim, &CAP.to_string(), "stream", "1m")
    })
    .await;
    let ids = post_many(&w, 60).await;
    let states = [TaskState::Succeeded, TaskState::Held];
    let tasks = all_in(&w, &ids, &states, Duration::from_secs(30)).await;
    let spent = w.sim.charges().summary().total_usd;
    assert!(spent <= CAP, "the provider billed ${spent}, over the ${CAP} cap");
    assert!(ledger_usd(&w).await <= CAP);
    let done = tasks.iter().filter(|d| d.task.state == TaskState::Succeeded).count();
    let held: Vec<_> = tasks.iter().filter(|d| d.task.state == TaskState::Held).collect();
    // The worst case of a call is ~$0.000095, so ten fit at once; released reservations let
    // the cap be used by what calls really cost.
    assert!(done > 12, "only {done} calls ran under the cap");
    assert!(!held.is_empty(), "the cap did not bind");
    for d in held {
        let why = d.task.last_error.as_deref().unwrap();
        assert!(why.contains("leaves no room for this call"), "{why}");
    }
    let _ = w.stop.send(true);
}

/// Batches are billed only when their results come back: the hard cap counts the most an open
/// batch can cost, so batch work is cut no larger than the room left, and more follows as the
/// bills show what the earlier batches really cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_batches_count_against_the_hard_cap() {
    const CAP: f64 = 0.002;
    let w = common::world(SimConfig::instant(), Vec::new(), |sim, _| {
        capped_config(sim, &CAP.to_string(), "batch", "24h")
    })
    .await;
    post_many(&w, 300).await;
    // Settled once no batch is open and none has been cut for two seconds.
    let mut last = (usize::MAX, std::time::Instant::now());
    let batches = wait_for(Duration::from_secs(40), async || {
        let batches = w.store.batches(1000).await.unwrap();
        let open = batches.iter().any(|b| b.state == "submitting" || b.state == "submitted");
        if open || batches.len() != last.0 {
            last = (batches.len(), std::time::Instant::now());
            return None;
        }
        (last.1.elapsed() > Duration::from_secs(2)).then_some(batches)
    })
    .await;
    let spent = w.sim.charges().summary().total_usd;
    assert!(spent <= CAP, "the provider billed ${spent}, over the ${CAP} cap");
    assert!(ledger_usd(&w).await <= CAP);
    assert!(batches.len() >= 2, "{batches:?}");
    let first = batches.last().unwrap();
    assert!(first.item_count < 300 && first.reserved_nanousd > 0, "{first:?}");
    assert!(first.reserved_nanousd as f64 / 1e9 <= CAP);
    let items: i64 = batches.iter().map(|b| b.item_count).sum();
    assert!(items > first.item_count, "no batch followed as the first one's bill came in");
    assert!(items < 300, "every item was sent: the cap did not bind");
    let _ = w.stop.send(true);
}

/// A call whose worst case is more than the whole hard cap could never run: it fails, saying
/// why, rather than stay held and keep the cap's other held work from being released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_could_never_fit_under_the_hard_cap_fails_saying_why() {
    let w = common::world(SimConfig::instant(), Vec::new(), |sim, _| {
        capped_config(sim, "0.00001", "stream", "1m")
    })
    .await;
    let ids = post(&w).await;
    let d = settled(&w, &ids[0], |d| d.task.state.is_final()).await;
    assert_eq!(d.task.state, TaskState::Failed);
    let why = d.task.last_error.as_deref().unwrap();
    assert!(why.contains("more than the whole hard daily cap"), "{why}");
    assert!(w.sim.charges().all().is_empty(), "nothing was paid");
    let _ = w.stop.send(true);
}

/// A call cut off after the provider took it is billed, yet never shows in the ledger: its worst
/// case stays counted under the hard cap for the rest of the day, and it is not retried inside
/// its own reservation. Every call here is cut, so the cap fills with what may have been billed
/// and the rest of the work is held; the provider's bill stays under the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cut_off_after_they_were_billed_stay_counted_under_the_hard_cap() {
    const CAP: f64 = 0.001;
    let mut sim = SimConfig::instant();
    sim.faults.rate_cut = 1.0;
    let w = common::world(sim, Vec::new(), |sim, _| {
        capped_config(sim, &CAP.to_string(), "stream", "1m")
    })
    .await;
    let ids = post_many(&w, 40).await;
    let states = [TaskState::Failed, TaskState::Held];
    let tasks = all_in(&w, &ids, &states, Duration::from_secs(40)).await;
    let billed = w.sim.charges().all().len();
    let spent = w.sim.charges().summary().total_usd;
    assert!(spent <= CAP, "the provider billed ${spent} over {billed} calls, over the ${CAP} cap");
    // The worst case of a call is ~$0.000095: about ten fit.
    assert!((5..=11).contains(&billed), "{billed} calls billed");
    assert_eq!(ledger_usd(&w).await, 0.0, "nothing was answered, so nothing is in the ledger");
    // Each is recorded as what it may cost, at most: the report shows it, and every instance
    // and a restart count it under the cap.
    let maybe = w.store.maybe_spent_since(0).await.unwrap();
    assert_eq!(maybe.calls as usize, billed, "{maybe:?}");
    assert!(maybe.nanousd as f64 / 1e9 >= spent, "{maybe:?} under the ${spent} billed");
    let held = tasks.iter().filter(|d| d.task.state == TaskState::Held).count();
    assert!(held > 20, "only {held} of 40 tasks were held by the cap");
    let _ = w.stop.send(true);
}

/// Without a hard cap a call cut before any text is retried inside the call: each such attempt
/// may be billed all the same, and each is recorded for the report, not only the call's last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_the_provider_may_bill_is_recorded_for_the_report() {
    let cut = vec![("x-sim-fault".to_owned(), "cut".to_owned())];
    let w = common::world(SimConfig::instant(), cut, |sim, _| {
        // One token: the stream is cut before its first delta, so the client retries it.
        config(sim, "").replace("max_tokens = 100", "max_tokens = 1")
    })
    .await;
    let ids = post(&w).await;
    for id in &ids {
        let d = settled(&w, id, |d| d.task.state.is_final()).await;
        assert_eq!(d.task.state, TaskState::Failed, "{:?}", d.attempt_log);
    }
    let billed = w.sim.charges().all().len();
    // Three tasks, three attempts each, each a call tried three times.
    assert_eq!(billed, 27);
    let maybe = w.store.maybe_spent_since(0).await.unwrap();
    assert_eq!(maybe.calls as usize, billed, "{maybe:?}");
    assert_eq!(ledger_usd(&w).await, 0.0);
    let _ = w.stop.send(true);
}
