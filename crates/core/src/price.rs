//! What a call costs: the built-in price table and per-item estimates.
//!
//! The table is a dated snapshot of `shared/spec/providers.md` §6 (compiled 2026-11-25). Prices change
//! often, so every row carries its source and date, and `[providers.NAME.prices."MODEL"]` in the
//! config overrides any field of a row or adds a model the table lacks.

use serde::Serialize;

/// Which price list a provider's models are looked up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PriceFamily {
    Anthropic,
    OpenAi,
}

/// The price of one model, in US dollars per million tokens.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input: f64,
    /// Multiplier applied to every token price in the Batch API (0.5 at both providers).
    pub batch_multiplier: f64,
    /// Multiplier of the flex tier, where the model offers one.
    pub flex_multiplier: Option<f64>,
    /// Higher rates for the whole request once its prompt is long, where the model has them.
    pub long_context: Option<LongContext>,
    /// Where the figures come from and when they were read, e.g. "built-in, genai-prices 2026-10-14".
    pub source: String,
}

/// A long-context surcharge: a request of more than `above` prompt tokens bills all its tokens
/// at these multiples of the usual rates (Claude Haiku 5.5 above 100K, 5×; GPT-5.4 and newer
/// above 272K, 2× input and 1.5× output; providers.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LongContext {
    pub above: u64,
    pub input_multiplier: f64,
    pub output_multiplier: f64,
}

/// Token counts of one call (or the estimate of a typical one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    /// All prompt tokens, cached ones included.
    pub input: u64,
    /// The part of `input` served from the prompt cache.
    pub cached_input: u64,
    pub output: u64,
}

impl Price {
    /// The standard (streamed) price of a call, in dollars.
    pub fn standard_cost(&self, t: Tokens) -> f64 {
        let cached = t.cached_input.min(t.input);
        let uncached = t.input - cached;
        let (inp, out) = match self.long_context {
            Some(l) if t.input > l.above => (l.input_multiplier, l.output_multiplier),
            _ => (1.0, 1.0),
        };
        (uncached as f64 * self.input * inp
            + cached as f64 * self.cached_input * inp
            + t.output as f64 * self.output * out)
            / 1e6
    }

    /// The most a call of at most `input` prompt tokens (none of them cached) and `max_tokens`
    /// generated can cost at the standard price: what a hard cap reserves before the call.
    pub fn most(&self, input: u64, max_tokens: u64) -> f64 {
        self.standard_cost(Tokens { input, cached_input: 0, output: max_tokens })
    }

    pub fn batch_cost(&self, t: Tokens) -> f64 {
        self.standard_cost(t) * self.batch_multiplier
    }

    /// `None` when the model has no flex tier.
    pub fn flex_cost(&self, t: Tokens) -> Option<f64> {
        self.flex_multiplier.map(|m| self.standard_cost(t) * m)
    }
}

struct Row {
    family: PriceFamily,
    long_context: Option<LongContext>,
    model: &'static str,
    input: f64,
    output: f64,
    /// `None`: the family's rule (Anthropic cache reads at 0.1× input; OpenAI no discount known).
    cached_input: Option<f64>,
    flex: bool,
    source: &'static str,
}

const fn a(
    model: &'static str,
    input: f64,
    output: f64,
    cache_read: f64,
    source: &'static str,
) -> Row {
    Row {
        family: PriceFamily::Anthropic,
        long_context: None,
        model,
        input,
        output,
        cached_input: Some(input * cache_read),
        flex: false,
        source,
    }
}

const fn o(
    model: &'static str,
    input: f64,
    cached: Option<f64>,
    output: f64,
    flex: bool,
    source: &'static str,
) -> Row {
    Row {
        family: PriceFamily::OpenAi,
        long_context: None,
        model,
        input,
        output,
        cached_input: cached,
        flex,
        source,
    }
}

/// A row whose long prompts bill at higher rates.
const fn long(row: Row, above: u64, input_multiplier: f64, output_multiplier: f64) -> Row {
    Row { long_context: Some(LongContext { above, input_multiplier, output_multiplier }), ..row }
}

const A_PRICE: &str =
    "Anthropic pricing page as crawled for providers.md (lineup of 2026-11-09), read 2026-11-25";
const GP: &str = "genai-prices 0.2.3 (batch rows as of 2026-10-14), read 2026-11-25";
const NOTICE_FABLE: &str =
    "third-party list-price notice of 2026-11-10 (unconfirmed by Anthropic), read 2026-11-25";
const NOTICE_GPT62: &str =
    "third-party notice of 2026-11-18 (unconfirmed by OpenAI), read 2026-11-25";
const GP_2026_10_12: &str = "genai-prices 0.2.3 (tier prices as of 2026-10-12), read 2026-11-25";

