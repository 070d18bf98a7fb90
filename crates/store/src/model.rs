//! The records the store reads and writes.

use serde::Serialize;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waits for the task it runs `after`.
    Pending,
    /// Ready to be claimed by its lane.
    Queued,
    /// Claimed by a worker under a lease.
    Running,
    /// In a submitted provider batch.
    Batched,
    /// Held back by a budget cap.
    Held,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        TaskState::Pending,
        TaskState::Queued,
        TaskState::Running,
        TaskState::Batched,
        TaskState::Held,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Batched => "batched",
            TaskState::Held => "held",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled)
    }
}

/// An event to store, with the tasks it fans out into.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub event_type: String,
    /// The payload (serialized once, at planning).
    pub payload: Box<serde_json::value::RawValue>,
    pub idempotency_key: Option<String>,
    /// A hash of what the client sent, to tell a replay from a conflicting reuse of a key.
    pub request_hash: String,
    pub needed_within_ms: Option<i64>,
    /// `api` or `hook:<source>`.
    pub source: String,
    pub received_at: i64,
    pub tasks: Vec<NewTask>,
}

#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: String,
    pub workload: String,
    pub lane: String,
    pub state: TaskState,
    pub rule: String,
    pub reason: String,
    /// The decision's estimates, as JSON (serialized once, at planning).
    pub decision: Box<serde_json::value::RawValue>,
    pub deadline: i64,
    pub priority: i64,
    pub after_task_id: Option<String>,
    /// Stored already claimed (state `running`, fence 1) by the executor in this process, which
    /// starts the call as soon as the commit is durable: see `sluice_engine::executor::Handoff`.
    pub lease: Option<Lease>,
}

/// Who holds a piece of work, until when (ms since the epoch): a task claimed with its ingest, or
/// the submission of a batch. Once it has expired, another instance may take the work over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload as stored: JSON text, parsed only by whoever needs its fields.
    pub payload: Box<serde_json::value::RawValue>,
    pub idempotency_key: Option<String>,
    #[serde(skip)]
    pub request_hash: String,
    pub needed_within_ms: Option<i64>,
    pub source: String,
    pub received_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub id: String,
    pub event_id: String,
    pub workload: String,
    pub lane: String,
    pub state: TaskState,
    pub rule: String,
    pub reason: String,
    /// The decision with its estimates, as JSON text.
    pub decision: Box<serde_json::value::RawValue>,
    pub deadline: i64,
    pub priority: i64,
    pub after_task_id: Option<String>,
    pub attempts: i64,
    #[serde(skip)]
    pub lease_owner: Option<String>,
    #[serde(skip)]
    pub lease_expires_at: Option<i64>,
    #[serde(skip)]
    pub fence: i64,
    pub batch_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What happened to one event of an ingest request.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub event: EventRecord,
    pub tasks: Vec<TaskRecord>,
    /// True when the idempotency key was seen before with the same request: nothing was written.
    pub replayed: bool,
}

/// An idempotency key reused with a different request.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyConflict {
    pub idempotency_key: String,
    pub existing_event_id: String,
}

/// A task claimed under a lease; `fence` must accompany every later write about it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub task: TaskRecord,
    pub fence: i64,
}

/// The worker no longer holds the lease it names: another worker has the task now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lease lost: the task was claimed again (fencing token {fence} is stale)")]
pub struct LeaseLost {
    pub fence: i64,
}

/// A finished call to store with [`crate::Store::complete`].
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub attempt_id: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub provider_request_id: Option<String>,
    pub output: String,
    pub stop_reason: String,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub first_token_ms: Option<i64>,
    pub ledger: LedgerEntry,
    /// Sinks to deliver the result to (besides the store itself).
    pub deliveries: Vec<NewDelivery>,
}

impl Completion {
    /// The result row [`crate::Store::complete`] stores for it.
    pub fn result(&self) -> ResultRecord {
        ResultRecord {
            output: self.output.clone(),
            stop_reason: self.stop_reason.clone(),
            input_tokens: self.input_tokens,
            cached_input_tokens: self.cached_input_tokens,
            output_tokens: self.output_tokens,
            first_token_ms: self.first_token_ms,
            created_at: self.finished_at,
        }
    }
}

/// A result stored by [`crate::Store::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    /// What the task has cost over all its ledger lines, this one included: what a reader of
    /// the task would be told, without reading it back.
    pub cost_nanousd: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerEntry {
    pub id: String,
    pub workload: String,
    pub provider: String,
    pub model: String,
    pub lane: String,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub cost_nanousd: i64,
    /// What the same call would have cost streamed at the standard price.
    pub stream_cost_nanousd: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub id: String,
    /// e.g. `webhook:https://…` or `file:results/x.jsonl`.
    pub sink: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRecord {
    pub output: String,
    pub stop_reason: String,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub first_token_ms: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    pub id: String,
    pub lane: String,
    pub batch_id: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub outcome: String,
    pub error: Option<String>,
    pub provider_request_id: Option<String>,
}

/// Everything about one task, for `GET /v1/tasks/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: TaskRecord,
    pub result: Option<ResultRecord>,
    pub attempt_log: Vec<AttemptRecord>,
    /// Dollars paid for this task, over all its attempts, in nano-dollars.
    pub cost_nanousd: i64,
}

/// Filters and position of a task listing; results are in id order (ids sort by creation time).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskQuery {
    pub state: Option<TaskState>,
    pub workload: Option<String>,
    /// Only tasks with an id greater than this.
    pub after_id: Option<String>,
    pub limit: i64,
}

