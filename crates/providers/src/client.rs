//! The client of one configured provider: static dispatch over the provider kinds (TensorZero's
//! enum + `match`), one shared HTTP connection pool, one rate limiter for its key.

use std::sync::{Arc, Once};

use reqwest::header::{HeaderName, HeaderValue};
use sluice_core::config::{Provider, ProviderKind};

use crate::anthropic::Anthropic;
use crate::error::{ErrorKind, ProviderError};
use crate::model::{ChatRequest, ChatResponse, StreamEvent, Usage};
use crate::openai::OpenAi;
use crate::ratelimit::RateLimiter;
use crate::retry::{RetryPolicy, retry};
use crate::secret::ApiKey;
use crate::transport::{EventStream, Timeouts, Transport};

/// Knobs beyond the config: timeouts per tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientOptions {
    pub standard: Timeouts,
    pub flex: Timeouts,
}

impl ClientOptions {
    pub fn new() -> Self {
        ClientOptions { standard: Timeouts::standard(), flex: Timeouts::flex() }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client of provider {provider}: {message}")]
pub struct BuildError {
    pub provider: String,
    pub message: String,
}

/// A provider's client. Cheap to clone (the HTTP pool and the limiter are shared).
#[derive(Debug, Clone)]
pub enum Client {
    Anthropic(AnthropicClient),
    /// OpenAI and OpenAI-compatible servers (the dialect knows which).
    OpenAi(OpenAiClient),
}

#[derive(Debug, Clone)]
pub struct AnthropicClient {
    pub(crate) transport: Transport<Anthropic>,
    limiter: Arc<RateLimiter>,
    name: String,
}

#[derive(Debug, Clone)]
pub struct OpenAiClient {
    pub(crate) transport: Transport<OpenAi>,
    limiter: Arc<RateLimiter>,
    name: String,
}

/// reqwest is built with `rustls-no-provider` so that only ring is compiled (shared with sqlx);
/// it then needs a process-wide provider before a client is built, or it panics.
pub(crate) fn ensure_crypto_provider() {
    static RING: Once = Once::new();
    RING.call_once(|| {
        // Err means another provider is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn http_client(name: &str, opts: &ClientOptions) -> Result<reqwest::Client, BuildError> {
    ensure_crypto_provider();
    reqwest::Client::builder()
        // Small SSE chunks must not wait for the peer's delayed ACK (STYLE.md §8).
        .tcp_nodelay(true)
        .connect_timeout(opts.standard.connect)
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BuildError { provider: name.to_owned(), message: e.without_url().to_string() })
}

impl Client {
    /// Builds the client of a validated provider. `api_key` is the value of its `api_key_env`,
    /// read by the caller (`None` for servers without auth).
    pub fn new(provider: &Provider, api_key: Option<ApiKey>) -> Result<Client, BuildError> {
        Self::with_options(provider, api_key, ClientOptions::new())
    }

    pub fn with_options(
        provider: &Provider,
        api_key: Option<ApiKey>,
        opts: ClientOptions,
    ) -> Result<Client, BuildError> {
        let http = http_client(&provider.name, &opts)?;
        let limiter = RateLimiter::new(provider.limits);
        let name = provider.name.clone();
        Ok(match provider.kind {
            ProviderKind::Anthropic => Client::Anthropic(AnthropicClient {
                transport: Transport {
                    http,
                    dialect: Arc::new(Anthropic::new(&provider.base_url, api_key)),
                    standard: opts.standard,
                    flex: opts.flex,
                },
                limiter,
                name,
            }),
            kind @ (ProviderKind::Openai | ProviderKind::OpenaiCompatible) => {
                Client::OpenAi(OpenAiClient {
                    transport: Transport {
                        http,
                        dialect: Arc::new(OpenAi::new(kind, &provider.base_url, api_key)),
                        standard: opts.standard,
                        flex: opts.flex,
                    },
                    limiter,
                    name,
                })
            }
        })
    }

    /// The provider's name in the config.
    pub fn name(&self) -> &str {
        match self {
            Client::Anthropic(c) => &c.name,
            Client::OpenAi(c) => &c.name,
        }
    }

    pub fn kind(&self) -> ProviderKind {
        match self {
            Client::Anthropic(_) => ProviderKind::Anthropic,
            Client::OpenAi(c) => c.transport.dialect.kind,
        }
    }

    /// The rate limiter of this provider's key, shared by every clone of the client.
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        match self {
            Client::Anthropic(c) => &c.limiter,
            Client::OpenAi(c) => &c.limiter,
        }
    }

    /// One plain call: no rate limiting, no retry (see [`Client::call`] for both).
    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        match self {
            Client::Anthropic(c) => c.transport.chat(req).await,
            Client::OpenAi(c) => c.transport.chat(req).await,
        }
    }

    /// One streamed call: text deltas as they arrive, then [`StreamEvent::Done`] with the whole
    /// response; or an error item, after which the stream ends. The request is sent when the
    /// stream is first polled. No rate limiting, no retry (see [`Client::call_streaming`]).
    pub fn stream(&self, req: &ChatRequest) -> EventStream {
        match self {
            Client::Anthropic(c) => c.transport.stream(req),
            Client::OpenAi(c) => c.transport.stream(req),
        }
    }

    /// A plain call through the rate limiter, retried per `policy`; the last error when the
    /// attempts run out. Every attempt takes its own permit, so retries are rate-limited too.
    pub async fn call(
        &self,
        req: &ChatRequest,
        policy: &RetryPolicy,
    ) -> Result<ChatResponse, ProviderError> {
        let estimate = req.estimate();
        retry(policy, |_| async move {
            let permit = self.limiter().acquire(&req.model, estimate).await;
            let r = self.chat(req).await.map(|r| with_usage(req, r));
            permit.record(r.as_ref());
            r
        })
        .await
    }

    /// A streamed call through the rate limiter, retried per `policy` only while no text has
    /// been produced: after the first delta a failure is returned as is, since the caller has
    /// already forwarded text that a new attempt would repeat differently. `on_delta` receives
    /// each delta as it arrives.
    pub async fn call_streaming(
        &self,
        req: &ChatRequest,
        policy: &RetryPolicy,
        on_delta: impl FnMut(&str) + Send,
    ) -> Result<ChatResponse, ProviderError> {
        self.call_streaming_while(req, policy, on_delta, |_| true).await
    }

    /// [`Client::call_streaming`] that asks `go_on` before each attempt, with the failure of the
    /// attempt before (so that a caller can count the retried ones the provider may bill). Once
    /// it says no (the task went to another worker while the call waited for the rate limiter
    /// or for a retry), nothing more is sent: the call fails with the last attempt's error, or,
    /// before the first, with [`ErrorKind::GivenUp`].
    pub async fn call_streaming_while(
        &self,
        req: &ChatRequest,
        policy: &RetryPolicy,
        mut on_delta: impl FnMut(&str) + Send,
        mut go_on: impl FnMut(Option<&ProviderError>) -> bool + Send,
    ) -> Result<ChatResponse, ProviderError> {
        use futures::StreamExt;
        let estimate = req.estimate();
        let mut attempt = 0u32;
        let mut last: Option<ProviderError> = None;
        loop {
            let permit = self.limiter().acquire(&req.model, estimate).await;
            if !go_on(last.as_ref()) {
                let given_up = ProviderError::new(
                    self.kind(),
                    ErrorKind::GivenUp,
                    "not sent: the call was given up before it went out",
                );
                // Nothing went out: the limiter gets its estimate back.
                permit.record(Err(&given_up));
                return Err(last.unwrap_or(given_up));
            }
            let limiter = Some(Arc::clone(self.limiter()));
            let mut stream = match self {
                Client::Anthropic(c) => c.transport.stream_observed(req, limiter),
                Client::OpenAi(c) => c.transport.stream_observed(req, limiter),
            };
            let mut produced = false;
            let mut outcome = None;
            // Polled to its end (it ends right after `Done` or an error), which lets the
            // connection go back to the pool.
            while let Some(item) = stream.next().await {
                match item {
                    Ok(StreamEvent::Delta(t)) => {
                        produced = true;
                        on_delta(&t);
                    }
                    Ok(StreamEvent::Done(r)) => outcome = Some(Ok(*r)),
                    Err(e) => outcome = Some(Err(e)),
                }
            }
            let outcome = outcome
                .unwrap_or_else(|| {
                    Err(ProviderError::new(
                        self.kind(),
                        ErrorKind::StreamCut,
                        "the stream ended early",
                    ))
                })
                .map(|r| with_usage(req, r));
            permit.record(outcome.as_ref());
            match outcome {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let delay = if produced { None } else { policy.next_delay(attempt, &e) };
                    let Some(d) = delay else { return Err(e) };
                    tracing::debug!(attempt, class = e.class().label(), "stream failed; retrying");
                    tokio::time::sleep(d).await;
                    attempt += 1;
                    last = Some(e);
                }
            }
        }
    }
}

