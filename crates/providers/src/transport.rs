//! The HTTP half shared by every provider: send, time out, read errors, drive an SSE stream.
//!
//! A provider only supplies a [`Dialect`] (how to write its request, read its answer, its errors
//! and its stream events); everything about waiting and failing is written once, here.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use sluice_core::config::ProviderKind;
use tokio::time::Instant;

use crate::error::{ErrorKind, ProviderError, TimeoutPhase};
use crate::model::{ChatRequest, ChatResponse, StreamEvent, Tier};
use crate::ratelimit::RateLimitSnapshot;
use crate::sse::{SseDecoder, SseEvent};

/// How long to wait, per phase of a call. Flex calls get a longer profile: the provider queues
/// them behind standard traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect. Set on the shared HTTP client, so taken from the standard profile.
    pub connect: Duration,
    /// From sending until a stream's response headers and first body bytes.
    pub first_byte: Duration,
    /// Longest silence between two chunks of a stream (pings count as traffic).
    pub idle: Duration,
    /// A whole non-streamed call, headers included (they come only once the answer is
    /// generated). Long generations should stream instead (spec §7.3 item 25).
    pub total: Duration,
    /// A whole streamed call, from sending to the final event. Generous, since a stream may
    /// rightly run long; it exists so that a stream kept alive by pings alone, or dribbling a
    /// byte at a time, cannot hold a call slot forever.
    pub stream_total: Duration,
}

impl Timeouts {
    pub const fn standard() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
            // The Anthropic SDKs reckon a 128k-token answer takes about an hour to generate.
            stream_total: Duration::from_secs(3600),
        }
    }

    /// OpenAI documents flex requests as slow and suggests raising the client timeout to 15 min.
    pub const fn flex() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(900),
            idle: Duration::from_secs(300),
            total: Duration::from_secs(900),
            // The queueing allowed for the first byte, then the standard hour of generation.
            stream_total: Duration::from_secs(900 + 3600),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::standard()
    }
}

/// What a stream event meant.
#[derive(Debug)]
pub(crate) enum Step {
    Delta(String),
    Done(Box<ChatResponse>),
}

/// Folds one provider's SSE events into deltas and a final response.
pub(crate) trait Accumulator: Send + 'static {
    /// `Ok(None)` for events that carry nothing for us (pings, unknown types).
    fn on_event(&mut self, ev: SseEvent) -> Result<Option<Step>, ProviderError>;
}

/// One provider's wire format.
pub(crate) trait Dialect: Send + Sync + 'static {
    type Acc: Accumulator;
    fn kind(&self) -> ProviderKind;
    /// URL, auth, version headers and JSON body; fails only for requests the provider cannot take.
    fn request(
        &self,
        http: &reqwest::Client,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError>;
    /// A 2xx plain answer (request id and rate limits are filled in by the transport).
    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, ProviderError>;
    /// The provider's error body: (error.type, error.code, message).
    fn parse_error_body(&self, body: &[u8]) -> Option<(Option<String>, Option<String>, String)>;
    fn request_id(&self, headers: &HeaderMap) -> Option<String>;
    fn rate_limit(&self, headers: &HeaderMap) -> Option<RateLimitSnapshot>;
    fn accumulator(
        &self,
        request_id: Option<String>,
        rate_limit: Option<RateLimitSnapshot>,
    ) -> Self::Acc;
}

/// One provider: its dialect and the HTTP client shared by all its calls.
#[derive(Debug)]
pub(crate) struct Transport<D> {
    pub http: reqwest::Client,
    /// Shared, not cloned, by every stream of the client (it holds the key).
    pub dialect: Arc<D>,
    pub standard: Timeouts,
    pub flex: Timeouts,
}

// Not derived: a derive would demand `D: Clone`, which the `Arc` makes unnecessary.
impl<D> Clone for Transport<D> {
    fn clone(&self) -> Self {
        Transport {
            http: self.http.clone(),
            dialect: Arc::clone(&self.dialect),
            standard: self.standard,
            flex: self.flex,
        }
    }
}

