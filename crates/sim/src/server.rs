//! The server: routes, the accept loop, and the running-sim handle.
//!
//! The sim runs its own accept loop on hyper rather than `axum::serve` because the `reset` fault
//! needs a per-connection kill switch: a handler notifies it, and the loop closes that socket with
//! `SO_LINGER = 0` so the client sees a real RST. The loop also sets `TCP_NODELAY` on every socket
//! (without it, small chunked responses wait for the client's delayed ACK), and shuts down
//! gracefully: stop accepting, let connections finish their in-flight responses (bounded), done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::charges::{ChargeLog, summarize};
use crate::config::{ConfigError, SimConfig};
use crate::http::{ConnKill, json_response};
use crate::state::AppState;
use crate::{anthropic, openai};

/// How long shutdown waits for open connections before dropping them.
const DRAIN: Duration = Duration::from_secs(5);

/// Why the sim could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
}

/// Entry point: `Sim::start(SimConfig::default(), "127.0.0.1:0").await?`.
#[derive(Debug)]
pub struct Sim;

impl Sim {
    /// Validates the config, binds, and serves in the background until [`RunningSim::shutdown`]
    /// (or until the handle is dropped).
    pub async fn start(
        config: SimConfig,
        addr: impl ToSocketAddrs,
    ) -> Result<RunningSim, SimError> {
        let settings = config.validate()?;
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let base_url = format!("http://{local}");
        let shutdown = CancellationToken::new();
        let state = Arc::new(AppState::new(settings, base_url.clone(), shutdown.clone()));
        let app = router(Arc::clone(&state));
        let task = tokio::spawn(accept_loop(listener, app, shutdown.clone()));
        tracing::info!(%base_url, "sluice sim listening");
        Ok(RunningSim { addr: local, base_url, state, shutdown, task: Some(task) })
    }
}

/// A sim serving in the background.
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    base_url: String,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RunningSim {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://127.0.0.1:PORT`: the Anthropic SDK's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
    /// `http://127.0.0.1:PORT/v1`: the OpenAI SDK's base URL.
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base_url)
    }
    /// The charge log, in process. Batches are brought up to date first, so lines of batches that
    /// have ended are in it even if nobody polled them.
    pub fn charges(&self) -> &ChargeLog {
        advance_batches(&self.state);
        &self.state.charges
    }
    /// Stops accepting, lets open connections finish (at most a few seconds), and returns.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn advance_batches(state: &AppState) {
    let now = Instant::now();
    anthropic::batches::advance_all(state, now);
    openai::batches::advance_all(state, now);
}

/// All routes. Both providers share one port: their paths do not collide.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    use anthropic::{batches as ab, messages};
    use openai::{batches as ob, chat, files};
    Router::new()
        .route("/v1/messages", post(messages::create))
        .route("/v1/messages/count_tokens", post(messages::count))
        .route("/v1/messages/batches", post(ab::create).get(ab::list))
        .route("/v1/messages/batches/{id}", get(ab::retrieve).delete(ab::delete))
        .route("/v1/messages/batches/{id}/cancel", post(ab::cancel))
        .route("/v1/messages/batches/{id}/results", get(ab::results))
        .route("/v1/chat/completions", post(chat::create))
        .route("/v1/files", post(files::upload).get(files::list))
        .route("/v1/files/{id}", get(files::retrieve).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/batches", post(ob::create).get(ob::list))
        .route("/v1/batches/{id}", get(ob::retrieve))
        .route("/v1/batches/{id}/cancel", post(ob::cancel))
        .route("/v1/models", get(models))
        .route("/sim/health", get(health))
        .route("/sim/charges", get(charges).delete(clear_charges))
        .route("/sim/charges/summary", get(summary))
        .fallback(not_found)
        // Bodies are limited per route (32 MB messages, 256 MB batches, 512 MB files) with the
        // providers' own 413 bodies; this outer cap only stops the absurd.
        .layer(DefaultBodyLimit::max(600 * 1024 * 1024))
        .with_state(state)
}

async fn health() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}), [])
}

#[derive(Debug, Deserialize)]
struct ChargeQuery {
    provider: Option<String>,
    model: Option<String>,
    tier: Option<String>,
    batch_id: Option<String>,
    custom_id: Option<String>,
    /// Only charges with `seq` greater than this.
    after_seq: Option<u64>,
}

