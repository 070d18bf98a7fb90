//! The Anthropic API: Messages (plain and SSE) and Message Batches, with Anthropic's headers and
//! error bodies (spec §1, §2).

pub(crate) mod batches;
pub(crate) mod messages;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use crate::http::{self, json_response};
use crate::ratelimit::{LimitState, Snapshot};
use crate::state::AppState;

/// API versions the sim accepts; 2026-10-21 removes `temperature`, `top_p`, `top_k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V2023,
    V2026,
}

/// An Anthropic error: status, `error.type`, message, and an optional `retry-after`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found_error", message)
    }
    /// The error envelope, as a body and inside batch results.
    pub fn body(&self, request_id: Option<&str>) -> serde_json::Value {
        json!({
            "type": "error",
            "error": {"type": self.kind, "message": self.message},
            "request_id": request_id,
        })
    }
}

/// What every authenticated Anthropic request starts from.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub key: String,
    pub request_id: String,
    pub version: Version,
}

pub(crate) fn request_id() -> String {
    http::new_id("req_011C", 22)
}

fn limit_headers(out: &mut Vec<(&'static str, String)>, s: &Snapshot) {
    let reset = |l: &LimitState| {
        let d = chrono::Duration::from_std(l.reset).unwrap_or_default();
        (chrono::Utc::now() + d).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let tokens = s.tokens();
    for (names, l) in [
        (
            [
                "anthropic-ratelimit-requests-limit",
                "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-requests-reset",
            ],
            &s.requests,
        ),
        (
            [
                "anthropic-ratelimit-tokens-limit",
                "anthropic-ratelimit-tokens-remaining",
                "anthropic-ratelimit-tokens-reset",
            ],
            &tokens,
        ),
        (
            [
                "anthropic-ratelimit-input-tokens-limit",
                "anthropic-ratelimit-input-tokens-remaining",
                "anthropic-ratelimit-input-tokens-reset",
            ],
            &s.input_tokens,
        ),
        (
            [
                "anthropic-ratelimit-output-tokens-limit",
                "anthropic-ratelimit-output-tokens-remaining",
                "anthropic-ratelimit-output-tokens-reset",
            ],
            &s.output_tokens,
        ),
    ] {
        out.push((names[0], l.limit.to_string()));
        out.push((names[1], l.remaining.to_string()));
        out.push((names[2], reset(l)));
    }
}

/// The headers of every Anthropic response: `request-id`, and the key's limits when known.
pub(crate) fn headers(request_id: &str, limits: Option<&Snapshot>) -> Vec<(&'static str, String)> {
    let mut out = vec![("request-id", request_id.to_string())];
    if let Some(s) = limits {
        limit_headers(&mut out, s);
    }
    out
}

pub(crate) fn error_response(
    e: &ApiError,
    request_id: &str,
    limits: Option<&Snapshot>,
) -> Response {
    let mut h = headers(request_id, limits);
    if let Some(secs) = e.retry_after {
        h.push(("retry-after", secs.to_string()));
    }
    json_response(e.status, &e.body(Some(request_id)), h)
}

/// Authenticates and checks `anthropic-version`; the error response otherwise.
// The error is the finished response, returned at once by every handler; its size is moot.
#[allow(clippy::result_large_err)]
pub(crate) fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, Response> {
    let request_id = request_id();
    let Some(key) = http::api_key(headers, true) else {
        let e = ApiError::new(401, "authentication_error", "x-api-key header is required");
        return Err(error_response(&e, &request_id, None));
    };
    let keys = &state.settings.config.api_keys;
    if !keys.is_empty() && !keys.contains(&key) {
        let e = ApiError::new(401, "authentication_error", "invalid x-api-key");
        return Err(error_response(&e, &request_id, None));
    }
    let version = match headers.get("anthropic-version").map(|v| v.to_str().unwrap_or("")) {
        Some("2023-06-01") => Version::V2023,
        Some("2026-10-21") => Version::V2026,
        Some(other) => {
            let e = ApiError::invalid(format!(
                "anthropic-version: invalid version {other:?}; supported: 2023-06-01, 2026-10-21"
            ));
            return Err(error_response(&e, &request_id, None));
        }
        None => {
            let e = ApiError::invalid("anthropic-version: header is required");
            return Err(error_response(&e, &request_id, None));
        }
    };
    Ok(Caller { key, request_id, version })
}
