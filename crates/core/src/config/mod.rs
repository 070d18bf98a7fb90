//! `sluice.toml`: typed as written ([`raw`]), then validated into a [`Config`] in which every
//! reference is resolved (provider names to providers, `after` to workloads, prices looked up,
//! templates compiled). Only a validated `Config` travels past the loader.
//!
//! Every problem names the file, line, column and field, says what was expected, and suggests the
//! nearest valid name for a misspelt one. Validation collects all problems it can find at once.

mod error;
pub mod raw;
mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{FixedOffset, NaiveTime, Offset, Utc};
use serde::Serialize;

pub use error::{ConfigError, Problem, nearest};
pub use raw::{DelayCostWord, LaneChoice, OutputFormat, ProviderKind};
use raw::{RawConfig, RawDeliver, RawPrice, RawProvider, RawWorkload};
use source::{Document, Seg, path_string};

use crate::policy::{Lane, PolicyInput, Timing};
use crate::price::{self, Price, PriceFamily, Tokens};
use crate::template::{CONTEXT_NAMES, Prompts};
use crate::units::parse_duration;

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file as the user named it, for messages.
    pub source_name: String,
    pub timezone: FixedOffset,
    pub min_daily_savings: f64,
    pub batch: BatchSettings,
    pub budget: Budget,
    pub providers: Vec<Provider>,
    pub workloads: Vec<Workload>,
    pub hooks: Vec<Hook>,
    pub prompts: Prompts,
}

/// A source of signed webhooks.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub name: String,
    pub secret_env: String,
    pub event_type: HookType,
    pub payload_field: Option<String>,
    pub tolerance: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HookType {
    Fixed(String),
    /// Read from the body at a JSON pointer, translated through `types` when the source's name is
    /// listed there.
    Field {
        pointer: String,
        types: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchSettings {
    /// Capped per provider at what its Batch API accepts.
    pub max_items: u64,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub margin: Duration,
    pub off_peak: Vec<Window>,
}

/// A daily window of local time; it may wrap past midnight (`22:00-06:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl Window {
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budget {
    pub daily_usd: Option<f64>,
    pub hard_daily_usd: Option<f64>,
    pub per_workload: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// As the provider's SDKs take it: the API root for Anthropic, `…/v1` for OpenAI.
    pub base_url: url::Url,
    /// The name of the environment variable holding the key; `None` for servers without auth.
    pub api_key_env: Option<String>,
    pub limits: RateLimits,
    pub batch_api: bool,
    pub batch_turnaround_p50: Duration,
    pub batch_turnaround_p95: Duration,
    /// Input tokens that may wait in running batches of one model; `None`: no limit declared.
    pub batch_enqueued_tokens: Option<u64>,
}

/// Per key; `None` means no limit declared (the provider's headers still apply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RateLimits {
    pub requests_per_minute: Option<u32>,
    pub input_tokens_per_minute: Option<u64>,
    pub output_tokens_per_minute: Option<u64>,
    pub max_concurrency: Option<u32>,
}

/// How soon a result is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Within this long of the event's arrival.
    Within(Duration),
    /// By the next occurrence of this local time of day.
    By(NaiveTime),
}

impl Deadline {
    /// Slack for an event arriving at `local_time` (time of day in the config's timezone).
    pub fn slack_at(&self, local_time: NaiveTime) -> Duration {
        match *self {
            Deadline::Within(d) => d,
            Deadline::By(t) => {
                let secs = (t - local_time).num_seconds().rem_euclid(86_400);
                Duration::from_secs(if secs == 0 { 86_400 } else { secs as u64 })
            }
        }
    }

    /// The slack `sluice explain` assumes: for `needed_by`, events spread over the day are on
    /// average twelve hours ahead of their deadline (each is decided again when it arrives).
    pub fn typical_slack(&self) -> Duration {
        match *self {
            Deadline::Within(d) => d,
            Deadline::By(_) => Duration::from_secs(12 * 3600),
        }
    }
}

impl std::fmt::Display for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deadline::Within(d) => f.write_str(&crate::units::fmt_duration(*d)),
            Deadline::By(t) => write!(f, "by {}", t.format("%H:%M")),
        }
    }
}

/// What a delay costs, dollars per item per hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DelayCost {
    pub per_hour: f64,
    /// The word used in the config, if one was.
    pub word: Option<DelayCostWord>,
}

impl DelayCostWord {
    /// The dollar figures behind the words. `significant`: a person is waiting (a customer, a
    /// fraud analyst); `moderate`: someone will look today; `minimal`: nobody minds within the
    /// deadline.
    pub fn per_hour(self) -> f64 {
        match self {
            DelayCostWord::Minimal => 0.0,
            DelayCostWord::Moderate => 0.01,
            DelayCostWord::Significant => 0.25,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DelayCostWord::Minimal => "minimal",
            DelayCostWord::Moderate => "moderate",
            DelayCostWord::Significant => "significant",
        }
    }
}

