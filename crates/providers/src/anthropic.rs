//! Anthropic Messages API (`POST /v1/messages`, spec §1): the request, the answer, the errors and
//! the SSE events, read into the normalized model.
//!
//! We speak `anthropic-version: 2023-06-01` with `x-api-key`: every Anthropic deployment and
//! proxy accepts both, and 2023-06-01 still takes `temperature` (2026-10-21 answers 400 to it).
//! Should the version ever move to 2026-10-21, [`SENDS_TEMPERATURE`] turns `temperature` off.

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use sluice_core::config::ProviderKind;

use crate::error::{ErrorKind, ProviderError};
use crate::model::{ChatRequest, ChatResponse, StopReason, Tier, Usage};
use crate::ratelimit::RateLimitSnapshot;
use crate::secret::ApiKey;
use crate::sse::SseEvent;
use crate::transport::{Accumulator, Dialect, Step, parse_json};

pub const API_VERSION: &str = "2023-06-01";
/// Whether `temperature` may be sent under [`API_VERSION`] (it may not under 2026-10-21).
pub const SENDS_TEMPERATURE: bool = matches!(API_VERSION.as_bytes(), b"2023-06-01");

// ---- request ----

/// The body of `POST /v1/messages`, also a batch line's `params` (`crate::batch`).
#[derive(Serialize)]
pub(crate) struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<WireMetadata<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct WireMetadata<'a> {
    user_id: &'a str,
}

// ---- response ----

#[derive(Deserialize)]
struct WireMessageResponse {
    model: String,
    #[serde(default)]
    content: Vec<WireBlock>,
    stop_reason: Option<String>,
    /// Required by the spec; if a proxy drops it, the answer is still kept (failing it would
    /// only make us pay for the same answer again), and the ledger falls back to the estimate.
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Only text blocks matter to us; other block types (tool_use, thinking, future ones) are
/// tolerated and skipped (spec §7.1 item 8).
#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Cumulative semantics (spec §1.5): a later report replaces the fields it carries.
    fn update(&mut self, later: WireUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens =
            later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens =
            later.cache_read_input_tokens.or(self.cache_read_input_tokens);
    }

    /// Anthropic's `input_tokens` is the *uncached* part: the total adds cache writes and reads.
    fn normalize(self) -> Usage {
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        let read = self.cache_read_input_tokens.unwrap_or(0);
        Usage {
            // Saturating: the counts come off the network.
            input_tokens: self.input_tokens.unwrap_or(0).saturating_add(write).saturating_add(read),
            cached_input_tokens: read,
            cache_write_tokens: write,
            output_tokens: self.output_tokens.unwrap_or(0),
            estimated: false,
        }
    }
}

#[derive(Deserialize)]
struct WireErrorEnvelope {
    error: WireError,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: Option<WireErrorDetails>,
}

#[derive(Deserialize)]
struct WireErrorDetails {
    #[serde(default)]
    error_code: Option<String>,
}

impl WireError {
    fn parts(self) -> (Option<String>, Option<String>, String) {
        let code = self.details.and_then(|d| d.error_code);
        (self.kind, code, self.message.unwrap_or_default())
    }
}

// ---- the dialect ----

#[derive(Debug, Clone)]
pub(crate) struct Anthropic {
    /// The API root, without a trailing slash (batch routes and relative `results_url`s hang
    /// off it).
    pub root: String,
    pub messages_url: String,
    pub key: Option<ApiKey>,
}

impl Anthropic {
    pub fn new(base_url: &url::Url, key: Option<ApiKey>) -> Self {
        // The base is the API root ("https://api.anthropic.com", perhaps behind a path prefix).
        let root = base_url.as_str().trim_end_matches('/');
        Anthropic { messages_url: format!("{root}/v1/messages"), root: root.to_owned(), key }
    }

