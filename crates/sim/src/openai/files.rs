//! Files (§4.1): multipart upload, retrieve, list, content, delete. Batch output and error files
//! are stored here too, with `purpose: "batch_output"`.

use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, error_response, headers};
use crate::http::{self, json_response};
use crate::state::AppState;

const PURPOSES: &[&str] = &["assistants", "batch", "fine-tune", "vision", "user_data", "evals"];
const BATCH_FILE_MAX: usize = 200 * 1024 * 1024;
const FILE_MAX: usize = 512 * 1024 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct StoredFile {
    pub id: String,
    pub bytes: Bytes,
    pub filename: String,
    pub purpose: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

impl StoredFile {
    pub(crate) fn new(
        bytes: Bytes,
        filename: String,
        purpose: &str,
        expires_after: Option<i64>,
    ) -> Self {
        let created_at = chrono::Utc::now().timestamp();
        StoredFile {
            id: http::new_id("file-", 22),
            bytes,
            filename,
            purpose: purpose.to_string(),
            created_at,
            expires_at: expires_after.map(|s| created_at + s),
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "file",
            "bytes": self.bytes.len(),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": null,
        })
    }
}

pub(crate) fn not_found(id: &str) -> ApiError {
    ApiError::new(404, "invalid_request_error", format!("No such File object: {id}")).param("id")
}

/// `POST /v1/files` (multipart: `file`, `purpose`, optional `expires_after[...]`).
pub(crate) async fn upload(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let caller = match super::authenticate(&state, req.headers()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let rid = caller.request_id.clone();
    let limits = state.limiter.snapshot(&caller.key);
    let fail = |e: ApiError| error_response(&e, &rid, Some(&limits));
    let mut form = match Multipart::from_request(req, &()).await {
        Ok(f) => f,
        Err(e) => return fail(ApiError::invalid(format!("Invalid multipart form: {e}"))),
    };
    let (mut file, mut purpose, mut seconds) = (None, None, None);
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let status = e.status().as_u16();
                let err = if status == 413 {
                    ApiError::new(413, "invalid_request_error", "File too large.")
                } else {
                    ApiError::invalid(format!("Invalid multipart form: {e}"))
                };
                return fail(err);
            }
        };
        let name = field.name().unwrap_or("").to_string();
        let filename = field.file_name().map(str::to_string);
        let data = match field.bytes().await {
            Ok(d) => d,
            Err(e) => return fail(ApiError::invalid(format!("Invalid multipart form: {e}"))),
        };
        match name.as_str() {
            "file" => file = Some((filename.unwrap_or_else(|| "file".to_string()), data)),
            "purpose" => purpose = Some(String::from_utf8_lossy(&data).trim().to_string()),
            "expires_after[seconds]" => {
                seconds = String::from_utf8_lossy(&data).trim().parse::<i64>().ok()
            }
            _ => {}
        }
    }
    let Some((filename, data)) = file else {
        return fail(ApiError::missing("file"));
    };
    let Some(purpose) = purpose else {
        return fail(ApiError::missing("purpose"));
    };
    if !PURPOSES.contains(&purpose.as_str()) {
        return fail(
            ApiError::invalid(format!("Invalid value: '{purpose}'. Supported values are: 'assistants', 'batch', 'fine-tune', 'vision', 'user_data', and 'evals'."))
                .param("purpose")
                .code("invalid_value"),
        );
    }
    if purpose == "batch" {
        if !filename.ends_with(".jsonl") {
            return fail(
                ApiError::invalid("Invalid file format for Batch API. Must be .jsonl")
                    .param("file"),
            );
        }
        if data.len() > BATCH_FILE_MAX {
            return fail(
                ApiError::new(
                    413,
                    "invalid_request_error",
                    "Batch input files are limited to 200 MB.",
                )
                .param("file"),
            );
        }
    }
    if data.len() > FILE_MAX {
        return fail(
            ApiError::new(413, "invalid_request_error", "Files are limited to 512 MB.")
                .param("file"),
        );
    }
    if let Some(s) = seconds
        && !(3600..=2_592_000).contains(&s)
    {
        return fail(
            ApiError::invalid("expires_after.seconds must be between 3600 and 2592000.")
                .param("expires_after[seconds]")
                .code("invalid_value"),
        );
    }
    let expires = seconds.or((purpose == "batch").then_some(30 * 24 * 3600));
    let f = StoredFile::new(data, filename, &purpose, expires);
    let body = f.json();
    state.store().files.push(f);
    json_response(StatusCode::OK, &body, headers(&rid, Some(&limits)))
}

