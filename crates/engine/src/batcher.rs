//! The batch path: assembler, submitter, poller and deadline guard, in one loop.
//!
//! Each tick:
//! 1. **Follow open batches** (also after a restart, from the store): a batch still `submitting`
//!    (recorded, provider id unknown: a crash or a lost create answer) is reconciled — found by its
//!    id (OpenAI metadata) or by time and size (Anthropic) — and submitted again only if the
//!    provider has no such batch. A `submitted` one is polled with backoff; when it ends, every line
//!    is matched to its task by `custom_id` (the task id) and stored at the batch price; retryable
//!    errors and expired lines go back to the queue (or to stream when the deadline no longer
//!    allows a batch); permanent errors fail the task with the reason.
//! 2. **Guard deadlines**: a task whose batch is still running when its deadline draws near
//!    (`deadline − stream p99 − margin`) is escalated to stream with the reason; its batch result,
//!    if it comes, is kept in the ledger but not as the result. A batch whose tasks were all
//!    escalated is cancelled.
//! 3. **Cut new batches** per provider and model: at max items or bytes (never over the provider's
//!    limits), when the oldest item has waited `max_age`, or when the earliest deadline demands it
//!    (`deadline − turnaround p95 − stream p99 − margin`). With off-peak windows, only a deadline
//!    cuts a batch outside them. Every batch is recorded with its tasks before it is sent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::Config;
use sluice_providers::batch::{
    BatchError, BatchHandle, BatchItem, BatchOutcome, ReconcileProbe, SLUICE_BATCH_ID,
};
use sluice_providers::{ChatRequest, Client, RetryPolicy};
use sluice_store::{
    AttemptRecord, BatchMember, BatchRecord, Lease, QueueSummary, Store, TaskInput, TaskState,
};
use tokio::sync::{Notify, watch};

use crate::executor::{SetupError, build_clients, completion_for, render_with};
use crate::now_ms;

pub const BATCHES_SUBMITTED: &str = "sluice_batches_submitted_total";
pub const BATCHES_ENDED: &str = "sluice_batches_ended_total";
pub const BATCH_TURNAROUND: &str = "sluice_batch_turnaround_seconds";
pub const ESCALATIONS: &str = "sluice_escalations_total";

#[derive(Debug, Clone)]
pub struct BatcherOptions {
    pub tick: Duration,
    /// First and longest wait between two polls of one batch.
    pub poll_min: Duration,
    pub poll_max: Duration,
    pub retry: RetryPolicy,
    /// Added to batch creates (tests use it to ask the simulator for faults).
    pub extra_headers: Vec<(String, String)>,
    /// How long a batch being submitted is this instance's alone without a renewal (renewed
    /// every quarter of it while the provider call runs). After a crash mid-submit, the batch is
    /// reconciled once this has run out.
    pub submit_lease: Duration,
}

impl Default for BatcherOptions {
    fn default() -> Self {
        BatcherOptions {
            tick: Duration::from_millis(500),
            poll_min: Duration::from_secs(1),
            poll_max: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            extra_headers: Vec::new(),
            submit_lease: Duration::from_secs(20),
        }
    }
}

#[derive(Debug)]
pub struct Batcher {
    store: Store,
    config: Arc<Config>,
    clients: HashMap<String, Client>,
    opts: BatcherOptions,
    /// When each open batch is next polled, and the wait after that.
    polls: HashMap<String, (Instant, Duration)>,
    /// Rung when escalated or released tasks may be waiting for the stream executor.
    wake: Option<Arc<Notify>>,
    turnarounds: crate::Turnarounds,
    budget: crate::budget::Budget,
    /// This instance, as the holder of submit leases.
    owner: String,
}

