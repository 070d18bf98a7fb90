//! The state every handler shares, and the batch clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::anthropic::batches::AnthropicBatch;
use crate::charges::ChargeLog;
use crate::config::{Settings, lognormal};
use crate::faults::FaultDice;
use crate::openai::batches::OpenAiBatch;
use crate::openai::files::StoredFile;
use crate::ratelimit::Limiter;

/// Batches and files of both providers. One std mutex: it is never held across an await, and
/// batches advance lazily under it (see [`BatchClock`]).
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub anthropic: Vec<AnthropicBatch>,
    pub files: Vec<StoredFile>,
    pub openai: Vec<OpenAiBatch>,
}

#[derive(Debug)]
pub(crate) struct AppState {
    pub settings: Settings,
    pub charges: Arc<ChargeLog>,
    pub limiter: Arc<Limiter>,
    pub dice: FaultDice,
    pub store: Mutex<Store>,
    /// `http://127.0.0.1:PORT`, for absolute `results_url`s.
    pub base_url: String,
    /// Cancelled on shutdown: sleeps (latency, stalls) end early so shutdown is prompt.
    pub shutdown: CancellationToken,
    pub latency_rng: Mutex<StdRng>,
    pub clock: BatchClock,
}

impl AppState {
    pub(crate) fn new(settings: Settings, base_url: String, shutdown: CancellationToken) -> Self {
        let seed = settings.config.seed;
        AppState {
            charges: Arc::new(ChargeLog::with_limit(settings.config.charge_log_limit)),
            limiter: Limiter::new(settings.config.rate_limits.clone()),
            dice: FaultDice::new(settings.config.faults.clone(), seed),
            store: Mutex::new(Store::default()),
            base_url,
            shutdown,
            latency_rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x1a7e)),
            clock: BatchClock { acceleration: settings.config.batch.acceleration },
            settings,
        }
    }

    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A batch's planned turnaround (simulated time), drawn from the configured distribution.
    pub(crate) fn draw_turnaround(&self, rng: &mut StdRng) -> Duration {
        let b = &self.settings.config.batch;
        let (u1, u2): (f64, f64) = (rng.random(), rng.random());
        let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        lognormal(b.turnaround_median, b.turnaround_p95, z).min(b.window)
    }

    /// The generator of one batch's draws (turnaround, line outcomes, result order).
    pub(crate) fn batch_rng(&self, batch_id: &str) -> StdRng {
        let mut h = crate::generate::Fnv::new(self.settings.config.seed);
        h.write(batch_id.as_bytes());
        StdRng::seed_from_u64(h.finish())
    }
}

/// Batch durations are simulated time; real time is simulated time divided by the acceleration.
/// Timestamps shown to clients are real wall-clock times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchClock {
    pub acceleration: f64,
}

impl BatchClock {
    pub(crate) fn real(&self, simulated: Duration) -> Duration {
        // Capped so that adding it to an Instant can never overflow.
        let cap = Duration::from_secs(100 * 365 * 86_400);
        Duration::try_from_secs_f64(simulated.as_secs_f64() / self.acceleration)
            .map_or(cap, |d| d.min(cap))
    }
}

/// When a batch was created, in both clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Created {
    pub instant: Instant,
    pub utc: DateTime<Utc>,
}

impl Created {
    pub(crate) fn now() -> Self {
        Created { instant: Instant::now(), utc: Utc::now() }
    }
    /// The wall-clock time of an instant of this batch's life.
    pub(crate) fn utc_at(&self, at: Instant) -> DateTime<Utc> {
        let d = at.saturating_duration_since(self.instant);
        self.utc + chrono::Duration::from_std(d).unwrap_or_default()
    }
}
