//! Provider errors and their classification (STYLE.md §4: each outcome is only *classified*
//! here; how long to wait lives in [`mod@crate::retry`]).
//!
//! Classification follows the spec's status tables (§1.7, §3.7) with the exceptions that bite
//! (§7.3): 529 is retryable; spend-limit and `insufficient_quota` 429s are not; an `error` event
//! inside a 200 stream is classified by its `error.type`, never by the 200; a stream that ends
//! before its final event is a retryable cut, never a success.

use std::fmt;
use std::time::Duration;

use sluice_core::config::ProviderKind;

use crate::ratelimit::RateLimitSnapshot;

/// Why a retry may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryCause {
    RateLimited,
    Overloaded,
    ServerError,
    Timeout,
    ConnectionReset,
    StreamCut,
}

/// Why a retry will not help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PermanentCause {
    BadRequest,
    Auth,
    NotFound,
    TooLarge,
    /// Out of credits or over a spend limit: waiting will not clear it.
    QuotaExhausted,
    /// The request asks for something the provider does not offer (e.g. flex on Anthropic).
    Unsupported,
    /// The provider said so (`x-should-retry: false`) of an error its status would retry.
    NotRetryable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    Retryable {
        cause: RetryCause,
    },
    Permanent {
        cause: PermanentCause,
    },
    /// OpenAI's flex tier refused for lack of capacity (429 "resource unavailable"). Its own
    /// class because the answer is a policy choice: retry in flex while the deadline allows, then
    /// fall back to the standard tier.
    FlexUnavailable,
}

impl ErrorClass {
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Retryable { .. })
    }

    /// A short, stable label for metrics and task records.
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Retryable { cause } => match cause {
                RetryCause::RateLimited => "rate_limited",
                RetryCause::Overloaded => "overloaded",
                RetryCause::ServerError => "server_error",
                RetryCause::Timeout => "timeout",
                RetryCause::ConnectionReset => "connection_reset",
                RetryCause::StreamCut => "stream_cut",
            },
            ErrorClass::Permanent { cause } => match cause {
                PermanentCause::BadRequest => "bad_request",
                PermanentCause::Auth => "auth",
                PermanentCause::NotFound => "not_found",
                PermanentCause::TooLarge => "too_large",
                PermanentCause::QuotaExhausted => "quota_exhausted",
                PermanentCause::Unsupported => "unsupported",
                PermanentCause::NotRetryable => "not_retryable",
            },
            ErrorClass::FlexUnavailable => "flex_unavailable",
        }
    }
}

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    /// No response (or, for a stream, no first byte) in time.
    FirstByte,
    /// A stream went silent between chunks.
    Idle,
    /// A plain call's body took too long in total.
    Total,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A non-2xx answer with (usually) the provider's error body.
    Status,
    /// An `error` event (Anthropic) or error chunk (OpenAI) inside a 200 stream.
    StreamError,
    Timeout(TimeoutPhase),
    /// Could not connect: the request never went out.
    Connection,
    /// The connection broke after the request went out, before an answer began: the provider
    /// may have run it.
    Dropped,
    /// The stream ended (EOF or broken connection) before its final event.
    StreamCut,
    /// A 2xx answer that is not what the spec says (bad JSON, missing fields).
    Malformed,
    /// Refused locally before sending: the provider lacks the feature.
    Unsupported,
    /// The request could not be built (e.g. an invalid extra header).
    InvalidRequest,
    /// Not sent: its caller gave it up first (its task went to another worker).
    GivenUp,
}

/// A failed call. Never carries the API key: messages come from the provider's answer or from
/// the HTTP library with the URL stripped. Boxed (fields readable through `Deref`) so that
/// `Result<_, ProviderError>` stays one pointer wide on the happy path.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ProviderError(Box<ErrorDetails>);

/// What a [`ProviderError`] knows.
#[derive(Debug, Clone)]
pub struct ErrorDetails {
    pub provider: ProviderKind,
    pub kind: ErrorKind,
    /// The HTTP status (200 for errors inside a stream), when there was an answer.
    pub status: Option<u16>,
    /// The provider's `error.type` (e.g. `overloaded_error`, `invalid_request_error`).
    pub error_type: Option<String>,
    /// OpenAI's `error.code` or Anthropic's `error.details.error_code`.
    pub code: Option<String>,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// `x-should-retry: true|false`: the provider's own word on retrying, which both official
    /// SDKs put before the status.
    pub should_retry: Option<bool>,
    pub request_id: Option<String>,
    pub rate_limit: Option<RateLimitSnapshot>,
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.provider.as_str(), self.class().label())?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {s}")?;
            if let Some(t) = &self.error_type {
                write!(f, " {t}")?;
            }
            if let Some(c) = &self.code {
                write!(f, "/{c}")?;
            }
            f.write_str(")")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(id) = &self.request_id {
            write!(f, " [request {id}]")?;
        }
        Ok(())
    }
}

