//! The two backends. Every statement is built from constants of this file (`AssertSqlSafe` marks
//! the few assembled with `format!`); values are always bound. Their SQL is the same text (sqlx's `$1` placeholders work on both) except
//! where the databases differ — claiming work — so the query functions are written once in a
//! macro and instantiated per backend.
//!
//! Every `LIMIT` of a bound value is written `LIMIT +$n`. SQLite plans a `LIMIT $n` for the value
//! bound when the statement was prepared, and so prepares it again each time `$n` is bound, even
//! to the same value: a profile of a backlog's drain had the claim parsed and planned anew for
//! every claim. Under a unary plus the limit is read when the statement runs, and the statement
//! is prepared once. PostgreSQL reads `+$n` as `$n`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Postgres, Sqlite};

use crate::migrations::{self, Migration};
use crate::settle;
use crate::writer::SqliteWriter;
use crate::{
    AttemptRecord, BatchLine, BatchMember, BatchRecord, Claimed, Completed, Completion,
    DeliveryOutcome, DeliveryQuery, DeliveryRecord, DueDelivery, EventRecord, HistoryRow, Ingested,
    JobProgress, KeyConflict, Lease, LeaseLost, LedgerPoint, MaybeSpent, NewEvent, ProgressRow,
    QueueSummary, Redelivery, ResultRecord, SqliteDurability, StoreError, TaskDetail, TaskInput,
    TaskQuery, TaskRecord, TaskState,
};

/// The store: SQLite or PostgreSQL. Cheap to clone (it is a connection pool).
#[derive(Debug, Clone)]
pub enum Store {
    /// The pool, and the connection that ingest writes with ([`SqliteWriter`]).
    Sqlite(Pool<Sqlite>, Arc<SqliteWriter>),
    Postgres(Pool<Postgres>),
}

/// The outcome of one ingest request: its events, or the key that conflicts.
pub type RequestOutcome = Result<Vec<Ingested>, KeyConflict>;

macro_rules! dispatch {
    ($self:ident, $f:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(pool, _) => sqlite::$f(pool, $($arg),*).await,
            Store::Postgres(pool) => postgres::$f(pool, $($arg),*).await,
        }
    };
}

