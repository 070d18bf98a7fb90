//! The outbound rate limiter of one provider key (STYLE.md §4, TensorZero's model).
//!
//! A call reserves what it may cost before it is sent — one request, its input estimate and its
//! `max_tokens` — and [`Permit::settle`] returns the difference once the provider's usage is known.
//! Limits are continuously refilled buckets (capacity = the per-minute limit, refilled at
//! limit/60 per second), the way Anthropic describes its own; a bucket may go into debt when a
//! call costs more than it reserved, which delays the next callers until it has refilled.
//!
//! Two layers of buckets are checked together:
//! - the key's, from the config's [`RateLimits`] (shared by every model of the key);
//! - one set per model, learned from the providers' rate-limit headers ([`headers`]): the limit
//!   they report, and never more remaining than they say. Headers only ever tighten.
//!
//! A 429 (a real rate limit, not an overload) pauses the whole key for its `retry-after`, so every
//! caller of the key slows down, not only the one that got it. Waiters queue FIFO per model (a
//! fair tokio mutex as a turnstile), so a big request is not starved by a stream of small ones.

pub mod headers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sluice_core::config::RateLimits;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub use headers::{LimitInfo, RateLimitSnapshot};

use crate::model::{Estimate, Usage};

/// The longest a single 429 pauses the key: a bigger `retry-after` is more likely a quota problem
/// than a rate limit, and the retry policy caps it separately.
const MAX_PAUSE: Duration = Duration::from_secs(60);
/// The pause after a 429 that gave no `retry-after`.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// The longest a reset header holds a bucket's refill back: a longer reset belongs to a daily
/// limit, which a per-minute bucket does not model anyway (the 429 pause catches those).
const MAX_RESET_HOLD: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    level: f64,
    /// Refilled up to here; in the future while a provider's reset header holds the refill back.
    last: Instant,
}

impl Bucket {
    fn new(per_minute: f64, now: Instant) -> Self {
        Bucket { capacity: per_minute, level: per_minute, last: now }
    }

    fn refill(&mut self, now: Instant) {
        if now <= self.last {
            return;
        }
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + dt * self.capacity / 60.0).min(self.capacity);
        self.last = now;
    }

    /// Time until `need` fits. A need above the capacity waits for a full bucket and then goes
    /// into debt; otherwise it could never run.
    fn wait_for(&self, need: f64, now: Instant) -> Duration {
        let need = need.min(self.capacity);
        if self.level >= need || self.capacity <= 0.0 {
            return Duration::ZERO;
        }
        // Round up to the millisecond, so that the wake-up finds the budget there.
        let secs = (need - self.level) * 60.0 / self.capacity;
        self.last.saturating_duration_since(now)
            + Duration::from_millis((secs * 1000.0).ceil() as u64)
    }

    /// The provider says the bucket is full again only after `reset`: if that is later than
    /// its refill rate would have it, the refill starts later, so that it is full right then.
    fn hold_until_reset(&mut self, reset: Duration, now: Instant) {
        if self.capacity <= 0.0 {
            return;
        }
        let at_rate = Duration::from_secs_f64(
            ((self.capacity - self.level).max(0.0) * 60.0 / self.capacity).min(3600.0),
        );
        if let Some(extra) = reset.min(MAX_RESET_HOLD).checked_sub(at_rate) {
            self.last = self.last.max(now + extra);
        }
    }
}

/// What one call takes from each kind of bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Need {
    requests: f64,
    input: f64,
    output: f64,
}

impl Need {
    fn tokens(&self) -> f64 {
        self.input + self.output
    }
}

#[derive(Debug, Default)]
struct Buckets {
    requests: Option<Bucket>,
    /// Input + output (Anthropic's and OpenAI's `tokens` headers).
    tokens: Option<Bucket>,
    input: Option<Bucket>,
    output: Option<Bucket>,
}

impl Buckets {
    fn from_config(l: &RateLimits, now: Instant) -> Self {
        Buckets {
            requests: l.requests_per_minute.map(|n| Bucket::new(f64::from(n), now)),
            tokens: None,
            input: l.input_tokens_per_minute.map(|n| Bucket::new(n as f64, now)),
            output: l.output_tokens_per_minute.map(|n| Bucket::new(n as f64, now)),
        }
    }

    fn each(&mut self) -> impl Iterator<Item = &mut Bucket> {
        [&mut self.requests, &mut self.tokens, &mut self.input, &mut self.output]
            .into_iter()
            .flatten()
    }

    fn refill(&mut self, now: Instant) {
        self.each().for_each(|b| b.refill(now));
    }

    fn wait_for(&self, n: Need, now: Instant) -> Duration {
        let w = |b: &Option<Bucket>, need: f64| {
            b.as_ref().map_or(Duration::ZERO, |b| b.wait_for(need, now))
        };
        w(&self.requests, n.requests)
            .max(w(&self.tokens, n.tokens()))
            .max(w(&self.input, n.input))
            .max(w(&self.output, n.output))
    }

