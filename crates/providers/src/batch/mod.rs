//! The Batch APIs: Anthropic Message Batches (spec §2) and OpenAI Files + Batches (spec §4),
//! behind one normalized model — [`BatchItem`] in, [`BatchHandle`] back, [`BatchStatus`] while it
//! runs, [`BatchItemResult`]s (matched by `custom_id`, never by order) at the end.
//!
//! The rules that make batches trustworthy (spec §7.2):
//!
//! - **Validate before sending** ([`validate`], [`BatchLimits`]): unique `custom_id`s matching
//!   `^[a-zA-Z0-9_-]{1,64}$`, never over the provider's count and byte limits. A refused batch is
//!   a typed [`BatchInvalid`], and nothing reaches the provider.
//! - **Creates are not retried blindly.** No provider offers an idempotency key for a batch
//!   create, so a create retried after a timeout or a 5xx can run (and bill) the same work twice.
//!   A create is retried only when the provider surely did not act on it (the connection was
//!   never made, or a 4xx such as a 429 refused it); otherwise the call ends in
//!   [`BatchError::OutcomeUnknown`] and the caller reconciles with [`Client::find_submitted`]
//!   before it submits again.
//! - Reads (status, results, list) and cancels are idempotent: retried per the [`RetryPolicy`],
//!   classified exactly as the real-time path classifies ([`ProviderError::class`]).
//! - Results are read as JSONL from a stream (blank lines skipped, any content type), and a line
//!   that cannot be read is logged and left out rather than failing the other 99,999.
//!
//! Batch HTTP calls do not go through the key's [`crate::RateLimiter`]: that limiter meters the
//! real-time requests and tokens per minute, a different quota from the batch queue. A 429 on a
//! batch route is still honoured (its `retry-after` is the floor of the retry delay).

mod anthropic;
mod jsonl;
mod openai;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;

use chrono::{DateTime, Utc};
use sluice_core::config::ProviderKind;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{ErrorKind, ProviderError};
use crate::model::{ChatRequest, ChatResponse};
use crate::retry::{RetryPolicy, retry};
use crate::transport::{Dialect, Transport};

/// The metadata key under which the engine puts its own batch id. OpenAI keeps batch metadata
/// and lists it, which is how a batch whose create outcome was unknown is found again.
pub const SLUICE_BATCH_ID: &str = "sluice_batch_id";

/// One request of a batch. `custom_id` is how its result is found again; the request's
/// `tier` and `extra_headers` do not apply inside a batch (the batch is its own tier).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    pub custom_id: String,
    pub request: ChatRequest,
}

/// What identifies a submitted batch: store `provider_batch_id` and rebuild the handle with
/// [`BatchHandle::new`] after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchHandle {
    pub provider: ProviderKind,
    pub provider_batch_id: String,
    /// OpenAI: the uploaded JSONL input file.
    pub input_file_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

impl BatchHandle {
    pub fn new(provider: ProviderKind, provider_batch_id: impl Into<String>) -> Self {
        BatchHandle {
            provider,
            provider_batch_id: provider_batch_id.into(),
            input_file_id: None,
            created_at: None,
        }
    }
}

/// Where a batch stands, normalized.
///
/// Anthropic has only `in_progress`, `canceling` and `ended`; an ended batch is reported as
/// `Cancelled` when a cancel was requested, `Expired` when it ended at its 24 h deadline with
/// expired requests (or when every request expired), else `Ended`. Every terminal state may carry results except `Failed`
/// (OpenAI: the input was rejected, nothing ran, nothing was billed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchState {
    /// Accepted, not yet running (OpenAI `validating`).
    Submitted,
    InProgress,
    /// Every request is done; the output is being written (OpenAI).
    Finalizing,
    Ended,
    Cancelling,
    Cancelled,
    Expired,
    Failed,
}

impl BatchState {
    /// No further change: the results (if any) can be fetched.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            BatchState::Ended | BatchState::Cancelled | BatchState::Expired | BatchState::Failed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Submitted => "submitted",
            BatchState::InProgress => "in_progress",
            BatchState::Finalizing => "finalizing",
            BatchState::Ended => "ended",
            BatchState::Cancelling => "cancelling",
            BatchState::Cancelled => "cancelled",
            BatchState::Expired => "expired",
            BatchState::Failed => "failed",
        }
    }
}

