//! Batches (§4.3–4.6): create, retrieve, list, cancel; output and error files.
//!
//! `validating → in_progress → finalizing → completed`, or `failed` (bad input lines), `expired`
//! (window passed), `cancelling → cancelled`. Lines finish one by one while `in_progress`, so
//! `request_counts` move; each succeeded line is billed at the batch price when it finishes.
//! Everything advances lazily, on each read.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use rand::Rng;
use rand::seq::SliceRandom;
use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::{answers, completion, parse};
use super::files::{StoredFile, not_found};
use super::{ApiError, error_response, headers};
use crate::charges::Billable;
use crate::faults::Fault;
use crate::http::{self, json_response};
use crate::models::Tier;
use crate::state::{AppState, Created};

const ENDPOINTS: &[&str] = &[
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Validating => "validating",
            Status::Failed => "failed",
            Status::InProgress => "in_progress",
            Status::Finalizing => "finalizing",
            Status::Completed => "completed",
            Status::Expired => "expired",
            Status::Cancelling => "cancelling",
            Status::Cancelled => "cancelled",
        }
    }
    fn terminal(self) -> bool {
        matches!(self, Status::Failed | Status::Completed | Status::Expired | Status::Cancelled)
    }
}

#[derive(Debug)]
struct Line {
    custom_id: String,
    body: Value,
    /// Share of the turnaround at which the line finishes.
    progress: f64,
    /// The output-file line once run, and whether it succeeded.
    result: Option<(bool, String)>,
}

#[derive(Debug, Default)]
struct Times {
    in_progress_at: Option<Instant>,
    finalizing_at: Option<Instant>,
    completed_at: Option<Instant>,
    failed_at: Option<Instant>,
    expired_at: Option<Instant>,
    cancelling_at: Option<Instant>,
    cancelled_at: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct OpenAiBatch {
    id: String,
    key: String,
    endpoint: String,
    input_file_id: String,
    metadata: Option<Value>,
    model: Option<String>,
    created: Created,
    validated: Instant,
    done: Instant,
    window_end: Instant,
    /// `created_at` + the completion window, in simulated (unaccelerated) time, like Anthropic's.
    expires_at: i64,
    expire_whole: bool,
    errors: Vec<Value>,
    lines: Vec<Line>,
    status: Status,
    times: Times,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
}

impl OpenAiBatch {
    fn json(&self) -> Value {
        let at = |t: Option<Instant>| t.map(|t| self.created.utc_at(t).timestamp());
        let finished = self.lines.iter().filter(|l| l.result.is_some());
        let completed = finished.clone().filter(|l| l.result.as_ref().is_some_and(|r| r.0)).count();
        let failed = finished.count() - completed;
        json!({
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": if self.errors.is_empty() { Value::Null } else { json!({"object": "list", "data": self.errors}) },
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status.as_str(),
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created.utc.timestamp(),
            "in_progress_at": at(self.times.in_progress_at),
            "expires_at": self.expires_at,
            "finalizing_at": at(self.times.finalizing_at),
            "completed_at": at(self.times.completed_at),
            "failed_at": at(self.times.failed_at),
            "expired_at": at(self.times.expired_at),
            "cancelling_at": at(self.times.cancelling_at),
            "cancelled_at": at(self.times.cancelled_at),
            "request_counts": {"total": self.lines.len(), "completed": completed, "failed": failed},
            "usage": {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            },
            "metadata": self.metadata,
        })
    }

    fn finish_time(&self, line: &Line) -> Instant {
        let start = self.validated;
        start + self.done.saturating_duration_since(start).mul_f64(line.progress)
    }

    /// Runs every line that has finished by `until`.
    fn run_lines(&mut self, state: &AppState, until: Instant) {
        if self.expire_whole {
            return;
        }
        let cfg = &state.settings.config.batch;
        let mut rng = state.batch_rng(&self.id);
        for i in 0..self.lines.len() {
            let (x, y): (f64, f64) = (rng.random(), rng.random());
            let Some(line) = self.lines.get(i) else { continue };
            if line.result.is_some() || self.finish_time(line) > until {
                continue;
            }
            let result = self.run_line(state, i, x < cfg.line_expire_rate, y < cfg.line_error_rate);
            if let Some(l) = self.lines.get_mut(i) {
                l.result = Some(result);
            }
        }
    }