/// The stream of a streamed call.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// Error bodies longer than this are cut before they are kept (an HTML page from a proxy).
const MAX_ERROR_MESSAGE: usize = 500;
/// An error body past this is not an error body worth reading.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// A whole answer to a stream request: far more than any model's longest output.
const MAX_WHOLE_ANSWER: usize = 32 * 1024 * 1024;

impl<D: Dialect> Transport<D> {
    fn timeouts(&self, tier: Tier) -> Timeouts {
        match tier {
            Tier::Standard => self.standard,
            Tier::Flex => self.flex,
        }
    }

    pub(crate) fn err(&self, kind: ErrorKind, msg: impl Into<String>) -> ProviderError {
        ProviderError::new(self.dialect.kind(), kind, msg)
    }

    /// Sends and waits for the headers; non-2xx answers become classified errors.
    async fn open(
        &self,
        req: &ChatRequest,
        stream: bool,
        deadline: Instant,
    ) -> Result<reqwest::Response, ProviderError> {
        let builder = self.dialect.request(&self.http, req, stream)?;
        let resp = match tokio::time::timeout_at(deadline, builder.send()).await {
            Err(_) => {
                let phase = if stream { TimeoutPhase::FirstByte } else { TimeoutPhase::Total };
                return Err(self.err(ErrorKind::Timeout(phase), "no response in time"));
            }
            Ok(Err(e)) => return Err(ProviderError::transport(self.dialect.kind(), e, false)),
            Ok(Ok(r)) => r,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.status_error(resp, deadline).await)
    }

    pub(crate) async fn status_error(
        &self,
        resp: reqwest::Response,
        deadline: Instant,
    ) -> ProviderError {
        let status = resp.status();
        let headers = resp.headers().clone();
        // The error body is small; if it does not come in time (or is not small), the status
        // alone classifies.
        let body = match tokio::time::timeout_at(deadline, read_capped(resp, MAX_ERROR_BODY)).await
        {
            Ok(Some(b)) => b,
            _ => Vec::new(),
        };
        self.error_from(status, &headers, &body)
    }

