//! How long to wait before trying again (STYLE.md §4: the *whether* is [`ProviderError::class`],
//! decided elsewhere; this module only turns a retryable error into a delay, once, for everyone).
//!
//! Exponential backoff with full jitter (a uniform draw in `[0, min(cap, base·2^n)]`), never less
//! than the server's `retry-after`. A server that asks for more than `max_retry_after` is not
//! retried in-request at all — as the OpenAI SDK does above 120 s: such waits belong to the
//! durable queue (the error keeps `retry_after` so the engine can schedule the task for later).

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::error::{ErrorClass, ProviderError};

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Calls in total, the first included (1 = never retry).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest `retry-after` honored in-request; above it, give up and let the queue wait.
    pub max_retry_after: Duration,
    /// Retry OpenAI flex refusals too (the engine decides, from the deadline, whether to wait
    /// for flex capacity or fall back to the standard tier).
    pub retry_flex_unavailable: bool,
    /// Retry a call the provider may already bill ([`ProviderError::may_be_billed`]). A caller
    /// that bounds its spend turns this off and counts each attempt itself.
    pub retry_billed: bool,
}

impl Default for RetryPolicy {
    /// A few quick in-request retries; longer waits go back to the durable queue.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            retry_flex_unavailable: false,
            retry_billed: true,
        }
    }
}

impl RetryPolicy {
    /// The delay before the attempt after `attempt` (0-based: 0 is the first call) failed with
    /// `error`, or `None` when it should not be retried (permanent, or attempts used up, or the
    /// server asks for too long a wait).
    pub fn next_delay(&self, attempt: u32, error: &ProviderError) -> Option<Duration> {
        self.next_delay_with(attempt, error, &mut rand::rng())
    }

    /// [`RetryPolicy::next_delay`] with the random source given (tests pass a seeded one).
    pub fn next_delay_with(
        &self,
        attempt: u32,
        error: &ProviderError,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        let retryable = match error.class() {
            ErrorClass::Retryable { .. } => true,
            ErrorClass::FlexUnavailable => self.retry_flex_unavailable,
            ErrorClass::Permanent { .. } => false,
        };
        if !retryable
            || (!self.retry_billed && error.may_be_billed())
            || attempt.saturating_add(1) >= self.max_attempts
        {
            return None;
        }
        if let Some(ra) = error.retry_after
            && ra > self.max_retry_after
        {
            return None;
        }
        let ceiling = self
            .base_delay
            .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let jitter = Duration::from_secs_f64(rng.random_range(0.0..=ceiling.as_secs_f64()));
        Some(error.retry_after.map_or(jitter, |ra| ra.max(jitter)))
    }
}

