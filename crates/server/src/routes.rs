//! The router, its state, auth, and the read endpoints.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sluice_core::Config;
use sluice_store::{Store, TaskDetail, TaskQuery, TaskRecord, TaskState};

use crate::auth::Tokens;
use crate::error::ApiError;
use crate::ingest::{self, Committer};
use crate::plan::{TaskOut, rfc3339};
use crate::{hooks, metrics};

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Bodies over this are refused with `413`.
    pub max_body_bytes: usize,
    /// The clock of `needed_by` deadlines.
    pub day_clock: crate::plan::DayClock,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions { max_body_bytes: 1024 * 1024, day_clock: Default::default() }
    }
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub committer: Committer,
    pub tokens: Tokens,
    /// HMAC keys of the webhook sources whose secret is set, by source name.
    pub hook_keys: HashMap<String, Vec<u8>>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub options: ServerOptions,
    /// Live token streams; `None` when no executor runs in this process.
    pub hub: Option<sluice_engine::Hub>,
    /// Wakes the stream executor when ingest stored streamed tasks.
    pub wake: Option<Arc<tokio::sync::Notify>>,
    /// Batch turnaround learned by the batcher, for decisions at ingest.
    pub turnarounds: Option<sluice_engine::Turnarounds>,
}

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/events", post(ingest::post_events))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/tasks", get(list_tasks))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/stream", get(crate::stream::stream_task))
        .route("/v1/batches", get(list_batches))
        .route("/v1/batches/{id}", get(get_batch))
        .route("/v1/deliveries", get(list_deliveries))
        .route("/v1/deliveries/{id}/retry", post(retry_delivery))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(api)
        // Senders of webhooks cannot send our bearer token; their signature authenticates them.
        .route("/v1/hooks/{source}", post(hooks::post_hook))
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(state.options.max_body_bytes))
        .with_state(state)
}

async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if state.tokens.allows(header) {
        return next.run(request).await;
    }
    let message = if header.is_none() {
        "this route needs an API token: send Authorization: Bearer <token>"
    } else {
        "the API token is not valid"
    };
    ApiError::unauthorized(message).into_response()
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.counts().await {
        Ok(_) => Json(json!({ "status": "ok", "store": state.store.backend() })).into_response(),
        Err(e) => ApiError::unavailable(&e).into_response(),
    }
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn task_json(t: &TaskRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(TaskOut::from_record(t)).unwrap_or_else(|_| json!({}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert("event_id".into(), json!(t.event_id));
        obj.insert("rule".into(), json!(t.rule));
        obj.insert("after_task_id".into(), json!(t.after_task_id));
        obj.insert("attempts".into(), json!(t.attempts));
        obj.insert("batch_id".into(), json!(t.batch_id));
        obj.insert("last_error".into(), json!(t.last_error));
        obj.insert("created_at".into(), json!(rfc3339(t.created_at)));
        obj.insert("updated_at".into(), json!(rfc3339(t.updated_at)));
    }
    v
}

/// An id from a path, as the store may be asked for it: one with a NUL character names nothing
/// (and PostgreSQL's text cannot hold one, so asking would be a database error, not a 404).
fn stored_id<'a>(id: &'a str, kind: &str) -> Result<&'a str, ApiError> {
    if id.contains('\0') {
        return Err(ApiError::not_found(kind, id));
    }
    Ok(id)
}

async fn get_event(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (event, tasks) = state
        .store
        .event(stored_id(&id, "event")?)
        .await
        .map_err(|e| ApiError::unavailable(&e))?
        .ok_or_else(|| ApiError::not_found("event", &id))?;
    Ok(Json(json!({
        "id": event.id,
        "type": event.event_type,
        "payload": event.payload,
        "idempotency_key": event.idempotency_key,
        "source": event.source,
        "received_at": rfc3339(event.received_at),
        "tasks": tasks.iter().map(task_json).collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn get_task(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let TaskDetail { task, result, attempt_log, cost_nanousd } = state
        .store
        .task(stored_id(&id, "task")?)
        .await
        .map_err(|e| ApiError::unavailable(&e))?
        .ok_or_else(|| ApiError::not_found("task", &id))?;
    let mut v = task_json(&task);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "decision".into(),
            serde_json::from_str(task.decision.get()).unwrap_or_default(),
        );
        obj.insert("result".into(), json!(result));
        obj.insert("attempt_log".into(), json!(attempt_log));
        obj.insert("cost_usd".into(), json!(cost_nanousd as f64 / 1e9));
    }
    Ok(Json(v).into_response())
}

fn batch_json(b: &sluice_store::BatchRecord) -> serde_json::Value {
    json!({
        "id": b.id,
        "provider": b.provider,
        "model": b.model,
        "state": b.state,
        "provider_batch_id": b.provider_batch_id,
        "items": b.item_count,
        "bytes": b.bytes,
        "created_at": rfc3339(b.created_at),
        "submitted_at": b.submitted_at.map(rfc3339),
        "ended_at": b.ended_at.map(rfc3339),
        "last_error": b.last_error,
    })
}

/// `GET /v1/batches`: the latest batches, newest first.
async fn list_batches(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let batches = state.store.batches(100).await.map_err(|e| ApiError::unavailable(&e))?;
    Ok(Json(json!({ "batches": batches.iter().map(batch_json).collect::<Vec<_>>() }))
        .into_response())
}

/// `GET /v1/batches/{id}`: a batch, the count of its tasks by state, and the tasks.
async fn get_batch(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (batch, tasks) = state
        .store
        .batch(stored_id(&id, "batch")?)
        .await
        .map_err(|e| ApiError::unavailable(&e))?
        .ok_or_else(|| ApiError::not_found("batch", &id))?;
    let mut counts = serde_json::Map::new();
    for t in &tasks {
        let n = counts.get(t.state.as_str()).and_then(serde_json::Value::as_u64).unwrap_or(0);
        counts.insert(t.state.as_str().to_owned(), json!(n + 1));
    }
    let mut v = batch_json(&batch);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("counts".into(), serde_json::Value::Object(counts));
        obj.insert("tasks".into(), json!(tasks.iter().map(task_json).collect::<Vec<_>>()));
    }
    Ok(Json(v).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    state: Option<String>,
    workload: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

const MAX_PAGE: i64 = 500;

async fn list_tasks(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let task_state = match p.state.as_deref() {
        None => None,
        Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
            let known: Vec<&str> = TaskState::ALL.iter().map(|t| t.as_str()).collect();
            ApiError::unprocessable(
                "invalid_query",
                format!("state {s:?} is not one of {}", known.join(", ")),
            )
        })?),
    };
    let limit = p.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::unprocessable(
            "invalid_query",
            format!("limit must be 1 to {MAX_PAGE}, not {limit}"),
        ));
    }
    for (field, value) in [("workload", &p.workload), ("cursor", &p.cursor)] {
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            return Err(ApiError::unprocessable(
                "invalid_query",
                format!("{field} must not contain the NUL character (%00)"),
            ));
        }
    }
    let query = TaskQuery { state: task_state, workload: p.workload, after_id: p.cursor, limit };
    let tasks = state.store.tasks(&query).await.map_err(|e| ApiError::unavailable(&e))?;
    let next_cursor =
        (tasks.len() as i64 == limit).then(|| tasks.last().map(|t| t.id.clone())).flatten();
    Ok(Json(json!({
        "tasks": tasks.iter().map(task_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    }))
    .into_response())
}

