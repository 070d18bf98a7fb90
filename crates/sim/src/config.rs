//! The simulator's configuration: serde structs that mirror `sim.toml` exactly, loaded with
//! `deny_unknown_fields` so that a misspelt key is an error naming the file and line, not a silently
//! ignored setting. [`SimConfig::validate`] turns it into the [`Settings`] the server runs on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::responders::{CompiledResponder, Responder, ResponderFile};

/// Everything the simulator can be told. Every field has a default suited to a person trying the
/// sim by hand: short latencies, batches that end within a few seconds, no faults, no limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Seed of every generated answer: the same (seed, request) gives the same answer.
    pub seed: u64,
    /// Accepted API keys. Empty: any non-empty key is accepted.
    pub api_keys: Vec<String>,
    /// Latency of the standard tier (both providers).
    pub latency: LatencyConfig,
    /// Length of unscripted answers.
    pub output: OutputConfig,
    /// Per-API-key limits.
    pub rate_limits: RateLimitConfig,
    /// Fault rates (each request may also force one with the `x-sim-fault` header).
    pub faults: FaultConfig,
    /// OpenAI `service_tier: "flex"`.
    pub flex: FlexConfig,
    /// Batch turnaround, acceleration and batch faults.
    pub batch: BatchConfig,
    /// A TOML file of scripted answers (relative paths are resolved against the config file).
    pub responders_file: Option<PathBuf>,
    /// Scripted answers written inline (`[[responder]]`, as in a responders file); tried before
    /// those of `responders_file`.
    #[serde(rename = "responder")]
    pub responders: Vec<Responder>,
    /// Charges listed by the charge log; older ones are dropped (totals stay exact).
    pub charge_log_limit: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            api_keys: Vec::new(),
            latency: LatencyConfig::default(),
            output: OutputConfig::default(),
            rate_limits: RateLimitConfig::default(),
            faults: FaultConfig::default(),
            flex: FlexConfig::default(),
            batch: BatchConfig::default(),
            responders_file: None,
            responders: Vec::new(),
            charge_log_limit: crate::charges::DEFAULT_LIMIT,
        }
    }
}

impl SimConfig {
    /// A configuration for tests and benchmarks: no latency anywhere, batches that end in about
    /// 50 ms, no faults, no limits.
    pub fn instant() -> Self {
        SimConfig {
            latency: LatencyConfig::zero(),
            flex: FlexConfig { latency: LatencyConfig::zero(), ..FlexConfig::default() },
            batch: BatchConfig {
                turnaround_median: Duration::from_millis(50),
                turnaround_p95: Duration::from_millis(80),
                validating: Duration::ZERO,
                finalizing: Duration::ZERO,
                cancel_delay: Duration::ZERO,
                ..BatchConfig::default()
            },
            ..SimConfig::default()
        }
    }

    /// Parses a TOML text; `origin` names it in errors (a path, or e.g. `<inline>`).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::from_toml(origin, text, &e))
    }

    /// Loads a TOML file. Relative `responders_file` paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut config = Self::from_toml_str(&text, &path.display().to_string())?;
        if let Some(file) = &config.responders_file
            && file.is_relative()
            && let Some(dir) = path.parent()
        {
            config.responders_file = Some(dir.join(file));
        }
        Ok(config)
    }

    /// Checks ranges and compiles the responders; the result is what the server runs on.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let rate = |field: &str, v: f64| -> Result<(), ConfigError> {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError::invalid(field, format!("must be between 0 and 1, got {v}")))
            }
        };
        let f = &self.faults;
        for (name, v) in [
            ("faults.rate_429", f.rate_429),
            ("faults.rate_500", f.rate_500),
            ("faults.rate_529", f.rate_529),
            ("faults.rate_reset", f.rate_reset),
            ("faults.rate_stall", f.rate_stall),
            ("faults.rate_cut", f.rate_cut),
            ("faults.rate_malformed", f.rate_malformed),
            ("flex.refuse_rate", self.flex.refuse_rate),
            ("batch.line_error_rate", self.batch.line_error_rate),
            ("batch.line_expire_rate", self.batch.line_expire_rate),
            ("batch.expire_rate", self.batch.expire_rate),
        ] {
            rate(name, v)?;
        }
        let sum = f.rate_429
            + f.rate_500
            + f.rate_529
            + f.rate_reset
            + f.rate_stall
            + f.rate_cut
            + f.rate_malformed;
        if sum > 1.0 {
            return Err(ConfigError::invalid("faults", format!("the rates add up to {sum} > 1")));
        }
        if !(self.batch.acceleration.is_finite() && (1e-3..=1e9).contains(&self.batch.acceleration))
        {
            return Err(ConfigError::invalid(
                "batch.acceleration",
                "must be between 0.001 and 1e9",
            ));
        }
        let window = self.batch.window;
        if window < Duration::from_secs(1) || window > Duration::from_secs(30 * 86_400) {
            return Err(ConfigError::invalid("batch.window", "must be between 1s and 30 days"));
        }
        if self.batch.turnaround_p95 < self.batch.turnaround_median {
            return Err(ConfigError::invalid(
                "batch.turnaround_p95",
                "must be at least batch.turnaround_median",
            ));
        }
        if self.output.min_tokens == 0 || self.output.max_tokens < self.output.min_tokens {
            return Err(ConfigError::invalid(
                "output",
                "need 1 <= output.min_tokens <= output.max_tokens",
            ));
        }
        let mut responders = Vec::new();
        for (i, r) in self.responders.iter().enumerate() {
            responders.push(r.compile(&format!("responder[{i}]"))?);
        }
        if let Some(path) = &self.responders_file {
            responders.extend(ResponderFile::load(path)?);
        }
        Ok(Settings { config: self.clone(), responders })
    }
}

