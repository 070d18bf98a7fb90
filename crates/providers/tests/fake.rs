//! Answers the simulator does not give, from a small axum fake on 127.0.0.1: quota 429s, streams
//! chopped into tiny chunks with `\r\n` endings, streams that go silent or end early, HTTP-date
//! `retry-after`, and a 429 slowing down every caller of the key.
//!
//! The scenario is the first path segment of the base URL (`http://127.0.0.1:PORT/<scenario>`).

// Tests may unwrap and panic (helpers outside #[test] fns included).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use futures::StreamExt;
use sluice_core::config::{Provider, ProviderKind, RateLimits};
use sluice_providers::{
    ApiKey, ChatRequest, Client, ClientOptions, ErrorClass, ErrorKind, Message, PermanentCause,
    RetryCause, RetryPolicy, StreamEvent, TimeoutPhase, Timeouts,
};

const TEST_LIMIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Fake {
    hits: AtomicU32,
}

const ANTHROPIC_STREAM: &str = concat!(
    ": hello\r\n",
    "event: message_start\r\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\r\n",
    "\r\n",
    "event: content_block_start\r\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n",
    "\r\n",
    "event: content_block_delta\r\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Grüße, \"}}\r\n",
    "\r\n",
    "event: ping\r\n",
    "data: {\"type\":\"ping\"}\r\n",
    "\r\n",
    "event: content_block_delta\r\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"日本 ✓\"}}\r\n",
    "\r\n",
    "event: message_delta\r\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\r\n",
    "\r\n",
    "event: message_stop\r\n",
    "data: {\"type\":\"message_stop\"}\r\n",
    "\r\n",
);

const OPENAI_STREAM_NO_DONE: &str = concat!(
    "data: {\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
    "data: {\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
);

/// A server that ignores `stream_options.include_usage`: no usage chunk before `[DONE]`.
const OPENAI_STREAM_NO_USAGE: &str = concat!(
    "data: {\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Twenty-eight bytes of answer\"},\"finish_reason\":null}]}\n\n",
    "data: {\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
);

/// A refusal as OpenAI streams it: `refusal` deltas, then `finish_reason: "stop"`.
const OPENAI_STREAM_REFUSAL: &str = concat!(
    "data: {\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"refusal\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"I can't help \"},\"finish_reason\":null}]}\n\n",
    "data: {\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"with that.\"},\"finish_reason\":null}]}\n\n",
    "data: {\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"model\":\"gpt-x\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6,\"total_tokens\":11}}\n\n",
    "data: [DONE]\n\n",
);

fn json(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
    let mut r = Response::builder().status(status).header("content-type", "application/json");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Body::from(body.to_owned())).unwrap()
}

/// An SSE body sent in `chunk`-byte pieces, `gap` apart.
fn sse(text: &'static str, chunk: usize, gap: Duration) -> Response {
    let pieces: Vec<Vec<u8>> = text.as_bytes().chunks(chunk).map(<[u8]>::to_vec).collect();
    streamed(futures::stream::iter(pieces).then(move |p| async move {
        tokio::time::sleep(gap).await;
        Ok::<_, std::io::Error>(p)
    }))
}

