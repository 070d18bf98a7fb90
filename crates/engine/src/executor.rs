//! The stream executor: `stream` and `flex` tasks, earliest deadline first, under leases.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice_core::config::{Deliver, OutputFormat, Workload};
use sluice_core::template::{AfterInfo, EventInfo, RenderContext};
use sluice_core::{Config, Lane};
use sluice_providers::{
    ApiKey, ChatRequest, ChatResponse, Client, ErrorClass, Message, ProviderError, RetryPolicy,
    Tier,
};
use sluice_store::{
    AttemptRecord, Claimed, Completed, Completion, EventRecord, Lease, LeaseLost, LedgerEntry,
    NewDelivery, Store, StoreError, TaskInput, TaskRecord,
};
use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::budget::Room;
use crate::hub::{Finished, Hub, Run, Update};
use crate::metrics as m;
use crate::now_ms;

#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// How long a claim holds before another worker may take the task; renewed every third.
    pub lease: Duration,
    /// Calls in flight at once (the rate limiter narrows this further per provider key). A
    /// service sizes it from its config: [`ExecutorOptions::for_config`].
    pub max_in_flight: usize,
    /// Tasks ingest hands over while every call slot is busy, waiting in memory (in arrival
    /// order) for one: a burst is absorbed without a trip through the store. Beyond this many,
    /// new tasks are stored queued and claimed earliest deadline first.
    pub max_waiting: usize,
    /// How often to look for work when nothing wakes the executor.
    pub poll: Duration,
    /// Attempts (claims) of one task before it fails with its last error.
    pub max_attempts: i64,
    /// Retries inside one attempt.
    pub retry: RetryPolicy,
    /// Added to every provider call (tests use it to ask the simulator for faults).
    pub extra_headers: Vec<(String, String)>,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            lease: Duration::from_secs(30),
            max_in_flight: 64,
            max_waiting: 256,
            poll: Duration::from_millis(250),
            max_attempts: 5,
            retry: RetryPolicy::default(),
            extra_headers: Vec::new(),
        }
    }
}

/// Calls a provider without `max_concurrency` counts for in [`ExecutorOptions::for_config`].
pub const CALLS_PER_PROVIDER: usize = 256;

impl ExecutorOptions {
    /// The defaults, with call slots for as many calls as the config's providers take at once
    /// together: each used provider's `max_concurrency`, or [`CALLS_PER_PROVIDER`] for one without.
    /// A call holds its slot for the provider's whole answer (a second or more for a real
    /// model), so the slots, not the limiter, would otherwise cap a service at a few dozen
    /// calls a second; each provider's own limit stays with its rate limiter.
    pub fn for_config(config: &Config) -> Self {
        // Only providers some workload calls: one declared and unused takes no calls.
        let mut used: Vec<usize> = config.workloads.iter().map(|w| w.provider).collect();
        used.sort_unstable();
        used.dedup();
        let max_in_flight = used
            .iter()
            .filter_map(|&i| config.providers.get(i))
            .map(|p| p.limits.max_concurrency.map_or(CALLS_PER_PROVIDER, |n| n as usize))
            .sum::<usize>()
            .max(1);
        ExecutorOptions { max_in_flight, ..ExecutorOptions::default() }
    }
}

/// Why the executor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "provider {provider:?} needs its API key in the environment variable {env}, which is not set"
    )]
    MissingKey { provider: String, env: String },
    #[error("provider {provider:?}: {message}")]
    Client { provider: String, message: String },
}

/// A client per provider of the config, with its key from `env` (the process environment in
/// production). Shared by the executor and the batcher.
pub fn build_clients(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<HashMap<String, Client>, SetupError> {
    let mut clients = HashMap::new();
    for p in &config.providers {
        let key = match &p.api_key_env {
            None => None,
            Some(var) => {
                Some(ApiKey::new(env(var).filter(|k| !k.is_empty()).ok_or_else(|| {
                    SetupError::MissingKey { provider: p.name.clone(), env: var.clone() }
                })?))
            }
        };
        let client = Client::new(p, key)
            .map_err(|e| SetupError::Client { provider: p.name.clone(), message: e.to_string() })?;
        clients.insert(p.name.clone(), client);
    }
    Ok(clients)
}

/// Runs streamed tasks. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    config: Arc<Config>,
    clients: HashMap<String, Client>,
    hub: Hub,
    owner: String,
    wake: Arc<Notify>,
    opts: ExecutorOptions,
    budget: crate::budget::Budget,
    /// Calls in flight; ingest reserves some for the tasks it hands over.
    slots: Arc<Semaphore>,
    /// True while ready tasks may wait in the store for a slot: ingest then stores new ones
    /// queued too, so that the store's earliest-deadline-first order decides who runs next.
    backlog: Arc<AtomicBool>,
    /// Handed-over tasks waiting for a slot.
    waiting: Arc<AtomicUsize>,
    handed_tx: mpsc::UnboundedSender<Handed>,
    /// Taken by [`Executor::run`].
    handed_rx: Mutex<Option<mpsc::UnboundedReceiver<Handed>>>,
    completing_tx: mpsc::UnboundedSender<Completing>,
    /// Taken by [`Executor::run`], which starts the group writer of results.
    completing_rx: Mutex<Option<mpsc::UnboundedReceiver<Completing>>>,
}

/// A result waiting for the group writer.
#[derive(Debug)]
struct Completing {
    task_id: String,
    fence: i64,
    completion: Completion,
    reply: tokio::sync::oneshot::Sender<Result<Result<Completed, LeaseLost>, StoreError>>,
}

/// At most this many results share one transaction.
const MAX_COMPLETION_GROUP: usize = 256;