/// The snapshot. Anthropic cache reads are 0.1× input except where §6.1 says otherwise; batch is
/// 0.5× everywhere; flex (0.5×) is offered on OpenAI's gpt-5 and newer families and the o-series.
#[rustfmt::skip]
static TABLE: &[Row] = &[
    a("claude-fable-5-2", 8.0, 40.0, 0.1, NOTICE_FABLE),
    a("claude-fable-5-1", 10.0, 50.0, 0.025, A_PRICE),
    a("claude-fable-5", 10.0, 50.0, 0.1, A_PRICE),
    a("claude-opus-5-5", 4.0, 20.0, 0.05, A_PRICE),
    a("claude-opus-5", 5.0, 25.0, 0.1, A_PRICE),
    a("claude-opus-4-8", 5.0, 25.0, 0.1, A_PRICE),
    a("claude-opus-4-7", 5.0, 25.0, 0.1, A_PRICE),
    a("claude-opus-4-6", 5.0, 25.0, 0.1, A_PRICE),
    a("claude-opus-4-5", 5.0, 25.0, 0.1, A_PRICE),
    a("claude-opus-4-1", 15.0, 75.0, 0.1, A_PRICE),
    a("claude-opus-4", 15.0, 75.0, 0.1, A_PRICE),
    a("claude-sonnet-5-5", 2.0, 10.0, 0.05, A_PRICE),
    a("claude-sonnet-5", 2.0, 10.0, 0.1, GP),
    a("claude-sonnet-4-6", 3.0, 15.0, 0.1, A_PRICE),
    // Above 200K prompt tokens $6 / $22.50 (genai-prices, as providers.md §6.1 quotes it).
    long(a("claude-sonnet-4-5", 3.0, 15.0, 0.1, A_PRICE), 200_000, 2.0, 1.5),
    // $0.50 / $2.50 above 100K prompt tokens.
    long(a("claude-haiku-5-5", 0.10, 0.50, 0.1, A_PRICE), 100_000, 5.0, 5.0),
    a("claude-haiku-4-5", 1.0, 5.0, 0.1, A_PRICE),

    long(o("gpt-6.2-astra", 8.0, None, 40.0, true, NOTICE_GPT62), 272_000, 2.0, 1.5),
    long(o("gpt-6.2-sol", 2.0, None, 10.0, true, NOTICE_GPT62), 272_000, 2.0, 1.5),
    long(o("gpt-6-astra", 10.0, Some(1.0), 50.0, true, GP), 272_000, 2.0, 1.5),
    long(o("gpt-6.1-sol", 2.0, Some(0.10), 10.0, true, GP), 272_000, 2.0, 1.5),
    long(o("gpt-6-sol", 2.0, Some(0.20), 10.0, true, GP), 272_000, 2.0, 1.5),
    long(o("gpt-6.1-terra", 1.0, Some(0.05), 5.0, true, GP), 272_000, 2.0, 1.5),
    long(o("gpt-6-luna", 0.10, Some(0.01), 0.50, true, GP), 272_000, 2.0, 1.5),
    long(o("gpt-5.6-sol", 4.0, Some(0.40), 20.0, true, GP_2026_10_12), 272_000, 2.0, 1.5),
    long(o("gpt-5.6-terra", 2.0, Some(0.20), 12.0, true, GP_2026_10_12), 272_000, 2.0, 1.5),
    long(o("gpt-5.6-luna", 0.20, Some(0.02), 1.20, true, GP_2026_10_12), 272_000, 2.0, 1.5),
    long(o("gpt-5.5", 5.0, Some(0.50), 30.0, true, GP), 272_000, 2.0, 1.5),
    long(o("gpt-5.4", 2.50, Some(0.25), 15.0, true, GP), 272_000, 2.0, 1.5),
    long(o("gpt-5.4-mini", 0.75, Some(0.075), 4.50, true, GP), 272_000, 2.0, 1.5),
    o("gpt-5", 1.25, Some(0.125), 10.0, true, GP),
    o("gpt-5-mini", 0.25, Some(0.025), 2.0, true, GP),
    o("gpt-5-nano", 0.05, Some(0.005), 0.40, true, GP),
    o("gpt-4.1", 2.0, Some(0.50), 8.0, false, GP),
    o("gpt-4.1-mini", 0.40, Some(0.10), 1.60, false, GP),
    o("gpt-4.1-nano", 0.10, Some(0.025), 0.40, false, GP),
    o("gpt-4o", 2.50, Some(1.25), 10.0, false, GP),
    o("gpt-4o-mini", 0.15, Some(0.075), 0.60, false, GP),
    o("o3", 2.0, Some(0.50), 8.0, true, GP),
    o("o4-mini", 1.10, Some(0.275), 4.40, true, GP),
];

