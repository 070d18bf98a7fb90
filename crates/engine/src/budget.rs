//! Budget caps (`[budget]`): what may still be spent today.
//!
//! Past a soft cap (overall, or the workload's), work that is not `critical` is demoted to a
//! cheaper lane its deadline allows (flex, then batch) or held until the caps allow it again;
//! past the hard cap nothing is sent, critical work included. Spend is read from the ledger since
//! local midnight (the config's timezone), at most once a second.
//!
//! The hard cap is a bound, not a trigger: a call is made only if the most it can cost fits
//! under the cap beside what is spent and what is already committed — the worst case of the
//! calls in flight and of the batches still open (their lines are billed only when their results
//! come back, hours later). A call that does not fit waits for the calls in flight to end, or is
//! held; a batch is cut only as large as the room left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

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

/// Whether a call fits under the hard cap now.
#[derive(Debug)]
pub enum Room {
    /// It fits; its worst case counts against the cap until the reservation is dropped, which
    /// must be after its ledger line is written.
    Go(Reservation),
    /// Not now, but calls of this instance are in flight: try again when they end.
    Wait,
    /// It does not fit beside what is spent and what open batches may cost.
    Hold(String),
    /// It would not fit under the cap even on a day with nothing spent.
    Never(String),
}

#[derive(Debug, Clone)]
pub struct Budget {
    config: Arc<Config>,
    store: Store,
    state: Arc<Mutex<State>>,
    /// Told whenever a reservation is dropped.
    freed: Arc<Notify>,
}

#[derive(Debug, Clone, Default)]
struct Spend {
    total: f64,
    by_workload: HashMap<String, f64>,
    /// What the open batches may yet cost (read only under a hard cap).
    batches: f64,
    /// The most that today's calls which failed after the provider took them may cost (read
    /// only under a hard cap).
    maybe: f64,
}

/// The last read of the store, and this instance's share of the committed spend that the store
/// does not show yet, in nano-dollars; under one lock, so that no check sees a read without
/// what it already counts, or the other way round.
#[derive(Debug, Default)]
struct State {
    /// When the read began, and what it found.
    read: Option<(Instant, Spend)>,
    /// The worst cases of the calls in flight.
    in_flight: u64,
    /// Spend that reached the store at an instant (a call's ledger line or `maybe_spent` record,
    /// a batch's record): it counts until a read that began after that instant, which shows it.
    landed: Vec<(Instant, u64)>,
    /// Worst cases of calls the provider may have billed that neither the ledger nor the store's
    /// `maybe_spent` shows (a paid result, or such a record, that could not be stored), with the
    /// start of the day they fell on: they count until that day ends.
    unrecorded: Vec<(i64, u64)>,
    /// Held work's claim on the room: the least a held task needs, and when held work was last
    /// put back in its queues (the claim lapses a while after, if no such call took the room).
    held_need: Option<u64>,
    released_at: Option<Instant>,
    /// The start of the day (ms) of the last read.
    day: i64,
}

impl State {
    fn spend(&self) -> Spend {
        self.read.as_ref().map(|(_, s)| s.clone()).unwrap_or_default()
    }

    /// What today will not get back, in dollars: spent, and what failed calls may cost.
    fn settled(&self) -> f64 {
        let s = self.read.as_ref().map_or(0.0, |(_, s)| s.total + s.maybe);
        s + self.unrecorded.iter().map(|(_, n)| n).sum::<u64>() as f64 / 1e9
    }

    /// Settled, committed to open batches, and reserved here, in dollars.
    fn committed(&self) -> f64 {
        let batches = self.read.as_ref().map_or(0.0, |(_, s)| s.batches);
        let mine = self.in_flight + self.landed.iter().map(|(_, n)| n).sum::<u64>();
        self.settled() + batches + mine as f64 / 1e9
    }

    /// Whether a call of this instance is in flight or about to show in the store: room will
    /// change without a new day.
    fn mine(&self) -> bool {
        self.in_flight > 0 || !self.landed.is_empty()
    }

