//! Batch state machines under time acceleration: a one-hour batch ends in one second.

// Tests may unwrap and panic (helpers outside #[test] fns included).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use sluice_sim::config::BatchConfig;
use sluice_sim::{RunningSim, SimConfig};

/// Turnaround exactly one hour (median = p95), run 3600x faster: one real second.
fn one_hour_in_one_second() -> SimConfig {
    SimConfig {
        batch: BatchConfig {
            turnaround_median: Duration::from_secs(3600),
            turnaround_p95: Duration::from_secs(3600),
            acceleration: 3600.0,
            validating: Duration::from_secs(60),
            finalizing: Duration::from_secs(60),
            cancel_delay: Duration::from_secs(600),
            ..BatchConfig::default()
        },
        ..SimConfig::instant()
    }
}

fn requests(n: usize) -> Value {
    let reqs: Vec<Value> = (0..n)
        .map(|i| json!({"custom_id": format!("req-{i}"), "params": message("claude-haiku-5-5", 50, &format!("item {i}"))}))
        .collect();
    json!({"requests": reqs})
}

async fn get(c: &reqwest::Client, sim: &RunningSim, path: &str) -> Value {
    c.get(format!("{}{path}", sim.base_url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn anthropic_batch_in_progress_then_ended_at_once() {
    // Twelve lines: the chance that a shuffle leaves them in order is negligible.
    const N: usize = 12;
    let sim = start(one_hour_in_one_second()).await;
    let c = client();
    let started = Instant::now();
    let b: Value = anthropic(&c, &sim, "/v1/messages/batches")
        .json(&requests(N))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(b["processing_status"], "in_progress");
    assert_eq!(b["request_counts"]["processing"], N);
    assert!(b["results_url"].is_null());
    let r = c
        .get(format!("{}/v1/messages/batches/{id}/results", sim.base_url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "no results before the end");

    tokio::time::sleep(Duration::from_millis(400)).await;
    let mid = get(&c, &sim, &format!("/v1/messages/batches/{id}")).await;
    assert_eq!(mid["processing_status"], "in_progress");
    assert_eq!(mid["request_counts"]["processing"], N, "counts move only at the end");
    assert!(sim.charges().all().is_empty());

    let ended = eventually(Duration::from_secs(5), || async {
        let b = get(&c, &sim, &format!("/v1/messages/batches/{id}")).await;
        (b["processing_status"] == "ended").then_some(b)
    })
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(ended["request_counts"]["succeeded"], N);
    assert_eq!(ended["request_counts"]["processing"], 0);
    let url = ended["results_url"].as_str().unwrap();
    assert!(url.starts_with(sim.base_url()));
    // ended_at - created_at is the simulated turnaround divided by the acceleration (wall clock).
    let created =
        chrono::DateTime::parse_from_rfc3339(ended["created_at"].as_str().unwrap()).unwrap();
    let ended_at =
        chrono::DateTime::parse_from_rfc3339(ended["ended_at"].as_str().unwrap()).unwrap();
    assert_eq!((ended_at - created).num_milliseconds(), 1000);

    let r = c
        .get(url)
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-jsonl");
    let text = r.text().await.unwrap();
    assert!(text.ends_with('\n') && !text.contains("\n\n"));
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["custom_id"].as_str().unwrap().to_string()
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("req-{i}")).collect();
    assert_ne!(ids, expected, "results are shuffled");
    expected.sort();
    assert_eq!(sorted, expected);
    assert_eq!(sim.charges().all().len(), N);
    sim.shutdown().await;
}

#[tokio::test]
async fn anthropic_cancel_and_whole_batch_expiry() {
    let mut cfg = one_hour_in_one_second();
    // A window of four hours, four seconds here, for the expiry case below: well past the
    // one-second turnaround, also on a loaded machine.
    cfg.batch.window = Duration::from_secs(4 * 3600);
    let sim = start(cfg).await;
    let c = client();
    let b: Value = anthropic(&c, &sim, "/v1/messages/batches")
        .json(&requests(4))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = b["id"].as_str().unwrap();
    let cancel: Value = anthropic(&c, &sim, &format!("/v1/messages/batches/{id}/cancel"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancel["processing_status"], "canceling");
    assert!(cancel["cancel_initiated_at"].is_string());
    let r = c
        .delete(format!("{}/v1/messages/batches/{id}", sim.base_url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "cannot delete while canceling");
    let ended = eventually(Duration::from_secs(3), || async {
        let b = get(&c, &sim, &format!("/v1/messages/batches/{id}")).await;
        (b["processing_status"] == "ended").then_some(b)
    })
    .await;
    let counts = &ended["request_counts"];
    assert_eq!(counts["canceled"].as_u64().unwrap() + counts["succeeded"].as_u64().unwrap(), 4);
    let r = c
        .delete(format!("{}/v1/messages/batches/{id}", sim.base_url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let b: Value = anthropic(&c, &sim, "/v1/messages/batches")
        .header("x-sim-fault", "expire")
        .json(&requests(3))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = b["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        get(&c, &sim, &format!("/v1/messages/batches/{id}")).await["processing_status"],
        "in_progress",
        "past the turnaround, not yet the window"
    );
    let ended = eventually(Duration::from_secs(8), || async {
        let b = get(&c, &sim, &format!("/v1/messages/batches/{id}")).await;
        (b["processing_status"] == "ended").then_some(b)
    })
    .await;
    assert_eq!(ended["request_counts"]["expired"], 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn anthropic_list_pagination() {
    let sim = start(SimConfig::instant()).await;
    let c = client();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let b: Value = anthropic(&c, &sim, "/v1/messages/batches")
            .json(&requests(1))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(b["id"].as_str().unwrap().to_string());
    }
    let p1 = get(&c, &sim, "/v1/messages/batches?limit=2").await;
    assert_eq!(p1["data"].as_array().unwrap().len(), 2);
    assert_eq!(p1["first_id"], ids[4].as_str());
    assert_eq!(p1["has_more"], true);
    let p2 = get(
        &c,
        &sim,
        &format!("/v1/messages/batches?limit=2&after_id={}", p1["last_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(p2["first_id"], ids[2].as_str());
    let p3 = get(
        &c,
        &sim,
        &format!("/v1/messages/batches?limit=2&after_id={}", p2["last_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(p3["data"].as_array().unwrap().len(), 1);
    assert_eq!(p3["has_more"], false);
    let back = get(&c, &sim, &format!("/v1/messages/batches?limit=2&before_id={}", ids[0])).await;
    assert_eq!(back["first_id"], ids[2].as_str());
    assert_eq!(back["last_id"], ids[1].as_str());
    sim.shutdown().await;
}

async fn upload(c: &reqwest::Client, sim: &RunningSim, lines: &[Value]) -> String {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part("file", reqwest::multipart::Part::bytes(text.into_bytes()).file_name("in.jsonl"));
    let f: Value =
        openai(c, sim, "/v1/files").multipart(form).send().await.unwrap().json().await.unwrap();
    f["id"].as_str().unwrap().to_string()
}

fn line(id: &str) -> Value {
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions", "body": chat("gpt-4.1-mini", id)})
}

#[tokio::test]
async fn openai_batch_walks_every_state_and_counts_move() {
    let sim = start(one_hour_in_one_second()).await;
    let c = client();
    let lines: Vec<Value> = (0..20).map(|i| line(&format!("l-{i}"))).collect();
    let file = upload(&c, &sim, &lines).await;
    let b: Value = openai(&c, &sim, "/v1/batches")
        .json(&json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["status"], "validating");
    let id = b["id"].as_str().unwrap().to_string();
    let mut seen: Vec<String> = vec!["validating".into()];
    let mut partial_counts = false;
    let started = Instant::now();
    let mut done = Value::Null;
    for _ in 0..2000 {
        let b = get(&c, &sim, &format!("/v1/batches/{id}")).await;
        let s = b["status"].as_str().unwrap().to_string();
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        let completed = b["request_counts"]["completed"].as_u64().unwrap();
        if s == "in_progress" && completed > 0 && completed < 20 {
            partial_counts = true;
        }
        if s == "completed" {
            done = b;
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{seen:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(seen.first().unwrap(), "validating");
    let order = ["validating", "in_progress", "finalizing", "completed"];
    let idx: Vec<usize> = seen.iter().map(|s| order.iter().position(|o| o == s).unwrap()).collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(seen.contains(&"in_progress".to_string()));
    assert!(partial_counts, "request_counts move while in_progress");
    assert_eq!(done["request_counts"], json!({"total": 20, "completed": 20, "failed": 0}));
    assert!(done["error_file_id"].is_null());
    let out = c
        .get(format!(
            "{}/v1/files/{}/content",
            sim.base_url(),
            done["output_file_id"].as_str().unwrap()
        ))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(out.lines().count(), 20);
    sim.shutdown().await;
}

#[tokio::test]
async fn openai_expired_cancelled_and_failed() {
    let mut cfg = one_hour_in_one_second();
    cfg.batch.window = Duration::from_secs(3600 * 2);
    let sim = start(cfg).await;
    let c = client();
    let file = upload(&c, &sim, &[line("a"), line("b")]).await;
    let create = |extra: Value| {
        let mut body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
        if let Value::Object(m) = extra {
            body.as_object_mut().unwrap().extend(m);
        }
        openai(&c, &sim, "/v1/batches").json(&body).send()
    };
    let expiring: Value =
        create(json!({"metadata": {"sim_fault": "expire"}})).await.unwrap().json().await.unwrap();
    let cancelled: Value = create(json!({})).await.unwrap().json().await.unwrap();
    let failing: Value = openai(&c, &sim, "/v1/batches")
        .header("x-sim-fault", "fail")
        .json(&json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cid = cancelled["id"].as_str().unwrap();
    let r: Value = openai(&c, &sim, &format!("/v1/batches/{cid}/cancel"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "cancelling");

    let wait = |id: String, status: &'static str| {
        let c = c.clone();
        let base = sim.base_url().to_string();
        async move {
            eventually(Duration::from_secs(5), || {
                let c = c.clone();
                let url = format!("{base}/v1/batches/{id}");
                async move {
                    let b: Value =
                        c.get(url).bearer_auth("k").send().await.unwrap().json().await.unwrap();
                    (b["status"] == status).then_some(b)
                }
            })
            .await
        }
    };
    let f = wait(failing["id"].as_str().unwrap().to_string(), "failed").await;
    assert_eq!(f["errors"]["data"][0]["code"], "invalid_request");
    let x = wait(cid.to_string(), "cancelled").await;
    assert!(x["cancelled_at"].is_i64());
    let e = wait(expiring["id"].as_str().unwrap().to_string(), "expired").await;
    assert!(e["output_file_id"].is_null());
    let err = c
        .get(format!(
            "{}/v1/files/{}/content",
            sim.base_url(),
            e["error_file_id"].as_str().unwrap()
        ))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for l in err.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(v["response"].is_null());
        assert_eq!(v["error"]["code"], "batch_expired");
    }
    let r = openai(&c, &sim, &format!("/v1/batches/{cid}/cancel")).send().await.unwrap();
    assert_eq!(r.status(), 400, "a cancelled batch cannot be cancelled again");
    sim.shutdown().await;
}
