//! Per-key limits over real HTTP: headers on every response, 429 with retry-after when exceeded.

// Tests may unwrap and panic (helpers outside #[test] fns included).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sluice_sim::SimConfig;
use sluice_sim::config::Dist;
use sluice_sim::config::{LatencyConfig, RateLimitConfig};

#[tokio::test]
async fn requests_per_minute_per_key() {
    let cfg = SimConfig {
        rate_limits: RateLimitConfig { requests_per_minute: Some(3), ..Default::default() },
        ..SimConfig::instant()
    };
    let sim = start(cfg).await;
    let c = client();
    for i in 0..3 {
        let r = anthropic(&c, &sim, "/v1/messages")
            .json(&message("claude-haiku-5-5", 5, "x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["anthropic-ratelimit-requests-limit"], "3");
        assert_eq!(
            r.headers()["anthropic-ratelimit-requests-remaining"],
            (2 - i).to_string().as_str()
        );
        let reset = r.headers()["anthropic-ratelimit-requests-reset"].to_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(reset).is_ok(), "{reset}");
    }
    let r = anthropic(&c, &sim, "/v1/messages")
        .json(&message("claude-haiku-5-5", 5, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "one request refills in 20 s: {retry}");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "rate_limit_error");

    // The same key through the OpenAI door shares the bucket; its headers use duration strings.
    let r =
        openai(&c, &sim, "/v1/chat/completions").json(&chat("gpt-4.1", "x")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers()["x-ratelimit-reset-requests"].to_str().unwrap().ends_with('s'));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "rate_limit_exceeded");

    // Another key is not affected.
    let r = c
        .post(format!("{}/v1/chat/completions", sim.base_url()))
        .bearer_auth("another-key")
        .json(&chat("gpt-4.1", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn input_and_output_token_limits() {
    let cfg = SimConfig {
        rate_limits: RateLimitConfig {
            input_tokens_per_minute: Some(100),
            output_tokens_per_minute: Some(10),
            ..Default::default()
        },
        ..SimConfig::instant()
    };
    let sim = start(cfg).await;
    let c = client();
    // A prompt larger than the whole input bucket is refused.
    let big = "word ".repeat(200);
    let r = anthropic(&c, &sim, "/v1/messages")
        .json(&message("claude-haiku-5-5", 5, &big))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Output: the first answer takes 20 tokens of a 10-token bucket; the next is refused.
    let r = anthropic(&c, &sim, "/v1/messages")
        .json(&message("claude-haiku-5-5", 20, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["anthropic-ratelimit-output-tokens-remaining"], "0");
    let r = anthropic(&c, &sim, "/v1/messages")
        .json(&message("claude-haiku-5-5", 20, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    sim.shutdown().await;
}

#[tokio::test]
async fn concurrency_limit_counts_open_streams() {
    let cfg = SimConfig {
        rate_limits: RateLimitConfig { concurrency: Some(1), ..Default::default() },
        latency: LatencyConfig {
            // Long enough that the second request comes while the first stream is open, also
            // on a loaded machine.
            time_to_first_token: Dist::Fixed(Duration::from_secs(2)),
            per_token: Dist::Fixed(Duration::ZERO),
        },
        ..SimConfig::instant()
    };
    let sim = start(cfg).await;
    let c = client();
    let mut body = message("claude-haiku-5-5", 20, "x");
    body["stream"] = json!(true);
    let first = anthropic(&c, &sim, "/v1/messages").json(&body).send().await.unwrap();
    assert_eq!(first.status(), 200);
    // The first stream is still open (it waits 2 s for its first token).
    let second = anthropic(&c, &sim, "/v1/messages").json(&body).send().await.unwrap();
    assert_eq!(second.status(), 429);
    let text = first.text().await.unwrap();
    assert!(text.contains("message_stop"));
    let third = anthropic(&c, &sim, "/v1/messages").json(&body).send().await.unwrap();
    assert_eq!(third.status(), 200);
    sim.shutdown().await;
}