    fn run_line(
        &mut self,
        state: &AppState,
        i: usize,
        expire: bool,
        error: bool,
    ) -> (bool, String) {
        let Some(line) = self.lines.get(i) else { return (false, String::new()) };
        let custom_id = line.custom_id.clone();
        let line_id = http::new_id("batch_req_", 24);
        let rid = super::request_id();
        if custom_id.contains("sim-expired") || expire {
            return (false, expired_line(&line_id, &custom_id, "batch_expired"));
        }
        if custom_id.contains("sim-errored") || error {
            let e = ApiError::new(
                500,
                "server_error",
                "The server had an error while processing your request. Sorry about that!",
            );
            let out = json!({"id": line_id, "custom_id": custom_id, "response": {"status_code": 500, "request_id": rid, "body": e.body()}, "error": null});
            return (false, out.to_string());
        }
        match parse(state, &line.body, true) {
            Err(e) => {
                let out = json!({"id": line_id, "custom_id": custom_id, "response": {"status_code": e.status.as_u16(), "request_id": rid, "body": e.body()}, "error": null});
                (false, out.to_string())
            }
            Ok(p) => {
                let outs = answers(state, &p);
                let output: u64 = outs.iter().map(|o| o.output_tokens).sum();
                let cid = http::new_id("chatcmpl-", 29);
                state.charges.record(Billable {
                    model: p.model,
                    model_name: p.model_name.clone(),
                    tier: Tier::Batch,
                    endpoint: "batch",
                    request_id: rid.clone(),
                    response_id: cid.clone(),
                    batch_id: Some(self.id.clone()),
                    custom_id: Some(custom_id.clone()),
                    user_id: None,
                    user: p.user.clone(),
                    metadata: self.metadata.clone().or_else(|| p.metadata.clone()),
                    key_fingerprint: http::fingerprint(&self.key),
                    input_tokens: p.input_tokens,
                    output_tokens: output,
                });
                self.input_tokens += p.input_tokens;
                self.output_tokens += output;
                let body = completion(&p, &outs, &cid, chrono::Utc::now().timestamp(), "default");
                let out = json!({"id": line_id, "custom_id": custom_id, "response": {"status_code": 200, "request_id": rid, "body": body}, "error": null});
                (true, out.to_string())
            }
        }
    }

    /// Ends the batch at `at` in `status`: lines that never ran get `code`, files are written.
    fn close(
        &mut self,
        state: &AppState,
        status: Status,
        at: Instant,
        unrun: &str,
        files: &mut Vec<StoredFile>,
    ) {
        for l in &mut self.lines {
            if l.result.is_none() {
                l.result = Some((
                    false,
                    expired_line(&http::new_id("batch_req_", 24), &l.custom_id, unrun),
                ));
            }
        }
        let mut rng = state.batch_rng(&self.id);
        let mut ok: Vec<&str> = Vec::new();
        let mut bad: Vec<&str> = Vec::new();
        for l in &self.lines {
            if let Some((success, text)) = &l.result {
                if *success { ok.push(text) } else { bad.push(text) }
            }
        }
        if state.settings.config.batch.shuffle_results {
            ok.shuffle(&mut rng);
            bad.shuffle(&mut rng);
        }
        let file = |lines: &[&str], kind: &str| -> Option<StoredFile> {
            if lines.is_empty() {
                return None;
            }
            let mut text = String::new();
            for l in lines {
                text.push_str(l);
                text.push('\n');
            }
            Some(StoredFile::new(
                Bytes::from(text),
                format!("batch_{}_{kind}.jsonl", self.id),
                "batch_output",
                None,
            ))
        };
        let (out, err) = (file(&ok, "output"), file(&bad, "error"));
        self.output_file_id = out.as_ref().map(|f| f.id.clone());
        self.error_file_id = err.as_ref().map(|f| f.id.clone());
        self.status = status;
        match status {
            Status::Completed => self.times.completed_at = Some(at),
            Status::Expired => self.times.expired_at = Some(at),
            _ => self.times.cancelled_at = Some(at),
        }
        files.extend(out.into_iter().chain(err));
    }