/// A `200` SSE answer whose body is `stream`.
fn streamed<S>(stream: S) -> Response
where
    S: futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static,
{
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("request-id", "req_fake")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn handle(
    State(fake): State<Arc<Fake>>,
    Path(scenario): Path<String>,
    _headers: HeaderMap,
) -> Response {
    let hit = fake.hits.fetch_add(1, Ordering::SeqCst);
    match scenario.as_str() {
        "openai-quota" => json(
            429,
            &[("retry-after", "1")],
            r#"{"error":{"message":"You exceeded your current quota.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
        ),
        "anthropic-spend" => json(
            429,
            &[("retry-after", "1")],
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"spend limit","details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"req_s"}"#,
        ),
        "anthropic-chopped" => sse(ANTHROPIC_STREAM, 3, Duration::ZERO),
        "anthropic-silent" => {
            // Half the stream, then a pause longer than the idle timeout.
            let half = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.len() / 2];
            let pieces = vec![half.as_bytes().to_vec(), b"event: ping\n".to_vec()];
            streamed(futures::stream::iter(pieces.into_iter().enumerate()).then(
                |(i, p)| async move {
                    if i == 1 {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Ok(p)
                },
            ))
        }
        "anthropic-pings" => {
            // A stream that starts, then only pings, more often than the idle timeout (and
            // stops by itself after 10 s).
            let start = ANTHROPIC_STREAM.find("event: content_block_delta").unwrap();
            let ping: &[u8] = b"event: ping\ndata: {\"type\":\"ping\"}\n\n";
            let pieces = std::iter::once(ANTHROPIC_STREAM.as_bytes()[..start].to_vec())
                .chain(std::iter::repeat_n(ping.to_vec(), 100));
            streamed(futures::stream::iter(pieces).then(|p| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(p)
            }))
        }
        "anthropic-early-end" => {
            let cut = ANTHROPIC_STREAM.find("event: message_stop").unwrap();
            sse(&ANTHROPIC_STREAM[..cut], 64, Duration::ZERO)
        }
        // A stream whose headers say the key has no request left for a minute, sent slowly.
        "anthropic-limited-slow" => {
            let mut r = sse(ANTHROPIC_STREAM, 64, Duration::from_millis(30));
            for (k, v) in [
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "0"),
            ] {
                r.headers_mut().insert(k, v.parse().unwrap());
            }
            let reset = (chrono::Utc::now() + chrono::Duration::seconds(60))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            r.headers_mut().insert("anthropic-ratelimit-requests-reset", reset.parse().unwrap());
            r
        }
        "openai-no-done" => sse(OPENAI_STREAM_NO_DONE, 16, Duration::ZERO),
        "openai-no-usage" => sse(OPENAI_STREAM_NO_USAGE, 64, Duration::ZERO),
        "openai-refusal-stream" => sse(OPENAI_STREAM_REFUSAL, 64, Duration::ZERO),
        // A plain completion whatever was asked: also to a stream request.
        "openai-whole" => json(
            200,
            &[],
            r#"{"id":"c","object":"chat.completion","created":1,"model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":"the whole answer"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        ),
        "openai-refusal" => json(
            200,
            &[],
            r#"{"id":"c","object":"chat.completion","created":1,"model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}"#,
        ),
        "http-date" => json(
            503,
            &[("retry-after", "Wed, 21 Oct 2099 07:28:00 GMT")],
            r#"{"error":{"message":"down","type":"server_error","param":null,"code":null}}"#,
        ),
        "retry-after-ms" => json(
            503,
            &[("retry-after-ms", "250"), ("retry-after", "9")],
            r#"{"error":{"message":"down","type":"server_error","param":null,"code":null}}"#,
        ),
        "html-502" => Response::builder()
            .status(502)
            .header("content-type", "text/html")
            .body(Body::from("<html><body>Bad gateway</body></html>"))
            .unwrap(),
        // A status the SDKs retry, and the provider's word against it.
        "no-retry-503" => json(
            503,
            &[("x-should-retry", "false")],
            r#"{"error":{"message":"down for good","type":"server_error","param":null,"code":null}}"#,
        ),
        // A status nobody retries, and the provider's word for it: the second try succeeds
        // (the test calls it second, after one call to `no-retry-503`).
        "retry-400-then-ok" if hit == 1 => json(
            400,
            &[("x-should-retry", "true")],
            r#"{"error":{"message":"try again","type":"invalid_request_error","param":null,"code":null}}"#,
        ),
        "retry-400-then-ok" => json(
            200,
            &[],
            r#"{"id":"c","object":"chat.completion","created":1,"model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
        ),
        // The first call gets a 429 with retry-after 1 s; every later one succeeds.
        "shared-429" if hit == 0 => json(
            429,
            &[("retry-after", "1")],
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        ),
        "shared-429" => json(
            200,
            &[],
            r#"{"id":"c","object":"chat.completion","created":1,"model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
        ),
        _ => json(
            404,
            &[],
            r#"{"error":{"message":"no such scenario","type":"invalid_request_error"}}"#,
        ),
    }
}