/// Stores results as ingest stores events: every result that arrived while the previous
/// transaction ran goes into the next one, so that many calls ending together cost one fsync,
/// not one each. Ends when every sender is gone (the executor and its tasks have ended).
async fn write_completions(store: Store, mut rx: mpsc::UnboundedReceiver<Completing>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_COMPLETION_GROUP {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        // Rows locked in one order by every instance: two PostgreSQL groups cannot deadlock.
        group.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        let items: Vec<(&str, i64, &Completion)> =
            group.iter().map(|c| (c.task_id.as_str(), c.fence, &c.completion)).collect();
        let written = store.complete_many(&items).await;
        drop(items);
        match written {
            Ok(results) => {
                for (c, r) in group.into_iter().zip(results) {
                    let _ = c.reply.send(Ok(r));
                }
            }
            // One bad result (or a passing error) must not cost the others theirs: each is
            // stored on its own. Safe even if the group did commit: a second write finds the
            // task no longer running under its fence and changes nothing.
            Err(e) if group.len() > 1 => {
                tracing::warn!(error = %e, results = group.len(), "storing a group of results failed; storing them one by one");
                for c in group {
                    let r = store.complete(&c.task_id, c.fence, &c.completion).await;
                    let _ = c.reply.send(r);
                }
            }
            Err(e) => {
                if let Some(c) = group.into_iter().next() {
                    let _ = c.reply.send(Err(e));
                }
            }
        }
    }
}

/// Lets ingest give the stream tasks it stores straight to this executor. A task with a free call
/// slot is written already claimed by this executor in the ingest transaction, and handed over
/// with its event as soon as the commit is durable: the call starts without a second write to
/// claim it, a wake-up, or a read of its event. A task handed to an executor that has stopped is
/// taken over by the next one when its lease runs out, like any claimed task of a dead process.
#[derive(Debug, Clone)]
pub struct Handoff {
    owner: String,
    lease: Duration,
    slots: Arc<Semaphore>,
    backlog: Arc<AtomicBool>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    tx: mpsc::UnboundedSender<Handed>,
}

/// What ingest holds for a task it is about to store claimed: a call slot, or, while every slot
/// is busy, a place among the tasks that wait in memory for one.
#[derive(Debug)]
pub struct Reserved(Reservation);

#[derive(Debug)]
enum Reservation {
    Slot(OwnedSemaphorePermit),
    Wait(WaitPlace),
}

/// A place among the handed-over tasks that wait for a slot; given back when dropped.
#[derive(Debug)]
struct WaitPlace(Arc<AtomicUsize>);

impl Drop for WaitPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct Handed {
    task: TaskRecord,
    event: EventRecord,
    slot: Reservation,
}

impl Handoff {
    /// A free call slot, or else a place to wait for one in memory, if no ready task waits in
    /// the store.
    pub fn reserve(&self) -> Option<Reserved> {
        // A stopped executor would drop what it is handed.
        if self.backlog.load(Ordering::Acquire) || self.tx.is_closed() {
            return None;
        }
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Some(Reserved(Reservation::Slot(slot)));
        }
        // Every slot is busy. A task stored queued costs a claim, a read of its event and a
        // status to its watchers; one that waits here, already claimed, costs none of them, so
        // that a burst does not put the executor on its slower path (docs/benchmarks.md). The
        // semaphore serves its waiters first come, first served, before any later claim.
        if self.waiting.fetch_add(1, Ordering::AcqRel) < self.max_waiting {
            return Some(Reserved(Reservation::Wait(WaitPlace(self.waiting.clone()))));
        }
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        // This task and the rest are stored queued: until the executor has claimed them, newer
        // ones must not overtake them.
        self.backlog.store(true, Ordering::Release);
        None
    }

    /// The lease to write with a task stored for this executor at `now`.
    pub fn lease(&self, now: i64) -> Lease {
        Lease { owner: self.owner.clone(), expires_at: now.saturating_add(millis(self.lease)) }
    }

    /// Starts a task that was stored with [`Handoff::lease`]; its slot is released when it ends.
    pub fn hand(&self, task: TaskRecord, event: EventRecord, slot: Reserved) {
        // A stopped executor drops it; the lease runs out and the next one takes the task over.
        let _ = self.tx.send(Handed { task, event, slot: slot.0 });
    }
}

impl Executor {
    /// Builds a client per provider, with its key from `env` (the process environment in
    /// production).
    pub fn new(
        store: Store,
        config: Arc<Config>,
        hub: Hub,
        env: impl Fn(&str) -> Option<String>,
        mut opts: ExecutorOptions,
    ) -> Result<Executor, SetupError> {
        let clients = build_clients(&config, env)?;
        // Under a hard cap each call the provider may bill is reserved on its own: one that
        // fails after the provider took it goes back to the queue, and its next run reserves
        // again, rather than being retried inside the first one's reservation.
        if config.budget.hard_daily_usd.is_some() {
            opts.retry.retry_billed = false;
        }
        m::describe();
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        let (handed_tx, handed_rx) = mpsc::unbounded_channel();
        let (completing_tx, completing_rx) = mpsc::unbounded_channel();
        Ok(Executor {
            inner: Arc::new(Inner {
                budget: crate::budget::Budget::new(config.clone(), store.clone()),
                store,
                config,
                clients,
                hub,
                owner,
                wake: Arc::new(Notify::new()),
                slots: Arc::new(Semaphore::new(opts.max_in_flight)),
                backlog: Arc::new(AtomicBool::new(false)),
                waiting: Arc::new(AtomicUsize::new(0)),
                opts,
                handed_tx,
                handed_rx: Mutex::new(Some(handed_rx)),
                completing_tx,
                completing_rx: Mutex::new(Some(completing_rx)),
            }),
        })
    }

    /// Its budget: the batcher of the same process shares it, so that each counts what the
    /// other has committed under the hard cap before the store shows it.
    pub fn budget(&self) -> crate::budget::Budget {
        self.inner.budget.clone()
    }

    /// Wakes the executor at once (after ingest stored streamed tasks), instead of at its next poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// For ingest: stream tasks stored claimed for this executor start at once.
    pub fn handoff(&self) -> Handoff {
        Handoff {
            owner: self.inner.owner.clone(),
            lease: self.inner.opts.lease,
            slots: self.inner.slots.clone(),
            backlog: self.inner.backlog.clone(),
            waiting: self.inner.waiting.clone(),
            max_waiting: self.inner.opts.max_waiting,
            tx: self.inner.handed_tx.clone(),
        }
    }

