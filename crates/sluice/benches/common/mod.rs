//! What the stream benches share: one streamed workload on the sim's Anthropic API.

pub const MAX_TOKENS: u32 = 16;
pub const MODEL: &str = "claude-haiku-5-5";

/// The config of the benches' sluice: `bench.asked` events, each one streamed call to `sim`.
pub fn config(sim: &str) -> String {
    format!(
        r#"
[providers.anthropic]
kind = "anthropic"
base_url = "{sim}"

[[workloads]]
name = "answer"
on = "bench.asked"
provider = "anthropic"
model = "{MODEL}"
max_tokens = {MAX_TOKENS}
prompt = "Answer: {{{{ payload.question }}}}"
lane = "stream"
"#
    )
}

/// The executor's options as `sluice serve` sizes them for `config`, or with
/// `SLUICE_BENCH_SLOTS` call slots, to compare.
pub fn executor_options(config: &sluice_core::Config) -> sluice_engine::ExecutorOptions {
    let mut opts = sluice_engine::ExecutorOptions::for_config(config);
    if let Some(n) = std::env::var("SLUICE_BENCH_SLOTS").ok().and_then(|v| v.parse().ok()) {
        opts.max_in_flight = n;
    }
    opts
}

/// The sim of the stream benches: zero latency, or its first token after
/// `SLUICE_BENCH_SIM_TTFT_MS` milliseconds (a real model takes hundreds), to see what call
/// slots, not CPU, allow, or how much of sluice's own time hides behind a provider's.
pub fn sim_config() -> sluice_sim::SimConfig {
    let mut sim = sluice_sim::SimConfig::instant();
    let first = std::time::Duration::from_millis(sim_first_token_ms());
    sim.latency.time_to_first_token = sluice_sim::Dist::Fixed(first);
    sim
}

/// `SLUICE_BENCH_SIM_TTFT_MS`, or 0.
pub fn sim_first_token_ms() -> u64 {
    std::env::var("SLUICE_BENCH_SIM_TTFT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}