async fn start() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/{scenario}/v1/messages", post(handle))
        .route("/{scenario}/v1/chat/completions", post(handle))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), fake)
}

fn client(kind: ProviderKind, base: &str, scenario: &str) -> Client {
    let base_url = match kind {
        ProviderKind::Anthropic => format!("{base}/{scenario}"),
        _ => format!("{base}/{scenario}/v1"),
    };
    let t = Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_secs(2),
        idle: Duration::from_millis(300),
        total: Duration::from_secs(5),
        stream_total: Duration::from_millis(1500),
    };
    Client::with_options(
        &Provider {
            name: scenario.to_owned(),
            kind,
            base_url: base_url.parse().unwrap(),
            api_key_env: None,
            limits: RateLimits::default(),
            batch_api: false,
            batch_turnaround_p50: Duration::from_secs(60),
            batch_turnaround_p95: Duration::from_secs(600),
            batch_enqueued_tokens: None,
        },
        Some(ApiKey::new("fake-key")),
        ClientOptions { standard: t, flex: t },
    )
    .unwrap()
}

fn req() -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        messages: vec![Message::user("hello")],
        max_tokens: 50,
        ..Default::default()
    }
}

fn quick() -> RetryPolicy {
    RetryPolicy { base_delay: Duration::from_millis(5), ..Default::default() }
}

