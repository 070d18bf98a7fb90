//! The real-time endpoints over real HTTP: shapes, streams, validation, auth, determinism.

// Tests may unwrap and panic (helpers outside #[test] fns included).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use sluice_sim::SimConfig;

#[tokio::test]
async fn anthropic_message_shape_and_determinism() {
    let sim = start(SimConfig::instant()).await;
    let c = client();
    let body = message("claude-haiku-5-5", 1000, "Summarise the ticket.");
    let r = anthropic(&c, &sim, "/v1/messages").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["request-id"].to_str().unwrap().starts_with("req_"));
    assert!(r.headers().contains_key("anthropic-ratelimit-requests-remaining"));
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["type"], "message");
    assert_eq!(a["role"], "assistant");
    assert_eq!(a["stop_reason"], "end_turn");
    let text = a["content"][0]["text"].as_str().unwrap();
    assert_eq!(a["usage"]["output_tokens"], sluice_sim::count_tokens(text));
    // Same request, same answer; Bearer auth works as well as x-api-key.
    let b: Value = c
        .post(format!("{}/v1/messages", sim.base_url()))
        .bearer_auth("other")
        .header("anthropic-version", "2026-10-21")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["content"], b["content"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn anthropic_max_tokens_and_stop_sequences() {
    let sim = start(SimConfig::instant()).await;
    let c = client();
    let a: Value = anthropic(&c, &sim, "/v1/messages")
        .json(&message("claude-sonnet-5-5", 3, "Write a lot."))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["stop_reason"], "max_tokens");
    assert_eq!(a["usage"]["output_tokens"], 3);
    assert!(a["content"][0]["text"].as_str().unwrap().chars().count() <= 12);

    let mut body = message("claude-sonnet-5-5", 500, "capital of France?");
    body["stop_sequences"] = json!([" is"]);
    let cfg = SimConfig::from_toml_str(
        "[[responder]]\npattern = \"capital of (\\\\w+)\"\ntext = \"The capital of $1 is Paris.\"\n",
        "inline",
    )
    .unwrap();
    let sim2 = start(SimConfig { latency: sluice_sim::config::LatencyConfig::zero(), ..cfg }).await;
    let a: Value = anthropic(&c, &sim2, "/v1/messages")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["stop_reason"], "stop_sequence");
    assert_eq!(a["stop_sequence"], " is");
    assert_eq!(a["content"][0]["text"], "The capital of France");
    sim.shutdown().await;
    sim2.shutdown().await;
}

#[tokio::test]
async fn anthropic_stream_event_sequence() {
    let sim = start(SimConfig::instant()).await;
    let c = client();
    let mut body = message("claude-haiku-5-5", 200, "Hello");
    body["stream"] = json!(true);
    let r = anthropic(&c, &sim, "/v1/messages").json(&body).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.lines().next().unwrap().trim_start_matches("event: "))
        .collect();
    assert_eq!(events[0], "message_start");
    assert_eq!(events[1], "content_block_start");
    assert!(events.contains(&"ping"));
    assert_eq!(events[events.len() - 3], "content_block_stop");
    assert_eq!(events[events.len() - 2], "message_delta");
    assert_eq!(events[events.len() - 1], "message_stop");
    // Each data line's type equals its event name.
    for e in text.split("\n\n").filter(|e| !e.is_empty()) {
        let mut lines = e.lines();
        let name = lines.next().unwrap().trim_start_matches("event: ");
        let data: Value =
            serde_json::from_str(lines.next().unwrap().trim_start_matches("data: ")).unwrap();
        assert_eq!(data["type"], name);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn anthropic_validation_errors() {
    let sim = start(SimConfig::instant()).await;
    let c = client();
    let cases = [
        (
            json!({"model": "claude-haiku-5-5", "messages": [{"role": "user", "content": "x"}]}),
            400,
            "max_tokens: Field required",
        ),
        (json!({"model": "claude-haiku-5-5", "max_tokens": 5, "messages": []}), 400, "messages"),
        (message("claude-nope-1", 5, "x"), 404, "model: claude-nope-1"),
    ];
    for (body, status, needle) in cases {
        let r = anthropic(&c, &sim, "/v1/messages").json(&body).send().await.unwrap();
        assert_eq!(r.status(), status);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["type"], "error");
        assert!(e["request_id"].as_str().unwrap().starts_with("req_"));
        assert!(e["error"]["message"].as_str().unwrap().contains(needle), "{e}");
    }
    // temperature: fine under 2023-06-01, refused under 2026-10-21.
    let mut body = message("claude-haiku-5-5", 5, "x");
    body["temperature"] = json!(0.5);
    let r = anthropic(&c, &sim, "/v1/messages").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{}/v1/messages", sim.base_url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2026-10-21")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // No key at all.
    let r = c
        .post(format!("{}/v1/messages", sim.base_url()))
        .header("anthropic-version", "2023-06-01")
        .json(&message("claude-haiku-5-5", 5, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "authentication_error");
    sim.shutdown().await;
}