fn respond(state: &AppState, caller: &super::Caller, r: Result<Value, ApiError>) -> Response {
    let limits = state.limiter.snapshot(&caller.key);
    match r {
        Ok(v) => json_response(StatusCode::OK, &v, headers(&caller.request_id, Some(&limits))),
        Err(e) => error_response(&e, &caller.request_id, Some(&limits)),
    }
}

/// `GET /v1/files/{id}`.
pub(crate) async fn retrieve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let caller = match super::authenticate(&state, req.headers()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = state
        .store()
        .files
        .iter()
        .find(|f| f.id == id)
        .map(StoredFile::json)
        .ok_or_else(|| not_found(&id));
    respond(&state, &caller, r)
}

/// `DELETE /v1/files/{id}`.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let caller = match super::authenticate(&state, req.headers()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = {
        let mut store = state.store();
        let before = store.files.len();
        store.files.retain(|f| f.id != id);
        if store.files.len() < before {
            Ok(json!({"id": id, "object": "file", "deleted": true}))
        } else {
            Err(not_found(&id))
        }
    };
    respond(&state, &caller, r)
}

/// `GET /v1/files/{id}/content`: the stored bytes, verbatim.
pub(crate) async fn content(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let caller = match super::authenticate(&state, req.headers()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let found = state.store().files.iter().find(|f| f.id == id).map(|f| f.bytes.clone());
    match found {
        Some(bytes) => {
            let resp = Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/octet-stream")
                .body(axum::body::Body::from(bytes))
                .unwrap_or_default();
            http::header_pairs(
                resp,
                headers(&caller.request_id, Some(&state.limiter.snapshot(&caller.key))),
            )
        }
        None => error_response(&not_found(&id), &caller.request_id, None),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    purpose: Option<String>,
    limit: Option<String>,
    order: Option<String>,
    after: Option<String>,
}

/// `GET /v1/files`: `order` (default `desc`), `after` cursor, `limit` 1..=10000.
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
        None => 10_000,
        Some(Ok(n)) if (1..=10_000).contains(&n) => n,
        Some(_) => {
            let e = ApiError::invalid("Invalid 'limit': expected an integer between 1 and 10000.")
                .param("limit");
            return respond(&state, &caller, Err(e));
        }
    };
    let r = {
        let store = state.store();
        let mut all: Vec<&StoredFile> = store
            .files
            .iter()
            .filter(|f| q.purpose.as_deref().is_none_or(|p| f.purpose == p))
            .collect();
        if q.order.as_deref() != Some("asc") {
            all.reverse();
        }
        let start = q
            .after
            .as_deref()
            .and_then(|a| all.iter().position(|f| f.id == a))
            .map_or(0, |i| i + 1);
        let rest = all.get(start..).unwrap_or(&[]);
        let page: Vec<&StoredFile> = rest.iter().take(limit).copied().collect();
        json!({
            "object": "list",
            "data": page.iter().map(|f| f.json()).collect::<Vec<_>>(),
            "first_id": page.first().map(|f| f.id.clone()),
            "last_id": page.last().map(|f| f.id.clone()),
            "has_more": rest.len() > limit,
        })
    };
    respond(&state, &caller, Ok(r))
}
