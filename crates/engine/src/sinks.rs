//! Delivering results: signed webhooks (Standard Webhooks, the scheme sluice verifies inbound),
//! JSONL files and stdout. At least once: a delivery is retried with backoff until it succeeds or
//! runs out of attempts, and every attempt is recorded; receivers deduplicate on `webhook-id` (the
//! delivery id), which files carry as `delivery_id`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_core::Config;
use sluice_core::config::Deliver;
use sluice_store::{DeliveryOutcome, DueDelivery, Store};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, watch};

use crate::metrics as m;
use crate::{now_ms, rfc3339};

/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: i64 = 8;

/// How long a stopping deliverer keeps delivering what is due (one webhook's timeout).
const STOP_DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Deliverer {
    store: Store,
    config: Arc<Config>,
    http: reqwest::Client,
    /// Webhook signing keys by workload name, from each sink's `secret_env`.
    keys: Arc<std::collections::HashMap<String, Vec<u8>>>,
    /// One writer at a time per process, so JSONL lines never interleave.
    files: Arc<Mutex<()>>,
    poll: Duration,
}

impl Deliverer {
    pub fn new(
        store: Store,
        config: Arc<Config>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Deliverer {
        let mut keys = std::collections::HashMap::new();
        for w in &config.workloads {
            if let Deliver::Webhook { secret_env: Some(var), .. } = &w.deliver {
                match env(var).and_then(|s| sluice_core::webhook::decode_secret(&s)) {
                    Some(k) => {
                        keys.insert(w.name.clone(), k);
                    }
                    None => {
                        tracing::warn!(workload = %w.name, env = %var, "webhook secret not set, empty or not base64: deliveries go unsigned")
                    }
                }
            }
        }
        // reqwest is built without a default TLS provider; ring is the one sluice uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Deliverer {
            store,
            config,
            http,
            keys: Arc::new(keys),
            files: Arc::default(),
            poll: Duration::from_millis(200),
        }
    }

    /// Delivers what is due until `stop` turns true; then delivers what is due by then (for at
    /// most [`STOP_DRAIN`]) and returns: the results a stopping service has just stored reach
    /// their sinks now, not at its next start. What fails or is not due yet stays stored.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut drain_until = None;
        loop {
            if drain_until.is_none() && *stop.borrow() {
                drain_until = Some(tokio::time::Instant::now() + STOP_DRAIN);
            }
            if drain_until.is_some_and(|end| tokio::time::Instant::now() >= end) {
                return;
            }
            match self.store.claim_deliveries(now_ms(), 60_000, 32).await {
                Ok(due) if !due.is_empty() => {
                    let jobs = due.into_iter().map(|d| {
                        let me = self.clone();
                        async move { me.deliver(d).await }
                    });
                    futures::future::join_all(jobs).await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot claim deliveries"),
            }
            if drain_until.is_some() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn deliver(&self, d: DueDelivery) {
        let started = now_ms();
        let (kind, result) = match self.body(&d).await {
            Err(e) => ("unknown", Err((None, e))),
            Ok((workload, body)) => match d.sink.split_once(':') {
                Some(("webhook", url)) => {
                    ("webhook", self.webhook(&d, &workload, url, &body).await)
                }
                Some(("file", path)) => ("file", self.file(path, &body).await),
                _ if d.sink == "stdout" => ("stdout", stdout(&body).await),
                _ => ("unknown", Err((None, format!("unknown sink {:?}", d.sink)))),
            },
        };
        let outcome = match result {
            Ok(status) => DeliveryOutcome::Delivered { status },
            Err((status, error)) if d.attempts < MAX_ATTEMPTS => {
                let backoff = Duration::from_secs(1u64 << d.attempts.clamp(0, 9))
                    .min(Duration::from_secs(600));
                DeliveryOutcome::Retry {
                    status,
                    error,
                    next_attempt_at: now_ms()
                        + i64::try_from(backoff.as_millis()).unwrap_or(600_000),
                }
            }
            Err((status, error)) => DeliveryOutcome::Failed { status, error },
        };
        let label = match &outcome {
            DeliveryOutcome::Delivered { .. } => "delivered",
            DeliveryOutcome::Retry { .. } => "retry",
            DeliveryOutcome::Failed { .. } => "failed",
        };
        metrics::counter!(m::DELIVERIES, "sink" => kind, "outcome" => label).increment(1);
        let attempt_id = format!("dat_{}", uuid::Uuid::now_v7().simple());
        if let Err(e) = self.store.finish_delivery(&d, &attempt_id, started, &outcome).await {
            tracing::error!(error = %e, delivery = %d.id, "cannot record a delivery attempt");
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
    ) -> Result<Option<i64>, (Option<i64>, String)> {
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
            Ok(r) => Err((
                Some(i64::from(r.status().as_u16())),
                format!("the receiver answered {}", r.status()),
            )),
            Err(e) => Err((None, format!("cannot reach the receiver: {e}"))),
        }
    }

    async fn file(&self, path: &str, body: &[u8]) -> Result<Option<i64>, (Option<i64>, String)> {
        let _one_writer = self.files.lock().await;
        let write = async {
            if let Some(dir) =
                std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty())
            {
                tokio::fs::create_dir_all(dir).await?;
            }
            let mut f = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
            let mut line = body.to_vec();
            line.push(b'\n');
            f.write_all(&line).await?;
            f.flush().await
        };
        write.await.map(|()| None).map_err(|e| (None, format!("cannot append to {path}: {e}")))
    }
}

async fn stdout(body: &[u8]) -> Result<Option<i64>, (Option<i64>, String)> {
    let mut line = body.to_vec();
    line.push(b'\n');
    let mut out = tokio::io::stdout();
    out.write_all(&line).await.map_err(|e| (None, e.to_string()))?;
    out.flush().await.map_err(|e| (None, e.to_string()))?;
    Ok(None)
}