impl Batcher {
    pub fn new(
        store: Store,
        config: Arc<Config>,
        env: impl Fn(&str) -> Option<String>,
        wake: Option<Arc<Notify>>,
        opts: BatcherOptions,
    ) -> Result<Batcher, SetupError> {
        let clients = build_clients(&config, env)?;
        let turnarounds = crate::Turnarounds::default();
        let budget = crate::budget::Budget::new(config.clone(), store.clone());
        Ok(Batcher {
            store,
            config,
            clients,
            opts,
            polls: HashMap::new(),
            wake,
            turnarounds,
            budget,
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple()),
        })
    }

    /// Counts its batches against `budget` (the executor's, in one process) instead of a
    /// budget of its own.
    pub fn with_budget(mut self, budget: crate::budget::Budget) -> Batcher {
        self.budget = budget;
        self
    }

    /// What this batcher learns of turnaround, to share with ingest.
    pub fn turnarounds(&self) -> crate::Turnarounds {
        self.turnarounds.clone()
    }

    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // What the batches of earlier runs took.
        match self.store.batches(500).await {
            Ok(batches) => {
                for b in batches.iter().rev() {
                    if let (Some(s), Some(e), "ended") =
                        (b.submitted_at, b.ended_at, b.state.as_str())
                    {
                        self.turnarounds.observe(
                            &b.provider,
                            Duration::from_millis(u64::try_from(e - s).unwrap_or(0)),
                        );
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read past batches; starting from the prior turnaround")
            }
        }
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.tick().await {
                tracing::error!(error = %e, "batch tick failed; trying again next tick");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.opts.tick) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One pass: follow open batches, guard deadlines, cut new batches.
    pub async fn tick(&mut self) -> Result<(), sluice_store::StoreError> {
        let open = self.store.open_batches().await?;
        // A batch another instance closed (several share one PostgreSQL store) is never polled
        // here again: its schedule goes with it.
        let ids: HashSet<&str> = open.iter().map(|b| b.id.as_str()).collect();
        self.polls.retain(|id, _| ids.contains(id.as_str()));
        for b in open {
            if b.state == "submitting" {
                // Held by another instance: it is sending this batch now.
                if self.store.take_batch_submit(&b.id, &self.submit_lease(), now_ms()).await? {
                    self.reconcile(&b).await?;
                }
            } else if self.due(&b.id) {
                self.poll(&b).await?;
            }
        }
        self.assemble().await
    }

    fn due(&mut self, id: &str) -> bool {
        let (at, _) =
            *self.polls.entry(id.to_owned()).or_insert((Instant::now(), self.opts.poll_min));
        Instant::now() >= at
    }

    fn later(&mut self, id: &str) {
        let max = self.opts.poll_max;
        let e = self.polls.entry(id.to_owned()).or_insert((Instant::now(), self.opts.poll_min));
        *e = (Instant::now() + e.1, (e.1 * 2).min(max));
    }

    /// A batch line's request: the task's templates over its input (no extra headers: a
    /// batch line carries none).
    fn render(
        &self,
        workload: &str,
        lane: &str,
        task_id: &str,
        input: Option<&TaskInput>,
    ) -> Result<ChatRequest, String> {
        render_with(&self.config, workload, lane, task_id, input, &[])
    }

    fn submit_lease(&self) -> Lease {
        Lease {
            owner: self.owner.clone(),
            expires_at: now_ms().saturating_add(millis(self.opts.submit_lease)),
        }
    }

    /// Runs `work` (a call to the provider about batch `id`, still `submitting`) while renewing
    /// this instance's submit lease on it, so that no other instance takes the batch for dead
    /// and sends it again while this one's call is on its way.
    async fn holding<T>(&self, id: &str, work: impl Future<Output = T>) -> T {
        // Resolves never: `work` ends the select.
        let renew = async {
            loop {
                tokio::time::sleep(self.opts.submit_lease / 4).await;
                match self.store.take_batch_submit(id, &self.submit_lease(), now_ms()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(batch = %id, "the submit lease of a batch ran out during its create call (the store was out of reach for longer than the lease); another instance may have reconciled it");
                        break;
                    }
                    // Tried again at the next renewal; the lease has room for a few misses.
                    Err(e) => {
                        tracing::warn!(batch = %id, error = %e, "cannot renew a batch's submit lease")
                    }
                }
            }
            std::future::pending::<T>().await
        };
        tokio::pin!(work);
        tokio::select! {
            biased;
            out = &mut work => out,
            out = renew => out,
        }
    }

    fn client(&self, provider: &str) -> Option<&Client> {
        self.clients.get(provider)
    }

    /// Room a task needs, before its deadline, to still be streamed if its batch is late.
    fn stream_room(&self, workload: &str) -> (Duration, Duration) {
        match self.config.workload(workload) {
            Some(w) => {
                let mut input = self.config.policy_input(w, Duration::ZERO);
                self.turnarounds.apply(&self.config.provider(w).name, &mut input);
                let t = input.timing;
                (t.stream_p99 + t.margin, t.batch_turnaround_p95)
            }
            None => (Duration::from_secs(60), Duration::from_secs(7200)),
        }
    }

    async fn assemble(&mut self) -> Result<(), sluice_store::StoreError> {
        // Under a hard cap, the most the batches cut here may cost together: queued batch work
        // beyond it waits for billed results to show what open batches really cost, or for
        // the next day.
        let mut room = self.budget.batch_room().await?;
        if room.is_some_and(|r| r <= 0.0) {
            return Ok(());
        }
        let now = now_ms();
        // The triggers need only counts, ages and deadlines per workload: one grouped read, not
        // the whole queue on every tick.
        let summary = self.store.batch_queue_summary(now).await?;
        let mut groups: BTreeMap<(String, String), Vec<&QueueSummary>> = BTreeMap::new();
        for q in &summary {
            let Some(w) = self.config.workload(&q.workload) else { continue };
            let key = (self.config.provider(w).name.clone(), w.model.clone());
            groups.entry(key).or_default().push(q);
        }
        let settings = self.config.batch.clone();
        let local = chrono::Utc::now().with_timezone(&self.config.timezone).time();
        let in_window =
            settings.off_peak.is_empty() || settings.off_peak.iter().any(|w| w.contains(local));
        let open = if groups.is_empty() { Vec::new() } else { self.store.open_batches().await? };
        for ((provider, model), queued) in groups {
            let Some(client) = self.client(&provider).cloned() else { continue };
            // The provider's queue of batch work per model: what running batches hold counts
            // against it (their input, estimated as a quarter of their encoded bytes).
            let quota = self
                .config
                .providers
                .iter()
                .find(|p| p.name == provider)
                .and_then(|p| p.batch_enqueued_tokens);
            let enqueued: u64 = open
                .iter()
                .filter(|b| b.provider == provider && b.model == model)
                .map(|b| u64::try_from(b.bytes).unwrap_or(0) / 4)
                .sum();
            let limits = client.batch_limits();
            let max_items = (settings.max_items as usize).min(limits.max_items).max(1);
            let max_bytes = (settings.max_bytes as usize).min(limits.max_bytes);
            let oldest = queued.iter().map(|q| q.oldest_created_at).min().unwrap_or(now);
            let count: usize = queued.iter().map(|q| usize::try_from(q.count).unwrap_or(0)).sum();
            // The room a task needs depends only on its workload.
            let forced = queued.iter().any(|q| {
                let (room, p95) = self.stream_room(&q.workload);
                q.earliest_deadline - millis(room + p95) <= now
            });
            let full = count >= max_items;
            let aged = oldest + millis(settings.max_age) <= now;
            if !(forced || (in_window && (full || aged))) {
                continue;
            }
            let why = if forced {
                "deadline"
            } else if full {
                "items"
            } else {
                "age"
            };
            let workloads: Vec<String> = queued.iter().map(|q| q.workload.clone()).collect();
            let take = i64::try_from(max_items).unwrap_or(i64::MAX);
            let tasks = self.store.batch_queue_take(&workloads, now, take).await?;
            let mut items = Vec::new();
            let mut ids = Vec::new();
            let mut bytes = 0usize;
            let mut cut_by_bytes = false;
            let mut reserved = 0.0;
            for (t, input) in &tasks {
                if items.len() >= max_items {
                    break;
                }
                let request = match self.render(&t.workload, &t.lane, &t.id, input.as_ref()) {
                    Ok(r) => r,
                    // Its template no longer fits its payload (the config changed since it was
                    // accepted) or its event is gone: no later tick renders it either, and a
                    // task left queued would hold its job open for ever.
                    Err(reason) => {
                        tracing::warn!(task = %t.id, error = %reason, "cannot render a batch task; it fails");
                        let why = format!("cannot build its request: {reason}");
                        let a = attempt(None, "failed", Some(why));
                        self.store.fail_unclaimed(&t.id, &a).await?;
                        continue;
                    }
                };
                let item = BatchItem { custom_id: t.id.clone(), request };
                let line = client.batch_line_bytes(&item);
                if bytes + line > max_bytes && !items.is_empty() {
                    cut_by_bytes = true;
                    break;
                }
                if quota.is_some_and(|q| enqueued + ((bytes + line) / 4) as u64 > q) {
                    // Paced: the rest waits for running batches to end, rather than be refused.
                    break;
                }
                let worst = self.config.workload(&t.workload).map_or(0.0, |w| {
                    let most = item.request.most_input_tokens();
                    w.price.most(most, u64::from(w.max_tokens)) * w.price.batch_multiplier
                });
                if room.is_some_and(|r| reserved + worst > r) {
                    // Smaller lines after it may still fit; it waits for room (or, near its
                    // deadline, goes to the stream lane, which holds or fails it).
                    tracing::debug!(room = ?room, task = %t.id, "the hard daily cap leaves no room for this batch line");
                    continue;
                }
                reserved += worst;
                bytes += line;
                ids.push(t.id.clone());
                items.push(item);
            }
            drop(tasks);
            if items.is_empty() {
                continue;
            }
            let why = if cut_by_bytes { "bytes" } else { why };
            let record = BatchRecord {
                id: format!("bat_{}", uuid::Uuid::now_v7().simple()),
                provider: provider.clone(),
                model,
                state: "submitting".into(),
                provider_batch_id: None,
                item_count: i64::try_from(items.len()).unwrap_or(i64::MAX),
                bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
                created_at: now,
                submitted_at: None,
                ended_at: None,
                last_error: None,
                // Rounded up: never less than the worst case.
                reserved_nanousd: (reserved * 1e9).ceil() as i64,
            };
            // Checked again with the executor's calls of this moment, under the same lock.
            let Some(hold) = self.budget.reserve_batch(reserved) else { continue };
            if !self.store.record_batch(&record, &ids, &self.submit_lease()).await? {
                hold.release();
                continue;
            }
            // Counted until a read of the store shows the batch.
            drop(hold);
            room = room.map(|r| r - reserved);
            tracing::info!(batch = %record.id, provider = %provider, items = items.len(), bytes, trigger = why, "batch cut");
            self.submit(&client, &record, &items).await?;
        }
        Ok(())
    }

    async fn submit(
        &mut self,
        client: &Client,
        b: &BatchRecord,
        items: &[BatchItem],
    ) -> Result<(), sluice_store::StoreError> {
        let metadata = BTreeMap::from([(SLUICE_BATCH_ID.to_owned(), b.id.clone())]);
        let create = client.submit_batch_with_headers(
            items,
            &metadata,
            &self.opts.extra_headers,
            &self.opts.retry,
        );
        match self.holding(&b.id, create).await {
            Ok(handle) => {
                if self.store.batch_submitted(&b.id, &handle.provider_batch_id, now_ms()).await? {
                    metrics::counter!(BATCHES_SUBMITTED, "provider" => b.provider.clone())
                        .increment(1);
                } else {
                    // Another instance took this batch for lost (this one's submit lease ran
                    // out) and sent it first: this copy would run every line a second time.
                    tracing::error!(batch = %b.id, provider_batch = %handle.provider_batch_id, "the batch was sent twice; cancelling the second copy");
                    if let Err(e) = client.cancel_batch(&handle, &self.opts.retry).await {
                        tracing::error!(batch = %b.id, provider_batch = %handle.provider_batch_id, error = %e, "cannot cancel the second copy of a batch");
                    }
                }
            }
            // Maybe created: reconciled on the next tick, never sent again blind.
            Err(BatchError::OutcomeUnknown(e)) => {
                tracing::warn!(batch = %b.id, error = %e, "batch create outcome unknown")
            }
            Err(e) => {
                let retry = e.is_retryable();
                let message = e.to_string();
                self.store.finish_batch(&b.id, "failed", now_ms(), Some(&message)).await?;
                let (state, after) = if retry {
                    (TaskState::Queued, now_ms() + 30_000)
                } else {
                    (TaskState::Failed, 0)
                };
                for item in items {
                    let a = attempt(Some(&b.id), "batch_refused", Some(message.clone()));
                    self.store
                        .unbatch(&item.custom_id, &b.id, state, "batch", after, None, &a)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn reconcile(&mut self, b: &BatchRecord) -> Result<(), sluice_store::StoreError> {
        let Some(client) = self.client(&b.provider).cloned() else { return Ok(()) };
        let known: Vec<String> = self
            .store
            .batches(1000)
            .await?
            .into_iter()
            .filter_map(|b| b.provider_batch_id)
            .collect();
        let probe = ReconcileProbe {
            sluice_batch_id: &b.id,
            item_count: usize::try_from(b.item_count).unwrap_or(0),
            submitted_after: chrono::DateTime::from_timestamp_millis(b.created_at)
                .unwrap_or_default(),
            known_ids: &known,
        };
        match self.holding(&b.id, client.find_submitted(&probe, &self.opts.retry)).await {
            Ok(found) if found.len() == 1 => {
                tracing::info!(batch = %b.id, provider_batch = %found[0].handle.provider_batch_id, "reconciled a batch whose create answer was lost");
                self.store
                    .batch_submitted(&b.id, &found[0].handle.provider_batch_id, now_ms())
                    .await?;
            }
            Ok(found) if found.is_empty() => {
                // Never created: send it now, with the same tasks.
                let Some((_, tasks)) = self.store.batch(&b.id).await? else { return Ok(()) };
                let mut items = Vec::new();
                for t in tasks.iter().filter(|t| t.state == TaskState::Batched) {
                    // A store error ends the tick (the batch is reconciled at the next); a task
                    // that no longer renders (its workload gone from the config) fails, rather
                    // than stay in a batch that will never run it.
                    let input = self.store.task_input(t).await?;
                    match self.render(&t.workload, &t.lane, &t.id, input.as_ref()) {
                        Ok(request) => items.push(BatchItem { custom_id: t.id.clone(), request }),
                        Err(reason) => {
                            let a = attempt(Some(&b.id), "failed", Some(reason));
                            self.store
                                .unbatch(&t.id, &b.id, TaskState::Failed, &t.lane, 0, None, &a)
                                .await?;
                        }
                    }
                }
                if items.is_empty() {
                    self.store
                        .finish_batch(&b.id, "ended", now_ms(), Some("no task left to submit"))
                        .await?;
                } else {
                    self.submit(&client, b, &items).await?;
                }
            }
            Ok(found) => {
                tracing::warn!(batch = %b.id, candidates = found.len(), "several provider batches could be this one; waiting for their results to tell")
            }
            Err(e) => tracing::warn!(batch = %b.id, error = %e, "cannot reconcile a batch yet"),
        }
        Ok(())
    }

    async fn poll(&mut self, b: &BatchRecord) -> Result<(), sluice_store::StoreError> {
        let (Some(client), Some(provider_id)) =
            (self.client(&b.provider).cloned(), b.provider_batch_id.clone())
        else {
            return Ok(());
        };
        let handle = BatchHandle::new(client.kind(), provider_id);
        let status = match client.batch_status(&handle, &self.opts.retry).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(batch = %b.id, error = %e, "cannot poll a batch; trying again later");
                // Deadlines do not wait for the provider's status page: tasks due soon go to
                // the stream lane all the same.
                self.guard(&client, &handle, b, false).await?;
                self.later(&b.id);
                return Ok(());
            }
        };
        if !status.state.is_terminal() {
            let cancelling = status.state == sluice_providers::batch::BatchState::Cancelling;
            self.guard(&client, &handle, b, cancelling).await?;
            self.later(&b.id);
            return Ok(());
        }
        // Its tasks are read once, when it has ended, not on every poll.
        let tasks = self.store.batch_members(&b.id).await?;
        let results = match client.batch_results(&handle, &self.opts.retry).await {
            Ok(r) => r,
            // Ended without results to download (it failed or expired whole): asking again
            // will not bring them, so its tasks go back to the queue, or to the stream lane
            // when their deadline is near.
            Err(e) if !e.is_retryable() => {
                let why = format!("its batch's results cannot be had ({e})");
                tracing::warn!(batch = %b.id, error = %e, "a batch ended without results; its tasks are queued again");
                for t in tasks.iter().filter(|t| t.state == TaskState::Batched) {
                    self.requeue_or_escalate(t, &b.id, &why).await?;
                }
                self.store.finish_batch(&b.id, "failed", now_ms(), Some(&e.to_string())).await?;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(batch = %b.id, error = %e, "cannot fetch a batch's results; trying again later");
                self.guard(&client, &handle, b, false).await?;
                self.later(&b.id);
                return Ok(());
            }
        };
        let now = now_ms();
        let by_id: HashMap<&str, &BatchOutcome> =
            results.iter().map(|r| (r.custom_id.as_str(), &r.outcome)).collect();
        // Billed at the batch price from submission, whatever became of the task meanwhile.
        let started = b.submitted_at.unwrap_or(b.created_at);
        let mut stored = Vec::new();
        for t in &tasks {
            let Some(outcome) = by_id.get(t.id.as_str()) else {
                if t.state == TaskState::Batched {
                    self.requeue_or_escalate(t, &b.id, "the batch returned no result for it")
                        .await?;
                }
                continue;
            };
            match outcome {
                BatchOutcome::Succeeded(resp) => {
                    stored.push((
                        t.id.clone(),
                        completion_for(&self.config, &t.workload, "batch", resp, started, None),
                    ));
                }
                BatchOutcome::Errored(e)
                    if e.class().is_retryable() && t.state == TaskState::Batched =>
                {
                    self.requeue_or_escalate(t, &b.id, &format!("its batch line failed: {e}"))
                        .await?;
                }
                BatchOutcome::Errored(e) if t.state == TaskState::Batched => {
                    let a = attempt(Some(&b.id), "failed", Some(e.to_string()));
                    self.store
                        .unbatch(&t.id, &b.id, TaskState::Failed, &t.lane, 0, None, &a)
                        .await?;
                }
                BatchOutcome::Expired | BatchOutcome::Cancelled
                    if t.state == TaskState::Batched =>
                {
                    self.requeue_or_escalate(t, &b.id, "its batch ended before it ran").await?;
                }
                _ => {}
            }
        }
        // A task escalated out of the batch (it is no longer a member) whose line ran before the
        // cancel reached the provider: billed all the same, so it goes in the ledger too.
        let members: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        for r in &results {
            let BatchOutcome::Succeeded(resp) = &r.outcome else { continue };
            if members.contains(r.custom_id.as_str()) {
                continue;
            }
            match self.store.task(&r.custom_id).await? {
                Some(d) => {
                    stored.push((
                        d.task.id.clone(),
                        completion_for(
                            &self.config,
                            &d.task.workload,
                            "batch",
                            resp,
                            started,
                            None,
                        ),
                    ));
                }
                None => tracing::warn!(batch = %b.id, custom_id = %r.custom_id,
                    "a batch line for a task sluice does not have; not recorded"),
            }
        }
        let released = !stored.is_empty();
        // Learned before its results are stored: whoever sees them finished may count on the
        // turnaround being in the next decisions.
        if let Some(at) = b.submitted_at {
            let took = Duration::from_millis(u64::try_from(now - at).unwrap_or(0));
            self.turnarounds.observe(&b.provider, took);
            metrics::histogram!(BATCH_TURNAROUND, "provider" => b.provider.clone())
                .record(took.as_secs_f64());
        }
        // A thousand lines a transaction: one fsync each, not one per task.
        for chunk in stored.chunks(1_000) {
            let lines = self.store.batch_lines(&b.id, chunk).await?;
            for ((_, c), line) in chunk.iter().zip(lines) {
                if line != sluice_store::BatchLine::AlreadyRecorded {
                    crate::metrics::spent("batch", &c.ledger.workload, c.ledger.cost_nanousd);
                }
            }
        }
        self.store.finish_batch(&b.id, "ended", now, None).await?;
        self.polls.remove(&b.id);
        metrics::counter!(BATCHES_ENDED, "provider" => b.provider.clone(), "state" => status.state.as_str()).increment(1);
        if released && let Some(w) = &self.wake {
            w.notify_one();
        }
        Ok(())
    }

    /// Back into a later batch if the deadline still allows one, else to stream.
    async fn requeue_or_escalate(
        &mut self,
        t: &BatchMember,
        batch_id: &str,
        why: &str,
    ) -> Result<(), sluice_store::StoreError> {
        let (room, p95) = self.stream_room(&t.workload);
        let now = now_ms();
        let a = attempt(Some(batch_id), "retry", Some(why.to_owned()));
        if now + millis(room + p95) < t.deadline {
            self.store.unbatch(&t.id, batch_id, TaskState::Queued, "batch", now, None, &a).await?;
        } else {
            let reason = format!(
                "escalated to stream: {why}, and the deadline no longer leaves time for another batch"
            );
            self.escalate(t, batch_id, &reason, &a).await?;
        }
        Ok(())
    }

    async fn escalate(
        &mut self,
        t: &BatchMember,
        batch_id: &str,
        reason: &str,
        a: &AttemptRecord,
    ) -> Result<bool, sluice_store::StoreError> {
        let moved = self
            .store
            .unbatch(&t.id, batch_id, TaskState::Queued, "stream", now_ms(), Some(reason), a)
            .await?;
        if moved {
            metrics::counter!(ESCALATIONS, "workload" => t.workload.clone()).increment(1);
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
        Ok(moved)
    }

    /// The deadline guard: escalates the tasks of a running batch whose deadline draws near, and
    /// cancels the batch once none of its tasks waits for it.
    async fn guard(
        &mut self,
        client: &Client,
        handle: &BatchHandle,
        b: &BatchRecord,
        cancelling: bool,
    ) -> Result<(), sluice_store::StoreError> {
        let now = now_ms();
        // Only tasks within the widest room of any workload can be due: the store returns those,
        // and the count of all that wait, without reading the whole batch on every poll.
        let widest = self
            .config
            .workloads
            .iter()
            .map(|w| millis(self.stream_room(&w.name).0))
            .max()
            .unwrap_or(0);
        let (waiting, near) =
            self.store.batch_waiting(&b.id, now.saturating_add(widest).saturating_add(1)).await?;
        let mut escalated = 0;
        for t in near.iter().map(BatchMember::of) {
            let (room, _) = self.stream_room(&t.workload);
            if now + millis(room) >= t.deadline {
                let reason = format!(
                    "escalated to stream: its batch ({}) was still running {}s before the deadline",
                    b.id,
                    (t.deadline - now).max(0) / 1000
                );
                let a = attempt(Some(&b.id), "escalated", Some(reason.clone()));
                if self.escalate(&t, &b.id, &reason, &a).await? {
                    escalated += 1;
                }
            }
        }
        // Whoever escalated them (this poll, an earlier one whose cancel failed, or another
        // instance following the same batch), no task waits for it: every line it still runs
        // would be paid for and thrown away. Asked again at each poll until the provider says
        // it is cancelling.
        if waiting == escalated && !cancelling {
            tracing::info!(batch = %b.id, "no task waits for the batch any more; cancelling it");
            if let Err(e) = client.cancel_batch(handle, &self.opts.retry).await {
                tracing::warn!(batch = %b.id, error = %e, "cannot cancel a batch");
            }
        }
        Ok(())
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn attempt(batch_id: Option<&str>, outcome: &str, error: Option<String>) -> AttemptRecord {
    let now = now_ms();
    AttemptRecord {
        id: format!("att_{}", uuid::Uuid::now_v7().simple()),
        lane: "batch".into(),
        batch_id: batch_id.map(str::to_owned),
        started_at: now,
        ended_at: Some(now),
        outcome: outcome.to_owned(),
        error,
        provider_request_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several instances on one PostgreSQL store all follow every open batch, and only the one
    /// that sees it end forgets it on its own; the others must not keep its schedule forever.
    #[tokio::test]
    async fn the_schedule_of_a_batch_closed_elsewhere_is_dropped() {
        let (_dir, store) = crate::test_support::store().await;
        let config = crate::test_support::batch_config();
        let env = |_: &str| Some("sk-test".to_owned());
        let mut batcher =
            Batcher::new(store.clone(), Arc::new(config), env, None, BatcherOptions::default())
                .expect("batcher");
        crate::test_support::open_batch(&store, "bat_open", 0).await;
        store.batch_submitted("bat_open", "batch_provider_1", now_ms()).await.expect("submitted");
        let hour = Duration::from_secs(3600);
        // Not due for an hour, so the tick does not call the provider.
        batcher.polls.insert("bat_open".into(), (Instant::now() + hour, hour));
        batcher.polls.insert("bat_closed_elsewhere".into(), (Instant::now(), hour));
        batcher.tick().await.expect("tick");
        let mut kept: Vec<&String> = batcher.polls.keys().collect();
        kept.sort();
        assert_eq!(kept, ["bat_open"]);
    }
}
