//! The Batch API clients over real HTTP against the simulator, one suite run for each provider
//! (the `suite!` macro at the end): submit, poll, results matched by `custom_id` (the sim shuffles
//! them), each line billed once at the batch price in the sim's charge log; errored and expired
//! lines; a whole batch expiring; cancel; list and reconciliation by metadata; a create whose
//! answer is lost (through a proxy that drops it) reported as "outcome unknown" and found again;
//! the local limit checks.

// Tests may unwrap and panic (helpers outside #[test] fns included).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use sluice_core::config::{Provider, ProviderKind, RateLimits};
use sluice_providers::{
    ApiKey, BatchError, BatchHandle, BatchInvalid, BatchItem, BatchItemResult, BatchLimits,
    BatchOutcome, BatchState, BatchStatus, ChatRequest, Client, ClientOptions, ErrorClass, Message,
    ReconcileProbe, RetryCause, RetryPolicy, SLUICE_BATCH_ID, Timeouts,
};
use sluice_sim::config::BatchConfig;
use sluice_sim::models::{self, Tier};
use sluice_sim::{RunningSim, Sim, SimConfig};
use tokio::time::Instant;

/// Every test is bounded in time, whatever goes wrong.
const TEST_LIMIT: Duration = Duration::from_secs(60);

async fn sim(config: SimConfig) -> RunningSim {
    Sim::start(config, "127.0.0.1:0").await.unwrap()
}

/// Batches that end within about a tenth of a second.
fn fast() -> SimConfig {
    SimConfig::instant()
}

/// A one-hour turnaround and a 24 h window, 86,400 times faster: a batch ends in ~40 ms and a
/// whole-batch expiry comes after one real second.
fn day_in_a_second() -> SimConfig {
    SimConfig {
        batch: BatchConfig {
            turnaround_median: Duration::from_secs(3600),
            turnaround_p95: Duration::from_secs(3600),
            acceleration: 86_400.0,
            validating: Duration::ZERO,
            finalizing: Duration::ZERO,
            cancel_delay: Duration::ZERO,
            ..BatchConfig::default()
        },
        ..SimConfig::instant()
    }
}

/// Batches that run for an hour of real time: they only end when cancelled.
fn slow() -> SimConfig {
    SimConfig {
        batch: BatchConfig {
            turnaround_median: Duration::from_secs(3600),
            turnaround_p95: Duration::from_secs(3600),
            acceleration: 1.0,
            validating: Duration::ZERO,
            finalizing: Duration::ZERO,
            cancel_delay: Duration::ZERO,
            ..BatchConfig::default()
        },
        ..SimConfig::instant()
    }
}

fn provider(kind: ProviderKind, base: &str) -> Provider {
    Provider {
        name: format!("sim-{}", kind.as_str()),
        kind,
        base_url: base.parse().unwrap(),
        api_key_env: Some("SIM_KEY".into()),
        limits: RateLimits::default(),
        batch_api: true,
        batch_turnaround_p50: Duration::from_secs(60),
        batch_turnaround_p95: Duration::from_secs(600),
        batch_enqueued_tokens: None,
    }
}

fn base_of(kind: ProviderKind, sim: &RunningSim) -> String {
    match kind {
        ProviderKind::Anthropic => sim.base_url().to_owned(),
        _ => sim.openai_base_url(),
    }
}

fn client_at(kind: ProviderKind, base: &str) -> Client {
    let t = Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_secs(5),
        idle: Duration::from_secs(5),
        total: Duration::from_secs(20),
        stream_total: Duration::from_secs(20),
    };
    Client::with_options(
        &provider(kind, base),
        Some(ApiKey::new("test-key")),
        ClientOptions { standard: t, flex: t },
    )
    .unwrap()
}

fn client(kind: ProviderKind, sim: &RunningSim) -> Client {
    client_at(kind, &base_of(kind, sim))
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..Default::default()
    }
}

fn model(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => "claude-haiku-5-5",
        _ => "gpt-5.4-mini",
    }
}

fn item(kind: ProviderKind, custom_id: &str) -> BatchItem {
    BatchItem {
        custom_id: custom_id.into(),
        request: ChatRequest {
            model: model(kind).into(),
            system: Some("You are terse.".into()),
            messages: vec![Message::user(format!("Score the lead {custom_id}."))],
            max_tokens: 100,
            request_tag: Some(format!("task-{custom_id}")),
            ..Default::default()
        },
    }
}

