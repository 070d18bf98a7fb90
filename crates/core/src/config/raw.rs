//! `sluice.toml` exactly as typed: serde structs that mirror the file, with unknown keys refused.
//! Nothing here is checked beyond its type; [`super::validate`] turns it into a [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `UTC` (default) or a fixed offset such as `+02:00`: the clock of `needed_by` and off-peak
    /// windows.
    pub timezone: Option<String>,
    /// Dollars a day below which batching is not worth its delay.
    pub min_daily_savings: Option<f64>,
    #[serde(default)]
    pub batch: RawBatch,
    #[serde(default)]
    pub budget: RawBudget,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub workloads: Vec<RawWorkload>,
    /// Signed webhooks from other systems, by source name (`POST /v1/hooks/NAME`).
    #[serde(default)]
    pub hooks: BTreeMap<String, RawHook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    /// Environment variable holding the signing secret (Standard Webhooks, `whsec_…`).
    pub secret_env: String,
    /// Every delivery becomes an event of this type…
    pub event_type: Option<String>,
    /// …or the type is read from the body at this JSON pointer (e.g. `/type`)…
    pub type_field: Option<String>,
    /// …and translated through this table (source type → sluice event type).
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    /// The part of the body that becomes the payload (a JSON pointer); the whole body by default.
    pub payload_field: Option<String>,
    /// How far a delivery's timestamp may be from now (replay protection); default 5m.
    pub tolerance: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    pub max_items: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_age: Option<String>,
    pub margin: Option<String>,
    /// Windows such as `"22:00-06:00"` in which batches are preferably submitted.
    pub off_peak: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Soft cap, dollars a day over all workloads: past it low-urgency work is demoted or held.
    pub daily_usd: Option<f64>,
    /// Hard cap: past it nothing is sent, critical work included.
    pub hard_daily_usd: Option<f64>,
    /// Soft caps per workload name.
    #[serde(default)]
    pub workloads: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Anthropic,
    Openai,
    OpenaiCompatible,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiCompatible => "openai-compatible",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: ProviderKind,
    pub base_url: Option<String>,
    /// The *name* of the environment variable that holds the key, never the key itself.
    pub api_key_env: Option<String>,
    pub requests_per_minute: Option<u32>,
    pub input_tokens_per_minute: Option<u64>,
    pub output_tokens_per_minute: Option<u64>,
    pub max_concurrency: Option<u32>,
    /// Whether the server has a Batch API (default: yes for anthropic and openai).
    pub batch: Option<bool>,
    pub batch_turnaround_p50: Option<String>,
    pub batch_turnaround_p95: Option<String>,
    /// Input tokens that may wait in running batches per model (the provider's batch queue
    /// limit); submissions are paced to stay under it.
    pub batch_enqueued_tokens: Option<u64>,
    #[serde(default)]
    pub prices: BTreeMap<String, RawPrice>,
}

/// A price override, dollars per million tokens. Fields left out keep the built-in value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: Option<f64>,
    pub output: Option<f64>,
    pub cached_input: Option<f64>,
    pub batch_multiplier: Option<f64>,
    /// Multiplier of the flex tier; `0` or absent on a model without one.
    pub flex_multiplier: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DelayCostWord {
    Minimal,
    Moderate,
    Significant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LaneChoice {
    Auto,
    Stream,
    Flex,
    Batch,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkload {
    pub name: String,
    /// The event type this workload runs on.
    pub on: String,
    pub provider: String,
    pub model: String,
    pub system: Option<String>,
    pub prompt: String,
    pub max_tokens: u32,
    pub output: Option<OutputFormat>,
    pub temperature: Option<f64>,
    pub needed_within: Option<String>,
    pub needed_by: Option<String>,
    pub delay_cost: Option<DelayCostWord>,
    pub delay_cost_per_hour: Option<f64>,
    pub volume_per_day: Option<f64>,
    pub input_tokens: Option<u64>,
    pub cached_input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub lane: Option<LaneChoice>,
    pub after: Option<String>,
    pub deliver: Option<RawDeliver>,
    /// Critical work proceeds past the soft budget cap.
    pub critical: Option<bool>,
}

/// `deliver = "none" | "stdout"`, `deliver = { webhook = "https://…", secret_env = "…" }` or
/// `deliver = { file = "results/x.jsonl" }`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "\"none\", \"stdout\", { webhook = \"https://…\" } or { file = \"path.jsonl\" }"
)]
pub enum RawDeliver {
    Word(String),
    Table(RawDeliverTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeliverTable {
    pub webhook: Option<String>,
    /// Environment variable holding the webhook signing secret (Standard Webhooks `whsec_…`).
    pub secret_env: Option<String>,
    pub file: Option<String>,
}