    /// The request body. `stream: false` is also a batch line's `params` (which must not stream).
    pub(crate) fn body<'a>(&self, req: &'a ChatRequest, stream: bool) -> WireRequest<'a> {
        WireRequest {
            model: &req.model,
            max_tokens: req.max_tokens,
            system: req.system.as_deref(),
            messages: req
                .messages
                .iter()
                .map(|m| WireMessage { role: m.role.as_str(), content: &m.text })
                .collect(),
            temperature: if SENDS_TEMPERATURE { req.temperature } else { None },
            metadata: req.request_tag.as_deref().map(|t| WireMetadata { user_id: t }),
            stream,
        }
    }

    /// The version header and the key, on any request to the API (batch routes included).
    pub(crate) fn authorize(
        &self,
        b: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let b = b.header("anthropic-version", API_VERSION);
        match &self.key {
            Some(k) => Ok(b.header("x-api-key", crate::client::key_header(K, k.expose())?)),
            None => Ok(b),
        }
    }
}

const K: ProviderKind = ProviderKind::Anthropic;

impl Dialect for Anthropic {
    type Acc = StreamAcc;

    fn kind(&self) -> ProviderKind {
        K
    }

    fn request(
        &self,
        http: &reqwest::Client,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        if req.tier == Tier::Flex {
            return Err(ProviderError::new(
                K,
                ErrorKind::Unsupported,
                "Anthropic has no flex tier; use the standard tier or the Batch API",
            ));
        }
        let body = self.body(req, stream);
        let b = http
            .post(&self.messages_url)
            .header("accept", if stream { "text/event-stream" } else { "application/json" });
        let mut b = self.authorize(b)?;
        b = crate::client::extra_headers(K, b, &req.extra_headers)?;
        Ok(b.json(&body))
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        let m: WireMessageResponse = parse_json(K, body)?;
        let text = m
            .content
            .into_iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text)
            .collect::<String>();
        Ok(ChatResponse {
            text,
            stop_reason: StopReason::from_anthropic(m.stop_reason.as_deref().unwrap_or("end_turn")),
            usage: match m.usage {
                Some(u) => u.normalize(),
                None => {
                    tracing::warn!(provider = "anthropic", "answer without usage");
                    Usage::missing()
                }
            },
            model: m.model,
            provider_request_id: None,
            rate_limit: None,
        })
    }

    fn parse_error_body(&self, body: &[u8]) -> Option<(Option<String>, Option<String>, String)> {
        serde_json::from_slice::<WireErrorEnvelope>(body).ok().map(|e| e.error.parts())
    }

    fn request_id(&self, headers: &HeaderMap) -> Option<String> {
        headers.get("request-id").and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    fn rate_limit(&self, headers: &HeaderMap) -> Option<RateLimitSnapshot> {
        RateLimitSnapshot::from_anthropic(headers, chrono::Utc::now())
    }

    fn accumulator(
        &self,
        request_id: Option<String>,
        rate_limit: Option<RateLimitSnapshot>,
    ) -> StreamAcc {
        StreamAcc { request_id, rate_limit, ..Default::default() }
    }
}

// ---- the stream ----

#[derive(Deserialize)]
struct MessageStart {
    message: WireStartMessage,
}

