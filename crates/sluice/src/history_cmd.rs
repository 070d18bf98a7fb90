//! `sluice report` and `sluice advise`: both read the store's history.

use std::path::PathBuf;

use anyhow::{Context, bail};
use sluice_core::Config;
use sluice_store::Store;

use crate::output;
use crate::serve_cmd::{StoreOpts, Sync, open_store, redact};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// A table for people.
    Table,
    /// JSON for scripts.
    Json,
    /// One self-contained HTML file with charts.
    Html,
}

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The store to read: sqlite://PATH or postgres://…  Default: the SQLite file in the data
    /// folder, as `serve` and `run` use it.
    #[arg(long, env = "SLUICE_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Folder of the default SQLite store.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "sluice-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Only work accepted since then: a duration back from now (`24h`, `7d`) or an RFC 3339
    /// time (`2026-11-25T00:00:00Z`). Default: everything.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A config, to list workloads in its order (optional).
    #[arg(long, short, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, short, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Write to this file instead of standard output.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AdviseArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// How many days the history stands for. Default: its span, counted as at least one day.
    #[arg(long, value_name = "N")]
    pub days: Option<f64>,
    /// How to print the advice.
    #[arg(long, short, value_enum, default_value_t = crate::Format::Table)]
    pub format: crate::Format,
}

/// Unix ms of `--since`.
pub fn since_ms(since: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<i64> {
    let Some(text) = since else { return Ok(0) };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    match humantime::parse_duration(text) {
        Ok(d) => {
            let back = chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .with_context(|| format!("--since {text:?}: too far back"))?;
            Ok(back.timestamp_millis())
        }
        Err(_) => bail!(
            "--since {text:?}: expected a duration back from now (24h, 7d) or an RFC 3339 time (2026-11-25T00:00:00Z)"
        ),
    }
}

/// Opens the store to read; unlike `serve` and `run`, never creates an empty one.
async fn open(args: &StoreArgs) -> anyhow::Result<(Store, String)> {
    let path = args.data_dir.join("sluice.db");
    if args.store.is_none() && !path.exists() {
        bail!(
            "no store at {}: pass --store URL or --data-dir DIR (where `sluice serve` or `sluice run` kept it)",
            path.display()
        );
    }
    open_store(&StoreOpts {
        store: args.store.clone(),
        data_dir: args.data_dir.clone(),
        sqlite_sync: Sync::Full,
    })
    .await
}

pub async fn report(config: Option<&Config>, args: ReportArgs) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let since = since_ms(args.store.since.as_deref(), now)?;
    let (store, url) = open(&args.store).await?;
    let rows = store.history(since).await?;
    let ledger = store.ledger_since(since).await?;
    let order: Vec<String> =
        config.map(|c| c.workloads.iter().map(|w| w.name.clone()).collect()).unwrap_or_default();
    let mut report =
        crate::report::Report::build(&rows, &ledger, &order, since, now.timestamp_millis());
    report.maybe_billed = store.maybe_spent_since(since).await?;
    let text = match args.format {
        ReportFormat::Table => {
            let color = args.output.is_none() && output::use_color();
            crate::report::render_table(&report, color, output::width())
        }
        ReportFormat::Json => {
            let mut t = serde_json::to_string_pretty(&report)?;
            t.push('\n');
            t
        }
        ReportFormat::Html => {
            crate::report_html::render(&report, &format!("sluice report: {}", redact(&url)))
        }
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            output::eprint(&format!("report written to {}\n", path.display()));
            Ok(())
        }
        None => output::print(&text),
    }
}

pub async fn advise(config: &Config, args: AdviseArgs) -> anyhow::Result<()> {
    if let Some(d) = args.days
        && !(d.is_finite() && d > 0.0)
    {
        bail!("--days {d}: expected a positive number of days");
    }
    let since = since_ms(args.store.since.as_deref(), chrono::Utc::now())?;
    let (store, _) = open(&args.store).await?;
    let rows = store.history(since).await?;
    let batches: Vec<_> =
        store.batches(100_000).await?.into_iter().filter(|b| b.created_at >= since).collect();
    let a = crate::advise::advise(config, &rows, &batches, args.days);
    if args.format == crate::Format::Json {
        let mut t = serde_json::to_string_pretty(&a)?;
        t.push('\n');
        return output::print(&t);
    }
    output::print(&crate::advise::render_table(&a, output::use_color(), output::width()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z").unwrap().to_utc();
        assert_eq!(since_ms(None, now).unwrap(), 0);
        assert_eq!(since_ms(Some("1h"), now).unwrap(), now.timestamp_millis() - 3_600_000);
        assert_eq!(
            since_ms(Some("2026-11-26T00:00:00Z"), now).unwrap(),
            now.timestamp_millis() - 12 * 3_600_000
        );
        let err = since_ms(Some("yesterday"), now).unwrap_err().to_string();
        assert!(err.contains("\"yesterday\"") && err.contains("24h"), "{err}");
        // Past what a date can hold: an error, not a panic.
        for far in ["1000000y", "300000000y"] {
            let err = since_ms(Some(far), now).unwrap_err().to_string();
            assert!(err.contains("too far back"), "{err}");
        }
    }
}