    /// Moves the batch to where it stands at `now`.
    fn advance(&mut self, state: &AppState, now: Instant, files: &mut Vec<StoredFile>) {
        let cfg = &state.settings.config.batch;
        if self.status == Status::Validating {
            let cancel_end =
                self.times.cancelling_at.map(|c| c + state.clock.real(cfg.cancel_delay));
            if now < self.validated && cancel_end.is_none_or(|c| now < c) {
                return;
            }
            if let Some(c) = cancel_end.filter(|c| *c <= self.validated) {
                self.close(state, Status::Cancelled, c, "batch_cancelled", files);
                return;
            }
            if !self.errors.is_empty() {
                self.status = Status::Failed;
                self.times.failed_at = Some(self.validated);
                return;
            }
            self.status = if self.times.cancelling_at.is_some() {
                Status::Cancelling
            } else {
                Status::InProgress
            };
            self.times.in_progress_at = Some(self.validated);
        }
        if let Some(c) = self.times.cancelling_at {
            if self.status.terminal() {
                return;
            }
            let end = c + state.clock.real(cfg.cancel_delay);
            self.run_lines(state, now.min(c));
            if now >= end {
                self.close(state, Status::Cancelled, end, "batch_cancelled", files);
            }
            return;
        }
        if matches!(self.status, Status::InProgress) {
            let cutoff =
                if self.expire_whole { self.window_end } else { self.done.min(self.window_end) };
            self.run_lines(state, now.min(cutoff));
            if now >= self.window_end && (self.expire_whole || self.done > self.window_end) {
                self.close(state, Status::Expired, self.window_end, "batch_expired", files);
                return;
            }
            if now >= self.done && !self.expire_whole {
                self.status = Status::Finalizing;
                self.times.finalizing_at = Some(self.done);
            }
        }
        if self.status == Status::Finalizing {
            let end = self.done + state.clock.real(cfg.finalizing);
            if now >= end {
                self.close(state, Status::Completed, end, "batch_expired", files);
            }
        }
    }
}

fn expired_line(line_id: &str, custom_id: &str, code: &str) -> String {
    let message = if code == "batch_cancelled" {
        "This request was not executed because the batch was cancelled."
    } else {
        "This request could not be executed before the completion window expired."
    };
    json!({"id": line_id, "custom_id": custom_id, "response": null, "error": {"code": code, "message": message}}).to_string()
}

/// Advances every OpenAI batch (so files and charges are complete when read).
pub(crate) fn advance_all(state: &AppState, now: Instant) {
    let mut store = state.store();
    let mut files = Vec::new();
    for b in store.openai.iter_mut() {
        b.advance(state, now, &mut files);
    }
    store.files.append(&mut files);
}

/// Validates the input file's lines; what a `failed` batch reports in `errors`.
fn validate_lines(text: &str, endpoint: &str) -> (Vec<Line>, Vec<Value>) {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut err = |code: &str, message: String, param: Option<&str>, line: usize| {
        errors.push(json!({"code": code, "message": message, "param": param, "line": line}));
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(raw) else {
            err("invalid_json_line", format!("Line {n} is not valid JSON."), None, n);
            continue;
        };
        let Some(cid) = v.get("custom_id").and_then(Value::as_str) else {
            err(
                "missing_required_parameter",
                format!("Line {n} has no custom_id."),
                Some("custom_id"),
                n,
            );
            continue;
        };
        if v.get("method").and_then(Value::as_str) != Some("POST") {
            err("invalid_method", format!("Line {n}: method must be POST."), Some("method"), n);
            continue;
        }
        if v.get("url").and_then(Value::as_str) != Some(endpoint) {
            err(
                "invalid_url",
                format!("Line {n}: url must be {endpoint}, the batch's endpoint."),
                Some("url"),
                n,
            );
            continue;
        }
        let Some(body) = v.get("body").filter(|b| b.is_object()) else {
            err(
                "missing_required_parameter",
                format!("Line {n} has no body object."),
                Some("body"),
                n,
            );
            continue;
        };
        if !seen.insert(cid.to_string()) {
            err(
                "duplicate_custom_id",
                format!("The custom_id '{cid}' on line {n} is a duplicate."),
                Some("custom_id"),
                n,
            );
            continue;
        }
        lines.push(Line {
            custom_id: cid.to_string(),
            body: body.clone(),
            progress: 1.0,
            result: None,
        });
    }
    if lines.len() + errors.len() > 50_000 {
        errors.push(json!({"code": "too_many_requests", "message": "A batch may hold at most 50,000 requests.", "param": null, "line": null}));
    }
    if lines.is_empty() && errors.is_empty() {
        errors.push(json!({"code": "empty_file", "message": "The input file has no requests.", "param": null, "line": null}));
    }
    (lines, errors)
}

/// `POST /v1/batches`.
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
    let Ok(bytes) = http::read_body(body, 1024 * 1024).await else {
        return fail(ApiError::new(413, "invalid_request_error", "Request body too large."));
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return fail(
            ApiError::invalid("We could not parse the JSON body of your request.")
                .code("invalid_json"),
        );
    };
    let Some(input_file_id) = v.get("input_file_id").and_then(Value::as_str) else {
        return fail(ApiError::missing("input_file_id"));
    };
    let Some(endpoint) = v.get("endpoint").and_then(Value::as_str) else {
        return fail(ApiError::missing("endpoint"));
    };
    if !ENDPOINTS.contains(&endpoint) {
        return fail(
            ApiError::invalid(format!(
                "Invalid value: '{endpoint}'. Supported values are: {}.",
                ENDPOINTS.join(", ")
            ))
            .param("endpoint")
            .code("invalid_value"),
        );
    }
    if endpoint != "/v1/chat/completions" {
        return fail(
            ApiError::invalid(format!(
                "The simulator supports batches for /v1/chat/completions only, not {endpoint}."
            ))
            .param("endpoint")
            .code("unsupported_value"),
        );
    }
    match v.get("completion_window").and_then(Value::as_str) {
        None => return fail(ApiError::missing("completion_window")),
        Some("24h") => {}
        Some(other) => {
            return fail(
                ApiError::invalid(format!(
                    "Invalid value: '{other}'. Supported values are: '24h'."
                ))
                .param("completion_window")
                .code("invalid_value"),
            );
        }
    }
    let metadata = match v.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.len() <= 16 && m.values().all(Value::is_string) => {
            Some(Value::Object(m.clone()))
        }
        Some(_) => {
            return fail(
                ApiError::invalid(
                    "Invalid 'metadata': expected an object of at most 16 string values.",
                )
                .param("metadata")
                .code("invalid_value"),
            );
        }
    };
    let file = state.store().files.iter().find(|f| f.id == input_file_id).cloned();
    let Some(file) = file else {
        return fail(not_found(input_file_id).param("input_file_id"));
    };
    if file.purpose != "batch" {
        return fail(
            ApiError::invalid(format!(
                "File {input_file_id} has purpose '{}'; batch input files need purpose 'batch'.",
                file.purpose
            ))
            .param("input_file_id"),
        );
    }
    let text = String::from_utf8_lossy(&file.bytes);
    let (mut lines, mut errors) = validate_lines(&text, endpoint);
    let md_fault = metadata
        .as_ref()
        .and_then(|m| m.get("sim_fault"))
        .and_then(Value::as_str)
        .and_then(Fault::parse);
    let fault = forced.or(md_fault);
    if fault == Some(Fault::Fail) {
        errors.push(json!({"code": "invalid_request", "message": "Validation failed (forced by the simulator).", "param": null, "line": null}));
    }
    if let Some(Fault::Stall(d)) = fault {
        // A slow create: the batch exists only once the answer is on its way.
        state.sleep(state.dice.stall_for(d)).await;
    }
    let id = http::new_id("batch_", 32);
    let mut rng = state.batch_rng(&id);
    for l in &mut lines {
        l.progress = rng.random();
    }
    let cfg = &state.settings.config.batch;
    let created = Created::now();
    let validated = created.instant + state.clock.real(cfg.validating);
    let turnaround = state.draw_turnaround(&mut rng);
    let expire_whole = fault == Some(Fault::Expire) || rng.random::<f64>() < cfg.expire_rate;
    let model =
        lines.first().and_then(|l| l.body.get("model")).and_then(Value::as_str).map(str::to_string);
    let batch = OpenAiBatch {
        id,
        key: caller.key.clone(),
        endpoint: endpoint.to_string(),
        input_file_id: input_file_id.to_string(),
        metadata,
        model,
        created,
        validated,
        done: validated + state.clock.real(turnaround),
        window_end: created.instant + state.clock.real(cfg.window),
        expires_at: created.utc.timestamp() + i64::try_from(cfg.window.as_secs()).unwrap_or(86_400),
        expire_whole,
        errors,
        lines,
        status: Status::Validating,
        times: Times::default(),
        output_file_id: None,
        error_file_id: None,
        input_tokens: 0,
        output_tokens: 0,
    };
    let body = batch.json();
    state.store().openai.push(batch);
    json_response(StatusCode::OK, &body, headers(&rid, Some(&limits)))
}

