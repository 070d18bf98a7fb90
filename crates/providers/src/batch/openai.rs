//! OpenAI Files + Batches (spec §4): upload the requests as a JSONL file (`purpose=batch`),
//! create a batch on it, poll it, then read *both* its output and its error file.
//!
//! Differences that bite: a line is a success only when `response.status_code` is 200 — HTTP
//! failures come back with a `response` (often in the error file, `error: null`), expired and
//! cancelled requests with `response: null` and `error.code`; `error_file_id: ""` means no file;
//! counts move while the batch runs; the batch keeps our metadata, which is how a lost create is
//! found again.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_core::config::ProviderKind;

use super::{
    BatchCounts, BatchError, BatchHandle, BatchInvalid, BatchItem, BatchItemResult, BatchLimits,
    BatchOutcome, BatchPage, BatchState, BatchStatus, Failure, check_size, create_once_or_unknown,
    idempotent, jsonl,
};
use crate::error::{ErrorKind, ProviderError, TimeoutPhase};
use crate::openai::{OpenAi, WireRequest};
use crate::retry::RetryPolicy;
use crate::transport::{Dialect, Transport};

type T = Transport<OpenAi>;

const ENDPOINT: &str = "/v1/chat/completions";
/// Input files expire a week after upload: long enough for any batch (24 h window), short enough
/// that a file orphaned by a lost upload answer does not linger for the default 30 days.
const INPUT_FILE_TTL_SECONDS: &str = "604800";

// ---- request ----

#[derive(Serialize)]
struct Line<'a> {
    custom_id: &'a str,
    method: &'static str,
    url: &'static str,
    body: WireRequest<'a>,
}

fn write_line(t: &T, item: &BatchItem, out: &mut Vec<u8>) {
    let line = Line {
        custom_id: &item.custom_id,
        method: "POST",
        url: ENDPOINT,
        body: t.dialect.body(&item.request, false, true),
    };
    // Writing plain structs of strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

pub(super) fn line_bytes(t: &T, item: &BatchItem) -> usize {
    let mut buf = Vec::new();
    write_line(t, item, &mut buf);
    buf.len()
}

/// The JSONL input file, refused if over the byte limit.
fn encode(t: &T, items: &[BatchItem], limits: BatchLimits) -> Result<Bytes, BatchInvalid> {
    let mut buf = Vec::with_capacity(items.len() * 256);
    for item in items {
        write_line(t, item, &mut buf);
    }
    check_size(buf.len(), limits)?;
    Ok(Bytes::from(buf))
}

#[derive(Serialize)]
struct CreateBatch<'a> {
    input_file_id: &'a str,
    endpoint: &'static str,
    completion_window: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: &'a BTreeMap<String, String>,
}

// ---- response ----

#[derive(Deserialize)]
struct WireFile {
    id: String,
}

#[derive(Deserialize)]
struct WireBatch {
    id: String,
    status: String,
    #[serde(default)]
    input_file_id: Option<String>,
    #[serde(default)]
    output_file_id: Option<String>,
    #[serde(default)]
    error_file_id: Option<String>,
    created_at: i64,
    #[serde(default)]
    expires_at: Option<i64>,
    #[serde(default)]
    completed_at: Option<i64>,
    #[serde(default)]
    failed_at: Option<i64>,
    #[serde(default)]
    expired_at: Option<i64>,
    #[serde(default)]
    cancelled_at: Option<i64>,
    #[serde(default)]
    cancelling_at: Option<i64>,
    #[serde(default)]
    request_counts: Option<WireCounts>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    errors: Option<WireErrors>,
}

#[derive(Deserialize)]
struct WireCounts {
    #[serde(default)]
    total: u64,
    #[serde(default)]
    completed: u64,
    #[serde(default)]
    failed: u64,
}

#[derive(Deserialize)]
struct WireErrors {
    #[serde(default)]
    data: Vec<WireBatchError>,
}

#[derive(Deserialize)]
struct WireBatchError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    line: Option<u64>,
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
struct WireOutputLine {
    custom_id: String,
    #[serde(default)]
    response: Option<WireLineResponse>,
    #[serde(default)]
    error: Option<WireLineError>,
}

