//! `POST /v1/events` and the group committer behind it.
//!
//! Durability costs an fsync per commit, so concurrent requests share one: each request hands its
//! planned events to the committer and waits; the committer takes every request that queued up
//! while the previous commit ran, stores them in one transaction, and answers each request only
//! after that commit returned. On SQLite the committer is a thread of its own that writes through
//! the store's [`SqliteWriter`]; on PostgreSQL a few async loops overlap their round trips.
//!
//! With an executor in the process, stream and flex tasks for which it has a free call slot are
//! stored already claimed by it and handed over right after the commit, before the `202` is
//! written: their calls start without a second store write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_engine::executor::{Handoff, Reserved};
use sluice_store::{
    Ingested, KeyConflict, NewEvent, RequestOutcome, SqliteWriter, Store, StoreError, TaskState,
};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::metrics as m;
use crate::plan::{EventIn, TaskOut, parse_body, plan};
use crate::routes::AppState;

/// At most this many requests share one commit; more wait for the next.
const MAX_GROUP: usize = 256;

struct Job {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<RequestOutcome, String>>,
}

/// The sending side of the group committer. Dropping every clone lets the workers finish what is
/// queued and stop: that is how a graceful shutdown drains in-flight commits.
#[derive(Debug, Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({} events)", self.events.len())
    }
}

impl Committer {
    /// Starts `workers` commit loops on PostgreSQL (they overlap their round trips); on SQLite, one
    /// thread with the store's writer whatever `workers` says (SQLite has one writer).
    pub fn start(store: Store, workers: usize) -> (Committer, Vec<JoinHandle<()>>) {
        Committer::with_handoff(store, workers, None)
    }

    /// [`Committer::start`], handing stream tasks to the executor of this process.
    pub fn with_handoff(
        store: Store,
        workers: usize,
        handoff: Option<Handoff>,
    ) -> (Committer, Vec<JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel::<Job>(4 * MAX_GROUP);
        if let Some(writer) = store.sqlite_writer() {
            return (Committer { tx }, vec![writer_thread(writer, rx, handoff)]);
        }
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..workers.max(1))
            .map(|_| {
                let (store, rx, handoff) = (store.clone(), rx.clone(), handoff.clone());
                tokio::spawn(async move { commit_loop(store, rx, handoff).await })
            })
            .collect();
        (Committer { tx }, handles)
    }

    /// Stores one request's events; returns once they are durable (or why not).
    pub async fn submit(&self, events: Vec<NewEvent>) -> Result<RequestOutcome, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { events, reply })
            .await
            .map_err(|_| ApiError::unavailable(&"sluice is shutting down"))?;
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(ApiError::unavailable(&e)),
            Err(_) => Err(ApiError::unavailable(&"the committer stopped")),
        }
    }
}

/// SQLite: one thread of its own that writes each group with [`SqliteWriter`]. The statements run
/// on this thread, not as messages to a connection's worker thread; and the runtime's threads,
/// busy with HTTP, are not between one statement and the next.
fn writer_thread(
    writer: Arc<SqliteWriter>,
    mut rx: mpsc::Receiver<Job>,
    handoff: Option<Handoff>,
) -> JoinHandle<()> {
    let (done, finished) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new().name("sluice-ingest".into()).spawn(move || {
        while let Some(first) = rx.blocking_recv() {
            let jobs = take_group(first, &mut rx);
            let (requests, replies, mut reserved) = prepare(jobs, handoff.as_ref());
            let started = Instant::now();
            let result = writer.ingest(requests);
            answer(result, started, replies, &mut reserved, handoff.as_ref());
        }
        let _ = done.send(());
    });
    tokio::spawn(async move {
        match spawned {
            // Resolves when the thread has answered every queued request and stopped.
            Ok(_) => {
                let _ = finished.await;
            }
            Err(e) => tracing::error!(error = %e, "could not start the ingest writer thread"),
        }
    })
}

