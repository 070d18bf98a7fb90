//! OpenAI Chat Completions (`POST {base}/chat/completions`, spec §3), for OpenAI itself and for
//! OpenAI-compatible servers (vLLM, Ollama, llama.cpp, gateways).
//!
//! Differences that matter: `max_completion_tokens` (reasoning models reject `max_tokens`);
//! usage only in the last chunk and only with `stream_options.include_usage`; that chunk has
//! `choices: []` (never index `choices[0]` blindly); `prompt_tokens` already includes the cached
//! ones; the stream ends with `data: [DONE]`. Compatible servers get neither flex nor `metadata`,
//! which they may not know.

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use sluice_core::config::ProviderKind;

use crate::error::{ErrorKind, ProviderError};
use crate::model::{ChatRequest, ChatResponse, StopReason, Tier, Usage};
use crate::ratelimit::RateLimitSnapshot;
use crate::secret::ApiKey;
use crate::sse::SseEvent;
use crate::transport::{Accumulator, Dialect, Step, parse_json};

// ---- request ----

/// The body of `POST /chat/completions`, also a batch line's `body` (`crate::batch`).
#[derive(Serialize)]
pub(crate) struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    max_completion_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Metadata<'a> {
    sluice_tag: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

// ---- response ----

#[derive(Deserialize)]
struct WireCompletion {
    model: String,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    message: Option<WireOutMessage>,
    #[serde(default)]
    delta: Option<WireOutMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireOutMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<WirePromptDetails>,
}

#[derive(Deserialize, Clone, Copy)]
struct WirePromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

