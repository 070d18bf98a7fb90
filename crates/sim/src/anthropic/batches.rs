//! Message Batches (§2): create, retrieve, list, cancel, delete, results.
//!
//! A batch advances lazily: every read computes where it stands at that instant. Counts stay at
//! `processing` until the whole batch ends, then every bucket, `ended_at` and `results_url` are set
//! in the same transition, and the succeeded lines are billed at the batch price.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use rand::Rng;
use rand::seq::SliceRandom;
use serde::Deserialize;
use serde_json::{Value, json};

use super::messages::{answer, message_json, parse};
use super::{ApiError, Version, error_response, headers};
use crate::charges::Billable;
use crate::faults::Fault;
use crate::http::{self, json_response};
use crate::models::Tier;
use crate::state::{AppState, Created};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Processing,
    Succeeded,
    Errored,
    Canceled,
    Expired,
}

#[derive(Debug)]
pub(crate) struct AnthropicBatch {
    id: String,
    key: String,
    version: Version,
    created: Created,
    /// When processing would end on its own (real time).
    done: Instant,
    /// End of the completion window (real time).
    window_end: Instant,
    expire_whole: bool,
    requests: Vec<(String, Value)>,
    /// Each line's share of the turnaround at which it finishes (decides what a cancel keeps).
    progress: Vec<f64>,
    cancel_at: Option<Instant>,
    ended_at: Option<Instant>,
    outcomes: Vec<Outcome>,
    results: Vec<String>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl AnthropicBatch {
    fn json(&self, state: &AppState) -> Value {
        let mut counts = [0u64; 5];
        for o in &self.outcomes {
            let i = match o {
                Outcome::Processing => 0,
                Outcome::Succeeded => 1,
                Outcome::Errored => 2,
                Outcome::Canceled => 3,
                Outcome::Expired => 4,
            };
            if let Some(c) = counts.get_mut(i) {
                *c += 1;
            }
        }
        let status = match (self.ended_at, self.cancel_at) {
            (Some(_), _) => "ended",
            (None, Some(_)) => "canceling",
            (None, None) => "in_progress",
        };
        let window =
            chrono::Duration::from_std(state.settings.config.batch.window).unwrap_or_default();
        json!({
            "id": self.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": {
                "processing": counts[0], "succeeded": counts[1], "errored": counts[2],
                "canceled": counts[3], "expired": counts[4],
            },
            "created_at": ts(self.created.utc),
            "expires_at": ts(self.created.utc + window),
            "ended_at": self.ended_at.map(|t| ts(self.created.utc_at(t))),
            "cancel_initiated_at": self.cancel_at.map(|t| ts(self.created.utc_at(t))),
            "archived_at": null,
            "results_url": self.ended_at.map(|_| format!("{}/v1/messages/batches/{}/results", state.base_url, self.id)),
        })
    }

    /// Moves the batch to where it stands at `now`.
    fn advance(&mut self, state: &AppState, now: Instant) {
        if self.ended_at.is_some() {
            return;
        }
        let natural =
            if self.expire_whole { self.window_end } else { self.done.min(self.window_end) };
        let cancel_end =
            self.cancel_at.map(|c| c + state.clock.real(state.settings.config.batch.cancel_delay));
        let end = cancel_end.map_or(natural, |c| c.min(natural));
        if now < end {
            return;
        }
        let canceled = cancel_end.is_some_and(|c| c < natural);
        let expired = !canceled && (self.expire_whole || self.done > self.window_end);
        self.finish(state, end, canceled, expired);
    }

