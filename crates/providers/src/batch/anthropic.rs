//! Anthropic Message Batches (spec §2): one JSON create holding every request's `params`, a
//! `MessageBatch` to poll, results as JSONL at the `results_url` the batch names.
//!
//! Differences that bite: counts move only when the whole batch ends; there is no batch-level
//! `cancelled` or `expired` status (an ended batch tells them apart by `cancel_initiated_at` and
//! its expired count); an errored line wraps a whole error envelope, so its type is at
//! `result.error.error.type`; `results_url` must be used as given (absolute, or relative to the
//! API root), never rebuilt; and a batch carries no metadata.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_core::config::ProviderKind;

use super::{
    BatchCounts, BatchError, BatchHandle, BatchInvalid, BatchItem, BatchItemResult, BatchLimits,
    BatchOutcome, BatchPage, BatchState, BatchStatus, check_size, create_once_or_unknown,
    idempotent, jsonl,
};
use crate::anthropic::{Anthropic, WireRequest};
use crate::error::{ErrorKind, ProviderError};
use crate::retry::RetryPolicy;
use crate::transport::{Dialect, Transport};

const K: ProviderKind = ProviderKind::Anthropic;

type T = Transport<Anthropic>;

// ---- request ----

#[derive(Serialize)]
struct Line<'a> {
    custom_id: &'a str,
    params: WireRequest<'a>,
}

fn write_line(t: &T, item: &BatchItem, out: &mut Vec<u8>) {
    let line = Line { custom_id: &item.custom_id, params: t.dialect.body(&item.request, false) };
    // Writing plain structs of strings and numbers into a Vec cannot fail; a NaN temperature
    // is written as null by serde_json.
    let _ = serde_json::to_writer(out, &line);
}

pub(super) fn line_bytes(t: &T, item: &BatchItem) -> usize {
    let mut buf = Vec::new();
    write_line(t, item, &mut buf);
    buf.len() + 1
}

/// `{"requests":[…]}`, refused if over the byte limit.
fn encode(t: &T, items: &[BatchItem], limits: BatchLimits) -> Result<Bytes, BatchInvalid> {
    let mut buf = Vec::with_capacity(items.len() * 256 + 16);
    buf.extend_from_slice(b"{\"requests\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_line(t, item, &mut buf);
    }
    buf.extend_from_slice(b"]}");
    check_size(buf.len(), limits)?;
    Ok(Bytes::from(buf))
}

// ---- response ----