fn with_batch(
    state: &AppState,
    id: &str,
    f: impl FnOnce(&mut OpenAiBatch, &mut Vec<StoredFile>) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let mut store = state.store();
    let mut files = Vec::new();
    let r = match store.openai.iter_mut().find(|b| b.id == id) {
        None => Err(ApiError::new(
            404,
            "invalid_request_error",
            format!("No batch found with id '{id}'."),
        )
        .param("batch_id")),
        Some(b) => {
            b.advance(state, Instant::now(), &mut files);
            f(b, &mut files)
        }
    };
    store.files.append(&mut files);
    r
}

fn respond(state: &AppState, caller: &super::Caller, r: Result<Value, ApiError>) -> Response {
    let limits = state.limiter.snapshot(&caller.key);
    match r {
        Ok(v) => json_response(StatusCode::OK, &v, headers(&caller.request_id, Some(&limits))),
        Err(e) => error_response(&e, &caller.request_id, Some(&limits)),
    }
}

/// `GET /v1/batches/{id}`.
pub(crate) async fn retrieve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let caller = match super::authenticate(&state, req.headers()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = with_batch(&state, &id, |b, _| Ok(b.json()));
    respond(&state, &caller, r)
}

/// `POST /v1/batches/{id}/cancel`.
pub(crate) async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let caller = match super::authenticate(&state, req.headers()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = with_batch(&state, &id, |b, files| {
        if b.status.terminal() {
            return Err(ApiError::invalid(format!(
                "Cannot cancel a batch with status '{}'.",
                b.status.as_str()
            )));
        }
        if b.times.cancelling_at.is_none() {
            let now = Instant::now();
            b.times.cancelling_at = Some(now);
            if b.status != Status::Validating {
                b.status = Status::Cancelling;
            }
            b.advance(&state, now, files);
        }
        let mut v = b.json();
        // Still validating: the cancel shows at once.
        if b.status == Status::Validating
            && let Some(o) = v.as_object_mut()
        {
            o.insert("status".into(), json!("cancelling"));
        }
        Ok(v)
    });
    respond(&state, &caller, r)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /v1/batches`: newest first, `after` cursor, `limit` 1..=100 (default 20).
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
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => {
            let e = ApiError::invalid("Invalid 'limit': expected an integer between 1 and 100.")
                .param("limit");
            return respond(&state, &caller, Err(e));
        }
    };
    advance_all(&state, Instant::now());
    let r = {
        let store = state.store();
        let all: Vec<&OpenAiBatch> = store.openai.iter().rev().collect();
        let start = q
            .after
            .as_deref()
            .and_then(|a| all.iter().position(|b| b.id == a))
            .map_or(0, |i| i + 1);
        let rest = all.get(start..).unwrap_or(&[]);
        let page: Vec<&OpenAiBatch> = rest.iter().take(limit).copied().collect();
        json!({
            "object": "list",
            "data": page.iter().map(|b| b.json()).collect::<Vec<_>>(),
            "first_id": page.first().map(|b| b.id.clone()),
            "last_id": page.last().map(|b| b.id.clone()),
            "has_more": rest.len() > limit,
        })
    };
    respond(&state, &caller, Ok(r))
}
