//! Per-API-key rate limits: requests, input tokens and output tokens per minute as continuously
//! refilled buckets (as Anthropic describes its limits), plus a cap on requests in flight.
//!
//! Input tokens are taken when the request is admitted (they are known); output tokens are taken
//! when the answer is known, so a key may go into debt and is refused until the bucket refills,
//! which is how a provider that estimates from `max_tokens` behaves on average.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::RateLimitConfig;

/// Limit reported in headers when a limit is not configured.
pub const UNLIMITED: u64 = 1_000_000;

#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    level: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_minute: u64, now: Instant) -> Self {
        Bucket { capacity: per_minute as f64, level: per_minute as f64, last: now }
    }
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + dt * self.capacity / 60.0).min(self.capacity);
        self.last = now;
    }
    /// Time until the level reaches `need` (capped at the capacity).
    fn time_until(&self, need: f64) -> Duration {
        let need = need.min(self.capacity);
        if self.level >= need || self.capacity <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((need - self.level) * 60.0 / self.capacity)
    }
    fn state(&self) -> LimitState {
        LimitState {
            limit: self.capacity as u64,
            remaining: self.level.max(0.0).floor() as u64,
            reset: self.time_until(self.capacity),
        }
    }
}

/// One limit as the headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub limit: u64,
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset: Duration,
}

const NO_LIMIT: LimitState =
    LimitState { limit: UNLIMITED, remaining: UNLIMITED, reset: Duration::ZERO };

/// The state of a key's limits, for the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub requests: LimitState,
    pub input_tokens: LimitState,
    pub output_tokens: LimitState,
}

impl Snapshot {
    /// Input and output together (Anthropic's `tokens` headers, OpenAI's `tokens` headers).
    pub fn tokens(&self) -> LimitState {
        LimitState {
            limit: self.input_tokens.limit.saturating_add(self.output_tokens.limit),
            remaining: self.input_tokens.remaining.saturating_add(self.output_tokens.remaining),
            reset: self.input_tokens.reset.max(self.output_tokens.reset),
        }
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Requests,
    InputTokens,
    OutputTokens,
    Concurrency,
}

/// A refusal: which limit, and when to retry.
#[derive(Debug, Clone)]
pub struct Refused {
    pub kind: Kind,
    pub limit: u64,
    pub retry_after: Duration,
    pub snapshot: Snapshot,
}

#[derive(Debug)]
struct KeyState {
    requests: Option<Bucket>,
    input: Option<Bucket>,
    output: Option<Bucket>,
    in_flight: u64,
}

/// The limiter shared by all connections.
#[derive(Debug)]
pub struct Limiter {
    config: RateLimitConfig,
    keys: Mutex<HashMap<String, KeyState>>,
}

/// Holds a concurrency slot until dropped; output tokens are charged through it.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    key: String,
}

impl Limiter {
    pub fn new(config: RateLimitConfig) -> Arc<Self> {
        Arc::new(Limiter { config, keys: Mutex::new(HashMap::new()) })
    }

    fn with_key<T>(&self, key: &str, now: Instant, f: impl FnOnce(&mut KeyState) -> T) -> T {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let c = &self.config;
        let st = keys.entry(key.to_string()).or_insert_with(|| KeyState {
            requests: c.requests_per_minute.map(|n| Bucket::new(n, now)),
            input: c.input_tokens_per_minute.map(|n| Bucket::new(n, now)),
            output: c.output_tokens_per_minute.map(|n| Bucket::new(n, now)),
            in_flight: 0,
        });
        for b in [&mut st.requests, &mut st.input, &mut st.output].into_iter().flatten() {
            b.refill(now);
        }
        f(st)
    }

    fn snapshot_of(st: &KeyState) -> Snapshot {
        let s = |b: &Option<Bucket>| b.as_ref().map_or(NO_LIMIT, Bucket::state);
        Snapshot {
            requests: s(&st.requests),
            input_tokens: s(&st.input),
            output_tokens: s(&st.output),
        }
    }

