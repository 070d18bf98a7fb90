//! `GET /v1/tasks/{id}/stream`: a task's tokens as Server-Sent Events, as the provider produces
//! them; and `POST /v1/events` with `Accept: text/event-stream`, which answers with the event's
//! `accepted` body and then the tokens of all its streamed tasks in the same response.
//!
//! Events: `delta` (`{"task_id": …, "text": …}`: a watcher that connects late first gets
//! everything produced so far in one delta), `reset` (drop what you have: an attempt failed
//! after producing text and a retry starts over, or the watcher fell behind and gets the text so
//! far again), `status` (`{"task_id": …, "message": …}`: the task is waiting to run
//! again), and a final `done` (the result, its usage and cost) or `failed` (the reason) per task.
//! A task that is not running in this process is followed through the store until it runs here
//! or ends.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::channel::mpsc;
use futures::{SinkExt, Stream};
use serde_json::json;
use sluice_engine::hub::{Update, Watch};
use sluice_store::{Ingested, ResultRecord, TaskDetail, TaskState};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::routes::AppState;

type Tx = mpsc::Sender<Result<Event, Infallible>>;

/// How long a follower of a task it saw accepted waits for the start before asking the store.
const FRESH_START: Duration = Duration::from_millis(100);

/// How long a follower whose task is not running here waits between reads of the store, at
/// first and at most. A start or an end in this process wakes it at once; the store only tells
/// it what another process did. The wait doubles up to the cap, so that the watchers of
/// thousands of queued tasks do not read the store thousands of times a second while the
/// executor works through them (they did, and it starved the executor of the store).
const POLL_FIRST: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(2);