#[tokio::test]
async fn configured_keys_are_the_only_ones_accepted() {
    let sim = start(SimConfig { api_keys: vec!["good".into()], ..SimConfig::instant() }).await;
    let c = client();
    let r = c
        .post(format!("{}/v1/chat/completions", sim.base_url()))
        .bearer_auth("bad")
        .json(&chat("gpt-4.1", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_api_key");
    assert!(!e.to_string().contains("bad\""), "the key itself is never echoed");
    let r = c
        .post(format!("{}/v1/chat/completions", sim.base_url()))
        .bearer_auth("good")
        .json(&chat("gpt-4.1", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn openai_completion_json_modes_and_errors() {
    let sim = start(SimConfig::instant()).await;
    let c = client();
    let r = openai(&c, &sim, "/v1/chat/completions")
        .json(&chat("gpt-4.1-mini", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
    assert!(r.headers()["x-ratelimit-reset-requests"].to_str().unwrap().ends_with('s'));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        v["usage"]["prompt_tokens"].as_u64().unwrap()
            + v["usage"]["completion_tokens"].as_u64().unwrap()
    );

    let mut body = chat("gpt-5.4-mini", "Classify this ticket.");
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "t", "schema": {
        "type": "object", "properties": {"category": {"type": "string", "enum": ["billing", "bug"]}, "score": {"type": "number"}},
        "required": ["category", "score"]}}});
    let v: Value = openai(&c, &sim, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parsed: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(parsed["category"] == "billing" || parsed["category"] == "bug");
    assert!(parsed["score"].is_number());

    // json_object needs the word JSON in the messages.
    let mut body = chat("gpt-4.1", "hello");
    body["response_format"] = json!({"type": "json_object"});
    let r = openai(&c, &sim, "/v1/chat/completions").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 400);
    body["messages"][0]["content"] = json!("answer in JSON");
    let v: Value = openai(&c, &sim, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parsed: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(parsed.is_object());

    // max_tokens on a reasoning model; an unknown model; empty messages.
    let mut body = chat("gpt-6.1-terra", "x");
    body["max_tokens"] = json!(5);
    let e: Value = openai(&c, &sim, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e["error"]["code"], "unsupported_parameter");
    assert_eq!(e["error"]["param"], "max_tokens");
    let r =
        openai(&c, &sim, "/v1/chat/completions").json(&chat("gpt-9", "x")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "model_not_found");
    let r = openai(&c, &sim, "/v1/chat/completions")
        .json(&json!({"model": "gpt-4.1", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn openai_stream_with_usage_and_length() {
    let sim = start(SimConfig::instant()).await;
    let c = client();
    let mut body = chat("gpt-5-mini", "hi");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body["max_completion_tokens"] = json!(4);
    let text = openai(&c, &sim, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.trim_start_matches("data: ")).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()));
    let content: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(sluice_sim::count_tokens(&content), 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn config_errors_name_file_line_and_field() {
    let err =
        SimConfig::from_toml_str("seed = 1\n[latency]\nttft = \"5ms\"\n", "sim.toml").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("sim.toml:3:"), "{msg}");
    assert!(msg.contains("ttft"), "{msg}");
    let err = SimConfig::from_toml_str("[batch]\nturnaround_median = \"soon\"\n", "sim.toml")
        .unwrap_err();
    assert!(err.to_string().contains("sim.toml:2:"), "{err}");
    let cfg = SimConfig::from_toml_str("[faults]\nrate_500 = 2.0\n", "x").unwrap();
    assert!(cfg.validate().unwrap_err().to_string().contains("faults.rate_500"));
    let cfg = SimConfig::from_toml_str(
        "[latency]\ntime_to_first_token = { median = \"1s\", p95 = \"3s\" }\nper_token = { min = \"1ms\", max = \"2ms\" }\n",
        "x",
    )
    .unwrap();
    assert!(cfg.validate().is_ok());
}