impl std::fmt::Display for DelayCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.word {
            Some(w) => f.write_str(w.as_str()),
            None => write!(f, "{}/h", crate::units::fmt_usd(self.per_hour)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deliver {
    /// Stored and queryable only.
    None,
    Stdout,
    Webhook {
        url: url::Url,
        secret_env: Option<String>,
    },
    File {
        path: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub name: String,
    pub event_type: String,
    /// Index into [`Config::providers`].
    pub provider: usize,
    pub model: String,
    pub price: Price,
    pub has_system: bool,
    pub max_tokens: u32,
    pub output: OutputFormat,
    pub temperature: Option<f64>,
    /// `None` only for a workload forced to stream with no deadline declared.
    pub deadline: Option<Deadline>,
    pub delay_cost: DelayCost,
    pub volume_per_day: f64,
    /// A typical call; declared, or estimated from the prompt's length and `max_tokens`.
    pub tokens: Tokens,
    pub tokens_declared: bool,
    pub lane: LaneChoice,
    /// Index into [`Config::workloads`] of the workload this one runs after.
    pub after: Option<usize>,
    pub deliver: Deliver,
    pub critical: bool,
}

impl Workload {
    pub fn prompt_template(&self) -> String {
        format!("{}.prompt", self.name)
    }

    pub fn system_template(&self) -> Option<String> {
        self.has_system.then(|| format!("{}.system", self.name))
    }

    pub fn forced_lane(&self) -> Option<Lane> {
        match self.lane {
            LaneChoice::Auto => None,
            LaneChoice::Stream => Some(Lane::Stream),
            LaneChoice::Flex => Some(Lane::Flex),
            LaneChoice::Batch => Some(Lane::Batch),
        }
    }
}

/// What each provider's Batch API takes at most in one batch: (items, bytes).
pub fn provider_batch_limits(kind: ProviderKind) -> (u64, u64) {
    match kind {
        ProviderKind::Anthropic => (100_000, 256 * 1024 * 1024),
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => (50_000, 200 * 1024 * 1024),
    }
}

impl Config {
    /// Parses and validates `source`; `source_name` is how errors name the file.
    pub fn parse(source: &str, source_name: &str) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError { file: source_name.to_owned(), problems };
        let doc =
            Document::parse(source).map_err(|e| fail(vec![toml_problem(&e, source, None)]))?;
        let raw: RawConfig =
            toml::from_str(source).map_err(|e| fail(vec![toml_problem(&e, source, Some(&doc))]))?;
        let mut v = Validator { problems: Vec::new() };
        let config = v.config(raw, source_name);
        if v.problems.is_empty()
            && let Some(config) = config
        {
            return Ok(config);
        }
        let mut problems = v.problems;
        for (path, key, p) in problems.iter_mut() {
            if let Some(span) = doc.span_of(path, *key).or_else(|| doc.span_of(path, true)) {
                p.locate(source, span);
            }
        }
        Err(fail(problems.into_iter().map(|(_, _, p)| p).collect()))
    }

    pub fn provider(&self, w: &Workload) -> &Provider {
        &self.providers[w.provider]
    }

    pub fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.name == name)
    }

    /// The event types some workload runs on, sorted.
    pub fn event_types(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self.workloads.iter().map(|w| w.event_type.as_str()).collect();
        set.into_iter().collect()
    }

    pub fn hook(&self, name: &str) -> Option<&Hook> {
        self.hooks.iter().find(|h| h.name == name)
    }

    /// The decision inputs of workload `w` for an item with `slack` until its deadline.
    pub fn policy_input(&self, w: &Workload, slack: Duration) -> PolicyInput {
        let p = &self.providers[w.provider];
        let (provider_items, _) = provider_batch_limits(p.kind);
        PolicyInput {
            forced: w.forced_lane(),
            slack,
            deadline_words: None,
            delay_cost_per_hour: w.delay_cost.per_hour,
            volume_per_day: w.volume_per_day,
            cost_stream: w.price.standard_cost(w.tokens),
            cost_flex: w.price.flex_cost(w.tokens),
            cost_batch: p.batch_api.then(|| w.price.batch_cost(w.tokens)),
            timing: Timing::with_output_tokens(
                w.tokens.output,
                p.batch_turnaround_p50,
                p.batch_turnaround_p95,
                self.batch.margin,
            ),
            batch_max_items: self.batch.max_items.min(provider_items),
            batch_max_age: self.batch.max_age,
            min_daily_savings: self.min_daily_savings,
        }
    }
}

/// A toml syntax or type error, located and, for a misspelt key or value, with a suggestion.
fn toml_problem(e: &toml::de::Error, source: &str, doc: Option<&Document<'_>>) -> Problem {
    let message = e.message().trim().to_owned();
    let field = match (doc, e.span()) {
        (Some(doc), Some(span)) => {
            Some(path_string(&doc.path_at(span.start))).filter(|p| !p.is_empty())
        }
        _ => None,
    };
    let mut p = Problem {
        field,
        message: message.clone(),
        expected: None,
        suggestion: None,
        location: None,
    };
    // serde words these as "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"):
    // the first quoted name is what was typed, the rest are the valid ones.
    if message.starts_with("unknown field") || message.starts_with("unknown variant") {
        let names: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
        if let Some((typed, valid)) = names.split_first() {
            let what = if message.starts_with("unknown field") { "field" } else { "value" };
            p.message = format!("unknown {what} `{typed}`");
            if !valid.is_empty() {
                p.expected = Some(format!("one of {}", valid.join(", ")));
            }
            p = p.suggest_from(typed, valid.iter().copied());
        }
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        p.message = format!("missing required field {rest}");
    } else if message.contains("expected u32") || message.contains("expected u64") {
        p.expected = Some("a whole number, 0 or more".to_owned());
    }
    if let Some(span) = e.span() {
        p.locate(source, span);
    }
    p
}