impl WireUsage {
    /// `prompt_tokens` already counts the cached tokens (unlike Anthropic's `input_tokens`).
    fn normalize(self) -> Usage {
        let d = self.prompt_tokens_details;
        Usage {
            input_tokens: self.prompt_tokens,
            cached_input_tokens: d.and_then(|d| d.cached_tokens).unwrap_or(0),
            cache_write_tokens: d.and_then(|d| d.cache_write_tokens).unwrap_or(0),
            output_tokens: self.completion_tokens,
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
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

impl WireError {
    fn parts(self) -> (Option<String>, Option<String>, String) {
        // `code` is a string in the spec, but some compatible servers send a number.
        let code = match self.code {
            Some(serde_json::Value::String(s)) => Some(s),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        (self.kind, code, self.message.unwrap_or_default())
    }
}

// ---- the dialect ----

#[derive(Debug, Clone)]
pub(crate) struct OpenAi {
    pub kind: ProviderKind,
    /// The base URL (ending in `/v1`), without a trailing slash: files and batches hang off it.
    pub root: String,
    pub completions_url: String,
    pub key: Option<ApiKey>,
}

impl OpenAi {
    pub fn new(kind: ProviderKind, base_url: &url::Url, key: Option<ApiKey>) -> Self {
        // The base ends in `/v1`, as the SDKs take it; paths are relative to it.
        let root = base_url.as_str().trim_end_matches('/');
        OpenAi {
            kind,
            completions_url: format!("{root}/chat/completions"),
            root: root.to_owned(),
            key,
        }
    }

    /// The bearer key, on any request to the API (files and batches included).
    pub(crate) fn authorize(
        &self,
        b: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        match &self.key {
            Some(k) => {
                let bearer = format!("Bearer {}", k.expose());
                Ok(b.header("authorization", crate::client::key_header(self.kind, &bearer)?))
            }
            None => Ok(b),
        }
    }

    /// The request body. A batch line (`batch: true`) never streams and never asks for a service
    /// tier: the batch is its own tier, at its own price.
    pub(crate) fn body<'a>(
        &self,
        req: &'a ChatRequest,
        stream: bool,
        batch: bool,
    ) -> WireRequest<'a> {
        let stream = stream && !batch;
        let mut messages = Vec::with_capacity(req.messages.len() + 1);
        if let Some(s) = &req.system {
            // `system`, not `developer`: OpenAI maps it for newer models, and compatible servers
            // only know `system`.
            messages.push(WireMessage { role: "system", content: s });
        }
        messages.extend(
            req.messages.iter().map(|m| WireMessage { role: m.role.as_str(), content: &m.text }),
        );
        WireRequest {
            model: &req.model,
            messages,
            max_completion_tokens: req.max_tokens,
            temperature: req.temperature,
            response_format: req.json_output.then_some(ResponseFormat { kind: "json_object" }),
            service_tier: (req.tier == Tier::Flex && !batch).then_some("flex"),
            user: req.request_tag.as_deref(),
            metadata: req
                .request_tag
                .as_deref()
                .filter(|_| !self.compatible())
                .map(|t| Metadata { sluice_tag: t }),
            stream,
            stream_options: stream.then_some(StreamOptions { include_usage: true }),
        }
    }

    fn compatible(&self) -> bool {
        self.kind == ProviderKind::OpenaiCompatible
    }

    fn error(&self, kind: ErrorKind, msg: impl Into<String>) -> ProviderError {
        ProviderError::new(self.kind, kind, msg)
    }
}

/// A refusal comes as `refusal` text with `finish_reason: "stop"`: it is a refusal, not an end.
fn finish(choice_finish: Option<String>, refused: bool) -> StopReason {
    match choice_finish {
        _ if refused => StopReason::Refusal,
        Some(f) => StopReason::from_openai(&f),
        None => StopReason::Other("unknown".into()),
    }
}

/// The answer's text; for a refusal (no content), the model's words of refusal, which say more
/// to whoever reads the result than an empty string.
fn answer(content: String, refusal: String) -> String {
    if content.is_empty() { refusal } else { content }
}

impl Dialect for OpenAi {
    type Acc = StreamAcc;

    fn kind(&self) -> ProviderKind {
        self.kind
    }

    fn request(
        &self,
        http: &reqwest::Client,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        if req.tier == Tier::Flex && self.compatible() {
            return Err(
                self.error(ErrorKind::Unsupported, "an OpenAI-compatible server has no flex tier")
            );
        }
        let body = self.body(req, stream, false);
        let b = http
            .post(&self.completions_url)
            .header("accept", if stream { "text/event-stream" } else { "application/json" });
        let mut b = self.authorize(b)?;
        b = crate::client::extra_headers(self.kind, b, &req.extra_headers)?;
        Ok(b.json(&body))
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        let c: WireCompletion = parse_json(self.kind, body)?;
        let Some(choice) = c.choices.into_iter().find(|ch| ch.index == 0) else {
            return Err(self.error(ErrorKind::Malformed, "a completion without choices"));
        };
        let (content, refusal) = match choice.message {
            Some(m) => (m.content.unwrap_or_default(), m.refusal.unwrap_or_default()),
            None => Default::default(),
        };
        // Failing an answer for a missing usage would only make us pay for it again: keep it,
        // and the client counts it at its estimate instead.
        let usage = match c.usage {
            Some(u) => u.normalize(),
            None => {
                tracing::warn!(provider = self.kind.as_str(), "completion without usage");
                Usage::missing()
            }
        };
        Ok(ChatResponse {
            stop_reason: finish(choice.finish_reason, !refusal.is_empty()),
            text: answer(content, refusal),
            usage,
            model: c.model,
            provider_request_id: None,
            rate_limit: None,
        })
    }

    fn parse_error_body(&self, body: &[u8]) -> Option<(Option<String>, Option<String>, String)> {
        serde_json::from_slice::<WireErrorEnvelope>(body).ok().map(|e| e.error.parts())
    }

    fn request_id(&self, headers: &HeaderMap) -> Option<String> {
        headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    fn rate_limit(&self, headers: &HeaderMap) -> Option<RateLimitSnapshot> {
        RateLimitSnapshot::from_openai(headers)
    }

    fn accumulator(
        &self,
        request_id: Option<String>,
        rate_limit: Option<RateLimitSnapshot>,
    ) -> StreamAcc {
        StreamAcc { kind: self.kind, request_id, rate_limit, ..Default::default() }
    }
}

// ---- the stream ----

/// A chunk, or an error chunk (`{"error": {...}}`, which the SDK raises on).
#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Debug)]
pub(crate) struct StreamAcc {
    kind: ProviderKind,
    request_id: Option<String>,
    rate_limit: Option<RateLimitSnapshot>,
    model: Option<String>,
    text: String,
    finish_reason: Option<String>,
    refusal: String,
    usage: Option<Usage>,
}

impl Default for StreamAcc {
    fn default() -> Self {
        StreamAcc {
            kind: ProviderKind::Openai,
            request_id: None,
            rate_limit: None,
            model: None,
            text: String::new(),
            finish_reason: None,
            refusal: String::new(),
            usage: None,
        }
    }
}

impl StreamAcc {
    fn error(&self, kind: ErrorKind, msg: impl Into<String>) -> ProviderError {
        let mut e = ProviderError::new(self.kind, kind, msg);
        e.request_id = self.request_id.clone();
        e
    }
}

impl Accumulator for StreamAcc {
    fn on_event(&mut self, ev: SseEvent) -> Result<Option<Step>, ProviderError> {
        if ev.data.trim() == "[DONE]" {
            if self.finish_reason.is_none() && self.refusal.is_empty() {
                return Err(self.error(ErrorKind::StreamCut, "[DONE] before any finish_reason"));
            }
            let usage = match self.usage {
                Some(u) => u,
                None => {
                    // Servers that ignore include_usage: the client counts
                    // the call at its estimate.
                    tracing::warn!(provider = self.kind.as_str(), "stream ended without usage");
                    Usage::missing()
                }
            };
            return Ok(Some(Step::Done(Box::new(ChatResponse {
                stop_reason: finish(self.finish_reason.take(), !self.refusal.is_empty()),
                text: answer(std::mem::take(&mut self.text), std::mem::take(&mut self.refusal)),
                usage,
                model: self.model.take().unwrap_or_default(),
                provider_request_id: self.request_id.clone(),
                rate_limit: self.rate_limit,
            }))));
        }
        let chunk: WireChunk = serde_json::from_str(&ev.data)
            .map_err(|e| self.error(ErrorKind::Malformed, format!("bad stream chunk: {e}")))?;
        if let Some(err) = chunk.error {
            let (error_type, code, message) = err.parts();
            let mut e = self.error(ErrorKind::StreamError, message);
            e.status = Some(200);
            e.error_type = error_type;
            e.code = code;
            return Err(e);
        }
        if self.model.is_none() {
            self.model = chunk.model;
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u.normalize());
        }
        let mut delta = String::new();
        // Only the first choice: sluice never asks for n > 1.
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(d) = choice.delta {
                if let Some(t) = d.content {
                    delta.push_str(&t);
                }
                if let Some(r) = d.refusal {
                    self.refusal.push_str(&r);
                }
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
            }
        }
        if delta.is_empty() {
            return Ok(None);
        }
        self.text.push_str(&delta);
        Ok(Some(Step::Delta(delta)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorClass, RetryCause};
    use crate::sse::SseDecoder;

    fn dialect(kind: ProviderKind) -> OpenAi {
        OpenAi::new(kind, &"http://127.0.0.1:9/v1".parse().unwrap(), Some(ApiKey::new("k")))
    }

    fn run(stream: &str) -> Vec<Result<Step, ProviderError>> {
        let mut d = SseDecoder::new();
        let mut evs = Vec::new();
        d.push(stream.as_bytes(), &mut evs).unwrap();
        let mut acc = dialect(ProviderKind::Openai).accumulator(Some("req_1".into()), None);
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

    const SPEC_STREAM: &str = r#"data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1764039600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1764039600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1764039600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"lo."},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1764039600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1764039600,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":3,"total_tokens":22,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":0}}}

data: [DONE]

"#;

    #[test]
    fn spec_example_stream() {
        let out = run(SPEC_STREAM);
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(matches!(&out[0], Ok(Step::Delta(t)) if t == "Hel"));
        let Ok(Step::Done(r)) = &out[2] else { panic!("{out:?}") };
        assert_eq!(r.text, "Hello.");
        assert_eq!(r.stop_reason, StopReason::EndTurn);
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 19,
                cached_input_tokens: 4,
                output_tokens: 3,
                ..Default::default()
            }
        );
        assert_eq!(r.model, "gpt-4o-mini-2024-07-18");
    }

    #[test]
    fn error_chunk_and_done_without_finish() {
        let out = run(
            "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
        );
        let Err(e) = &out[0] else { panic!() };
        assert_eq!(e.class(), ErrorClass::Retryable { cause: RetryCause::ServerError });
        let out = run(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n",
        );
        let Err(e) = &out[1] else { panic!("{out:?}") };
        assert_eq!(e.class(), ErrorClass::Retryable { cause: RetryCause::StreamCut });
    }

    #[test]
    fn plain_response() {
        let body = br#"{"id":"chatcmpl-9x8y7z","object":"chat.completion","created":1764039600,"model":"gpt-4.1-2025-04-14",
          "choices":[{"index":0,"message":{"role":"assistant","content":"Hello.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"length"}],
          "usage":{"prompt_tokens":19,"completion_tokens":3,"total_tokens":22,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0}},
          "service_tier":"default","system_fingerprint":"fp"}"#;
        let r = dialect(ProviderKind::Openai).parse_response(body).unwrap();
        assert_eq!(r.text, "Hello.");
        assert_eq!(r.stop_reason, StopReason::MaxTokens);
        assert_eq!(r.usage.input_tokens, 19);
        assert!(
            dialect(ProviderKind::Openai)
                .parse_response(b"{\"model\":\"m\",\"choices\":[]}")
                .is_err()
        );
    }

    #[test]
    fn request_body_shape() {
        crate::client::ensure_crypto_provider();
        let http = reqwest::Client::new();
        let req = ChatRequest {
            model: "gpt-5.4-mini".into(),
            system: Some("Be terse.".into()),
            messages: vec![crate::Message::user("Hi")],
            max_tokens: 64,
            temperature: Some(0.2),
            json_output: true,
            tier: Tier::Flex,
            request_tag: Some("task-1".into()),
            ..Default::default()
        };
        let built =
            dialect(ProviderKind::Openai).request(&http, &req, true).unwrap().build().unwrap();
        assert_eq!(built.url().as_str(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(built.headers()["authorization"], "Bearer k");
        let body: serde_json::Value =
            serde_json::from_slice(built.body().unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"model":"gpt-5.4-mini",
                "messages":[{"role":"system","content":"Be terse."},{"role":"user","content":"Hi"}],
                "max_completion_tokens":64,"temperature":0.2,"response_format":{"type":"json_object"},
                "service_tier":"flex","user":"task-1","metadata":{"sluice_tag":"task-1"},
                "stream":true,"stream_options":{"include_usage":true}})
        );
        assert!(dialect(ProviderKind::OpenaiCompatible).request(&http, &req, false).is_err());
        let std = ChatRequest { tier: Tier::Standard, ..req };
        let built = dialect(ProviderKind::OpenaiCompatible)
            .request(&http, &std, false)
            .unwrap()
            .build()
            .unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(built.body().unwrap().as_bytes().unwrap()).unwrap();
        assert!(body.get("metadata").is_none());
        assert!(body.get("stream").is_none());
        assert_eq!(body["user"], "task-1");
    }
}
