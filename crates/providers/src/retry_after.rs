//! How long the server asked us to wait: `retry-after-ms` (milliseconds), else `retry-after` as
//! seconds (fractions allowed) or as an HTTP date. The order is the official SDKs' (spec §1.9,
//! §3.8); units are where clients classically go wrong (spec §7.3 item 20).

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

/// From response headers; `now` is when the response arrived (for HTTP dates).
pub fn from_headers(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    parse(get("retry-after-ms"), get("retry-after"), now)
}

/// The pure rule. A value that does not parse is ignored (it is a hint); a date in the past means
/// "now" (zero).
pub fn parse(
    retry_after_ms: Option<&str>,
    retry_after: Option<&str>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    if let Some(ms) = retry_after_ms.and_then(|v| non_negative(v.trim())) {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let v = retry_after?.trim();
    if let Some(secs) = non_negative(v) {
        return Some(Duration::from_secs_f64(secs));
    }
    // A bare number that is not a valid count of seconds must not be read as a date (a year).
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+') {
        return None;
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// A finite, non-negative number of a sane size (at most ten years: a bigger value is garbage
/// and would overflow `Duration`).
fn non_negative(v: &str) -> Option<f64> {
    let x: f64 = v.parse().ok()?;
    (x.is_finite() && (0.0..=315_360_000.0).contains(&x)).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap()
    }

    #[test]
    fn seconds() {
        assert_eq!(parse(None, Some("17"), now()), Some(Duration::from_secs(17)));
        assert_eq!(parse(None, Some(" 0 "), now()), Some(Duration::ZERO));
    }

    #[test]
    fn fractional_seconds() {
        assert_eq!(parse(None, Some("1.5"), now()), Some(Duration::from_millis(1500)));
        assert_eq!(parse(None, Some("0.25"), now()), Some(Duration::from_millis(250)));
    }

    #[test]
    fn milliseconds_win_over_seconds() {
        assert_eq!(parse(Some("370"), Some("1"), now()), Some(Duration::from_millis(370)));
        assert_eq!(parse(Some("12.5"), None, now()), Some(Duration::from_micros(12_500)));
    }

    #[test]
    fn bad_milliseconds_fall_back_to_seconds() {
        assert_eq!(parse(Some("soon"), Some("2"), now()), Some(Duration::from_secs(2)));
        assert_eq!(parse(Some("-5"), Some("2"), now()), Some(Duration::from_secs(2)));
    }

    #[test]
    fn http_date() {
        assert_eq!(
            parse(None, Some("Thu, 26 Nov 2026 10:00:30 GMT"), now()),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn http_date_in_the_past_is_zero() {
        assert_eq!(parse(None, Some("Thu, 26 Nov 2026 09:59:00 GMT"), now()), Some(Duration::ZERO));
    }

    #[test]
    fn garbage_is_ignored() {
        assert_eq!(parse(None, Some("later"), now()), None);
        assert_eq!(parse(None, Some("-3"), now()), None);
        assert_eq!(parse(None, Some("NaN"), now()), None);
        assert_eq!(parse(None, Some("inf"), now()), None);
        assert_eq!(parse(None, Some("1e300"), now()), None);
        assert_eq!(parse(None, Some("2026"), now()), Some(Duration::from_secs(2026)));
        assert_eq!(parse(None, None, now()), None);
    }

    #[test]
    fn from_header_map() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(from_headers(&h, now()), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(from_headers(&h, now()), Some(Duration::from_millis(250)));
    }
}