impl Store {
    /// Opens `sqlite://PATH` (creating the file and its folder) or `postgres://…`, and applies
    /// pending migrations.
    pub async fn open(url: &str, durability: SqliteDurability) -> Result<Store, StoreError> {
        let store = if let Some(path) = url.strip_prefix("sqlite://") {
            let path = Path::new(path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
            }
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match durability {
                    SqliteDurability::Full => SqliteSynchronous::Full,
                    SqliteDurability::Normal => SqliteSynchronous::Normal,
                })
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                // Checkpoint every ~40 MB of WAL, not SQLite's 4 MB: a hot page (the queue's
                // index pages) is copied back once per checkpoint, so rarer checkpoints write far
                // less. Measured on the 100k batch benchmark: a sixth less CPU.
                .pragma("wal_autocheckpoint", "10000");
            let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
            sqlite::migrate(&pool, migrations::SQLITE).await?;
            let writer = SqliteWriter::open(path, durability)?;
            return Ok(Store::Sqlite(pool, Arc::new(writer)));
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new().max_connections(8).connect_with(options).await?;
            Store::Postgres(pool)
        } else {
            return Err(StoreError::BadUrl(crate::redact_url(url)));
        };
        store.migrate().await?;
        Ok(store)
    }

    /// A URL to a schema of its own in the PostgreSQL database at `base`, created on the spot: tests
    /// and benchmarks that share one database never see each other's rows. Schemas that earlier
    /// runs made more than a day ago are dropped: a test cannot drop its own when it ends.
    pub async fn isolated_postgres_url(base: &str) -> Result<String, StoreError> {
        use sqlx::Connection;
        let schema = format!("sluice_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(base).await?;
        let made: Vec<String> = sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'sluice\\_test\\_%'",
        )
        .fetch_all(&mut admin)
        .await?;
        let stale_before = now_ms() - 24 * 3_600_000;
        // A drop waits for the locks of a run still using the schema: not for long.
        sqlx::query("SET lock_timeout = '2s'").execute(&mut admin).await?;
        for old in made.iter().filter(|s| schema_made_at(s).is_some_and(|t| t < stale_before)) {
            // Best effort: another run may be dropping it too.
            let drop = format!("DROP SCHEMA IF EXISTS {old} CASCADE");
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await {
                tracing::debug!(schema = %old, error = %e, "cannot drop an old test schema");
            }
        }
        // The name is made here of hex digits only; it cannot be bound as a parameter.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await?;
        let sep = if base.contains('?') { '&' } else { '?' };
        Ok(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(..) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::migrate(pool, migrations::SQLITE).await,
            Store::Postgres(pool) => postgres::migrate(pool, migrations::POSTGRES).await,
        }
    }

    /// Stores a group of ingest requests in **one transaction** (one fsync), each request in its
    /// own savepoint so that a conflicting idempotency key undoes that request only. A request
    /// whose key was seen before with the same `request_hash` is a replay: nothing is written and
    /// the original event and tasks are returned.
    ///
    /// On SQLite the group is written by [`SqliteWriter`] on a blocking thread; a caller with a
    /// thread of its own calls the writer directly ([`Store::sqlite_writer`]) and saves the hop.
    pub async fn ingest(
        &self,
        requests: &[Vec<NewEvent>],
    ) -> Result<Vec<RequestOutcome>, StoreError> {
        match self {
            Store::Sqlite(_, writer) => {
                let (writer, requests) = (writer.clone(), requests.to_vec());
                tokio::task::spawn_blocking(move || writer.ingest(requests))
                    .await
                    .map_err(|e| StoreError::WriterStopped(e.to_string()))?
            }
            Store::Postgres(pool) => postgres::ingest(pool, requests).await,
        }
    }

    /// SQLite's ingest writer, for a thread that may block on it; `None` on PostgreSQL.
    pub fn sqlite_writer(&self) -> Option<Arc<SqliteWriter>> {
        match self {
            Store::Sqlite(_, writer) => Some(writer.clone()),
            Store::Postgres(_) => None,
        }
    }

    /// [`Store::ingest`]'s fallback when another instance stored one of the group's keys between
    /// its look-up and its insert: each request in its own savepoint. Slower; public so that both
    /// paths are held to the same tests.
    pub async fn ingest_one_by_one(
        &self,
        requests: &[Vec<NewEvent>],
    ) -> Result<Vec<RequestOutcome>, StoreError> {
        dispatch!(self, ingest_one_by_one(requests))
    }

    pub async fn event(
        &self,
        id: &str,
    ) -> Result<Option<(EventRecord, Vec<TaskRecord>)>, StoreError> {
        dispatch!(self, event(id))
    }

    pub async fn task(&self, id: &str) -> Result<Option<TaskDetail>, StoreError> {
        dispatch!(self, task(id))
    }

    /// A task's state and lane alone: one indexed read, for whoever only waits for it to change
    /// (a stream's watcher), where [`Store::task`] reads its result, attempts and cost too.
    pub async fn task_state(&self, id: &str) -> Result<Option<(TaskState, String)>, StoreError> {
        dispatch!(self, task_state(id))
    }

    pub async fn tasks(&self, query: &TaskQuery) -> Result<Vec<TaskRecord>, StoreError> {
        dispatch!(self, tasks(query))
    }

    /// Claims up to `limit` tasks of `lanes` (queued, or running under an expired lease), earliest
    /// deadline first. Each claim bumps the task's fencing token.
    pub async fn claim(
        &self,
        lanes: &[&str],
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        dispatch!(self, claim(lanes, owner, now, lease_ms, limit))
    }

    /// Extends a lease; fails with [`LeaseLost`] if the task was claimed again since.
    pub async fn heartbeat(
        &self,
        task_id: &str,
        fence: i64,
        now: i64,
        lease_ms: i64,
    ) -> Result<Result<(), LeaseLost>, StoreError> {
        dispatch!(self, heartbeat(task_id, fence, now, lease_ms))
    }

    /// Stores a task's result, its attempt, its ledger line and its deliveries, and releases the
    /// tasks that run `after` it — all in one transaction, and only if `fence` is still current.
    pub async fn complete(
        &self,
        task_id: &str,
        fence: i64,
        done: &Completion,
    ) -> Result<Result<Completed, LeaseLost>, StoreError> {
        let mut out = self.complete_many(&[(task_id, fence, done)]).await?;
        Ok(out.pop().unwrap_or(Err(LeaseLost { fence })))
    }

    /// [`Store::complete`] for several tasks in one transaction (one fsync): each is stored only
    /// if its fence is still current, and answered on its own.
    pub async fn complete_many(
        &self,
        done: &[(&str, i64, &Completion)],
    ) -> Result<Vec<Result<Completed, LeaseLost>>, StoreError> {
        match self {
            // Through the connection ingest writes with, on a blocking thread: a handful of
            // statements per result, each of which would be a round trip to sqlx's connection
            // thread, and no wait on SQLite's busy handler (which sleeps a millisecond and more
            // each time it finds ingest holding the write lock): the two take turns at its mutex.
            // The copy lets the thread own what it writes; it is small beside the commit.
            Store::Sqlite(_, writer) => {
                let writer = writer.clone();
                let owned: Vec<(String, i64, Completion)> = done
                    .iter()
                    .map(|(id, fence, c)| ((*id).to_owned(), *fence, (*c).clone()))
                    .collect();
                tokio::task::spawn_blocking(move || writer.complete_many(&owned))
                    .await
                    .map_err(|e| StoreError::WriterStopped(e.to_string()))?
            }
            Store::Postgres(pool) => postgres::complete_many(pool, done).await,
        }
    }

    /// Fails a task for good (and the tasks that run after it), recording the attempt.
    pub async fn fail(
        &self,
        task_id: &str,
        fence: i64,
        attempt: &AttemptRecord,
    ) -> Result<Result<(), LeaseLost>, StoreError> {
        dispatch!(self, fail(task_id, fence, attempt))
    }

    /// Fails a task no worker has claimed (still `queued`: one whose request cannot be built),
    /// and the tasks that run after it, recording the attempt. False if it is no longer queued.
    pub async fn fail_unclaimed(
        &self,
        task_id: &str,
        attempt: &AttemptRecord,
    ) -> Result<bool, StoreError> {
        dispatch!(self, fail_unclaimed(task_id, attempt))
    }

    /// Puts a claimed task back in its queue, to be claimed again no earlier than `run_after`.
    pub async fn requeue(
        &self,
        task_id: &str,
        fence: i64,
        run_after: i64,
        attempt: &AttemptRecord,
    ) -> Result<Result<(), LeaseLost>, StoreError> {
        dispatch!(self, requeue(task_id, fence, run_after, attempt))
    }

    /// Moves a claimed task to another lane (a refused flex call falling back to stream), with
    /// the reason, to be claimed again from `run_after`.
    pub async fn reroute(
        &self,
        task_id: &str,
        fence: i64,
        lane: &str,
        reason: &str,
        run_after: i64,
        attempt: &AttemptRecord,
    ) -> Result<Result<(), LeaseLost>, StoreError> {
        dispatch!(self, reroute(task_id, fence, lane, reason, run_after, attempt))
    }

    /// The event of a task and, if it runs after another, that task's workload and output;
    /// `None` while either is missing.
    pub async fn task_input(&self, task: &TaskRecord) -> Result<Option<TaskInput>, StoreError> {
        Ok(self.task_inputs(&[task.id.as_str()]).await?.remove(&task.id))
    }

    /// [`Store::task_input`] for several tasks in one read, by task id; a task whose input is
    /// not there is left out.
    pub async fn task_inputs(
        &self,
        task_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, TaskInput>, StoreError> {
        dispatch!(self, task_inputs(task_ids))
    }

    /// Claims deliveries that are due, each for `lease_ms` (a crashed deliverer's are retried).
    pub async fn claim_deliveries(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        dispatch!(self, claim_deliveries(now, lease_ms, limit))
    }

    /// Deliveries in id order (the order they were created in), filtered by state.
    pub async fn deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>, StoreError> {
        dispatch!(self, deliveries(q))
    }

    /// Puts a failed delivery back in the queue, due at `now`, its retry schedule started over
    /// (its attempts so far stay in its attempt log).
    pub async fn redeliver(&self, id: &str, now: i64) -> Result<Redelivery, StoreError> {
        dispatch!(self, redeliver(id, now))
    }

    /// Records a delivery attempt and its outcome. The outcome stands only while the claim it
    /// was made under does (the delivery still `sending`, its attempts unchanged): false when
    /// the claim ran out and another took the delivery over, whose outcome then stands; except
    /// that a delivered attempt marks any undelivered delivery delivered, since it was.
    pub async fn finish_delivery(
        &self,
        delivery: &DueDelivery,
        attempt_id: &str,
        started_at: i64,
        outcome: &DeliveryOutcome,
    ) -> Result<bool, StoreError> {
        dispatch!(self, finish_delivery(delivery, attempt_id, started_at, outcome))
    }

    /// A running batch as the deadline guard sees it: how many of its tasks still wait for it,
    /// and those of them whose deadline falls before `deadline_before`.
    pub async fn batch_waiting(
        &self,
        batch_id: &str,
        deadline_before: i64,
    ) -> Result<(i64, Vec<TaskRecord>), StoreError> {
        dispatch!(self, batch_waiting(batch_id, deadline_before))
    }

    /// Queued batch-lane tasks that may go into a batch now, per workload: how many, the oldest,
    /// the earliest deadline. One grouped read, however long the queue.
    pub async fn batch_queue_summary(&self, now: i64) -> Result<Vec<QueueSummary>, StoreError> {
        dispatch!(self, batch_queue_summary(now))
    }

    /// Up to `limit` queued batch-lane tasks of `workloads` that may go into a batch now, earliest
    /// deadline first, each with what its prompt is rendered from (`None` when its event or the
    /// result it follows is missing). One read for a whole batch.
    pub async fn batch_queue_take(
        &self,
        workloads: &[String],
        now: i64,
        limit: i64,
    ) -> Result<Vec<(BatchMember, Option<TaskInput>)>, StoreError> {
        if workloads.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, batch_queue_take(workloads, now, limit))
    }

    /// Records a batch as `submitting` and moves its tasks into it, before anything is sent:
    /// after a crash the batch is reconciled, never submitted blind. Returns false (and records
    /// nothing) if one of the tasks is no longer queued.
    /// The batch is recorded under `lease`: no other instance reconciles it while the lease lasts
    /// (see [`Store::take_batch_submit`]).
    pub async fn record_batch(
        &self,
        batch: &BatchRecord,
        task_ids: &[String],
        lease: &Lease,
    ) -> Result<bool, StoreError> {
        dispatch!(self, record_batch(batch, task_ids, lease))
    }

    /// Takes or renews the right to submit a `submitting` batch: granted when nobody holds it,
    /// when `lease.owner` already does, or when the holder's lease expired before `now`. False
    /// when another instance holds it (or the batch is no longer `submitting`): that instance is
    /// sending it, and sending it here as well would pay for every line twice.
    pub async fn take_batch_submit(
        &self,
        id: &str,
        lease: &Lease,
        now: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, take_batch_submit(id, lease, now))
    }

    /// Stores the provider's id of a recorded batch, as soon as it is known. False if the batch
    /// is no longer `submitting`: another provider batch was stored for it first (a sender that
    /// lost its submit lease and sent it too), and this one is not followed.
    pub async fn batch_submitted(
        &self,
        id: &str,
        provider_batch_id: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, batch_submitted(id, provider_batch_id, at))
    }

    /// Batches not yet ended (`submitting` or `submitted`), oldest first: what the poller follows,
    /// also after a restart.
    pub async fn open_batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        dispatch!(self, open_batches())
    }

    pub async fn batches(&self, limit: i64) -> Result<Vec<BatchRecord>, StoreError> {
        dispatch!(self, batches(limit))
    }

    pub async fn batch(
        &self,
        id: &str,
    ) -> Result<Option<(BatchRecord, Vec<TaskRecord>)>, StoreError> {
        dispatch!(self, batch(id))
    }

    /// The tasks of a batch as its poller needs them to route result lines: without the
    /// decisions, reasons and events a full read would carry.
    pub async fn batch_members(&self, batch_id: &str) -> Result<Vec<BatchMember>, StoreError> {
        dispatch!(self, batch_members(batch_id))
    }

    /// Marks a batch ended (or failed), with why.
    pub async fn finish_batch(
        &self,
        id: &str,
        state: &str,
        at: i64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        dispatch!(self, finish_batch(id, state, at, error))
    }

    /// Stores the results of a batch's lines in one transaction (one fsync for many lines). A
    /// line is the task's result if the task is still in that batch, or if the deadline guard
    /// escalated it out of the batch and its stream call has not started (the line is paid for
    /// and here: the task goes back to the batch lane, succeeded). If the stream call has
    /// started or ended, the line goes into the ledger only (it was paid for all the same).
    pub async fn batch_lines(
        &self,
        batch_id: &str,
        lines: &[(String, Completion)],
    ) -> Result<Vec<BatchLine>, StoreError> {
        dispatch!(self, batch_lines(batch_id, lines))
    }

    /// Takes a task out of its batch: back to the queue of `lane` from `run_after` (`state =
    /// queued`), or failed (`state = failed`, with the tasks that run after it), with the
    /// reason. False if it had left the batch.
    #[allow(clippy::too_many_arguments)]
    pub async fn unbatch(
        &self,
        task_id: &str,
        batch_id: &str,
        state: TaskState,
        lane: &str,
        run_after: i64,
        reason: Option<&str>,
        attempt: &AttemptRecord,
    ) -> Result<bool, StoreError> {
        dispatch!(self, unbatch(task_id, batch_id, state, lane, run_after, reason, attempt))
    }

    /// Nano-dollars spent since `since` (unix ms), by workload.
    pub async fn spend_since(&self, since: i64) -> Result<Vec<(String, i64)>, StoreError> {
        dispatch!(self, spend_since(since))
    }

    /// What the batches still open (`submitting`, `submitted`) may yet cost, in nano-dollars:
    /// the sum of their reservations.
    pub async fn reserved_by_open_batches(&self) -> Result<i64, StoreError> {
        dispatch!(self, reserved_by_open_batches())
    }

    /// Records the most a failed call the provider may bill could cost (it returned no usage, so
    /// no ledger line can say): the hard cap counts it until its day ends.
    pub async fn record_maybe_spent(
        &self,
        task_id: &str,
        at: i64,
        nanousd: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, record_maybe_spent(task_id, at, nanousd))
    }

    /// The calls of [`Store::record_maybe_spent`] since `since`, and what they may cost.
    pub async fn maybe_spent_since(&self, since: i64) -> Result<MaybeSpent, StoreError> {
        dispatch!(self, maybe_spent_since(since))
    }

    /// Holds a claimed task back (a budget cap), with the reason; [`Store::release_held`] puts it
    /// back in its queue.
    pub async fn hold(
        &self,
        task_id: &str,
        fence: i64,
        reason: &str,
        now: i64,
    ) -> Result<Result<(), LeaseLost>, StoreError> {
        dispatch!(self, hold(task_id, fence, reason, now))
    }

    /// Puts every held task back in its queue (the caps allow work again); returns how many.
    pub async fn release_held(&self, now: i64) -> Result<u64, StoreError> {
        dispatch!(self, release_held(now))
    }

    /// Every task created at or after `since` (unix ms) with its result, timings and cost, oldest
    /// first: what reports and `sluice run`'s results are made of.
    pub async fn history(&self, since: i64) -> Result<Vec<HistoryRow>, StoreError> {
        dispatch!(self, history(since))
    }

    /// Ledger entries recorded at or after `since`, oldest first.
    pub async fn ledger_since(&self, since: i64) -> Result<Vec<LedgerPoint>, StoreError> {
        dispatch!(self, ledger_since(since))
    }

    /// Tasks created at or after `since`, counted by workload, lane and state, whatever event
    /// they came from.
    pub async fn progress(&self, since: i64) -> Result<Vec<ProgressRow>, StoreError> {
        dispatch!(self, progress(since))
    }

    /// The tasks of these events, counted by workload, lane and state, and the batches they are
    /// in: the progress of one job in a store that other work may share (a `sluice serve` on the
    /// same file or database, with batches of its own).
    pub async fn progress_of(&self, event_ids: &[String]) -> Result<JobProgress, StoreError> {
        // A file may name one event twice (the same idempotency key): counted once, whichever
        // chunks the two would fall in.
        let ids: BTreeSet<&str> = event_ids.iter().map(String::as_str).collect();
        let ids: Vec<&str> = ids.into_iter().collect();
        let mut counts: BTreeMap<(String, String, String), i64> = BTreeMap::new();
        let mut batches: BTreeSet<String> = BTreeSet::new();
        for chunk in ids.chunks(500) {
            for (r, batch) in dispatch!(self, progress_of(chunk))? {
                *counts.entry((r.workload, r.lane, r.state)).or_default() += r.count;
                batches.extend(batch);
            }
        }
        Ok(JobProgress {
            rows: counts
                .into_iter()
                .map(|((workload, lane, state), count)| ProgressRow {
                    workload,
                    lane,
                    state,
                    count,
                })
                .collect(),
            batches: batches.len(),
        })
    }

    /// When the earliest of these events was received (unix ms); `None` if none is stored.
    pub async fn earliest_received(&self, ids: &[String]) -> Result<Option<i64>, StoreError> {
        let mut earliest: Option<i64> = None;
        for chunk in ids.chunks(500) {
            let found = dispatch!(self, earliest_received(chunk))?;
            earliest = match (earliest, found) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(earliest)
    }

    /// Tasks by state (for progress displays and benchmarks).
    pub async fn task_states(&self) -> Result<Vec<(String, i64)>, StoreError> {
        dispatch!(self, task_states())
    }

    /// Number of events and tasks stored (for health checks and tests).
    pub async fn counts(&self) -> Result<(i64, i64), StoreError> {
        dispatch!(self, counts())
    }
}

pub(crate) fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { table, detail: detail.to_string() }
}

/// Checks that stored text is JSON without building a tree of it.
pub(crate) fn json(
    table: &'static str,
    text: &str,
) -> Result<Box<serde_json::value::RawValue>, StoreError> {
    serde_json::value::RawValue::from_string(text.to_owned()).map_err(|e| corrupt(table, e))
}

/// A task's decision is in `decisions` since migration 5, in the task's own column before.
pub(crate) const TASK_COLUMNS: &str = "id, event_id, workload, lane, state, rule, reason, \
     COALESCE((SELECT body FROM decisions WHERE decisions.id = tasks.decision_id), decision) AS decision, deadline, priority, \
     after_task_id, attempts, lease_owner, lease_expires_at, fence, batch_id, last_error, created_at, updated_at";

// Reads name their columns rather than `SELECT *`: once a newer instance's migration adds a
// column under a running one, a `*` statement that one prepared before fails on PostgreSQL
// ("cached plan must not change result type") and, on SQLite, is re-prepared with more columns
// than sqlx planned for, which kills sqlx's worker thread.
const EVENT_COLUMNS: &str =
    "id, event_type, payload, idempotency_key, request_hash, needed_within_ms, source, received_at";
const DELIVERY_COLUMNS: &str = "id, task_id, sink, state, attempts, next_attempt_at, last_status, \
    last_error, created_at, updated_at";
const BATCH_COLUMNS: &str = "id, provider, model, state, provider_batch_id, item_count, bytes, \
    created_at, submitted_at, ended_at, last_error, reserved_nanousd";

/// The statements that store a finished call, shared by the sqlx queries and SQLite's writer
/// (`$N` placeholders are numbered in order of first use, so positional binding fits both).
pub(crate) const SETTLE_TASK: &str =
    "UPDATE tasks SET state = $1, run_after = $2, last_error = $3, updated_at = $4,
                  lease_owner = NULL, lease_expires_at = NULL
 WHERE id = $5 AND fence = $6 AND state = 'running'";