#[derive(Deserialize)]
struct WireBatch {
    id: String,
    processing_status: String,
    #[serde(default)]
    request_counts: WireCounts,
    created_at: DateTime<Utc>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    ended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    cancel_initiated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    archived_at: Option<DateTime<Utc>>,
    #[serde(default)]
    results_url: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireCounts {
    #[serde(default)]
    processing: u64,
    #[serde(default)]
    succeeded: u64,
    #[serde(default)]
    errored: u64,
    #[serde(default)]
    canceled: u64,
    #[serde(default)]
    expired: u64,
}

#[derive(Deserialize)]
struct WirePage {
    #[serde(default)]
    data: Vec<WireBatch>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    last_id: Option<String>,
}

#[derive(Deserialize)]
struct WireResultLine {
    custom_id: String,
    result: WireResult,
}

#[derive(Deserialize)]
struct WireResult {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<Box<RawValue>>,
    /// A whole error envelope: `{"type":"error","error":{type,message},"request_id"}`.
    #[serde(default)]
    error: Option<WireLineError>,
}

#[derive(Deserialize)]
struct WireLineError {
    #[serde(default)]
    error: Option<WireErrorBody>,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct WireErrorBody {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn state_of(b: &WireBatch) -> BatchState {
    match b.processing_status.as_str() {
        "in_progress" => BatchState::InProgress,
        "canceling" => BatchState::Cancelling,
        "ended" if b.cancel_initiated_at.is_some() => BatchState::Cancelled,
        "ended" => {
            // Ended at its deadline with work left undone: the window ran out. A second of
            // slack, as the two timestamps are written separately.
            let at_deadline = match (b.ended_at, b.expires_at) {
                (Some(end), Some(exp)) => end + chrono::Duration::seconds(1) >= exp,
                _ => false,
            };
            // Or nothing at all ran: every request expired (also what a simulator with
            // accelerated time shows, whose `ended_at` is wall-clock and `expires_at` simulated).
            let c = &b.request_counts;
            let all_expired = c.expired > 0 && c.succeeded + c.errored + c.canceled == 0;
            if (at_deadline && c.expired > 0) || all_expired {
                BatchState::Expired
            } else {
                BatchState::Ended
            }
        }
        other => {
            // A status added later: keep polling rather than guess at an end.
            tracing::warn!(status = other, "unknown Anthropic batch status");
            BatchState::InProgress
        }
    }
}

fn normalize(b: WireBatch) -> BatchStatus {
    let state = state_of(&b);
    let c = &b.request_counts;
    let counts = BatchCounts {
        total: c.processing + c.succeeded + c.errored + c.canceled + c.expired,
        processing: c.processing,
        succeeded: c.succeeded,
        errored: c.errored,
        cancelled: c.canceled,
        expired: c.expired,
    };
    let mut errors = Vec::new();
    if let Some(at) = b.archived_at {
        errors.push(format!("archived at {at}: results are no longer available"));
    }
    BatchStatus {
        handle: BatchHandle {
            provider: K,
            provider_batch_id: b.id,
            input_file_id: None,
            created_at: Some(b.created_at),
        },
        state,
        counts,
        created_at: b.created_at,
        expires_at: b.expires_at,
        ended_at: b.ended_at,
        cancel_requested_at: b.cancel_initiated_at,
        metadata: BTreeMap::new(),
        errors,
        results_url: b.results_url.filter(|u| !u.is_empty()),
        output_file_id: None,
        error_file_id: None,
    }
}

fn batches_url(t: &T) -> String {
    format!("{}/v1/messages/batches", t.dialect.root)
}

/// The batch id goes into a path: refuse one that would change the path.
fn batch_url(t: &T, id: &str) -> Result<String, ProviderError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(ProviderError::new(
            K,
            ErrorKind::InvalidRequest,
            format!("not a batch id: {id:?}"),
        ));
    }
    Ok(format!("{}/{id}", batches_url(t)))
}

// ---- calls ----

pub(super) async fn submit(
    t: &T,
    items: &[BatchItem],
    headers: &[(String, String)],
    policy: &RetryPolicy,
) -> Result<BatchHandle, BatchError> {
    let body = encode(t, items, BatchLimits::ANTHROPIC)?;
    let url = batches_url(t);
    let wire: WireBatch = create_once_or_unknown(policy, || {
        let body = body.clone();
        let url = &url;
        async move {
            let b = t
                .http
                .post(url)
                .header("content-type", "application/json")
                .header("accept", "application/json");
            let b = t.dialect.authorize(b)?;
            let b = crate::client::extra_headers(K, b, headers)?;
            t.batch_json(b.body(body), t.upload_deadline()).await
        }
    })
    .await?;
    Ok(normalize(wire).handle)
}

pub(super) async fn status(
    t: &T,
    handle: &BatchHandle,
    policy: &RetryPolicy,
) -> Result<BatchStatus, BatchError> {
    let url = batch_url(t, &handle.provider_batch_id)?;
    let wire: WireBatch = idempotent(policy, || async {
        let b = t.dialect.authorize(t.http.get(&url).header("accept", "application/json"))?;
        t.batch_json(b, t.small_call_deadline()).await
    })
    .await?;
    Ok(normalize(wire))
}

pub(super) async fn cancel(
    t: &T,
    handle: &BatchHandle,
    policy: &RetryPolicy,
) -> Result<BatchStatus, BatchError> {
    let url = format!("{}/cancel", batch_url(t, &handle.provider_batch_id)?);
    // A cancel is idempotent (a second one changes nothing), so it may be retried.
    let wire: WireBatch = idempotent(policy, || async {
        let b = t.dialect.authorize(t.http.post(&url).header("accept", "application/json"))?;
        t.batch_json(b, t.small_call_deadline()).await
    })
    .await?;
    Ok(normalize(wire))
}

pub(super) async fn list(
    t: &T,
    limit: usize,
    after: Option<&str>,
    policy: &RetryPolicy,
) -> Result<BatchPage, BatchError> {
    let limit = limit.clamp(1, 1000).to_string();
    let url = batches_url(t);
    let page: WirePage = idempotent(policy, || async {
        let mut q: Vec<(&str, &str)> = vec![("limit", &limit)];
        if let Some(a) = after {
            q.push(("after_id", a));
        }
        let url = super::with_query(K, &url, &q)?;
        let b = t.http.get(url).header("accept", "application/json");
        t.batch_json(t.dialect.authorize(b)?, t.small_call_deadline()).await
    })
    .await?;
    Ok(BatchPage {
        batches: page.data.into_iter().map(normalize).collect(),
        has_more: page.has_more,
        next_after: page.last_id,
    })
}

/// `results_url` as given when absolute; joined to the API root when relative (the SDK's own
/// tests use relative ones).
fn resolve(t: &T, results_url: &str) -> String {
    if results_url.starts_with("http://") || results_url.starts_with("https://") {
        results_url.to_owned()
    } else {
        format!("{}/{}", t.dialect.root, results_url.trim_start_matches('/'))
    }
}

pub(super) async fn results(
    t: &T,
    status: &BatchStatus,
    policy: &RetryPolicy,
) -> Result<Vec<BatchItemResult>, BatchError> {
    let id = &status.handle.provider_batch_id;
    let Some(url) = status.results_url.as_deref().map(|u| resolve(t, u)) else {
        let reason = status
            .errors
            .first()
            .cloned()
            .unwrap_or_else(|| "the ended batch names no results_url".to_owned());
        return Err(BatchError::ResultsUnavailable { id: id.clone(), reason });
    };
    let d = &t.dialect;
    idempotent(policy, || async {
        let b = d.authorize(t.http.get(&url).header("accept", "application/binary"))?;
        let resp = t.send_batch_call(b, t.small_call_deadline()).await?;
        // The count comes from the network: a hint for the capacity, bounded by the limit.
        let hint = usize::try_from(status.counts.total).unwrap_or(0);
        let mut out = Vec::with_capacity(hint.min(BatchLimits::ANTHROPIC.max_items));
        let mut unreadable = 0usize;
        jsonl::for_each_line(K, resp, t.standard.idle, |line| match parse_line(d, line) {
            Some(r) => out.push(r),
            None => unreadable += 1,
        })
        .await
        .map_err(super::Failure::after_send)?;
        if unreadable > 0 {
            tracing::warn!(batch = %id, unreadable, "batch result lines that could not be read");
        }
        Ok(out)
    })
    .await
}

/// One results line; `None` when not even its `custom_id` can be read.
fn parse_line(d: &Anthropic, line: &[u8]) -> Option<BatchItemResult> {
    let l: WireResultLine = match serde_json::from_slice(line) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable batch result line");
            return None;
        }
    };
    let outcome = match l.result.kind.as_str() {
        "succeeded" => match l.result.message {
            Some(m) => match d.parse_response(m.get().as_bytes()) {
                Ok(mut r) => {
                    // The message id: what the provider (and the sim's charge log) knows it by.
                    r.provider_request_id = message_id(m.get());
                    BatchOutcome::Succeeded(Box::new(r))
                }
                Err(e) => BatchOutcome::Errored(e),
            },
            None => BatchOutcome::Errored(ProviderError::new(
                K,
                ErrorKind::Malformed,
                "a succeeded result without its message",
            )),
        },
        "errored" => BatchOutcome::Errored(line_error(l.result.error)),
        "canceled" => BatchOutcome::Cancelled,
        "expired" => BatchOutcome::Expired,
        other => BatchOutcome::Errored(ProviderError::new(
            K,
            ErrorKind::Malformed,
            format!("unknown result type {other:?}"),
        )),
    };
    Some(BatchItemResult { custom_id: l.custom_id, outcome })
}