    /// Held work's claim lapses [`HELD_CLAIM`] after it was first put back in its queues if no
    /// call of its size has reserved since (it went to another instance, was demoted, or its
    /// calls were smaller than they looked).
    fn lapse_held(&mut self) {
        if self.released_at.is_some_and(|at| at.elapsed() > HELD_CLAIM) {
            self.held_need = None;
            self.released_at = None;
        }
    }

    /// What batches may commit: the room left, less what held stream work waits for. Held work
    /// is urgent (no batch meets its deadline), so the room that frees up goes to it first;
    /// unless it could not fit today whatever frees up (spend does not go down).
    fn batch_room(&mut self, hard: f64) -> f64 {
        self.lapse_held();
        let held = match self.held_need {
            Some(need) if self.settled() + need as f64 / 1e9 <= hard => need as f64 / 1e9,
            _ => 0.0,
        };
        (hard - self.committed() - held).max(0.0)
    }
}

/// How long held work put back in its queues keeps its claim on the room (see
/// [`State::batch_room`]): enough for the executor to claim it and reserve.
const HELD_CLAIM: Duration = Duration::from_secs(10);

/// A call's worst case, counted against the hard cap (when there is one) until dropped.
#[derive(Debug)]
pub struct Reservation {
    held: Option<(Budget, u64)>,
    worst: u64,
}

impl Reservation {
    /// The most the call may cost, in nano-dollars.
    pub fn worst(&self) -> u64 {
        self.worst
    }

    /// Perhaps spent, and shown neither in the ledger nor in the store's `maybe_spent` (a
    /// result, or such a record, that could not be stored): it counts in this process until the
    /// day ends. Once either is stored, drop the reservation instead.
    pub fn unrecorded(mut self) {
        self.end(Ending::Unrecorded);
    }

    /// Not spent after all (a call refused, a batch not recorded): the room is free again at
    /// once.
    pub fn release(mut self) {
        self.end(Ending::Released);
    }

    fn end(&mut self, how: Ending) {
        let Some((budget, nanos)) = self.held.take() else { return };
        // The day of an unrecorded one is that of its end, not of the last read.
        let unrecorded_on = (how == Ending::Unrecorded).then(|| budget.day_start());
        let mut state = budget.state();
        state.in_flight = state.in_flight.saturating_sub(nanos);
        if how == Ending::Landed {
            state.landed.push((Instant::now(), nanos));
        }
        if let Some(day) = unrecorded_on {
            state.unrecorded.push((day, nanos));
        }
        drop(state);
        budget.freed.notify_waiters();
    }
}

/// How a reservation's worst case stops being in flight.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    /// In the store now (dropped): it counts until a read shows it.
    Landed,
    /// Perhaps spent, in no store: it counts until the day ends.
    Unrecorded,
    /// Not spent.
    Released,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.end(Ending::Landed);
    }
}

fn nanos(usd: f64) -> u64 {
    // Rounded up: a reservation is never less than the worst case.
    (usd * 1e9).ceil().clamp(0.0, u64::MAX as f64) as u64
}