#[derive(Deserialize)]
struct WireLineResponse {
    status_code: u16,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    body: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct WireLineError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn time(t: Option<i64>) -> Option<DateTime<Utc>> {
    t.and_then(|s| DateTime::from_timestamp(s, 0))
}

/// `null` and `""` both mean "no file" (an empty id has been seen on clean batches).
fn file_id(id: Option<String>) -> Option<String> {
    id.filter(|s| !s.trim().is_empty())
}

fn state_of(status: &str) -> BatchState {
    match status {
        "validating" => BatchState::Submitted,
        "in_progress" => BatchState::InProgress,
        "finalizing" => BatchState::Finalizing,
        "completed" => BatchState::Ended,
        "cancelling" => BatchState::Cancelling,
        "cancelled" => BatchState::Cancelled,
        "expired" => BatchState::Expired,
        "failed" => BatchState::Failed,
        other => {
            // A status added later: keep polling rather than guess at an end.
            tracing::warn!(status = other, "unknown OpenAI batch status");
            BatchState::InProgress
        }
    }
}

fn normalize(kind: ProviderKind, b: WireBatch) -> BatchStatus {
    let state = state_of(&b.status);
    let counts = b.request_counts.map_or_else(BatchCounts::default, |c| BatchCounts {
        total: c.total,
        processing: c.total.saturating_sub(c.completed + c.failed),
        succeeded: c.completed,
        errored: c.failed,
        cancelled: 0,
        expired: 0,
    });
    let created_at = time(Some(b.created_at)).unwrap_or_default();
    let ended_at = match state {
        BatchState::Ended => time(b.completed_at),
        BatchState::Failed => time(b.failed_at),
        BatchState::Expired => time(b.expired_at),
        BatchState::Cancelled => time(b.cancelled_at),
        _ => None,
    };
    let metadata = b
        .metadata
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k, s)),
            _ => None,
        })
        .collect();
    let errors = b
        .errors
        .map(|e| e.data)
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let mut s = format!(
                "{}: {}",
                e.code.as_deref().unwrap_or("error"),
                e.message.as_deref().unwrap_or("")
            );
            if let Some(l) = e.line {
                s.push_str(&format!(" (line {l})"));
            }
            s
        })
        .collect();
    let input_file_id = file_id(b.input_file_id);
    BatchStatus {
        handle: BatchHandle {
            provider: kind,
            provider_batch_id: b.id,
            input_file_id,
            created_at: Some(created_at),
        },
        state,
        counts,
        created_at,
        expires_at: time(b.expires_at),
        ended_at,
        cancel_requested_at: time(b.cancelling_at),
        metadata,
        errors,
        results_url: None,
        output_file_id: file_id(b.output_file_id),
        error_file_id: file_id(b.error_file_id),
    }
}

/// An id from the network or the store goes into a path: refuse one that would change the path.
fn path_id(kind: ProviderKind, id: &str) -> Result<&str, ProviderError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(ProviderError::new(
            kind,
            ErrorKind::InvalidRequest,
            format!("not a batch or file id: {id:?}"),
        ));
    }
    Ok(id)
}

// ---- calls ----

pub(super) async fn submit(
    t: &T,
    items: &[BatchItem],
    metadata: &BTreeMap<String, String>,
    headers: &[(String, String)],
    policy: &RetryPolicy,
) -> Result<BatchHandle, BatchError> {
    let kind = t.dialect.kind;
    let file = encode(t, items, BatchLimits::OPENAI)?;
    // Re-sending an upload whose answer was lost can only leave an unused file behind (not
    // billed, and expiring with the TTL below): unlike the create, it is retried per the policy.
    let upload_url = format!("{}/files", t.dialect.root);
    let uploaded: WireFile = idempotent(policy, || {
        let file = file.clone();
        let url = &upload_url;
        async move {
            let len = file.len() as u64;
            let part = reqwest::multipart::Part::stream_with_length(file, len)
                .file_name("sluice-batch.jsonl")
                .mime_str("application/jsonl")
                .map_err(|e| ProviderError::new(kind, ErrorKind::InvalidRequest, e.to_string()))?;
            let mut form =
                reqwest::multipart::Form::new().text("purpose", "batch").part("file", part);
            if kind == ProviderKind::Openai {
                form = form
                    .text("expires_after[anchor]", "created_at")
                    .text("expires_after[seconds]", INPUT_FILE_TTL_SECONDS);
            }
            let b = t.dialect.authorize(t.http.post(url).header("accept", "application/json"))?;
            t.batch_json(b.multipart(form), t.upload_deadline()).await
        }
    })
    .await?;
    let input_file_id = path_id(kind, &uploaded.id)?.to_owned();

    let create_url = format!("{}/batches", t.dialect.root);
    let body = CreateBatch {
        input_file_id: &input_file_id,
        endpoint: ENDPOINT,
        completion_window: "24h",
        metadata,
    };
    let wire: WireBatch = create_once_or_unknown(policy, || async {
        let b =
            t.dialect.authorize(t.http.post(&create_url).header("accept", "application/json"))?;
        let b = crate::client::extra_headers(kind, b, headers)?;
        t.batch_json(b.json(&body), t.small_call_deadline()).await
    })
    .await?;
    let mut handle = normalize(kind, wire).handle;
    handle.input_file_id.get_or_insert(input_file_id);
    Ok(handle)
}