/// Collects problems with the path they concern (and whether to point at the key or the value).
struct Validator {
    problems: Vec<(Vec<Seg>, bool, Problem)>,
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

impl Validator {
    fn report(&mut self, path: Vec<Seg>, message: impl Into<String>) -> &mut Problem {
        let p = Problem::new(path_string(&path), message);
        self.problems.push((path, false, p));
        let last = self.problems.len() - 1;
        &mut self.problems[last].2
    }

    fn report_key(&mut self, path: Vec<Seg>, message: impl Into<String>) -> &mut Problem {
        self.report(path, message);
        let last = self.problems.len() - 1;
        self.problems[last].1 = true;
        &mut self.problems[last].2
    }

    fn non_negative(&mut self, path: Vec<Seg>, value: Option<f64>) -> Option<f64> {
        let v = value?;
        if !v.is_finite() || v < 0.0 {
            let p = self.report(path, format!("{v} is not allowed here"));
            p.expected = Some("a number, 0 or more".to_owned());
            return None;
        }
        Some(v)
    }

    fn duration(&mut self, path: Vec<Seg>, text: Option<&str>, default: Duration) -> Duration {
        let Some(text) = text else { return default };
        match parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                let p = self.report(path, format!("\"{text}\" is not a duration"));
                p.expected =
                    Some("a duration such as \"90s\", \"15m\", \"2h30m\" or \"1d\"".to_owned());
                default
            }
        }
    }

    fn config(&mut self, raw: RawConfig, source_name: &str) -> Option<Config> {
        let timezone = match raw.timezone.as_deref() {
            None => Utc.fix(),
            Some(tz) => parse_timezone(tz).unwrap_or_else(|| {
                let p = self.report(
                    vec![key("timezone")],
                    format!("\"{tz}\" is not a timezone sluice knows"),
                );
                p.expected =
                    Some("\"UTC\" or a fixed offset such as \"+02:00\" or \"-05:00\"".to_owned());
                Utc.fix()
            }),
        };
        let min_daily_savings =
            self.non_negative(vec![key("min_daily_savings")], raw.min_daily_savings).unwrap_or(1.0);

        let batch = self.batch(&raw.batch);
        let providers: Vec<Provider> =
            raw.providers.iter().filter_map(|(name, p)| self.provider(name, p)).collect();
        if raw.providers.is_empty() {
            let p = self.report(vec![], "no [providers.NAME] table: workloads have nowhere to run");
            p.expected =
                Some("a table such as [providers.anthropic] with kind = \"anthropic\"".to_owned());
        }
        if raw.workloads.is_empty() {
            let p = self.report(vec![], "no [[workloads]]: there is nothing to do");
            p.expected = Some("at least one [[workloads]] table".to_owned());
        }

        let mut prompts = Prompts::default();
        let names: Vec<&str> = raw.workloads.iter().map(|w| w.name.as_str()).collect();
        let mut workloads = Vec::with_capacity(raw.workloads.len());
        for (i, w) in raw.workloads.iter().enumerate() {
            if let Some(w) = self.workload(i, w, &raw, &providers, &names, &mut prompts) {
                workloads.push(w);
            }
        }
        self.after_chains(&raw.workloads);
        let budget = self.budget(&raw, &names);
        let event_types: BTreeSet<&str> = raw.workloads.iter().map(|w| w.on.as_str()).collect();
        let hooks =
            raw.hooks.iter().filter_map(|(name, h)| self.hook(name, h, &event_types)).collect();

        Some(Config {
            source_name: source_name.to_owned(),
            timezone,
            min_daily_savings,
            batch,
            budget,
            providers,
            workloads,
            hooks,
            prompts,
        })
    }

    fn hook(
        &mut self,
        name: &str,
        raw: &raw::RawHook,
        event_types: &BTreeSet<&str>,
    ) -> Option<Hook> {
        let at = |k: &str| vec![key("hooks"), key(name), key(k)];
        let known = || {
            format!(
                "one of the workloads' event types: {}",
                event_types.iter().copied().collect::<Vec<_>>().join(", ")
            )
        };
        if !is_env_name(&raw.secret_env) {
            let p = self.report(
                at("secret_env"),
                format!("\"{}\" is not an environment variable name", raw.secret_env),
            );
            p.expected = Some("the name of the variable holding the whsec_… secret".to_owned());
        }
        for field in [raw.type_field.as_deref(), raw.payload_field.as_deref()].into_iter().flatten()
        {
            if !field.is_empty() && !field.starts_with('/') {
                let k = if raw.type_field.as_deref() == Some(field) {
                    "type_field"
                } else {
                    "payload_field"
                };
                let p = self.report(at(k), format!("\"{field}\" is not a JSON pointer"));
                p.expected = Some(format!(
                    "a pointer such as \"/{}\"",
                    field.trim_start_matches('/').replace('.', "/")
                ));
            }
        }
        let check_type = |v: &mut Self, path: Vec<Seg>, t: &str| {
            if !event_types.contains(t) {
                let p = v.report(path, format!("no workload runs on \"{t}\""));
                p.expected = Some(known());
                p.suggestion =
                    nearest(t, event_types.iter().copied()).map(|s| format!("did you mean `{s}`?"));
            }
        };
        let event_type = match (&raw.event_type, &raw.type_field) {
            (Some(t), None) if raw.types.is_empty() => {
                check_type(self, at("event_type"), t);
                HookType::Fixed(t.clone())
            }
            (None, Some(pointer)) => {
                for (from, to) in &raw.types {
                    check_type(self, vec![key("hooks"), key(name), key("types"), key(from)], to);
                }
                HookType::Field { pointer: pointer.clone(), types: raw.types.clone() }
            }
            _ => {
                let p = self.report(vec![key("hooks"), key(name)], format!("hook \"{name}\" needs event_type, or type_field (with an optional types table), not both"));
                p.expected =
                    Some("event_type = \"payment.created\", or type_field = \"/type\"".to_owned());
                return None;
            }
        };
        let tolerance =
            self.duration(at("tolerance"), raw.tolerance.as_deref(), Duration::from_secs(300));
        Some(Hook {
            name: name.to_owned(),
            secret_env: raw.secret_env.clone(),
            event_type,
            payload_field: raw.payload_field.clone().filter(|p| !p.is_empty()),
            tolerance,
        })
    }

    fn batch(&mut self, raw: &raw::RawBatch) -> BatchSettings {
        let at = |k: &str| vec![key("batch"), key(k)];
        let count = |v: &mut Self, k: &str, value: Option<u64>, default: u64| match value {
            Some(0) => {
                v.report(at(k), "0 would never cut a batch").expected =
                    Some("1 or more".to_owned());
                default
            }
            Some(n) => n,
            None => default,
        };
        let max_items = count(self, "max_items", raw.max_items, 10_000);
        let max_bytes = count(self, "max_bytes", raw.max_bytes, 100 * 1024 * 1024);
        let max_age =
            self.duration(at("max_age"), raw.max_age.as_deref(), Duration::from_secs(15 * 60));
        let margin =
            self.duration(at("margin"), raw.margin.as_deref(), Duration::from_secs(10 * 60));
        let mut off_peak = Vec::new();
        for (i, w) in raw.off_peak.iter().flatten().enumerate() {
            match parse_window(w) {
                Some(win) => off_peak.push(win),
                None => {
                    let p = self.report(
                        vec![key("batch"), key("off_peak"), Seg::Index(i)],
                        format!("\"{w}\" is not a window of the day"),
                    );
                    p.expected = Some("\"HH:MM-HH:MM\", such as \"22:00-06:00\"".to_owned());
                }
            }
        }
        BatchSettings { max_items, max_bytes, max_age, margin, off_peak }
    }

    fn budget(&mut self, raw: &RawConfig, names: &[&str]) -> Budget {
        let at = |k: &str| vec![key("budget"), key(k)];
        let daily_usd = self.non_negative(at("daily_usd"), raw.budget.daily_usd);
        let hard_daily_usd = self.non_negative(at("hard_daily_usd"), raw.budget.hard_daily_usd);
        if let (Some(soft), Some(hard)) = (daily_usd, hard_daily_usd)
            && hard < soft
        {
            let p = self.report(
                at("hard_daily_usd"),
                format!("the hard cap ({hard}) is below the soft cap ({soft})"),
            );
            p.expected = Some("hard_daily_usd ≥ daily_usd".to_owned());
        }
        let mut per_workload = BTreeMap::new();
        for (name, cap) in &raw.budget.workloads {
            let path = vec![key("budget"), key("workloads"), key(name)];
            if !names.contains(&name.as_str()) {
                let p = self.report_key(path.clone(), format!("no workload is named \"{name}\""));
                p.expected = Some(format!("one of {}", names.join(", ")));
                let s =
                    nearest(name, names.iter().copied()).map(|s| format!("did you mean `{s}`?"));
                p.suggestion = s;
            }
            if let Some(cap) = self.non_negative(path, Some(*cap)) {
                per_workload.insert(name.clone(), cap);
            }
        }
        Budget { daily_usd, hard_daily_usd, per_workload }
    }

    fn provider(&mut self, name: &str, raw: &RawProvider) -> Option<Provider> {
        let at = |k: &str| vec![key("providers"), key(name), key(k)];
        let default_url = match raw.kind {
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::OpenaiCompatible => None,
        };
        let base_url = match raw.base_url.as_deref().or(default_url) {
            None => {
                let p = self.report(
                    vec![key("providers"), key(name)],
                    "an openai-compatible provider needs base_url",
                );
                p.expected = Some(
                    "base_url = \"http://127.0.0.1:8000/v1\" (the server's OpenAI API root)"
                        .to_owned(),
                );
                return None;
            }
            Some(u) => match url::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
                _ => {
                    let p = self.report(at("base_url"), format!("\"{u}\" is not an http(s) URL"));
                    p.expected = Some("a URL such as \"https://api.openai.com/v1\"".to_owned());
                    return None;
                }
            },
        };
        let default_key_env = match raw.kind {
            ProviderKind::Anthropic => Some("ANTHROPIC_API_KEY"),
            ProviderKind::Openai => Some("OPENAI_API_KEY"),
            ProviderKind::OpenaiCompatible => None,
        };
        let api_key_env = raw.api_key_env.as_deref().or(default_key_env).map(str::to_owned);
        if let Some(env) = &raw.api_key_env {
            if looks_like_a_key(env) {
                // Never echo what looks like a secret.
                let p = self.report(
                    at("api_key_env"),
                    "this looks like an API key itself; it must not be in the config",
                );
                p.expected = Some("the name of the environment variable that holds the key, e.g. \"ANTHROPIC_API_KEY\"".to_owned());
            } else if !is_env_name(env) {
                let p = self.report(
                    at("api_key_env"),
                    format!("\"{env}\" is not an environment variable name"),
                );
                p.expected =
                    Some("letters, digits and underscores, not starting with a digit".to_owned());
            }
        }
        let p50 = self.duration(
            at("batch_turnaround_p50"),
            raw.batch_turnaround_p50.as_deref(),
            Duration::from_secs(30 * 60),
        );
        let p95 = self.duration(
            at("batch_turnaround_p95"),
            raw.batch_turnaround_p95.as_deref(),
            Duration::from_secs(2 * 3600),
        );
        if p95 < p50 {
            let p = self
                .report(at("batch_turnaround_p95"), "the p95 turnaround is shorter than the p50");
            p.expected = Some("batch_turnaround_p95 ≥ batch_turnaround_p50".to_owned());
        }
        let limits = RateLimits {
            requests_per_minute: raw.requests_per_minute,
            input_tokens_per_minute: raw.input_tokens_per_minute,
            output_tokens_per_minute: raw.output_tokens_per_minute,
            max_concurrency: raw.max_concurrency,
        };
        for (k, v) in [
            ("requests_per_minute", raw.requests_per_minute.map(u64::from)),
            ("input_tokens_per_minute", raw.input_tokens_per_minute),
            ("output_tokens_per_minute", raw.output_tokens_per_minute),
            ("max_concurrency", raw.max_concurrency.map(u64::from)),
        ] {
            if v == Some(0) {
                let p = self.report(at(k), "0 would never let a request through");
                p.expected = Some("1 or more, or leave it out for no limit".to_owned());
            }
        }
        for (model, price) in &raw.prices {
            let pat =
                |k: &str| vec![key("providers"), key(name), key("prices"), key(model), key(k)];
            for (k, v) in [
                ("input", price.input),
                ("output", price.output),
                ("cached_input", price.cached_input),
                ("batch_multiplier", price.batch_multiplier),
                ("flex_multiplier", price.flex_multiplier),
            ] {
                self.non_negative(pat(k), v);
            }
        }
        Some(Provider {
            name: name.to_owned(),
            kind: raw.kind,
            base_url,
            api_key_env,
            limits,
            batch_api: raw.batch.unwrap_or(raw.kind != ProviderKind::OpenaiCompatible),
            batch_turnaround_p50: p50,
            batch_turnaround_p95: p95,
            batch_enqueued_tokens: raw.batch_enqueued_tokens,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn workload(
        &mut self,
        i: usize,
        w: &RawWorkload,
        raw: &RawConfig,
        providers: &[Provider],
        names: &[&str],
        prompts: &mut Prompts,
    ) -> Option<Workload> {
        let at = |k: &str| vec![key("workloads"), Seg::Index(i), key(k)];
        let label = format!("workload \"{}\"", w.name);

        if w.name.is_empty()
            || !w.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            let p = self.report(at("name"), format!("\"{}\" cannot be a workload name", w.name));
            p.expected = Some(
                "letters, digits, '-' and '_' (it appears in ids, metrics and file names)"
                    .to_owned(),
            );
        }
        if names[..i].contains(&w.name.as_str()) {
            self.report(at("name"), format!("another workload is already named \"{}\"", w.name))
                .expected = Some("a name used by one workload only".to_owned());
        }
        if w.on.trim().is_empty() {
            self.report(at("on"), "the event type is empty").expected =
                Some("an event type such as \"ticket.created\"".to_owned());
        }

        // The provider, the model and its price.
        let provider = match providers.iter().position(|p| p.name == w.provider) {
            Some(p) => Some(p),
            None => {
                let known: Vec<&str> = raw.providers.keys().map(String::as_str).collect();
                // A provider that failed its own validation was already reported.
                if !known.contains(&w.provider.as_str()) {
                    let p = self.report(
                        at("provider"),
                        format!("{label}: no provider is named \"{}\"", w.provider),
                    );
                    p.expected = Some(if known.is_empty() {
                        "a name defined by a [providers.NAME] table".to_owned()
                    } else {
                        format!("one of the [providers] tables: {}", known.join(", "))
                    });
                    p.suggestion = nearest(&w.provider, known.iter().copied())
                        .map(|s| format!("did you mean `{s}`?"));
                }
                None
            }
        };
        let price = provider.and_then(|pi| {
            let p = &providers[pi];
            let family = match p.kind {
                ProviderKind::Anthropic => Some(PriceFamily::Anthropic),
                ProviderKind::Openai => Some(PriceFamily::OpenAi),
                ProviderKind::OpenaiCompatible => None,
            };
            let builtin = family.and_then(|f| price::builtin(f, &w.model));
            let over = raw.providers.get(&p.name).and_then(|rp| rp.prices.get(&w.model));
            match resolve_price(builtin, over) {
                Some(price) => Some(price),
                None => {
                    let msg = format!("{label}: no price is known for model \"{}\" on provider \"{}\"", w.model, p.name);
                    let pr = self.report(at("model"), msg);
                    pr.expected = Some(format!(
                        "a model of the built-in table, or a price override: [providers.{}.prices.\"{}\"] input = …, output = … (dollars per million tokens)",
                        p.name, w.model
                    ));
                    if let Some(f) = family {
                        pr.suggestion = nearest(&w.model, price::builtin_models(f)).map(|s| format!("did you mean `{s}`?"));
                    }
                    None
                }
            }
        });

        // Prompt templates.
        let mut used = BTreeSet::new();
        let mut compiled = true;
        for (field, source) in
            [("system", w.system.as_deref()), ("prompt", Some(w.prompt.as_str()))]
        {
            let Some(source) = source else { continue };
            match prompts.add(&format!("{}.{field}", w.name), source) {
                Ok(names) => used.extend(names),
                Err(e) => {
                    compiled = false;
                    let line =
                        e.line.map(|l| format!(" (line {l} of the template)")).unwrap_or_default();
                    self.report(
                        at(field),
                        format!(
                            "{label}: the {field} template does not compile{line}: {}",
                            e.message
                        ),
                    )
                    .expected = Some(
                        "a minijinja (Jinja2) template such as \"Subject: {{ payload.subject }}\""
                            .to_owned(),
                    );
                }
            }
        }
        let allowed: Vec<&str> =
            CONTEXT_NAMES.iter().copied().filter(|n| *n != "after" || w.after.is_some()).collect();
        for name in used.iter().filter(|n| !allowed.contains(&n.as_str())) {
            let p = self.report(
                at("prompt"),
                format!("{label}: the template uses `{name}`, which it cannot render"),
            );
            p.expected =
                Some(format!("one of {} (e.g. {{{{ payload.{name} }}}})", allowed.join(", ")));
            p.suggestion =
                nearest(name, allowed.iter().copied()).map(|s| format!("did you mean `{s}`?"));
        }
        if compiled && used.is_empty() {
            let p = self.report(at("prompt"), format!("{label}: the prompt uses nothing of the event, so every event would send the same prompt"));
            p.expected = Some(
                "a template that uses the event, such as \"{{ payload.subject }}\"".to_owned(),
            );
        }

        if w.max_tokens == 0 {
            self.report(at("max_tokens"), "0 would generate nothing").expected =
                Some("1 or more".to_owned());
        }
        if let Some(t) = w.temperature
            && !(0.0..=2.0).contains(&t)
        {
            self.report(at("temperature"), format!("{t} is out of range")).expected =
                Some("a number from 0 to 2".to_owned());
        }

        // The three decision inputs.
        let lane = w.lane.unwrap_or(LaneChoice::Auto);
        let deadline = match (&w.needed_within, &w.needed_by) {
            (Some(_), Some(_)) => {
                self.report_key(
                    at("needed_by"),
                    format!("{label}: set needed_within or needed_by, not both"),
                )
                .expected = Some("one deadline".to_owned());
                None
            }
            (Some(within), None) => Some(Deadline::Within(self.duration(
                at("needed_within"),
                Some(within),
                Duration::from_secs(86_400),
            ))),
            (None, Some(by)) => match parse_time_of_day(by) {
                Some(t) => Some(Deadline::By(t)),
                None => {
                    self.report(at("needed_by"), format!("\"{by}\" is not a time of day")).expected =
                        Some("a time such as \"08:00\" or \"17:30\" (24-hour clock, in the config's timezone)".to_owned());
                    None
                }
            },
            (None, None) if lane == LaneChoice::Stream => None,
            (None, None) => {
                let p = self.report(
                    vec![key("workloads"), Seg::Index(i)],
                    format!("{label} has no deadline"),
                );
                p.expected = Some("needed_within = \"2m\" (after the event) or needed_by = \"08:00\" (time of day)".to_owned());
                None
            }
        };
        let delay_cost = match (w.delay_cost, w.delay_cost_per_hour) {
            (Some(_), Some(_)) => {
                self.report_key(
                    at("delay_cost_per_hour"),
                    format!("{label}: set delay_cost or delay_cost_per_hour, not both"),
                )
                .expected = Some("one of the two".to_owned());
                DelayCost { per_hour: 0.0, word: None }
            }
            (Some(word), None) => DelayCost { per_hour: word.per_hour(), word: Some(word) },
            (None, Some(v)) => DelayCost {
                per_hour: self.non_negative(at("delay_cost_per_hour"), Some(v)).unwrap_or(0.0),
                word: None,
            },
            (None, None) => DelayCost {
                per_hour: DelayCostWord::Moderate.per_hour(),
                word: Some(DelayCostWord::Moderate),
            },
        };
        let volume_per_day = match self.non_negative(at("volume_per_day"), w.volume_per_day) {
            Some(v) => v,
            None if w.volume_per_day.is_none() && lane == LaneChoice::Auto => {
                let p = self.report(
                    vec![key("workloads"), Seg::Index(i)],
                    format!("{label} has no volume_per_day"),
                );
                p.expected = Some("volume_per_day = 500 (events a day): it decides whether batching saves enough to matter".to_owned());
                0.0
            }
            None => 0.0,
        };

        let tokens_declared = w.input_tokens.is_some() || w.output_tokens.is_some();
        // Without a declaration: ~4 characters a token over the templates, plus a typical payload.
        let template_chars =
            w.prompt.chars().count() + w.system.as_deref().map_or(0, |s| s.chars().count());
        let tokens = Tokens {
            input: w.input_tokens.unwrap_or(template_chars as u64 / 4 + 250),
            cached_input: w.cached_input_tokens.unwrap_or(0),
            output: w.output_tokens.unwrap_or(u64::from(w.max_tokens).div_ceil(2)),
        };
        if tokens.cached_input > tokens.input {
            self.report(at("cached_input_tokens"), "more cached tokens than input tokens")
                .expected = Some(
                "cached_input_tokens ≤ input_tokens (cached tokens are part of the input)"
                    .to_owned(),
            );
        }
        if tokens.output > u64::from(w.max_tokens) && w.max_tokens > 0 {
            self.report(
                at("output_tokens"),
                format!(
                    "{} output tokens cannot fit in max_tokens = {}",
                    tokens.output, w.max_tokens
                ),
            )
            .expected = Some("output_tokens ≤ max_tokens".to_owned());
        }

        // Lanes the provider and model must offer.
        if let (Some(pi), Some(price)) = (provider, &price) {
            let p = &providers[pi];
            if lane == LaneChoice::Flex && price.flex_multiplier.is_none() {
                let pr = self
                    .report(at("lane"), format!("{label}: model \"{}\" has no flex tier", w.model));
                pr.expected = Some(
                    "\"auto\", \"stream\" or \"batch\" (or flex_multiplier in a price override)"
                        .to_owned(),
                );
            }
            if lane == LaneChoice::Batch && !p.batch_api {
                let pr = self.report(
                    at("lane"),
                    format!("{label}: provider \"{}\" has no Batch API", p.name),
                );
                pr.expected = Some(format!(
                    "\"auto\" or \"stream\" (or batch = true in [providers.{}])",
                    p.name
                ));
            }
        }

        // `after`: same event type; cycles are checked over all workloads at once.
        let after = match &w.after {
            None => None,
            Some(a) if *a == w.name => {
                self.report(at("after"), format!("{label} cannot run after itself")).expected =
                    Some("the name of another workload on the same event type".to_owned());
                None
            }
            Some(a) => match raw.workloads.iter().position(|o| o.name == *a) {
                None => {
                    let p =
                        self.report(at("after"), format!("{label}: no workload is named \"{a}\""));
                    p.expected = Some(format!("one of {}", names.join(", ")));
                    p.suggestion =
                        nearest(a, names.iter().copied()).map(|s| format!("did you mean `{s}`?"));
                    None
                }
                Some(j) if raw.workloads[j].on != w.on => {
                    let p = self.report(at("after"), format!(
                        "{label} runs on \"{}\" but \"{a}\" runs on \"{}\": a chain stays within one event",
                        w.on, raw.workloads[j].on
                    ));
                    p.expected = Some(format!("a workload on \"{}\"", w.on));
                    None
                }
                Some(j) => Some(j),
            },
        };

        let deliver = self.deliver(i, &label, w.deliver.as_ref());

        Some(Workload {
            name: w.name.clone(),
            event_type: w.on.clone(),
            provider: provider?,
            model: w.model.clone(),
            price: price?,
            has_system: w.system.is_some(),
            max_tokens: w.max_tokens,
            output: w.output.unwrap_or(OutputFormat::Text),
            temperature: w.temperature,
            deadline,
            delay_cost,
            volume_per_day,
            tokens,
            tokens_declared,
            lane,
            after,
            deliver: deliver?,
            critical: w.critical.unwrap_or(false),
        })
    }

    fn deliver(&mut self, i: usize, label: &str, raw: Option<&RawDeliver>) -> Option<Deliver> {
        let path = vec![key("workloads"), Seg::Index(i), key("deliver")];
        let expected =
            "\"none\", \"stdout\", { webhook = \"https://…\" } or { file = \"results/x.jsonl\" }";
        match raw {
            None => Some(Deliver::None),
            Some(RawDeliver::Word(w)) => match w.as_str() {
                "none" => Some(Deliver::None),
                "stdout" => Some(Deliver::Stdout),
                other => {
                    let p = self
                        .report(path, format!("{label}: \"{other}\" is not a place to deliver to"));
                    p.expected = Some(expected.to_owned());
                    p.suggestion =
                        nearest(other, ["none", "stdout"]).map(|s| format!("did you mean `{s}`?"));
                    None
                }
            },
            Some(RawDeliver::Table(t)) => match (&t.webhook, &t.file) {
                (Some(u), None) => match url::Url::parse(u) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                        if let Some(env) = &t.secret_env
                            && !is_env_name(env)
                        {
                            let p = self.report(path, format!("{label}: secret_env \"{env}\" is not an environment variable name"));
                            p.expected = Some(
                                "the name of the variable holding the whsec_… secret".to_owned(),
                            );
                            return None;
                        }
                        Some(Deliver::Webhook { url, secret_env: t.secret_env.clone() })
                    }
                    _ => {
                        self.report(path, format!("{label}: \"{u}\" is not an http(s) URL"))
                            .expected =
                            Some("webhook = \"https://hooks.example.com/sluice\"".to_owned());
                        None
                    }
                },
                (None, Some(f)) if !f.trim().is_empty() && t.secret_env.is_none() => {
                    Some(Deliver::File { path: f.clone() })
                }
                _ => {
                    self.report(path, format!("{label}: deliver names one place: a webhook (with an optional secret_env) or a file"))
                        .expected = Some(expected.to_owned());
                    None
                }
            },
        }
    }

    /// Reports every `after` cycle once, at the workload that closes it.
    fn after_chains(&mut self, workloads: &[RawWorkload]) {
        let index = |name: &str| workloads.iter().position(|w| w.name == name);
        let mut reported: BTreeSet<usize> = BTreeSet::new();
        for start in 0..workloads.len() {
            let mut seen = vec![start];
            let mut at = start;
            while let Some(next) = workloads[at].after.as_deref().and_then(index) {
                if next == at {
                    break; // running after itself: reported with the workload
                }
                if let Some(pos) = seen.iter().position(|s| *s == next) {
                    let cycle: Vec<usize> = seen[pos..].to_vec();
                    if cycle.iter().all(|c| !reported.contains(c)) {
                        reported.extend(cycle.iter().copied());
                        let names: Vec<&str> = cycle
                            .iter()
                            .chain(std::iter::once(&next))
                            .map(|c| workloads[*c].name.as_str())
                            .collect();
                        let p = self.report(
                            vec![key("workloads"), Seg::Index(at), key("after")],
                            format!("`after` goes round in a circle: {}", names.join(" → ")),
                        );
                        p.expected =
                            Some("a chain with a first workload that runs after none".to_owned());
                    }
                    break;
                }
                seen.push(next);
                at = next;
            }
        }
    }
}

