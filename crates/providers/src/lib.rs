//! Clients for the LLM providers sluice sends work to: Anthropic and OpenAI (and
//! OpenAI-compatible servers such as vLLM, Ollama or llama.cpp). Knows nothing of the store. Its
//! wire types are its own reading of `shared/spec/providers.md`, independent of the simulator's,
//! so that a misreading by one is caught by the other.
//!
//! The parts:
//!
//! - [`model`]: the one normalized request/response model the engine speaks — [`ChatRequest`],
//!   [`ChatResponse`], [`StopReason`], [`Usage`] (input counts every prompt token, cached ones
//!   included, whatever the provider calls it), [`StreamEvent`].
//! - [`client`]: [`Client`], an enum over the provider kinds built from a validated
//!   `sluice_core::config::Provider` and its [`ApiKey`]: `chat` (plain), `stream` (SSE deltas then
//!   `Done`), and `call` / `call_streaming` which add the rate limiter and the retry policy.
//! - `transport`: what every provider shares — sending, the [`Timeouts`] (connect, first byte,
//!   silence between chunks, total for a plain call and for a stream; a longer profile for flex), turning error answers into
//!   [`ProviderError`]s, and driving a stream through a provider's accumulator.
//! - `anthropic`, `openai`: one dialect each (request body and headers, answer, error body, SSE
//!   events). Same shape for both; `docs/providers.md` says how to add a third.
//! - [`sse`]: a byte-level Server-Sent Events decoder, correct across arbitrary chunk boundaries
//!   (property-tested).
//! - [`error`]: [`ProviderError`] and its [`ErrorClass`] — retryable (and why) or permanent (and
//!   why), with the flex refusal as its own class. Only classification lives here.
//! - [`mod@retry`]: how long to wait — [`RetryPolicy::next_delay`] (exponential backoff, full jitter,
//!   `retry-after` as a floor) and the [`retry()`] loop. [`retry_after`] parses the header.
//! - [`ratelimit`]: the [`RateLimiter`] of a provider key — requests, input and output tokens per
//!   minute and concurrency; reserve an estimate, settle with the real usage; tightened by the
//!   providers' rate-limit headers ([`ratelimit::headers`]); a 429 pauses every caller of the key.
//! - [`secret`]: [`ApiKey`], which never prints.
//! - [`batch`]: the Batch APIs (Anthropic Message Batches; OpenAI Files + Batches) as more
//!   methods of [`Client`] — `submit_batch`, `batch_status`, `batch_results`, `cancel_batch`,
//!   `list_batches`, `find_submitted` — over one normalized model ([`BatchItem`],
//!   [`BatchHandle`], [`BatchStatus`], [`BatchItemResult`]). Batches are checked against the
//!   provider's limits before sending ([`BatchLimits`], [`BatchInvalid`]); results are matched
//!   by `custom_id`; a create is never re-sent once the provider may have acted on it: a lost
//!   answer is [`BatchError::OutcomeUnknown`], reconciled by listing.

pub mod batch;
pub mod client;
pub mod error;
pub mod model;
pub mod ratelimit;
pub mod retry;
pub mod retry_after;
pub mod secret;
pub mod sse;

mod anthropic;
mod openai;
mod transport;

pub use batch::{
    BatchCounts, BatchError, BatchHandle, BatchInvalid, BatchItem, BatchItemResult, BatchLimits,
    BatchOutcome, BatchPage, BatchState, BatchStatus, ReconcileProbe, SLUICE_BATCH_ID,
};
pub use client::{BuildError, Client, ClientOptions};
pub use error::{ErrorClass, ErrorKind, PermanentCause, ProviderError, RetryCause, TimeoutPhase};
pub use model::{
    ChatRequest, ChatResponse, Estimate, Message, Role, StopReason, StreamEvent, Tier, Usage,
};
pub use ratelimit::{Headroom, Permit, RateLimitSnapshot, RateLimiter};
pub use retry::{RetryPolicy, retry};
pub use secret::ApiKey;
pub use transport::{EventStream, Timeouts};

/// The Anthropic `anthropic-version` this crate speaks.
pub use anthropic::API_VERSION as ANTHROPIC_API_VERSION;