    /// The key's current state, without taking anything.
    pub fn snapshot(&self, key: &str) -> Snapshot {
        self.with_key(key, Instant::now(), |st| Self::snapshot_of(st))
    }

    /// Admits one request that carries `input_tokens`, or says which limit refuses it.
    // A refusal is the rare path and is used at once; boxing it would buy nothing.
    #[allow(clippy::result_large_err)]
    pub fn acquire(
        self: &Arc<Self>,
        key: &str,
        input_tokens: u64,
    ) -> Result<(Permit, Snapshot), Refused> {
        let concurrency = self.config.concurrency;
        self.with_key(key, Instant::now(), |st| {
            let refuse = |kind, b: &Bucket, need: f64, st: &KeyState| Refused {
                kind,
                limit: b.capacity as u64,
                retry_after: b.time_until(need),
                snapshot: Self::snapshot_of(st),
            };
            if let Some(b) = &st.requests
                && b.level < 1.0
            {
                return Err(refuse(Kind::Requests, b, 1.0, st));
            }
            if let Some(b) = &st.input
                && b.level < input_tokens as f64
            {
                return Err(refuse(Kind::InputTokens, b, input_tokens as f64, st));
            }
            if let Some(b) = &st.output
                && b.level < 1.0
            {
                return Err(refuse(Kind::OutputTokens, b, 1.0, st));
            }
            if let Some(max) = concurrency
                && st.in_flight >= max
            {
                return Err(Refused {
                    kind: Kind::Concurrency,
                    limit: max,
                    retry_after: Duration::from_secs(1),
                    snapshot: Self::snapshot_of(st),
                });
            }
            if let Some(b) = &mut st.requests {
                b.level -= 1.0;
            }
            if let Some(b) = &mut st.input {
                b.level -= input_tokens as f64;
            }
            st.in_flight += 1;
            Ok((Permit { limiter: Arc::clone(self), key: key.to_string() }, Self::snapshot_of(st)))
        })
    }
}

impl Permit {
    /// Takes the answer's output tokens from the key's bucket; returns the new state.
    pub fn charge_output(&self, tokens: u64) -> Snapshot {
        self.limiter.with_key(&self.key, Instant::now(), |st| {
            if let Some(b) = &mut st.output {
                b.level -= tokens as f64;
            }
            Limiter::snapshot_of(st)
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.with_key(&self.key, Instant::now(), |st| {
            st.in_flight = st.in_flight.saturating_sub(1);
        });
    }
}

/// A duration the way OpenAI's reset headers write it (Go's `time.Duration` format):
/// `0s`, `370ms`, `1s`, `6m0s`, `4m12.172s`, `23h18m29.144s`.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let (s, frac) = (rem / 1000, rem % 1000);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:03}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

/// Whole seconds for `retry-after`, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(370)), "370ms");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_millis(252_172)), "4m12.172s");
        assert_eq!(go_duration(Duration::from_millis(83_909_140)), "23h18m29.14s");
    }

    #[test]
    fn requests_bucket_refuses_then_refills() {
        let l =
            Limiter::new(RateLimitConfig { requests_per_minute: Some(2), ..Default::default() });
        let (p1, _) = l.acquire("k", 1).unwrap();
        let (p2, s) = l.acquire("k", 1).unwrap();
        assert_eq!(s.requests.remaining, 0);
        let r = l.acquire("k", 1).unwrap_err();
        assert_eq!(r.kind, Kind::Requests);
        assert!(
            r.retry_after > Duration::from_secs(20) && r.retry_after <= Duration::from_secs(30)
        );
        // Another key has its own buckets.
        assert!(l.acquire("other", 1).is_ok());
        drop((p1, p2));
    }

    #[test]
    fn concurrency_is_released_on_drop() {
        let l = Limiter::new(RateLimitConfig { concurrency: Some(1), ..Default::default() });
        let (p, _) = l.acquire("k", 1).unwrap();
        assert_eq!(l.acquire("k", 1).unwrap_err().kind, Kind::Concurrency);
        drop(p);
        assert!(l.acquire("k", 1).is_ok());
    }
}
