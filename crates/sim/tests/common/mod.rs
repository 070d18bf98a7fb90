#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_sim::{RunningSim, Sim, SimConfig};

pub async fn start(config: SimConfig) -> RunningSim {
    Sim::start(config, "127.0.0.1:0").await.unwrap()
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

pub fn anthropic(c: &reqwest::Client, sim: &RunningSim, path: &str) -> reqwest::RequestBuilder {
    c.post(format!("{}{path}", sim.base_url()))
        .header("x-api-key", "test-key")
        .header("anthropic-version", "2023-06-01")
}

pub fn openai(c: &reqwest::Client, sim: &RunningSim, path: &str) -> reqwest::RequestBuilder {
    c.post(format!("{}{path}", sim.base_url())).bearer_auth("test-key")
}

pub fn message(model: &str, max_tokens: u64, text: &str) -> Value {
    json!({"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]})
}

pub fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// Polls `f` every 10 ms until it returns Some, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    for _ in 0..10_000 {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met");
}