fn message_id(message: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Id {
        id: Option<String>,
    }
    serde_json::from_str::<Id>(message).ok().and_then(|m| m.id)
}

/// An errored line is classified by its `error.type` as a mid-stream error is (there is no
/// status of its own): `api_error` / `overloaded_error` retryable, `invalid_request_error`
/// permanent.
fn line_error(e: Option<WireLineError>) -> ProviderError {
    let (kind, message, request_id) = match e {
        Some(w) => {
            let (kind, message) = w.error.map(|b| (b.kind, b.message)).unwrap_or_default();
            (kind, message, w.request_id)
        }
        None => (None, None, None),
    };
    let mut err = ProviderError::new(
        K,
        ErrorKind::StreamError,
        message.unwrap_or_else(|| "errored without a message".to_owned()),
    );
    err.error_type = kind;
    err.request_id = request_id;
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorClass, PermanentCause, RetryCause};

    fn parse(line: &str) -> BatchItemResult {
        let d = Anthropic::new(&"http://127.0.0.1:9/".parse().unwrap(), None);
        parse_line(&d, line.as_bytes()).unwrap()
    }

    #[test]
    fn spec_result_lines() {
        let ok = parse(
            r#"{"custom_id":"doc-0001","result":{"type":"succeeded","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-haiku-5-5","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":812,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":96,"service_tier":"batch"}}}}"#,
        );
        assert_eq!(ok.custom_id, "doc-0001");
        let BatchOutcome::Succeeded(r) = ok.outcome else { panic!("{ok:?}") };
        assert_eq!(r.text, "Hi");
        assert_eq!(r.usage.input_tokens, 812);
        assert_eq!(r.provider_request_id.as_deref(), Some("msg_01"));

        let bad = parse(
            r#"{"custom_id":"doc-0002","result":{"type":"errored","error":{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: must be greater than or equal to 1"},"request_id":null}}}"#,
        );
        let BatchOutcome::Errored(e) = bad.outcome else { panic!() };
        assert_eq!(e.class(), ErrorClass::Permanent { cause: PermanentCause::BadRequest });
        assert!(e.message.contains("max_tokens"));

        let api = parse(
            r#"{"custom_id":"x","result":{"type":"errored","error":{"type":"error","error":{"type":"api_error","message":"boom"},"request_id":"req_1"}}}"#,
        );
        let BatchOutcome::Errored(e) = api.outcome else { panic!() };
        assert_eq!(e.class(), ErrorClass::Retryable { cause: RetryCause::ServerError });
        assert_eq!(e.request_id.as_deref(), Some("req_1"));

        assert_eq!(
            parse(r#"{"custom_id":"c","result":{"type":"canceled"}}"#).outcome,
            BatchOutcome::Cancelled
        );
        assert_eq!(
            parse(r#"{"custom_id":"e","result":{"type":"expired"}}"#).outcome,
            BatchOutcome::Expired
        );
        let d = Anthropic::new(&"http://127.0.0.1:9/".parse().unwrap(), None);
        assert!(parse_line(&d, b"{not json").is_none());
    }

    fn wire(status: &str, cancel: bool, expired: u64, end_at_deadline: bool) -> WireBatch {
        let created: DateTime<Utc> = "2026-11-25T03:00:00Z".parse().unwrap();
        let expires = created + chrono::Duration::hours(24);
        WireBatch {
            id: "msgbatch_1".into(),
            processing_status: status.into(),
            request_counts: WireCounts { succeeded: 3, expired, ..Default::default() },
            created_at: created,
            expires_at: Some(expires),
            ended_at: (status == "ended").then(|| {
                if end_at_deadline { expires } else { created + chrono::Duration::hours(1) }
            }),
            cancel_initiated_at: cancel.then_some(created),
            archived_at: None,
            results_url: None,
        }
    }

    #[test]
    fn states() {
        assert_eq!(state_of(&wire("in_progress", false, 0, false)), BatchState::InProgress);
        assert_eq!(state_of(&wire("canceling", true, 0, false)), BatchState::Cancelling);
        assert_eq!(state_of(&wire("ended", false, 0, false)), BatchState::Ended);
        assert_eq!(state_of(&wire("ended", true, 0, false)), BatchState::Cancelled);
        // Some expired lines in a batch that ended early: the lines expired, not the batch.
        assert_eq!(state_of(&wire("ended", false, 2, false)), BatchState::Ended);
        assert_eq!(state_of(&wire("ended", false, 2, true)), BatchState::Expired);
        let mut all = wire("ended", false, 4, false);
        all.request_counts.succeeded = 0;
        assert_eq!(state_of(&all), BatchState::Expired);
        assert_eq!(state_of(&wire("brand_new", false, 0, false)), BatchState::InProgress);
        let s = normalize(wire("ended", false, 2, false));
        assert_eq!(s.counts.total, 5);
    }

    #[test]
    fn encoded_body_is_the_spec_shape() {
        crate::client::ensure_crypto_provider();
        let t = Transport {
            http: reqwest::Client::new(),
            dialect: std::sync::Arc::new(Anthropic::new(
                &"http://127.0.0.1:9/".parse().unwrap(),
                None,
            )),
            standard: crate::Timeouts::standard(),
            flex: crate::Timeouts::flex(),
        };
        let item = BatchItem {
            custom_id: "doc-1".into(),
            request: crate::ChatRequest {
                model: "claude-haiku-5-5".into(),
                system: Some("Answer in French.".into()),
                messages: vec![crate::Message::user("Hi")],
                max_tokens: 512,
                request_tag: Some("task-1".into()),
                ..Default::default()
            },
        };
        let body = encode(&t, std::slice::from_ref(&item), BatchLimits::ANTHROPIC).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"requests":[{"custom_id":"doc-1","params":{
                "model":"claude-haiku-5-5","max_tokens":512,"system":"Answer in French.",
                "messages":[{"role":"user","content":"Hi"}],"metadata":{"user_id":"task-1"}}}]})
        );
        // The line size the assembler sums is the line plus its separator.
        assert_eq!(line_bytes(&t, &item), body.len() - b"{\"requests\":[]}".len() + 1);
        assert_eq!(
            resolve(&t, "/v1/messages/batches/x/results"),
            "http://127.0.0.1:9/v1/messages/batches/x/results"
        );
        assert_eq!(resolve(&t, "https://api.example/r"), "https://api.example/r");
        assert!(batch_url(&t, "../files").is_err());

        // Under the byte limit by its text, over it once encoded (each newline is escaped to
        // two bytes): refused by the encoding.
        let lines = BatchItem {
            custom_id: "nl".into(),
            request: crate::ChatRequest {
                messages: vec![crate::Message::user("\n".repeat(600))],
                ..item.request.clone()
            },
        };
        let limits = BatchLimits { max_items: 10, max_bytes: 1000 };
        assert!(super::super::validate(std::slice::from_ref(&lines), limits).is_ok());
        let bytes = line_bytes(&t, &lines) - 1 + b"{\"requests\":[]}".len();
        assert_eq!(
            encode(&t, std::slice::from_ref(&lines), limits),
            Err(BatchInvalid::TooLarge { bytes, max: 1000 })
        );
    }
}
