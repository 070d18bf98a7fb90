//! The sim's own model catalogue and price table, read from §6 of the providers spec (snapshot of
//! 2026-11-25). Deliberately not shared with sluice's price model: two independent readings of the
//! spec catch a misreading. Prices are kept in pico-dollars per token (= micro-dollars per million
//! tokens) so that every charge, including the 50 % tiers, is an exact integer.

/// Which API a model belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Anthropic,
    Openai,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::Openai => "openai",
        }
    }
}

/// How a request was served, which decides its price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Standard,
    Batch,
    Flex,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Batch => "batch",
            Tier::Flex => "flex",
        }
    }
}

/// One model: id and standard prices in dollars per million tokens.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    pub id: &'static str,
    pub provider: Provider,
    pub input: f64,
    pub output: f64,
}

const fn a(id: &'static str, input: f64, output: f64) -> Model {
    Model { id, provider: Provider::Anthropic, input, output }
}
const fn o(id: &'static str, input: f64, output: f64) -> Model {
    Model { id, provider: Provider::Openai, input, output }
}

/// Standard (real-time) prices; batch and flex are 50 % of these.
pub const MODELS: &[Model] = &[
    a("claude-fable-5-2", 8.0, 40.0),
    a("claude-fable-5-1", 10.0, 50.0),
    a("claude-fable-5", 10.0, 50.0),
    a("claude-opus-5-5", 4.0, 20.0),
    a("claude-opus-5", 5.0, 25.0),
    a("claude-opus-4-8", 5.0, 25.0),
    a("claude-opus-4-7", 5.0, 25.0),
    a("claude-opus-4-6", 5.0, 25.0),
    a("claude-opus-4-5", 5.0, 25.0),
    a("claude-sonnet-5-5", 2.0, 10.0),
    a("claude-sonnet-5", 2.0, 10.0),
    a("claude-sonnet-4-6", 3.0, 15.0),
    a("claude-sonnet-4-5", 3.0, 15.0),
    a("claude-haiku-5-5", 0.10, 0.50),
    a("claude-haiku-4-5", 1.0, 5.0),
    o("gpt-6.2-astra", 8.0, 40.0),
    o("gpt-6.2-sol", 2.0, 10.0),
    o("gpt-6-astra", 10.0, 50.0),
    o("gpt-6.1-sol", 2.0, 10.0),
    o("gpt-6-sol", 2.0, 10.0),
    o("gpt-6.1-terra", 1.0, 5.0),
    o("gpt-6-luna", 0.10, 0.50),
    o("gpt-5.6-sol", 4.0, 20.0),
    o("gpt-5.6-terra", 2.0, 12.0),
    o("gpt-5.6-luna", 0.20, 1.20),
    o("gpt-5.5", 5.0, 30.0),
    o("gpt-5.4", 2.50, 15.0),
    o("gpt-5.4-mini", 0.75, 4.50),
    o("gpt-5", 1.25, 10.0),
    o("gpt-5-mini", 0.25, 2.0),
    o("gpt-5-nano", 0.05, 0.40),
    o("gpt-4.1", 2.0, 8.0),
    o("gpt-4.1-mini", 0.40, 1.60),
    o("gpt-4.1-nano", 0.10, 0.40),
    o("gpt-4o", 2.50, 10.0),
    o("gpt-4o-mini", 0.15, 0.60),
    o("o3", 2.0, 8.0),
    o("o4-mini", 1.10, 4.40),
];

/// Largest `max_tokens` an Anthropic request may ask for (the sim's own, single limit).
pub const ANTHROPIC_MAX_OUTPUT: u64 = 128_000;

/// Finds a model by id, also accepting dated snapshots (`claude-haiku-4-5-20251001`,
/// `gpt-4.1-2025-04-14`).
pub fn find(provider: Provider, id: &str) -> Option<&'static Model> {
    MODELS.iter().filter(|m| m.provider == provider).find(|m| {
        id == m.id
            || id.strip_prefix(m.id).and_then(|rest| rest.strip_prefix('-')).is_some_and(|date| {
                let digits: String = date.chars().filter(char::is_ascii_digit).collect();
                digits.len() == 8 && date.chars().all(|c| c.is_ascii_digit() || c == '-')
            })
    })
}

/// OpenAI models that reject `max_tokens` (o-series, GPT-5.x, GPT-6.x).
pub fn openai_is_reasoning(model: &Model) -> bool {
    let id = model.id;
    id.starts_with("gpt-5") || id.starts_with("gpt-6") || id.starts_with('o')
}

/// OpenAI models that offer `service_tier: "flex"` in the sim: the GPT-5.x and GPT-6.x families.
pub fn openai_offers_flex(model: &Model) -> bool {
    model.id.starts_with("gpt-5") || model.id.starts_with("gpt-6")
}

/// What a call costs, in pico-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub input_pico: u64,
    pub output_pico: u64,
}

fn pico_per_token(dollars_per_mtok: f64) -> u64 {
    // Prices have at most a few decimals; rounding makes the conversion exact.
    let p = (dollars_per_mtok * 1_000_000.0).round();
    if p.is_finite() && p >= 0.0 { p as u64 } else { 0 }
}

/// Prices a call. Long prompts cost more where the spec says so: Claude Haiku 5.5 above 100K input
/// tokens ($0.50 / $2.50); Claude Sonnet 4.5 above 200K ($6 / $22.50); GPT-5.4 and newer above
/// 272K input tokens (2x input, 1.5x output).
pub fn cost(model: &Model, tier: Tier, input_tokens: u64, output_tokens: u64) -> Cost {
    let (mut inp, mut out) = (pico_per_token(model.input), pico_per_token(model.output));
    if model.id == "claude-haiku-5-5" && input_tokens > 100_000 {
        (inp, out) = (pico_per_token(0.50), pico_per_token(2.50));
    }
    if model.id == "claude-sonnet-4-5" && input_tokens > 200_000 {
        (inp, out) = (pico_per_token(6.0), pico_per_token(22.50));
    }
    let long_openai = model.provider == Provider::Openai
        && input_tokens > 272_000
        && (model.id.starts_with("gpt-5.4")
            || model.id.starts_with("gpt-5.5")
            || model.id.starts_with("gpt-5.6")
            || model.id.starts_with("gpt-6"));
    if long_openai {
        (inp, out) = (inp * 2, out * 3 / 2);
    }
    if tier != Tier::Standard {
        (inp, out) = (inp / 2, out / 2);
    }
    Cost {
        input_pico: inp.saturating_mul(input_tokens),
        output_pico: out.saturating_mul(output_tokens),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_and_prices() {
        let m = find(Provider::Anthropic, "claude-haiku-4-5-20251001").unwrap();
        assert_eq!(m.id, "claude-haiku-4-5");
        assert!(find(Provider::Openai, "gpt-4.1-2025-04-14").is_some());
        assert!(find(Provider::Openai, "gpt-4.1-foo").is_none());
        let c = cost(find(Provider::Openai, "gpt-4o-mini").unwrap(), Tier::Batch, 1_000_000, 0);
        assert_eq!(c.input_pico, 75_000 * 1_000_000);
        // $0.075 for a million batch input tokens.
        assert_eq!(c.input_pico as f64 / 1e12, 0.075);
    }
}