fn items(kind: ProviderKind, prefix: &str, n: usize) -> Vec<BatchItem> {
    (0..n).map(|i| item(kind, &format!("{prefix}-{i}"))).collect()
}

fn metadata(sluice_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(SLUICE_BATCH_ID.to_owned(), sluice_id.to_owned())])
}

/// Polls until the batch is terminal (bounded).
async fn wait_terminal(c: &Client, h: &BatchHandle) -> BatchStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = c.batch_status(h, &policy()).await.unwrap();
        if s.state.is_terminal() {
            return s;
        }
        assert!(Instant::now() < deadline, "batch still {} after 20 s", s.state);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn by_id(results: Vec<BatchItemResult>) -> HashMap<String, BatchOutcome> {
    let n = results.len();
    let map: HashMap<_, _> = results.into_iter().map(|r| (r.custom_id, r.outcome)).collect();
    assert_eq!(map.len(), n, "one result per custom_id");
    map
}

fn sim_provider(kind: ProviderKind) -> models::Provider {
    match kind {
        ProviderKind::Anthropic => models::Provider::Anthropic,
        _ => models::Provider::Openai,
    }
}

async fn submit_and_fetch(kind: ProviderKind) {
    let sim = sim(fast()).await;
    let c = client(kind, &sim);
    let mut batch = items(kind, "lead", 12);
    batch.push(item(kind, "lead-sim-errored-1"));
    batch.push(item(kind, "lead-sim-expired-1"));
    let h = c.submit_batch(&batch, &metadata("sb-1"), &policy()).await.unwrap();
    assert_eq!(h.provider, kind);
    assert_eq!(h.input_file_id.is_some(), kind == ProviderKind::Openai);

    let status = wait_terminal(&c, &h).await;
    assert_eq!(status.state, BatchState::Ended);
    assert_eq!(status.counts.total, 14);
    assert_eq!(status.counts.succeeded, 12);
    assert!(status.ended_at.is_some());
    if kind == ProviderKind::Openai {
        assert_eq!(status.metadata.get(SLUICE_BATCH_ID).map(String::as_str), Some("sb-1"));
    }

    let results = by_id(c.batch_results(&h, &policy()).await.unwrap());
    let submitted: HashSet<String> = batch.iter().map(|i| i.custom_id.clone()).collect();
    assert_eq!(results.keys().cloned().collect::<HashSet<_>>(), submitted);

    let BatchOutcome::Errored(e) = &results["lead-sim-errored-1"] else {
        panic!("{:?}", results["lead-sim-errored-1"])
    };
    assert_eq!(e.class(), ErrorClass::Retryable { cause: RetryCause::ServerError }, "{e}");
    assert_eq!(results["lead-sim-expired-1"], BatchOutcome::Expired);

    // Each success billed exactly once, at half the standard price, for the tokens it reports.
    let charges: Vec<_> = sim
        .charges()
        .all()
        .into_iter()
        .filter(|ch| ch.batch_id.as_deref() == Some(h.provider_batch_id.as_str()))
        .collect();
    assert_eq!(charges.len(), 12, "only the succeeded lines are billed");
    let m = models::find(sim_provider(kind), model(kind)).unwrap();
    for ch in &charges {
        let cid = ch.custom_id.clone().unwrap();
        assert_eq!(charges.iter().filter(|o| o.custom_id.as_ref() == Some(&cid)).count(), 1);
        let BatchOutcome::Succeeded(r) = &results[&cid] else {
            panic!("{cid} billed but not a success: {:?}", results[&cid])
        };
        assert!(!r.text.is_empty());
        assert_eq!(r.usage.input_tokens, ch.input_tokens, "{cid}");
        assert_eq!(r.usage.output_tokens, ch.output_tokens, "{cid}");
        assert_eq!(r.provider_request_id.as_deref(), Some(ch.request_id.as_str()));
        assert_eq!(ch.tier, Tier::Batch);
        let standard = models::cost(m, Tier::Standard, ch.input_tokens, ch.output_tokens);
        assert_eq!(
            ch.total_pico_usd * 2,
            standard.input_pico + standard.output_pico,
            "{cid}: the batch price is half the standard price"
        );
    }
    // The answer of each item is its own (the sim answers deterministically per request; the
    // request text names the custom_id), so a mix-up by order would show here.
    for it in &batch {
        if let BatchOutcome::Succeeded(r) = &results[&it.custom_id] {
            let direct = c.chat(&it.request).await.unwrap();
            assert_eq!(r.text, direct.text, "{}", it.custom_id);
        }
    }
    sim.shutdown().await;
}