/// Runs `call(attempt)` until it succeeds, fails permanently, or the policy gives up; returns the
/// last error then. `attempt` is 0-based, so the closure can record each attempt (or, in tests,
/// vary the request).
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, mut call: F) -> Result<T, ProviderError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut attempt = 0u32;
    loop {
        match call(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) => match policy.next_delay(attempt, &e) {
                Some(d) => {
                    tracing::debug!(
                        attempt,
                        class = e.class().label(),
                        delay_ms = d.as_millis() as u64,
                        "provider call failed; retrying"
                    );
                    tokio::time::sleep(d).await;
                    attempt += 1;
                }
                None => return Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use sluice_core::config::ProviderKind;
    use tokio::time::Instant;

    use super::*;
    use crate::error::ErrorKind;

    fn err(status: u16, retry_after: Option<Duration>) -> ProviderError {
        let mut e = ProviderError::new(ProviderKind::Anthropic, ErrorKind::Status, "x");
        e.status = Some(status);
        e.retry_after = retry_after;
        e
    }

    #[test]
    fn full_jitter_stays_under_the_exponential_ceiling() {
        let p = RetryPolicy { max_attempts: 20, ..Default::default() };
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..12 {
            let ceiling = (p.base_delay * 2u32.pow(attempt)).min(p.max_delay);
            for _ in 0..50 {
                let d = p.next_delay_with(attempt, &err(500, None), &mut rng).unwrap();
                assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
            }
        }
    }

    #[test]
    fn jitter_actually_varies() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        let ds: Vec<_> =
            (0..20).map(|_| p.next_delay_with(2, &err(529, None), &mut rng).unwrap()).collect();
        assert!(ds.iter().any(|d| *d != ds[0]));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..20 {
            let d =
                p.next_delay_with(0, &err(429, Some(Duration::from_secs(17))), &mut rng).unwrap();
            assert_eq!(d, Duration::from_secs(17));
        }
    }

    #[test]
    fn too_long_a_retry_after_is_not_retried_in_request() {
        let p = RetryPolicy::default();
        assert_eq!(p.next_delay(0, &err(429, Some(Duration::from_secs(61)))), None);
    }

    #[test]
    fn permanent_and_exhausted_are_not_retried() {
        let p = RetryPolicy { max_attempts: 3, ..Default::default() };
        assert_eq!(p.next_delay(0, &err(400, None)), None);
        assert!(p.next_delay(1, &err(500, None)).is_some());
        assert_eq!(p.next_delay(2, &err(500, None)), None);
        let once = RetryPolicy { max_attempts: 1, ..Default::default() };
        assert_eq!(once.next_delay(0, &err(500, None)), None);
    }

    #[test]
    fn flex_refusals_only_when_asked() {
        let mut e = err(429, None);
        e.code = Some("resource_unavailable".into());
        assert_eq!(RetryPolicy::default().next_delay(0, &e), None);
        let p = RetryPolicy { retry_flex_unavailable: true, ..Default::default() };
        assert!(p.next_delay(0, &e).is_some());
    }

    #[test]
    fn a_call_the_provider_may_bill_is_retried_only_when_asked() {
        use crate::error::TimeoutPhase;
        let bounded = RetryPolicy { retry_billed: false, ..Default::default() };
        for kind in [
            ErrorKind::StreamCut,
            ErrorKind::Malformed,
            ErrorKind::Timeout(TimeoutPhase::FirstByte),
            ErrorKind::Timeout(TimeoutPhase::Idle),
            ErrorKind::Dropped,
        ] {
            let e = ProviderError::new(ProviderKind::Anthropic, kind.clone(), "x");
            assert!(e.may_be_billed(), "{kind:?}");
            assert!(RetryPolicy::default().next_delay(0, &e).is_some(), "{kind:?}");
            assert_eq!(bounded.next_delay(0, &e), None, "{kind:?}");
        }
        // Refused, or never sent: not billed, retried as before.
        let reset = ProviderError::new(ProviderKind::Anthropic, ErrorKind::Connection, "x");
        for e in [err(529, None), err(500, None), reset] {
            assert!(!e.may_be_billed());
            assert!(bounded.next_delay(0, &e).is_some());
        }
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = RetryPolicy { max_attempts: u32::MAX, ..Default::default() };
        let d = p.next_delay(u32::MAX - 2, &err(500, None)).unwrap();
        assert!(d <= p.max_delay);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let r = retry(&RetryPolicy::default(), |attempt| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if attempt < 2 { Err(err(429, Some(Duration::from_secs(2)))) } else { Ok(attempt) }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Two waits of at least the retry-after, at most the jitter ceiling of those attempts.
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(4), "{took:?}");
        assert!(took <= Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn returns_the_last_error_when_attempts_run_out() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy { max_attempts: 3, ..Default::default() };
        let r: Result<(), _> = retry(&policy, |attempt| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut e = err(500, None);
                e.message = format!("attempt {attempt}");
                Err(e)
            }
        })
        .await;
        assert_eq!(r.unwrap_err().message, "attempt 2");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let r: Result<(), _> = retry(&RetryPolicy::default(), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(err(401, None)) }
        })
        .await;
        assert_eq!(r.unwrap_err().status, Some(401));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