pub(crate) const INSERT_ATTEMPT: &str = "INSERT INTO attempts (id, task_id, lane, batch_id, fence, started_at, ended_at, outcome, error, provider_request_id)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
/// A ledger line is written once: a completion written again after an unanswered commit finds
/// it there.
pub(crate) const INSERT_LEDGER: &str = "INSERT INTO ledger (id, task_id, attempt_id, workload, provider, model, lane, input_tokens,
                     cached_input_tokens, output_tokens, cost_nanousd, stream_cost_nanousd, created_at)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (id) DO NOTHING";
/// The attempt of a finished call, written once, like its ledger line. A call whose task
/// another worker took over meanwhile was paid for all the same: its attempt (`superseded`)
/// and ledger line are kept, though not its result.
pub(crate) const INSERT_CALL_ATTEMPT: &str = "INSERT INTO attempts (id, task_id, lane, batch_id, fence, started_at, ended_at, outcome, error, provider_request_id)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING";
pub(crate) const SUPERSEDED: &str =
    "another worker took the task over during the call; this result was paid for but not kept";
pub(crate) const INSERT_RESULT: &str = "INSERT INTO results (task_id, attempt_id, output, stop_reason, input_tokens, cached_input_tokens,
                      output_tokens, first_token_ms, created_at)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub(crate) const INSERT_DELIVERY: &str =
    "INSERT INTO deliveries (id, task_id, sink, state, next_attempt_at, created_at, updated_at)
 VALUES ($1, $2, $3, 'pending', $4, $4, $4)";
/// The tasks that run after a finished one may run now.
pub(crate) const RELEASE_AFTER: &str = "UPDATE tasks SET state = 'queued', updated_at = $1 WHERE after_task_id = $2 AND state = 'pending'";
/// What a task has cost over all its ledger lines.
pub(crate) const TASK_COST: &str =
    "SELECT CAST(COALESCE(SUM(cost_nanousd), 0) AS BIGINT) FROM ledger WHERE task_id = $1";