    /// Claims and runs tasks until `stop` turns true; then stops claiming and waits for the calls in
    /// flight (a task whose call outlives the process is taken over when its lease runs out).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let inner = self.inner;
        let slots = inner.slots.clone();
        let (Some(mut handed), Some(completing)) =
            (inner.handed_rx.lock().await.take(), inner.completing_rx.lock().await.take())
        else {
            tracing::error!("the executor is already running");
            return;
        };
        tokio::spawn(write_completions(inner.store.clone(), completing));
        let mut running = JoinSet::new();
        let mut headroom_at = Instant::now();
        // The store is read for work on a wake-up and at least every `poll`, not for each task
        // ingest hands over.
        let mut claim_now = true;
        let mut next_claim = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            // Each call that ends wakes the loop. While ready tasks wait in the store, they are
            // claimed a few slots at a time, not one by one: each claim is a write of its own.
            let few = inner.backlog.load(Ordering::Acquire)
                && slots.available_permits() < claim_batch(inner.opts.max_in_flight);
            if (claim_now && !few) || tokio::time::Instant::now() >= next_claim {
                next_claim = tokio::time::Instant::now() + inner.opts.poll;
                claim(&inner, &slots, &mut running).await;
            }
            while running.try_join_next().is_some() {}
            if headroom_at.elapsed() > Duration::from_secs(5) {
                headroom_at = Instant::now();
                report_headroom(&inner);
                // A new day, or a raised cap: held work runs again.
                if matches!(inner.budget.allows_all().await, Ok(true)) {
                    match inner.store.release_held(now_ms()).await {
                        Ok(0) => inner.budget.released(),
                        Ok(n) => {
                            inner.budget.released();
                            tracing::info!(
                                tasks = n,
                                "budget allows work again: held tasks released"
                            )
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot release held tasks"),
                    }
                }
            }
            claim_now = true;
            tokio::select! {
                Some(h) = handed.recv() => {
                    spawn_handed(&inner, &mut running, h);
                    claim_now = false;
                }
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep_until(next_claim) => {}
                _ = stop.changed() => {}
            }
        }
        // Tasks handed over before the stop were stored claimed by this executor: run them now
        // rather than leave them to wait for their lease to run out.
        handed.close();
        while let Ok(h) = handed.try_recv() {
            spawn_handed(&inner, &mut running, h);
        }
        while running.join_next().await.is_some() {}
    }
}

/// Wakes the claim loop when a call ends, however it ended, while ready tasks wait in the store
/// for a slot (otherwise a wake would only cost a look at an empty queue).
fn slot_freed(inner: &Inner) {
    if inner.backlog.load(Ordering::Acquire) {
        inner.wake.notify_one();
    }
}

/// Whether some workload runs `after` this one: its tasks are queued when this one finishes.
fn has_followers(config: &Config, workload: &str) -> bool {
    let index = config.workloads.iter().position(|w| w.name == workload);
    index.is_some_and(|i| config.workloads.iter().any(|w| w.after == Some(i)))
}

/// How many call slots a backlogged executor lets free up before it claims again.
fn claim_batch(max_in_flight: usize) -> usize {
    (max_in_flight / 8).max(1)
}

fn spawn_handed(inner: &Arc<Inner>, running: &mut JoinSet<()>, h: Handed) {
    let inner = inner.clone();
    running.spawn(async move {
        let slot = match h.slot {
            Reservation::Slot(slot) => slot,
            Reservation::Wait(place) => {
                let Ok(slot) = inner.slots.clone().acquire_owned().await else { return };
                drop(place);
                slot
            }
        };
        let fence = h.task.fence;
        // The lease was stamped before the commit: if the commit (or a queue) took a good part of
        // it, renew it, making sure it is still ours, before paying for a call.
        let lease_ms = millis(inner.opts.lease);
        let left = h.task.lease_expires_at.unwrap_or(0) - now_ms();
        if left < lease_ms * 2 / 3 {
            match inner.store.heartbeat(&h.task.id, fence, now_ms(), lease_ms).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    tracing::warn!(task = %h.task.id, "a task handed over by ingest lost its lease before it started; its new owner runs it");
                    return;
                }
                Err(e) => {
                    tracing::warn!(task = %h.task.id, error = %e, "cannot renew the lease of a task handed over by ingest; it runs when the lease runs out");
                    return;
                }
            }
        }
        let input = TaskInput { event: h.event, upstream: None };
        run_task(&inner, Claimed { task: h.task, fence }, Some(input)).await;
        drop(slot);
        slot_freed(&inner);
    });
}

/// Claims as many queued tasks as there are free slots, and starts them.
async fn claim(inner: &Arc<Inner>, slots: &Arc<Semaphore>, running: &mut JoinSet<()>) {
    loop {
        let free = slots.available_permits();
        if free == 0 {
            return;
        }
        let lanes = [Lane::Stream.as_str(), Lane::Flex.as_str()];
        let lease_ms = millis(inner.opts.lease);
        let claimed =
            match inner.store.claim(&lanes, &inner.owner, now_ms(), lease_ms, free as i64).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim tasks");
                    return;
                }
            };
        // Fewer than asked for: nothing ready is left waiting in the store.
        inner.backlog.store(claimed.len() >= free, Ordering::Release);
        if claimed.is_empty() {
            return;
        }
        // Their events in one read, not one each as they start: a backlog drains faster.
        let ids: Vec<&str> = claimed.iter().map(|c| c.task.id.as_str()).collect();
        let mut inputs = inner.store.task_inputs(&ids).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the claimed tasks' events; each reads its own");
            HashMap::new()
        });
        for c in claimed {
            let inner = inner.clone();
            let input = inputs.remove(&c.task.id);
            match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    running.spawn(async move {
                        run_task(&inner, c, input).await;
                        drop(slot);
                        slot_freed(&inner);
                    });
                }
                // Ingest took the slot meanwhile: wait for one, then make sure the lease is
                // still ours before calling (the wait may have outlasted it).
                Err(_) => {
                    let slots = slots.clone();
                    running.spawn(async move {
                        let Ok(slot) = slots.acquire_owned().await else { return };
                        let renewed = inner
                            .store
                            .heartbeat(&c.task.id, c.fence, now_ms(), millis(inner.opts.lease))
                            .await;
                        if matches!(renewed, Ok(Ok(()))) {
                            run_task(&inner, c, input).await;
                        }
                        drop(slot);
                        slot_freed(&inner);
                    });
                }
            }
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn report_headroom(inner: &Inner) {
    for w in &inner.config.workloads {
        let p = inner.config.provider(w);
        let Some(client) = inner.clients.get(&p.name) else { continue };
        let h = client.limiter().headroom(&w.model);
        let dims = [
            ("requests", h.requests),
            ("input_tokens", h.input_tokens),
            ("output_tokens", h.output_tokens),
        ];
        for (dimension, value) in dims {
            if let Some(v) = value {
                metrics::gauge!(m::LIMITER_HEADROOM, "provider" => p.name.clone(), "model" => w.model.clone(), "dimension" => dimension)
                    .set(v);
            }
        }
    }
}

