//! SQLite's writer for the hot paths — ingest, and the results of streamed calls: a connection
//! of its own, driven synchronously by the thread that calls it.
//!
//! sqlx runs each SQLite connection on a worker thread and sends it one message per statement; a
//! group commit is five or more such round trips, and on a busy machine each waits for a thread
//! to be scheduled (measured: a tenth of a millisecond each, half the time of a small group). Here
//! the whole group — look-up, inserts, commit — runs on the caller's thread with cached prepared
//! statements, one row per execution. rusqlite is used for this one path because sqlx has no
//! synchronous SQLite interface; it links the same `libsqlite3-sys` as sqlx.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, Row, TransactionBehavior, params};

use crate::backend::{
    INSERT_CALL_ATTEMPT, INSERT_DELIVERY, INSERT_LEDGER, INSERT_RESULT, RELEASE_AFTER,
    RequestOutcome, SETTLE_TASK, SUPERSEDED, TASK_COLUMNS, TASK_COST, corrupt, json,
};
use crate::settle;
use crate::{
    Completed, Completion, EventRecord, LeaseLost, NewEvent, SqliteDurability, StoreError,
    TaskRecord, TaskState,
};

/// The connection behind a lock: a group is written by one caller at a time (SQLite has one writer
/// anyway). Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SqliteWriter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    conn: Connection,
    /// Decisions known to be in `decisions`, by text: most tasks reuse one, and neither its hash
    /// nor its row needs making again. Only committed ones go in.
    decisions: HashMap<String, String, FastHash>,
}

/// Decision texts are ~700 bytes, looked up twice per task on the writer's thread, which every
/// group waits for: foldhash (already built, for hashbrown) hashes them several times faster
/// than the standard SipHash. Seeded per process; the map holds at most `DECISION_CACHE` keys.
type FastHash = foldhash::fast::RandomState;

/// Distinct decisions are few (one per workload and minute of slack), but they do accumulate.
const DECISION_CACHE: usize = 1024;

const EVENT_COLUMNS: &str =
    "id, event_type, payload, idempotency_key, request_hash, needed_within_ms, source, received_at";