async fn whole_batch_expires(kind: ProviderKind) {
    let sim = sim(day_in_a_second()).await;
    let c = client(kind, &sim);
    let batch = items(kind, "exp", 5);
    let h = match kind {
        // Anthropic batches have no metadata: the fault travels as a header.
        ProviderKind::Anthropic => {
            let headers = [("x-sim-fault".to_owned(), "expire".to_owned())];
            c.submit_batch_with_headers(&batch, &BTreeMap::new(), &headers, &policy()).await
        }
        _ => {
            let mut md = metadata("sb-exp");
            md.insert("sim_fault".into(), "expire".into());
            c.submit_batch(&batch, &md, &policy()).await
        }
    }
    .unwrap();
    let status = wait_terminal(&c, &h).await;
    assert_eq!(status.state, BatchState::Expired);
    let results = by_id(c.batch_results(&h, &policy()).await.unwrap());
    assert_eq!(results.len(), 5);
    assert!(results.values().all(|o| *o == BatchOutcome::Expired), "{results:?}");
    assert!(sim.charges().all().is_empty(), "nothing ran, nothing billed");
    sim.shutdown().await;
}

async fn cancel(kind: ProviderKind) {
    let sim = sim(slow()).await;
    let c = client(kind, &sim);
    let batch = items(kind, "can", 6);
    let h = c.submit_batch(&batch, &metadata("sb-can"), &policy()).await.unwrap();
    match c.batch_results(&h, &policy()).await {
        Err(BatchError::NotEnded { id, state }) => {
            assert_eq!(id, h.provider_batch_id);
            assert!(!state.is_terminal());
        }
        other => panic!("{other:?}"),
    }
    let s = c.cancel_batch(&h, &policy()).await.unwrap();
    assert!(matches!(s.state, BatchState::Cancelling | BatchState::Cancelled), "{}", s.state);
    assert!(s.cancel_requested_at.is_some() || kind == ProviderKind::Openai);
    let s = wait_terminal(&c, &h).await;
    assert_eq!(s.state, BatchState::Cancelled);
    let results = by_id(c.batch_results(&h, &policy()).await.unwrap());
    assert_eq!(results.len(), 6);
    assert!(results.values().all(|o| *o == BatchOutcome::Cancelled), "{results:?}");
    assert!(sim.charges().all().is_empty());
    // Cancelling again (the engine racing the end) reports the batch, not an error.
    let again = c.cancel_batch(&h, &policy()).await.unwrap();
    assert_eq!(again.state, BatchState::Cancelled);
    sim.shutdown().await;
}

async fn list_and_reconcile(kind: ProviderKind) {
    let sim = sim(fast()).await;
    let c = client(kind, &sim);
    let before = chrono::Utc::now();
    let mut handles = Vec::new();
    for (i, n) in [2usize, 3, 4].into_iter().enumerate() {
        let h = c
            .submit_batch(
                &items(kind, &format!("b{i}"), n),
                &metadata(&format!("sb-{i}")),
                &policy(),
            )
            .await
            .unwrap();
        handles.push(h);
    }
    let ids: Vec<String> = handles.iter().map(|h| h.provider_batch_id.clone()).collect();

    // Newest first, two to a page.
    let p1 = c.list_batches(2, None, &policy()).await.unwrap();
    assert!(p1.has_more);
    let p1_ids: Vec<_> = p1.batches.iter().map(|b| b.handle.provider_batch_id.clone()).collect();
    assert_eq!(p1_ids, vec![ids[2].clone(), ids[1].clone()]);
    let p2 = c.list_batches(2, p1.next_after.as_deref(), &policy()).await.unwrap();
    assert!(!p2.has_more);
    assert_eq!(p2.batches.len(), 1);
    assert_eq!(p2.batches[0].handle.provider_batch_id, ids[0]);

    // The engine lost the answer of the second create: it finds that batch, and only it.
    let others = vec![ids[0].clone(), ids[2].clone()];
    let probe = ReconcileProbe {
        sluice_batch_id: "sb-1",
        item_count: 3,
        submitted_after: before,
        known_ids: &others,
    };
    let found = c.find_submitted(&probe, &policy()).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].handle.provider_batch_id, ids[1]);

    // Nothing was created for a batch never submitted: submitting it is safe.
    let probe = ReconcileProbe {
        sluice_batch_id: "sb-9",
        item_count: 9,
        submitted_after: before,
        known_ids: &ids,
    };
    assert!(c.find_submitted(&probe, &policy()).await.unwrap().is_empty());
    sim.shutdown().await;
}