/// What became of one attempt.
enum Outcome {
    Done(Box<ChatResponse>, Option<i64>),
    Failed(ProviderError),
    /// The task cannot run at all (its workload is gone, its template does not render).
    Broken(String),
    /// The store could not be read to prepare the call: nothing was called, and the task runs
    /// again when its lease expires, not failed for a passing outage.
    StoreDown(String),
    /// The lease was lost before the call was made, or during a call that then failed:
    /// whether the provider may bill that call.
    LeaseLost {
        billed: bool,
    },
}

/// What a task's call and its lease keeper share.
#[derive(Debug, Default)]
struct CallShared {
    /// The lease was lost: relay nothing more, send no new attempt.
    lost: AtomicBool,
    /// Attempts of the call the provider may bill that were retried inside it.
    billed_retries: AtomicU32,
}

/// What became of the most a call could cost, reserved under the hard cap before it was made.
enum Spent {
    /// The ledger shows it now.
    Recorded,
    /// The provider may bill it but the ledger will not show it: it counts until the day ends.
    Unrecorded,
    /// No call was billed.
    Nothing,
}

/// `input` is the task's event when ingest handed it over or its claim read it; otherwise it
/// is read from the store.
async fn run_task(inner: &Arc<Inner>, c: Claimed, input: Option<TaskInput>) {
    let task = c.task;
    let fence = c.fence;
    let labels = [("lane", task.lane.clone()), ("workload", task.workload.clone())];
    metrics::counter!(m::TASKS_STARTED, &labels).increment(1);
    let started = now_ms();
    match inner.budget.check(&task).await {
        Ok(crate::budget::Verdict::Go) => {}
        Ok(verdict) => {
            return budget_stop(inner, &task, fence, started, Run::NONE, verdict).await;
        }
        Err(e) => tracing::warn!(error = %e, "cannot read today's spend; running the task"),
    }
    let run = inner.hub.start(&task.id);

    // Counts against the hard cap until the call's ledger line is written (after `settle`).
    let mut reservation = None;
    let shared = CallShared::default();
    let outcome = match prepare(inner, &task, input).await {
        Err(Unready::Broken(reason)) => Outcome::Broken(reason),
        Err(Unready::Store(reason)) => Outcome::StoreDown(reason),
        Ok((client, req)) => {
            let admitted = tokio::select! {
                a = admit(inner, &task.workload, &req) => Some(a),
                () = keep_lease(inner, &task.id, fence) => None,
            };
            match admitted {
                None => Outcome::LeaseLost { billed: false },
                Some(Admit::Hold(reason)) => {
                    let verdict = crate::budget::Verdict::Hold { reason };
                    return budget_stop(inner, &task, fence, started, run, verdict).await;
                }
                Some(Admit::Store(reason)) => Outcome::StoreDown(reason),
                Some(Admit::Never(reason)) => Outcome::Broken(reason),
                Some(Admit::Go(r)) => {
                    reservation = Some(r);
                    let call = call(inner, &task, run, &client, &req, started, &shared);
                    tokio::pin!(call);
                    tokio::select! {
                        outcome = &mut call => outcome,
                        () = keep_lease(inner, &task.id, fence) => {
                            // Another worker runs the task now: its watchers follow that run.
                            // This call is not dropped: it is paid for, so it runs to its end,
                            // and an answer is written (the stale fence makes it a superseded
                            // attempt and its ledger line).
                            shared.lost.store(true, Ordering::Relaxed);
                            inner.hub.end(
                                &task.id,
                                run,
                                Update::Stopped("another worker took the task over".into()),
                            );
                            match call.await {
                                Outcome::Failed(e) => {
                                    Outcome::LeaseLost { billed: e.may_be_billed() }
                                }
                                done => done,
                            }
                        }
                    }
                }
            }
        }
    };
    // A failed call the provider may bill is recorded before its task is put back or failed,
    // so that a crash in between cannot lose it. Stored, it counts under the hard cap on every
    // instance and after a restart, and the report shows it.
    // Retried attempts of the call that may be billed are recorded too (only without a hard
    // cap: under one, such an attempt is not retried inside its reservation).
    let billed_failure = match &outcome {
        Outcome::Failed(e) => e.may_be_billed(),
        Outcome::LeaseLost { billed } => *billed,
        _ => false,
    };
    let mut maybe_recorded = false;
    if let Some(r) = reservation.as_ref().filter(|r| r.worst() > 0) {
        let worst = i64::try_from(r.worst()).unwrap_or(i64::MAX);
        let record = async || match inner.store.record_maybe_spent(&task.id, now_ms(), worst).await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "cannot record what a failed call may cost; this process counts it until the day ends");
                false
            }
        };
        for _ in 0..shared.billed_retries.load(Ordering::Relaxed) {
            record().await;
        }
        maybe_recorded = billed_failure && record().await;
    }
    let spent = settle(inner, &task, fence, started, run, outcome).await;
    let Some(r) = reservation else { return };
    match spent {
        Spent::Recorded => drop(r),
        Spent::Nothing => r.release(),
        Spent::Unrecorded if maybe_recorded => drop(r),
        Spent::Unrecorded => r.unrecorded(),
    }
}

enum Admit {
    Go(crate::budget::Reservation),
    Hold(String),
    Never(String),
    Store(String),
}

/// Waits until the most the call can cost fits under the hard cap beside what is spent and
/// committed, while this instance's calls in flight may free room; holds it when none will.
async fn admit(inner: &Inner, workload: &str, req: &ChatRequest) -> Admit {
    // Flex calls reserve at the standard price too: a refused one falls back to stream.
    let worst = inner
        .config
        .workload(workload)
        .map_or(0.0, |w| w.price.most(req.most_input_tokens(), u64::from(req.max_tokens)));
    loop {
        match inner.budget.reserve(worst).await {
            Ok(Room::Go(r)) => return Admit::Go(r),
            Ok(Room::Wait) => inner.budget.freed(Duration::from_secs(1)).await,
            Ok(Room::Never(reason)) => return Admit::Never(reason),
            Ok(Room::Hold(reason)) => {
                metrics::counter!(crate::budget::HELD, "workload" => workload.to_owned())
                    .increment(1);
                return Admit::Hold(reason);
            }
            // Under a hard cap no call is made blind.
            Err(e) => return Admit::Store(format!("cannot read today's spend: {e}")),
        }
    }
}

