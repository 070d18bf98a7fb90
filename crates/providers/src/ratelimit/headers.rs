//! The providers' rate-limit headers, read into one shape (spec §1.8, §3.4).
//!
//! Anthropic resets are RFC 3339 instants; OpenAI resets are Go-style durations (`6m0s`,
//! `370ms`). Both become "time from the response until the bucket is full again". Headers are
//! hints: any that is absent or unreadable is simply `None`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

/// One limit as a response reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitInfo {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Until the limit is fully replenished, measured from the response.
    pub reset: Option<Duration>,
}

impl LimitInfo {
    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }
}

/// The rate-limit headers of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitSnapshot {
    pub requests: Option<LimitInfo>,
    /// Input and output together (Anthropic `tokens`, OpenAI `tokens`).
    pub tokens: Option<LimitInfo>,
    pub input_tokens: Option<LimitInfo>,
    pub output_tokens: Option<LimitInfo>,
}

impl RateLimitSnapshot {
    fn is_empty(&self) -> bool {
        self.requests.is_none()
            && self.tokens.is_none()
            && self.input_tokens.is_none()
            && self.output_tokens.is_none()
    }

    /// `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`.
    pub fn from_anthropic(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Self> {
        let one = |family: &str| {
            let get = |what: &str| header(headers, &format!("anthropic-ratelimit-{family}-{what}"));
            let info = LimitInfo {
                limit: get("limit").and_then(parse_count),
                remaining: get("remaining").and_then(parse_count),
                reset: get("reset").and_then(|v| parse_rfc3339_reset(v, now)),
            };
            (!info.is_empty()).then_some(info)
        };
        let s = RateLimitSnapshot {
            requests: one("requests"),
            tokens: one("tokens"),
            input_tokens: one("input-tokens"),
            output_tokens: one("output-tokens"),
        };
        (!s.is_empty()).then_some(s)
    }

    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.
    pub fn from_openai(headers: &HeaderMap) -> Option<Self> {
        let one = |family: &str| {
            let get = |what: &str| header(headers, &format!("x-ratelimit-{what}-{family}"));
            let info = LimitInfo {
                limit: get("limit").and_then(parse_count),
                remaining: get("remaining").and_then(parse_count),
                reset: get("reset").and_then(parse_go_duration),
            };
            (!info.is_empty()).then_some(info)
        };
        let s = RateLimitSnapshot {
            requests: one("requests"),
            tokens: one("tokens"),
            ..Default::default()
        };
        (!s.is_empty()).then_some(s)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn parse_count(v: &str) -> Option<u64> {
    v.parse().ok()
}

/// An RFC 3339 instant, as time from `now` (zero if already past).
pub fn parse_rfc3339_reset(v: &str, now: DateTime<Utc>) -> Option<Duration> {
    let at = DateTime::parse_from_rfc3339(v.trim()).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// A Go duration string as OpenAI sends it: `12ms`, `1s`, `6m0s`, `4m12.172s`, `23h18m29.144s`,
/// also `1.5s`, `250us`/`250µs`, `10ns`. A bare number is taken as seconds (lenient: some
/// compatible servers send one).
pub fn parse_go_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && (0.0..1e10).contains(&secs))
            .then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0.0f64;
    let mut rest = v;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    (total.is_finite() && total < 1e10).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 3, 14, 0).unwrap()
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("12ms"), Some(ms(12)));
        assert_eq!(parse_go_duration("370ms"), Some(ms(370)));
        assert_eq!(parse_go_duration("1s"), Some(ms(1000)));
        assert_eq!(parse_go_duration("6m0s"), Some(ms(360_000)));
        assert_eq!(parse_go_duration("4m12.172s"), Some(ms(252_172)));
        assert_eq!(parse_go_duration("23h18m29.144s"), Some(ms(83_909_144)));
        assert_eq!(parse_go_duration("2m59.56s"), Some(ms(179_560)));
        assert_eq!(parse_go_duration("1.5s"), Some(ms(1500)));
        assert_eq!(parse_go_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("250µs"), Some(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("7"), Some(ms(7000)));
    }

    #[test]
    fn bad_go_durations() {
        for bad in ["", "s", "5x", "1m-2s", "-1s", "ms5", "1..2s", "1e3s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_resets() {
        assert_eq!(
            parse_rfc3339_reset("2026-11-25T03:14:17Z", now()),
            Some(Duration::from_secs(17))
        );
        assert_eq!(
            parse_rfc3339_reset("2026-11-25T03:14:00.250+00:00", now()),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_rfc3339_reset("2026-11-25T03:13:00Z", now()), Some(Duration::ZERO));
        assert_eq!(parse_rfc3339_reset("17", now()), None);
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn anthropic_headers() {
        let h = map(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-11-25T03:14:17Z"),
            ("anthropic-ratelimit-input-tokens-limit", "30000"),
            ("anthropic-ratelimit-input-tokens-remaining", "29000"),
            ("anthropic-ratelimit-input-tokens-reset", "garbage"),
        ]);
        let s = RateLimitSnapshot::from_anthropic(&h, now()).unwrap();
        assert_eq!(
            s.requests,
            Some(LimitInfo {
                limit: Some(50),
                remaining: Some(0),
                reset: Some(Duration::from_secs(17))
            })
        );
        assert_eq!(
            s.input_tokens,
            Some(LimitInfo { limit: Some(30000), remaining: Some(29000), reset: None })
        );
        assert_eq!(s.output_tokens, None);
        assert_eq!(s.tokens, None);
        assert_eq!(RateLimitSnapshot::from_anthropic(&HeaderMap::new(), now()), None);
    }

    #[test]
    fn openai_headers() {
        let h = map(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-limit-tokens", "150000"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let s = RateLimitSnapshot::from_openai(&h).unwrap();
        assert_eq!(
            s.requests,
            Some(LimitInfo {
                limit: Some(60),
                remaining: Some(59),
                reset: Some(Duration::from_secs(1))
            })
        );
        assert_eq!(s.tokens.unwrap().reset, Some(Duration::from_secs(360)));
        assert_eq!(RateLimitSnapshot::from_openai(&HeaderMap::new()), None);
    }
}