impl fmt::Display for BatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Request counts. Anthropic moves them only when the whole batch ends; OpenAI moves them while
/// it runs but lumps expired and cancelled requests into `errored` (its `failed`), so read the
/// results, not the counts, to know what happened to each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchCounts {
    pub total: u64,
    pub processing: u64,
    pub succeeded: u64,
    pub errored: u64,
    pub cancelled: u64,
    pub expired: u64,
}

/// A batch as the provider last described it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStatus {
    pub handle: BatchHandle,
    pub state: BatchState,
    pub counts: BatchCounts,
    pub created_at: DateTime<Utc>,
    /// When unfinished work expires (created + 24 h).
    pub expires_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub ended_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// OpenAI: the batch's metadata (string values only). Anthropic has none.
    pub metadata: BTreeMap<String, String>,
    /// OpenAI: batch-level errors of a `Failed` batch (`code: message (line n)`).
    pub errors: Vec<String>,
    /// Anthropic: where the results are, once ended.
    pub results_url: Option<String>,
    /// OpenAI: the output and error files, once terminal (`""` is read as none).
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
}

/// What became of one request of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOutcome {
    /// It ran; billed at the batch price. Boxed, as in [`crate::StreamEvent::Done`]: a response
    /// is large next to the other outcomes.
    Succeeded(Box<ChatResponse>),
    /// It ran into an error: [`ProviderError::class`] says whether another batch (or a stream
    /// call) can help — an overloaded server yes, an invalid request no.
    Errored(ProviderError),
    /// It never ran: the batch's window ended first. Not billed.
    Expired,
    /// It never ran: the batch was cancelled first. Not billed.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchItemResult {
    pub custom_id: String,
    pub outcome: BatchOutcome,
}

/// One page of [`Client::list_batches`], newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPage {
    pub batches: Vec<BatchStatus>,
    pub has_more: bool,
    /// The cursor for the next (older) page.
    pub next_after: Option<String>,
}

/// What the engine knows about a batch whose create may or may not have happened (a crash or
/// an [`BatchError::OutcomeUnknown`] between "recorded" and "provider id stored").
#[derive(Debug, Clone, Copy)]
pub struct ReconcileProbe<'a> {
    /// Our id, sent as `metadata[SLUICE_BATCH_ID]` (OpenAI matches on it exactly).
    pub sluice_batch_id: &'a str,
    /// How many items it was submitted with (Anthropic matches on it).
    pub item_count: usize,
    /// When the batch was recorded, before the create was sent.
    pub submitted_after: DateTime<Utc>,
    /// Provider ids the engine already has for other batches (never a match).
    pub known_ids: &'a [String],
}

/// The provider's limits on one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_items: usize,
    /// Of the encoded body (Anthropic) or input file (OpenAI). Decimal megabytes, the smaller
    /// reading of the documented "256 MB" / "200 MB".
    pub max_bytes: usize,
}

impl BatchLimits {
    pub const ANTHROPIC: BatchLimits = BatchLimits { max_items: 100_000, max_bytes: 256_000_000 };
    pub const OPENAI: BatchLimits = BatchLimits { max_items: 50_000, max_bytes: 200_000_000 };

    pub fn of(kind: ProviderKind) -> BatchLimits {
        match kind {
            ProviderKind::Anthropic => BatchLimits::ANTHROPIC,
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => BatchLimits::OPENAI,
        }
    }
}

/// Why a batch was refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchInvalid {
    #[error("a batch needs at least one item")]
    Empty,
    #[error("{count} items, over the provider's limit of {max} per batch")]
    TooManyItems { count: usize, max: usize },
    /// `bytes` is the encoded size, or (when the texts alone are over) at least that much.
    #[error("{bytes} bytes once encoded, over the provider's limit of {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("item {index}: custom_id {custom_id:?} does not match ^[a-zA-Z0-9_-]{{1,64}}$")]
    BadCustomId { index: usize, custom_id: String },
    #[error("custom_id {custom_id:?} is used by items {first} and {second}")]
    DuplicateCustomId { custom_id: String, first: usize, second: usize },
    #[error("metadata: {0}")]
    BadMetadata(String),
}

