//! The charge log: one line per billed real-time request and per billed batch line, with tokens
//! and dollars at the sim's published prices. Tests read it (in process through
//! [`crate::RunningSim::charges`], or over HTTP at `GET /sim/charges`) to prove that nothing was
//! paid for twice.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::models::{self, Model, Provider, Tier};

/// One billed call.
#[derive(Debug, Clone, Serialize)]
pub struct Charge {
    /// Position in the log, from 1.
    pub seq: u64,
    /// RFC 3339 time the charge was recorded.
    pub at: String,
    pub provider: Provider,
    pub model: String,
    pub tier: Tier,
    /// `messages`, `chat.completions`, or `batch`.
    pub endpoint: &'static str,
    /// The request id the provider returned (`request-id` / `x-request-id`; for batch lines the
    /// id of the line's response).
    pub request_id: String,
    /// The id of the message / completion that was billed.
    pub response_id: String,
    pub batch_id: Option<String>,
    pub custom_id: Option<String>,
    /// Anthropic `metadata.user_id`.
    pub user_id: Option<String>,
    /// OpenAI `user` (or `safety_identifier`).
    pub user: Option<String>,
    /// OpenAI `metadata` of the request (for batch lines: of the batch).
    pub metadata: Option<serde_json::Value>,
    /// Fingerprint of the API key (never the key itself).
    pub key_fingerprint: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub input_usd: f64,
    pub output_usd: f64,
    pub total_usd: f64,
    /// The exact cost in pico-dollars (1e-12 USD); sums of these are exact.
    pub total_pico_usd: u64,
}

/// What a caller knows about a call to be billed.
#[derive(Debug, Clone)]
pub(crate) struct Billable {
    pub model: &'static Model,
    pub model_name: String,
    pub tier: Tier,
    pub endpoint: &'static str,
    pub request_id: String,
    pub response_id: String,
    pub batch_id: Option<String>,
    pub custom_id: Option<String>,
    pub user_id: Option<String>,
    pub user: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub key_fingerprint: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Totals for one (provider, model, tier).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SummaryLine {
    pub provider: String,
    pub model: String,
    pub tier: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_usd: f64,
    pub total_pico_usd: u64,
}

/// Totals over the whole log and per (provider, model, tier).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_usd: f64,
    pub total_pico_usd: u64,
    pub by_model: Vec<SummaryLine>,
    /// Charges no longer listed because the log is capped (`charge_log_limit`); the totals of an
    /// unfiltered summary still include them.
    pub dropped_from_log: u64,
}

/// The log itself. A std mutex: it is held only to push or copy, never across an await.
#[derive(Debug)]
pub struct ChargeLog {
    inner: Mutex<Inner>,
    limit: usize,
}

#[derive(Debug, Default)]
struct Inner {
    charges: VecDeque<Charge>,
    next_seq: u64,
    dropped: u64,
    /// Running totals, exact even when old entries have been dropped from the list.
    totals: Summary,
    by: BTreeMap<(String, String, String), SummaryLine>,
}

impl Default for ChargeLog {
    fn default() -> Self {
        ChargeLog::with_limit(DEFAULT_LIMIT)
    }
}

/// Entries kept by default (about 100 MB); sustained benchmarks would otherwise grow without bound.
pub const DEFAULT_LIMIT: usize = 200_000;

fn usd(pico: u64) -> f64 {
    pico as f64 / 1e12
}

fn add(line: &mut SummaryLine, c: &Charge) {
    line.requests += 1;
    line.input_tokens += c.input_tokens;
    line.output_tokens += c.output_tokens;
    line.total_pico_usd += c.total_pico_usd;
    line.total_usd = usd(line.total_pico_usd);
}

fn key(c: &Charge) -> (String, String, String) {
    (c.provider.as_str().to_string(), c.model.clone(), c.tier.as_str().to_string())
}