pub async fn stream_task(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Unknown ids are a 404 now, not an empty stream. A task running here exists: no read.
    let live = state.hub.as_ref().is_some_and(|hub| hub.is_live(&id));
    if !live {
        state
            .store
            .task_state(&id)
            .await
            .map_err(|e| ApiError::unavailable(&e))?
            .ok_or_else(|| ApiError::not_found("task", &id))?;
    }
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(follow(state, id, tx, false));
    Ok(Sse::new(rx).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn event(name: &str, data: serde_json::Value) -> Result<Event, Infallible> {
    Ok(Event::default().event(name).data(data.to_string()))
}

/// The answer to `POST /v1/events` for a client that asked for a stream: `202`, an `accepted`
/// event with what a plain `202` says, then the tokens of every task in the stream and flex lanes
/// as they come (each event names its task), and the end of the response once each of them has
/// its `done` or `failed`. Tasks in the batch lane are listed in `accepted` and not waited for.
pub fn event_stream(state: Arc<AppState>, ingested: Ingested) -> Response {
    let (mut tx, rx) = mpsc::channel(256);
    let accepted = serde_json::to_string(&crate::ingest::view(&ingested)).unwrap_or_default();
    // A fresh channel has room: this cannot fail.
    let _ = tx.try_send(Ok(Event::default().event("accepted").data(accepted)));
    for t in ingested.tasks.iter().filter(|t| t.lane == "stream" || t.lane == "flex") {
        tokio::spawn(follow(state.clone(), t.id.clone(), tx.clone(), !ingested.replayed));
    }
    // The response ends when the last follower drops its sender.
    drop(tx);
    let mut response = (
        StatusCode::ACCEPTED,
        Sse::new(rx).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
        .into_response();
    if ingested.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Feeds one watcher until the task ends or the watcher hangs up (a send fails).
async fn follow(state: Arc<AppState>, id: String, mut tx: Tx, mut fresh: bool) {
    let Some(hub) = state.hub.clone() else { return };
    let mut waiting_said = false;
    let mut poll = POLL_FIRST;
    // Bounded by the task's life: it ends, or the watcher leaves; a read of the store between.
    loop {
        let mut started = match hub.watch_or_wait(&id) {
            Err(wait) => wait,
            Ok(mut watch) => {
                (waiting_said, fresh, poll) = (false, false, POLL_FIRST);
                match relay(&mut watch, &id, &mut tx).await {
                    Relayed::Gone | Relayed::Done => return,
                    Relayed::Lagged => continue,
                    Relayed::Ended => {}
                }
                // It may run again (a retry, after a stop): wait for that start, not any.
                match hub.watch_or_wait(&id) {
                    Err(wait) => wait,
                    Ok(_) => continue,
                }
            }
        };
        // A task just accepted is usually handed to the executor at once: give it a moment to
        // start before reading the store, so that the common case costs no read and no status.
        // One that ended already (its call began while its event was committed) is read at once.
        if fresh {
            fresh = false;
            if !hub.ended_recently(&id)
                && tokio::time::timeout(FRESH_START, &mut started).await.is_ok()
            {
                continue;
            }
        }
        match state.store.task_state(&id).await {
            Ok(Some((task_state, _))) if task_state.is_final() => match state.store.task(&id).await
            {
                Ok(Some(detail)) => {
                    let _ = tx.send(final_event(&detail)).await;
                    return;
                }
                Ok(None) => return,
                Err(e) => tracing::warn!(error = %e, "cannot read a task for its stream"),
            },
            Ok(Some((task_state, lane))) => {
                if !waiting_said {
                    waiting_said = true;
                    let message = format!("the task is {} in the {lane} lane", task_state.as_str());
                    let status = json!({ "task_id": id, "message": message });
                    if tx.send(event("status", status)).await.is_err() {
                        return;
                    }
                }
            }
            Ok(None) => return,
            Err(e) => tracing::warn!(error = %e, "cannot read a task for its stream"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::select! {
            () = &mut started => {}
            _ = tokio::time::sleep(poll) => poll = (poll * 2).min(POLL_MAX),
        }
    }
}

/// How relaying a live task ended.
enum Relayed {
    /// The watcher hung up.
    Gone,
    /// The task finished, and its final event was sent.
    Done,
    /// This run of the task ended (finished, stopped, or its stream closed): ask the store.
    Ended,
    /// The watcher fell behind and missed deltas; it was sent a `reset`, and starts over from
    /// the text so far.
    Lagged,
}

/// Sends the text so far, then each update of one run of a task, as SSE events.
async fn relay(watch: &mut Watch, id: &str, tx: &mut Tx) -> Relayed {
    let first = (!watch.so_far.is_empty())
        .then(|| event("delta", json!({ "task_id": id, "text": watch.so_far })));
    if let Some(first) = first
        && tx.send(first).await.is_err()
    {
        return Relayed::Gone;
    }
    loop {
        let (next, then) = match watch.updates.recv().await {
            Ok(Update::Delta(text)) => {
                (event("delta", json!({ "task_id": id, "text": text })), None)
            }
            Ok(Update::Reset) => (event("reset", json!({ "task_id": id })), None),
            Ok(Update::Stopped(message)) => {
                let status = json!({ "task_id": id, "message": message });
                (event("status", status), Some(Relayed::Ended))
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                (event("reset", json!({ "task_id": id })), Some(Relayed::Lagged))
            }
            Ok(Update::Finished(f)) => {
                let done = done_event(id, &f.workload, &f.lane, Some(&f.result), f.cost_nanousd);
                (done, Some(Relayed::Done))
            }
            // The sender went away (it ended meanwhile, and this watcher missed how).
            Err(broadcast::error::RecvError::Closed) => return Relayed::Ended,
        };
        if tx.send(next).await.is_err() {
            return Relayed::Gone;
        }
        if let Some(then) = then {
            return then;
        }
    }
}

/// The `done` event of a task that succeeded: the same whether the executor of this process
/// just told it or the store did.
fn done_event(
    id: &str,
    workload: &str,
    lane: &str,
    r: Option<&ResultRecord>,
    cost_nanousd: i64,
) -> Result<Event, Infallible> {
    event(
        "done",
        json!({
            "task_id": id,
            "workload": workload,
            "lane": lane,
            "output": r.map(|r| r.output.clone()),
            "stop_reason": r.map(|r| r.stop_reason.clone()),
            "usage": r.map(|r| json!({
                "input_tokens": r.input_tokens,
                "cached_input_tokens": r.cached_input_tokens,
                "output_tokens": r.output_tokens,
            })),
            "cost_usd": cost_nanousd as f64 / 1e9,
        }),
    )
}

fn final_event(d: &TaskDetail) -> Result<Event, Infallible> {
    let t = &d.task;
    if t.state == TaskState::Succeeded {
        done_event(&t.id, &t.workload, &t.lane, d.result.as_ref(), d.cost_nanousd)
    } else {
        event("failed", json!({ "task_id": t.id, "state": t.state, "reason": t.last_error }))
    }
}