#[tokio::test]
async fn quota_429s_are_permanent_and_not_retried() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (base, fake) = start().await;
        for (kind, scenario) in
            [(ProviderKind::Openai, "openai-quota"), (ProviderKind::Anthropic, "anthropic-spend")]
        {
            let before = fake.hits.load(Ordering::SeqCst);
            let c = client(kind, &base, scenario);
            let e = c.call(&req(), &quick()).await.unwrap_err();
            assert_eq!(e.class(), ErrorClass::Permanent { cause: PermanentCause::QuotaExhausted });
            assert_eq!(fake.hits.load(Ordering::SeqCst) - before, 1, "{scenario}: one attempt");
            // Not a rate limit: the key is not paused.
            assert_eq!(c.limiter().headroom("m").paused_for, Duration::ZERO);
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stream_in_three_byte_pieces_with_crlf() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (base, _) = start().await;
        let c = client(ProviderKind::Anthropic, &base, "anthropic-chopped");
        let mut s = c.stream(&req());
        let mut deltas = Vec::new();
        let mut done = None;
        for _ in 0..1000 {
            match s.next().await {
                Some(Ok(StreamEvent::Delta(t))) => deltas.push(t),
                Some(Ok(StreamEvent::Done(r))) => done = Some(r),
                Some(Err(e)) => panic!("{e}"),
                None => break,
            }
        }
        let done = done.expect("Done");
        assert_eq!(deltas, vec!["Grüße, ".to_owned(), "日本 ✓".to_owned()]);
        assert_eq!(done.text, "Grüße, 日本 ✓");
        assert_eq!(done.usage.input_tokens, 7);
        assert_eq!(done.usage.output_tokens, 9);
        assert_eq!(done.provider_request_id.as_deref(), Some("req_fake"));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn silence_between_chunks_times_out() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (base, _) = start().await;
        let c = client(ProviderKind::Anthropic, &base, "anthropic-silent");
        let mut s = c.stream(&req());
        let mut last = None;
        for _ in 0..100 {
            match s.next().await {
                Some(item) => last = Some(item),
                None => break,
            }
        }
        let e = last.unwrap().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout(TimeoutPhase::Idle));
        assert_eq!(e.class(), ErrorClass::Retryable { cause: RetryCause::Timeout });
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stream_kept_alive_by_pings_alone_ends_at_its_total() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (base, _) = start().await;
        let c = client(ProviderKind::Anthropic, &base, "anthropic-pings");
        let started = std::time::Instant::now();
        let items: Vec<_> = c.stream(&req()).take(1000).collect().await;
        let took = started.elapsed();
        let e = items.last().unwrap().as_ref().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout(TimeoutPhase::Total), "{e}");
        assert_eq!(e.class(), ErrorClass::Retryable { cause: RetryCause::Timeout });
        assert!(e.message.contains("1.5s"), "{e}");
        // The pings kept it past the idle timeout (300 ms), and the total (1.5 s) ended it.
        assert!(took >= Duration::from_millis(1400), "ended after {took:?}");
        assert!(took < Duration::from_secs(5), "ended after {took:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stream_without_its_final_event_is_a_cut() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (base, _) = start().await;
        for (kind, scenario) in [
            (ProviderKind::Anthropic, "anthropic-early-end"),
            (ProviderKind::Openai, "openai-no-done"),
        ] {
            let c = client(kind, &base, scenario);
            let items: Vec<_> = c.stream(&req()).take(100).collect().await;
            assert!(matches!(items.first(), Some(Ok(StreamEvent::Delta(_)))), "{scenario}");
            let e = items.last().unwrap().as_ref().unwrap_err();
            assert_eq!(
                e.class(),
                ErrorClass::Retryable { cause: RetryCause::StreamCut },
                "{scenario}"
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn retry_after_forms_and_non_json_errors() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (base, _) = start().await;
        let once = RetryPolicy { max_attempts: 1, ..Default::default() };
        let c = client(ProviderKind::Openai, &base, "http-date");
        let e = c.call(&req(), &once).await.unwrap_err();
        assert!(e.retry_after.unwrap() > Duration::from_secs(86_400 * 365));
        // Far too long to wait in-request: the default policy gives up at once.
        assert_eq!(RetryPolicy::default().next_delay(0, &e), None);

        let c = client(ProviderKind::Openai, &base, "retry-after-ms");
        let e = c.call(&req(), &once).await.unwrap_err();
        assert_eq!(e.retry_after, Some(Duration::from_millis(250)));

        let c = client(ProviderKind::Anthropic, &base, "html-502");
        let e = c.call(&req(), &once).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Retryable { cause: RetryCause::ServerError });
        assert!(e.message.contains("Bad gateway"), "{}", e.message);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_429_slows_every_caller_of_the_key() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (base, fake) = start().await;
        let c = client(ProviderKind::Openai, &base, "shared-429");
        // Caller A gets the 429 (retry-after 1 s) and retries after it.
        let a = {
            let c = c.clone();
            tokio::spawn(async move { c.call(&req(), &quick()).await })
        };
        let mut paused = Duration::ZERO;
        for _ in 0..400 {
            paused = c.limiter().headroom("m").paused_for;
            if !paused.is_zero() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(paused > Duration::from_millis(500), "A's 429 paused the key: {paused:?}");
        // Caller B never saw the 429, yet waits out the pause before it is sent.
        let start = std::time::Instant::now();
        let b = c.call(&req(), &quick()).await.unwrap();
        assert_eq!(b.text, "ok");
        assert!(start.elapsed() + Duration::from_millis(50) >= paused, "{:?}", start.elapsed());
        assert_eq!(a.await.unwrap().unwrap().text, "ok");
        assert_eq!(fake.hits.load(Ordering::SeqCst), 3);
    })
    .await
    .unwrap();
}