impl ChargeLog {
    /// A log that lists at most `limit` charges (the oldest are dropped; totals stay exact).
    pub fn with_limit(limit: usize) -> Self {
        ChargeLog { inner: Mutex::new(Inner::default()), limit: limit.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record(&self, b: Billable) -> Charge {
        let cost = models::cost(b.model, b.tier, b.input_tokens, b.output_tokens);
        let total = cost.input_pico.saturating_add(cost.output_pico);
        let mut inner = self.lock();
        inner.next_seq += 1;
        let charge = Charge {
            seq: inner.next_seq,
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            provider: b.model.provider,
            model: b.model_name,
            tier: b.tier,
            endpoint: b.endpoint,
            request_id: b.request_id,
            response_id: b.response_id,
            batch_id: b.batch_id,
            custom_id: b.custom_id,
            user_id: b.user_id,
            user: b.user,
            metadata: b.metadata,
            key_fingerprint: b.key_fingerprint,
            input_tokens: b.input_tokens,
            output_tokens: b.output_tokens,
            input_usd: usd(cost.input_pico),
            output_usd: usd(cost.output_pico),
            total_usd: usd(total),
            total_pico_usd: total,
        };
        let k = key(&charge);
        let line = inner.by.entry(k.clone()).or_insert_with(|| SummaryLine {
            provider: k.0,
            model: k.1,
            tier: k.2,
            ..SummaryLine::default()
        });
        add(line, &charge);
        let t = &mut inner.totals;
        t.requests += 1;
        t.input_tokens += charge.input_tokens;
        t.output_tokens += charge.output_tokens;
        t.total_pico_usd += charge.total_pico_usd;
        t.total_usd = usd(t.total_pico_usd);
        if inner.charges.len() >= self.limit {
            inner.charges.pop_front();
            inner.dropped += 1;
        }
        inner.charges.push_back(charge.clone());
        charge
    }

    /// A copy of every listed charge, oldest first.
    pub fn all(&self) -> Vec<Charge> {
        self.lock().charges.iter().cloned().collect()
    }

    /// Empties the log and its totals (between test cases).
    pub fn clear(&self) {
        let mut inner = self.lock();
        let next_seq = inner.next_seq;
        *inner = Inner { next_seq, ..Inner::default() };
    }

    /// Totals since the start (or the last `clear`), overall and per (provider, model, tier).
    pub fn summary(&self) -> Summary {
        let inner = self.lock();
        Summary {
            by_model: inner.by.values().cloned().collect(),
            dropped_from_log: inner.dropped,
            ..inner.totals.clone()
        }
    }
}

/// Totals of some charges (a filtered view of the log).
pub(crate) fn summarize(charges: &[Charge]) -> Summary {
    let mut by: BTreeMap<(String, String, String), SummaryLine> = BTreeMap::new();
    let mut s = Summary::default();
    for c in charges {
        let k = key(c);
        let line = by.entry(k.clone()).or_insert_with(|| SummaryLine {
            provider: k.0,
            model: k.1,
            tier: k.2,
            ..SummaryLine::default()
        });
        add(line, c);
        s.requests += 1;
        s.input_tokens += c.input_tokens;
        s.output_tokens += c.output_tokens;
        s.total_pico_usd += c.total_pico_usd;
    }
    s.total_usd = usd(s.total_pico_usd);
    s.by_model = by.into_values().collect();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{MODELS, Tier};

    fn billable(n: u64) -> Billable {
        Billable {
            model: &MODELS[0],
            model_name: MODELS[0].id.to_string(),
            tier: Tier::Standard,
            endpoint: "messages",
            request_id: format!("req_{n}"),
            response_id: format!("msg_{n}"),
            batch_id: None,
            custom_id: None,
            user_id: None,
            user: None,
            metadata: None,
            key_fingerprint: "key_0".into(),
            input_tokens: n,
            output_tokens: 1,
        }
    }

    #[test]
    fn capped_log_keeps_exact_totals() {
        let log = ChargeLog::with_limit(3);
        for n in 1..=5 {
            log.record(billable(n));
        }
        let all = log.all();
        assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), [3, 4, 5]);
        let s = log.summary();
        assert_eq!((s.requests, s.input_tokens, s.dropped_from_log), (5, 15, 2));
        assert_eq!(s.by_model.len(), 1);
        assert_eq!(s.by_model[0].requests, 5);
        log.clear();
        assert_eq!(log.summary().requests, 0);
        assert_eq!(log.record(billable(9)).seq, 6, "seq keeps counting after a clear");
    }
}