/// An answer whose provider reported no usage, counted at sluice's estimate instead of as free.
fn with_usage(req: &ChatRequest, mut r: ChatResponse) -> ChatResponse {
    if r.usage.estimated {
        r.usage = Usage::estimate(req, &r.text);
        tracing::warn!(model = %req.model, input_tokens = r.usage.input_tokens, output_tokens = r.usage.output_tokens, "the provider reported no usage; the call is counted at sluice's estimate");
    }
    r
}

/// The auth header value, marked sensitive so that no HTTP-layer debug output shows it. A key
/// that is not a valid header value fails without being quoted.
pub(crate) fn key_header(kind: ProviderKind, value: &str) -> Result<HeaderValue, ProviderError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        ProviderError::new(
            kind,
            ErrorKind::InvalidRequest,
            "the API key contains characters not allowed in an HTTP header",
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Adds the request's extra headers; a name or value that is not a valid header is the caller's
/// mistake and fails the request (permanently) rather than being dropped silently.
pub(crate) fn extra_headers(
    kind: ProviderKind,
    mut b: reqwest::RequestBuilder,
    headers: &[(String, String)],
) -> Result<reqwest::RequestBuilder, ProviderError> {
    for (name, value) in headers {
        let n = HeaderName::from_bytes(name.as_bytes());
        let v = HeaderValue::from_str(value);
        match (n, v) {
            (Ok(n), Ok(v)) => b = b.header(n, v),
            _ => {
                return Err(ProviderError::new(
                    kind,
                    ErrorKind::InvalidRequest,
                    format!("invalid extra header {name:?}"),
                ));
            }
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_key_fails_without_being_quoted_and_is_sensitive() {
        let e = key_header(ProviderKind::Openai, "sk-secret\nvalue").unwrap_err();
        assert!(!format!("{e} {e:?}").contains("sk-secret"));
        assert_eq!(
            e.class(),
            crate::ErrorClass::Permanent { cause: crate::PermanentCause::BadRequest }
        );
        let v = key_header(ProviderKind::Openai, "Bearer sk-secret").unwrap();
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("sk-secret"));
    }

    #[test]
    fn bad_extra_headers_are_refused() {
        ensure_crypto_provider();
        let b = reqwest::Client::new().post("http://127.0.0.1:9/");
        let headers = vec![("bad header".to_owned(), "v".to_owned())];
        assert!(extra_headers(ProviderKind::Anthropic, b, &headers).is_err());
    }
}