pub(super) async fn status(
    t: &T,
    handle: &BatchHandle,
    policy: &RetryPolicy,
) -> Result<BatchStatus, BatchError> {
    let kind = t.dialect.kind;
    let url = format!("{}/batches/{}", t.dialect.root, path_id(kind, &handle.provider_batch_id)?);
    let wire: WireBatch = idempotent(policy, || async {
        let b = t.dialect.authorize(t.http.get(&url).header("accept", "application/json"))?;
        t.batch_json(b, t.small_call_deadline()).await
    })
    .await?;
    Ok(normalize(kind, wire))
}

pub(super) async fn cancel(
    t: &T,
    handle: &BatchHandle,
    policy: &RetryPolicy,
) -> Result<BatchStatus, BatchError> {
    let kind = t.dialect.kind;
    let url =
        format!("{}/batches/{}/cancel", t.dialect.root, path_id(kind, &handle.provider_batch_id)?);
    // A cancel is idempotent (a second one changes nothing), so it may be retried.
    let wire: WireBatch = idempotent(policy, || async {
        let b = t.dialect.authorize(t.http.post(&url).header("accept", "application/json"))?;
        t.batch_json(b, t.small_call_deadline()).await
    })
    .await?;
    Ok(normalize(kind, wire))
}

pub(super) async fn list(
    t: &T,
    limit: usize,
    after: Option<&str>,
    policy: &RetryPolicy,
) -> Result<BatchPage, BatchError> {
    let kind = t.dialect.kind;
    let limit = limit.clamp(1, 100).to_string();
    let url = format!("{}/batches", t.dialect.root);
    let page: WirePage = idempotent(policy, || async {
        let mut q: Vec<(&str, &str)> = vec![("limit", &limit)];
        if let Some(a) = after {
            q.push(("after", a));
        }
        let url = super::with_query(kind, &url, &q)?;
        let b = t.http.get(url).header("accept", "application/json");
        t.batch_json(t.dialect.authorize(b)?, t.small_call_deadline()).await
    })
    .await?;
    let next_after = page.last_id.clone().or_else(|| page.data.last().map(|b| b.id.clone()));
    Ok(BatchPage {
        batches: page.data.into_iter().map(|b| normalize(kind, b)).collect(),
        has_more: page.has_more,
        next_after,
    })
}

pub(super) async fn results(
    t: &T,
    status: &BatchStatus,
    policy: &RetryPolicy,
) -> Result<Vec<BatchItemResult>, BatchError> {
    let hint = usize::try_from(status.counts.total).unwrap_or(0).min(BatchLimits::OPENAI.max_items);
    let mut out = Vec::with_capacity(hint);
    // Both files, always: HTTP-level failures have been seen in the error file, and successes
    // are judged by each line's status code, not by the file it came in.
    for id in [&status.output_file_id, &status.error_file_id].into_iter().flatten() {
        out.extend(file_results(t, id, policy).await?);
    }
    Ok(out)
}

async fn file_results(
    t: &T,
    file_id: &str,
    policy: &RetryPolicy,
) -> Result<Vec<BatchItemResult>, BatchError> {
    let kind = t.dialect.kind;
    let url = format!("{}/files/{}/content", t.dialect.root, path_id(kind, file_id)?);
    let d = &t.dialect;
    idempotent(policy, || async {
        let b = d.authorize(t.http.get(&url).header("accept", "application/binary"))?;
        let resp = t.send_batch_call(b, t.small_call_deadline()).await?;
        let mut out = Vec::new();
        let mut unreadable = 0usize;
        jsonl::for_each_line(kind, resp, t.standard.idle, |line| match parse_line(d, line) {
            Some(r) => out.push(r),
            None => unreadable += 1,
        })
        .await
        .map_err(Failure::after_send)?;
        if unreadable > 0 {
            tracing::warn!(file = %file_id, unreadable, "batch output lines that could not be read");
        }
        Ok(out)
    })
    .await
}