fn filtered(state: &AppState, q: &ChargeQuery) -> Vec<crate::charges::Charge> {
    advance_batches(state);
    state
        .charges
        .all()
        .into_iter()
        .filter(|c| {
            q.provider.as_deref().is_none_or(|p| c.provider.as_str() == p)
                && q.model.as_deref().is_none_or(|m| c.model == m)
                && q.tier.as_deref().is_none_or(|t| c.tier.as_str() == t)
                && q.batch_id.as_deref().is_none_or(|b| c.batch_id.as_deref() == Some(b))
                && q.custom_id.as_deref().is_none_or(|b| c.custom_id.as_deref() == Some(b))
                && q.after_seq.is_none_or(|s| c.seq > s)
        })
        .collect()
}

/// `GET /sim/charges`: `{"data": [charge, ...]}`, filterable by the query.
async fn charges(State(state): State<Arc<AppState>>, Query(q): Query<ChargeQuery>) -> Response {
    let data = filtered(&state, &q);
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}), [])
}

/// `GET /sim/charges/summary`: totals overall and per (provider, model, tier); with filters, of
/// the listed charges that match.
async fn summary(State(state): State<Arc<AppState>>, Query(q): Query<ChargeQuery>) -> Response {
    let unfiltered = q.provider.is_none()
        && q.model.is_none()
        && q.tier.is_none()
        && q.batch_id.is_none()
        && q.custom_id.is_none()
        && q.after_seq.is_none();
    let s = if unfiltered {
        advance_batches(&state);
        state.charges.summary()
    } else {
        summarize(&filtered(&state, &q))
    };
    json_response(StatusCode::OK, &serde_json::to_value(s).unwrap_or_default(), [])
}

/// `DELETE /sim/charges`: empties the log.
async fn clear_charges(State(state): State<Arc<AppState>>) -> Response {
    state.charges.clear();
    json_response(StatusCode::OK, &json!({"deleted": true}), [])
}

/// Unknown path: the error body of the provider the request looks like.
async fn not_found(headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let path = uri.path().to_string();
    if headers.contains_key("anthropic-version") || headers.contains_key("x-api-key") {
        let e = anthropic::ApiError::not_found(format!("Not found: {path}"));
        anthropic::error_response(&e, &anthropic::request_id(), None)
    } else {
        let e = openai::ApiError::new(
            404,
            "invalid_request_error",
            format!("Invalid URL (POST {path})"),
        );
        openai::error_response(&e, &openai::request_id(), None)
    }
}

async fn accept_loop(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tracker.spawn(serve_connection(stream, app.clone(), shutdown.clone()));
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN:?}; dropping them");
    }
}

async fn serve_connection(stream: TcpStream, app: Router, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    // A duplicate of the socket, kept to reset the connection after hyper owns the stream.
    let Ok(std_stream) = stream.into_std() else { return };
    let dup = std_stream.try_clone().ok();
    let Ok(stream) = TcpStream::from_std(std_stream) else { return };
    let kill = Arc::new(Notify::new());
    let kill_for_requests = Arc::clone(&kill);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnKill(Arc::clone(&kill_for_requests)));
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = kill.notified() => {
            if let Some(d) = &dup {
                let _ = socket2::SockRef::from(d).set_linger(Some(Duration::ZERO));
            }
            // Dropping the connection closes the last handles: with linger 0 that is an RST.
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn.as_mut()).await;
        }
    }
}

/// `GET /v1/models`: Anthropic's list when the request carries `anthropic-version`, else
/// OpenAI's. Both list the sim's price table.
async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    use crate::models::{MODELS, Provider};
    if headers.contains_key("anthropic-version") {
        let caller = match anthropic::authenticate(&state, &headers) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let data: Vec<serde_json::Value> = MODELS
            .iter()
            .filter(|m| m.provider == Provider::Anthropic)
            .map(|m| json!({"type": "model", "id": m.id, "display_name": m.id, "created_at": "2026-01-01T00:00:00Z"}))
            .collect();
        let body = json!({
            "data": data,
            "has_more": false,
            "first_id": data.first().map(|m| m["id"].clone()),
            "last_id": data.last().map(|m| m["id"].clone()),
        });
        json_response(
            StatusCode::OK,
            &body,
            anthropic::headers(&caller.request_id, Some(&state.limiter.snapshot(&caller.key))),
        )
    } else {
        let caller = match openai::authenticate(&state, &headers) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let data: Vec<serde_json::Value> = MODELS
            .iter()
            .filter(|m| m.provider == Provider::Openai)
            .map(|m| json!({"id": m.id, "object": "model", "created": 1_767_225_600, "owned_by": "openai"}))
            .collect();
        json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": data}),
            openai::headers(&caller.request_id, Some(&state.limiter.snapshot(&caller.key))),
        )
    }
}
