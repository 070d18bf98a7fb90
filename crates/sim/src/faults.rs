//! Fault injection. A fault is drawn for each real-time request from the configured rates, or
//! forced by the request header `x-sim-fault`:
//!
//! | value | effect |
//! |---|---|
//! | `429` | rate-limit error with `retry-after` |
//! | `500` | internal server error |
//! | `529` | Anthropic `overloaded_error` (HTTP 529); OpenAI: 503 `server_is_overloaded` |
//! | `reset` | the TCP connection is reset before any answer |
//! | `stall` or `stall=2s` | the answer is held back (`faults.stall_for` by default) |
//! | `cut` | the answer stops mid-way (streams: inside an event) and the connection is dropped |
//! | `malformed` | one SSE event carries a broken JSON line (non-streamed: a truncated JSON body) |
//! | `midstream` | streams only: an `error` event (overloaded) after a few deltas |
//! | `unavailable` | OpenAI flex only: 429 "resource unavailable" |
//! | `none` | no fault, whatever the configured rates |
//!
//! On batch creation (both providers) the header also takes `expire` (the batch expires whole)
//! and, for OpenAI, `fail` (validation fails); `stall` there holds the answer back and creates
//! the batch only when it is sent, as a slow create call does.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::FaultConfig;

pub const HEADER: &str = "x-sim-fault";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    RateLimit,
    Server,
    Overloaded,
    Reset,
    Stall(Option<Duration>),
    Cut,
    Malformed,
    MidStream,
    Unavailable,
    Expire,
    Fail,
    None,
}

impl Fault {
    /// Parses a header value; `None` for an unknown value (answered with a 400).
    pub fn parse(v: &str) -> Option<Fault> {
        let v = v.trim().to_ascii_lowercase();
        Some(match v.as_str() {
            "429" | "rate_limit" => Fault::RateLimit,
            "500" | "server" => Fault::Server,
            "529" | "503" | "overloaded" => Fault::Overloaded,
            "reset" => Fault::Reset,
            "stall" => Fault::Stall(None),
            "cut" => Fault::Cut,
            "malformed" => Fault::Malformed,
            "midstream" => Fault::MidStream,
            "unavailable" => Fault::Unavailable,
            "expire" => Fault::Expire,
            "fail" => Fault::Fail,
            "none" => Fault::None,
            other => {
                let d = other.strip_prefix("stall=")?;
                Fault::Stall(Some(humantime::parse_duration(d).ok()?))
            }
        })
    }
}

/// Draws faults from the configured rates with a seeded generator, so a run with a given seed and
/// request order injects the same faults.
#[derive(Debug)]
pub struct FaultDice {
    config: FaultConfig,
    rng: Mutex<StdRng>,
}

impl FaultDice {
    pub fn new(config: FaultConfig, seed: u64) -> Self {
        FaultDice { config, rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0xFA17)) }
    }

    /// The fault for one request: the forced one if any, else a draw.
    pub fn roll(&self, forced: Option<Fault>) -> Option<Fault> {
        if let Some(f) = forced {
            return if f == Fault::None { None } else { Some(f) };
        }
        let c = &self.config;
        let total = c.rate_429
            + c.rate_500
            + c.rate_529
            + c.rate_reset
            + c.rate_stall
            + c.rate_cut
            + c.rate_malformed;
        if total <= 0.0 {
            return None;
        }
        let x: f64 = self.rng.lock().unwrap_or_else(|e| e.into_inner()).random();
        let mut acc = 0.0;
        for (rate, fault) in [
            (c.rate_429, Fault::RateLimit),
            (c.rate_500, Fault::Server),
            (c.rate_529, Fault::Overloaded),
            (c.rate_reset, Fault::Reset),
            (c.rate_stall, Fault::Stall(None)),
            (c.rate_cut, Fault::Cut),
            (c.rate_malformed, Fault::Malformed),
        ] {
            acc += rate;
            if x < acc {
                return Some(fault);
            }
        }
        None
    }

    /// A uniform number in [0, 1) from the same generator (flex refusals, batch draws).
    pub fn uniform(&self) -> f64 {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).random()
    }

    pub fn stall_for(&self, f: Option<Duration>) -> Duration {
        f.unwrap_or(self.config.stall_for)
    }

    pub fn retry_after(&self) -> Duration {
        self.config.retry_after
    }
}