macro_rules! queries {
    ($db:ty, $claim_sql:expr, $skip_locked:expr) => {
        use sqlx::{Connection, Row};

        type Conn = <$db as sqlx::Database>::Connection;
        type DbRow = <$db as sqlx::Database>::Row;

        fn task_from_row(row: &DbRow) -> Result<TaskRecord, StoreError> {
            let state: String = row.try_get("state")?;
            let decision: String = row.try_get("decision")?;
            Ok(TaskRecord {
                id: row.try_get("id")?,
                event_id: row.try_get("event_id")?,
                workload: row.try_get("workload")?,
                lane: row.try_get("lane")?,
                state: TaskState::parse(&state).ok_or_else(|| corrupt("tasks", format!("state {state:?}")))?,
                rule: row.try_get("rule")?,
                reason: row.try_get("reason")?,
                decision: json("tasks", &decision)?,
                deadline: row.try_get("deadline")?,
                priority: row.try_get("priority")?,
                after_task_id: row.try_get("after_task_id")?,
                attempts: row.try_get("attempts")?,
                lease_owner: row.try_get("lease_owner")?,
                lease_expires_at: row.try_get("lease_expires_at")?,
                fence: row.try_get("fence")?,
                batch_id: row.try_get("batch_id")?,
                last_error: row.try_get("last_error")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        fn event_from_row(row: &DbRow) -> Result<EventRecord, StoreError> {
            let payload: String = row.try_get("payload")?;
            Ok(EventRecord {
                id: row.try_get("id")?,
                event_type: row.try_get("event_type")?,
                payload: json("events", &payload)?,
                idempotency_key: row.try_get("idempotency_key")?,
                request_hash: row.try_get("request_hash")?,
                needed_within_ms: row.try_get("needed_within_ms")?,
                source: row.try_get("source")?,
                received_at: row.try_get("received_at")?,
            })
        }

        pub(super) async fn migrate(pool: &Pool<$db>, list: &[Migration]) -> Result<(), StoreError> {
            sqlx::raw_sql(migrations::CREATE_TABLE).execute(pool).await?;
            for m in list {
                let mut tx = begin_write(pool).await?;
                lock_migrations(&mut tx).await?;
                let done: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_optional(&mut *tx)
                    .await?;
                if done.is_some() {
                    continue;
                }
                let fail = |source| StoreError::Migration { version: m.version, source };
                sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(fail)?;
                sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                    .bind(m.version)
                    .bind(m.name)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await
                    .map_err(fail)?;
                tx.commit().await.map_err(fail)?;
                tracing::info!(version = m.version, name = m.name, "applied migration");
            }
            Ok(())
        }

        /// Rows per multi-row statement: well under both databases' bind-parameter limits.
        const CHUNK: usize = 500;


        /// A task's input from a row of [`INPUT_COLUMNS`]: `None` if its event is gone, or if it
        /// runs after a task whose result is not there.
        fn input_from_row(r: &DbRow) -> Result<Option<TaskInput>, StoreError> {
            let after_task_id: Option<String> = r.try_get("after_task_id")?;
            let payload: Option<String> = r.try_get("e_payload")?;
            let event = match payload {
                None => return Ok(None),
                Some(p) => EventRecord {
                    id: r.try_get("event_id")?,
                    event_type: r.try_get("e_type")?,
                    payload: json("events", &p)?,
                    idempotency_key: r.try_get("e_key")?,
                    request_hash: r.try_get("e_hash")?,
                    needed_within_ms: r.try_get("e_needed")?,
                    source: r.try_get("e_source")?,
                    received_at: r.try_get("e_received")?,
                },
            };
            let upstream: Option<(String, String)> =
                match (r.try_get::<Option<String>, _>("up_workload")?, r.try_get::<Option<String>, _>("up_output")?) {
                    (Some(w), Some(o)) => Some((w, o)),
                    _ => None,
                };
            Ok(match (after_task_id.is_some(), upstream) {
                (false, _) => Some(TaskInput { event, upstream: None }),
                (true, Some(up)) => Some(TaskInput { event, upstream: Some(up) }),
                (true, None) => None,
            })
        }

        /// Binds `ids` as a comma-separated list, then writes `close`.
        fn push_ids<'a>(q: &mut sqlx::QueryBuilder<$db>, ids: impl IntoIterator<Item = &'a String>, close: &str) {
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(id.clone());
            }
            list.push_unseparated(close);
        }

        /// The text `column` of every row the query returns.
        async fn text_set(mut q: sqlx::QueryBuilder<$db>, conn: &mut Conn, column: &str) -> Result<std::collections::HashSet<String>, StoreError> {
            let rows = q.build().fetch_all(&mut *conn).await?;
            Ok(rows.iter().map(|r| r.try_get(column)).collect::<Result<_, _>>()?)
        }

        /// Splits `items` into runs of at most `max_rows` rows and about `CHUNK_BYTES` bytes.
        fn chunks_by_size<T>(items: &[T], max_rows: usize, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
            let mut out = Vec::new();
            let (mut start, mut bytes) = (0, 0);
            for (i, item) in items.iter().enumerate() {
                let b = size(item);
                if i > start && (i - start >= max_rows || bytes + b > CHUNK_BYTES) {
                    out.push(&items[start..i]);
                    (start, bytes) = (i, 0);
                }
                bytes += b;
            }
            if start < items.len() {
                out.push(&items[start..]);
            }
            out
        }

        /// Returns how many rows were inserted (fewer than given when a key was taken meanwhile).
        async fn insert_events(conn: &mut Conn, events: &[&NewEvent]) -> Result<usize, StoreError> {
            let mut inserted = 0;
            for chunk in chunks_by_size(events, CHUNK / 8, |e| 200 + e.payload.get().len()) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO events (id, event_type, payload, idempotency_key, request_hash, needed_within_ms, source, received_at) ",
                );
                q.push_values(chunk, |mut row, ev| {
                    row.push_bind(ev.id.clone())
                        .push_bind(ev.event_type.clone())
                        .push_bind(ev.payload.get().to_owned())
                        .push_bind(ev.idempotency_key.clone())
                        .push_bind(ev.request_hash.clone())
                        .push_bind(ev.needed_within_ms)
                        .push_bind(ev.source.clone())
                        .push_bind(ev.received_at);
                });
                q.push(" ON CONFLICT (idempotency_key) DO NOTHING");
                inserted += q.build().execute(&mut *conn).await?.rows_affected() as usize;
            }
            Ok(inserted)
        }

        async fn insert_tasks(conn: &mut Conn, events: &[&NewEvent]) -> Result<(), StoreError> {
            let tasks: Vec<(&NewEvent, &crate::NewTask)> = events.iter().flat_map(|e| e.tasks.iter().map(move |t| (*e, t))).collect();
            let mut decisions: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
            for (_, t) in &tasks {
                decisions.entry(t.decision.get()).or_insert_with(|| crate::settle::decision_id(t.decision.get()));
            }
            let mut distinct: Vec<(&str, &String)> = decisions.iter().map(|(body, id)| (*body, id)).collect();
            // The same order in every transaction: two committers inserting the same new decisions
            // wait for each other instead of deadlocking.
            distinct.sort_unstable_by(|a, b| a.1.cmp(b.1));
            for chunk in chunks_by_size(&distinct, CHUNK / 2, |(body, _)| 50 + body.len()) {
                let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO decisions (id, body) ");
                q.push_values(chunk, |mut row, (body, id)| {
                    row.push_bind((*id).clone()).push_bind((*body).to_owned());
                });
                q.push(" ON CONFLICT (id) DO NOTHING");
                q.build().execute(&mut *conn).await?;
            }
            for chunk in chunks_by_size(&tasks, CHUNK / 17, |(_, t)| 200 + t.reason.len()) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO tasks (id, event_id, workload, lane, state, rule, reason, decision, decision_id, deadline, priority,
                                        after_task_id, created_at, updated_at, lease_owner, lease_expires_at, fence, attempts) ",
                );
                q.push_values(chunk, |mut row, (ev, t)| {
                    row.push_bind(t.id.clone())
                        .push_bind(ev.id.clone())
                        .push_bind(t.workload.clone())
                        .push_bind(t.lane.clone())
                        .push_bind(t.state.as_str())
                        .push_bind(t.rule.clone())
                        .push_bind(t.reason.clone())
                        .push_bind("")
                        .push_bind(decisions.get(t.decision.get()).cloned())
                        .push_bind(t.deadline)
                        .push_bind(t.priority)
                        .push_bind(t.after_task_id.clone())
                        .push_bind(ev.received_at)
                        .push_bind(ev.received_at)
                        .push_bind(t.lease.as_ref().map(|l| l.owner.clone()))
                        .push_bind(t.lease.as_ref().map(|l| l.expires_at))
                        .push_bind(i64::from(t.lease.is_some()))
                        .push_bind(i64::from(t.lease.is_some()));
                });
                q.build().execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// The careful path, for the rare race with another instance: each request in its own
        /// savepoint, so that a conflict undoes only that request.
        pub(super) async fn ingest_one_by_one(
            pool: &Pool<$db>,
            requests: &[Vec<NewEvent>],
        ) -> Result<Vec<RequestOutcome>, StoreError> {
            let mut tx = begin_write(pool).await?;
            let mut out = Vec::with_capacity(requests.len());
            for request in requests {
                let mut savepoint = tx.begin().await?;
                match ingest_request(&mut savepoint, request).await? {
                    Ok(done) => {
                        savepoint.commit().await?;
                        out.push(Ok(done));
                    }
                    Err(conflict) => {
                        savepoint.rollback().await?;
                        out.push(Err(conflict));
                    }
                }
            }
            tx.commit().await?;
            Ok(out)
        }

        async fn ingest_request(conn: &mut Conn, request: &[NewEvent]) -> Result<RequestOutcome, StoreError> {
            let mut done = Vec::with_capacity(request.len());
            for ev in request {
                if let Some(key) = &ev.idempotency_key {
                    if let Some(seen) = by_key(conn, key, ev).await? {
                        match seen {
                            Ok(replay) => {
                                done.push(replay);
                                continue;
                            }
                            Err(conflict) => return Ok(Err(conflict)),
                        }
                    }
                }
                if insert_events(conn, &[ev]).await? == 0 {
                    // Another instance stored the same key between our look-up and our insert.
                    let key = ev.idempotency_key.as_deref().unwrap_or_default();
                    match by_key(conn, key, ev).await? {
                        Some(Ok(replay)) => {
                            done.push(replay);
                            continue;
                        }
                        Some(Err(conflict)) => return Ok(Err(conflict)),
                        None => return Err(corrupt("events", "insert ignored but no row holds its key")),
                    }
                }
                insert_tasks(conn, &[ev]).await?;
                done.push(crate::settle::new_ingested(ev.clone()));
            }
            Ok(Ok(done))
        }

        /// The event already stored under `key`: a replay if the request matches, else a conflict.
        async fn by_key(
            conn: &mut Conn,
            key: &str,
            ev: &NewEvent,
        ) -> Result<Option<Result<Ingested, KeyConflict>>, StoreError> {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {EVENT_COLUMNS} FROM events WHERE idempotency_key = $1")))
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let event = event_from_row(&row)?;
            if event.request_hash != ev.request_hash {
                return Ok(Some(Err(KeyConflict { idempotency_key: key.to_owned(), existing_event_id: event.id })));
            }
            let tasks = tasks_of(conn, &event.id).await?;
            Ok(Some(Ok(Ingested { event, tasks, replayed: true })))
        }

        async fn tasks_of(conn: &mut Conn, event_id: &str) -> Result<Vec<TaskRecord>, StoreError> {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE event_id = $1 ORDER BY id")))
                .bind(event_id)
                .fetch_all(&mut *conn)
                .await?;
            rows.iter().map(task_from_row).collect()
        }

        pub(super) async fn event(
            pool: &Pool<$db>,
            id: &str,
        ) -> Result<Option<(EventRecord, Vec<TaskRecord>)>, StoreError> {
            let mut conn = pool.acquire().await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))).bind(id).fetch_optional(&mut *conn).await?;
            let Some(row) = row else { return Ok(None) };
            let event = event_from_row(&row)?;
            let tasks = tasks_of(&mut conn, id).await?;
            Ok(Some((event, tasks)))
        }

        pub(super) async fn task_state(pool: &Pool<$db>, id: &str) -> Result<Option<(TaskState, String)>, StoreError> {
            let row: Option<(String, String)> = sqlx::query_as("SELECT state, lane FROM tasks WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.map(|(state, lane)| {
                TaskState::parse(&state)
                    .map(|s| (s, lane))
                    .ok_or_else(|| corrupt("tasks", format!("state {state:?}")))
            })
            .transpose()
        }

        pub(super) async fn task(pool: &Pool<$db>, id: &str) -> Result<Option<TaskDetail>, StoreError> {
            let mut conn = pool.acquire().await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1")))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let task = task_from_row(&row)?;
            let result = sqlx::query("SELECT output, stop_reason, input_tokens, cached_input_tokens, output_tokens, first_token_ms, created_at FROM results WHERE task_id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .map(|r| -> Result<ResultRecord, StoreError> {
                    Ok(ResultRecord {
                        output: r.try_get("output")?,
                        stop_reason: r.try_get("stop_reason")?,
                        input_tokens: r.try_get("input_tokens")?,
                        cached_input_tokens: r.try_get("cached_input_tokens")?,
                        output_tokens: r.try_get("output_tokens")?,
                        first_token_ms: r.try_get("first_token_ms")?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .transpose()?;
            let attempt_log = sqlx::query("SELECT id, lane, batch_id, started_at, ended_at, outcome, error, provider_request_id FROM attempts WHERE task_id = $1 ORDER BY started_at, id")
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| -> Result<AttemptRecord, StoreError> {
                    Ok(AttemptRecord {
                        id: r.try_get("id")?,
                        lane: r.try_get("lane")?,
                        batch_id: r.try_get("batch_id")?,
                        started_at: r.try_get("started_at")?,
                        ended_at: r.try_get("ended_at")?,
                        outcome: r.try_get("outcome")?,
                        error: r.try_get("error")?,
                        provider_request_id: r.try_get("provider_request_id")?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let cost_nanousd: Option<i64> =
                sqlx::query_scalar(TASK_COST)
                    .bind(id)
                    .fetch_one(&mut *conn)
                    .await?;
            Ok(Some(TaskDetail { task, result, attempt_log, cost_nanousd: cost_nanousd.unwrap_or(0) }))
        }

        pub(super) async fn tasks(pool: &Pool<$db>, q: &TaskQuery) -> Result<Vec<TaskRecord>, StoreError> {
            let rows = tasks_query(q).build().fetch_all(pool).await?;
            rows.iter().map(task_from_row).collect()
        }

        /// Only the filters asked for: written `($1 IS NULL OR state = $1)`, a filter left out
        /// still kept either database from its index, and listing the failed tasks of a large
        /// store read every task in id order until it had a page.
        pub(super) fn tasks_query(q: &TaskQuery) -> sqlx::QueryBuilder<$db> {
            let mut b = sqlx::QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1"));
            if let Some(state) = q.state {
                b.push(" AND state = ").push_bind(state.as_str());
            }
            if let Some(workload) = &q.workload {
                b.push(" AND workload = ").push_bind(workload.clone());
            }
            if let Some(after) = &q.after_id {
                b.push(" AND id > ").push_bind(after.clone());
            }
            b.push(" ORDER BY id LIMIT +").push_bind(q.limit);
            b
        }

        pub(super) async fn claim(
            pool: &Pool<$db>,
            lanes: &[&str],
            owner: &str,
            now: i64,
            lease_ms: i64,
            limit: i64,
        ) -> Result<Vec<Claimed>, StoreError> {
            let (first, second) = match lanes {
                [a] => (*a, *a),
                [a, b, ..] => (*a, *b),
                [] => return Ok(Vec::new()),
            };
            // An idle executor polls often: a read first, so that finding nothing does not take
            // SQLite's write lock from ingest.
            let any = sqlx::query(
                "SELECT 1 FROM tasks WHERE lane IN ($1, $2) AND state IN ('queued', 'running') AND run_after <= $3
                   AND (state = 'queued' OR (state = 'running' AND lease_expires_at < $3)) LIMIT 1",
            )
            .bind(first)
            .bind(second)
            .bind(now)
            .fetch_optional(pool)
            .await?;
            if any.is_none() {
                return Ok(Vec::new());
            }
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{} RETURNING {TASK_COLUMNS}", $claim_sql)))
                .bind(owner)
                .bind(now + lease_ms)
                .bind(now)
                .bind(first)
                .bind(second)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let mut claimed = rows
                .iter()
                .map(|r| task_from_row(r).map(|task| Claimed { fence: task.fence, task }))
                .collect::<Result<Vec<_>, _>>()?;
            claimed.sort_by(|a, b| (a.task.deadline, &a.task.id).cmp(&(b.task.deadline, &b.task.id)));
            Ok(claimed)
        }

        pub(super) async fn heartbeat(
            pool: &Pool<$db>,
            task_id: &str,
            fence: i64,
            now: i64,
            lease_ms: i64,
        ) -> Result<Result<(), LeaseLost>, StoreError> {
            let r = sqlx::query(
                "UPDATE tasks SET lease_expires_at = $1, updated_at = $2
                 WHERE id = $3 AND fence = $4 AND state = 'running'",
            )
            .bind(now + lease_ms)
            .bind(now)
            .bind(task_id)
            .bind(fence)
            .execute(pool)
            .await?;
            Ok(if r.rows_affected() == 1 { Ok(()) } else { Err(LeaseLost { fence }) })
        }

        /// Moves a running task that `fence` still owns to `state`; false if the lease was lost.
        async fn settle(
            conn: &mut Conn,
            task_id: &str,
            fence: i64,
            state: TaskState,
            run_after: i64,
            error: Option<&str>,
            now: i64,
        ) -> Result<bool, StoreError> {
            let r = sqlx::query(SETTLE_TASK)
            .bind(state.as_str())
            .bind(run_after)
            .bind(error)
            .bind(now)
            .bind(task_id)
            .bind(fence)
            .execute(&mut *conn)
            .await?;
            Ok(r.rows_affected() == 1)
        }

        async fn record_attempt(
            conn: &mut Conn,
            task_id: &str,
            fence: i64,
            a: &AttemptRecord,
        ) -> Result<(), StoreError> {
            insert_attempt(conn, INSERT_ATTEMPT, task_id, fence, a).await
        }

        /// `sql` is [`INSERT_ATTEMPT`] or [`INSERT_CALL_ATTEMPT`].
        async fn insert_attempt(
            conn: &mut Conn,
            sql: &'static str,
            task_id: &str,
            fence: i64,
            a: &AttemptRecord,
        ) -> Result<(), StoreError> {
            sqlx::query(sql)
            .bind(&a.id)
            .bind(task_id)
            .bind(&a.lane)
            .bind(&a.batch_id)
            .bind(fence)
            .bind(a.started_at)
            .bind(a.ended_at)
            .bind(&a.outcome)
            .bind(&a.error)
            .bind(&a.provider_request_id)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        pub(super) async fn fail(
            pool: &Pool<$db>,
            task_id: &str,
            fence: i64,
            a: &AttemptRecord,
        ) -> Result<Result<(), LeaseLost>, StoreError> {
            let mut tx = begin_write(pool).await?;
            let now = a.ended_at.unwrap_or(a.started_at);
            if !settle(&mut tx, task_id, fence, TaskState::Failed, 0, a.error.as_deref(), now).await? {
                tx.rollback().await?;
                return Ok(Err(LeaseLost { fence }));
            }
            record_attempt(&mut tx, task_id, fence, a).await?;
            fail_below(&mut tx, task_id, now).await?;
            tx.commit().await?;
            Ok(Ok(()))
        }

        /// What runs after a failed task cannot run: fails the whole chain below it, which would
        /// otherwise wait (`pending`) for ever.
        async fn fail_below(conn: &mut Conn, task_id: &str, now: i64) -> Result<(), StoreError> {
            let mut below = vec![task_id.to_owned()];
            while let Some(parent) = below.pop() {
                let children: Vec<String> =
                    sqlx::query_scalar("SELECT id FROM tasks WHERE after_task_id = $1 AND state = 'pending'")
                        .bind(&parent)
                        .fetch_all(&mut *conn)
                        .await?;
                for child in children {
                    sqlx::query("UPDATE tasks SET state = 'failed', last_error = $1, updated_at = $2 WHERE id = $3")
                        .bind(format!("the task it runs after ({parent}) failed"))
                        .bind(now)
                        .bind(&child)
                        .execute(&mut *conn)
                        .await?;
                    below.push(child);
                }
            }
            Ok(())
        }

        pub(super) async fn fail_unclaimed(pool: &Pool<$db>, task_id: &str, a: &AttemptRecord) -> Result<bool, StoreError> {
            let mut tx = begin_write(pool).await?;
            let now = a.ended_at.unwrap_or(a.started_at);
            let failed = sqlx::query(
                "UPDATE tasks SET state = 'failed', last_error = $1, updated_at = $2 WHERE id = $3 AND state = 'queued'",
            )
            .bind(&a.error)
            .bind(now)
            .bind(task_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if failed {
                let fence: i64 = sqlx::query_scalar("SELECT fence FROM tasks WHERE id = $1").bind(task_id).fetch_one(&mut *tx).await?;
                record_attempt(&mut tx, task_id, fence, a).await?;
                fail_below(&mut tx, task_id, now).await?;
            }
            tx.commit().await?;
            Ok(failed)
        }

        pub(super) async fn requeue(
            pool: &Pool<$db>,
            task_id: &str,
            fence: i64,
            run_after: i64,
            a: &AttemptRecord,
        ) -> Result<Result<(), LeaseLost>, StoreError> {
            let mut tx = begin_write(pool).await?;
            let now = a.ended_at.unwrap_or(a.started_at);
            if !settle(&mut tx, task_id, fence, TaskState::Queued, run_after, a.error.as_deref(), now).await? {
                tx.rollback().await?;
                return Ok(Err(LeaseLost { fence }));
            }
            record_attempt(&mut tx, task_id, fence, a).await?;
            tx.commit().await?;
            Ok(Ok(()))
        }

        pub(super) async fn reroute(
            pool: &Pool<$db>,
            task_id: &str,
            fence: i64,
            lane: &str,
            reason: &str,
            run_after: i64,
            a: &AttemptRecord,
        ) -> Result<Result<(), LeaseLost>, StoreError> {
            let mut tx = begin_write(pool).await?;
            let now = a.ended_at.unwrap_or(a.started_at);
            if !settle(&mut tx, task_id, fence, TaskState::Queued, run_after, a.error.as_deref(), now).await? {
                tx.rollback().await?;
                return Ok(Err(LeaseLost { fence }));
            }
            sqlx::query("UPDATE tasks SET lane = $1, reason = $2 WHERE id = $3")
                .bind(lane)
                .bind(reason)
                .bind(task_id)
                .execute(&mut *tx)
                .await?;
            record_attempt(&mut tx, task_id, fence, a).await?;
            tx.commit().await?;
            Ok(Ok(()))
        }

        pub(super) async fn task_inputs(
            pool: &Pool<$db>,
            task_ids: &[&str],
        ) -> Result<std::collections::HashMap<String, TaskInput>, StoreError> {
            let mut inputs = std::collections::HashMap::with_capacity(task_ids.len());
            for chunk in task_ids.chunks(500) {
                let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {INPUT_COLUMNS} WHERE t.id IN ("));
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(id.to_string());
                }
                list.push_unseparated(")");
                for r in q.build().fetch_all(pool).await? {
                    if let Some(input) = input_from_row(&r)? {
                        inputs.insert(r.try_get("id")?, input);
                    }
                }
            }
            Ok(inputs)
        }

        pub(super) async fn deliveries(pool: &Pool<$db>, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>, StoreError> {
            let mut b = sqlx::QueryBuilder::<$db>::new(format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE 1 = 1"));
            if let Some(state) = &q.state {
                b.push(" AND state = ").push_bind(state.clone());
            }
            if let Some(after) = &q.after_id {
                b.push(" AND id > ").push_bind(after.clone());
            }
            b.push(" ORDER BY id LIMIT +").push_bind(q.limit);
            let rows = b.build().fetch_all(pool).await?;
            rows.iter().map(delivery_from_row).collect()
        }

        pub(super) async fn redeliver(pool: &Pool<$db>, id: &str, now: i64) -> Result<Redelivery, StoreError> {
            // The attempts count is also the fence of a sender's claim, so it goes on growing (a
            // sender whose claim was taken over may still answer late); the schedule starts over.
            let queued = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE deliveries SET state = 'pending', round_start = attempts, next_attempt_at = $1, updated_at = $1
                  WHERE id = $2 AND state = 'failed' RETURNING {DELIVERY_COLUMNS}"
            )))
            .bind(now)
            .bind(id)
            .fetch_optional(pool)
            .await?;
            if let Some(row) = queued {
                return Ok(Redelivery::Queued(delivery_from_row(&row)?));
            }
            let found = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1")))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(match found {
                Some(row) => Redelivery::NotFailed(delivery_from_row(&row)?),
                None => Redelivery::NotFound,
            })
        }

        fn delivery_from_row(r: &DbRow) -> Result<DeliveryRecord, StoreError> {
            Ok(DeliveryRecord {
                id: r.try_get("id")?,
                task_id: r.try_get("task_id")?,
                sink: r.try_get("sink")?,
                state: r.try_get("state")?,
                attempts: r.try_get("attempts")?,
                next_attempt_at: r.try_get("next_attempt_at")?,
                last_status: r.try_get("last_status")?,
                last_error: r.try_get("last_error")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        }

        pub(super) async fn claim_deliveries(
            pool: &Pool<$db>,
            now: i64,
            lease_ms: i64,
            limit: i64,
        ) -> Result<Vec<DueDelivery>, StoreError> {
            // As with tasks: finding nothing due must not take the write lock.
            let any = sqlx::query("SELECT 1 FROM deliveries WHERE state IN ('pending', 'sending') AND next_attempt_at <= $1 LIMIT 1")
                .bind(now)
                .fetch_optional(pool)
                .await?;
            if any.is_none() {
                return Ok(Vec::new());
            }
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, next_attempt_at = $1, updated_at = $2
                 WHERE id IN (SELECT id FROM deliveries WHERE state IN ('pending', 'sending') AND next_attempt_at <= $2
                              ORDER BY next_attempt_at LIMIT +$3 {})
                 RETURNING id, task_id, sink, attempts, round_start",
                $skip_locked
            )))
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    let attempts: i64 = r.try_get("attempts")?;
                    let round_start: i64 = r.try_get("round_start")?;
                    Ok(DueDelivery {
                        id: r.try_get("id")?,
                        task_id: r.try_get("task_id")?,
                        sink: r.try_get("sink")?,
                        attempts,
                        round: attempts - round_start,
                    })
                })
                .collect()
        }

        pub(super) async fn finish_delivery(
            pool: &Pool<$db>,
            d: &DueDelivery,
            attempt_id: &str,
            started_at: i64,
            outcome: &DeliveryOutcome,
        ) -> Result<bool, StoreError> {
            let (state, status, error, next) = match outcome {
                DeliveryOutcome::Delivered { status } => ("delivered", *status, None, 0),
                DeliveryOutcome::Retry { status, error, next_attempt_at } => ("pending", *status, Some(error.as_str()), *next_attempt_at),
                DeliveryOutcome::Failed { status, error } => ("failed", *status, Some(error.as_str()), 0),
            };
            let mut tx = begin_write(pool).await?;
            sqlx::query("INSERT INTO delivery_attempts (id, delivery_id, started_at, status, error) VALUES ($1, $2, $3, $4, $5)")
                .bind(attempt_id)
                .bind(&d.id)
                .bind(started_at)
                .bind(status)
                .bind(error)
                .execute(&mut *tx)
                .await?;
            let stands = sqlx::query(
                "UPDATE deliveries SET state = $1, last_status = $2, last_error = $3, next_attempt_at = $4, updated_at = $5
                 WHERE id = $6 AND ((state = 'sending' AND attempts = $7) OR ($1 = 'delivered' AND state <> 'delivered'))",
            )
            .bind(state)
            .bind(status)
            .bind(error)
            .bind(next)
            .bind(now_ms())
            .bind(&d.id)
            .bind(d.attempts)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            tx.commit().await?;
            Ok(stands)
        }

        fn batch_from_row(r: &DbRow) -> Result<BatchRecord, StoreError> {
            Ok(BatchRecord {
                id: r.try_get("id")?,
                provider: r.try_get("provider")?,
                model: r.try_get("model")?,
                state: r.try_get("state")?,
                provider_batch_id: r.try_get("provider_batch_id")?,
                item_count: r.try_get("item_count")?,
                bytes: r.try_get("bytes")?,
                created_at: r.try_get("created_at")?,
                submitted_at: r.try_get("submitted_at")?,
                ended_at: r.try_get("ended_at")?,
                last_error: r.try_get("last_error")?,
                reserved_nanousd: r.try_get("reserved_nanousd")?,
            })
        }

        pub(super) async fn batch_waiting(
            pool: &Pool<$db>,
            batch_id: &str,
            deadline_before: i64,
        ) -> Result<(i64, Vec<TaskRecord>), StoreError> {
            let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE batch_id = $1 AND state = 'batched'")
                .bind(batch_id)
                .fetch_one(pool)
                .await?;
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE batch_id = $1 AND state = 'batched' AND deadline < $2 ORDER BY deadline"
            )))
            .bind(batch_id)
            .bind(deadline_before)
            .fetch_all(pool)
            .await?;
            Ok((waiting, rows.iter().map(task_from_row).collect::<Result<_, _>>()?))
        }

        pub(super) async fn batch_queue_summary(pool: &Pool<$db>, now: i64) -> Result<Vec<QueueSummary>, StoreError> {
            let rows = sqlx::query(
                "SELECT workload, COUNT(*) AS n, MIN(created_at) AS oldest, MIN(deadline) AS earliest FROM tasks
                 WHERE lane = 'batch' AND state = 'queued' AND run_after <= $1 GROUP BY workload",
            )
            .bind(now)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(QueueSummary {
                        workload: r.try_get("workload")?,
                        count: r.try_get("n")?,
                        oldest_created_at: r.try_get("oldest")?,
                        earliest_deadline: r.try_get("earliest")?,
                    })
                })
                .collect()
        }

        pub(super) async fn batch_queue_take(
            pool: &Pool<$db>,
            workloads: &[String],
            now: i64,
            limit: i64,
        ) -> Result<Vec<(BatchMember, Option<TaskInput>)>, StoreError> {
            // Only what a batch line is rendered from: not the decisions, which are most of a row.
            let mut q = sqlx::QueryBuilder::<$db>::new(format!(
                "SELECT t.lane, t.state, t.deadline, {INPUT_COLUMNS}
                 WHERE t.lane = 'batch' AND t.state = 'queued' AND t.run_after <= "
            ));
            q.push_bind(now).push(" AND t.workload IN (");
            let mut list = q.separated(", ");
            for w in workloads {
                list.push_bind(w.clone());
            }
            list.push_unseparated(") ORDER BY t.deadline, t.id LIMIT +");
            q.push_bind(limit);
            let rows = q.build().fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    let state: String = r.try_get("state")?;
                    let task = BatchMember {
                        id: r.try_get("id")?,
                        workload: r.try_get("workload")?,
                        lane: r.try_get("lane")?,
                        state: TaskState::parse(&state).ok_or_else(|| corrupt("tasks", format!("state {state:?}")))?,
                        deadline: r.try_get("deadline")?,
                    };
                    let input = input_from_row(r)?;
                    Ok((task, input))
                })
                .collect()
        }

        pub(super) async fn record_batch(pool: &Pool<$db>, b: &BatchRecord, task_ids: &[String], lease: &Lease) -> Result<bool, StoreError> {
            let mut tx = begin_write(pool).await?;
            sqlx::query(
                "INSERT INTO batches (id, provider, model, state, provider_batch_id, item_count, bytes, created_at, submit_owner, submit_expires_at, reserved_nanousd)
                 VALUES ($1, $2, $3, 'submitting', NULL, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&b.id)
            .bind(&b.provider)
            .bind(&b.model)
            .bind(b.item_count)
            .bind(b.bytes)
            .bind(b.created_at)
            .bind(&lease.owner)
            .bind(lease.expires_at)
            .bind(b.reserved_nanousd)
            .execute(&mut *tx)
            .await?;
            let mut moved = 0;
            for chunk in task_ids.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE tasks SET state = 'batched', batch_id = ");
                q.push_bind(b.id.clone()).push(", updated_at = ").push_bind(b.created_at);
                // `|| ''` keeps SQLite's planner on the primary key: on `state` and `lane` it
                // would walk the claim index through the whole queue for every chunk.
                q.push(" WHERE state || '' = 'queued' AND lane || '' = 'batch' AND id IN (");
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(id.clone());
                }
                list.push_unseparated(")");
                moved += q.build().execute(&mut *tx).await?.rows_affected() as usize;
            }
            if moved != task_ids.len() {
                tx.rollback().await?;
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        }

        pub(super) async fn take_batch_submit(pool: &Pool<$db>, id: &str, lease: &Lease, now: i64) -> Result<bool, StoreError> {
            // One conditional UPDATE: of two instances racing for an expired lease, the row lock
            // (PostgreSQL) or the write lock (SQLite) lets one match, and the other then sees
            // the new owner and matches nothing.
            let taken = sqlx::query(
                "UPDATE batches SET submit_owner = $1, submit_expires_at = $2
                  WHERE id = $3 AND state = 'submitting'
                    AND (submit_owner IS NULL OR submit_owner = $1 OR submit_expires_at < $4)",
            )
            .bind(&lease.owner)
            .bind(lease.expires_at)
            .bind(id)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(taken == 1)
        }

        pub(super) async fn batch_submitted(pool: &Pool<$db>, id: &str, provider_batch_id: &str, at: i64) -> Result<bool, StoreError> {
            let stored = sqlx::query("UPDATE batches SET state = 'submitted', provider_batch_id = $1, submitted_at = $2 WHERE id = $3 AND state = 'submitting'")
                .bind(provider_batch_id)
                .bind(at)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected();
            Ok(stored == 1)
        }

        pub(super) async fn open_batches(pool: &Pool<$db>) -> Result<Vec<BatchRecord>, StoreError> {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {BATCH_COLUMNS} FROM batches WHERE state IN ('submitting', 'submitted') ORDER BY created_at, id")))
                .fetch_all(pool)
                .await?;
            rows.iter().map(batch_from_row).collect()
        }

        pub(super) async fn batches(pool: &Pool<$db>, limit: i64) -> Result<Vec<BatchRecord>, StoreError> {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {BATCH_COLUMNS} FROM batches ORDER BY created_at DESC, id DESC LIMIT +$1"))).bind(limit).fetch_all(pool).await?;
            rows.iter().map(batch_from_row).collect()
        }

        pub(super) async fn batch(pool: &Pool<$db>, id: &str) -> Result<Option<(BatchRecord, Vec<TaskRecord>)>, StoreError> {
            let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1"))).bind(id).fetch_optional(pool).await? else {
                return Ok(None);
            };
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE batch_id = $1 ORDER BY id")))
                .bind(id)
                .fetch_all(pool)
                .await?;
            Ok(Some((batch_from_row(&row)?, rows.iter().map(task_from_row).collect::<Result<_, _>>()?)))
        }

        pub(super) async fn batch_members(pool: &Pool<$db>, batch_id: &str) -> Result<Vec<BatchMember>, StoreError> {
            let rows = sqlx::query("SELECT id, workload, lane, state, deadline FROM tasks WHERE batch_id = $1 ORDER BY id")
                .bind(batch_id)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    let state: String = r.try_get("state")?;
                    Ok(BatchMember {
                        id: r.try_get("id")?,
                        workload: r.try_get("workload")?,
                        lane: r.try_get("lane")?,
                        state: TaskState::parse(&state).ok_or_else(|| corrupt("tasks", format!("state {state:?}")))?,
                        deadline: r.try_get("deadline")?,
                    })
                })
                .collect()
        }

        pub(super) async fn finish_batch(pool: &Pool<$db>, id: &str, state: &str, at: i64, error: Option<&str>) -> Result<(), StoreError> {
            // Only an open batch ends: of two instances ending one batch (one stored its lines,
            // the other could not fetch them), the first outcome stands.
            sqlx::query("UPDATE batches SET state = $1, ended_at = $2, last_error = $3 WHERE id = $4 AND state IN ('submitting', 'submitted')")
                .bind(state)
                .bind(at)
                .bind(error)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        }

        pub(super) async fn batch_lines(
            pool: &Pool<$db>,
            batch_id: &str,
            lines: &[(String, Completion)],
        ) -> Result<Vec<BatchLine>, StoreError> {
            let mut tx = begin_write(pool).await?;
            // Two instances polling the same batch on PostgreSQL take turns here (the row lock),
            // so the second sees the first's lines as recorded. SQLite's write lock already does.
            sqlx::query("UPDATE batches SET state = state WHERE id = $1").bind(batch_id).execute(&mut *tx).await?;
            let mut out = Vec::with_capacity(lines.len());
            // A result file that lists a task twice: its first line is recorded, the others are
            // not (the database would refuse them, and with them the whole poll, every time).
            let mut seen = std::collections::HashSet::new();
            // A few multi-row statements per chunk instead of six statements per line. The query
            // builder writes each database's own placeholders: SQLite looks a numbered `$N` up in a
            // list, once per bound value, which is quadratic in the statement's size.
            for all in chunks_by_size(lines, CHUNK / 13, |(_, d)| 300 + d.output.len()) {
                // A poller that died after this commit but before `finish_batch` polls the batch
                // again on restart and brings the same lines: each is recorded once, whatever ids
                // the new poll gave it, so the ledger never shows a line paid twice.
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT task_id FROM attempts WHERE batch_id = ");
                q.push_bind(batch_id.to_owned()).push(" AND outcome IN ('succeeded', 'late') AND task_id IN (");
                push_ids(&mut q, all.iter().map(|(id, _)| id), ")");
                let recorded = text_set(q, &mut tx, "task_id").await?;
                let fresh: Vec<bool> =
                    all.iter().map(|(id, _)| !recorded.contains(id) && seen.insert(id.as_str())).collect();
                let chunk: Vec<&(String, Completion)> =
                    all.iter().zip(&fresh).filter(|(_, f)| **f).map(|(line, _)| line).collect();
                let chunk = chunk.as_slice();
                if chunk.is_empty() {
                    out.extend(all.iter().map(|_| BatchLine::AlreadyRecorded));
                    continue;
                }
                let stamp = chunk.iter().map(|(_, d)| d.finished_at).max().unwrap_or(0);
                let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE tasks SET state = 'succeeded', lane = 'batch', updated_at = ");
                // `COALESCE(batch_id, '')`, not `batch_id`: SQLite would otherwise walk the batch's
                // index (every task of the batch) for each statement instead of the primary key.
                q.push_bind(stamp).push(" WHERE ((COALESCE(batch_id, '') = ").push_bind(batch_id.to_owned());
                q.push(" AND state = 'batched')");
                // A task the deadline guard moved to stream and no executor has claimed yet: the
                // line paid for is its result, rather than a second, full-price call. One claimed
                // meanwhile is running (this waits for its row lock on PostgreSQL and then sees
                // it): its line is only paid for.
                q.push(" OR (state = 'queued' AND batch_id IS NULL AND EXISTS (SELECT 1 FROM attempts e WHERE e.task_id = tasks.id AND e.outcome = 'escalated' AND e.batch_id = ");
                q.push_bind(batch_id.to_owned()).push("))) AND id IN (");
                push_ids(&mut q, chunk.iter().map(|(id, _)| id), ") RETURNING id");
                let owned = text_set(q, &mut tx, "id").await?;

                // Batch lines are not leased: each attempt records the fence as it stands.
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT id, fence FROM tasks WHERE id IN (");
                let mut list = q.separated(", ");
                for (id, _) in chunk {
                    list.push_bind(id.clone());
                }
                list.push_unseparated(")");
                let fences: std::collections::HashMap<String, i64> = q
                    .build()
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get("id")?, r.try_get("fence")?)))
                    .collect::<Result<_, StoreError>>()?;
                if let Some((unknown, _)) = chunk.iter().find(|(id, _)| !fences.contains_key(id)) {
                    return Err(corrupt("tasks", format!("a batch line for unknown task {unknown}")));
                }

                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO attempts (id, task_id, lane, batch_id, fence, started_at, ended_at, outcome, error, provider_request_id) ",
                );
                q.push_values(chunk, |mut row, (task_id, d)| {
                    row.push_bind(d.attempt_id.clone())
                        .push_bind(task_id.clone())
                        .push_bind(d.ledger.lane.clone())
                        .push_bind(batch_id.to_owned())
                        .push_bind(fences.get(task_id).copied().unwrap_or(0))
                        .push_bind(d.started_at)
                        .push_bind(d.finished_at)
                        .push_bind(if owned.contains(task_id) { "succeeded" } else { "late" })
                        .push_bind(None::<String>)
                        .push_bind(d.provider_request_id.clone());
                });
                q.build().execute(&mut *tx).await?;

                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO ledger (id, task_id, attempt_id, workload, provider, model, lane, input_tokens,
                                         cached_input_tokens, output_tokens, cost_nanousd, stream_cost_nanousd, created_at) ",
                );
                q.push_values(chunk, |mut row, (task_id, d)| {
                    let l = &d.ledger;
                    row.push_bind(l.id.clone())
                        .push_bind(task_id.clone())
                        .push_bind(d.attempt_id.clone())
                        .push_bind(l.workload.clone())
                        .push_bind(l.provider.clone())
                        .push_bind(l.model.clone())
                        .push_bind(l.lane.clone())
                        .push_bind(l.input_tokens)
                        .push_bind(l.cached_input_tokens)
                        .push_bind(l.output_tokens)
                        .push_bind(l.cost_nanousd)
                        .push_bind(l.stream_cost_nanousd)
                        .push_bind(l.created_at);
                });
                q.build().execute(&mut *tx).await?;

                let stored: Vec<&(String, Completion)> = chunk.iter().copied().filter(|(id, _)| owned.contains(id)).collect();
                if !stored.is_empty() {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO results (task_id, attempt_id, output, stop_reason, input_tokens, cached_input_tokens,
                                              output_tokens, first_token_ms, created_at) ",
                    );
                    q.push_values(&stored, |mut row, (task_id, d)| {
                        row.push_bind(task_id.clone())
                            .push_bind(d.attempt_id.clone())
                            .push_bind(d.output.clone())
                            .push_bind(d.stop_reason.clone())
                            .push_bind(d.input_tokens)
                            .push_bind(d.cached_input_tokens)
                            .push_bind(d.output_tokens)
                            .push_bind(d.first_token_ms)
                            .push_bind(d.finished_at);
                    });
                    q.build().execute(&mut *tx).await?;

                    let deliveries: Vec<(&str, &crate::NewDelivery, i64)> = stored
                        .iter()
                        .flat_map(|(task_id, d)| d.deliveries.iter().map(move |x| (task_id.as_str(), x, d.finished_at)))
                        .collect();
                    for part in deliveries.chunks(CHUNK / 7) {
                        let mut q = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO deliveries (id, task_id, sink, state, next_attempt_at, created_at, updated_at) ",
                        );
                        q.push_values(part, |mut row, (task_id, x, at)| {
                            row.push_bind(x.id.clone())
                                .push_bind(task_id.to_string())
                                .push_bind(x.sink.clone())
                                .push_bind("pending")
                                .push_bind(*at)
                                .push_bind(*at)
                                .push_bind(*at);
                        });
                        q.build().execute(&mut *tx).await?;
                    }

                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE tasks SET state = 'queued', updated_at = ");
                    // `state || ''`: on `state` SQLite would walk every pending task for each chunk.
                    q.push_bind(stamp).push(" WHERE state || '' = 'pending' AND after_task_id IN (");
                    let mut list = q.separated(", ");
                    for (id, _) in &stored {
                        list.push_bind(id.clone());
                    }
                    list.push_unseparated(")");
                    q.build().execute(&mut *tx).await?;
                }
                out.extend(all.iter().zip(&fresh).map(|((id, _), fresh)| {
                    if !fresh {
                        BatchLine::AlreadyRecorded
                    } else if owned.contains(id) {
                        BatchLine::Stored
                    } else {
                        BatchLine::LedgerOnly
                    }
                }));
            }
            tx.commit().await?;
            Ok(out)
        }

        #[allow(clippy::too_many_arguments)]
        pub(super) async fn unbatch(
            pool: &Pool<$db>,
            task_id: &str,
            batch_id: &str,
            state: TaskState,
            lane: &str,
            run_after: i64,
            reason: Option<&str>,
            a: &AttemptRecord,
        ) -> Result<bool, StoreError> {
            let mut tx = begin_write(pool).await?;
            // The batch's row first, as `batch_lines` takes it: a poller storing this batch's
            // lines then waits for this escalation to commit and sees it whole (on PostgreSQL
            // its re-checked row would otherwise be judged against an attempt not yet visible).
            sqlx::query("UPDATE batches SET state = state WHERE id = $1").bind(batch_id).execute(&mut *tx).await?;
            let now = a.ended_at.unwrap_or(a.started_at);
            let moved = sqlx::query(
                "UPDATE tasks SET state = $1, lane = $2, run_after = $3, batch_id = NULL, last_error = $4,
                                  reason = COALESCE($5, reason), updated_at = $6
                 WHERE id = $7 AND batch_id = $8 AND state = 'batched'",
            )
            .bind(state.as_str())
            .bind(lane)
            .bind(run_after)
            .bind(&a.error)
            .bind(reason)
            .bind(now)
            .bind(task_id)
            .bind(batch_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if moved {
                let fence: i64 = sqlx::query_scalar("SELECT fence FROM tasks WHERE id = $1").bind(task_id).fetch_one(&mut *tx).await?;
                record_attempt(&mut tx, task_id, fence, a).await?;
                if state == TaskState::Failed {
                    fail_below(&mut tx, task_id, now).await?;
                }
            }
            tx.commit().await?;
            Ok(moved)
        }

        pub(super) async fn spend_since(pool: &Pool<$db>, since: i64) -> Result<Vec<(String, i64)>, StoreError> {
            let rows = sqlx::query(
                "SELECT workload, CAST(SUM(cost_nanousd) AS BIGINT) AS spent FROM ledger WHERE created_at >= $1 GROUP BY workload",
            )
            .bind(since)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|r| Ok((r.try_get("workload")?, r.try_get::<Option<i64>, _>("spent")?.unwrap_or(0)))).collect()
        }

        pub(super) async fn reserved_by_open_batches(pool: &Pool<$db>) -> Result<i64, StoreError> {
            let row = sqlx::query(
                "SELECT CAST(COALESCE(SUM(reserved_nanousd), 0) AS BIGINT) AS reserved FROM batches WHERE state IN ('submitting', 'submitted')",
            )
            .fetch_one(pool)
            .await?;
            Ok(row.try_get::<Option<i64>, _>("reserved")?.unwrap_or(0))
        }

        pub(super) async fn record_maybe_spent(pool: &Pool<$db>, task_id: &str, at: i64, nanousd: i64) -> Result<(), StoreError> {
            let mut tx = begin_write(pool).await?;
            sqlx::query("INSERT INTO maybe_spent (id, task_id, at, nanousd) VALUES ($1, $2, $3, $4)")
                .bind(format!("may_{}", uuid::Uuid::now_v7().simple()))
                .bind(task_id)
                .bind(at)
                .bind(nanousd)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }

        pub(super) async fn maybe_spent_since(pool: &Pool<$db>, since: i64) -> Result<MaybeSpent, StoreError> {
            let row = sqlx::query(
                "SELECT CAST(COUNT(*) AS BIGINT) AS calls, CAST(COALESCE(SUM(nanousd), 0) AS BIGINT) AS spent
                   FROM maybe_spent WHERE at >= $1",
            )
            .bind(since)
            .fetch_one(pool)
            .await?;
            Ok(MaybeSpent {
                calls: row.try_get::<Option<i64>, _>("calls")?.unwrap_or(0),
                nanousd: row.try_get::<Option<i64>, _>("spent")?.unwrap_or(0),
            })
        }

        pub(super) async fn hold(pool: &Pool<$db>, task_id: &str, fence: i64, reason: &str, now: i64) -> Result<Result<(), LeaseLost>, StoreError> {
            let mut tx = begin_write(pool).await?;
            if !settle(&mut tx, task_id, fence, TaskState::Held, 0, Some(reason), now).await? {
                tx.rollback().await?;
                return Ok(Err(LeaseLost { fence }));
            }
            tx.commit().await?;
            Ok(Ok(()))
        }

        pub(super) async fn release_held(pool: &Pool<$db>, now: i64) -> Result<u64, StoreError> {
            let r = sqlx::query("UPDATE tasks SET state = 'queued', updated_at = $1 WHERE state = 'held'").bind(now).execute(pool).await?;
            Ok(r.rows_affected())
        }

        pub(super) async fn history(pool: &Pool<$db>, since: i64) -> Result<Vec<HistoryRow>, StoreError> {
            let rows = sqlx::query(HISTORY_SQL).bind(since).fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    let started: Option<i64> = r.try_get("attempt_started_at")?;
                    let first: Option<i64> = r.try_get("first_token_ms")?;
                    Ok(HistoryRow {
                        task_id: r.try_get("id")?,
                        event_id: r.try_get("event_id")?,
                        workload: r.try_get("workload")?,
                        lane: r.try_get("lane")?,
                        state: r.try_get("state")?,
                        reason: r.try_get("reason")?,
                        deadline: r.try_get("deadline")?,
                        created_at: r.try_get("created_at")?,
                        last_error: r.try_get("last_error")?,
                        output: r.try_get("output")?,
                        stop_reason: r.try_get("stop_reason")?,
                        input_tokens: r.try_get::<Option<i64>, _>("input_tokens")?.unwrap_or(0),
                        cached_input_tokens: r.try_get::<Option<i64>, _>("cached_input_tokens")?.unwrap_or(0),
                        output_tokens: r.try_get::<Option<i64>, _>("output_tokens")?.unwrap_or(0),
                        finished_at: r.try_get("finished_at")?,
                        first_token_at: started.zip(first).map(|(s, f)| s + f),
                        batch_submitted_at: r.try_get("batch_submitted_at")?,
                        batch_ended_at: r.try_get("batch_ended_at")?,
                        cost_nanousd: r.try_get::<Option<i64>, _>("cost")?.unwrap_or(0),
                        stream_cost_nanousd: r.try_get::<Option<i64>, _>("stream_cost")?.unwrap_or(0),
                    })
                })
                .collect()
        }

        pub(super) async fn ledger_since(pool: &Pool<$db>, since: i64) -> Result<Vec<LedgerPoint>, StoreError> {
            let rows = sqlx::query(
                "SELECT created_at, task_id, workload, lane, cost_nanousd, stream_cost_nanousd FROM ledger
                 WHERE created_at >= $1 ORDER BY created_at, id",
            )
            .bind(since)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(LedgerPoint {
                        created_at: r.try_get("created_at")?,
                        task_id: r.try_get("task_id")?,
                        workload: r.try_get("workload")?,
                        lane: r.try_get("lane")?,
                        cost_nanousd: r.try_get("cost_nanousd")?,
                        stream_cost_nanousd: r.try_get("stream_cost_nanousd")?,
                    })
                })
                .collect()
        }

        fn progress_from_row(r: &DbRow) -> Result<ProgressRow, StoreError> {
            Ok(ProgressRow {
                workload: r.try_get("workload")?,
                lane: r.try_get("lane")?,
                state: r.try_get("state")?,
                count: r.try_get("n")?,
            })
        }

        pub(super) async fn progress(pool: &Pool<$db>, since: i64) -> Result<Vec<ProgressRow>, StoreError> {
            // Closed on both sides: SQLite, which keeps no statistics here, takes an open range
            // for a quarter of the table and would rather walk a whole index in the GROUP BY's
            // order than read the range through `tasks_created` (0.9 s against 1.4 ms for the
            // last 1,000 of a million tasks).
            let rows = sqlx::query(
                "SELECT workload, lane, state, COUNT(*) AS n FROM tasks WHERE created_at >= $1 AND created_at <= $2
                 GROUP BY workload, lane, state",
            )
            .bind(since)
            .bind(i64::MAX)
            .fetch_all(pool)
            .await?;
            rows.iter().map(progress_from_row).collect()
        }

        /// Counts by workload, lane, state and, for tasks in state `batched`, their batch.
        pub(super) async fn progress_of(pool: &Pool<$db>, event_ids: &[&str]) -> Result<Vec<(ProgressRow, Option<String>)>, StoreError> {
            if event_ids.is_empty() {
                return Ok(Vec::new());
            }
            // Finished tasks keep their batch id: grouping by it only while batched keeps the
            // rows few however many batches a job has gone through.
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "SELECT workload, lane, state, CASE WHEN state = 'batched' THEN batch_id END AS in_batch,
                        COUNT(*) AS n
                 FROM tasks WHERE event_id IN (",
            );
            let mut list = q.separated(", ");
            for id in event_ids {
                list.push_bind(id.to_string());
            }
            list.push_unseparated(") GROUP BY workload, lane, state, in_batch");
            let rows = q.build().fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok((progress_from_row(r)?, r.try_get("in_batch")?)))
                .collect()
        }

        pub(super) async fn earliest_received(pool: &Pool<$db>, ids: &[String]) -> Result<Option<i64>, StoreError> {
            if ids.is_empty() {
                return Ok(None);
            }
            let mut q = sqlx::QueryBuilder::<$db>::new("SELECT MIN(received_at) AS earliest FROM events WHERE id IN (");
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(id.clone());
            }
            list.push_unseparated(")");
            let row = q.build().fetch_one(pool).await?;
            Ok(row.try_get("earliest")?)
        }

        pub(super) async fn task_states(pool: &Pool<$db>) -> Result<Vec<(String, i64)>, StoreError> {
            let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state").fetch_all(pool).await?;
            rows.iter().map(|r| Ok((r.try_get("state")?, r.try_get("n")?))).collect()
        }

        pub(super) async fn counts(pool: &Pool<$db>) -> Result<(i64, i64), StoreError> {
            let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await?;
            let tasks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks").fetch_one(pool).await?;
            Ok((events, tasks))
        }
    };
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A task with its result, the attempt that produced it, its batch and its ledger sums. The
/// stream cost is the largest entry's, not the sum: a task escalated out of a batch is one piece of
/// work, however many times it was paid for.
const HISTORY_SQL: &str = "SELECT t.id, t.event_id, t.workload, t.lane, t.state, t.reason, t.deadline, t.created_at,
            t.last_error, r.output, r.stop_reason, r.input_tokens, r.cached_input_tokens, r.output_tokens,
            r.created_at AS finished_at, r.first_token_ms, a.started_at AS attempt_started_at,
            b.submitted_at AS batch_submitted_at, b.ended_at AS batch_ended_at,
            (SELECT CAST(SUM(l.cost_nanousd) AS BIGINT) FROM ledger l WHERE l.task_id = t.id) AS cost,
            (SELECT MAX(l.stream_cost_nanousd) FROM ledger l WHERE l.task_id = t.id) AS stream_cost
     FROM tasks t
     LEFT JOIN results r ON r.task_id = t.id
     LEFT JOIN attempts a ON a.id = r.attempt_id
     LEFT JOIN batches b ON b.id = COALESCE(a.batch_id, t.batch_id)
     WHERE t.created_at >= $1
     ORDER BY t.created_at, t.id";