/// The validated configuration the server runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: SimConfig,
    pub responders: Vec<CompiledResponder>,
}

/// Latency of real-time calls: the answer starts after `time_to_first_token` and each further
/// token takes `per_token`. A non-streamed answer arrives after the whole of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    pub time_to_first_token: Dist,
    pub per_token: Dist,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        LatencyConfig {
            time_to_first_token: Dist::Fixed(Duration::from_millis(40)),
            per_token: Dist::Fixed(Duration::from_micros(500)),
        }
    }
}

impl LatencyConfig {
    /// No latency at all (benchmarks that measure the caller's overhead).
    pub fn zero() -> Self {
        LatencyConfig { time_to_first_token: Dist::ZERO, per_token: Dist::ZERO }
    }
}

/// Length of an unscripted answer, in tokens, drawn uniformly (and deterministically) from
/// `min_tokens..=max_tokens`; the request's own `max_tokens` still caps it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    pub min_tokens: u64,
    pub max_tokens: u64,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig { min_tokens: 12, max_tokens: 80 }
    }
}

/// Per-API-key limits. An absent limit is not enforced (the headers then report 1,000,000).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub requests_per_minute: Option<u64>,
    pub input_tokens_per_minute: Option<u64>,
    pub output_tokens_per_minute: Option<u64>,
    /// Requests of one key in flight at once (a stream counts until it ends).
    pub concurrency: Option<u64>,
}

/// Fault rates per real-time request (each between 0 and 1, together at most 1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    pub rate_429: f64,
    pub rate_500: f64,
    pub rate_529: f64,
    pub rate_reset: f64,
    pub rate_stall: f64,
    pub rate_cut: f64,
    pub rate_malformed: f64,
    /// How long a stalled request hangs before it is answered.
    #[serde(deserialize_with = "de_duration")]
    pub stall_for: Duration,
    /// The `retry-after` sent with injected 429 and 529 answers.
    #[serde(deserialize_with = "de_duration")]
    pub retry_after: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            rate_429: 0.0,
            rate_500: 0.0,
            rate_529: 0.0,
            rate_reset: 0.0,
            rate_stall: 0.0,
            rate_cut: 0.0,
            rate_malformed: 0.0,
            stall_for: Duration::from_secs(900),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// OpenAI's flex tier: half price, slower, sometimes refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlexConfig {
    pub latency: LatencyConfig,
    /// Share of flex requests refused with 429 "resource unavailable" (not billed).
    pub refuse_rate: f64,
}

impl Default for FlexConfig {
    fn default() -> Self {
        FlexConfig {
            latency: LatencyConfig {
                time_to_first_token: Dist::Fixed(Duration::from_millis(400)),
                per_token: Dist::Fixed(Duration::from_millis(2)),
            },
            refuse_rate: 0.0,
        }
    }
}