async fn limits_are_checked_before_sending(kind: ProviderKind) {
    let sim = sim(fast()).await;
    let c = client(kind, &sim);
    let limits = c.batch_limits();
    assert_eq!(limits, BatchLimits::of(kind));
    let md = metadata("sb-lim");

    let dup = vec![item(kind, "a"), item(kind, "b"), item(kind, "a")];
    let e = c.submit_batch(&dup, &md, &policy()).await.unwrap_err();
    assert!(
        matches!(
            e,
            BatchError::Invalid(BatchInvalid::DuplicateCustomId { first: 0, second: 2, .. })
        ),
        "{e:?}"
    );
    let e = c.submit_batch(&[item(kind, "has space")], &md, &policy()).await.unwrap_err();
    assert!(matches!(e, BatchError::Invalid(BatchInvalid::BadCustomId { .. })), "{e:?}");
    let e = c.submit_batch(&[], &md, &policy()).await.unwrap_err();
    assert!(matches!(e, BatchError::Invalid(BatchInvalid::Empty)), "{e:?}");

    let one = item(kind, "x");
    let too_many: Vec<BatchItem> = (0..=limits.max_items)
        .map(|i| BatchItem { custom_id: format!("i{i}"), request: one.request.clone() })
        .collect();
    let e = c.submit_batch(&too_many, &md, &policy()).await.unwrap_err();
    assert!(
        matches!(e, BatchError::Invalid(BatchInvalid::TooManyItems { count, max })
            if count == limits.max_items + 1 && max == limits.max_items),
        "{e:?}"
    );
    assert!(!e.is_retryable());

    // Over the byte limit by the text alone: refused before encoding.
    let mut big = item(kind, "big");
    big.request.messages = vec![Message::user("a".repeat(limits.max_bytes))];
    let e = c.submit_batch(std::slice::from_ref(&big), &md, &policy()).await.unwrap_err();
    assert!(
        matches!(e, BatchError::Invalid(BatchInvalid::TooLarge { bytes, max })
            if bytes > max && max == limits.max_bytes),
        "{e:?}"
    );
    drop(big);
    // Under the limit by the text, over it once encoded: unit-tested in each dialect's batch
    // module (encoding hundreds of megabytes in a debug build takes too long for this suite).

    if kind == ProviderKind::Openai {
        let many: BTreeMap<String, String> =
            (0..17).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        let e = c.submit_batch(&[item(kind, "ok")], &many, &policy()).await.unwrap_err();
        assert!(matches!(e, BatchError::Invalid(BatchInvalid::BadMetadata(_))), "{e:?}");
    }

    // None of it reached the provider.
    assert!(c.list_batches(10, None, &policy()).await.unwrap().batches.is_empty());
    sim.shutdown().await;
}

// ---- a proxy that loses or refuses creates ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward the create to the sim, then answer 502 as if a gateway lost the answer.
    LoseCreateAnswer,
    /// Answer the first create 429 without forwarding it; forward the rest.
    RefuseFirstCreate,
    /// Forward the create to the sim, then hold the answer back for 5 s.
    StallCreateAnswer,
}

struct Proxy {
    upstream: String,
    http: reqwest::Client,
    mode: Mode,
    creates_seen: AtomicU32,
    creates_forwarded: AtomicU32,
}

fn is_create(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST && (path == "/v1/messages/batches" || path == "/v1/batches")
}