#[derive(Deserialize)]
struct WireStartMessage {
    model: String,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
struct BlockStart {
    content_block: WireBlock,
}

#[derive(Deserialize)]
struct BlockDelta {
    delta: WireDelta,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct MessageDelta {
    delta: WireMessageDeltaBody,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireMessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Folds the event sequence of spec §1.6 into deltas and a final response.
#[derive(Debug, Default)]
pub(crate) struct StreamAcc {
    request_id: Option<String>,
    rate_limit: Option<RateLimitSnapshot>,
    model: Option<String>,
    text: String,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

impl StreamAcc {
    fn parse<T: serde::de::DeserializeOwned>(&self, ev: &SseEvent) -> Result<T, ProviderError> {
        serde_json::from_str(&ev.data).map_err(|e| {
            let mut err = ProviderError::new(
                K,
                ErrorKind::Malformed,
                format!("bad `{}` event: {e}", ev.event.as_deref().unwrap_or("")),
            );
            err.request_id = self.request_id.clone();
            err
        })
    }
}

impl Accumulator for StreamAcc {
    fn on_event(&mut self, ev: SseEvent) -> Result<Option<Step>, ProviderError> {
        // Anthropic names every event; SDK 2.x skips unnamed ones, and so do we.
        let Some(name) = ev.event.as_deref() else { return Ok(None) };
        match name {
            "message_start" => {
                let s: MessageStart = self.parse(&ev)?;
                self.model = Some(s.message.model);
                self.usage = Some(s.message.usage);
                Ok(None)
            }
            "content_block_start" => {
                let s: BlockStart = self.parse(&ev)?;
                match s
                    .content_block
                    .text
                    .filter(|t| s.content_block.kind == "text" && !t.is_empty())
                {
                    Some(t) => {
                        self.text.push_str(&t);
                        Ok(Some(Step::Delta(t)))
                    }
                    None => Ok(None),
                }
            }
            "content_block_delta" => {
                let d: BlockDelta = self.parse(&ev)?;
                match d.delta.text.filter(|_| d.delta.kind == "text_delta") {
                    Some(t) if !t.is_empty() => {
                        self.text.push_str(&t);
                        Ok(Some(Step::Delta(t)))
                    }
                    _ => Ok(None),
                }
            }
            "message_delta" => {
                let d: MessageDelta = self.parse(&ev)?;
                if d.delta.stop_reason.is_some() {
                    self.stop_reason = d.delta.stop_reason;
                }
                if let Some(u) = d.usage {
                    // Cumulative: replace, never add (spec §1.5, §7.1 item 5).
                    self.usage.get_or_insert_default().update(u);
                }
                Ok(None)
            }
            "message_stop" => {
                let (Some(model), Some(usage)) = (self.model.take(), self.usage) else {
                    let mut e = ProviderError::new(
                        K,
                        ErrorKind::Malformed,
                        "message_stop before message_start",
                    );
                    e.request_id = self.request_id.clone();
                    return Err(e);
                };
                Ok(Some(Step::Done(Box::new(ChatResponse {
                    text: std::mem::take(&mut self.text),
                    stop_reason: StopReason::from_anthropic(
                        self.stop_reason.as_deref().unwrap_or("end_turn"),
                    ),
                    usage: usage.normalize(),
                    model,
                    provider_request_id: self.request_id.clone(),
                    rate_limit: self.rate_limit,
                }))))
            }
            "error" => {
                let (error_type, code, message) =
                    match serde_json::from_str::<WireErrorEnvelope>(&ev.data) {
                        Ok(e) => e.error.parts(),
                        Err(_) => (None, None, ev.data.clone()),
                    };
                let mut e = ProviderError::new(K, ErrorKind::StreamError, message);
                e.status = Some(200);
                e.error_type = error_type;
                e.code = code;
                e.request_id = self.request_id.clone();
                Err(e)
            }
            // ping, content_block_stop, and event types added later.
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorClass, RetryCause};
    use crate::sse::SseDecoder;

    fn dialect() -> Anthropic {
        Anthropic::new(&"http://127.0.0.1:9/".parse().unwrap(), Some(ApiKey::new("k")))
    }

    fn run(stream: &str) -> Vec<Result<Step, ProviderError>> {
        let mut d = SseDecoder::new();
        let mut evs = Vec::new();
        d.push(stream.as_bytes(), &mut evs).unwrap();
        let mut acc = dialect().accumulator(Some("req_1".into()), None);
        let mut out = Vec::new();
        for ev in evs {
            match acc.on_event(ev) {
                Ok(Some(s)) => out.push(Ok(s)),
                Ok(None) => {}
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    const SPEC_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01AB","type":"message","role":"assistant","model":"claude-sonnet-5-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":21,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type":"ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: brand_new_event
data: {"type":"brand_new_event","whatever":[1,2,3]}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":21,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":5}}

event: message_stop
data: {"type":"message_stop"}

"#;

    #[test]
    fn spec_example_stream() {
        let out = run(SPEC_STREAM);
        assert_eq!(out.len(), 3);
        assert!(matches!(&out[0], Ok(Step::Delta(t)) if t == "Hel"));
        assert!(matches!(&out[1], Ok(Step::Delta(t)) if t == "lo."));
        let Ok(Step::Done(r)) = &out[2] else { panic!("{out:?}") };
        assert_eq!(r.text, "Hello.");
        assert_eq!(r.stop_reason, StopReason::EndTurn);
        // Cumulative: 5 output tokens, not 1 + 5; input not doubled.
        assert_eq!(r.usage, Usage { input_tokens: 21, output_tokens: 5, ..Default::default() });
        assert_eq!(r.model, "claude-sonnet-5-5");
        assert_eq!(r.provider_request_id.as_deref(), Some("req_1"));
    }

    #[test]
    fn cache_tokens_add_to_input_and_missing_delta_fields_come_from_start() {
        let s = r#"event: message_start
data: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":10,"cache_creation_input_tokens":100,"cache_read_input_tokens":1000,"output_tokens":1}}}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":48}}

event: message_stop
data: {"type":"message_stop"}

"#;
        let out = run(s);
        let Ok(Step::Done(r)) = &out[0] else { panic!("{out:?}") };
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 1110,
                cached_input_tokens: 1000,
                cache_write_tokens: 100,
                output_tokens: 48,
                estimated: false,
            }
        );
        assert_eq!(r.stop_reason, StopReason::MaxTokens);
    }

    #[test]
    fn mid_stream_error_is_classified_by_type() {
        let s = r#"event: message_start
data: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":1,"output_tokens":1}}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}

event: error
data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_9"}

"#;
        let out = run(s);
        assert!(matches!(&out[0], Ok(Step::Delta(t)) if t == "Hi"));
        let Err(e) = &out[1] else { panic!("{out:?}") };
        assert_eq!(e.status, Some(200));
        assert_eq!(e.class(), ErrorClass::Retryable { cause: RetryCause::Overloaded });
    }

    #[test]
    fn plain_response_concatenates_text_blocks_and_skips_others() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-5-5",
            "content":[{"type":"thinking","thinking":"hmm","signature":"s"},{"type":"text","text":"A"},
                       {"type":"tool_use","id":"t","name":"n","input":{}},{"type":"text","text":"B"}],
            "stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":21,"cache_creation_input_tokens":2,"cache_read_input_tokens":3,"output_tokens":5}}"#;
        let r = dialect().parse_response(body).unwrap();
        assert_eq!(r.text, "AB");
        assert_eq!(r.usage.input_tokens, 26);
        assert_eq!(r.usage.cached_input_tokens, 3);
    }

    #[test]
    fn error_body_with_spend_limit_details() {
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"spend","details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"r"}"#;
        let (t, c, m) = dialect().parse_error_body(body).unwrap();
        assert_eq!(t.as_deref(), Some("rate_limit_error"));
        assert_eq!(c.as_deref(), Some("enforced_spend_limit_reached"));
        assert_eq!(m, "spend");
    }

    #[test]
    fn request_body_shape() {
        crate::client::ensure_crypto_provider();
        let http = reqwest::Client::new();
        let req = ChatRequest {
            model: "claude-haiku-5-5".into(),
            system: Some("Be terse.".into()),
            messages: vec![crate::Message::user("Hi")],
            max_tokens: 64,
            temperature: Some(0.2),
            request_tag: Some("task-1".into()),
            ..Default::default()
        };
        let built = dialect().request(&http, &req, true).unwrap().build().unwrap();
        assert_eq!(built.url().as_str(), "http://127.0.0.1:9/v1/messages");
        assert_eq!(built.headers()["anthropic-version"], "2023-06-01");
        assert_eq!(built.headers()["x-api-key"], "k");
        let body: serde_json::Value =
            serde_json::from_slice(built.body().unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"model":"claude-haiku-5-5","max_tokens":64,"system":"Be terse.",
                "messages":[{"role":"user","content":"Hi"}],"temperature":0.2,
                "metadata":{"user_id":"task-1"},"stream":true})
        );
        let flex = ChatRequest { tier: Tier::Flex, ..req };
        assert!(dialect().request(&http, &flex, false).is_err());
    }
}