    /// Takes `n` (negative amounts give back), never above capacity.
    fn take(&mut self, n: Need) {
        let t = |b: &mut Option<Bucket>, amount: f64| {
            if let Some(b) = b {
                b.level = (b.level - amount).min(b.capacity);
            }
        };
        t(&mut self.requests, n.requests);
        t(&mut self.tokens, n.tokens());
        t(&mut self.input, n.input);
        t(&mut self.output, n.output);
    }

    /// Adopts what a response's headers say: their limit, and at most their remaining.
    fn observe(&mut self, s: &RateLimitSnapshot, now: Instant) {
        fn one(slot: &mut Option<Bucket>, info: Option<LimitInfo>, now: Instant) {
            let Some(info) = info else { return };
            let limit = info.limit.map(|l| l as f64);
            let b = match (slot.as_mut(), limit) {
                (Some(b), _) => b,
                (None, Some(l)) => slot.insert(Bucket::new(l, now)),
                (None, None) => return,
            };
            if let Some(l) = limit
                && l > 0.0
            {
                b.capacity = l;
                b.level = b.level.min(l);
            }
            if let Some(r) = info.remaining {
                b.level = b.level.min(r as f64);
                if let Some(reset) = info.reset {
                    b.hold_until_reset(reset, now);
                }
            }
        }
        one(&mut self.requests, s.requests, now);
        one(&mut self.tokens, s.tokens, now);
        one(&mut self.input, s.input_tokens, now);
        one(&mut self.output, s.output_tokens, now);
    }
}

#[derive(Debug)]
struct State {
    key: Buckets,
    models: HashMap<String, Buckets>,
    paused_until: Option<Instant>,
}

/// Remaining budget, for metrics (`None`: no limit known for that dimension).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Headroom {
    pub requests: Option<f64>,
    pub input_tokens: Option<f64>,
    pub output_tokens: Option<f64>,
    /// Input + output, where a provider reports a combined limit.
    pub tokens: Option<f64>,
    /// Free concurrency slots, if a concurrency limit is set.
    pub concurrency: Option<usize>,
    /// How long the key stays paused after a 429.
    pub paused_for: Duration,
}

/// The limiter of one provider key, shared (`Arc`) by every caller of that key.
#[derive(Debug)]
pub struct RateLimiter {
    /// A std mutex: never held across an await, held only for a few float operations.
    state: Mutex<State>,
    changed: Notify,
    turnstiles: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    concurrency: Option<Arc<Semaphore>>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(RateLimiter {
            state: Mutex::new(State {
                key: Buckets::from_config(&limits, now),
                models: HashMap::new(),
                paused_until: None,
            }),
            changed: Notify::new(),
            turnstiles: Mutex::new(HashMap::new()),
            concurrency: limits.max_concurrency.map(|n| Arc::new(Semaphore::new(n as usize))),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent numbers: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn turnstile(&self, model: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut t = self.turnstiles.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(t.entry(model.to_owned()).or_default())
    }

    /// Waits until the key's and the model's budgets allow a call of this size, reserves it, and
    /// returns the permit that settles it.
    pub async fn acquire(self: &Arc<Self>, model: &str, estimate: Estimate) -> Permit {
        let need = Need {
            requests: 1.0,
            input: estimate.input_tokens as f64,
            output: estimate.output_tokens as f64,
        };
        let turnstile = self.turnstile(model);
        let _turn = turnstile.lock().await;
        loop {
            let wait = self.budget(model, need, false);
            if !wait.is_zero() {
                self.wait(wait).await;
                continue;
            }
            // A concurrency slot only once the budget is there: a caller waiting out one
            // model's limit must not sit on a slot that a call to another model could use.
            let slot = match &self.concurrency {
                Some(s) => match Arc::clone(s).try_acquire_owned() {
                    Ok(slot) => Some(slot),
                    // Never closed: without a slot we would only lose the cap, never hang.
                    Err(_) => Arc::clone(s).acquire_owned().await.ok(),
                },
                None => None,
            };
            // The budget may have gone to another model's caller while this one waited for a
            // slot: checked again, and taken, under one lock.
            let wait = self.budget(model, need, true);
            if wait.is_zero() {
                return Permit {
                    limiter: Arc::clone(self),
                    model: model.to_owned(),
                    reserved: estimate,
                    _slot: slot,
                    settled: false,
                };
            }
            drop(slot);
            self.wait(wait).await;
        }
    }

    /// How long until the key's and the model's budgets allow `need`; if they do now and `take`
    /// is set, takes it.
    fn budget(&self, model: &str, need: Need, take: bool) -> Duration {
        let now = Instant::now();
        let mut st = self.lock();
        st.key.refill(now);
        st.models.entry(model.to_owned()).or_default().refill(now);
        let paused = st.paused_until.map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        let wait = paused
            .max(st.key.wait_for(need, now))
            .max(st.models.get(model).map_or(Duration::ZERO, |b| b.wait_for(need, now)));
        if wait.is_zero() && take {
            st.key.take(need);
            if let Some(b) = st.models.get_mut(model) {
                b.take(need);
            }
        }
        wait
    }

    /// Sleeps `wait`, or less if a settlement or a header changes the budgets meanwhile.
    async fn wait(&self, wait: Duration) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.changed.notified() => {}
        }
    }

