//! `POST /v1/hooks/{source}`: webhooks from other systems, signed in the Standard Webhooks scheme
//! (<https://www.standardwebhooks.com>): `webhook-id`, `webhook-timestamp` (unix seconds) and
//! `webhook-signature` (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, space-separated
//! when the sender rotates secrets). The secret is `whsec_<base64>`.
//!
//! A delivery's `webhook-id` becomes the event's idempotency key, so a retried or replayed delivery
//! returns the original event instead of storing a second one.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sluice_core::config::{Hook, HookType};

use crate::error::ApiError;
use crate::ingest::{body_error, respond, store_events};
use crate::metrics as m;
use crate::plan::EventIn;
use crate::routes::AppState;

pub use sluice_core::webhook::{decode_secret, sign};

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error(
        "the delivery's timestamp is {0}s away from now, outside the tolerance (a replay, or a skewed clock)"
    )]
    Stale(i64),
    #[error("no signature matches the body and the configured secret")]
    BadSignature,
}

/// Verifies a delivery: headers present, timestamp within `tolerance` of `now`, one signature
/// matching (compared in constant time). Pure, so that every case is tested without HTTP.
pub fn verify(
    key: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<String, Refused> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(Refused::MissingHeader(name))
    };
    let id = header("webhook-id")?;
    let timestamp: i64 = header("webhook-timestamp")?.parse().map_err(|_| Refused::BadTimestamp)?;
    let signatures = header("webhook-signature")?;
    // Saturating: the timestamp is the sender's, unchecked until here (i64::MIN is a number).
    let skew = now.saturating_sub(timestamp);
    if skew.unsigned_abs() > tolerance.as_secs() {
        return Err(Refused::Stale(skew));
    }
    if signatures
        .split_whitespace()
        .any(|sig| sluice_core::webhook::matches(key, id, timestamp, body, sig))
    {
        return Ok(id.to_owned());
    }
    Err(Refused::BadSignature)
}

pub async fn post_hook(
    State(state): State<Arc<AppState>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let response = match receive(&state, &source, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let outcome = response.status().as_u16().to_string();
    let known = state.config.hook(&source).map_or("unknown", |h| h.name.as_str()).to_owned();
    metrics::counter!(m::HOOK_DELIVERIES, "source" => known, "status" => outcome).increment(1);
    response
}

async fn receive(
    state: &AppState,
    source: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let hook =
        state.config.hook(source).ok_or_else(|| ApiError::not_found("webhook source", source))?;
    let body = body.map_err(|e| body_error(&e, state.options.max_body_bytes))?;
    let key = state.hook_keys.get(source).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "hook_secret_missing",
            format!(
                "the secret of webhook source {source:?} is not set (environment variable {})",
                hook.secret_env
            ),
        )
    })?;
    let now = chrono::Utc::now().timestamp();
    let delivery_id = verify(key, headers, &body, now, hook.tolerance).map_err(|e| {
        let code = match e {
            Refused::Stale(_) => "stale_timestamp",
            Refused::BadSignature => "bad_signature",
            Refused::BadTimestamp => "bad_timestamp",
            Refused::MissingHeader("webhook-signature") => "missing_signature",
            Refused::MissingHeader(_) => "missing_header",
        };
        ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string())
    })?;
    let event = to_event(hook, &body, &delivery_id)?;
    let done = store_events(state, vec![event], false, &format!("hook:{source}")).await?;
    Ok(respond(done, false))
}

/// The event a verified delivery becomes.
fn to_event(hook: &Hook, body: &[u8], delivery_id: &str) -> Result<EventIn, ApiError> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the webhook body is not valid JSON: {e}"))
    })?;
    let event_type = match &hook.event_type {
        HookType::Fixed(t) => t.clone(),
        HookType::Field { pointer, types } => {
            let found = doc.pointer(pointer).and_then(|v| v.as_str()).ok_or_else(|| {
                ApiError::unprocessable(
                    "invalid_event",
                    format!(
                        "the webhook body has no string at {pointer} to take the event type from"
                    ),
                )
            })?;
            types.get(found).cloned().unwrap_or_else(|| found.to_owned())
        }
    };
    let payload = match &hook.payload_field {
        None => doc.clone(),
        Some(pointer) => doc.pointer(pointer).cloned().ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_event",
                format!("the webhook body has nothing at {pointer} to use as the payload"),
            )
        })?,
    };
    Ok(EventIn {
        event_type,
        payload,
        idempotency_key: Some(format!("hook:{}:{delivery_id}", hook.name)),
        needed_within: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn headers(id: &str, ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        h.insert("webhook-timestamp", HeaderValue::from_str(&ts.to_string()).unwrap());
        h.insert("webhook-signature", HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn verifies_the_standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks specification.
        let key = decode_secret(SECRET).unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        let h = headers("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, &sig);
        assert_eq!(
            verify(&key, &h, body, 1614265330 + 10, Duration::from_secs(300)).as_deref(),
            Ok("msg_p5jXN8AQM9LWM0D4loKWxJek")
        );
    }

    #[test]
    fn refuses_wrong_stale_and_unsigned_deliveries() {
        let key = decode_secret(SECRET).unwrap();
        let body = b"{}";
        let now = 1_800_000_000;
        let good = sign(&key, "m1", now, body);
        let tol = Duration::from_secs(300);
        assert!(verify(&key, &headers("m1", now, &good), body, now, tol).is_ok());
        // Another body, another id, another key: no match.
        assert_eq!(
            verify(&key, &headers("m1", now, &good), b"{ }", now, tol),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(&key, &headers("m2", now, &good), body, now, tol),
            Err(Refused::BadSignature)
        );
        let other = decode_secret("whsec_c2VjcmV0").unwrap();
        assert_eq!(
            verify(&other, &headers("m1", now, &good), body, now, tol),
            Err(Refused::BadSignature)
        );
        // Old or from the future.
        assert_eq!(
            verify(&key, &headers("m1", now, &good), body, now + 301, tol),
            Err(Refused::Stale(301))
        );
        assert!(matches!(
            verify(&key, &headers("m1", now, &good), body, now - 400, tol),
            Err(Refused::Stale(_))
        ));
        // A timestamp at the end of i64's range is stale, not an overflow.
        for far in [i64::MIN, i64::MAX] {
            assert!(matches!(
                verify(&key, &headers("m1", far, &good), body, now, tol),
                Err(Refused::Stale(_))
            ));
        }
        // Rotation: any of several signatures may match.
        let rotated = format!("v1,AAAA {good}");
        assert!(verify(&key, &headers("m1", now, &rotated), body, now, tol).is_ok());
        assert_eq!(
            verify(&key, &HeaderMap::new(), body, now, tol),
            Err(Refused::MissingHeader("webhook-id"))
        );
    }
}