/// A task's input (its event, and the result of the task it runs after) with the columns that
/// find it: the start of a query that goes on with `WHERE`, over `tasks t`.
const INPUT_COLUMNS: &str = "t.id, t.event_id, t.workload, t.after_task_id,
        e.event_type AS e_type, e.payload AS e_payload, e.idempotency_key AS e_key,
        e.request_hash AS e_hash, e.needed_within_ms AS e_needed, e.source AS e_source,
        e.received_at AS e_received, u.workload AS up_workload, r.output AS up_output
     FROM tasks t
     LEFT JOIN events e ON e.id = t.event_id
     LEFT JOIN tasks u ON u.id = t.after_task_id
     LEFT JOIN results r ON r.task_id = t.after_task_id";

/// The claim: up to `$6` tasks of lanes `$4` and `$5` that are queued, or running on a lease that
/// has run out, earliest deadline first, then highest priority, from `run_after` on; leased to
/// `$1` until `$2` (`$3` is now). `lock` follows each read of candidates (PostgreSQL's `FOR
/// UPDATE SKIP LOCKED`).
///
/// Each lane and state is read apart, in the claim index's deadline order up to the limit, and
/// the four are merged: with `lane IN (…) AND state IN (…)` neither database could read the
/// index in order, and each claim sorted every queued task of both lanes (draining a backlog
/// took time in its square). `UNION`, not `UNION ALL`: both lanes may be the same one.
///
/// `expired_index` names the index the parts for expired leases read, for SQLite, whose planner
/// would otherwise walk every running task through the claim index to spare a sort of the few
/// it finds; PostgreSQL chooses by its statistics.
fn claim_sql(lock: &str, expired_index: &str) -> String {
    let part = |lane: &str, state: &str| {
        let (index, expired) = match state {
            "running" => (expired_index, "AND lease_expires_at < $3"),
            _ => ("", ""),
        };
        format!(
            "SELECT * FROM (SELECT id, deadline, priority FROM tasks {index}
               WHERE lane = {lane} AND state = '{state}' {expired} AND run_after <= $3
               ORDER BY deadline, priority DESC LIMIT +$6 {lock}) AS {state}_{}",
            &lane[1..]
        )
    };
    format!(
        "UPDATE tasks SET state = 'running', lease_owner = $1, lease_expires_at = $2, fence = fence + 1,
                          attempts = attempts + 1, updated_at = $3
         WHERE id IN (SELECT id FROM ({} UNION {} UNION {} UNION {}) AS candidates
                      ORDER BY deadline, priority DESC LIMIT +$6)",
        part("$4", "queued"),
        part("$5", "queued"),
        part("$4", "running"),
        part("$5", "running"),
    )
}

