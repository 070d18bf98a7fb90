use std::sync::Arc;
use std::time::Duration;

use sluice_core::config::RateLimits;
use tokio::time::Instant;

use super::*;

fn est(input: u64, output: u64) -> Estimate {
    Estimate { input_tokens: input, output_tokens: output }
}

/// Starts `n` acquisitions at once and returns when each was admitted, relative to the start.
async fn burst(limiter: &Arc<RateLimiter>, n: usize, e: Estimate) -> Vec<Duration> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let l = Arc::clone(limiter);
            tokio::spawn(async move {
                let p = l.acquire("m", e).await;
                let at = start.elapsed();
                p.settle(&Usage {
                    input_tokens: e.input_tokens,
                    output_tokens: e.output_tokens,
                    ..Default::default()
                });
                at
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out.sort();
    out
}

/// In every window of `window`, at most `capacity + rate·window` admissions (a token bucket's
/// guarantee), checked on the admission times.
fn max_in_window(times: &[Duration], window: Duration) -> usize {
    let mut best = 0;
    for (i, t) in times.iter().enumerate() {
        let n = times[i..].iter().take_while(|u| **u < *t + window).count();
        best = best.max(n);
    }
    best
}

#[tokio::test(start_paused = true)]
async fn a_burst_is_admitted_at_the_request_limit_not_above() {
    let limiter =
        RateLimiter::new(RateLimits { requests_per_minute: Some(60), ..Default::default() });
    let times = burst(&limiter, 300, est(1, 1)).await;
    // 60 at once (the full bucket), then one per second.
    assert_eq!(times.iter().filter(|t| t.is_zero()).count(), 60);
    let last = *times.last().unwrap();
    assert!(last >= Duration::from_secs(240) && last <= Duration::from_secs(241), "{last:?}");
    // Never more than the bucket allows in any minute: 60 (burst) + 60 (refill).
    assert!(max_in_window(&times, Duration::from_secs(60)) <= 121);
    // After the burst the steady rate is the limit: 60 in any later minute.
    let steady: Vec<_> = times.iter().copied().filter(|t| *t >= Duration::from_secs(1)).collect();
    let in_minute = max_in_window(&steady, Duration::from_secs(60));
    assert!((59..=61).contains(&in_minute), "{in_minute}");
}

#[tokio::test(start_paused = true)]
async fn token_limits_hold_with_estimates() {
    // 6,000 input tokens a minute, calls of 1,000: 6 at once, then one per 10 s.
    let limiter =
        RateLimiter::new(RateLimits { input_tokens_per_minute: Some(6_000), ..Default::default() });
    let times = burst(&limiter, 18, est(1_000, 10)).await;
    assert_eq!(times.iter().filter(|t| t.is_zero()).count(), 6);
    let last = *times.last().unwrap();
    assert!(last >= Duration::from_secs(120) && last <= Duration::from_secs(121), "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn settling_returns_what_was_over_reserved() {
    let limiter = RateLimiter::new(RateLimits {
        output_tokens_per_minute: Some(1_000),
        ..Default::default()
    });
    // max_tokens 1,000 reserves the whole minute; the call used 100.
    let p = limiter.acquire("m", est(10, 1_000)).await;
    assert!(limiter.headroom("m").output_tokens.unwrap() < 1.0);
    p.settle(&Usage { input_tokens: 10, output_tokens: 100, ..Default::default() });
    let h = limiter.headroom("m").output_tokens.unwrap();
    assert!((899.0..=901.0).contains(&h), "{h}");
    // So the next big reservation waits only for the missing 100 tokens (6 s), not a minute.
    let start = Instant::now();
    let _p = limiter.acquire("m", est(10, 1_000)).await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(6) && waited <= Duration::from_millis(6_100),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_need_above_capacity_waits_for_a_full_bucket_then_runs() {
    let limiter =
        RateLimiter::new(RateLimits { output_tokens_per_minute: Some(100), ..Default::default() });
    let start = Instant::now();
    let _a = limiter.acquire("m", est(1, 500)).await; // full bucket: runs, goes into debt
    assert_eq!(start.elapsed(), Duration::ZERO);
    let _b = limiter.acquire("m", est(1, 500)).await; // waits for the debt and a full bucket
    assert!(start.elapsed() >= Duration::from_secs(300), "{:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_capped_and_released_on_drop() {
    let limiter = RateLimiter::new(RateLimits { max_concurrency: Some(2), ..Default::default() });
    let a = limiter.acquire("m", est(1, 1)).await;
    let _b = limiter.acquire("m", est(1, 1)).await;
    assert_eq!(limiter.headroom("m").concurrency, Some(0));
    let l = Arc::clone(&limiter);
    let c = tokio::spawn(async move { l.acquire("m", est(1, 1)).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!c.is_finished());
    drop(a);
    let _c = tokio::time::timeout(Duration::from_secs(1), c).await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_every_caller_of_the_key() {
    let limiter = RateLimiter::new(RateLimits::default());
    limiter.on_rate_limited(Some(Duration::from_secs(7)));
    assert_eq!(limiter.headroom("other-model").paused_for, Duration::from_secs(7));
    let start = Instant::now();
    let times = burst(&limiter, 5, est(1, 1)).await;
    assert!(times.iter().all(|t| *t >= Duration::from_secs(7)));
    assert!(start.elapsed() < Duration::from_secs(8));
    // An absurd retry-after is capped.
    limiter.on_rate_limited(Some(Duration::from_secs(3600)));
    assert_eq!(limiter.headroom("m").paused_for, MAX_PAUSE);
}

#[tokio::test(start_paused = true)]
async fn headers_tighten_a_model_and_never_loosen() {
    // The config says 100/min; the provider's headers say 10/min for this model.
    let limiter =
        RateLimiter::new(RateLimits { requests_per_minute: Some(100), ..Default::default() });
    let snap = RateLimitSnapshot {
        requests: Some(LimitInfo { limit: Some(10), remaining: Some(2), reset: None }),
        ..Default::default()
    };
    limiter.observe("small", &snap);
    assert_eq!(limiter.headroom("small").requests, Some(2.0));
    let times = burst_model(&limiter, "small", 4).await;
    assert_eq!(times.iter().filter(|t| t.is_zero()).count(), 2);
    // Refill at 10/min: one every 6 s.
    assert!(times[3] >= Duration::from_secs(12) && times[3] <= Duration::from_millis(12_100));
    // Another model of the key keeps the config's limit.
    assert!(limiter.headroom("big").requests.unwrap() > 50.0);
    // A header with more remaining than we think does not loosen.
    limiter.observe(
        "small",
        &RateLimitSnapshot {
            requests: Some(LimitInfo { limit: Some(10), remaining: Some(10), reset: None }),
            ..Default::default()
        },
    );
    assert!(limiter.headroom("small").requests.unwrap() < 1.0);
}

async fn burst_model(limiter: &Arc<RateLimiter>, model: &'static str, n: usize) -> Vec<Duration> {
    let start = Instant::now();
    let mut out = Vec::new();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let l = Arc::clone(limiter);
            tokio::spawn(async move {
                let _p = l.acquire(model, est(1, 1)).await;
                start.elapsed()
            })
        })
        .collect();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out.sort();
    out
}

#[tokio::test(start_paused = true)]
async fn headers_alone_set_a_limit_when_the_config_has_none() {
    let limiter = RateLimiter::new(RateLimits::default());
    assert_eq!(limiter.headroom("m").tokens, None);
    limiter.observe(
        "m",
        &RateLimitSnapshot {
            tokens: Some(LimitInfo { limit: Some(1_000), remaining: Some(500), reset: None }),
            ..Default::default()
        },
    );
    assert_eq!(limiter.headroom("m").tokens, Some(500.0));
    // A call of 400 + 200 tokens waits for 100 tokens at 1,000/min: 6 s.
    let start = Instant::now();
    let _p = limiter.acquire("m", est(400, 200)).await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(6) && waited <= Duration::from_millis(6_100),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn record_refunds_a_refused_call_and_pauses_on_429() {
    use crate::error::{ErrorKind, ProviderError};
    let limiter =
        RateLimiter::new(RateLimits { input_tokens_per_minute: Some(1_000), ..Default::default() });
    let p = limiter.acquire("m", est(800, 0)).await;
    let mut e = ProviderError::new(
        sluice_core::config::ProviderKind::Openai,
        ErrorKind::Status,
        "slow down",
    );
    e.status = Some(429);
    e.retry_after = Some(Duration::from_secs(2));
    p.record(Err(&e));
    let h = limiter.headroom("m");
    assert!(h.input_tokens.unwrap() > 999.0);
    assert_eq!(h.paused_for, Duration::from_secs(2));
}

/// A provider that says its bucket is empty and full again only in six minutes (OpenAI's
/// `x-ratelimit-reset-tokens: 6m0s`) is believed: refilling at limit/60 per second, sluice would
/// come back after a minute into a run of 429s.
#[tokio::test(start_paused = true)]
async fn an_empty_bucket_waits_for_the_providers_reset() {
    let limiter = RateLimiter::new(RateLimits::default());
    let empty = |reset| RateLimitSnapshot {
        tokens: Some(LimitInfo { limit: Some(1000), remaining: Some(0), reset: Some(reset) }),
        ..Default::default()
    };
    limiter.observe("m", &empty(Duration::from_secs(360)));
    let start = Instant::now();
    let _p = limiter.acquire("m", est(1000, 0)).await;
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(359) && took <= Duration::from_secs(361), "{took:?}");
    // A reset sooner than the refill rate's changes nothing: the bucket refills at its rate.
    let limiter = RateLimiter::new(RateLimits::default());
    limiter.observe("m", &empty(Duration::from_secs(1)));
    let start = Instant::now();
    let _p = limiter.acquire("m", est(500, 0)).await;
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(29) && took <= Duration::from_secs(31), "{took:?}");
}

/// Callers waiting out one model's empty bucket do not hold the key's concurrency slots: a call
/// to another model with budget to spare goes at once.
#[tokio::test(start_paused = true)]
async fn a_model_out_of_budget_does_not_hold_the_keys_call_slots() {
    let limiter = RateLimiter::new(RateLimits { max_concurrency: Some(1), ..Default::default() });
    let drained = RateLimitSnapshot {
        tokens: Some(LimitInfo { limit: Some(60), remaining: Some(0), reset: None }),
        ..Default::default()
    };
    limiter.observe("big", &drained);
    let waiting = {
        let l = Arc::clone(&limiter);
        tokio::spawn(async move { l.acquire("big", est(60, 0)).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let other = tokio::time::timeout(Duration::from_secs(1), limiter.acquire("small", est(1, 1)))
        .await
        .expect("a call to another model waited for a slot held by a caller that could not run");
    // It holds the only slot: the big model's caller, once its budget is back, waits for it.
    tokio::time::sleep(Duration::from_secs(70)).await;
    assert!(!waiting.is_finished());
    drop(other);
    let _big = tokio::time::timeout(Duration::from_secs(1), waiting).await.unwrap().unwrap();
}