async fn commit_loop(store: Store, rx: Arc<Mutex<mpsc::Receiver<Job>>>, handoff: Option<Handoff>) {
    loop {
        let jobs = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            take_group(first, &mut rx)
        };
        let (requests, replies, mut reserved) = prepare(jobs, handoff.as_ref());
        let started = Instant::now();
        let result = store.ingest(&requests).await;
        answer(result, started, replies, &mut reserved, handoff.as_ref());
    }
}

/// `first` and every request that queued up behind it, up to [`MAX_GROUP`].
fn take_group(first: Job, rx: &mut mpsc::Receiver<Job>) -> Vec<Job> {
    let mut jobs = vec![first];
    while jobs.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    jobs
}

type Replies = Vec<oneshot::Sender<Result<RequestOutcome, String>>>;

fn prepare(
    jobs: Vec<Job>,
    handoff: Option<&Handoff>,
) -> (Vec<Vec<NewEvent>>, Replies, HashMap<String, Reserved>) {
    let (mut requests, replies): (Vec<Vec<NewEvent>>, Replies) =
        jobs.into_iter().map(|j| (j.events, j.reply)).unzip();
    let reserved = match handoff {
        Some(h) => claim_for(h, &mut requests),
        None => HashMap::new(),
    };
    (requests, replies, reserved)
}

fn answer(
    result: Result<Vec<RequestOutcome>, StoreError>,
    started: Instant,
    replies: Replies,
    reserved: &mut HashMap<String, Reserved>,
    handoff: Option<&Handoff>,
) {
    metrics::histogram!(m::INGEST_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::histogram!(m::INGEST_GROUP_SIZE).record(replies.len() as f64);
    match result {
        Ok(outcomes) => {
            if let Some(h) = handoff {
                hand_over(h, &outcomes, reserved);
            }
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A client that hung up still got its events stored; nothing to undo.
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            let text = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(text.clone()));
            }
        }
    }
}

/// Marks the group's stream and flex tasks that have a free call slot as claimed by the executor
/// (in deadline order, when slots are short), and keeps their slots by task id.
fn claim_for(h: &Handoff, requests: &mut [Vec<NewEvent>]) -> HashMap<String, Reserved> {
    let mut reserved = HashMap::new();
    let lease = h.lease(sluice_engine::now_ms());
    let mut ready: Vec<&mut sluice_store::NewTask> = requests
        .iter_mut()
        .flatten()
        .flat_map(|e| e.tasks.iter_mut())
        .filter(|t| t.state == TaskState::Queued && (t.lane == "stream" || t.lane == "flex"))
        .collect();
    ready.sort_by_key(|t| t.deadline);
    let ready_count = ready.len();
    for t in ready {
        let Some(slot) = h.reserve() else { break };
        t.state = TaskState::Running;
        t.lease = Some(lease.clone());
        reserved.insert(t.id.clone(), slot);
    }
    metrics::counter!(m::INGEST_HANDOFFS, "outcome" => "queued")
        .increment((ready_count - reserved.len()) as u64);
    reserved
}

/// Hands the tasks stored claimed to the executor. A replayed event stored nothing: its planned
/// tasks were not written, and their slots go back when `reserved` is dropped.
fn hand_over(h: &Handoff, outcomes: &[RequestOutcome], reserved: &mut HashMap<String, Reserved>) {
    if reserved.is_empty() {
        return;
    }
    let mut handed = 0;
    for ingested in outcomes.iter().flatten().flatten().filter(|i| !i.replayed) {
        for t in &ingested.tasks {
            if let Some(slot) = reserved.remove(&t.id) {
                h.hand(t.clone(), ingested.event.clone(), slot);
                handed += 1;
            }
        }
    }
    metrics::counter!(m::INGEST_HANDOFFS, "outcome" => "handed").increment(handed);
}