mod sqlite {
    use super::*;

    /// SQLite has one writer at a time, so the single UPDATE … WHERE id IN (SELECT …) is atomic.
    pub(super) fn claim_sql() -> String {
        super::claim_sql("", "INDEXED BY tasks_expired")
    }

    /// A write transaction takes SQLite's write lock up front: a deferred one that reads first and
    /// writes later fails at once with SQLITE_BUSY when another writer got in between, without
    /// waiting for the busy timeout.
    async fn begin_write(
        pool: &Pool<Sqlite>,
    ) -> Result<sqlx::Transaction<'static, Sqlite>, sqlx::Error> {
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// Migrations run one at a time anyway: SQLite takes the write lock at the first DDL.
    async fn lock_migrations(_tx: &mut sqlx::Transaction<'_, Sqlite>) -> Result<(), StoreError> {
        Ok(())
    }

    /// In-process: no network to mind, and fewer statements are cheaper.
    const CHUNK_BYTES: usize = 1024 * 1024;

    queries!(Sqlite, claim_sql(), "");
}

mod postgres {
    use super::*;

    /// Several instances claim at once: SKIP LOCKED lets each take different rows without waiting.
    /// (A candidate locked but not taken is free again when the statement ends.)
    fn claim_sql() -> String {
        super::claim_sql("FOR UPDATE SKIP LOCKED", "")
    }