fn delivery_json(d: &sluice_store::DeliveryRecord) -> serde_json::Value {
    json!({
        "id": d.id,
        "task_id": d.task_id,
        "sink": sluice_store::shown_sink(&d.sink),
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt_at": (d.state == "pending" || d.state == "sending").then(|| rfc3339(d.next_attempt_at)),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.updated_at),
    })
}

const DELIVERY_STATES: [&str; 4] = ["pending", "sending", "delivered", "failed"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryParams {
    state: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /v1/deliveries?state=&limit=&cursor=`: deliveries in the order they were created; with
/// `state=failed`, the results that never reached their sink.
async fn list_deliveries(
    State(state): State<Arc<AppState>>,
    params: Result<Query<DeliveryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if let Some(s) = p.state.as_deref().filter(|s| !DELIVERY_STATES.contains(s)) {
        return Err(ApiError::unprocessable(
            "invalid_query",
            format!("state {s:?} is not one of {}", DELIVERY_STATES.join(", ")),
        ));
    }
    let limit = p.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::unprocessable(
            "invalid_query",
            format!("limit must be 1 to {MAX_PAGE}, not {limit}"),
        ));
    }
    if p.cursor.as_deref().is_some_and(|v| v.contains('\0')) {
        return Err(ApiError::unprocessable(
            "invalid_query",
            "cursor must not contain the NUL character (%00)",
        ));
    }
    let query = sluice_store::DeliveryQuery { state: p.state, after_id: p.cursor, limit };
    let deliveries = state.store.deliveries(&query).await.map_err(|e| ApiError::unavailable(&e))?;
    let next_cursor = (deliveries.len() as i64 == limit)
        .then(|| deliveries.last().map(|d| d.id.clone()))
        .flatten();
    Ok(Json(json!({
        "deliveries": deliveries.iter().map(delivery_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    }))
    .into_response())
}

/// `POST /v1/deliveries/{id}/retry`: sends a failed delivery again (the receiver was down for
/// longer than the retry schedule, or was fixed after answering 410), with the same
/// `webhook-id`, so that a receiver that did get it after all drops the copy.
async fn retry_delivery(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let now = chrono::Utc::now().timestamp_millis();
    let outcome = state
        .store
        .redeliver(stored_id(&id, "delivery")?, now)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    match outcome {
        sluice_store::Redelivery::Queued(d) => {
            tracing::info!(delivery = %d.id, task = %d.task_id, "a failed delivery is sent again");
            Ok((StatusCode::ACCEPTED, Json(delivery_json(&d))).into_response())
        }
        sluice_store::Redelivery::NotFailed(d) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "delivery_not_failed",
            format!("delivery {} is {}: only a failed delivery is sent again", d.id, d.state),
        )),
        sluice_store::Redelivery::NotFound => Err(ApiError::not_found("delivery", &id)),
    }
}

/// The webhook keys of the config's sources, read from their environment variables. Sources whose
/// variable is unset, empty or not base64 are named in the returned list (their deliveries get
/// `503`).
pub fn hook_keys(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> (HashMap<String, Vec<u8>>, Vec<String>) {
    let mut keys = HashMap::new();
    let mut missing = Vec::new();
    for hook in &config.hooks {
        match env(&hook.secret_env).and_then(|s| hooks::decode_secret(&s)) {
            Some(key) => {
                keys.insert(hook.name.clone(), key);
            }
            None => missing.push(format!("{} ({})", hook.name, hook.secret_env)),
        }
    }
    (keys, missing)
}

/// Installs the metrics recorder (once per process).
pub fn metrics_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    metrics::install()
}
