//! The clients over real HTTP against the simulator (`sluice_sim`), for both providers: plain and
//! streamed calls, every forced fault of the sim, permanent errors, flex, and the rate limiter
//! holding a burst under the sim's limit.

// Tests may unwrap and panic (helpers outside #[test] fns included).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use sluice_core::config::{Provider, ProviderKind, RateLimits};
use sluice_providers::{
    ApiKey, ChatRequest, ChatResponse, Client, ClientOptions, ErrorClass, Message, PermanentCause,
    ProviderError, RetryCause, RetryPolicy, StreamEvent, Tier, Timeouts, retry,
};
use sluice_sim::{RunningSim, Sim, SimConfig};

/// Every test is bounded in time, whatever goes wrong.
const TEST_LIMIT: Duration = Duration::from_secs(60);

async fn sim(config: SimConfig) -> RunningSim {
    Sim::start(config, "127.0.0.1:0").await.unwrap()
}

fn quick_sim() -> SimConfig {
    use sluice_sim::config::{FlexConfig, LatencyConfig};
    let flex = FlexConfig { latency: LatencyConfig::zero(), ..Default::default() };
    SimConfig { latency: LatencyConfig::zero(), flex, ..Default::default() }
}

fn provider(kind: ProviderKind, sim: &RunningSim, limits: RateLimits) -> Provider {
    let base = match kind {
        ProviderKind::Anthropic => sim.base_url().to_owned(),
        _ => sim.openai_base_url(),
    };
    Provider {
        name: format!("sim-{}", kind.as_str()),
        kind,
        base_url: base.parse().unwrap(),
        api_key_env: Some("SIM_KEY".into()),
        limits,
        batch_api: true,
        batch_turnaround_p50: Duration::from_secs(60),
        batch_turnaround_p95: Duration::from_secs(600),
        batch_enqueued_tokens: None,
    }
}

fn short_timeouts() -> ClientOptions {
    let t = Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_millis(500),
        idle: Duration::from_millis(500),
        // A plain answer's headers come only once it is generated: `total` bounds them.
        total: Duration::from_millis(1500),
        stream_total: Duration::from_secs(10),
    };
    ClientOptions { standard: t, flex: t }
}

fn client(kind: ProviderKind, sim: &RunningSim) -> Client {
    Client::with_options(
        &provider(kind, sim, RateLimits::default()),
        Some(ApiKey::new("test-key")),
        short_timeouts(),
    )
    .unwrap()
}

fn model(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => "claude-haiku-5-5",
        _ => "gpt-5.4-mini",
    }
}

fn request(kind: ProviderKind, tag: &str) -> ChatRequest {
    ChatRequest {
        model: model(kind).into(),
        system: Some("You are terse.".into()),
        messages: vec![Message::user("Summarise the ticket: the printer is on fire.")],
        max_tokens: 200,
        request_tag: Some(tag.into()),
        ..Default::default()
    }
}

fn with_fault(mut req: ChatRequest, fault: &str) -> ChatRequest {
    req.extra_headers.push(("x-sim-fault".into(), fault.into()));
    req
}

const KINDS: [ProviderKind; 2] = [ProviderKind::Anthropic, ProviderKind::Openai];

/// Collects a stream: the deltas, then the final response or the error.
async fn drain(
    client: &Client,
    req: &ChatRequest,
) -> (Vec<String>, Result<ChatResponse, ProviderError>) {
    let mut s = client.stream(req);
    let mut deltas = Vec::new();
    for _ in 0..100_000 {
        match s.next().await {
            Some(Ok(StreamEvent::Delta(t))) => deltas.push(t),
            Some(Ok(StreamEvent::Done(r))) => {
                assert!(s.next().await.is_none(), "nothing after Done");
                return (deltas, Ok(*r));
            }
            Some(Err(e)) => {
                assert!(s.next().await.is_none(), "nothing after an error");
                return (deltas, Err(e));
            }
            None => panic!("stream ended without Done or an error"),
        }
    }
    panic!("too many events");
}

fn charges_for(sim: &RunningSim, request_id: &str) -> usize {
    sim.charges().all().iter().filter(|c| c.request_id == request_id).count()
}