/// The built-in price of `model`, also for dated snapshots such as `gpt-4o-2024-08-06` or
/// `claude-haiku-4-5-20251001`, which bill as their base model.
pub fn builtin(family: PriceFamily, model: &str) -> Option<Price> {
    let row = TABLE.iter().find(|r| r.family == family && r.model == model).or_else(|| {
        let base = strip_date_suffix(model)?;
        TABLE.iter().find(|r| r.family == family && r.model == base)
    })?;
    Some(Price {
        input: row.input,
        output: row.output,
        cached_input: row.cached_input.unwrap_or(row.input),
        batch_multiplier: 0.5,
        flex_multiplier: row.flex.then_some(0.5),
        long_context: row.long_context,
        source: format!("built-in: {}", row.source),
    })
}

/// Every model of `family` in the built-in table, for suggestions in error messages.
pub fn builtin_models(family: PriceFamily) -> impl Iterator<Item = &'static str> {
    TABLE.iter().filter(move |r| r.family == family).map(|r| r.model)
}

/// `gpt-4o-2024-08-06` → `gpt-4o`; `claude-haiku-4-5-20251001` → `claude-haiku-4-5`.
fn strip_date_suffix(model: &str) -> Option<&str> {
    let is_digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((base, date)) = model.rsplit_once('-')
        && is_digits(date, 8)
    {
        return Some(base);
    }
    // -YYYY-MM-DD
    let parts: Vec<&str> = model.rsplitn(4, '-').collect();
    if let [dd, mm, yyyy, base] = parts[..]
        && is_digits(yyyy, 4)
        && is_digits(mm, 2)
        && is_digits(dd, 2)
    {
        return Some(base);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_half_price_and_cache_reads_are_cheaper() {
        let p = builtin(PriceFamily::Anthropic, "claude-sonnet-5-5").unwrap();
        let t = Tokens { input: 1_000_000, cached_input: 0, output: 1_000_000 };
        assert_eq!(p.standard_cost(t), 12.0);
        assert_eq!(p.batch_cost(t), 6.0);
        assert_eq!(p.flex_cost(t), None);
        let cached = Tokens { input: 1_000_000, cached_input: 1_000_000, output: 0 };
        assert!((p.standard_cost(cached) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn long_prompts_bill_the_whole_request_at_the_long_context_rates() {
        let haiku = builtin(PriceFamily::Anthropic, "claude-haiku-5-5").unwrap();
        let short = Tokens { input: 100_000, cached_input: 0, output: 1_000 };
        let long = Tokens { input: 100_001, ..short };
        assert!((haiku.standard_cost(short) - (0.01 + 0.0005)).abs() < 1e-12);
        assert!((haiku.standard_cost(long) - (0.0500005 + 0.0025)).abs() < 1e-12);
        assert!((haiku.batch_cost(long) - haiku.standard_cost(long) / 2.0).abs() < 1e-12);
        let gpt = builtin(PriceFamily::OpenAi, "gpt-5.4").unwrap();
        let t = Tokens { input: 300_000, cached_input: 100_000, output: 10_000 };
        let expected =
            (200_000.0 * 2.5 * 2.0 + 100_000.0 * 0.25 * 2.0 + 10_000.0 * 15.0 * 1.5) / 1e6;
        assert!((gpt.standard_cost(t) - expected).abs() < 1e-12);
        assert!(builtin(PriceFamily::OpenAi, "gpt-5").unwrap().long_context.is_none());
    }

    #[test]
    fn flex_is_offered_on_newer_openai_models_only() {
        let t = Tokens { input: 2_000_000, cached_input: 0, output: 0 };
        assert_eq!(builtin(PriceFamily::OpenAi, "gpt-5-mini").unwrap().flex_cost(t), Some(0.25));
        assert_eq!(builtin(PriceFamily::OpenAi, "gpt-4o").unwrap().flex_cost(t), None);
    }

    #[test]
    fn dated_snapshots_bill_as_their_base_model() {
        assert!(builtin(PriceFamily::OpenAi, "gpt-4o-2024-08-06").is_some());
        assert!(builtin(PriceFamily::Anthropic, "claude-haiku-4-5-20251001").is_some());
        assert!(builtin(PriceFamily::OpenAi, "gpt-4o-2024-08").is_none());
        assert!(builtin(PriceFamily::Anthropic, "gpt-4o").is_none());
    }

    #[test]
    fn every_row_has_a_dated_source_and_sane_prices() {
        for r in TABLE {
            assert!(r.source.contains("2026-"), "{} has no date", r.model);
            assert!(r.input > 0.0 && r.output >= r.input, "{}", r.model);
            assert!(r.cached_input.unwrap_or(0.0) <= r.input, "{}", r.model);
        }
    }
}