/// Equal when they say the same thing: provider, kind, status, type, code and message (not the
/// request id, retry-after or rate-limit snapshot, which differ from one occurrence to the next).
impl PartialEq for ProviderError {
    fn eq(&self, other: &Self) -> bool {
        self.provider == other.provider
            && self.kind == other.kind
            && self.status == other.status
            && self.error_type == other.error_type
            && self.code == other.code
            && self.message == other.message
    }
}

impl std::ops::Deref for ProviderError {
    type Target = ErrorDetails;
    fn deref(&self) -> &ErrorDetails {
        &self.0
    }
}

impl std::ops::DerefMut for ProviderError {
    fn deref_mut(&mut self) -> &mut ErrorDetails {
        &mut self.0
    }
}

impl ProviderError {
    pub(crate) fn new(provider: ProviderKind, kind: ErrorKind, message: impl Into<String>) -> Self {
        ProviderError(Box::new(ErrorDetails {
            provider,
            kind,
            status: None,
            error_type: None,
            code: None,
            message: message.into(),
            retry_after: None,
            should_retry: None,
            request_id: None,
            rate_limit: None,
        }))
    }

    /// From a reqwest error (connect, reset, body read). The URL is stripped: it is not secret
    /// today, but a base URL may one day carry credentials.
    pub(crate) fn transport(provider: ProviderKind, e: reqwest::Error, mid_stream: bool) -> Self {
        let kind = if e.is_timeout() {
            ErrorKind::Timeout(if e.is_connect() {
                TimeoutPhase::Connect
            } else {
                TimeoutPhase::FirstByte
            })
        } else if mid_stream {
            ErrorKind::StreamCut
        } else if e.is_connect() {
            ErrorKind::Connection
        } else {
            ErrorKind::Dropped
        };
        let e = e.without_url();
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        ProviderError::new(provider, kind, msg)
    }

    /// Whether the provider may bill this failed call: it took the request and began to answer
    /// (or may have: no first byte came back in time, the connection broke once the request was
    /// out) before the call failed. A refusal (a non-2xx status) or a connection that never
    /// carried the request is not billed.
    pub fn may_be_billed(&self) -> bool {
        match &self.kind {
            ErrorKind::StreamError
            | ErrorKind::StreamCut
            | ErrorKind::Malformed
            | ErrorKind::Dropped => true,
            ErrorKind::Timeout(phase) => *phase != TimeoutPhase::Connect,
            ErrorKind::Status
            | ErrorKind::Connection
            | ErrorKind::Unsupported
            | ErrorKind::InvalidRequest
            | ErrorKind::GivenUp => false,
        }
    }

    /// Retryable or not, and why.
    pub fn class(&self) -> ErrorClass {
        use ErrorClass::{Permanent, Retryable};
        let retry = |cause| Retryable { cause };
        let perm = |cause| Permanent { cause };
        match &self.kind {
            ErrorKind::Timeout(_) => retry(RetryCause::Timeout),
            ErrorKind::Connection | ErrorKind::Dropped => retry(RetryCause::ConnectionReset),
            ErrorKind::StreamCut => retry(RetryCause::StreamCut),
            // The server sent garbage: most likely a glitch (a proxy, a truncated body) that a
            // second try does not repeat; attempts are bounded anyway.
            ErrorKind::Malformed => retry(RetryCause::ServerError),
            ErrorKind::Unsupported => perm(PermanentCause::Unsupported),
            ErrorKind::InvalidRequest => perm(PermanentCause::BadRequest),
            ErrorKind::GivenUp => perm(PermanentCause::NotRetryable),
            ErrorKind::StreamError => self.class_by_type(),
            ErrorKind::Status => {
                let by_status = self.class_by_status();
                match (self.should_retry, by_status) {
                    // Flex refusals keep their class: whether to wait for flex is sluice's
                    // choice against the deadline, not a plain retry.
                    (_, ErrorClass::FlexUnavailable) | (None, _) => by_status,
                    (Some(false), Retryable { .. }) => perm(PermanentCause::NotRetryable),
                    (Some(true), Permanent { .. }) => retry(RetryCause::ServerError),
                    (Some(_), _) => by_status,
                }
            }
        }
    }

