//! Durations and dollars, parsed and printed the way people write them in a config or read them in
//! a table: `90s`, `15m`, `2h30m`, `1d`; `$0.0036`, `$12.40`, `$1,250`.

use std::time::Duration;

/// Parses a duration such as `90s`, `15m`, `2h30m` or `1d` (humantime's grammar).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| e.to_string())
}

/// Prints a duration compactly, to the coarsest units that keep it readable:
/// `850ms`, `12s`, `2m30s`, `1h05m`, `26h`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    if secs < 60 {
        let tenths = (ms % 1_000) / 100;
        return if secs < 10 && tenths > 0 {
            format!("{secs}.{tenths}s")
        } else {
            format!("{secs}s")
        };
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m, s) {
        (0, m, 0) => format!("{m}m"),
        // Past ten minutes the seconds are noise.
        (0, m, _) if m >= 10 => format!("{m}m"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) if h < 10 => format!("{h}h{m:02}m"),
        (h, _, _) => format!("{h}h"),
    }
}

/// Prints dollars with the precision the amount deserves: four significant digits below a cent,
/// cents below $1,000, whole dollars with separators above.
pub fn fmt_usd(amount: f64) -> String {
    if !amount.is_finite() {
        return "n/a".to_owned();
    }
    let sign = if amount < 0.0 { "-" } else { "" };
    let a = amount.abs();
    let body = if a == 0.0 {
        "0.00".to_owned()
    } else if a < 0.01 {
        // Enough decimals to show four significant digits of a fraction of a cent.
        let decimals = (-(a.log10().floor()) as usize + 3).min(9);
        trim_zeros(format!("{a:.decimals$}"), 2)
    } else if a < 1.0 {
        trim_zeros(format!("{a:.4}"), 2)
    } else if a < 1_000.0 {
        format!("{a:.2}")
    } else {
        group_thousands(a.round() as u64)
    };
    format!("{sign}${body}")
}

fn trim_zeros(mut s: String, keep_decimals: usize) -> String {
    let Some(dot) = s.find('.') else { return s };
    while s.len() > dot + 1 + keep_decimals && s.ends_with('0') {
        s.pop();
    }
    s
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Serde helpers that write durations as whole seconds in JSON output (`"slack_secs": 7200`).
pub mod serde_secs {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_written_in_configs() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h30m"), Ok(Duration::from_secs(9000)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5m").is_err());
    }

    #[test]
    fn durations_print_compactly() {
        assert_eq!(fmt_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(fmt_duration(Duration::from_millis(2_500)), "2.5s");
        assert_eq!(fmt_duration(Duration::from_secs(12)), "12s");
        assert_eq!(fmt_duration(Duration::from_secs(150)), "2m30s");
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
        assert_eq!(fmt_duration(Duration::from_secs(1213)), "20m");
        assert_eq!(fmt_duration(Duration::from_secs(3900)), "1h05m");
        assert_eq!(fmt_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(fmt_duration(Duration::from_secs(26 * 3600 + 60)), "26h");
    }

    #[test]
    fn dollars_keep_the_digits_that_matter() {
        assert_eq!(fmt_usd(0.0), "$0.00");
        assert_eq!(fmt_usd(0.003_612), "$0.003612");
        assert_eq!(fmt_usd(0.000_18), "$0.00018");
        assert_eq!(fmt_usd(0.25), "$0.25");
        assert_eq!(fmt_usd(0.123_45), "$0.1235");
        assert_eq!(fmt_usd(12.4), "$12.40");
        assert_eq!(fmt_usd(1_250.4), "$1,250");
        assert_eq!(fmt_usd(-3.5), "-$3.50");
    }
}