/// Batch processing. Durations are in simulated time; real time is simulated time divided by
/// `acceleration`, so `acceleration = 3600` turns a one-hour batch into one second.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Turnaround is log-normal with this median and 95th percentile (capped at the 24 h window).
    #[serde(deserialize_with = "de_duration")]
    pub turnaround_median: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub turnaround_p95: Duration,
    pub acceleration: f64,
    /// OpenAI: time spent in `validating`, and in `finalizing`.
    #[serde(deserialize_with = "de_duration")]
    pub validating: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub finalizing: Duration,
    /// Time from a cancel request to the end of the batch (`canceling` / `cancelling`).
    #[serde(deserialize_with = "de_duration")]
    pub cancel_delay: Duration,
    /// The completion window; unfinished work expires after it.
    #[serde(deserialize_with = "de_duration")]
    pub window: Duration,
    /// Share of lines that come back errored (a server error, not billed).
    pub line_error_rate: f64,
    /// Share of lines that come back expired (not billed).
    pub line_expire_rate: f64,
    /// Share of batches that expire whole: nothing finishes inside the window.
    pub expire_rate: f64,
    /// Shuffle result lines (both providers say order is not guaranteed).
    pub shuffle_results: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            turnaround_median: Duration::from_secs(2),
            turnaround_p95: Duration::from_secs(4),
            acceleration: 1.0,
            validating: Duration::from_millis(200),
            finalizing: Duration::from_millis(200),
            cancel_delay: Duration::from_millis(500),
            window: Duration::from_secs(24 * 3600),
            line_error_rate: 0.0,
            line_expire_rate: 0.0,
            expire_rate: 0.0,
            shuffle_results: true,
        }
    }
}

/// A duration that is either fixed (`"50ms"`) or drawn from a distribution
/// (`{ median = "1s", p95 = "4s" }` log-normal, or `{ min = "10ms", max = "30ms" }` uniform).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dist {
    Fixed(Duration),
    LogNormal { median: Duration, p95: Duration },
    Uniform { min: Duration, max: Duration },
}

impl Dist {
    pub const ZERO: Dist = Dist::Fixed(Duration::ZERO);

    /// True when every sample is zero, so callers can skip the timer altogether.
    pub fn is_zero(&self) -> bool {
        matches!(self, Dist::Fixed(d) if d.is_zero())
    }

    /// Draws a sample given a uniform number `u` in [0, 1) and a standard normal `z`.
    pub fn sample_with(&self, u: f64, z: f64) -> Duration {
        match *self {
            Dist::Fixed(d) => d,
            Dist::Uniform { min, max } => min + (max.saturating_sub(min)).mul_f64(u),
            Dist::LogNormal { median, p95 } => lognormal(median, p95, z),
        }
    }
}

/// Log-normal with the given median and 95th percentile: sigma = ln(p95 / median) / 1.645.
pub(crate) fn lognormal(median: Duration, p95: Duration, z: f64) -> Duration {
    let m = median.as_secs_f64();
    if m <= 0.0 {
        return Duration::ZERO;
    }
    let ratio = (p95.as_secs_f64() / m).max(1.0);
    let sigma = ratio.ln() / 1.644_853_6;
    let secs = m * (sigma * z).exp();
    Duration::try_from_secs_f64(secs.min(1.0e9)).unwrap_or(Duration::ZERO)
}

impl<'de> Deserialize<'de> for Dist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Dist;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration like \"50ms\", or a table { median, p95 } or { min, max } of durations",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dist, E> {
                parse_duration(v).map(Dist::Fixed).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dist, A::Error> {
                let (mut median, mut p95, mut min, mut max) = (None, None, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    let value: String = map.next_value()?;
                    let d = parse_duration(&value).map_err(de::Error::custom)?;
                    match key.as_str() {
                        "median" => median = Some(d),
                        "p95" => p95 = Some(d),
                        "min" => min = Some(d),
                        "max" => max = Some(d),
                        other => {
                            return Err(de::Error::unknown_field(
                                other,
                                &["median", "p95", "min", "max"],
                            ));
                        }
                    }
                }
                match (median, p95, min, max) {
                    (Some(median), Some(p95), None, None) if p95 >= median => {
                        Ok(Dist::LogNormal { median, p95 })
                    }
                    (None, None, Some(min), Some(max)) if max >= min => {
                        Ok(Dist::Uniform { min, max })
                    }
                    _ => Err(de::Error::custom(
                        "expected { median, p95 } with p95 >= median, or { min, max } with max >= min",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(de::Error::custom)
}

/// Why a configuration was refused. Parse errors name the file, line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}:{line}:{column}: {message}{snippet}")]
    Parse { origin: String, line: usize, column: usize, message: String, snippet: String },
    #[error("invalid configuration: {field}: {message}")]
    Invalid { field: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid { field: field.to_string(), message: message.into() }
    }

    pub(crate) fn from_toml(origin: &str, text: &str, e: &toml::de::Error) -> Self {
        let (line, column, snippet) = match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or("");
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                let src = text.lines().nth(line - 1).unwrap_or("");
                (line, column, format!("\n  {line} | {src}"))
            }
            None => (0, 0, String::new()),
        };
        ConfigError::Parse {
            origin: origin.to_string(),
            line,
            column,
            message: e.message().to_string(),
            snippet,
        }
    }
}