/// A failed batch call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    #[error("batch refused before sending: {0}")]
    Invalid(#[from] BatchInvalid),
    /// The create was sent and then the answer was lost (a timeout, a reset, a 5xx, an
    /// unreadable 200): the batch may exist and run. Find it with [`Client::find_submitted`]
    /// before submitting the same work again.
    #[error("batch create outcome unknown, reconcile before resubmitting: {0}")]
    OutcomeUnknown(ProviderError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("batch {id} has not ended ({state}): no results yet")]
    NotEnded { id: String, state: BatchState },
    /// Ended, but its results can no longer be downloaded (Anthropic archives them 29 days after
    /// creation).
    #[error("batch {id}: results unavailable: {reason}")]
    ResultsUnavailable { id: String, reason: String },
}

impl BatchError {
    /// Whether the same call may succeed later. `OutcomeUnknown` is not: it needs a
    /// reconciliation first, never a plain retry.
    pub fn is_retryable(&self) -> bool {
        match self {
            BatchError::Provider(e) => e.class().is_retryable(),
            BatchError::NotEnded { .. } => true,
            BatchError::Invalid(_)
            | BatchError::OutcomeUnknown(_)
            | BatchError::ResultsUnavailable { .. } => false,
        }
    }
}

fn custom_id_ok(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks what can be checked without encoding: not empty, not too many items, `custom_id`s
/// well-formed and unique, and not over the byte limit by the texts alone (which the encoding
/// can only lengthen: no point encoding 300 MB to refuse them). The exact byte limit is checked
/// on the encoded body by the submit itself (see also [`Client::batch_line_bytes`]).
pub fn validate(items: &[BatchItem], limits: BatchLimits) -> Result<(), BatchInvalid> {
    if items.is_empty() {
        return Err(BatchInvalid::Empty);
    }
    if items.len() > limits.max_items {
        return Err(BatchInvalid::TooManyItems { count: items.len(), max: limits.max_items });
    }
    let text_bytes: usize = items
        .iter()
        .map(|i| {
            let r = &i.request;
            i.custom_id.len()
                + r.model.len()
                + r.system.as_deref().map_or(0, str::len)
                + r.messages.iter().map(|m| m.text.len()).sum::<usize>()
        })
        .sum();
    check_size(text_bytes, limits)?;
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        if !custom_id_ok(&item.custom_id) {
            return Err(BatchInvalid::BadCustomId { index, custom_id: item.custom_id.clone() });
        }
        if let Some(first) = seen.insert(&item.custom_id, index) {
            return Err(BatchInvalid::DuplicateCustomId {
                custom_id: item.custom_id.clone(),
                first,
                second: index,
            });
        }
    }
    Ok(())
}

/// OpenAI's documented metadata bounds: at most 16 pairs, keys ≤ 64 and values ≤ 512 chars.
fn validate_openai_metadata(metadata: &BTreeMap<String, String>) -> Result<(), BatchInvalid> {
    if metadata.len() > 16 {
        return Err(BatchInvalid::BadMetadata(format!(
            "{} pairs, at most 16 allowed",
            metadata.len()
        )));
    }
    for (k, v) in metadata {
        if k.chars().count() > 64 {
            return Err(BatchInvalid::BadMetadata(format!("key {k:?} is over 64 characters")));
        }
        if v.chars().count() > 512 {
            return Err(BatchInvalid::BadMetadata(format!(
                "the value of {k:?} is over 512 characters"
            )));
        }
    }
    Ok(())
}

fn check_size(bytes: usize, limits: BatchLimits) -> Result<(), BatchInvalid> {
    if bytes > limits.max_bytes {
        return Err(BatchInvalid::TooLarge { bytes, max: limits.max_bytes });
    }
    Ok(())
}

/// One result per `custom_id`: should a provider report one twice (say, in both OpenAI files),
/// a success wins, since it was paid for; otherwise the first report stands.
fn dedupe(results: Vec<BatchItemResult>) -> Vec<BatchItemResult> {
    let mut index: HashMap<String, usize> = HashMap::with_capacity(results.len());
    let mut out: Vec<BatchItemResult> = Vec::with_capacity(results.len());
    for r in results {
        match index.get(&r.custom_id) {
            Some(&i) => {
                tracing::warn!(custom_id = %r.custom_id, "a batch result reported twice");
                if matches!(r.outcome, BatchOutcome::Succeeded(_))
                    && let Some(slot) = out.get_mut(i)
                    && !matches!(slot.outcome, BatchOutcome::Succeeded(_))
                {
                    *slot = r;
                }
            }
            None => {
                index.insert(r.custom_id.clone(), out.len());
                out.push(r);
            }
        }
    }
    out
}