async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path_q = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
    let create = is_create(&parts.method, parts.uri.path());
    if create {
        let n = p.creates_seen.fetch_add(1, Ordering::SeqCst);
        if p.mode == Mode::RefuseFirstCreate && n == 0 {
            return Response::builder()
                .status(429)
                .header("content-type", "application/json")
                .header("retry-after", "0")
                .body(Body::from(
                    r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
                ))
                .unwrap();
        }
        p.creates_forwarded.fetch_add(1, Ordering::SeqCst);
    }
    let body = axum::body::to_bytes(body, 512 * 1024 * 1024).await.unwrap();
    let mut b = p.http.request(parts.method.clone(), format!("{}{path_q}", p.upstream));
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            b = b.header(k, v);
        }
    }
    let resp = b.body(body).send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    if create && p.mode == Mode::StallCreateAnswer {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    if create && p.mode == Mode::LoseCreateAnswer {
        return Response::builder().status(502).body(Body::from("Bad Gateway")).unwrap();
    }
    let mut out = Response::builder().status(status);
    for (k, v) in &headers {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            out = out.header(k, v);
        }
    }
    out.body(Body::from(bytes)).unwrap()
}

async fn proxy(sim: &RunningSim, mode: Mode) -> (String, Arc<Proxy>) {
    // reqwest is built without a crypto provider (see the crate's client.rs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let p = Arc::new(Proxy {
        upstream: sim.base_url().to_owned(),
        http: reqwest::Client::new(),
        mode,
        creates_seen: AtomicU32::new(0),
        creates_forwarded: AtomicU32::new(0),
    });
    let app = Router::new().fallback(forward).with_state(Arc::clone(&p));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), p)
}

async fn lost_create_answer_is_unknown_then_reconciled(kind: ProviderKind) {
    let sim = sim(fast()).await;
    let (base, p) = proxy(&sim, Mode::LoseCreateAnswer).await;
    let base = match kind {
        ProviderKind::Anthropic => base,
        _ => format!("{base}/v1"),
    };
    let c = client_at(kind, &base);
    let batch = items(kind, "lost", 4);
    let before = chrono::Utc::now();
    let e = c.submit_batch(&batch, &metadata("sb-lost"), &policy()).await.unwrap_err();
    let BatchError::OutcomeUnknown(inner) = &e else { panic!("{e:?}") };
    assert_eq!(inner.status, Some(502));
    assert!(!e.is_retryable(), "an unknown outcome needs a reconciliation, not a retry");
    assert_eq!(p.creates_seen.load(Ordering::SeqCst), 1, "the create was not re-sent");

    let probe = ReconcileProbe {
        sluice_batch_id: "sb-lost",
        item_count: 4,
        submitted_after: before,
        known_ids: &[],
    };
    let found = c.find_submitted(&probe, &policy()).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let h = found[0].handle.clone();
    wait_terminal(&c, &h).await;
    let results = by_id(c.batch_results(&h, &policy()).await.unwrap());
    assert_eq!(results.len(), 4);
    assert!(results.values().all(|o| matches!(o, BatchOutcome::Succeeded(_))));
    let charges = sim.charges().all();
    assert_eq!(charges.len(), 4, "each line billed once: one batch, not two");
    let cids: HashSet<_> = charges.iter().filter_map(|ch| ch.custom_id.clone()).collect();
    assert_eq!(cids.len(), 4);
    sim.shutdown().await;
}

async fn refused_create_is_retried(kind: ProviderKind) {
    let sim = sim(fast()).await;
    let (base, p) = proxy(&sim, Mode::RefuseFirstCreate).await;
    let base = match kind {
        ProviderKind::Anthropic => base,
        _ => format!("{base}/v1"),
    };
    let c = client_at(kind, &base);
    let h = c.submit_batch(&items(kind, "r", 2), &metadata("sb-r"), &policy()).await.unwrap();
    assert_eq!(p.creates_seen.load(Ordering::SeqCst), 2, "a 429 is a refusal: safe to re-send");
    assert_eq!(p.creates_forwarded.load(Ordering::SeqCst), 1);
    assert!(!h.provider_batch_id.is_empty());
    let direct = client(kind, &sim);
    assert_eq!(direct.list_batches(10, None, &policy()).await.unwrap().batches.len(), 1);
    sim.shutdown().await;
}