/// A budget cap stops a task before its call: to a cheaper lane, or held.
async fn budget_stop(
    inner: &Inner,
    task: &TaskRecord,
    fence: i64,
    started: i64,
    run: Run,
    verdict: crate::budget::Verdict,
) {
    let reason = match &verdict {
        crate::budget::Verdict::Demote { reason, .. } | crate::budget::Verdict::Hold { reason } => {
            reason.clone()
        }
        crate::budget::Verdict::Go => return,
    };
    let attempt = AttemptRecord {
        id: format!("att_{}", uuid::Uuid::now_v7().simple()),
        lane: task.lane.clone(),
        batch_id: None,
        started_at: started,
        ended_at: Some(now_ms()),
        outcome: "budget".to_owned(),
        error: Some(reason.clone()),
        provider_request_id: None,
    };
    let r = match verdict {
        crate::budget::Verdict::Demote { lane, .. } => {
            let why = format!("{}; {reason}", task.reason);
            inner.store.reroute(&task.id, fence, lane.as_str(), &why, now_ms(), &attempt).await
        }
        _ => inner.store.hold(&task.id, fence, &reason, now_ms()).await,
    };
    // Its watchers wait for a start that will not come here: they read the store now.
    inner.hub.end(&task.id, run, Update::Stopped(reason));
    if let Err(e) = r {
        tracing::error!(task = %task.id, error = %e, "cannot store a budget decision; the task runs again when its lease expires");
    }
}

/// Why a task's call could not be prepared.
enum Unready {
    /// For good: the task fails with this reason.
    Broken(String),
    /// The store could not be read just now.
    Store(String),
}

/// The provider request of a task: its workload's templates rendered over the event and, for an
/// `after` task, the upstream output.
async fn prepare(
    inner: &Inner,
    task: &TaskRecord,
    input: Option<TaskInput>,
) -> Result<(Client, ChatRequest), Unready> {
    let config = &inner.config;
    let w = config.workload(&task.workload).ok_or_else(|| {
        Unready::Broken(format!("workload {:?} is no longer in the config", task.workload))
    })?;
    let provider = config.provider(w);
    let client =
        inner.clients.get(&provider.name).cloned().ok_or_else(|| {
            Unready::Broken(format!("no client for provider {:?}", provider.name))
        })?;
    let input = match input {
        Some(input) => Some(input),
        None => inner.store.task_input(task).await.map_err(|e| match e {
            // A row that cannot be read will not read better next time.
            StoreError::Corrupt { .. } => {
                Unready::Broken(format!("cannot read the task's event: {e}"))
            }
            _ => Unready::Store(format!("cannot read the task's event: {e}")),
        })?,
    };
    let headers = &inner.opts.extra_headers;
    let req = render_with(config, &task.workload, &task.lane, &task.id, input.as_ref(), headers)
        .map_err(Unready::Broken)?;
    Ok((client, req))
}

/// The provider request of a task: its workload's templates rendered over its input (the event
/// and, for an `after` task, the upstream output), read beforehand: the executor and the batch
/// assembler read many tasks' inputs in one query, and tell a store error from a task that
/// cannot render.
pub fn render_with(
    config: &Config,
    workload: &str,
    lane: &str,
    task_id: &str,
    input: Option<&TaskInput>,
    headers: &[(String, String)],
) -> Result<ChatRequest, String> {
    let w = config
        .workload(workload)
        .ok_or_else(|| format!("workload {workload:?} is no longer in the config"))?;
    let input = input.ok_or_else(|| "the task's event or upstream result is missing".to_owned())?;
    let payload: serde_json::Value = serde_json::from_str(input.event.payload.get())
        .map_err(|e| format!("stored payload: {e}"))?;
    let received = crate::rfc3339(input.event.received_at);
    let upstream_json;
    let after = match &input.upstream {
        None => None,
        Some((workload, output)) => {
            let upstream_is_json =
                config.workload(workload).is_some_and(|u| u.output == OutputFormat::Json);
            upstream_json = if upstream_is_json {
                serde_json::from_str::<serde_json::Value>(output).ok()
            } else {
                None
            };
            Some(AfterInfo { workload, output, json: upstream_json.as_ref() })
        }
    };
    let ctx = RenderContext {
        payload: &payload,
        event: EventInfo {
            id: &input.event.id,
            event_type: &input.event.event_type,
            received_at: &received,
        },
        after,
    };
    let prompt = config
        .prompts
        .render(&w.prompt_template(), &ctx)
        .map_err(|e| format!("the prompt does not render: {e}"))?;
    let system = match w.system_template() {
        Some(name) => Some(
            config
                .prompts
                .render(&name, &ctx)
                .map_err(|e| format!("the system prompt does not render: {e}"))?,
        ),
        None => None,
    };
    Ok(request(w, lane, system, prompt, task_id, headers))
}

fn request(
    w: &Workload,
    lane: &str,
    system: Option<String>,
    prompt: String,
    task_id: &str,
    headers: &[(String, String)],
) -> ChatRequest {
    ChatRequest {
        model: w.model.clone(),
        system,
        messages: vec![Message::user(prompt)],
        max_tokens: w.max_tokens,
        temperature: w.temperature,
        json_output: w.output == OutputFormat::Json,
        tier: if lane == Lane::Flex.as_str() { Tier::Flex } else { Tier::Standard },
        request_tag: Some(task_id.to_owned()),
        extra_headers: headers.to_vec(),
    }
}