/// How much earlier than the recorded submit a listed Anthropic batch may have been created
/// and still match: the provider's clock and ours differ a little.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);
/// How far back a reconciliation pages (×100 batches).
const MAX_RECONCILE_PAGES: usize = 50;

/// `base?k=v&…`, encoded (list cursors come from the network).
fn with_query(
    kind: ProviderKind,
    base: &str,
    query: &[(&str, &str)],
) -> Result<url::Url, ProviderError> {
    url::Url::parse_with_params(base, query).map_err(|e| {
        ProviderError::new(kind, ErrorKind::InvalidRequest, format!("bad list URL: {e}"))
    })
}

/// A failed request, and whether the provider surely did not act on it (it was never
/// delivered, or a 4xx answer refused it) — the only case in which a create may be re-sent.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: ProviderError,
    pub not_acted_on: bool,
}

impl Failure {
    fn after_send(error: ProviderError) -> Self {
        Failure { error, not_acted_on: false }
    }
}

impl From<ProviderError> for Failure {
    fn from(error: ProviderError) -> Self {
        // Errors raised while building the request: nothing was sent.
        let not_acted_on = error.kind == ErrorKind::InvalidRequest;
        Failure { error, not_acted_on }
    }
}

/// Whether an error answer means the provider refused the request without acting on it.
/// 408 and 409 are left out: both can come back for a request that was (or is being) carried
/// out. Every 5xx is left out: a proxy's 502 says nothing about what the API behind it did.
fn refused(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 409
}

impl<D: Dialect> Transport<D> {
    /// Sends a batch-route request; a non-2xx answer is a classified error.
    pub(crate) async fn send_batch_call(
        &self,
        builder: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<reqwest::Response, Failure> {
        let kind = self.dialect.kind();
        let resp = match tokio::time::timeout_at(deadline, builder.send()).await {
            Err(_) => {
                return Err(Failure::after_send(self.err(
                    ErrorKind::Timeout(crate::error::TimeoutPhase::Total),
                    "no response in time",
                )));
            }
            Ok(Err(e)) => {
                let not_acted_on = e.is_connect() || e.is_builder();
                return Err(Failure {
                    error: ProviderError::transport(kind, e, false),
                    not_acted_on,
                });
            }
            Ok(Ok(r)) => r,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let error = self.status_error(resp, deadline).await;
        Err(Failure { error, not_acted_on: refused(status) })
    }

    /// A JSON call: the answer parsed as `T` (a 2xx that is not a `T` is `Malformed`).
    pub(crate) async fn batch_json<T: serde::de::DeserializeOwned>(
        &self,
        builder: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<T, Failure> {
        let resp = self.send_batch_call(builder, deadline).await?;
        let request_id = self.dialect.request_id(resp.headers());
        let body = match tokio::time::timeout_at(deadline, resp.bytes()).await {
            Err(_) => {
                return Err(Failure::after_send(self.err(
                    ErrorKind::Timeout(crate::error::TimeoutPhase::Total),
                    "response body not read in time",
                )));
            }
            Ok(Err(e)) => {
                return Err(Failure::after_send(ProviderError::transport(
                    self.dialect.kind(),
                    e,
                    true,
                )));
            }
            Ok(Ok(b)) => b,
        };
        crate::transport::parse_json(self.dialect.kind(), &body).map_err(|mut e| {
            e.request_id = request_id;
            Failure::after_send(e)
        })
    }

    /// A deadline for a small call (status, list, cancel): bounded by the first-byte timeout,
    /// since such answers need no generation.
    fn small_call_deadline(&self) -> Instant {
        Instant::now() + self.standard.first_byte
    }

    /// A deadline for a call that carries a whole batch (up to 256 MB).
    fn upload_deadline(&self) -> Instant {
        Instant::now() + self.standard.total
    }
}

/// A create loop: re-sent only while the provider surely did not act on it and the policy
/// allows; any other failure after sending is an unknown outcome.
async fn create_once_or_unknown<T, F, Fut>(
    policy: &RetryPolicy,
    mut send: F,
) -> Result<T, BatchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut attempt = 0u32;
    loop {
        match send().await {
            Ok(v) => return Ok(v),
            Err(f) if !f.not_acted_on => return Err(BatchError::OutcomeUnknown(f.error)),
            Err(f) => match policy.next_delay(attempt, &f.error) {
                Some(d) => {
                    tracing::debug!(
                        attempt,
                        class = f.error.class().label(),
                        "batch create refused; retrying"
                    );
                    tokio::time::sleep(d).await;
                    attempt += 1;
                }
                None => return Err(BatchError::Provider(f.error)),
            },
        }
    }
}

/// An idempotent call (read, cancel), retried per the policy.
async fn idempotent<T, F, Fut>(policy: &RetryPolicy, mut call: F) -> Result<T, BatchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    retry(policy, |_| {
        let fut = call();
        async move { fut.await.map_err(|f| f.error) }
    })
    .await
    .map_err(BatchError::Provider)
}

impl Client {
    /// The provider's limits on one batch (for the assembler, which cuts batches under them).
    pub fn batch_limits(&self) -> BatchLimits {
        BatchLimits::of(self.kind())
    }

