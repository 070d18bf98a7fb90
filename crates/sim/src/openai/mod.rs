//! The OpenAI API: Chat Completions (plain and SSE), Files and Batches, with OpenAI's headers and
//! error bodies (spec §3, §4).

pub(crate) mod batches;
pub(crate) mod chat;
pub(crate) mod files;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use crate::http::{self, json_response};
use crate::ratelimit::{Snapshot, go_duration};
use crate::state::AppState;

/// An OpenAI error: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message)
    }
    pub fn param(mut self, p: impl Into<String>) -> Self {
        self.param = Some(p.into());
        self
    }
    pub fn code(mut self, c: &'static str) -> Self {
        self.code = Some(c);
        self
    }
    pub fn missing(p: &str) -> Self {
        Self::invalid(format!("Missing required parameter: '{p}'."))
            .param(p)
            .code("missing_required_parameter")
    }
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub key: String,
    pub request_id: String,
}

pub(crate) fn request_id() -> String {
    http::new_id("req_", 32)
}

/// The headers of every OpenAI response.
pub(crate) fn headers(request_id: &str, limits: Option<&Snapshot>) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("x-request-id", request_id.to_string()),
        ("openai-version", "2020-10-01".to_string()),
        ("openai-processing-ms", "1".to_string()),
    ];
    if let Some(s) = limits {
        let t = s.tokens();
        out.push(("x-ratelimit-limit-requests", s.requests.limit.to_string()));
        out.push(("x-ratelimit-limit-tokens", t.limit.to_string()));
        out.push(("x-ratelimit-remaining-requests", s.requests.remaining.to_string()));
        out.push(("x-ratelimit-remaining-tokens", t.remaining.to_string()));
        out.push(("x-ratelimit-reset-requests", go_duration(s.requests.reset)));
        out.push(("x-ratelimit-reset-tokens", go_duration(t.reset)));
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
        h.push(("retry-after-ms", (secs * 1000).to_string()));
    }
    json_response(e.status, &e.body(), h)
}

fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars.iter().take(3).collect();
    let tail: String = chars.iter().skip(chars.len() - 4).collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// Checks `Authorization: Bearer`; the 401 response otherwise.
// The error is the finished response, returned at once by every handler; its size is moot.
#[allow(clippy::result_large_err)]
pub(crate) fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, Response> {
    let request_id = request_id();
    let Some(key) = http::api_key(headers, false) else {
        let e = ApiError::new(
            401,
            "invalid_request_error",
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        );
        return Err(error_response(&e, &request_id, None));
    };
    let keys = &state.settings.config.api_keys;
    if !keys.is_empty() && !keys.contains(&key) {
        let e = ApiError::new(
            401,
            "invalid_request_error",
            format!("Incorrect API key provided: {}.", mask(&key)),
        )
        .code("invalid_api_key");
        return Err(error_response(&e, &request_id, None));
    }
    Ok(Caller { key, request_id })
}