/// `POST /v1/events`: one event or an array of them.
pub async fn post_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = match ingest_body(&state, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    metrics::histogram!(m::INGEST_REQUEST_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::counter!(m::INGEST_REQUESTS, "status" => response.status().as_u16().to_string())
        .increment(1);
    response
}

async fn ingest_body(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| body_error(&e, state.options.max_body_bytes))?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "the Idempotency-Key header must be visible ASCII; nothing was stored",
            )
        })?),
    };
    let (events, is_array) = parse_body(&body, key)?;
    let streamed = wants_stream(headers);
    if streamed && is_array {
        return Err(ApiError::bad_request(
            "stream_one_event",
            "`Accept: text/event-stream` streams the tasks of one event: post an array without it, \
             and follow each task's stream_url; nothing was stored",
        ));
    }
    let mut outcome = store_events(state, events, is_array, "api").await?;
    if streamed && let Some(ingested) = outcome.pop() {
        return Ok(crate::stream::event_stream(state.clone(), ingested));
    }
    Ok(respond(outcome, is_array))
}

/// A client that asks for Server-Sent Events gets the `202` and the tokens in one response.
fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("text/event-stream")))
}

/// Plans and stores events; shared by `/v1/events` and `/v1/hooks/{source}`.
pub async fn store_events(
    state: &AppState,
    events: Vec<EventIn>,
    is_array: bool,
    source: &str,
) -> Result<Vec<Ingested>, ApiError> {
    let now = chrono::Utc::now();
    let mut planned = Vec::with_capacity(events.len());
    for (i, ev) in events.into_iter().enumerate() {
        planned.push(plan(
            &state.config,
            ev,
            is_array.then_some(i),
            now,
            &state.options.day_clock,
            source,
            state.turnarounds.as_ref(),
        )?);
    }
    match state.committer.submit(planned).await? {
        Ok(done) => {
            let streamed = done
                .iter()
                .flat_map(|i| &i.tasks)
                .any(|t| t.state == TaskState::Queued && (t.lane == "stream" || t.lane == "flex"));
            if let (true, Some(wake)) = (streamed, &state.wake) {
                wake.notify_one();
            }
            for ingested in &done {
                let outcome = if ingested.replayed { "replayed" } else { "stored" };
                metrics::counter!(m::INGEST_EVENTS, "outcome" => outcome).increment(1);
                if !ingested.replayed {
                    for t in &ingested.tasks {
                        metrics::counter!(m::INGEST_TASKS, "workload" => t.workload.clone(), "lane" => t.lane.clone())
                            .increment(1);
                    }
                }
            }
            Ok(done)
        }
        Err(KeyConflict { idempotency_key, existing_event_id }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            format!(
                "idempotency key {idempotency_key:?} was already used for a different request (event {existing_event_id}); \
                 nothing was stored. Use a new key for a new event."
            ),
        )),
    }
}

pub fn body_error(e: &BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is over the limit of {limit} bytes"),
        )
    } else {
        ApiError::bad_request("unreadable_body", format!("the body could not be read: {e}"))
    }
}

/// What the `202` says of one event.
#[derive(Debug, serde::Serialize)]
pub(crate) struct EventOut<'a> {
    event_id: &'a str,
    replayed: bool,
    tasks: Vec<TaskOut>,
}

pub(crate) fn view(i: &Ingested) -> EventOut<'_> {
    EventOut {
        event_id: &i.event.id,
        replayed: i.replayed,
        tasks: i.tasks.iter().map(TaskOut::from_record).collect(),
    }
}

/// `202` with what was stored; a replay answers as the original did, flagged by a header.
pub fn respond(done: Vec<Ingested>, is_array: bool) -> Response {
    // Serialized straight from these structs: no JSON tree is built for a 202.
    #[derive(serde::Serialize)]
    struct Events<'a> {
        events: Vec<EventOut<'a>>,
    }
    let all_replayed = done.iter().all(|i| i.replayed);
    let mut response = if is_array {
        (StatusCode::ACCEPTED, Json(Events { events: done.iter().map(view).collect() }))
            .into_response()
    } else {
        match done.first() {
            Some(i) => (StatusCode::ACCEPTED, Json(view(i))).into_response(),
            None => (StatusCode::ACCEPTED, Json(json!({}))).into_response(),
        }
    };
    if all_replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