    fn quota_exhausted(&self) -> bool {
        let is = |s: &Option<String>, v: &[&str]| s.as_deref().is_some_and(|s| v.contains(&s));
        is(
            &self.code,
            &["insufficient_quota", "enforced_spend_limit_reached", "credit_balance_exhausted"],
        ) || is(&self.error_type, &["insufficient_quota", "billing_error"])
    }

    fn flex_unavailable(&self) -> bool {
        let is = |s: &Option<String>| s.as_deref() == Some("resource_unavailable");
        is(&self.code)
            || is(&self.error_type)
            || self.message.to_ascii_lowercase().contains("resource unavailable")
    }

    fn class_by_status(&self) -> ErrorClass {
        use ErrorClass::{Permanent, Retryable};
        let retry = |cause| Retryable { cause };
        let perm = |cause| Permanent { cause };
        let Some(status) = self.status else { return retry(RetryCause::ServerError) };
        match status {
            429 if self.quota_exhausted() => perm(PermanentCause::QuotaExhausted),
            429 if self.flex_unavailable() => ErrorClass::FlexUnavailable,
            429 => retry(RetryCause::RateLimited),
            402 => perm(PermanentCause::QuotaExhausted),
            400 | 422 if self.quota_exhausted() => perm(PermanentCause::QuotaExhausted),
            401 | 403 => perm(PermanentCause::Auth),
            404 => perm(PermanentCause::NotFound),
            413 => perm(PermanentCause::TooLarge),
            408 | 504 => retry(RetryCause::Timeout),
            // The SDKs retry a conflict; it is a transient state on the provider's side.
            409 => retry(RetryCause::ServerError),
            529 => retry(RetryCause::Overloaded),
            503 if matches!(self.code.as_deref(), Some("server_is_overloaded" | "slow_down")) => {
                retry(RetryCause::Overloaded)
            }
            s if s >= 500 => retry(RetryCause::ServerError),
            _ => perm(PermanentCause::BadRequest),
        }
    }

    /// Mid-stream errors arrive under a 200: only `error.type` says what happened.
    fn class_by_type(&self) -> ErrorClass {
        use ErrorClass::{Permanent, Retryable};
        let retry = |cause| Retryable { cause };
        let perm = |cause| Permanent { cause };
        if self.quota_exhausted() {
            return perm(PermanentCause::QuotaExhausted);
        }
        // OpenAI's error chunks say more in `code` than in `type` (`server_error`).
        match self.code.as_deref() {
            Some("server_is_overloaded" | "slow_down") => return retry(RetryCause::Overloaded),
            Some("rate_limit_exceeded") => return retry(RetryCause::RateLimited),
            _ => {}
        }
        match self.error_type.as_deref().unwrap_or("") {
            "overloaded_error" | "service_unavailable_error" => retry(RetryCause::Overloaded),
            "rate_limit_error" | "rate_limit_exceeded" | "requests" | "tokens" => {
                retry(RetryCause::RateLimited)
            }
            "timeout_error" => retry(RetryCause::Timeout),
            "invalid_request_error" => perm(PermanentCause::BadRequest),
            "authentication_error" | "permission_error" => perm(PermanentCause::Auth),
            "not_found_error" => perm(PermanentCause::NotFound),
            "request_too_large" => perm(PermanentCause::TooLarge),
            // api_error, server_error, and types added later: the provider's side broke.
            _ => retry(RetryCause::ServerError),
        }
    }

    /// A rate limit of our key (not an overload of the provider): slows every caller of the key.
    pub fn is_rate_limit(&self) -> bool {
        self.class() == ErrorClass::Retryable { cause: RetryCause::RateLimited }
    }

