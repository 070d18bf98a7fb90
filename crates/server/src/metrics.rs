//! Metric names, in one place with their help text (Restate's pattern), and the exporter.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const INGEST_REQUESTS: &str = "sluice_ingest_requests_total";
pub const INGEST_EVENTS: &str = "sluice_ingest_events_total";
pub const INGEST_TASKS: &str = "sluice_ingest_tasks_total";
pub const INGEST_REQUEST_SECONDS: &str = "sluice_ingest_request_seconds";
pub const INGEST_COMMIT_SECONDS: &str = "sluice_ingest_commit_seconds";
pub const INGEST_GROUP_SIZE: &str = "sluice_ingest_group_size";
pub const HOOK_DELIVERIES: &str = "sluice_hook_deliveries_total";
pub const INGEST_HANDOFFS: &str = "sluice_ingest_stream_handoffs_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (later calls share it) and returns its handle.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets =
                [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
            let handle =
                PrometheusBuilder::new().set_buckets(&buckets).ok()?.install_recorder().ok()?;
            describe();
            start_upkeep(handle.clone());
            Some(handle)
        })
        .clone()
}

/// How often the recorder's histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps every histogram sample until it is drained into the buckets, which only a
/// scrape of `/metrics` or an upkeep does: a `sluice serve` that nobody scrapes grew by every
/// request's samples, without bound. A thread of its own (not a runtime task: the recorder may be
/// installed before the runtime starts, and outlives any one runtime) drains them on a timer, as
/// the exporter's own `install` would with its HTTP listener.
fn start_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new().name("sluice-metrics".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        }
    });
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histogram samples will accumulate until /metrics is scraped");
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(INGEST_REQUESTS, "Ingest requests by HTTP status.");
    describe_counter!(INGEST_EVENTS, "Events by outcome: stored, replayed.");
    describe_counter!(INGEST_TASKS, "Tasks created, by workload and lane.");
    describe_histogram!(
        INGEST_REQUEST_SECONDS,
        Unit::Seconds,
        "Ingest request latency, receipt to durable acknowledgement."
    );
    describe_histogram!(INGEST_COMMIT_SECONDS, Unit::Seconds, "Duration of one group commit.");
    describe_histogram!(INGEST_GROUP_SIZE, Unit::Count, "Requests sharing one group commit.");
    describe_counter!(HOOK_DELIVERIES, "Webhook deliveries by source and outcome.");
    describe_counter!(
        INGEST_HANDOFFS,
        "Stream and flex tasks at ingest: handed (started at once by the executor) or queued (no free call slot, or older tasks waiting)."
    );
}