impl SqliteWriter {
    /// Opens the file the pool uses (migrations already applied) with the same durability.
    pub(crate) fn open(path: &Path, durability: SqliteDurability) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let synchronous = match durability {
            SqliteDurability::Full => "FULL",
            SqliteDurability::Normal => "NORMAL",
        };
        // journal_mode=WAL is a property of the file, set when the pool opened it. A statement
        // journal in memory saves a temporary file per multi-row statement; a larger page cache
        // keeps the indexes' upper pages between groups.
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous};
             PRAGMA foreign_keys = ON;
             PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -16384;"
        ))?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(SqliteWriter { state: Mutex::new(State { conn, decisions: HashMap::default() }) })
    }

    /// [`crate::Store::ingest`] on SQLite: blocks the calling thread for the whole commit, fsync
    /// included. Call it from a thread that may block (the ingest committer has its own).
    pub fn ingest(&self, requests: Vec<Vec<NewEvent>>) -> Result<Vec<RequestOutcome>, StoreError> {
        // A panic elsewhere while holding the lock left no transaction open: rusqlite rolls back
        // an unfinished one when it is dropped.
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let State { conn, decisions } = &mut *state;
        // IMMEDIATE takes the write lock before the look-up, so no other writer can store one of
        // the group's keys between the look-up and the inserts.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut stored = HashMap::new();
        {
            let mut by_key = tx.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE idempotency_key = ?1"
            ))?;
            for key in settle::keys(&requests) {
                if stored.contains_key(key) {
                    continue;
                }
                if let Some(row) = by_key.query([key])?.next()? {
                    stored.insert(key.to_owned(), event_from_row(row)?);
                }
            }
        }
        let settle::Settled { plans, to_insert } = settle::settle(&requests, &stored);
        // Decisions this group is the first to use.
        let mut new_decisions: HashMap<&str, String, FastHash> = HashMap::default();
        for t in to_insert.iter().flat_map(|e| &e.tasks) {
            let body = t.decision.get();
            if !decisions.contains_key(body) && !new_decisions.contains_key(body) {
                new_decisions.insert(body, settle::decision_id(body));
            }
        }
        {
            let mut decision = tx.prepare_cached(
                "INSERT INTO decisions (id, body) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
            )?;
            for (body, id) in &new_decisions {
                decision.execute(params![id, body])?;
            }
        }
        {
            let mut event = tx.prepare_cached(&format!(
                "INSERT INTO events ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?;
            let mut task = tx.prepare_cached(
                "INSERT INTO tasks (id, event_id, workload, lane, state, rule, reason, decision,
                                    decision_id, deadline, priority, after_task_id, created_at,
                                    updated_at, lease_owner, lease_expires_at, fence, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '', ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14, ?15, ?15)",
            )?;
            for ev in &to_insert {
                event.execute(params![
                    ev.id,
                    ev.event_type,
                    ev.payload.get(),
                    ev.idempotency_key,
                    ev.request_hash,
                    ev.needed_within_ms,
                    ev.source,
                    ev.received_at,
                ])?;
            }
            for ev in &to_insert {
                for t in &ev.tasks {
                    task.execute(params![
                        t.id,
                        ev.id,
                        t.workload,
                        t.lane,
                        t.state.as_str(),
                        t.rule,
                        t.reason,
                        decisions
                            .get(t.decision.get())
                            .or_else(|| new_decisions.get(t.decision.get())),
                        t.deadline,
                        t.priority,
                        t.after_task_id,
                        ev.received_at,
                        t.lease.as_ref().map(|l| l.owner.as_str()),
                        t.lease.as_ref().map(|l| l.expires_at),
                        i64::from(t.lease.is_some()),
                    ])?;
                }
            }
        }
        let mut replayed_tasks: HashMap<String, Vec<TaskRecord>> = HashMap::new();
        {
            let mut tasks_of = tx.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE event_id = ?1 ORDER BY id"
            ))?;
            for id in plans.replayed_ids() {
                let mut tasks = Vec::new();
                let mut rows = tasks_of.query([id])?;
                while let Some(row) = rows.next()? {
                    tasks.push(task_from_row(row)?);
                }
                replayed_tasks.insert(id.to_owned(), tasks);
            }
        }
        tx.commit()?;
        if decisions.len() + new_decisions.len() > DECISION_CACHE {
            decisions.clear();
        }
        decisions.extend(new_decisions.into_iter().map(|(body, id)| (body.to_owned(), id)));
        drop(to_insert);
        Ok(plans.outcomes_owned(requests, replayed_tasks))
    }

    /// [`crate::Store::complete_many`] on SQLite, in one transaction: each result is stored only
    /// if its fence is still current. Blocks the calling thread, fsync included.
    pub fn complete_many(
        &self,
        done: &[(String, i64, Completion)],
    ) -> Result<Vec<Result<Completed, LeaseLost>>, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = state.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(done.len());
        {
            let mut settle = tx.prepare_cached(SETTLE_TASK)?;
            let mut attempt = tx.prepare_cached(INSERT_CALL_ATTEMPT)?;
            let mut ledger = tx.prepare_cached(INSERT_LEDGER)?;
            let mut result = tx.prepare_cached(INSERT_RESULT)?;
            let mut delivery = tx.prepare_cached(INSERT_DELIVERY)?;
            let mut release = tx.prepare_cached(RELEASE_AFTER)?;
            let mut cost = tx.prepare_cached(TASK_COST)?;
            for (task_id, fence, d) in done {
                let now = d.finished_at;
                let settled = settle.execute(params![
                    TaskState::Succeeded.as_str(),
                    0,
                    None::<&str>,
                    now,
                    task_id,
                    fence
                ])?;
                let l = &d.ledger;
                // The lease was lost when the settle changed nothing: then only what was paid
                // is written.
                let kept = settled == 1;
                attempt.execute(params![
                    d.attempt_id,
                    task_id,
                    l.lane,
                    None::<&str>,
                    fence,
                    d.started_at,
                    d.finished_at,
                    if kept { "succeeded" } else { "superseded" },
                    (!kept).then_some(SUPERSEDED),
                    d.provider_request_id,
                ])?;
                ledger.execute(params![
                    l.id,
                    task_id,
                    d.attempt_id,
                    l.workload,
                    l.provider,
                    l.model,
                    l.lane,
                    l.input_tokens,
                    l.cached_input_tokens,
                    l.output_tokens,
                    l.cost_nanousd,
                    l.stream_cost_nanousd,
                    l.created_at,
                ])?;
                if !kept {
                    out.push(Err(LeaseLost { fence: *fence }));
                    continue;
                }
                result.execute(params![
                    task_id,
                    d.attempt_id,
                    d.output,
                    d.stop_reason,
                    d.input_tokens,
                    d.cached_input_tokens,
                    d.output_tokens,
                    d.first_token_ms,
                    now,
                ])?;
                for s in &d.deliveries {
                    delivery.execute(params![s.id, task_id, s.sink, now])?;
                }
                release.execute(params![now, task_id])?;
                let cost_nanousd: i64 = cost.query_row([task_id], |r| r.get(0))?;
                out.push(Ok(Completed { cost_nanousd }));
            }
        }
        tx.commit()?;
        Ok(out)
    }
}

/// Rows come back in the column order of [`EVENT_COLUMNS`].
fn event_from_row(row: &Row<'_>) -> Result<EventRecord, StoreError> {
    let payload: String = row.get(2)?;
    Ok(EventRecord {
        id: row.get(0)?,
        event_type: row.get(1)?,
        payload: json("events", &payload)?,
        idempotency_key: row.get(3)?,
        request_hash: row.get(4)?,
        needed_within_ms: row.get(5)?,
        source: row.get(6)?,
        received_at: row.get(7)?,
    })
}

/// Rows come back in the column order of `TASK_COLUMNS` (shared with the sqlx queries).
fn task_from_row(row: &Row<'_>) -> Result<TaskRecord, StoreError> {
    let state: String = row.get(4)?;
    let decision: String = row.get(7)?;
    Ok(TaskRecord {
        id: row.get(0)?,
        event_id: row.get(1)?,
        workload: row.get(2)?,
        lane: row.get(3)?,
        state: TaskState::parse(&state)
            .ok_or_else(|| corrupt("tasks", format!("state {state:?}")))?,
        rule: row.get(5)?,
        reason: row.get(6)?,
        decision: json("tasks", &decision)?,
        deadline: row.get(8)?,
        priority: row.get(9)?,
        after_task_id: row.get(10)?,
        attempts: row.get(11)?,
        lease_owner: row.get(12)?,
        lease_expires_at: row.get(13)?,
        fence: row.get(14)?,
        batch_id: row.get(15)?,
        last_error: row.get(16)?,
        created_at: row.get(17)?,
        updated_at: row.get(18)?,
    })
}