async fn stalled_create_is_unknown(kind: ProviderKind) {
    let sim = sim(fast()).await;
    let (base, p) = proxy(&sim, Mode::StallCreateAnswer).await;
    let base = match kind {
        ProviderKind::Anthropic => base,
        _ => format!("{base}/v1"),
    };
    let t = Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_millis(500),
        idle: Duration::from_millis(500),
        total: Duration::from_millis(500),
        stream_total: Duration::from_millis(500),
    };
    let c = Client::with_options(
        &provider(kind, &base),
        Some(ApiKey::new("test-key")),
        ClientOptions { standard: t, flex: t },
    )
    .unwrap();
    let e = c.submit_batch(&items(kind, "st", 2), &metadata("sb-st"), &policy()).await.unwrap_err();
    let BatchError::OutcomeUnknown(inner) = &e else { panic!("{e:?}") };
    assert_eq!(inner.class(), ErrorClass::Retryable { cause: RetryCause::Timeout });
    assert_eq!(p.creates_seen.load(Ordering::SeqCst), 1, "the create was not re-sent");
    // It was created: the reconciliation must find it rather than submit again.
    let direct = client(kind, &sim);
    assert_eq!(direct.list_batches(10, None, &policy()).await.unwrap().batches.len(), 1);
    sim.shutdown().await;
}

async fn provider_down(kind: ProviderKind) {
    // A port nothing listens on: bind one, then close it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = match kind {
        ProviderKind::Anthropic => format!("http://127.0.0.1:{port}"),
        _ => format!("http://127.0.0.1:{port}/v1"),
    };
    let c = client_at(kind, &base);
    // Never connected, so never created: a plain (retryable) provider error, not "unknown".
    let e = c.submit_batch(&items(kind, "d", 2), &metadata("sb-d"), &policy()).await.unwrap_err();
    let BatchError::Provider(inner) = &e else { panic!("{e:?}") };
    assert_eq!(inner.class(), ErrorClass::Retryable { cause: RetryCause::ConnectionReset });
    assert!(e.is_retryable());
    let e = c.batch_status(&BatchHandle::new(kind, "batch_1"), &policy()).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
}

async fn openai_failed_batch() {
    let sim = sim(fast()).await;
    let c = client(ProviderKind::Openai, &sim);
    let mut md = metadata("sb-fail");
    md.insert("sim_fault".into(), "fail".into());
    let h = c.submit_batch(&items(ProviderKind::Openai, "f", 3), &md, &policy()).await.unwrap();
    let s = wait_terminal(&c, &h).await;
    assert_eq!(s.state, BatchState::Failed);
    assert!(!s.errors.is_empty());
    assert!(c.batch_results(&h, &policy()).await.unwrap().is_empty(), "nothing ran");
    assert!(sim.charges().all().is_empty());
    sim.shutdown().await;
}

macro_rules! suite {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            async fn bounded(f: impl std::future::Future<Output = ()>) {
                tokio::time::timeout(TEST_LIMIT, f).await.expect("test took too long");
            }

            #[tokio::test]
            async fn submit_poll_and_fetch_results_billed_once() {
                bounded(submit_and_fetch($kind)).await;
            }

            #[tokio::test]
            async fn a_whole_batch_expires() {
                bounded(whole_batch_expires($kind)).await;
            }

            #[tokio::test]
            async fn cancel_a_running_batch() {
                bounded(cancel($kind)).await;
            }

            #[tokio::test]
            async fn list_pages_and_reconcile() {
                bounded(list_and_reconcile($kind)).await;
            }

            #[tokio::test]
            async fn limits_are_checked_before_sending_anything() {
                bounded(limits_are_checked_before_sending($kind)).await;
            }

            #[tokio::test]
            async fn a_lost_create_answer_is_unknown_then_reconciled() {
                bounded(lost_create_answer_is_unknown_then_reconciled($kind)).await;
            }

            #[tokio::test]
            async fn a_stalled_create_answer_is_unknown() {
                bounded(stalled_create_is_unknown($kind)).await;
            }

            #[tokio::test]
            async fn a_provider_that_is_down() {
                bounded(provider_down($kind)).await;
            }

            #[tokio::test]
            async fn a_refused_create_is_retried() {
                bounded(refused_create_is_retried($kind)).await;
            }
        }
    };
}

suite!(anthropic, ProviderKind::Anthropic);
suite!(openai, ProviderKind::Openai);

#[tokio::test]
async fn openai_a_batch_that_fails_validation() {
    tokio::time::timeout(TEST_LIMIT, openai_failed_batch()).await.unwrap();
}