/// A server that reports no usage (one that ignores `include_usage`, a proxy that strips it):
/// the call is counted at sluice's estimate, not as free, so that the ledger, the budget and the
/// rate limiter still see what it cost.
#[tokio::test]
async fn an_answer_without_usage_is_counted_at_the_estimate_not_as_free() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (base, _) = start().await;
        let c = client(ProviderKind::Openai, &base, "openai-no-usage");
        let r = c.call_streaming(&req(), &quick(), |_| {}).await.unwrap();
        assert_eq!(r.text, "Twenty-eight bytes of answer");
        assert!(r.usage.estimated);
        assert_eq!(r.usage.input_tokens, req().estimate().input_tokens);
        assert_eq!(r.usage.output_tokens, 8, "28 bytes at 3.5 bytes a token");
    })
    .await
    .unwrap();
}

/// A stream request answered with the whole completion as JSON (an OpenAI-compatible server
/// that ignores `stream: true`) is that answer: taken once, not read as a cut stream and paid
/// for again on every retry.
#[tokio::test]
async fn a_stream_request_answered_whole_is_taken_not_retried() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (base, fake) = start().await;
        let c = client(ProviderKind::Openai, &base, "openai-whole");
        let mut deltas = String::new();
        let r = c.call_streaming(&req(), &quick(), |d| deltas.push_str(d)).await.unwrap();
        assert_eq!((r.text.as_str(), deltas.as_str()), ("the whole answer", "the whole answer"));
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (3, 4));
        assert!(!r.usage.estimated);
        assert_eq!(fake.hits.load(Ordering::SeqCst), 1, "one call, paid once");
    })
    .await
    .unwrap();
}

/// OpenAI ends a refusal with `finish_reason: "stop"` and puts its words in `refusal`: it is a
/// refusal with those words, not an empty natural end, streamed or not.
#[tokio::test]
async fn a_refusal_is_a_refusal_with_its_words() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (base, _) = start().await;
        let c = client(ProviderKind::Openai, &base, "openai-refusal");
        let r = c.call(&req(), &quick()).await.unwrap();
        assert_eq!(r.stop_reason, sluice_providers::StopReason::Refusal);
        assert_eq!(r.text, "I can't help with that.");
        let c = client(ProviderKind::Openai, &base, "openai-refusal-stream");
        let r = c.call_streaming(&req(), &quick(), |_| {}).await.unwrap();
        assert_eq!(r.stop_reason, sluice_providers::StopReason::Refusal);
        assert_eq!(r.text, "I can't help with that.");
        assert_eq!(r.usage.output_tokens, 6);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_providers_word_on_retrying_comes_before_the_status() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (base, fake) = start().await;
        let c = client(ProviderKind::Openai, &base, "no-retry-503");
        let e = c.call(&req(), &quick()).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Permanent { cause: PermanentCause::NotRetryable });
        assert_eq!(fake.hits.load(Ordering::SeqCst), 1, "a 503 marked x-should-retry: false");

        let before = fake.hits.load(Ordering::SeqCst);
        let c = client(ProviderKind::Openai, &base, "retry-400-then-ok");
        let r = c.call(&req(), &quick()).await.unwrap();
        assert_eq!(r.text, "ok");
        assert_eq!(
            fake.hits.load(Ordering::SeqCst) - before,
            2,
            "a 400 marked x-should-retry: true"
        );
    })
    .await
    .unwrap();
}

/// A stream's rate-limit headers tighten the key as soon as the answer opens, not when the
/// stream ends: every other caller of the key sees them during a long generation.
#[tokio::test]
async fn a_streams_rate_limit_headers_count_from_its_first_token() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (base, _) = start().await;
        let c = client(ProviderKind::Anthropic, &base, "anthropic-limited-slow");
        let mut at_first_delta = None;
        let limiter = Arc::clone(c.limiter());
        let r = c
            .call_streaming(&req(), &quick(), |_| {
                if at_first_delta.is_none() {
                    at_first_delta = Some(limiter.headroom("m").requests);
                }
            })
            .await
            .unwrap();
        assert_eq!(r.text, "Grüße, 日本 ✓");
        let level =
            at_first_delta.unwrap().expect("the headers' limit is known by the first token");
        assert!(level < 1.0, "{level} requests left by the headers' account");
    })
    .await
    .unwrap();
}
