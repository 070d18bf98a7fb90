//! Fault injection over real HTTP, forced by header and drawn from configured rates.

// Tests may unwrap and panic (helpers outside #[test] fns included).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use sluice_sim::SimConfig;
use sluice_sim::config::FaultConfig;

#[tokio::test]
async fn forced_status_faults_have_provider_bodies_and_are_not_billed() {
    let sim = start(SimConfig::instant()).await;
    let c = client();
    let body = message("claude-haiku-5-5", 5, "x");
    for (fault, status, kind) in [
        ("429", 429, "rate_limit_error"),
        ("500", 500, "api_error"),
        ("529", 529, "overloaded_error"),
    ] {
        let r = anthropic(&c, &sim, "/v1/messages")
            .header("x-sim-fault", fault)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        if status != 500 {
            assert_eq!(r.headers()["retry-after"], "1");
        }
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], kind);
    }
    for (fault, status, kind) in [
        ("429", 429, "requests"),
        ("500", 500, "server_error"),
        ("529", 503, "service_unavailable_error"),
    ] {
        let r = openai(&c, &sim, "/v1/chat/completions")
            .header("x-sim-fault", fault)
            .json(&chat("gpt-4.1", "x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], kind);
    }
    let r = openai(&c, &sim, "/v1/chat/completions")
        .header("x-sim-fault", "bogus")
        .json(&chat("gpt-4.1", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(sim.charges().all().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn reset_stall_and_cut() {
    let sim = start(SimConfig::instant()).await;
    let c = client();
    let body = message("claude-haiku-5-5", 50, "x");
    let err = anthropic(&c, &sim, "/v1/messages")
        .header("x-sim-fault", "reset")
        .json(&body)
        .send()
        .await
        .unwrap_err();
    assert!(
        err.is_request() || err.is_connect() || err.to_string().contains("connection"),
        "{err:?}"
    );

    let short = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let started = Instant::now();
    let err = anthropic(&short, &sim, "/v1/messages")
        .header("x-sim-fault", "stall=10s")
        .json(&body)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = anthropic(&c, &sim, "/v1/messages")
        .header("x-sim-fault", "cut")
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.is_err(), "the body ends without its terminating chunk");

    let r = anthropic(&c, &sim, "/v1/messages")
        .header("x-sim-fault", "malformed")
        .json(&streamed)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("message_stop"));
    let broken = text
        .split("\n\n")
        .filter_map(|e| e.lines().nth(1))
        .filter(|d| serde_json::from_str::<Value>(d.trim_start_matches("data: ")).is_err())
        .count();
    assert_eq!(broken, 1);

    let r = openai(&c, &sim, "/v1/chat/completions")
        .header("x-sim-fault", "midstream")
        .json(&json!({"model": "gpt-4.1", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("\"error\"") && !text.contains("[DONE]"));
    sim.shutdown().await;
}

#[tokio::test]
async fn configured_rates_inject_faults_and_none_overrides() {
    let cfg = SimConfig {
        faults: FaultConfig { rate_500: 1.0, ..FaultConfig::default() },
        ..SimConfig::instant()
    };
    let sim = start(cfg).await;
    let c = client();
    for _ in 0..5 {
        let r = openai(&c, &sim, "/v1/chat/completions")
            .json(&chat("gpt-4.1", "x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
    }
    let r = openai(&c, &sim, "/v1/chat/completions")
        .header("x-sim-fault", "none")
        .json(&chat("gpt-4.1", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sim.shutdown().await;

    // A 30 % rate, seeded: roughly 30 of 200 requests fail, the same ones on every run.
    let cfg = SimConfig {
        seed: 9,
        faults: FaultConfig { rate_429: 0.3, ..FaultConfig::default() },
        ..SimConfig::instant()
    };
    let sim = start(cfg).await;
    let mut failed = 0;
    for _ in 0..200 {
        let r = openai(&c, &sim, "/v1/chat/completions")
            .json(&chat("gpt-4.1", "x"))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            failed += 1;
        }
    }
    assert!((35..=85).contains(&failed), "{failed}");
    assert_eq!(sim.charges().all().len(), 200 - failed);
    sim.shutdown().await;
}

#[tokio::test]
async fn flex_refusals_and_latency() {
    let mut cfg = SimConfig::instant();
    cfg.flex.refuse_rate = 1.0;
    let sim = start(cfg).await;
    let c = client();
    let mut body = chat("gpt-6.1-terra", "x");
    body["service_tier"] = json!("flex");
    let r = openai(&c, &sim, "/v1/chat/completions").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "resource_unavailable");
    assert!(sim.charges().all().is_empty());
    // gpt-4.1 does not offer flex.
    body["model"] = json!("gpt-4.1");
    let r = openai(&c, &sim, "/v1/chat/completions").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_is_prompt_even_with_a_stalled_request() {
    let sim = start(SimConfig::instant()).await;
    let c = client();
    let url = format!("{}/v1/chat/completions", sim.base_url());
    let stalled = tokio::spawn(async move {
        c.post(url)
            .bearer_auth("k")
            .header("x-sim-fault", "stall=60s")
            .json(&chat("gpt-4.1", "x"))
            .send()
            .await
    });
    // Time for the request to reach the sim, also on a loaded machine.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let addr = sim.addr();
    sim.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // The stalled request was answered (the stall ends with the shutdown), and the port is closed.
    let r = stalled.await.unwrap();
    assert!(r.is_ok_and(|r| r.status() == 200));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
