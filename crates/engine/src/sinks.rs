//! Delivering results: signed webhooks (Standard Webhooks, the scheme sluice verifies inbound),
//! JSONL files and stdout. At least once: a delivery is retried on the Standard Webhooks schedule
//! (over about a day and a half) until it succeeds or runs out of attempts, and every attempt is
//! recorded; receivers deduplicate on `webhook-id` (the delivery id), which files carry as
//! `delivery_id`.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use serde_json::json;
use sluice_core::Config;
use sluice_core::config::Deliver;
use sluice_store::{DeliveryOutcome, DueDelivery, Store};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;

use crate::executor::SetupError;
use crate::metrics as m;
use crate::{now_ms, rfc3339};

/// How long a stopping deliverer keeps delivering what is due (one webhook's timeout).
const STOP_DRAIN: Duration = Duration::from_secs(10);

/// A claimed delivery is this deliverer's for this long; one it has not finished by then (the
/// process died) is claimed again, by this instance or another.
const CLAIM: Duration = Duration::from_secs(60);

/// The longest `retry-after` a receiver may ask for: the schedule's longest wait.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 3600);

#[derive(Debug, Clone)]
pub struct DelivererOptions {
    /// The wait after each failed attempt, the first failure's first; a delivery that fails once
    /// more after the last is failed for good. The default is the Standard Webhooks schedule:
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (eight attempts over about 27 hours), each
    /// wait drawn within ±20% so that the deliveries held up by a receiver's outage do not all
    /// come back at the same instant.
    pub retry_delays: Vec<Duration>,
    /// How long one webhook call or stdout write may take.
    pub attempt_timeout: Duration,
    /// Deliveries under way at once: a slow receiver holds one slot per delivery to it, not the
    /// deliveries to every other sink.
    pub in_flight: usize,
    /// How often the store is asked for deliveries that came due.
    pub poll: Duration,
}

impl Default for DelivererOptions {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        DelivererOptions {
            retry_delays: vec![
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(300),
                minutes(600),
                minutes(600),
            ],
            attempt_timeout: Duration::from_secs(10),
            in_flight: 32,
            poll: Duration::from_millis(200),
        }
    }
}

/// Why an attempt did not deliver.
struct Failure {
    status: Option<i64>,
    error: String,
    /// The receiver's `retry-after`, in seconds.
    retry_after: Option<Duration>,
    /// No retry would deliver it.
    for_good: bool,
}

impl Failure {
    fn new(error: String) -> Failure {
        Failure { status: None, error, retry_after: None, for_good: false }
    }
}

#[derive(Clone)]
pub struct Deliverer {
    store: Store,
    config: Arc<Config>,
    http: reqwest::Client,
    /// Webhook signing keys by workload name, from each sink's `secret_env`.
    keys: Arc<std::collections::HashMap<String, Vec<u8>>>,
    /// Workloads whose `secret_env` is not set (or not a secret), with its name: their
    /// deliveries wait, retried, rather than go out unsigned.
    unsigned: Arc<std::collections::HashMap<String, String>>,
    /// One writer at a time per process, so JSONL lines never interleave.
    files: Arc<Mutex<()>>,
    opts: DelivererOptions,
}