    async fn begin_write(
        pool: &Pool<Postgres>,
    ) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        pool.begin().await
    }

    /// Instances starting together must not apply the same migration twice.
    async fn lock_migrations(tx: &mut sqlx::Transaction<'_, Postgres>) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock(7311985)").execute(&mut **tx).await?;
        Ok(())
    }

    /// Bytes of bound values per statement. sqlx 0.9 does not set TCP_NODELAY on PostgreSQL
    /// sockets: a message larger than the socket's send buffer (16 KiB by default on Linux) goes
    /// out in two writes, and Nagle holds the second until the server's delayed ACK, ~40 ms later.
    /// Statements are kept small enough to leave in one write.
    const CHUNK_BYTES: usize = 12 * 1024;

    queries!(Postgres, claim_sql(), "FOR UPDATE SKIP LOCKED");

    async fn insert_ledger(
        conn: &mut Conn,
        task_id: &str,
        d: &Completion,
    ) -> Result<(), StoreError> {
        let l = &d.ledger;
        sqlx::query(INSERT_LEDGER)
            .bind(&l.id)
            .bind(task_id)
            .bind(&d.attempt_id)
            .bind(&l.workload)
            .bind(&l.provider)
            .bind(&l.model)
            .bind(&l.lane)
            .bind(l.input_tokens)
            .bind(l.cached_input_tokens)
            .bind(l.output_tokens)
            .bind(l.cost_nanousd)
            .bind(l.stream_cost_nanousd)
            .bind(l.created_at)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// The result, its deliveries, and the release of the tasks that run after it.
    async fn insert_result_and_release(
        conn: &mut Conn,
        task_id: &str,
        d: &Completion,
    ) -> Result<(), StoreError> {
        let now = d.finished_at;
        sqlx::query(INSERT_RESULT)
            .bind(task_id)
            .bind(&d.attempt_id)
            .bind(&d.output)
            .bind(&d.stop_reason)
            .bind(d.input_tokens)
            .bind(d.cached_input_tokens)
            .bind(d.output_tokens)
            .bind(d.first_token_ms)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        for delivery in &d.deliveries {
            sqlx::query(INSERT_DELIVERY)
                .bind(&delivery.id)
                .bind(task_id)
                .bind(&delivery.sink)
                .bind(now)
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query(RELEASE_AFTER).bind(now).bind(task_id).execute(&mut *conn).await?;
        Ok(())
    }

    /// On SQLite, [`SqliteWriter::complete_many`] writes results.
    pub(super) async fn complete_many(
        pool: &Pool<Postgres>,
        done: &[(&str, i64, &Completion)],
    ) -> Result<Vec<Result<Completed, LeaseLost>>, StoreError> {
        let mut tx = begin_write(pool).await?;
        let mut out = Vec::with_capacity(done.len());
        for (task_id, fence, d) in done {
            out.push(complete_one(&mut tx, task_id, *fence, d).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Writes nothing when the lease was lost: the settle is the first statement, and it
    /// changes no row then.
    async fn complete_one(
        tx: &mut Conn,
        task_id: &str,
        fence: i64,
        d: &Completion,
    ) -> Result<Result<Completed, LeaseLost>, StoreError> {
        let now = d.finished_at;
        let kept = settle(&mut *tx, task_id, fence, TaskState::Succeeded, 0, None, now).await?;
        let attempt = AttemptRecord {
            id: d.attempt_id.clone(),
            lane: d.ledger.lane.clone(),
            batch_id: None,
            started_at: d.started_at,
            ended_at: Some(d.finished_at),
            outcome: if kept { "succeeded" } else { "superseded" }.to_owned(),
            error: (!kept).then(|| SUPERSEDED.to_owned()),
            provider_request_id: d.provider_request_id.clone(),
        };
        insert_attempt(&mut *tx, INSERT_CALL_ATTEMPT, task_id, fence, &attempt).await?;
        insert_ledger(&mut *tx, task_id, d).await?;
        if !kept {
            return Ok(Err(LeaseLost { fence }));
        }
        insert_result_and_release(&mut *tx, task_id, d).await?;
        let cost: Option<i64> =
            sqlx::query_scalar(TASK_COST).bind(task_id).fetch_one(&mut *tx).await?;
        Ok(Ok(Completed { cost_nanousd: cost.unwrap_or(0) }))
    }

    /// The usual path: a few statements for the whole group. Idempotency keys are looked up
    /// first, conflicts settled in memory, and then every new event and task is written with one
    /// multi-row INSERT each: each statement is a round trip to the server.
    pub(super) async fn ingest(
        pool: &Pool<Postgres>,
        requests: &[Vec<NewEvent>],
    ) -> Result<Vec<RequestOutcome>, StoreError> {
        // Two groups inserting the same new keys in opposite orders (two instances, or two
        // committers) can deadlock; PostgreSQL then aborts one, and every request in it would get
        // a 503. Its transaction rolled back whole, so it is simply run again.
        let mut tries = 0;
        loop {
            match ingest_once(pool, requests).await {
                Err(StoreError::Database(sqlx::Error::Database(e)))
                    if e.code().as_deref() == Some("40P01") && tries < 4 =>
                {
                    tries += 1;
                    tracing::debug!(
                        tries,
                        "ingest group deadlocked with another; running it again"
                    );
                }
                other => return other,
            }
        }
    }

    async fn ingest_once(
        pool: &Pool<Postgres>,
        requests: &[Vec<NewEvent>],
    ) -> Result<Vec<RequestOutcome>, StoreError> {
        let mut tx = begin_write(pool).await?;
        let stored = events_by_key(&mut tx, &settle::keys(requests)).await?;
        let settled = settle::settle(requests, &stored);
        let inserted = insert_events(&mut tx, &settled.to_insert).await?;
        if inserted < settled.to_insert.len() {
            // Another instance stored one of these keys since the look-up: settle request by
            // request instead, each in its own savepoint.
            tx.rollback().await?;
            return ingest_one_by_one(pool, requests).await;
        }
        insert_tasks(&mut tx, &settled.to_insert).await?;
        let replayed_tasks = tasks_of_events(&mut tx, &settled.plans.replayed_ids()).await?;
        tx.commit().await?;
        Ok(settled.plans.outcomes(requests, replayed_tasks))
    }

    async fn events_by_key(
        conn: &mut Conn,
        keys: &[&str],
    ) -> Result<std::collections::HashMap<String, EventRecord>, StoreError> {
        let mut found = std::collections::HashMap::new();
        for chunk in keys.chunks(CHUNK) {
            let mut q = sqlx::QueryBuilder::<Postgres>::new(format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE idempotency_key IN ("
            ));
            let mut list = q.separated(", ");
            for k in chunk {
                list.push_bind(k.to_string());
            }
            list.push_unseparated(")");
            for row in q.build().fetch_all(&mut *conn).await? {
                let e = event_from_row(&row)?;
                if let Some(k) = e.idempotency_key.clone() {
                    found.insert(k, e);
                }
            }
        }
        Ok(found)
    }

    async fn tasks_of_events(
        conn: &mut Conn,
        event_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Vec<TaskRecord>>, StoreError> {
        let mut by_event: std::collections::HashMap<String, Vec<TaskRecord>> =
            std::collections::HashMap::new();
        for chunk in event_ids.chunks(CHUNK) {
            let mut q = sqlx::QueryBuilder::<Postgres>::new(format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE event_id IN ("
            ));
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.to_string());
            }
            list.push_unseparated(") ORDER BY id");
            for row in q.build().fetch_all(&mut *conn).await? {
                let t = task_from_row(&row)?;
                by_event.entry(t.event_id.clone()).or_default().push(t);
            }
        }
        Ok(by_event)
    }
}

/// When a schema of [`Store::isolated_postgres_url`] was made, in ms since the epoch: a UUIDv7
/// begins with its time. `None` for any other name.
fn schema_made_at(name: &str) -> Option<i64> {
    let id = name.strip_prefix("sluice_test_")?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    i64::from_str_radix(&id[..12], 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for `sql` on a new store: one line per step.
    async fn sqlite_plan(sql: &str) -> Vec<String> {
        use sqlx::Row as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::open(&url, SqliteDurability::Full).await.expect("store");
        let Store::Sqlite(pool, _) = &store else { unreachable!("an SQLite URL") };
        sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .fetch_all(pool)
            .await
            .expect("explain")
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect()
    }

    /// Listing tasks by state or workload reads that index from the cursor on.
    #[tokio::test]
    async fn a_filtered_list_of_tasks_reads_its_index() {
        let page = |state, workload: Option<&str>| TaskQuery {
            state,
            workload: workload.map(str::to_owned),
            after_id: Some("tsk_0".into()),
            limit: 100,
        };
        for (q, index) in [
            (page(Some(TaskState::Failed), None), "tasks_state_id (state=? AND id>?)"),
            (page(None, Some("triage")), "tasks_workload_id (workload=? AND id>?)"),
        ] {
            let plan = sqlite_plan(sqlite::tasks_query(&q).sql().as_str()).await;
            assert!(plan.iter().any(|d| d.contains(index)), "{plan:#?}");
        }
    }

    #[test]
    fn test_schemas_are_dated_by_their_uuid() {
        let at = now_ms();
        let name = format!("sluice_test_{}", uuid::Uuid::now_v7().simple());
        let made = schema_made_at(&name).expect("a test schema's name");
        assert!((made - at).abs() < 5_000, "{made} vs {at}");
        assert_eq!(schema_made_at("sluice_test_users"), None);
        assert_eq!(schema_made_at("public"), None);
    }

    /// A claim reads each lane's queued tasks in the claim index's order and finds expired leases
    /// in their own index: its cost follows what it claims, not the backlog or the running tasks.
    #[tokio::test]
    async fn a_claim_reads_indexes_and_scans_no_table() {
        let plan = sqlite_plan(&sqlite::claim_sql()).await;
        let searches = |index: &str| plan.iter().filter(|d| d.contains(index)).count();
        assert_eq!(searches("USING INDEX tasks_claim"), 2, "{plan:#?}");
        assert_eq!(searches("USING INDEX tasks_expired"), 2, "{plan:#?}");
        assert!(!plan.iter().any(|d| d.starts_with("SCAN tasks")), "{plan:#?}");
    }
}