    fn error_from(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let (error_type, code, message) =
            self.dialect.parse_error_body(body).unwrap_or_else(|| {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let msg = if text.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    truncate(text, MAX_ERROR_MESSAGE)
                };
                (None, None, msg)
            });
        let mut e = self.err(ErrorKind::Status, truncate(&message, MAX_ERROR_MESSAGE));
        e.status = Some(status.as_u16());
        e.error_type = error_type;
        e.code = code;
        e.retry_after = crate::retry_after::from_headers(headers, Utc::now());
        e.should_retry = match headers.get("x-should-retry").map(|v| v.as_bytes()) {
            Some(b"true") => Some(true),
            Some(b"false") => Some(false),
            _ => None,
        };
        e.request_id = self.dialect.request_id(headers);
        e.rate_limit = self.dialect.rate_limit(headers);
        e
    }

    /// A plain (non-streamed) call.
    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let t = self.timeouts(req.tier);
        let start = Instant::now();
        // A plain answer's headers come only when the whole generation is done, so the first
        // byte is bounded by the total, not by `first_byte`.
        let resp = self.open(req, false, start + t.total).await?;
        let headers = resp.headers().clone();
        let body = match tokio::time::timeout_at(start + t.total, resp.bytes()).await {
            Err(_) => {
                return Err(self.err(
                    ErrorKind::Timeout(TimeoutPhase::Total),
                    "response body not read in time",
                ));
            }
            Ok(Err(e)) => return Err(ProviderError::transport(self.dialect.kind(), e, true)),
            Ok(Ok(b)) => b,
        };
        let request_id = self.dialect.request_id(&headers);
        let mut out = self.dialect.parse_response(&body).map_err(|mut e| {
            e.request_id = request_id.clone();
            e
        })?;
        out.provider_request_id = request_id;
        out.rate_limit = self.dialect.rate_limit(&headers);
        Ok(out)
    }

    /// A streamed call. Nothing is sent until the stream is first polled.
    pub fn stream(&self, req: &ChatRequest) -> EventStream {
        self.stream_observed(req, None)
    }

    /// [`Transport::stream`] that hands the answer's rate-limit headers to `limiter` as soon as
    /// they arrive, rather than with the response at the end of the stream: a long generation
    /// would otherwise let every other caller spend what the headers already said was gone,
    /// and hold the bucket from a reset measured when the stream began.
    pub(crate) fn stream_observed(
        &self,
        req: &ChatRequest,
        limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
    ) -> EventStream {
        let state = StreamState {
            limiter,
            transport: self.clone(),
            timeouts: self.timeouts(req.tier),
            request: Some(req.clone()),
            body: None,
            decoder: SseDecoder::new(),
            acc: None,
            pending: VecDeque::new(),
            events: Vec::new(),
            finished: false,
            got_bytes: false,
            deadline: None,
            end: None,
            request_id: None,
        };
        Box::pin(futures::stream::unfold(state, |mut st| async move {
            let item = st.next().await?;
            Some((item, st))
        }))
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

struct StreamState<D: Dialect> {
    /// Told the rate-limit headers when the answer opens.
    limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
    transport: Transport<D>,
    timeouts: Timeouts,
    request: Option<ChatRequest>,
    body: Option<Body>,
    decoder: SseDecoder,
    acc: Option<D::Acc>,
    pending: VecDeque<Result<StreamEvent, ProviderError>>,
    events: Vec<SseEvent>,
    finished: bool,
    got_bytes: bool,
    /// The first-byte deadline, until the first body bytes arrive.
    deadline: Option<Instant>,
    /// When the whole stream must be done (`stream_total` after sending).
    end: Option<Instant>,
    /// The provider's id of this call, for errors that the transport raises mid-stream.
    request_id: Option<String>,
}

impl<D: Dialect> StreamState<D> {
    async fn next(&mut self) -> Option<Result<StreamEvent, ProviderError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.finished {
                if let Some(body) = self.body.take() {
                    drain_tail(body).await;
                }
                return None;
            }
            if let Err(mut e) = self.advance().await {
                self.finished = true;
                // A failed body is not worth reading on: the connection goes.
                self.body = None;
                if e.request_id.is_none() {
                    e.request_id = self.request_id.clone();
                }
                // What was decoded before the failure is still delivered, then the error.
                self.pending.push_back(Err(e));
            }
        }
    }

    fn fail(&self, kind: ErrorKind, msg: &str) -> ProviderError {
        self.transport.err(kind, msg)
    }

    /// A stream request answered with the whole completion as JSON, as an OpenAI-compatible
    /// server that ignores `stream: true` does: it is the answer, and paid for. Read as a
    /// stream it would hold no events, end as a cut, and be retried and paid for again.
    async fn whole_answer(
        &mut self,
        resp: reqwest::Response,
        end: Instant,
    ) -> Result<(), ProviderError> {
        let d = &self.transport.dialect;
        let rate_limit = d.rate_limit(resp.headers());
        let body = match tokio::time::timeout_at(end, read_capped(resp, MAX_WHOLE_ANSWER)).await {
            Err(_) => {
                return Err(self.fail(
                    ErrorKind::Timeout(TimeoutPhase::Total),
                    "the answer was not read in time",
                ));
            }
            Ok(None) => {
                return Err(self.fail(ErrorKind::StreamCut, "the answer could not be read whole"));
            }
            Ok(Some(b)) => b,
        };
        let mut out = d.parse_response(&body)?;
        out.provider_request_id = self.request_id.clone();
        out.rate_limit = rate_limit;
        if !out.text.is_empty() {
            self.pending.push_back(Ok(StreamEvent::Delta(out.text.clone())));
        }
        self.pending.push_back(Ok(StreamEvent::Done(Box::new(out))));
        self.finished = true;
        Ok(())
    }

    async fn advance(&mut self) -> Result<(), ProviderError> {
        let t = self.timeouts;
        if let Some(req) = self.request.take() {
            let now = Instant::now();
            let end = now + t.stream_total;
            self.end = Some(end);
            let deadline = (now + t.first_byte).min(end);
            let resp = self.transport.open(&req, true, deadline).await?;
            let d = &self.transport.dialect;
            self.request_id = d.request_id(resp.headers());
            if is_json(resp.headers()) {
                return self.whole_answer(resp, end).await;
            }
            let rate_limit = d.rate_limit(resp.headers());
            if let (Some(limiter), Some(snapshot)) = (&self.limiter, &rate_limit) {
                limiter.observe(&req.model, snapshot);
            }
            // Kept in the response too: settling the call's tokens at its end gives back what
            // was over-reserved, and the headers then cap that again.
            self.acc = Some(d.accumulator(self.request_id.clone(), rate_limit));
            self.body = Some(Box::pin(resp.bytes_stream()));
            self.deadline = Some(deadline);
            return Ok(());
        }
        let (Some(body), Some(acc)) = (self.body.as_mut(), self.acc.as_mut()) else {
            self.finished = true;
            return Ok(());
        };
        let silence = match self.deadline {
            Some(d) if !self.got_bytes => d,
            _ => Instant::now() + t.idle,
        };
        let end = self.end.unwrap_or(silence);
        let chunk = match tokio::time::timeout_at(silence.min(end), body.next()).await {
            Err(_) if end <= silence => {
                return Err(self.transport.err(
                    ErrorKind::Timeout(TimeoutPhase::Total),
                    format!(
                        "the stream was not done within {}",
                        sluice_core::units::fmt_duration(t.stream_total)
                    ),
                ));
            }
            Err(_) => {
                let phase =
                    if self.got_bytes { TimeoutPhase::Idle } else { TimeoutPhase::FirstByte };
                return Err(self
                    .transport
                    .err(ErrorKind::Timeout(phase), "the stream went silent"));
            }
            Ok(None) => {
                return Err(
                    self.fail(ErrorKind::StreamCut, "the stream ended before its final event")
                );
            }
            Ok(Some(Err(e))) => {
                return Err(ProviderError::transport(self.transport.dialect.kind(), e, true));
            }
            Ok(Some(Ok(c))) => c,
        };
        self.got_bytes = true;
        self.decoder
            .push(&chunk, &mut self.events)
            .map_err(|e| self.transport.err(ErrorKind::Malformed, e.to_string()))?;
        for ev in self.events.drain(..) {
            match acc.on_event(ev)? {
                None => {}
                Some(Step::Delta(text)) => self.pending.push_back(Ok(StreamEvent::Delta(text))),
                Some(Step::Done(resp)) => {
                    self.pending.push_back(Ok(StreamEvent::Done(resp)));
                    // Stop at the final event; the body's end is read (briefly) only if the
                    // caller polls again, so `Done` is never held back by it.
                    self.finished = true;
                    break;
                }
            }
        }
        Ok(())
    }
}

/// An answer that says it is JSON rather than an event stream.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// The body, or `None` if it fails or grows past `cap` bytes: a misbehaving server cannot make
/// sluice buffer without end.
async fn read_capped(resp: reqwest::Response, cap: usize) -> Option<Vec<u8>> {
    let mut body = resp.bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.ok()?;
        if out.len() + chunk.len() > cap {
            return None;
        }
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

/// Reads the end of a finished stream's body (the server closes it right after the final event),
/// so that hyper can put the connection back in the pool instead of closing it: a new
/// connection per streamed call would cost a handshake each. Bounded, since it is only a saving.
async fn drain_tail(mut body: Body) {
    let _ = tokio::time::timeout(Duration::from_millis(20), async {
        for _ in 0..16 {
            if body.next().await.is_none() {
                break;
            }
        }
    })
    .await;
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Reads a JSON body, turning a parse failure into a classified `Malformed` error.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    kind: ProviderKind,
    body: &[u8],
) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| {
        ProviderError::new(kind, ErrorKind::Malformed, format!("unexpected response body: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