impl std::fmt::Debug for Deliverer {
    // Without the signing keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("signed_workloads", &self.keys.keys().collect::<Vec<_>>())
            .field("unsigned", &self.unsigned)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Deliverer {
    /// A webhook sink whose `secret_env` is not set (or not a Standard Webhooks secret) is said
    /// at start, and its deliveries are not sent: its receiver expects them signed, and unsigned
    /// ones would be refused there or, worse, accepted unverified. They are retried on the
    /// schedule, so that they go out once a restart brings the secret.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        env: impl Fn(&str) -> Option<String>,
        opts: DelivererOptions,
    ) -> Result<Deliverer, SetupError> {
        let mut keys = std::collections::HashMap::new();
        let mut unsigned = std::collections::HashMap::new();
        for w in &config.workloads {
            if let Deliver::Webhook { secret_env: Some(var), .. } = &w.deliver {
                match env(var).and_then(|s| sluice_core::webhook::decode_secret(&s)) {
                    Some(k) => {
                        keys.insert(w.name.clone(), k);
                    }
                    None => {
                        tracing::error!(workload = %w.name, env = %var, "webhook signing secret not set, empty or not a Standard Webhooks secret (whsec_…): this workload's deliveries are held, not sent unsigned");
                        unsigned.insert(w.name.clone(), var.clone());
                    }
                }
            }
        }
        // reqwest is built without a default TLS provider; ring is the one sluice uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(opts.attempt_timeout)
            .tcp_nodelay(true)
            // A redirect is the receiver's answer, not a delivery: reqwest would follow a 302
            // with a GET that carries no body and count its 200 as delivered.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SetupError::Client {
                provider: "webhooks".into(),
                message: e.to_string(),
            })?;
        Ok(Deliverer {
            store,
            config,
            http,
            keys: Arc::new(keys),
            unsigned: Arc::new(unsigned),
            files: Arc::default(),
            opts,
        })
    }

    /// Delivers what is due until `stop` turns true; then delivers what is due by then (for at
    /// most [`STOP_DRAIN`]) and returns: the results a stopping service has just stored reach
    /// their sinks now, not at its next start. What fails or is not due yet stays stored, and a
    /// delivery cut short by the end of the drain is claimed again after [`CLAIM`].
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let slots = self.opts.in_flight.max(1);
        let mut running = JoinSet::new();
        let mut stopping = false;
        let mut drain_until = None;
        loop {
            if stopping || *stop.borrow() {
                stopping = true;
                drain_until.get_or_insert_with(|| tokio::time::Instant::now() + STOP_DRAIN);
            }
            if drain_until.is_some_and(|end| tokio::time::Instant::now() >= end) {
                running.abort_all();
                return;
            }
            let free = slots.saturating_sub(running.len());
            if free > 0 {
                let lease = i64::try_from(CLAIM.as_millis()).unwrap_or(i64::MAX);
                match self.store.claim_deliveries(now_ms(), lease, free as i64).await {
                    Ok(due) => {
                        for d in due {
                            let me = self.clone();
                            running.spawn(async move { me.deliver(d).await });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot claim deliveries"),
                }
            }
            if stopping && running.is_empty() {
                return;
            }
            let wait = match drain_until {
                Some(end) => end.saturating_duration_since(tokio::time::Instant::now()),
                None => self.opts.poll,
            };
            tokio::select! {
                // A slot came free: claim what is due for it.
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = tokio::time::sleep(wait.min(self.opts.poll)) => {}
                changed = stop.changed(), if !stopping => {
                    // A dropped sender is a stop too: nothing will ever say otherwise.
                    if changed.is_err() {
                        stopping = true;
                    }
                }
            }
        }
    }

    async fn deliver(&self, d: DueDelivery) {
        let started = now_ms();
        let (kind, result) = match self.body(&d).await {
            Err(e) => ("unknown", Err(Failure::new(e))),
            Ok((workload, body)) => match d.sink.split_once(':') {
                Some(("webhook", url)) => {
                    ("webhook", self.webhook(&d, &workload, url, &body).await)
                }
                Some(("file", path)) => ("file", self.file(path, &body).await),
                _ if d.sink == "stdout" => ("stdout", self.stdout(&body).await),
                _ => ("unknown", Err(Failure::new(format!("unknown sink {:?}", d.sink)))),
            },
        };
        let outcome = match result {
            Ok(status) => DeliveryOutcome::Delivered { status },
            Err(f) => {
                // `round` counts this one: the first failure waits the first delay.
                let nth = usize::try_from(d.round.saturating_sub(1)).unwrap_or(0);
                let next = if f.for_good { None } else { self.opts.retry_delays.get(nth) };
                match next {
                    Some(delay) => {
                        let drawn = delay.mul_f64(rand::rng().random_range(0.8..=1.2));
                        let wait =
                            drawn.max(f.retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
                        tracing::warn!(delivery = %d.id, sink = %sluice_store::shown_sink(&d.sink), attempt = d.attempts, error = %f.error, retry_in = ?wait, "a delivery failed; it is retried");
                        DeliveryOutcome::Retry {
                            status: f.status,
                            error: f.error,
                            next_attempt_at: now_ms().saturating_add(
                                i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
                            ),
                        }
                    }
                    None => {
                        tracing::error!(delivery = %d.id, task = %d.task_id, sink = %sluice_store::shown_sink(&d.sink), attempts = d.attempts, error = %f.error, "a delivery failed for good");
                        DeliveryOutcome::Failed { status: f.status, error: f.error }
                    }
                }
            }
        };
        let label = match &outcome {
            DeliveryOutcome::Delivered { .. } => "delivered",
            DeliveryOutcome::Retry { .. } => "retry",
            DeliveryOutcome::Failed { .. } => "failed",
        };
        metrics::counter!(m::DELIVERIES, "sink" => kind, "outcome" => label).increment(1);
        let attempt_id = format!("dat_{}", uuid::Uuid::now_v7().simple());
        match self.store.finish_delivery(&d, &attempt_id, started, &outcome).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(delivery = %d.id, "a delivery's claim ran out before its attempt ended; its new owner's outcome stands")
            }
            Err(e) => {
                tracing::error!(error = %e, delivery = %d.id, "cannot record a delivery attempt")
            }
        }
    }

    /// The JSON a sink receives: the task, its result and what it cost.
    async fn body(&self, d: &DueDelivery) -> Result<(String, Vec<u8>), String> {
        let detail = self
            .store
            .task(&d.task_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the task is gone")?;
        let result = detail.result.ok_or("the task has no result")?;
        let t = &detail.task;
        let output_json = self
            .config
            .workload(&t.workload)
            .filter(|w| w.output == sluice_core::config::OutputFormat::Json)
            .and_then(|_| serde_json::from_str::<serde_json::Value>(&result.output).ok());
        let body = json!({
            "type": "task.succeeded",
            "delivery_id": d.id,
            "task_id": t.id,
            "event_id": t.event_id,
            "workload": t.workload,
            "lane": t.lane,
            "output": result.output,
            "output_json": output_json,
            "stop_reason": result.stop_reason,
            "usage": {
                "input_tokens": result.input_tokens,
                "cached_input_tokens": result.cached_input_tokens,
                "output_tokens": result.output_tokens,
            },
            "cost_usd": detail.cost_nanousd as f64 / 1e9,
            "deadline": rfc3339(t.deadline),
            "finished_at": rfc3339(result.created_at),
        });
        Ok((t.workload.clone(), serde_json::to_vec(&body).map_err(|e| e.to_string())?))
    }

    async fn webhook(
        &self,
        d: &DueDelivery,
        workload: &str,
        url: &str,
        body: &[u8],
    ) -> Result<Option<i64>, Failure> {
        if let Some(var) = self.unsigned.get(workload) {
            return Err(Failure::new(format!(
                "not sent: its signing secret ({var}) is not set, empty or not a Standard Webhooks secret"
            )));
        }
        let ts = chrono::Utc::now().timestamp();
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", ts.to_string());
        if let Some(key) = self.keys.get(workload) {
            req = req.header("webhook-signature", sluice_core::webhook::sign(key, &d.id, ts, body));
        }
        match req.body(body.to_vec()).send().await {
            Ok(r) if r.status().is_success() => Ok(Some(i64::from(r.status().as_u16()))),
            // 410 Gone: the endpoint was removed, and says so (Standard Webhooks: stop sending).
            Ok(r) if r.status() == reqwest::StatusCode::GONE => Err(Failure {
                status: Some(410),
                error: "the receiver answered 410 Gone: the endpoint no longer takes deliveries; not retried".to_owned(),
                retry_after: None,
                for_good: true,
            }),
            Ok(r) => Err(Failure {
                for_good: false,
                status: Some(i64::from(r.status().as_u16())),
                error: format!("the receiver answered {}", r.status()),
                retry_after: r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                    .map(Duration::from_secs),
            }),
            // Without the URL: a receiver's token in its query string stays out of the store.
            Err(e) => Err(Failure::new(format!("cannot reach the receiver: {}", e.without_url()))),
        }
    }

    /// Appends the line and syncs it to disk before the delivery is recorded as done; a write
    /// that fails part-way is cut back off, so that its retry does not follow half a line.
    async fn file(&self, path: &str, body: &[u8]) -> Result<Option<i64>, Failure> {
        let _one_writer = self.files.lock().await;
        let mut line = body.to_vec();
        line.push(b'\n');
        let mut f = async {
            if let Some(dir) =
                std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty())
            {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::OpenOptions::new().create(true).append(true).open(path).await
        }
        .await
        .map_err(|e| Failure::new(format!("cannot open {path}: {e}")))?;
        let before = f.metadata().await.map(|m| m.len()).ok();
        let written = async {
            f.write_all(&line).await?;
            f.flush().await?;
            f.sync_data().await
        }
        .await;
        match written {
            Ok(()) => Ok(None),
            Err(e) => {
                if let Some(len) = before
                    && let Err(cut) = f.set_len(len).await
                {
                    tracing::error!(path, error = %cut, "cannot cut a partly written line back off");
                }
                Err(Failure::new(format!("cannot append to {path}: {e}")))
            }
        }
    }

    async fn stdout(&self, body: &[u8]) -> Result<Option<i64>, Failure> {
        let mut line = body.to_vec();
        line.push(b'\n');
        let write = async {
            let mut out = tokio::io::stdout();
            out.write_all(&line).await?;
            out.flush().await
        };
        // A reader that stopped reading (a paused pipe) holds this delivery, not the others.
        match tokio::time::timeout(self.opts.attempt_timeout, write).await {
            Ok(Ok(())) => Ok(None),
            Ok(Err(e)) => Err(Failure::new(format!("cannot write to stdout: {e}"))),
            Err(_) => Err(Failure::new("stdout is not being read".into())),
        }
    }
}