async fn call(
    inner: &Inner,
    task: &TaskRecord,
    run: Run,
    client: &Client,
    req: &ChatRequest,
    started: i64,
    shared: &CallShared,
) -> Outcome {
    let mut first_token: Option<i64> = None;
    let hub = &inner.hub;
    let id = task.id.as_str();
    let relay = |delta: &str| {
        if first_token.is_none() {
            first_token = Some(now_ms() - started);
        }
        hub.delta(id, run, delta);
    };
    // Once the lease is lost, no new attempt goes out: the task is another worker's. A retried
    // attempt the provider may bill is counted (the last one, if it fails, is the outcome's).
    let go_on = |before: Option<&ProviderError>| {
        let go = !shared.lost.load(Ordering::Relaxed);
        if go && before.is_some_and(ProviderError::may_be_billed) {
            shared.billed_retries.fetch_add(1, Ordering::Relaxed);
        }
        go
    };
    let result = client.call_streaming_while(req, &inner.opts.retry, relay, go_on).await;
    match result {
        Ok(r) => Outcome::Done(Box::new(r), first_token),
        Err(e) => Outcome::Failed(e),
    }
}

/// Stores a result through the group writer.
async fn complete(
    inner: &Inner,
    task_id: &str,
    fence: i64,
    completion: Completion,
) -> Result<Result<Completed, LeaseLost>, StoreError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let c =
        Completing { task_id: task_id.to_owned(), fence, completion: completion.clone(), reply };
    if inner.completing_tx.send(c).is_ok()
        && let Ok(written) = answer.await
    {
        return written;
    }
    // The group writer is gone (the executor stopped): store the result on its own.
    inner.store.complete(task_id, fence, &completion).await
}

