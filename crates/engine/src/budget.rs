//! Budget caps (`[budget]`): what may still be spent today.
//!
//! Past a soft cap (overall, or the workload's), work that is not `critical` is demoted to a
//! cheaper lane its deadline allows (flex, then batch) or held until the caps allow it again;
//! past the hard cap nothing is sent, critical work included. Spend is read from the ledger since
//! local midnight (the config's timezone), at most once a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_core::{Config, Lane};
use sluice_store::{Store, StoreError, TaskRecord};

use crate::now_ms;
use sluice_core::units::fmt_usd;

pub const SPENT_TODAY: &str = "sluice_budget_spent_today_dollars";
pub const DEMOTED: &str = "sluice_tasks_demoted_total";
pub const HELD: &str = "sluice_tasks_held_total";

/// What the caps say about running a task now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Go,
    Demote { lane: Lane, reason: String },
    Hold { reason: String },
}

#[derive(Debug, Clone)]
pub struct Budget {
    config: Arc<Config>,
    store: Store,
    cache: Arc<Mutex<Option<(Instant, Spend)>>>,
}

#[derive(Debug, Clone, Default)]
struct Spend {
    total: f64,
    by_workload: HashMap<String, f64>,
}

impl Budget {
    pub fn new(config: Arc<Config>, store: Store) -> Budget {
        Budget { config, store, cache: Arc::default() }
    }

    fn capped(&self) -> bool {
        let b = &self.config.budget;
        b.daily_usd.is_some() || b.hard_daily_usd.is_some() || !b.per_workload.is_empty()
    }

    async fn spend(&self) -> Result<Spend, StoreError> {
        if let Some((at, s)) =
            self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
            && at.elapsed() < Duration::from_secs(1)
        {
            return Ok(s);
        }
        let now = chrono::Utc::now().with_timezone(&self.config.timezone);
        let midnight = now
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .and_then(|m| m.and_local_timezone(self.config.timezone).single());
        let since = midnight.map_or(0, |m| m.timestamp_millis());
        let rows = self.store.spend_since(since).await?;
        let mut s = Spend::default();
        for (workload, nano) in rows {
            let usd = nano as f64 / 1e9;
            s.total += usd;
            s.by_workload.insert(workload, usd);
        }
        metrics::gauge!(SPENT_TODAY).set(s.total);
        *self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), s.clone()));
        Ok(s)
    }

    /// The verdict for a claimed stream or flex task.
    pub async fn check(&self, task: &TaskRecord) -> Result<Verdict, StoreError> {
        if !self.capped() {
            return Ok(Verdict::Go);
        }
        let Some(w) = self.config.workload(&task.workload) else { return Ok(Verdict::Go) };
        let b = &self.config.budget;
        let spend = self.spend().await?;
        if let Some(hard) = b.hard_daily_usd.filter(|h| spend.total >= *h) {
            return Ok(Verdict::Hold {
                reason: format!(
                    "held: the hard daily cap of {} is reached ({} spent today)",
                    fmt_usd(hard),
                    fmt_usd(spend.total)
                ),
            });
        }
        let over = match (b.daily_usd, b.per_workload.get(&w.name)) {
            (Some(cap), _) if spend.total >= cap => {
                Some(format!("the daily budget of {} is reached", fmt_usd(cap)))
            }
            (_, Some(cap)) if spend.by_workload.get(&w.name).copied().unwrap_or(0.0) >= *cap => {
                Some(format!("workload {}'s daily budget of {} is reached", w.name, fmt_usd(*cap)))
            }
            _ => None,
        };
        let Some(over) = over else { return Ok(Verdict::Go) };
        if w.critical {
            return Ok(Verdict::Go);
        }
        // Cheaper lanes, cheapest last tried first: flex keeps the answer sooner.
        let slack = Duration::from_millis(u64::try_from(task.deadline - now_ms()).unwrap_or(0));
        let decision = sluice_core::policy::decide(&self.config.policy_input(w, slack));
        for lane in [Lane::Flex, Lane::Batch] {
            if lane.as_str() == task.lane {
                continue;
            }
            if decision.estimate(lane).is_some_and(|e| e.meets_deadline) {
                metrics::counter!(DEMOTED, "workload" => w.name.clone(), "lane" => lane.as_str())
                    .increment(1);
                return Ok(Verdict::Demote {
                    lane,
                    reason: format!("demoted to {lane}: {over}, and its deadline allows it"),
                });
            }
        }
        if task.lane == Lane::Flex.as_str() {
            // Already on the cheapest lane its deadline allows (demoted here, or flex by its
            // own decision): it runs, at the flex price, rather than wait until midnight.
            return Ok(Verdict::Go);
        }
        metrics::counter!(HELD, "workload" => w.name.clone()).increment(1);
        Ok(Verdict::Hold {
            reason: format!("held: {over}, and no cheaper lane meets its deadline"),
        })
    }

    /// True when the hard cap is reached: nothing may be sent, batches included.
    pub async fn hard_cap_reached(&self) -> Result<bool, StoreError> {
        match self.config.budget.hard_daily_usd {
            None => Ok(false),
            Some(hard) => Ok(self.spend().await?.total >= hard),
        }
    }

    /// True when nothing is over a cap: held work may run again.
    pub async fn allows_all(&self) -> Result<bool, StoreError> {
        if !self.capped() {
            return Ok(true);
        }
        let b = &self.config.budget;
        let s = self.spend().await?;
        let under = |cap: Option<f64>, spent: f64| cap.is_none_or(|c| spent < c);
        Ok(under(b.hard_daily_usd, s.total)
            && under(b.daily_usd, s.total)
            && b.per_workload
                .iter()
                .all(|(w, cap)| s.by_workload.get(w).copied().unwrap_or(0.0) < *cap))
    }
}