    fn finish(&mut self, state: &AppState, end: Instant, canceled: bool, expired: bool) {
        let mut rng = state.batch_rng(&self.id);
        let cfg = &state.settings.config.batch;
        let span = self.done.saturating_duration_since(self.created.instant);
        let mut lines = Vec::with_capacity(self.requests.len());
        for (i, (custom_id, params)) in self.requests.iter().enumerate() {
            let finished_at =
                self.created.instant + span.mul_f64(self.progress.get(i).copied().unwrap_or(1.0));
            let cut_off = if canceled {
                self.cancel_at
            } else if expired {
                Some(self.window_end)
            } else {
                None
            };
            let (x, y): (f64, f64) = (rng.random(), rng.random());
            let (outcome, result) = if cut_off.is_some_and(|c| finished_at > c) || self.expire_whole
            {
                if canceled {
                    (Outcome::Canceled, json!({"type": "canceled"}))
                } else {
                    (Outcome::Expired, json!({"type": "expired"}))
                }
            } else if custom_id.contains("sim-expired") || x < cfg.line_expire_rate {
                (Outcome::Expired, json!({"type": "expired"}))
            } else if custom_id.contains("sim-errored") || y < cfg.line_error_rate {
                let e = ApiError::new(500, "api_error", "Internal server error");
                (Outcome::Errored, json!({"type": "errored", "error": e.body(None)}))
            } else {
                match parse(state, params, self.version, true) {
                    Err(e) => (Outcome::Errored, json!({"type": "errored", "error": e.body(None)})),
                    Ok(p) => {
                        let out = answer(state, &p);
                        let msg_id = http::new_id("msg_01", 22);
                        state.charges.record(Billable {
                            model: p.model,
                            model_name: p.model_name.clone(),
                            tier: Tier::Batch,
                            endpoint: "batch",
                            request_id: msg_id.clone(),
                            response_id: msg_id.clone(),
                            batch_id: Some(self.id.clone()),
                            custom_id: Some(custom_id.clone()),
                            user_id: p.user_id.clone(),
                            user: None,
                            metadata: None,
                            key_fingerprint: http::fingerprint(&self.key),
                            input_tokens: p.input_tokens,
                            output_tokens: out.output_tokens,
                        });
                        let message = message_json(&p, &out, &msg_id, "batch");
                        (Outcome::Succeeded, json!({"type": "succeeded", "message": message}))
                    }
                }
            };
            if let Some(o) = self.outcomes.get_mut(i) {
                *o = outcome;
            }
            lines.push(json!({"custom_id": custom_id, "result": result}).to_string());
        }
        if cfg.shuffle_results {
            lines.shuffle(&mut rng);
        }
        self.results = lines;
        self.ended_at = Some(end);
    }
}

fn custom_id_ok(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `POST /v1/messages/batches`.
pub(crate) async fn create(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let caller = match super::authenticate(&state, &parts.headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let rid = caller.request_id.clone();
    let limits = state.limiter.snapshot(&caller.key);
    let fail = |e: ApiError| error_response(&e, &rid, Some(&limits));
    let forced = match http::forced_fault(&parts.headers) {
        Ok(f) => f,
        Err(m) => return fail(ApiError::invalid(m)),
    };
    let Ok(bytes) = http::read_body(body, 256 * 1024 * 1024).await else {
        return fail(ApiError::new(
            413,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ));
    };
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return fail(ApiError::invalid("There was an error parsing the body as JSON"));
    };
    let requests = match value.get("requests") {
        None => return fail(ApiError::invalid("requests: Field required")),
        Some(Value::Array(r)) => r,
        Some(_) => return fail(ApiError::invalid("requests: Input should be a valid list")),
    };
    if requests.is_empty() || requests.len() > 100_000 {
        return fail(ApiError::invalid("requests: List should have between 1 and 100000 items"));
    }
    let mut seen = HashSet::new();
    let mut lines = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let Some(cid) = r.get("custom_id").and_then(Value::as_str) else {
            return fail(ApiError::invalid(format!("requests.{i}.custom_id: Field required")));
        };
        if !custom_id_ok(cid) {
            return fail(ApiError::invalid(format!(
                "requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )));
        }
        if !seen.insert(cid.to_string()) {
            return fail(ApiError::invalid(format!(
                "requests.{i}.custom_id: custom_id '{cid}' is used more than once in this batch"
            )));
        }
        let Some(params) = r.get("params").filter(|p| p.is_object()) else {
            return fail(ApiError::invalid(format!("requests.{i}.params: Field required")));
        };
        lines.push((cid.to_string(), params.clone()));
    }
    if let Some(Fault::Stall(d)) = forced {
        // A slow create: the batch exists only once the answer is on its way.
        state.sleep(state.dice.stall_for(d)).await;
    }
    let id = http::sortable_id("msgbatch_");
    let mut rng = state.batch_rng(&id);
    let created = Created::now();
    let turnaround = state.draw_turnaround(&mut rng);
    let cfg = &state.settings.config.batch;
    let expire_whole = forced == Some(Fault::Expire) || rng.random::<f64>() < cfg.expire_rate;
    let progress = (0..lines.len()).map(|_| rng.random::<f64>()).collect();
    let batch = AnthropicBatch {
        id,
        key: caller.key.clone(),
        version: caller.version,
        created,
        done: created.instant + state.clock.real(turnaround),
        window_end: created.instant + state.clock.real(cfg.window),
        expire_whole,
        outcomes: vec![Outcome::Processing; lines.len()],
        requests: lines,
        progress,
        cancel_at: None,
        ended_at: None,
        results: Vec::new(),
    };
    let body = batch.json(&state);
    state.store().anthropic.push(batch);
    json_response(StatusCode::OK, &body, headers(&rid, Some(&limits)))
}

/// Runs `f` on the batch `id` after advancing it; 404 when unknown.
fn with_batch<T>(
    state: &AppState,
    id: &str,
    f: impl FnOnce(&mut AnthropicBatch) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut store = state.store();
    let Some(b) = store.anthropic.iter_mut().find(|b| b.id == id) else {
        return Err(ApiError::not_found(format!("No message batch found with id '{id}'")));
    };
    b.advance(state, Instant::now());
    f(b)
}

fn respond(state: &AppState, caller: &super::Caller, r: Result<Value, ApiError>) -> Response {
    let limits = state.limiter.snapshot(&caller.key);
    match r {
        Ok(v) => json_response(StatusCode::OK, &v, headers(&caller.request_id, Some(&limits))),
        Err(e) => error_response(&e, &caller.request_id, Some(&limits)),
    }
}

/// `GET /v1/messages/batches/{id}`.
pub(crate) async fn retrieve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let caller = match super::authenticate(&state, req.headers()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = with_batch(&state, &id, |b| Ok(b.json(&state)));
    respond(&state, &caller, r)
}

/// `POST /v1/messages/batches/{id}/cancel`: an ended batch is returned unchanged.
pub(crate) async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let caller = match super::authenticate(&state, req.headers()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = with_batch(&state, &id, |b| {
        if b.ended_at.is_none() && b.cancel_at.is_none() {
            b.cancel_at = Some(Instant::now());
            b.advance(&state, Instant::now());
        }
        Ok(b.json(&state))
    });
    respond(&state, &caller, r)
}

/// `DELETE /v1/messages/batches/{id}`: only once processing has ended.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let caller = match super::authenticate(&state, req.headers()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = with_batch(&state, &id, |b| {
        if b.ended_at.is_none() {
            return Err(ApiError::invalid(format!(
                "Message batch {id} cannot be deleted while processing; cancel it first"
            )));
        }
        Ok(json!({"id": id, "type": "message_batch_deleted"}))
    });
    if r.is_ok() {
        state.store().anthropic.retain(|b| b.id != id);
    }
    respond(&state, &caller, r)
}

