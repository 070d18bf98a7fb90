//! The schedulers that turn stored tasks into provider calls and results.
//!
//! - [`executor`]: the stream executor. It takes `stream` and `flex` tasks from ingest as they are
//!   stored (already claimed, through [`executor::Handoff`]) while it has free call slots, and
//!   otherwise claims them from the store earliest deadline first, under leases (renewed while a
//!   call runs); renders their prompts, calls the provider through its rate limiter and retry
//!   policy, forwards tokens to [`hub`] as they arrive, and stores results in groups with their
//!   ledger lines, releasing the tasks that run `after` them. A refused flex call is retried in
//!   flex while the deadline allows, then falls back to stream.
//! - [`hub`]: live token streams of running tasks, for `GET /v1/tasks/{id}/stream`: late watchers
//!   first get what was already produced, many may watch one task.
//! - [`sinks`]: delivery of results to signed webhooks (Standard Webhooks), JSONL files and
//!   stdout, retried with backoff, every attempt recorded.
//! - [`budget`]: the daily caps — demote or hold low-urgency work past a soft cap, send nothing past
//!   the hard one.
//! - [`turnaround`]: batch turnaround learned from the batches that ended, replacing the prior.
//! - [`metrics`]: metric names and help texts.
//!
//! - [`batcher`]: the batch path — assembler, submitter (record before submit), poller,
//!   reconciliation after a crash or a lost create answer, and the deadline guard.

pub mod batcher;
pub mod budget;
pub mod executor;
pub mod hub;
pub mod metrics;
pub mod sinks;
pub mod turnaround;

pub use sinks::Deliverer;

pub use batcher::{Batcher, BatcherOptions};
pub use executor::{Executor, ExecutorOptions};
pub use hub::Hub;
pub use turnaround::Turnarounds;

/// Milliseconds since the Unix epoch: the store's clock.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A store instant as RFC 3339, as templates and deliveries show it.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod test_support {
    use sluice_store::{BatchRecord, Lease, Store};

    /// A fresh SQLite store, in a folder that lives as long as the returned guard.
    pub(crate) async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::open(&url, sluice_store::SqliteDurability::Normal).await.expect("store");
        (dir, store)
    }

    /// Records an open OpenAI batch, with nothing in it, that may cost up to `reserved_nanousd`.
    pub(crate) async fn open_batch(store: &Store, id: &str, reserved_nanousd: i64) {
        let open = BatchRecord {
            id: id.into(),
            provider: "openai".into(),
            model: "gpt-5-mini".into(),
            state: "submitting".into(),
            provider_batch_id: None,
            item_count: 0,
            bytes: 0,
            created_at: crate::now_ms(),
            submitted_at: None,
            ended_at: None,
            last_error: None,
            reserved_nanousd,
        };
        let lease = Lease { owner: "test".into(), expires_at: 0 };
        assert!(store.record_batch(&open, &[], &lease).await.expect("record"));
    }

    /// One OpenAI workload in the batch lane, for the unit tests of the executor and the batcher.
    pub(crate) fn batch_config() -> sluice_core::Config {
        sluice_core::Config::parse(
            r#"
[providers.openai]
kind = "openai"

[[workloads]]
name = "cleanup"
on = "record.imported"
provider = "openai"
model = "gpt-5-mini"
max_tokens = 60
prompt = "{{ payload.x }}"
lane = "batch"
needed_within = "24h"
"#,
            "unit.toml",
        )
        .expect("config")
    }
}
