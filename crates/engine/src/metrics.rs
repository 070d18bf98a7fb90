//! Metric names, with their help texts in one place.

pub const TASKS_STARTED: &str = "sluice_tasks_started_total";
pub const TASKS_FINISHED: &str = "sluice_tasks_finished_total";
pub const TASKS_FAILED: &str = "sluice_tasks_failed_total";
pub const TASK_RETRIES: &str = "sluice_task_retries_total";
pub const TIME_TO_FIRST_TOKEN: &str = "sluice_time_to_first_token_seconds";
pub const TASK_LATENCY: &str = "sluice_task_latency_seconds";
/// In micro-dollars, and named so: the counter takes whole numbers, and a name that said dollars
/// showed a dashboard a million times the spend. Counted with [`spent`].
pub const SPENT_MICROUSD: &str = "sluice_spent_microusd_total";
pub const LIMITER_HEADROOM: &str = "sluice_rate_limiter_headroom";
pub const LEASES_LOST: &str = "sluice_leases_lost_total";
pub const DELIVERIES: &str = "sluice_deliveries_total";

pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(TASKS_STARTED, "Task attempts started, by lane and workload.");
    describe_counter!(TASKS_FINISHED, "Tasks finished with a result, by lane and workload.");
    describe_counter!(TASKS_FAILED, "Tasks failed for good, by lane, workload and cause.");
    describe_counter!(TASK_RETRIES, "Task attempts put back for a later try, by cause.");
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "From claim to the first token, by lane and workload."
    );
    describe_histogram!(
        TASK_LATENCY,
        Unit::Seconds,
        "From the event's arrival to the stored result, by lane and workload."
    );
    describe_counter!(
        SPENT_MICROUSD,
        "Spend in micro-dollars (1e-6 USD), by lane and workload: streamed and flex calls as they end, batch lines as their batch ends."
    );
    describe_gauge!(
        LIMITER_HEADROOM,
        "What the rate limiter of a provider key would admit now, by provider and dimension."
    );
    describe_counter!(LEASES_LOST, "Results dropped because another worker had taken the task.");
    describe_counter!(DELIVERIES, "Delivery attempts by sink kind and outcome.");
}

/// Counts what a call or a batch line cost, from the ledger's nano-dollars.
pub fn spent(lane: &str, workload: &str, cost_nanousd: i64) {
    let labels = [("lane", lane.to_owned()), ("workload", workload.to_owned())];
    metrics::counter!(SPENT_MICROUSD, &labels)
        .increment(u64::try_from(cost_nanousd / 1000).unwrap_or(0));
}