/// One output/error line, judged by `response.status_code` and `error`; `None` when not even
/// its `custom_id` can be read.
fn parse_line(d: &OpenAi, line: &[u8]) -> Option<BatchItemResult> {
    let l: WireOutputLine = match serde_json::from_slice(line) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable batch output line");
            return None;
        }
    };
    let kind = d.kind;
    let outcome = match (l.response, l.error) {
        (Some(r), _) if r.status_code == 200 => {
            let body = r.body.as_deref().map_or("", RawValue::get);
            match d.parse_response(body.as_bytes()) {
                Ok(mut resp) => {
                    resp.provider_request_id = r.request_id;
                    BatchOutcome::Succeeded(Box::new(resp))
                }
                Err(mut e) => {
                    e.request_id = r.request_id;
                    BatchOutcome::Errored(e)
                }
            }
        }
        (Some(r), _) => {
            // An HTTP failure of this one request: classified exactly as the same status and
            // error body would be on a real-time call.
            let parsed = r.body.as_deref().and_then(|b| d.parse_error_body(b.get().as_bytes()));
            let (error_type, code, message) = parsed.unwrap_or_else(|| {
                (None, None, format!("HTTP {} without an error body", r.status_code))
            });
            let mut e = ProviderError::new(kind, ErrorKind::Status, message);
            e.status = Some(r.status_code);
            e.error_type = error_type;
            e.code = code;
            e.request_id = r.request_id;
            BatchOutcome::Errored(e)
        }
        (None, Some(err)) => match err.code.as_deref() {
            Some("batch_expired") => BatchOutcome::Expired,
            Some("batch_cancelled") => BatchOutcome::Cancelled,
            code => {
                let message = err.message.unwrap_or_else(|| "failed without a response".into());
                // Failed without an HTTP answer: a timeout if it says so, else the provider's
                // side broke (retryable, as an unknown mid-stream error is).
                let mut e = if code == Some("request_timeout") {
                    ProviderError::new(kind, ErrorKind::Timeout(TimeoutPhase::Total), message)
                } else {
                    ProviderError::new(kind, ErrorKind::StreamError, message)
                };
                e.code = code.map(str::to_owned);
                BatchOutcome::Errored(e)
            }
        },
        (None, None) => BatchOutcome::Errored(ProviderError::new(
            kind,
            ErrorKind::Malformed,
            "a result line with neither response nor error",
        )),
    };
    Some(BatchItemResult { custom_id: l.custom_id, outcome })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorClass, PermanentCause, RetryCause};

    fn dialect() -> OpenAi {
        OpenAi::new(ProviderKind::Openai, &"http://127.0.0.1:9/v1".parse().unwrap(), None)
    }

    fn parse(line: &str) -> BatchOutcome {
        parse_line(&dialect(), line.as_bytes()).unwrap().outcome
    }

    #[test]
    fn spec_output_lines() {
        let ok = parse(
            r#"{"id": "batch_req_wnaDys", "custom_id": "req-0002", "response": {"status_code": 200, "request_id": "req_c187b3", "body": {"id": "chatcmpl-9758Iw", "object": "chat.completion", "created": 1764040000, "model": "gpt-4.1-mini-2025-04-14", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bye."}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}}}, "error": null}"#,
        );
        let BatchOutcome::Succeeded(r) = ok else { panic!("{ok:?}") };
        assert_eq!(r.text, "Bye.");
        assert_eq!(r.usage.input_tokens, 12);
        assert_eq!(r.provider_request_id.as_deref(), Some("req_c187b3"));

        let http400 = parse(
            r#"{"id": "batch_req_a1", "custom_id": "req-0007", "response": {"status_code": 400, "request_id": "req_9f1c", "body": {"error": {"message": "This model's maximum context length is 128000 tokens", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}}, "error": null}"#,
        );
        let BatchOutcome::Errored(e) = http400 else { panic!() };
        assert_eq!(e.class(), ErrorClass::Permanent { cause: PermanentCause::BadRequest });
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        assert_eq!(e.status, Some(400));

        let http500 = parse(
            r#"{"custom_id": "x", "response": {"status_code": 500, "request_id": "r", "body": {"error": {"message": "boom", "type": "server_error", "param": null, "code": null}}}, "error": null}"#,
        );
        let BatchOutcome::Errored(e) = http500 else { panic!() };
        assert_eq!(e.class(), ErrorClass::Retryable { cause: RetryCause::ServerError });

        assert_eq!(
            parse(
                r#"{"id": "batch_req_a2", "custom_id": "req-0008", "response": null, "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}"#
            ),
            BatchOutcome::Expired
        );
        assert_eq!(
            parse(r#"{"custom_id": "c", "response": null, "error": {"code": "batch_cancelled"}}"#),
            BatchOutcome::Cancelled
        );
        let BatchOutcome::Errored(e) =
            parse(r#"{"custom_id": "t", "response": null, "error": {"code": "request_timeout"}}"#)
        else {
            panic!()
        };
        assert_eq!(e.class(), ErrorClass::Retryable { cause: RetryCause::Timeout });
        assert!(matches!(parse(r#"{"custom_id": "n"}"#), BatchOutcome::Errored(_)));
        assert!(parse_line(&dialect(), b"{\"no_custom_id\": 1}").is_none());
    }

    #[test]
    fn batch_objects() {
        let b: WireBatch = serde_json::from_str(
            r#"{"id": "batch_abc123", "object": "batch", "endpoint": "/v1/chat/completions", "errors": null,
                "input_file_id": "file-abc123", "completion_window": "24h", "status": "completed",
                "output_file_id": "file-out456", "error_file_id": "", "created_at": 1764039600,
                "in_progress_at": 1764039605, "expires_at": 1764126000, "finalizing_at": 1764043200,
                "completed_at": 1764043230, "failed_at": null, "expired_at": null, "cancelling_at": null,
                "cancelled_at": null, "request_counts": {"total": 100, "completed": 95, "failed": 5},
                "metadata": {"sluice_batch_id": "b-1", "n": 3}}"#,
        )
        .unwrap();
        let s = normalize(ProviderKind::Openai, b);
        assert_eq!(s.state, BatchState::Ended);
        assert_eq!(s.output_file_id.as_deref(), Some("file-out456"));
        assert_eq!(s.error_file_id, None, "an empty id is no file");
        assert_eq!(s.counts.total, 100);
        assert_eq!(s.counts.errored, 5);
        assert_eq!(s.counts.processing, 0);
        assert_eq!(s.ended_at.unwrap().timestamp(), 1764043230);
        assert_eq!(s.metadata.get("sluice_batch_id").map(String::as_str), Some("b-1"));
        assert!(!s.metadata.contains_key("n"));
        for (w, st) in [
            ("validating", BatchState::Submitted),
            ("failed", BatchState::Failed),
            ("finalizing", BatchState::Finalizing),
            ("cancelling", BatchState::Cancelling),
            ("expired", BatchState::Expired),
        ] {
            assert_eq!(state_of(w), st);
        }
        assert!(path_id(ProviderKind::Openai, "file/../x").is_err());
    }

    #[test]
    fn input_lines_are_the_spec_shape() {
        crate::client::ensure_crypto_provider();
        let t = Transport {
            http: reqwest::Client::new(),
            dialect: std::sync::Arc::new(dialect()),
            standard: crate::Timeouts::standard(),
            flex: crate::Timeouts::flex(),
        };
        let item = BatchItem {
            custom_id: "req-1".into(),
            request: crate::ChatRequest {
                model: "gpt-4.1-mini".into(),
                messages: vec![crate::Message::user("Say hello.")],
                max_tokens: 50,
                tier: crate::Tier::Flex,
                ..Default::default()
            },
        };
        let two = [item.clone(), BatchItem { custom_id: "req-2".into(), ..item.clone() }];
        let file = encode(&t, &two, BatchLimits::OPENAI).unwrap();
        let text = std::str::from_utf8(&file).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        // No service tier (the batch is its own) and no stream.
        assert_eq!(
            v,
            serde_json::json!({"custom_id":"req-1","method":"POST","url":"/v1/chat/completions",
                "body":{"model":"gpt-4.1-mini","messages":[{"role":"user","content":"Say hello."}],
                "max_completion_tokens":50}})
        );
        assert_eq!(line_bytes(&t, &item), file.len() / 2);

        // Exactly at the limit passes, one byte under it is refused, by the encoded size.
        let at = BatchLimits { max_items: 10, max_bytes: file.len() };
        assert!(encode(&t, &two, at).is_ok());
        let under = BatchLimits { max_items: 10, max_bytes: file.len() - 1 };
        assert_eq!(
            encode(&t, &two, under),
            Err(BatchInvalid::TooLarge { bytes: file.len(), max: file.len() - 1 })
        );
    }
}