/// Merges a config override onto the built-in price. A model with no built-in price needs at least
/// `input` and `output`.
fn resolve_price(builtin: Option<Price>, over: Option<&RawPrice>) -> Option<Price> {
    match (builtin, over) {
        (Some(b), None) => Some(b),
        (Some(b), Some(o)) => Some(Price {
            input: o.input.unwrap_or(b.input),
            output: o.output.unwrap_or(b.output),
            cached_input: o.cached_input.unwrap_or(b.cached_input),
            batch_multiplier: o.batch_multiplier.unwrap_or(b.batch_multiplier),
            flex_multiplier: match o.flex_multiplier {
                Some(m) if m > 0.0 => Some(m),
                Some(_) => None,
                None => b.flex_multiplier,
            },
            long_context: b.long_context,
            source: "config override of the built-in price".to_owned(),
        }),
        (None, Some(o)) => {
            let (input, output) = (o.input?, o.output?);
            Some(Price {
                input,
                output,
                cached_input: o.cached_input.unwrap_or(input),
                batch_multiplier: o.batch_multiplier.unwrap_or(0.5),
                flex_multiplier: o.flex_multiplier.filter(|m| *m > 0.0),
                long_context: None,
                source: "config".to_owned(),
            })
        }
        (None, None) => None,
    }
}

fn parse_time_of_day(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s.trim(), "%H:%M:%S"))
        .ok()
}

fn parse_window(s: &str) -> Option<Window> {
    let (a, b) = s.split_once('-')?;
    let (start, end) = (parse_time_of_day(a)?, parse_time_of_day(b)?);
    (start != end).then_some(Window { start, end })
}

fn parse_timezone(s: &str) -> Option<FixedOffset> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("utc") || s == "Z" {
        return Some(Utc.fix());
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 14 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn looks_like_a_key(s: &str) -> bool {
    s.starts_with("sk-")
        || s.starts_with("sk_")
        || (s.len() >= 32 && s.bytes().any(|b| b.is_ascii_lowercase()) && !s.contains(' '))
}

#[cfg(test)]
mod tests;