impl Budget {
    pub fn new(config: Arc<Config>, store: Store) -> Budget {
        Budget { config, store, state: Arc::default(), freed: Arc::new(Notify::new()) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn capped(&self) -> bool {
        let b = &self.config.budget;
        b.daily_usd.is_some() || b.hard_daily_usd.is_some() || !b.per_workload.is_empty()
    }

    /// The start of today (local midnight in the config's timezone), in ms.
    fn day_start(&self) -> i64 {
        let now = chrono::Utc::now().with_timezone(&self.config.timezone);
        let midnight = now
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .and_then(|m| m.and_local_timezone(self.config.timezone).single());
        midnight.map_or(0, |m| m.timestamp_millis())
    }

    /// Reads today's spend from the store unless the last read is under a second old.
    async fn refresh(&self) -> Result<(), StoreError> {
        if self.state().read.as_ref().is_some_and(|(at, _)| at.elapsed() < Duration::from_secs(1)) {
            return Ok(());
        }
        let since = self.day_start();
        let began = Instant::now();
        let mut s = Spend::default();
        // Open batches before the ledger: a batch whose lines land and which ends between the
        // two reads is then counted twice (safe), not missed.
        if self.config.budget.hard_daily_usd.is_some() {
            s.batches = self.store.reserved_by_open_batches().await? as f64 / 1e9;
            s.maybe = self.store.maybe_spent_since(since).await?.nanousd as f64 / 1e9;
        }
        let rows = self.store.spend_since(since).await?;
        for (workload, nano) in rows {
            let usd = nano as f64 / 1e9;
            s.total += usd;
            s.by_workload.insert(workload, usd);
        }
        metrics::gauge!(SPENT_TODAY).set(s.total);
        let mut state = self.state();
        // Of two reads that overlapped, the later-begun one stands.
        if state.read.as_ref().is_none_or(|(at, _)| *at < began) {
            state.read = Some((began, s));
            state.unrecorded.retain(|(d, _)| *d == since);
            // A new day: what was held for want of room has all of it again.
            if state.day != since {
                state.day = since;
                state.held_need = None;
                state.released_at = None;
            }
            // What landed before this read began is in it.
            state.landed.retain(|(at, _)| *at >= began);
        }
        Ok(())
    }

    async fn spend(&self) -> Result<Spend, StoreError> {
        self.refresh().await?;
        Ok(self.state().spend())
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

    /// Whether a call that may cost up to `worst` dollars fits under the hard cap; without one,
    /// always.
    pub async fn reserve(&self, worst: f64) -> Result<Room, StoreError> {
        let Some(hard) = self.config.budget.hard_daily_usd else {
            return Ok(Room::Go(Reservation { held: None, worst: nanos(worst) }));
        };
        if worst > hard {
            return Ok(Room::Never(format!(
                "this call may cost up to {}, more than the whole hard daily cap of {}: raise the cap or lower the workload's max_tokens",
                fmt_usd(worst),
                fmt_usd(hard)
            )));
        }
        self.refresh().await?;
        let need = nanos(worst);
        let mut state = self.state();
        if state.committed() + worst <= hard {
            state.in_flight += need;
            // Held work of this size has its room now.
            if state.held_need.is_some_and(|n| need >= n) {
                state.held_need = None;
                state.released_at = None;
            }
            drop(state);
            return Ok(Room::Go(Reservation { held: Some((self.clone(), need)), worst: need }));
        }
        if state.mine() {
            return Ok(Room::Wait);
        }
        state.held_need = Some(state.held_need.map_or(need, |n| n.min(need)));
        state.released_at = None;
        let s = state.spend();
        let maybe = if s.maybe > 0.0 {
            format!(
                ", up to {} in calls that failed after the provider took them",
                fmt_usd(s.maybe)
            )
        } else {
            String::new()
        };
        Ok(Room::Hold(format!(
            "held: the hard daily cap of {} leaves no room for this call, which may cost up to {} ({} spent today, {} more committed to batches not yet billed{maybe})",
            fmt_usd(hard),
            fmt_usd(worst),
            fmt_usd(s.total),
            fmt_usd(s.batches)
        )))
    }

    /// Until a reservation of this instance is dropped, or `at_most` has passed.
    pub async fn freed(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.freed.notified()).await;
    }

    /// The dollars a batch may still commit under the hard cap (`None`: no hard cap).
    pub async fn batch_room(&self) -> Result<Option<f64>, StoreError> {
        let Some(hard) = self.config.budget.hard_daily_usd else { return Ok(None) };
        self.refresh().await?;
        Ok(Some(self.state().batch_room(hard)))
    }

    /// Takes `usd` of the room for a batch about to be recorded, checked and counted under one
    /// lock with the calls' reservations, so that the two cannot both spend the same room; `None`
    /// when it no longer fits. Drop the reservation once the batch is recorded (the store then
    /// shows it), or [`Reservation::release`] it to give the room back at once.
    pub fn reserve_batch(&self, usd: f64) -> Option<Reservation> {
        let Some(hard) = self.config.budget.hard_daily_usd else {
            return Some(Reservation { held: None, worst: nanos(usd) });
        };
        let mut state = self.state();
        if usd > state.batch_room(hard) {
            return None;
        }
        let need = nanos(usd);
        state.in_flight += need;
        Some(Reservation { held: Some((self.clone(), need)), worst: need })
    }

    /// Held tasks were put back in their queues: their claim on the room lasts until one of
    /// them reserves, or for [`HELD_CLAIM`] from the first such release.
    pub fn released(&self) {
        let mut state = self.state();
        if state.held_need.is_some() && state.released_at.is_none() {
            state.released_at = Some(Instant::now());
        }
    }

    /// True when nothing is over a cap: held work may run again.
    pub async fn allows_all(&self) -> Result<bool, StoreError> {
        if !self.capped() {
            return Ok(true);
        }
        let b = &self.config.budget;
        self.refresh().await?;
        let (s, hard_room) = {
            let mut state = self.state();
            state.lapse_held();
            let committed = state.committed();
            let room = match (b.hard_daily_usd, state.held_need) {
                (None, _) => true,
                (Some(hard), Some(need)) => committed + need as f64 / 1e9 <= hard,
                (Some(hard), None) => committed < hard,
            };
            (state.spend(), room)
        };
        let under = |cap: Option<f64>, spent: f64| cap.is_none_or(|c| spent < c);
        Ok(hard_room
            && under(b.daily_usd, s.total)
            && b.per_workload
                .iter()
                .all(|(w, cap)| s.by_workload.get(w).copied().unwrap_or(0.0) < *cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(hard: f64) -> Config {
        let toml = format!(
            r#"
[budget]
hard_daily_usd = {hard}
[providers.openai]
kind = "openai"

[[workloads]]
name = "alert"
on = "thing.happened"
provider = "openai"
model = "gpt-5-mini"
max_tokens = 60
prompt = "{{{{ payload.x }}}}"
lane = "stream"
needed_within = "1m"
"#
        );
        Config::parse(&toml, "unit.toml").expect("config")
    }

    /// Stream work held for want of room has the first claim on the room that frees up: batches,
    /// which can wait, are cut only from what is left beyond it.
    #[tokio::test]
    async fn held_stream_work_comes_before_new_batches() {
        let (_dir, store) = crate::test_support::store().await;
        let budget = Budget::new(Arc::new(capped(0.001)), store.clone());
        // An open batch that may cost $0.0009 of the $0.001.
        crate::test_support::open_batch(&store, "bat_open", 900_000).await;

        // A call that may cost $0.0005 does not fit, and nothing in flight here will free room.
        let room = budget.reserve(0.0005).await.expect("reserve");
        assert!(matches!(room, Room::Hold(_)), "{room:?}");
        assert_eq!(budget.batch_room().await.expect("room"), Some(0.0));
        assert!(budget.reserve_batch(0.00005).is_none(), "a batch took the held call's room");

        // The batch ends: its room goes to the held call first, while it is put back in its
        // queue and until it reserves.
        store.finish_batch("bat_open", "ended", now_ms(), None).await.expect("finish");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let room = || async { budget.batch_room().await.expect("room").expect("capped") };
        assert!((room().await - 0.0005).abs() < 1e-9, "{}", room().await);
        assert!(budget.allows_all().await.expect("allows"), "the held call may run now");
        budget.released();
        assert!((room().await - 0.0005).abs() < 1e-9, "{}", room().await);
        let Room::Go(call) = budget.reserve(0.0005).await.expect("reserve") else { panic!() };
        assert!((room().await - 0.0005).abs() < 1e-9, "the call's own reservation, not the claim");
        call.release();
        assert!((room().await - 0.001).abs() < 1e-9, "{}", room().await);

        // Calls that failed after the provider took them count all day, on every instance: a
        // held call that cannot fit today whatever frees up keeps no room from batches.
        store.record_maybe_spent("tsk_cut", now_ms(), 800_000).await.expect("record");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let room = budget.batch_room().await.expect("room").expect("capped");
        assert!((room - 0.0002).abs() < 1e-9, "{room}");
        let held = budget.reserve(0.0005).await.expect("reserve");
        let Room::Hold(why) = held else { panic!("{held:?}") };
        assert!(why.contains("up to $0.0008 in calls that failed"), "{why}");
        let room = budget.batch_room().await.expect("room").expect("capped");
        assert!((room - 0.0002).abs() < 1e-9, "{room}");
    }
}