    /// How many bytes `item` adds to the encoded batch (its line, with the separator): what the
    /// assembler sums to stay under [`BatchLimits::max_bytes`].
    pub fn batch_line_bytes(&self, item: &BatchItem) -> usize {
        match self {
            Client::Anthropic(c) => anthropic::line_bytes(&c.transport, item),
            Client::OpenAi(c) => openai::line_bytes(&c.transport, item),
        }
    }

    /// Submits a batch. `metadata` is sent as the OpenAI batch's metadata (put our batch id
    /// under [`SLUICE_BATCH_ID`] so that [`Client::find_submitted`] can find it again);
    /// Anthropic batches carry no metadata, so it is not sent there.
    ///
    /// Errors: [`BatchError::Invalid`] before sending; [`BatchError::OutcomeUnknown`] when the
    /// create was sent but its answer was lost; [`BatchError::Provider`] when the provider
    /// refused it (nothing was created).
    pub async fn submit_batch(
        &self,
        items: &[BatchItem],
        metadata: &BTreeMap<String, String>,
        policy: &RetryPolicy,
    ) -> Result<BatchHandle, BatchError> {
        self.submit_batch_with_headers(items, metadata, &[], policy).await
    }

    /// [`Client::submit_batch`] with extra headers on the create call (e.g. `anthropic-beta`,
    /// or the simulator's `x-sim-fault` in tests). Never put credentials here.
    pub async fn submit_batch_with_headers(
        &self,
        items: &[BatchItem],
        metadata: &BTreeMap<String, String>,
        headers: &[(String, String)],
        policy: &RetryPolicy,
    ) -> Result<BatchHandle, BatchError> {
        validate(items, self.batch_limits())?;
        match self {
            Client::Anthropic(c) => anthropic::submit(&c.transport, items, headers, policy).await,
            Client::OpenAi(c) => {
                validate_openai_metadata(metadata)?;
                openai::submit(&c.transport, items, metadata, headers, policy).await
            }
        }
    }

    /// The batch as the provider describes it now. Safe to poll; retried per `policy`.
    pub async fn batch_status(
        &self,
        handle: &BatchHandle,
        policy: &RetryPolicy,
    ) -> Result<BatchStatus, BatchError> {
        match self {
            Client::Anthropic(c) => anthropic::status(&c.transport, handle, policy).await,
            Client::OpenAi(c) => openai::status(&c.transport, handle, policy).await,
        }
    }

    /// Every result of an ended batch, one per `custom_id` (in no particular order: match them
    /// by `custom_id`). A request missing from the results never ran; a `Failed` batch has none.
    /// [`BatchError::NotEnded`] before the batch is terminal.
    pub async fn batch_results(
        &self,
        handle: &BatchHandle,
        policy: &RetryPolicy,
    ) -> Result<Vec<BatchItemResult>, BatchError> {
        let status = self.batch_status(handle, policy).await?;
        if !status.state.is_terminal() {
            return Err(BatchError::NotEnded {
                id: handle.provider_batch_id.clone(),
                state: status.state,
            });
        }
        let results = match self {
            Client::Anthropic(c) => anthropic::results(&c.transport, &status, policy).await?,
            Client::OpenAi(c) => openai::results(&c.transport, &status, policy).await?,
        };
        Ok(dedupe(results))
    }

