//! Learning batch turnaround: how long each provider's batches really take, from the batches
//! that ended, replacing the config's prior (`batch_turnaround_p50` / `_p95`) once there are
//! enough of them. The decision at ingest and the batcher's deadline guard both read it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Observations kept per provider: recent enough to follow a provider that slows down.
const WINDOW: usize = 100;
/// Below this many observations the prior stands.
const ENOUGH: usize = 5;

#[derive(Debug, Clone, Default)]
pub struct Turnarounds {
    seen: Arc<RwLock<HashMap<String, VecDeque<Duration>>>>,
}

impl Turnarounds {
    pub fn observe(&self, provider: &str, took: Duration) {
        let mut seen = self.seen.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let q = seen.entry(provider.to_owned()).or_default();
        if q.len() == WINDOW {
            q.pop_front();
        }
        q.push_back(took);
    }

    /// `(p50, p95)` of the recent batches of `provider`, once there are enough of them.
    pub fn estimate(&self, provider: &str) -> Option<(Duration, Duration)> {
        let seen = self.seen.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let q = seen.get(provider).filter(|q| q.len() >= ENOUGH)?;
        let mut v: Vec<Duration> = q.iter().copied().collect();
        v.sort_unstable();
        let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        Some((at(0.5), at(0.95)))
    }

    /// Applies what was learned to a policy input for a workload of `provider`.
    pub fn apply(&self, provider: &str, input: &mut sluice_core::policy::PolicyInput) {
        if let Some((p50, p95)) = self.estimate(provider) {
            input.timing.batch_turnaround_p50 = p50;
            input.timing.batch_turnaround_p95 = p95;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prior_stands_until_there_is_enough_history() {
        let t = Turnarounds::default();
        for s in [10, 20, 30, 40] {
            t.observe("openai", Duration::from_secs(s));
        }
        assert_eq!(t.estimate("openai"), None);
        t.observe("openai", Duration::from_secs(1000));
        let (p50, p95) = t.estimate("openai").unwrap();
        assert_eq!(p50, Duration::from_secs(30));
        assert_eq!(p95, Duration::from_secs(1000));
        assert_eq!(t.estimate("anthropic"), None);
    }

    #[test]
    fn only_recent_batches_count() {
        let t = Turnarounds::default();
        for _ in 0..WINDOW {
            t.observe("a", Duration::from_secs(3600));
        }
        for _ in 0..WINDOW {
            t.observe("a", Duration::from_secs(60));
        }
        assert_eq!(t.estimate("a"), Some((Duration::from_secs(60), Duration::from_secs(60))));
    }
}