/// Calls that failed after the provider took them, since some instant: the provider may bill
/// them, and no ledger line can say what they cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MaybeSpent {
    pub calls: i64,
    /// The most they may cost together, in nano-dollars.
    pub nanousd: i64,
}

/// A delivery's sink as shown in answers and logs. A webhook URL may carry the receiver's token
/// (in its path, as Slack's do, its query or its user info): only its scheme and host are shown.
pub fn shown_sink(sink: &str) -> String {
    match sink.strip_prefix("webhook:").and_then(|u| u.split_once("://")) {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("webhook:{scheme}://{host}/…")
        }
        None => sink.to_owned(),
    }
}

/// A delivery as `GET /v1/deliveries` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRecord {
    pub id: String,
    pub task_id: String,
    pub sink: String,
    /// `pending`, `sending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Filters and position of a delivery listing, in id order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryQuery {
    pub state: Option<String>,
    /// Only deliveries with an id greater than this.
    pub after_id: Option<String>,
    pub limit: i64,
}

/// What asking for a delivery to be sent again came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Redelivery {
    /// Back in the queue, due now.
    Queued(DeliveryRecord),
    /// Only a failed delivery is sent again; this one is in this state.
    NotFailed(DeliveryRecord),
    NotFound,
}

/// A result waiting to reach a sink.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDelivery {
    pub id: String,
    pub task_id: String,
    pub sink: String,
    /// Attempts so far, this one included; also the fence of this claim.
    pub attempts: i64,
    /// Attempts since the delivery was last sent again by hand, this one included: its place
    /// in the retry schedule.
    pub round: i64,
}

/// How a delivery attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Delivered {
        status: Option<i64>,
    },
    /// Try again at `next_attempt_at`.
    Retry {
        status: Option<i64>,
        error: String,
        next_attempt_at: i64,
    },
    /// Give up.
    Failed {
        status: Option<i64>,
        error: String,
    },
}

/// What a task needs to be run: its event and, for a task that runs `after` another, that
/// task's output.
#[derive(Debug, Clone)]
pub struct TaskInput {
    pub event: EventRecord,
    pub upstream: Option<(String, String)>,
}

/// A task of a batch, as the poller routes its result line.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchMember {
    pub id: String,
    pub workload: String,
    pub lane: String,
    pub state: TaskState,
    pub deadline: i64,
}

impl BatchMember {
    pub fn of(t: &TaskRecord) -> BatchMember {
        BatchMember {
            id: t.id.clone(),
            workload: t.workload.clone(),
            lane: t.lane.clone(),
            state: t.state,
            deadline: t.deadline,
        }
    }
}

/// A provider batch as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchRecord {
    pub id: String,
    pub provider: String,
    pub model: String,
    /// `submitting` (recorded, provider id not yet known), `submitted`, `ended`, `failed`.
    pub state: String,
    pub provider_batch_id: Option<String>,
    pub item_count: i64,
    pub bytes: i64,
    pub created_at: i64,
    pub submitted_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub last_error: Option<String>,
    /// The most its lines can cost, counted against the hard daily cap while it is open.
    pub reserved_nanousd: i64,
}

/// What became of a batch line that came back with a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchLine {
    /// Stored as the task's result.
    Stored,
    /// The task's stream call had started (or it had finished) meanwhile: the line is paid for,
    /// so it is in the ledger, but it does not overwrite the delivered result.
    LedgerOnly,
    /// Already recorded by an earlier poll of the same batch (one that died before marking the
    /// batch ended): nothing is written again.
    AlreadyRecorded,
}

/// One task as reports see it: its decision, its result, its timings and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryRow {
    pub task_id: String,
    pub event_id: String,
    pub workload: String,
    /// The lane it ran in last (an escalated task reads `stream`).
    pub lane: String,
    pub state: String,
    pub reason: String,
    pub deadline: i64,
    pub created_at: i64,
    pub last_error: Option<String>,
    pub output: Option<String>,
    pub stop_reason: Option<String>,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    /// When the result was stored.
    pub finished_at: Option<i64>,
    /// When the first token arrived (streamed calls only).
    pub first_token_at: Option<i64>,
    /// The batch it was in, if any: when it was submitted and when it ended.
    pub batch_submitted_at: Option<i64>,
    pub batch_ended_at: Option<i64>,
    /// Everything paid for this task (an escalated task may have paid twice: that is the truth).
    pub cost_nanousd: i64,
    /// What its delivered result would have cost streamed at the standard price.
    pub stream_cost_nanousd: i64,
}

/// One ledger entry, for spend over time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerPoint {
    pub created_at: i64,
    pub task_id: String,
    pub workload: String,
    pub lane: String,
    pub cost_nanousd: i64,
    pub stream_cost_nanousd: i64,
}

/// How many tasks of one workload are in one lane and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgressRow {
    pub workload: String,
    pub lane: String,
    pub state: String,
    pub count: i64,
}

/// Where one job's tasks stand: counts by workload, lane and state, and how many batches hold
/// some of them now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobProgress {
    pub rows: Vec<ProgressRow>,
    /// Distinct batches with at least one of the job's tasks in state `batched`.
    pub batches: usize,
}

/// Queued batch work of one workload, summed up: what the assembler's triggers look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSummary {
    pub workload: String,
    pub count: i64,
    pub oldest_created_at: i64,
    pub earliest_deadline: i64,
}