    /// Asks the provider to stop the batch; requests not yet run come back `Cancelled`, those
    /// already run keep their results (and their charges). Cancelling a batch that has already
    /// ended is not an error: its status is returned.
    pub async fn cancel_batch(
        &self,
        handle: &BatchHandle,
        policy: &RetryPolicy,
    ) -> Result<BatchStatus, BatchError> {
        let r = match self {
            Client::Anthropic(c) => anthropic::cancel(&c.transport, handle, policy).await,
            Client::OpenAi(c) => openai::cancel(&c.transport, handle, policy).await,
        };
        match r {
            // OpenAI answers 400 to a cancel of a terminal batch (the race between an engine
            // cancelling and the batch ending is normal): report where it stands instead.
            Err(BatchError::Provider(e)) if e.status == Some(400) => {
                let status = self.batch_status(handle, policy).await?;
                if status.state.is_terminal() { Ok(status) } else { Err(BatchError::Provider(e)) }
            }
            other => other,
        }
    }

    /// One page of the provider's batches, newest first. `limit` is clamped to what the
    /// provider accepts (Anthropic 1–1000, OpenAI 1–100); `after` is the previous page's
    /// [`BatchPage::next_after`].
    pub async fn list_batches(
        &self,
        limit: usize,
        after: Option<&str>,
        policy: &RetryPolicy,
    ) -> Result<BatchPage, BatchError> {
        match self {
            Client::Anthropic(c) => anthropic::list(&c.transport, limit, after, policy).await,
            Client::OpenAi(c) => openai::list(&c.transport, limit, after, policy).await,
        }
    }