/// `GET /v1/messages/batches/{id}/results`: JSONL, one line per request, in shuffled order.
pub(crate) async fn results(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let caller = match super::authenticate(&state, req.headers()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = with_batch(&state, &id, |b| {
        if b.ended_at.is_none() {
            return Err(ApiError::invalid(format!(
                "Message batch {id} has not ended yet; its results are not available"
            )));
        }
        let mut body = String::with_capacity(b.results.iter().map(|l| l.len() + 1).sum());
        for l in &b.results {
            body.push_str(l);
            body.push('\n');
        }
        Ok(body)
    });
    match r {
        Ok(body) => {
            let mut h = headers(&caller.request_id, Some(&state.limiter.snapshot(&caller.key)));
            h.push((
                "content-disposition",
                format!("attachment; filename*=utf-8''{id}_results.jsonl"),
            ));
            let resp = Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/x-jsonl")
                .body(axum::body::Body::from(body))
                .unwrap_or_default();
            http::header_pairs(resp, h)
        }
        Err(e) => {
            error_response(&e, &caller.request_id, Some(&state.limiter.snapshot(&caller.key)))
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<String>,
    after_id: Option<String>,
    before_id: Option<String>,
}

/// `GET /v1/messages/batches`: newest first, `after_id` pages towards older batches.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
    req: Request,
) -> Response {
    let caller = match super::authenticate(&state, req.headers()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 20,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            let e = ApiError::invalid("limit: Input should be between 1 and 1000");
            return error_response(
                &e,
                &caller.request_id,
                Some(&state.limiter.snapshot(&caller.key)),
            );
        }
    };
    let r = {
        let mut store = state.store();
        let now = Instant::now();
        for b in store.anthropic.iter_mut() {
            b.advance(&state, now);
        }
        // Newest first.
        let all: Vec<&AnthropicBatch> = store.anthropic.iter().rev().collect();
        let pos = |id: &str| all.iter().position(|b| b.id == id);
        let (page, has_more): (Vec<&AnthropicBatch>, bool) = match (&q.after_id, &q.before_id) {
            (Some(a), _) => {
                let start = pos(a).map_or(all.len(), |i| i + 1);
                let rest = all.get(start..).unwrap_or(&[]);
                (rest.iter().take(limit).copied().collect(), rest.len() > limit)
            }
            (None, Some(b)) => {
                let end = pos(b).unwrap_or(0);
                let before = all.get(..end).unwrap_or(&[]);
                let from = before.len().saturating_sub(limit);
                (before.get(from..).unwrap_or(&[]).to_vec(), from > 0)
            }
            (None, None) => (all.iter().take(limit).copied().collect(), all.len() > limit),
        };
        let data: Vec<Value> = page.iter().map(|b| b.json(&state)).collect();
        json!({
            "data": data,
            "has_more": has_more,
            "first_id": page.first().map(|b| b.id.clone()),
            "last_id": page.last().map(|b| b.id.clone()),
        })
    };
    respond(&state, &caller, Ok(r))
}

/// Advances every batch (so the charge log is complete when it is read).
pub(crate) fn advance_all(state: &AppState, now: Instant) {
    let mut store = state.store();
    for b in store.anthropic.iter_mut() {
        b.advance(state, now);
    }
}