#[tokio::test]
async fn plain_calls() {
    tokio::time::timeout(TEST_LIMIT, async {
        let sim = sim(SimConfig::default()).await;
        for kind in KINDS {
            let c = client(kind, &sim);
            let r = c.chat(&request(kind, "plain-1")).await.unwrap();
            assert!(!r.text.is_empty());
            assert!(r.usage.input_tokens > 0 && r.usage.output_tokens > 0);
            assert!(r.model.starts_with(model(kind)), "{}", r.model);
            let rid = r.provider_request_id.clone().expect("request id");
            assert!(r.rate_limit.is_some(), "{kind:?}: the sim sends rate-limit headers");
            // What the sim billed is what we read.
            let charges = sim.charges().all();
            let charge = charges.iter().find(|c| c.request_id == rid).expect("charged");
            assert_eq!(charge.input_tokens, r.usage.input_tokens);
            assert_eq!(charge.output_tokens, r.usage.output_tokens);
            match kind {
                ProviderKind::Anthropic => assert_eq!(charge.user_id.as_deref(), Some("plain-1")),
                _ => {
                    assert_eq!(charge.user.as_deref(), Some("plain-1"));
                    assert_eq!(
                        charge.metadata.as_ref().and_then(|m| m["sluice_tag"].as_str()),
                        Some("plain-1")
                    );
                }
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn streamed_calls_deliver_deltas_before_the_end() {
    tokio::time::timeout(TEST_LIMIT, async {
        // Default latency: tokens trickle in, as from a real provider.
        let sim = sim(SimConfig::default()).await;
        for kind in KINDS {
            let c = client(kind, &sim);
            let (deltas, r) = drain(&c, &request(kind, "stream-1")).await;
            let r = r.unwrap();
            assert!(deltas.len() > 1, "{kind:?}: {deltas:?}");
            assert_eq!(deltas.concat(), r.text);
            let rid = r.provider_request_id.clone().unwrap();
            let charges = sim.charges().all();
            let charge = charges.iter().find(|c| c.request_id == rid).expect("charged");
            assert_eq!(charge.input_tokens, r.usage.input_tokens, "{kind:?}");
            assert_eq!(charge.output_tokens, r.usage.output_tokens, "{kind:?}");
            // The same call made plain gives the same answer (the sim is deterministic).
            let plain = c.chat(&request(kind, "stream-1")).await.unwrap();
            assert_eq!(plain.text, r.text);
        }
    })
    .await
    .unwrap();
}

/// What the first attempt of a call with `fault` should fail with.
fn expected_class(fault: &str, kind: ProviderKind) -> ErrorClass {
    let r = |cause| ErrorClass::Retryable { cause };
    match (fault, kind) {
        ("429", _) => r(RetryCause::RateLimited),
        ("500", _) => r(RetryCause::ServerError),
        ("529", _) | ("midstream", _) => r(RetryCause::Overloaded),
        ("reset", _) => r(RetryCause::ConnectionReset),
        ("stall=3s", _) => r(RetryCause::Timeout),
        ("cut", _) => r(RetryCause::StreamCut),
        // A broken JSON line: the server sent garbage.
        ("malformed", _) => r(RetryCause::ServerError),
        _ => unreachable!(),
    }
}

/// Runs a call whose first attempt carries `fault`, through `retry`, and checks the first error's
/// class and that the second attempt succeeded.
async fn faulted_then_ok(
    sim: &RunningSim,
    c: &Client,
    kind: ProviderKind,
    fault: &str,
    streamed: bool,
) {
    let first_error = std::sync::Mutex::new(None);
    let attempts = AtomicU32::new(0);
    let tag = format!("fault-{fault}-{streamed}");
    let tag = &tag;
    let policy = RetryPolicy {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..Default::default()
    };
    let r = retry(&policy, |attempt| {
        attempts.fetch_add(1, Ordering::SeqCst);
        let base = request(kind, tag);
        let req = if attempt == 0 { with_fault(base, fault) } else { base };
        let first_error = &first_error;
        async move {
            let r = if streamed { drain(c, &req).await.1 } else { c.chat(&req).await };
            if let Err(e) = &r {
                first_error.lock().unwrap().get_or_insert_with(|| e.clone());
            }
            r
        }
    })
    .await;
    let r = r.unwrap_or_else(|e| panic!("{kind:?} {fault} streamed={streamed}: {e}"));
    assert!(!r.text.is_empty());
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "{kind:?} {fault} streamed={streamed}");
    let e = first_error.lock().unwrap().take().expect("the first attempt failed");
    let expected = expected_class(fault, kind);
    // A plain answer cut before its headers were flushed looks like a reset to the client.
    let also = (fault == "cut" && !streamed)
        .then_some(ErrorClass::Retryable { cause: RetryCause::ConnectionReset });
    assert!(
        e.class() == expected || Some(e.class()) == also,
        "{kind:?} {fault} streamed={streamed}: {e}"
    );
    // Whenever the provider answered at all, its request id is kept for support tickets.
    let answered = matches!(fault, "429" | "500" | "529" | "midstream" | "malformed")
        || (fault == "cut" && streamed);
    if answered {
        assert!(e.request_id.is_some(), "{kind:?} {fault} streamed={streamed}: {e}");
    }
    if fault == "429" || fault == "529" {
        assert!(e.retry_after.is_some(), "{kind:?} {fault}: retry-after read");
    }
    // Paid once, except where the provider billed the broken answer too (it did the work). A
    // stalled request may still be billed after we gave up on it, so it is not counted here.
    if !fault.starts_with("stall") {
        let billed = sim
            .charges()
            .all()
            .iter()
            .filter(|ch| ch.provider.as_str() == kind.as_str())
            .filter(|ch| ch.user_id.as_deref() == Some(tag) || ch.user.as_deref() == Some(tag))
            .count();
        let expected = if matches!(fault, "cut" | "malformed") { 2 } else { 1 };
        assert_eq!(billed, expected, "{kind:?} {fault} streamed={streamed}");
    }
    if fault == "midstream" && kind == ProviderKind::Anthropic {
        assert_eq!(e.status, Some(200), "a mid-stream error arrives under a 200");
    }
}

#[tokio::test]
async fn every_forced_fault_ends_in_a_retried_success() {
    tokio::time::timeout(TEST_LIMIT, async {
        let mut config = quick_sim();
        // Keep the retry-after of injected 429/529s short: the test waits it.
        config.faults.retry_after = Duration::from_millis(100);
        let sim = sim(config).await;
        for kind in KINDS {
            let c = client(kind, &sim);
            for fault in ["429", "500", "529", "reset", "stall=3s", "cut", "malformed"] {
                faulted_then_ok(&sim, &c, kind, fault, false).await;
                faulted_then_ok(&sim, &c, kind, fault, true).await;
            }
            faulted_then_ok(&sim, &c, kind, "midstream", true).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_fault_on_every_attempt_ends_in_a_clean_classified_failure() {
    tokio::time::timeout(TEST_LIMIT, async {
        let sim = sim(quick_sim()).await;
        for kind in KINDS {
            let c = client(kind, &sim);
            let policy = RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(5),
                ..Default::default()
            };
            let attempts = AtomicU32::new(0);
            let req = with_fault(request(kind, "always-500"), "500");
            let r = retry(&policy, |_| {
                attempts.fetch_add(1, Ordering::SeqCst);
                c.chat(&req)
            })
            .await;
            let e = r.unwrap_err();
            assert_eq!(attempts.load(Ordering::SeqCst), 3);
            assert_eq!(e.class(), ErrorClass::Retryable { cause: RetryCause::ServerError });
            assert_eq!(e.status, Some(500));
            assert!(e.request_id.is_some());
            // The rendering is what a task record keeps.
            let shown = e.to_string();
            assert!(shown.contains("server_error") && shown.contains("HTTP 500"), "{shown}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    tokio::time::timeout(TEST_LIMIT, async {
        let mut config = quick_sim();
        config.api_keys = vec!["the-right-key".into()];
        let sim = sim(config).await;
        for kind in KINDS {
            let bad_key = Client::with_options(
                &provider(kind, &sim, RateLimits::default()),
                Some(ApiKey::new("the-wrong-key")),
                short_timeouts(),
            )
            .unwrap();
            let attempts = AtomicU32::new(0);
            let req = request(kind, "perm");
            let e = retry(&RetryPolicy::default(), |_| {
                attempts.fetch_add(1, Ordering::SeqCst);
                bad_key.chat(&req)
            })
            .await
            .unwrap_err();
            assert_eq!(attempts.load(Ordering::SeqCst), 1);
            assert_eq!(e.class(), ErrorClass::Permanent { cause: PermanentCause::Auth }, "{e}");
            assert!(!format!("{e} {e:?}").contains("the-wrong-key"), "the key never shows");

            // A bad request (no messages) through the full call path: one attempt, BadRequest.
            let good = Client::with_options(
                &provider(kind, &sim, RateLimits::default()),
                Some(ApiKey::new("the-right-key")),
                short_timeouts(),
            )
            .unwrap();
            let bad = ChatRequest { system: None, messages: vec![], ..request(kind, "perm") };
            let before = sim.charges().all().len();
            let e = good.call(&bad, &RetryPolicy::default()).await.unwrap_err();
            assert_eq!(
                e.class(),
                ErrorClass::Permanent { cause: PermanentCause::BadRequest },
                "{e}"
            );
            assert_eq!(sim.charges().all().len(), before, "nothing billed");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn flex_calls_and_flex_refusals() {
    tokio::time::timeout(TEST_LIMIT, async {
        let sim = sim(quick_sim()).await;
        let c = client(ProviderKind::Openai, &sim);
        let flex = ChatRequest { tier: Tier::Flex, ..request(ProviderKind::Openai, "flex-1") };
        let r = c.chat(&flex).await.unwrap();
        let rid = r.provider_request_id.unwrap();
        let charges = sim.charges().all();
        let charge = charges.iter().find(|c| c.request_id == rid).unwrap();
        assert_eq!(serde_json::to_value(charge.tier).unwrap(), "flex");

        // A refusal is its own class, and the default policy does not retry it.
        let refused = with_fault(flex.clone(), "unavailable");
        let attempts = AtomicU32::new(0);
        let e = retry(&RetryPolicy::default(), |_| {
            attempts.fetch_add(1, Ordering::SeqCst);
            c.chat(&refused)
        })
        .await
        .unwrap_err();
        assert_eq!(e.class(), ErrorClass::FlexUnavailable, "{e}");
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert!(!e.is_rate_limit(), "a flex refusal does not pause the key");

        // Anthropic has no flex tier: refused locally, nothing sent.
        let a = client(ProviderKind::Anthropic, &sim);
        let req = ChatRequest { tier: Tier::Flex, ..request(ProviderKind::Anthropic, "flex-2") };
        let e = a.chat(&req).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Permanent { cause: PermanentCause::Unsupported });
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn retried_streams_through_the_limiter() {
    tokio::time::timeout(TEST_LIMIT, async {
        let mut config = quick_sim();
        config.faults.retry_after = Duration::from_millis(50);
        let sim = sim(config).await;
        for kind in KINDS {
            let c = client(kind, &sim);
            let policy = RetryPolicy { base_delay: Duration::from_millis(5), ..Default::default() };
            // A fault before any text: retried, and the caller sees only the good attempt's text.
            let mut seen = String::new();
            let req = with_fault(request(kind, "cs-1"), "429");
            let first = c.call_streaming(&req, &policy, |t| seen.push_str(t)).await;
            // The header rides on every attempt, so this one fails for good after the attempts.
            assert_eq!(
                first.unwrap_err().class(),
                ErrorClass::Retryable { cause: RetryCause::RateLimited }
            );
            assert!(seen.is_empty());
            let r = c
                .call_streaming(&request(kind, "cs-2"), &policy, |t| seen.push_str(t))
                .await
                .unwrap();
            assert_eq!(seen, r.text);
            assert_eq!(charges_for(&sim, r.provider_request_id.as_deref().unwrap()), 1);
            // A cut after text had been forwarded is not retried (the caller already showed it).
            let mut seen = String::new();
            let cut = with_fault(request(kind, "cs-3"), "cut");
            let e = c.call_streaming(&cut, &policy, |t| seen.push_str(t)).await.unwrap_err();
            assert_eq!(e.class(), ErrorClass::Retryable { cause: RetryCause::StreamCut });
            assert!(!seen.is_empty());
        }
    })
    .await
    .unwrap();
}

/// The sim allows N requests a minute per key; the client, configured with the same N, sends a
/// burst of 1.25 N. Everything succeeds, nothing is refused, and the rate is held at the limit.
#[tokio::test]
async fn a_burst_is_held_at_the_sims_limit_without_429s() {
    const RPM: u32 = 240;
    const CALLS: usize = 300;
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut config = quick_sim();
        config.rate_limits.requests_per_minute = Some(u64::from(RPM));
        let sim = sim(config).await;
        let kind = ProviderKind::Openai;
        let limits = RateLimits { requests_per_minute: Some(RPM), ..Default::default() };
        // The standard timeouts: 240 calls start at once on this one thread, and with short ones
        // a call that a loaded machine answers late timed out, counted as neither a success nor
        // a 429, and failed the test for a reason that is not the limiter's.
        let c = Client::with_options(
            &provider(kind, &sim, limits),
            Some(ApiKey::new("burst-key")),
            ClientOptions::new(),
        )
        .unwrap();
        let refused = Arc::new(AtomicU32::new(0));
        let start = std::time::Instant::now();
        let tasks: Vec<_> = (0..CALLS)
            .map(|i| {
                let c = c.clone();
                let refused = Arc::clone(&refused);
                tokio::spawn(async move {
                    let req = request(kind, &format!("burst-{i}"));
                    let permit = c.limiter().acquire(&req.model, req.estimate()).await;
                    let r = c.chat(&req).await;
                    permit.record(r.as_ref());
                    if let Err(e) = &r
                        && e.status == Some(429)
                    {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    r.is_ok()
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        let took = start.elapsed();
        let refused = refused.load(Ordering::SeqCst);
        assert!(refused as usize * 100 < CALLS, "{refused} of {CALLS} answered 429");
        assert!(ok + refused as usize >= CALLS);
        // 240 at once, then 60 more at 4/s: about 15 s; at ≥ 90% of the limit it takes ≤ 16.7 s.
        let rate_limited_part = (CALLS - RPM as usize) as f64;
        let ideal = rate_limited_part * 60.0 / f64::from(RPM);
        assert!(took.as_secs_f64() >= ideal * 0.95, "faster than the limit: {took:?}");
        assert!(took.as_secs_f64() <= ideal / 0.9 + 0.5, "below 90% of the limit: {took:?}");
    })
    .await
    .unwrap();
}

/// The same for output tokens, where the reservation (`max_tokens`) is far above what answers
/// use: settling returns the difference, so the key still runs at its token limit.
#[tokio::test]
async fn a_burst_is_held_at_the_sims_output_token_limit() {
    const OTPM: u64 = 6_000;
    const CALLS: usize = 100;
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut config = quick_sim();
        config.rate_limits.output_tokens_per_minute = Some(OTPM);
        // Answers of 75 tokens against a reservation of 100: 7,500 tokens, 1.25 buckets.
        config.output = sluice_sim::config::OutputConfig { min_tokens: 75, max_tokens: 75 };
        let sim = sim(config).await;
        let kind = ProviderKind::Anthropic;
        let limits = RateLimits { output_tokens_per_minute: Some(OTPM), ..Default::default() };
        let c = Client::with_options(
            &provider(kind, &sim, limits),
            Some(ApiKey::new("token-key")),
            ClientOptions::new(),
        )
        .unwrap();
        let refused = Arc::new(AtomicU32::new(0));
        let start = std::time::Instant::now();
        let tasks: Vec<_> = (0..CALLS)
            .map(|i| {
                let c = c.clone();
                let refused = Arc::clone(&refused);
                tokio::spawn(async move {
                    let req = ChatRequest { max_tokens: 100, ..request(kind, &format!("tok-{i}")) };
                    let permit = c.limiter().acquire(&req.model, req.estimate()).await;
                    let r = c.chat(&req).await;
                    permit.record(r.as_ref());
                    if let Err(e) = &r
                        && e.status == Some(429)
                    {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let took = start.elapsed().as_secs_f64();
        let refused = refused.load(Ordering::SeqCst);
        assert!(refused as usize * 100 < CALLS, "{refused} of {CALLS} answered 429");
        let used: u64 = sim.charges().all().iter().map(|ch| ch.output_tokens).sum();
        assert!(used > OTPM, "the test must need more than one bucket: {used}");
        // The first bucket is free; the rest comes at OTPM per minute.
        let ideal = (used - OTPM) as f64 * 60.0 / OTPM as f64;
        assert!(took >= ideal * 0.9, "faster than the limit: {took:.1}s for ideal {ideal:.1}s");
        assert!(took <= ideal / 0.9 + 0.5, "below 90% of the limit: {took:.1}s for {ideal:.1}s");
    })
    .await
    .unwrap();
}
