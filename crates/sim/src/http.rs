//! Pieces shared by both providers' handlers: ids, API keys, JSON and SSE responses, latency, and
//! the per-connection kill switch behind the `reset` fault.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use rand::Rng;
use tokio::sync::Notify;

use crate::config::Dist;
use crate::faults::{self, Fault};
use crate::ratelimit::Permit;
use crate::state::AppState;

/// Set by the accept loop on every request; notifying it makes the loop reset the connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnKill(pub Arc<Notify>);

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A random id with a prefix, e.g. `msg_01` + 22 characters, like the providers' ids.
pub(crate) fn new_id(prefix: &str, len: usize) -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    for _ in 0..len {
        let i = rng.random_range(0..BASE62.len());
        s.push(char::from(BASE62.get(i).copied().unwrap_or(b'0')));
    }
    s
}

/// A sortable id: the time prefix makes lists ordered by creation (newest first is a reverse).
pub(crate) fn sortable_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// The key a request authenticates with (Anthropic: `x-api-key` first, then Bearer).
pub(crate) fn api_key(headers: &HeaderMap, x_api_key_too: bool) -> Option<String> {
    if x_api_key_too && let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        let k = k.trim();
        if !k.is_empty() {
            return Some(k.to_string());
        }
    }
    let auth = headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, key) = auth.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then(|| key.to_string())
}

/// A short fingerprint of a key for the charge log; never the key itself.
pub(crate) fn fingerprint(key: &str) -> String {
    let mut h = crate::generate::Fnv::new(0);
    h.write(key.as_bytes());
    format!("key_{:016x}", h.finish())
}

/// The fault a request forces with `x-sim-fault`, `Err` for an unknown value.
pub(crate) fn forced_fault(headers: &HeaderMap) -> Result<Option<Fault>, String> {
    match headers.get(faults::HEADER) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().unwrap_or("");
            Fault::parse(s).map(Some).ok_or_else(|| {
                format!("{}: unknown value {s:?} (429, 500, 529, reset, stall, stall=<duration>, cut, malformed, midstream, unavailable, expire, fail, none)", faults::HEADER)
            })
        }
    }
}

pub(crate) fn header_pairs(
    mut resp: Response,
    headers: impl IntoIterator<Item = (&'static str, String)>,
) -> Response {
    let h = resp.headers_mut();
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
    resp
}

/// A JSON response with extra headers.
pub(crate) fn json_response(
    status: StatusCode,
    body: &serde_json::Value,
    headers: impl IntoIterator<Item = (&'static str, String)>,
) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(bytes))
        .unwrap_or_default();
    header_pairs(resp, headers)
}

/// What a streamed (or deliberately broken) body sends: chunks after delays, then either a
/// clean end or an abort that drops the connection mid-body.
#[derive(Debug, Default)]
pub(crate) struct Script {
    pub steps: Vec<(Duration, Bytes)>,
    pub abort: bool,
    /// Kept alive until the body ends, so a stream holds its concurrency slot.
    pub permit: Option<Permit>,
}

impl Script {
    pub fn push(&mut self, delay: Duration, bytes: impl Into<Bytes>) {
        self.steps.push((delay, bytes.into()));
    }

    pub fn into_body(self) -> Body {
        let Script { steps, abort, permit } = self;
        let stream = futures::stream::unfold(
            (steps.into_iter(), abort, permit),
            |(mut it, abort, permit)| async move {
                match it.next() {
                    Some((delay, bytes)) => {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Some((Ok(bytes), (it, abort, permit)))
                    }
                    None if abort => Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "sim fault: connection cut",
                        )),
                        (it, false, None),
                    )),
                    None => None,
                }
            },
        );
        Body::from_stream(stream)
    }
}

/// A response whose body follows a script.
pub(crate) fn script_response(
    status: StatusCode,
    content_type: &'static str,
    script: Script,
    headers: impl IntoIterator<Item = (&'static str, String)>,
) -> Response {
    let resp = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-cache")
        .body(script.into_body())
        .unwrap_or_default();
    header_pairs(resp, headers)
}

impl AppState {
    /// A draw from a latency distribution.
    pub(crate) fn sample(&self, d: &Dist) -> Duration {
        if let Dist::Fixed(x) = d {
            return *x;
        }
        let (u, z) = {
            let mut rng = self.latency_rng.lock().unwrap_or_else(|e| e.into_inner());
            let u: f64 = rng.random();
            let (u1, u2): (f64, f64) = (rng.random(), rng.random());
            // Box-Muller: a standard normal from two uniforms.
            let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            (u, z)
        };
        d.sample_with(u, z)
    }

    /// Waits `d`, unless the sim is shutting down.
    pub(crate) async fn sleep(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    /// The `reset` fault: asks the accept loop to reset this connection, then never answers. Without
    /// a kill switch (the router driven in-process), the body is aborted instead.
    pub(crate) async fn reset(&self, kill: Option<&ConnKill>) -> Response {
        match kill {
            Some(k) => {
                k.0.notify_one();
                self.shutdown.cancelled().await;
                StatusCode::SERVICE_UNAVAILABLE.into_response_default()
            }
            None => {
                let script = Script { abort: true, ..Script::default() };
                script_response(StatusCode::OK, "application/json", script, [])
            }
        }
    }
}

trait IntoResponseDefault {
    fn into_response_default(self) -> Response;
}

impl IntoResponseDefault for StatusCode {
    fn into_response_default(self) -> Response {
        Response::builder().status(self).body(Body::empty()).unwrap_or_default()
    }
}

/// Milliseconds of a duration, for `openai-processing-ms`.
pub(crate) fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// The first half of a text, cut on a character boundary (for the `cut` and `malformed` faults).
pub(crate) fn first_half(s: &str) -> String {
    let mut i = s.len() / 2;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    s.get(..i).unwrap_or("").to_string()
}

/// Reads a whole request body, `Err` when it is larger than `limit` bytes or cannot be read.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ()> {
    axum::body::to_bytes(body, limit).await.map_err(|_| ())
}