    /// Finds the batches that a create with an unknown outcome may have made, newest first. An
    /// empty answer means it was not created: submitting again is safe. One answer is the batch:
    /// store its id and poll it.
    ///
    /// OpenAI matches exactly, on `metadata[SLUICE_BATCH_ID]`. Anthropic batches carry no
    /// metadata and a listing shows no `custom_id`s, so a candidate is a batch created since
    /// `submitted_after` (less five minutes of clock skew), with exactly `item_count` requests,
    /// whose id is not in `known_ids`. Since the engine stores every provider id it learns,
    /// the only unknown batches of that size are those of creates that were lost; when there
    /// are several (several lost creates of one size, or another program on the same key), adopt
    /// none blindly: once one ends, its results' `custom_id`s (which embed our task ids) say
    /// whose it is. The search stops at the first page entirely older than the cutoff, or
    /// after 5,000 batches.
    pub async fn find_submitted(
        &self,
        probe: &ReconcileProbe<'_>,
        policy: &RetryPolicy,
    ) -> Result<Vec<BatchStatus>, BatchError> {
        let cutoff = probe.submitted_after - CLOCK_SKEW;
        let known: HashSet<&str> = probe.known_ids.iter().map(String::as_str).collect();
        let kind = self.kind();
        let matches = |s: &BatchStatus| -> bool {
            if known.contains(s.handle.provider_batch_id.as_str()) {
                return false;
            }
            match kind {
                ProviderKind::Anthropic => {
                    s.created_at >= cutoff && s.counts.total == probe.item_count as u64
                }
                ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
                    s.metadata.get(SLUICE_BATCH_ID).map(String::as_str)
                        == Some(probe.sluice_batch_id)
                }
            }
        };
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_RECONCILE_PAGES {
            let page = self.list_batches(100, after.as_deref(), policy).await?;
            let all_older = page.batches.iter().all(|b| b.created_at < cutoff);
            found.extend(page.batches.into_iter().filter(|b| matches(b)));
            if all_older || !page.has_more {
                break;
            }
            match page.next_after {
                Some(a) => after = Some(a),
                None => break,
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;

    fn item(id: &str) -> BatchItem {
        BatchItem {
            custom_id: id.into(),
            request: ChatRequest {
                model: "m".into(),
                messages: vec![Message::user("hi")],
                max_tokens: 5,
                ..Default::default()
            },
        }
    }

    #[test]
    fn custom_ids_are_checked() {
        let l = BatchLimits::ANTHROPIC;
        assert_eq!(validate(&[], l), Err(BatchInvalid::Empty));
        assert!(validate(&[item("a-1_B")], l).is_ok());
        assert!(validate(&[item(&"x".repeat(64))], l).is_ok());
        for bad in ["", "has space", "dot.ted", "ünï", &"x".repeat(65)] {
            assert!(
                matches!(
                    validate(&[item(bad)], l),
                    Err(BatchInvalid::BadCustomId { index: 0, .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            validate(&[item("a"), item("b"), item("a")], l),
            Err(BatchInvalid::DuplicateCustomId { custom_id: "a".into(), first: 0, second: 2 })
        );
    }

    #[test]
    fn count_limit() {
        let l = BatchLimits { max_items: 2, max_bytes: 1000 };
        assert_eq!(
            validate(&[item("a"), item("b"), item("c")], l),
            Err(BatchInvalid::TooManyItems { count: 3, max: 2 })
        );
        assert_eq!(check_size(1001, l), Err(BatchInvalid::TooLarge { bytes: 1001, max: 1000 }));
        let mut big = item("a");
        big.request.messages = vec![Message::user("x".repeat(1000))];
        assert!(matches!(validate(&[big], l), Err(BatchInvalid::TooLarge { .. })));
        assert!(check_size(1000, l).is_ok());
    }

    #[test]
    fn openai_metadata_bounds() {
        let mut m = BTreeMap::new();
        m.insert(SLUICE_BATCH_ID.to_owned(), "b-1".to_owned());
        assert!(validate_openai_metadata(&m).is_ok());
        m.insert("v".into(), "x".repeat(513));
        assert!(validate_openai_metadata(&m).is_err());
        let many: BTreeMap<String, String> =
            (0..17).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_openai_metadata(&many).is_err());
    }

    #[test]
    fn only_4xx_refusals_mean_not_created() {
        for s in [400, 401, 403, 404, 413, 422, 429] {
            assert!(refused(s), "{s}");
        }
        for s in [408, 409, 500, 502, 503, 504, 529] {
            assert!(!refused(s), "{s}");
        }
    }

    #[test]
    fn dedupe_keeps_the_success() {
        let err = ProviderError::new(ProviderKind::Openai, ErrorKind::Malformed, "x");
        let ok = ChatResponse {
            text: "t".into(),
            stop_reason: crate::StopReason::EndTurn,
            usage: Default::default(),
            model: "m".into(),
            provider_request_id: None,
            rate_limit: None,
        };
        let r = dedupe(vec![
            BatchItemResult { custom_id: "a".into(), outcome: BatchOutcome::Errored(err) },
            BatchItemResult { custom_id: "b".into(), outcome: BatchOutcome::Expired },
            BatchItemResult {
                custom_id: "a".into(),
                outcome: BatchOutcome::Succeeded(Box::new(ok)),
            },
            BatchItemResult { custom_id: "b".into(), outcome: BatchOutcome::Cancelled },
        ]);
        assert_eq!(r.len(), 2);
        assert!(matches!(r[0].outcome, BatchOutcome::Succeeded(_)));
        assert_eq!(r[1].outcome, BatchOutcome::Expired);
    }

    #[tokio::test(start_paused = true)]
    async fn a_create_is_resent_only_when_surely_refused() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let status = |s: u16| {
            let mut e = ProviderError::new(ProviderKind::Anthropic, ErrorKind::Status, "x");
            e.status = Some(s);
            Failure { error: e, not_acted_on: refused(s) }
        };
        // A 429 (refused) is retried, then succeeds.
        let calls = AtomicU32::new(0);
        let r = create_once_or_unknown(&RetryPolicy::default(), || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n == 0 { Err(status(429)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.unwrap(), 1);
        // A 500 after sending: not re-sent, outcome unknown.
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = create_once_or_unknown(&RetryPolicy::default(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(status(500)) }
        })
        .await;
        assert!(matches!(r, Err(BatchError::OutcomeUnknown(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A permanent refusal: not re-sent, a plain provider error (nothing was created).
        let r: Result<(), _> =
            create_once_or_unknown(&RetryPolicy::default(), || async { Err(status(400)) }).await;
        assert!(matches!(r, Err(BatchError::Provider(_))));
    }
}