/// [`complete`] for a call that was made and paid for: a store error is not the end of it. The
/// write is tried again with backoff while the lease is kept alive, for up to twice the lease
/// (so a passing outage does not hand the task to another worker, which would pay for it
/// again); the fence makes a repeated write harmless. A lease lost meanwhile does not stop the
/// write: it then records the call as paid for and superseded.
async fn complete_durably(
    inner: &Inner,
    task_id: &str,
    fence: i64,
    completion: Completion,
) -> Result<Result<Completed, LeaseLost>, StoreError> {
    let give_up = Instant::now() + (inner.opts.lease * 2).max(Duration::from_secs(10));
    let retries = async {
        let mut pause = Duration::from_millis(100);
        loop {
            match complete(inner, task_id, fence, completion.clone()).await {
                Err(e) if Instant::now() + pause < give_up => {
                    tracing::warn!(task = task_id, error = %e, retry_in = ?pause, "cannot store a paid result yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                written => return written,
            }
        }
    };
    tokio::pin!(retries);
    tokio::select! {
        written = &mut retries => return written,
        () = keep_lease(inner, task_id, fence) => {}
    }
    retries.await
}

/// The wait before a task's next attempt, back in the queue: longer than the in-call retries,
/// a uniform draw up to 2 s doubling with each attempt to at most 64 s (full jitter, so that
/// tasks failed together by one 529 do not come back together), and never less than what the
/// provider asked for in `retry-after`.
fn requeue_delay(
    attempts: i64,
    retry_after: Option<Duration>,
    rng: &mut impl rand::Rng,
) -> Duration {
    let ceiling = Duration::from_secs(1 << attempts.clamp(1, 6));
    let jitter = Duration::from_secs_f64(rng.random_range(0.0..=ceiling.as_secs_f64()));
    retry_after.map_or(jitter, |asked| asked.max(jitter))
}

/// Renews the lease every third of its length; returns only when it is lost.
async fn keep_lease(inner: &Inner, task_id: &str, fence: i64) {
    let every = inner.opts.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match inner.store.heartbeat(task_id, fence, now_ms(), millis(inner.opts.lease)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            // The store is unreachable: keep calling; the result write will tell.
            Err(e) => tracing::warn!(error = %e, task = task_id, "cannot renew a lease"),
        }
    }
}

/// Stores what became of a task's run and ends its live stream; says whether its call is in the
/// ledger now.
async fn settle(
    inner: &Inner,
    task: &TaskRecord,
    fence: i64,
    started: i64,
    run: Run,
    outcome: Outcome,
) -> Spent {
    let labels = [("lane", task.lane.clone()), ("workload", task.workload.clone())];
    let attempt =
        |outcome: &str, error: Option<String>, request_id: Option<String>| AttemptRecord {
            id: format!("att_{}", uuid::Uuid::now_v7().simple()),
            lane: task.lane.clone(),
            batch_id: None,
            started_at: started,
            ended_at: Some(now_ms()),
            outcome: outcome.to_owned(),
            error,
            provider_request_id: request_id,
        };
    let store = &inner.store;
    let (written, update, spent) = match outcome {
        // Told to the watchers here, unless the call's run told them already.
        Outcome::LeaseLost { billed } => {
            metrics::counter!(m::LEASES_LOST).increment(1);
            inner.hub.end(
                &task.id,
                run,
                Update::Stopped("another worker took the task over".into()),
            );
            return if billed { Spent::Unrecorded } else { Spent::Nothing };
        }
        Outcome::Done(resp, first_token) => {
            let completion = completion_for(
                &inner.config,
                &task.workload,
                &task.lane,
                &resp,
                started,
                first_token,
            );
            let cost = completion.ledger.cost_nanousd;
            let result = completion.result();
            let r = complete_durably(inner, &task.id, fence, completion).await;
            // Told to the watchers only once stored; otherwise they hear what went wrong (below).
            let mut update = Update::Stopped(String::new());
            if let Ok(Ok(stored)) = &r {
                update = Update::Finished(Arc::new(Finished {
                    workload: task.workload.clone(),
                    lane: task.lane.clone(),
                    result,
                    cost_nanousd: stored.cost_nanousd,
                }));
                metrics::counter!(m::TASKS_FINISHED, &labels).increment(1);
                m::spent(&task.lane, &task.workload, cost);
                if let Some(t) = first_token {
                    metrics::histogram!(m::TIME_TO_FIRST_TOKEN, &labels).record(t as f64 / 1000.0);
                }
                // A task is created when its event is received: no read of the event needed.
                metrics::histogram!(m::TASK_LATENCY, &labels)
                    .record((now_ms() - task.created_at) as f64 / 1000.0);
                // Tasks that ran after this one are queued now; some may be streamed.
                if has_followers(&inner.config, &task.workload) {
                    inner.wake.notify_one();
                }
            }
            // A paid result that cannot be stored is not in the ledger either; one whose task
            // another worker took over is, as superseded.
            let spent = if r.is_ok() { Spent::Recorded } else { Spent::Unrecorded };
            if matches!(r, Ok(Err(_))) {
                m::spent(&task.lane, &task.workload, cost);
            }
            (r.map(|stored| stored.map(drop)), update, spent)
        }
        Outcome::StoreDown(reason) => {
            metrics::counter!(m::TASK_RETRIES, "cause" => "store").increment(1);
            tracing::warn!(task = %task.id, error = %reason, "cannot prepare a task's call; it runs again when its lease expires");
            (Ok(Ok(())), Update::Stopped(format!("{reason}; it runs again")), Spent::Nothing)
        }
        Outcome::Broken(reason) => {
            metrics::counter!(
                m::TASKS_FAILED,
                &[&labels[..], &[("cause", "broken".to_owned())]].concat()
            )
            .increment(1);
            let r =
                store.fail(&task.id, fence, &attempt("failed", Some(reason.clone()), None)).await;
            (r, Update::Stopped(reason), Spent::Nothing)
        }
        Outcome::Failed(e) => {
            let spent = if e.may_be_billed() { Spent::Unrecorded } else { Spent::Nothing };
            let request_id = e.request_id.clone();
            let class = e.class();
            let message = e.to_string();
            let now = now_ms();
            inner.hub.reset(&task.id, run);
            let (r, update) = match class {
                ErrorClass::FlexUnavailable => {
                    let w = inner.config.workload(&task.workload);
                    let room = w.map_or(Duration::ZERO, |w| {
                        let t = inner.config.policy_input(w, Duration::ZERO).timing;
                        t.flex_p99 + t.stream_p99 + t.margin
                    });
                    metrics::counter!(m::TASK_RETRIES, "cause" => "flex_unavailable").increment(1);
                    if now + millis(room) < task.deadline {
                        let wait = requeue_delay(task.attempts, e.retry_after, &mut rand::rng());
                        let r = store
                            .requeue(
                                &task.id,
                                fence,
                                now + millis(wait),
                                &attempt("flex_unavailable", Some(message), request_id),
                            )
                            .await;
                        (r, Update::Stopped("flex refused; trying again shortly".into()))
                    } else {
                        let reason = format!(
                            "{}; flex was refused and too little time was left to wait for it, so it fell back to stream",
                            task.reason
                        );
                        let r = store
                            .reroute(
                                &task.id,
                                fence,
                                Lane::Stream.as_str(),
                                &reason,
                                now,
                                &attempt("flex_unavailable", Some(message), request_id),
                            )
                            .await;
                        (r, Update::Stopped("flex refused; falling back to stream".into()))
                    }
                }
                ErrorClass::Retryable { cause } if task.attempts < inner.opts.max_attempts => {
                    let label = format!("{cause:?}").to_lowercase();
                    metrics::counter!(m::TASK_RETRIES, "cause" => label).increment(1);
                    let backoff = requeue_delay(task.attempts, e.retry_after, &mut rand::rng());
                    let status = format!("attempt failed ({message}); retrying later");
                    let r = store
                        .requeue(
                            &task.id,
                            fence,
                            now + millis(backoff),
                            &attempt("retry", Some(message), request_id),
                        )
                        .await;
                    (r, Update::Stopped(status))
                }
                _ => {
                    let cause = class.label().to_owned();
                    metrics::counter!(
                        m::TASKS_FAILED,
                        &[&labels[..], &[("cause", cause)]].concat()
                    )
                    .increment(1);
                    let r = store
                        .fail(
                            &task.id,
                            fence,
                            &attempt("failed", Some(message.clone()), request_id),
                        )
                        .await;
                    (r, Update::Stopped(message))
                }
            };
            (r, update, spent)
        }
    };
    // Every outcome ends the task's live stream, after its write, so that a watcher that then
    // reads the store sees the task as it now is; when the write failed, the watchers are told
    // so rather than left on a stream that will not end.
    let update = match &written {
        Ok(Ok(())) => update,
        Ok(Err(_)) => Update::Stopped("another worker took the task over".into()),
        Err(_) => Update::Stopped("its outcome could not be stored yet; it runs again".into()),
    };
    inner.hub.end(&task.id, run, update);
    match written {
        Ok(Ok(())) => {}
        Ok(Err(lost)) => {
            metrics::counter!(m::LEASES_LOST).increment(1);
            tracing::warn!(task = %task.id, fence = lost.fence, "another worker took this task over; this run's outcome was not kept (a paid call is in the ledger)");
        }
        Err(e) => {
            tracing::error!(task = %task.id, error = %e, "cannot store the outcome of a task; it runs again when its lease expires")
        }
    }
    spent
}

/// A task's result, its ledger line at its lane's price (flex and batch at theirs), and its
/// deliveries.
pub fn completion_for(
    config: &Config,
    workload: &str,
    lane: &str,
    resp: &ChatResponse,
    started: i64,
    first_token: Option<i64>,
) -> Completion {
    let w = config.workload(workload);
    let tokens = resp.usage.tokens();
    // A workload removed from the config while its batch ran still paid for its lines: priced
    // by the model that answered, not recorded as free (the caps and the report count it).
    let price = w.map(|w| w.price.clone()).or_else(|| {
        use sluice_core::price::{PriceFamily, builtin};
        let p = builtin(PriceFamily::Anthropic, &resp.model)
            .or_else(|| builtin(PriceFamily::OpenAi, &resp.model));
        if p.is_none() {
            tracing::warn!(workload, model = %resp.model, "no price for a result of a workload no longer in the config; recorded at $0");
        }
        p
    });
    let (cost, stream_cost) = match price {
        Some(price) => {
            let standard = price.standard_cost(tokens);
            let paid = match lane {
                "flex" => price.flex_cost(tokens).unwrap_or(standard),
                "batch" => price.batch_cost(tokens),
                _ => standard,
            };
            (paid, standard)
        }
        None => (0.0, 0.0),
    };
    let nano = |usd: f64| (usd * 1e9).round() as i64;
    let now = now_ms();
    let provider = w.map(|w| config.provider(w).name.clone()).unwrap_or_default();
    let deliveries = w
        .map(|w| match &w.deliver {
            Deliver::None => Vec::new(),
            Deliver::Stdout => vec!["stdout".to_owned()],
            Deliver::File { path } => vec![format!("file:{path}")],
            Deliver::Webhook { url, .. } => vec![format!("webhook:{url}")],
        })
        .unwrap_or_default()
        .into_iter()
        .map(|sink| NewDelivery { id: format!("dlv_{}", uuid::Uuid::now_v7().simple()), sink })
        .collect();
    let i64_of = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Completion {
        attempt_id: format!("att_{}", uuid::Uuid::now_v7().simple()),
        started_at: started,
        finished_at: now,
        provider_request_id: resp.provider_request_id.clone(),
        // PostgreSQL's text cannot hold NUL: a result that cannot be stored would be paid for
        // again and again. A model has no reason to write one; it is replaced, visibly.
        output: if resp.text.contains('\0') {
            resp.text.replace('\0', "\u{FFFD}")
        } else {
            resp.text.clone()
        },
        stop_reason: resp.stop_reason.as_str().to_owned(),
        input_tokens: i64_of(resp.usage.input_tokens),
        cached_input_tokens: i64_of(resp.usage.cached_input_tokens),
        output_tokens: i64_of(resp.usage.output_tokens),
        first_token_ms: first_token,
        ledger: LedgerEntry {
            id: format!("led_{}", uuid::Uuid::now_v7().simple()),
            workload: workload.to_owned(),
            provider,
            model: resp.model.clone(),
            lane: lane.to_owned(),
            input_tokens: i64_of(resp.usage.input_tokens),
            cached_input_tokens: i64_of(resp.usage.cached_input_tokens),
            output_tokens: i64_of(resp.usage.output_tokens),
            cost_nanousd: nano(cost),
            stream_cost_nanousd: nano(stream_cost),
            created_at: now,
        },
        deliveries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;
    use sluice_providers::{StopReason, Usage};

    #[test]
    fn a_task_waits_a_jittered_backoff_and_at_least_the_retry_after() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut draws = |attempts, retry_after| {
            (0..200).map(|_| requeue_delay(attempts, retry_after, &mut rng)).collect::<Vec<_>>()
        };
        // Spread over [0, 2^attempts s], capped at 64 s: tasks failed together part ways.
        for (attempts, cap) in [(1, 2), (3, 8), (6, 64), (40, 64)] {
            let waits = draws(attempts, None);
            assert!(waits.iter().all(|w| *w <= Duration::from_secs(cap)), "{attempts}");
            let (lo, hi) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
            assert!(*hi - *lo > Duration::from_secs(cap) / 2, "{attempts}: {lo:?}..{hi:?}");
        }
        // The provider's retry-after is a floor.
        let asked = Duration::from_secs(30);
        assert!(draws(1, Some(asked)).iter().all(|w| *w == asked));
        assert!(draws(6, Some(asked)).iter().all(|w| *w >= asked));
    }

    #[test]
    fn call_slots_are_what_the_providers_take_together() {
        let config = |providers: &str| {
            Config::parse(
                &format!(
                    r#"{providers}
[[workloads]]
name = "triage"
on = "ticket.created"
provider = "anthropic"
model = "claude-haiku-5-5"
max_tokens = 60
prompt = "{{{{ payload.x }}}}"
lane = "stream"

[[workloads]]
name = "reply"
on = "ticket.created"
provider = "openai"
model = "gpt-5-mini"
max_tokens = 60
prompt = "{{{{ payload.x }}}}"
lane = "stream"
"#
                ),
                "unit.toml",
            )
            .expect("config")
        };
        let both = config(
            "[providers.anthropic]\nkind = \"anthropic\"\nmax_concurrency = 64\n\
             [providers.openai]\nkind = \"openai\"\nmax_concurrency = 500\n",
        );
        assert_eq!(ExecutorOptions::for_config(&both).max_in_flight, 564);
        let unlimited = config(
            "[providers.anthropic]\nkind = \"anthropic\"\nmax_concurrency = 64\n\
             [providers.openai]\nkind = \"openai\"\n",
        );
        assert_eq!(ExecutorOptions::for_config(&unlimited).max_in_flight, 64 + CALLS_PER_PROVIDER);
        let unused = config(
            "[providers.anthropic]\nkind = \"anthropic\"\nmax_concurrency = 64\n\
             [providers.openai]\nkind = \"openai\"\nmax_concurrency = 500\n\
             [providers.spare]\nkind = \"openai\"\n",
        );
        assert_eq!(ExecutorOptions::for_config(&unused).max_in_flight, 564, "no slots for spare");
    }

    #[test]
    fn a_result_of_a_workload_gone_from_the_config_is_priced_by_its_model() {
        let config = crate::test_support::batch_config();
        let resp = ChatResponse {
            text: "late line".into(),
            stop_reason: StopReason::EndTurn,
            usage: Usage { input_tokens: 1_000_000, output_tokens: 0, ..Usage::default() },
            model: "gpt-5-mini-2025-08-07".into(),
            provider_request_id: None,
            rate_limit: None,
        };
        let c = completion_for(&config, "retired", "batch", &resp, now_ms(), None);
        let price =
            sluice_core::price::builtin(sluice_core::price::PriceFamily::OpenAi, "gpt-5-mini")
                .expect("a built-in price");
        assert!(c.ledger.cost_nanousd > 0);
        assert_eq!(c.ledger.cost_nanousd, (price.input * 0.5 * 1e9).round() as i64);
        assert_eq!(c.ledger.stream_cost_nanousd, (price.input * 1e9).round() as i64);
    }

    #[test]
    fn a_result_is_priced_in_its_lane_and_storable_on_postgres() {
        let config = crate::test_support::batch_config();
        let resp = ChatResponse {
            text: "before\0after".into(),
            stop_reason: StopReason::EndTurn,
            usage: Usage {
                input_tokens: 1_000,
                cached_input_tokens: 0,
                cache_write_tokens: 0,
                output_tokens: 100,
                estimated: false,
            },
            model: "gpt-5-mini".into(),
            provider_request_id: None,
            rate_limit: None,
        };
        let batch = completion_for(&config, "cleanup", "batch", &resp, 0, None);
        let stream = completion_for(&config, "cleanup", "stream", &resp, 0, None);
        // PostgreSQL's text refuses NUL: a result it could not store would be paid for again.
        assert_eq!(batch.output, "before\u{FFFD}after");
        assert_eq!(batch.ledger.lane, "batch");
        assert_eq!(batch.ledger.stream_cost_nanousd, stream.ledger.cost_nanousd);
        assert!(batch.ledger.cost_nanousd < stream.ledger.cost_nanousd, "the batch price is lower");
    }
}
