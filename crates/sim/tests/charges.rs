//! The charge log: what is billed, at which price, exactly once.

// Tests may unwrap and panic (helpers outside #[test] fns included).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sluice_sim::SimConfig;
use sluice_sim::models::{Provider, Tier};

#[tokio::test]
async fn realtime_charges_carry_ids_users_and_published_prices() {
    let sim = start(SimConfig::instant()).await;
    let c = client();
    let mut body = message("claude-sonnet-5-5", 40, "hello");
    body["metadata"] = json!({"user_id": "u-1"});
    let r = anthropic(&c, &sim, "/v1/messages").json(&body).send().await.unwrap();
    let rid = r.headers()["request-id"].to_str().unwrap().to_string();
    let m: Value = r.json().await.unwrap();

    let mut body = chat("gpt-4o-mini", "hello");
    body["user"] = json!("u-2");
    body["metadata"] = json!({"ticket": "T-9"});
    let r = openai(&c, &sim, "/v1/chat/completions").json(&body).send().await.unwrap();
    let orid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let o: Value = r.json().await.unwrap();

    let log = sim.charges().all();
    assert_eq!(log.len(), 2);
    let a = &log[0];
    assert_eq!(
        (a.seq, a.provider, a.tier, a.endpoint),
        (1, Provider::Anthropic, Tier::Standard, "messages")
    );
    assert_eq!(a.request_id, rid);
    assert_eq!(a.response_id, m["id"].as_str().unwrap());
    assert_eq!(a.user_id.as_deref(), Some("u-1"));
    assert_eq!(a.input_tokens, m["usage"]["input_tokens"].as_u64().unwrap());
    assert_eq!(a.output_tokens, m["usage"]["output_tokens"].as_u64().unwrap());
    // Sonnet 5.5: $2 / $10 per million tokens.
    assert_eq!(a.total_pico_usd, a.input_tokens * 2_000_000 + a.output_tokens * 10_000_000);
    assert!(!a.key_fingerprint.contains("test-key"));
    let b = &log[1];
    assert_eq!(b.request_id, orid);
    assert_eq!(b.response_id, o["id"].as_str().unwrap());
    assert_eq!(b.user.as_deref(), Some("u-2"));
    assert_eq!(b.metadata, Some(json!({"ticket": "T-9"})));
    // gpt-4o-mini: $0.15 / $0.60.
    assert_eq!(b.total_pico_usd, b.input_tokens * 150_000 + b.output_tokens * 600_000);
    assert!((b.total_usd - b.total_pico_usd as f64 / 1e12).abs() < 1e-15);

    // Over HTTP, with filters and a summary.
    let all: Value = c
        .get(format!("{}/sim/charges", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let only: Value = c
        .get(format!("{}/sim/charges?provider=openai", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(only["data"][0]["request_id"], orid.as_str());
    let s: Value = c
        .get(format!("{}/sim/charges/summary", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["requests"], 2);
    assert_eq!(s["total_pico_usd"], a.total_pico_usd + b.total_pico_usd);
    assert_eq!(s["by_model"].as_array().unwrap().len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn batch_lines_are_billed_once_at_half_price() {
    let sim = start(SimConfig::instant()).await;
    let c = client();
    let params = message("claude-opus-5-5", 60, "summarise");
    let real: Value = anthropic(&c, &sim, "/v1/messages")
        .json(&params)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reqs = json!({"requests": [
        {"custom_id": "one", "params": params},
        {"custom_id": "two-sim-errored", "params": params},
        {"custom_id": "three-sim-expired", "params": params},
    ]});
    let b: Value = anthropic(&c, &sim, "/v1/messages/batches")
        .json(&reqs)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = b["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(5), || async {
        let log = sim.charges().all();
        (log.len() == 2).then_some(())
    })
    .await;
    // Reading again (and polling the batch) never bills twice.
    for _ in 0..3 {
        c.get(format!("{}/v1/messages/batches/{id}", sim.base_url()))
            .header("x-api-key", "k")
            .header("anthropic-version", "2023-06-01")
            .send()
            .await
            .unwrap();
    }
    let log = sim.charges().all();
    assert_eq!(log.len(), 2);
    let (std, batch) = (&log[0], &log[1]);
    assert_eq!(std.output_tokens, real["usage"]["output_tokens"].as_u64().unwrap());
    assert_eq!(batch.tier, Tier::Batch);
    assert_eq!(batch.batch_id.as_deref(), Some(id.as_str()));
    assert_eq!(batch.custom_id.as_deref(), Some("one"));
    assert_eq!((batch.input_tokens, batch.output_tokens), (std.input_tokens, std.output_tokens));
    assert_eq!(std.total_pico_usd, 2 * batch.total_pico_usd);

    let s = sim.charges().summary();
    let tiers: Vec<&str> = s.by_model.iter().map(|l| l.tier.as_str()).collect();
    assert_eq!(tiers, ["batch", "standard"]);

    let r = c.delete(format!("{}/sim/charges", sim.base_url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(sim.charges().all().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn flex_is_half_price_and_openai_batch_lines_carry_custom_ids() {
    let sim = start(SimConfig::instant()).await;
    let c = client();
    let mut body = chat("gpt-6-sol", "same question");
    let std: Value = openai(&c, &sim, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["service_tier"] = json!("flex");
    let flex: Value = openai(&c, &sim, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(flex["service_tier"], "flex");
    assert_eq!(std["choices"][0]["message"]["content"], flex["choices"][0]["message"]["content"]);
    let log = sim.charges().all();
    assert_eq!(log[1].tier, Tier::Flex);
    assert_eq!(log[0].total_pico_usd, 2 * log[1].total_pico_usd);

    let text = format!(
        "{}\n",
        json!({"custom_id": "row-1", "method": "POST", "url": "/v1/chat/completions", "body": chat("gpt-6-sol", "same question")})
    );
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part("file", reqwest::multipart::Part::bytes(text.into_bytes()).file_name("b.jsonl"));
    let f: Value =
        openai(&c, &sim, "/v1/files").multipart(form).send().await.unwrap().json().await.unwrap();
    let b: Value = openai(&c, &sim, "/v1/batches")
        .json(&json!({"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"run": "r1"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let line = eventually(Duration::from_secs(5), || async {
        sim.charges().all().into_iter().find(|c| c.tier == Tier::Batch)
    })
    .await;
    assert_eq!(line.custom_id.as_deref(), Some("row-1"));
    assert_eq!(line.batch_id.as_deref(), b["id"].as_str());
    assert_eq!(line.metadata, Some(json!({"run": "r1"})));
    assert_eq!(line.total_pico_usd, log[1].total_pico_usd, "batch and flex are both 50 %");
    sim.shutdown().await;
}