    /// Tightens the model's buckets from a response's headers.
    pub fn observe(&self, model: &str, snapshot: &RateLimitSnapshot) {
        let now = Instant::now();
        let mut st = self.lock();
        let b = st.models.entry(model.to_owned()).or_default();
        b.refill(now);
        b.observe(snapshot, now);
    }

    /// A 429 rate-limit answer: every caller of the key waits `retry_after` (capped).
    pub fn on_rate_limited(&self, retry_after: Option<Duration>) {
        let pause = retry_after.unwrap_or(DEFAULT_PAUSE).min(MAX_PAUSE);
        let until = Instant::now() + pause;
        let mut st = self.lock();
        st.paused_until = Some(st.paused_until.map_or(until, |t| t.max(until)));
        tracing::debug!(pause_ms = pause.as_millis() as u64, "rate limited: key paused");
    }

    /// What is left, for metrics: the smaller of the key's and the model's budgets.
    pub fn headroom(&self, model: &str) -> Headroom {
        let now = Instant::now();
        let mut st = self.lock();
        st.key.refill(now);
        let paused_for =
            st.paused_until.map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        let key = &st.key;
        let m = st.models.get(model);
        let lvl = |k: &Option<Bucket>, m: Option<&Option<Bucket>>| {
            let m = m.and_then(|b| b.as_ref()).map(|b| {
                let mut b = b.clone();
                b.refill(now);
                b.level
            });
            match (k.as_ref().map(|b| b.level), m) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        Headroom {
            requests: lvl(&key.requests, m.map(|b| &b.requests)),
            input_tokens: lvl(&key.input, m.map(|b| &b.input)),
            output_tokens: lvl(&key.output, m.map(|b| &b.output)),
            tokens: lvl(&key.tokens, m.map(|b| &b.tokens)),
            concurrency: self.concurrency.as_ref().map(|s| s.available_permits()),
            paused_for,
        }
    }

    fn adjust(&self, model: &str, delta: Need) {
        let now = Instant::now();
        {
            let mut st = self.lock();
            st.key.refill(now);
            st.key.take(delta);
            if let Some(b) = st.models.get_mut(model) {
                b.refill(now);
                b.take(delta);
            }
        }
        self.changed.notify_waiters();
    }
}

/// A reservation. Settle it with the real usage; dropped unsettled, the estimate stays spent
/// (the safe assumption when the outcome is unknown). Holds a concurrency slot until dropped.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<RateLimiter>,
    model: String,
    reserved: Estimate,
    _slot: Option<OwnedSemaphorePermit>,
    settled: bool,
}

impl Permit {
    /// The call finished with this usage: give back what was over-reserved (or take the extra).
    pub fn settle(mut self, actual: &Usage) {
        self.settled = true;
        let delta = Need {
            requests: 0.0,
            input: actual.input_tokens as f64 - self.reserved.input_tokens as f64,
            output: actual.output_tokens as f64 - self.reserved.output_tokens as f64,
        };
        self.limiter.adjust(&self.model, delta);
    }

    /// The call was refused before any work (an error status): its tokens were not spent. The
    /// request still counts, as it does at the provider.
    pub fn refund(mut self) {
        self.settled = true;
        let delta = Need {
            requests: 0.0,
            input: -(self.reserved.input_tokens as f64),
            output: -(self.reserved.output_tokens as f64),
        };
        self.limiter.adjust(&self.model, delta);
    }

    /// Settles from a call's outcome: usage and headers on success; on an error, its headers, a
    /// key-wide pause for a 429 rate limit, and a refund when the provider refused before working.
    pub fn record(self, outcome: Result<&crate::ChatResponse, &crate::ProviderError>) {
        let limiter = Arc::clone(&self.limiter);
        let model = self.model.clone();
        match outcome {
            Ok(resp) => {
                self.settle(&resp.usage);
                if let Some(s) = &resp.rate_limit {
                    limiter.observe(&model, s);
                }
            }
            Err(e) => {
                if let Some(s) = &e.rate_limit {
                    limiter.observe(&model, s);
                }
                if e.is_rate_limit() {
                    limiter.on_rate_limited(e.retry_after);
                }
                if e.refused_before_work() {
                    self.refund();
                }
            }
        }
    }

    pub fn reserved(&self) -> Estimate {
        self.reserved
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled {
            tracing::trace!(model = %self.model, "permit dropped unsettled: estimate kept");
        }
    }
}

#[cfg(test)]
mod tests;