    /// The provider answered with an error status before doing any work, or the call was given
    /// up before it went out: no tokens were spent.
    pub fn refused_before_work(&self) -> bool {
        matches!(self.kind, ErrorKind::Status | ErrorKind::GivenUp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(provider: ProviderKind, s: u16, ty: &str, code: Option<&str>) -> ProviderError {
        let mut e = ProviderError::new(provider, ErrorKind::Status, "m");
        e.status = Some(s);
        e.error_type = Some(ty.into());
        e.code = code.map(Into::into);
        e
    }

    fn class(s: u16, ty: &str, code: Option<&str>) -> ErrorClass {
        status(ProviderKind::Anthropic, s, ty, code).class()
    }

    const fn r(cause: RetryCause) -> ErrorClass {
        ErrorClass::Retryable { cause }
    }
    const fn p(cause: PermanentCause) -> ErrorClass {
        ErrorClass::Permanent { cause }
    }

    #[test]
    fn statuses() {
        assert_eq!(class(429, "rate_limit_error", None), r(RetryCause::RateLimited));
        assert_eq!(class(500, "api_error", None), r(RetryCause::ServerError));
        assert_eq!(class(502, "x", None), r(RetryCause::ServerError));
        assert_eq!(class(503, "service_unavailable_error", None), r(RetryCause::ServerError));
        assert_eq!(
            class(503, "service_unavailable_error", Some("server_is_overloaded")),
            r(RetryCause::Overloaded)
        );
        assert_eq!(class(529, "overloaded_error", None), r(RetryCause::Overloaded));
        assert_eq!(class(504, "timeout_error", None), r(RetryCause::Timeout));
        assert_eq!(class(400, "invalid_request_error", None), p(PermanentCause::BadRequest));
        assert_eq!(class(401, "authentication_error", None), p(PermanentCause::Auth));
        assert_eq!(class(403, "permission_error", None), p(PermanentCause::Auth));
        assert_eq!(class(404, "not_found_error", None), p(PermanentCause::NotFound));
        assert_eq!(class(413, "request_too_large", None), p(PermanentCause::TooLarge));
        assert_eq!(class(402, "billing_error", None), p(PermanentCause::QuotaExhausted));
        assert_eq!(class(418, "teapot", None), p(PermanentCause::BadRequest));
    }

    #[test]
    fn quota_429s_are_not_retryable() {
        assert_eq!(
            class(429, "rate_limit_error", Some("enforced_spend_limit_reached")),
            p(PermanentCause::QuotaExhausted)
        );
        let e = status(ProviderKind::Openai, 429, "insufficient_quota", Some("insufficient_quota"));
        assert_eq!(e.class(), p(PermanentCause::QuotaExhausted));
        assert!(!e.is_rate_limit());
    }

    #[test]
    fn flex_refusal_has_its_own_class() {
        let e =
            status(ProviderKind::Openai, 429, "resource_unavailable", Some("resource_unavailable"));
        assert_eq!(e.class(), ErrorClass::FlexUnavailable);
        let mut e = status(ProviderKind::Openai, 429, "x", None);
        e.message = "Resource Unavailable: flex capacity".into();
        assert_eq!(e.class(), ErrorClass::FlexUnavailable);
        assert!(!e.is_rate_limit());
    }

    #[test]
    fn mid_stream_errors_by_type() {
        let mid = |ty: &str| {
            let mut e = ProviderError::new(ProviderKind::Anthropic, ErrorKind::StreamError, "m");
            e.status = Some(200);
            e.error_type = Some(ty.into());
            e.class()
        };
        assert_eq!(mid("overloaded_error"), r(RetryCause::Overloaded));
        assert_eq!(mid("rate_limit_error"), r(RetryCause::RateLimited));
        assert_eq!(mid("api_error"), r(RetryCause::ServerError));
        assert_eq!(mid("timeout_error"), r(RetryCause::Timeout));
        assert_eq!(mid("invalid_request_error"), p(PermanentCause::BadRequest));
        assert_eq!(mid("billing_error"), p(PermanentCause::QuotaExhausted));
        assert_eq!(mid("brand_new_error"), r(RetryCause::ServerError));
        let mut e = ProviderError::new(ProviderKind::Openai, ErrorKind::StreamError, "m");
        e.error_type = Some("server_error".into());
        e.code = Some("server_is_overloaded".into());
        assert_eq!(e.class(), r(RetryCause::Overloaded));
    }

    #[test]
    fn transport_kinds() {
        let k = |kind| ProviderError::new(ProviderKind::Openai, kind, "m").class();
        assert_eq!(k(ErrorKind::StreamCut), r(RetryCause::StreamCut));
        assert_eq!(k(ErrorKind::Connection), r(RetryCause::ConnectionReset));
        assert_eq!(k(ErrorKind::Dropped), r(RetryCause::ConnectionReset));
        assert_eq!(k(ErrorKind::Timeout(TimeoutPhase::Idle)), r(RetryCause::Timeout));
        assert_eq!(k(ErrorKind::Unsupported), p(PermanentCause::Unsupported));
    }

    #[test]
    fn display_names_the_class_and_the_answer() {
        let mut e = status(ProviderKind::Anthropic, 529, "overloaded_error", None);
        e.request_id = Some("req_1".into());
        assert_eq!(
            e.to_string(),
            "anthropic overloaded (HTTP 529 overloaded_error): m [request req_1]"
        );
    }
}
