//! `sluice demo`: one simulated business day of the examples, in about a minute, with no API key.
//!
//! It starts the simulator in-process (with the examples' responders, so a triage reads like a
//! triage), an SQLite store in a fresh folder, and the whole service on `examples/sluice.toml`
//! pointed at the simulator; then it plays `examples/events.jsonl` at the times the events
//! happened, compressed (`--speed 1440`: a day in a minute), and shows live what streams, what
//! waits for a batch, and what it costs. At the end: the report, and a check that sluice's ledger
//! matches what the simulator charged, to the nano-dollar.
//!
//! What is compressed: the arrival of events, and batch turnaround (the simulator's batches take
//! their usual half an hour to two hours of simulated time) with the batcher's max age scaled
//! alike. Each task is decided with the slack a real one would have (`needed_by` counts to the
//! compressed day's clock: a ticket of 09:30 has until 18:00, eight and a half hours, whenever the
//! demo runs), and its deadline is that slack in real time, so no deadline is tight enough to make
//! a batch escalate. Off-peak windows are left out: a compressed day would otherwise wait for the
//! real night.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_core::Config;
use sluice_core::config::{Deliver, ProviderKind};
use sluice_core::units::fmt_usd;
use sluice_engine::{BatcherOptions, ExecutorOptions};
use sluice_server::auth::Tokens;
use sluice_server::plan::DayClock;
use sluice_sim::{Dist, Sim, SimConfig};
use sluice_store::{HistoryRow, SqliteDurability, Store};

use crate::job;
use crate::output;
use crate::report::{Percentiles, Report};
use crate::service::{Env, Options, Service};

const EXAMPLE_CONFIG: &str = include_str!("../../../examples/sluice.toml");
const EXAMPLE_EVENTS: &str = include_str!("../../../examples/events.jsonl");
const EXAMPLE_RESPONDERS: &str = include_str!("../../../examples/responders.toml");

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How much faster than real time the day plays: 1440 plays 24 hours in one minute.
    #[arg(long, default_value_t = 1440.0, value_name = "FACTOR")]
    pub speed: f64,
    /// Folder for the store, the results and the report. Default: a new folder under the
    /// system's temporary folder.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// A config other than the embedded examples/sluice.toml.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Events other than the embedded examples/events.jsonl.
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,
    /// Scripted simulator answers other than the embedded examples/responders.toml.
    #[arg(long, value_name = "PATH")]
    pub responders: Option<PathBuf>,
}

/// What the demo found, also written to `summary.json`.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub dir: PathBuf,
    pub events: usize,
    pub tasks: usize,
    pub unfinished: usize,
    pub ledger_entries: usize,
    pub ledger_nanousd: i64,
    pub sim_charges: u64,
    pub sim_charged_pico_usd: u64,
    /// The ledger and the simulator's charge log agree (within rounding to the nano-dollar per
    /// entry).
    pub consistent: bool,
    pub wall_seconds: f64,
}

fn read(path: Option<&Path>, embedded: &'static str) -> anyhow::Result<(String, String)> {
    match path {
        Some(p) => Ok((
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
            p.display().to_string(),
        )),
        None => Ok((embedded.to_owned(), String::new())),
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<Summary> {
    // reqwest is built without a default TLS provider (the providers crate picks ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    if !(args.speed.is_finite() && (1.0..=1e7).contains(&args.speed)) {
        bail!("--speed {}: expected a factor between 1 (real time) and 10000000", args.speed);
    }
    let speed = args.speed;
    let (config_text, config_name) = read(args.config.as_deref(), EXAMPLE_CONFIG)?;
    let config_name =
        if config_name.is_empty() { "examples/sluice.toml".to_owned() } else { config_name };
    let mut config =
        Config::parse(&config_text, &config_name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (events_text, events_name) = read(args.events.as_deref(), EXAMPLE_EVENTS)?;
    let events_name =
        if events_name.is_empty() { "examples/events.jsonl".to_owned() } else { events_name };
    let lines = job::read_events(Path::new(&events_name), &events_text, &config)?;
    let (responders_text, responders_name) = read(args.responders.as_deref(), EXAMPLE_RESPONDERS)?;
    let mut sim_config: SimConfig = toml::from_str(&responders_text).map_err(|e| {
        let name =
            if responders_name.is_empty() { "examples/responders.toml" } else { &responders_name };
        anyhow::anyhow!("{name}: {e}")
    })?;

    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir()
            .join(format!("sluice-demo-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S"))),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let db = dir.join("sluice.db");
    if db.exists() {
        bail!(
            "{} already holds a demo's store; pass another --dir (or remove it) so that the report covers one day",
            dir.display()
        );
    }

    // The simulator: answers that take as long as real ones, batches of simulated hours.
    sim_config.seed = 20_261_125;
    sim_config.latency.time_to_first_token =
        Dist::LogNormal { median: Duration::from_millis(250), p95: Duration::from_millis(700) };
    sim_config.latency.per_token = Dist::Fixed(Duration::from_millis(3));
    sim_config.output.min_tokens = 40;
    sim_config.output.max_tokens = 400;
    sim_config.batch.turnaround_median = Duration::from_secs(30 * 60);
    sim_config.batch.turnaround_p95 = Duration::from_secs(2 * 3600);
    sim_config.batch.acceleration = speed;
    let sim = Sim::start(sim_config, "127.0.0.1:0").await.context("cannot start the simulator")?;

    // The config, pointed at the simulator and at files in the demo's folder.
    for p in &mut config.providers {
        let base = match p.kind {
            ProviderKind::Anthropic => sim.base_url().to_owned(),
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => sim.openai_base_url(),
        };
        p.base_url = url::Url::parse(&base)?;
    }
    config.batch.off_peak.clear();
    config.batch.max_age = config.batch.max_age.div_f64(speed).max(Duration::from_millis(200));
    let results_dir = dir.join("results");
    for w in &mut config.workloads {
        if !matches!(w.deliver, Deliver::None) {
            w.deliver = Deliver::File {
                path: results_dir.join(format!("{}.jsonl", w.name)).display().to_string(),
            };
        }
    }
    let order: Vec<String> = config.workloads.iter().map(|w| w.name.clone()).collect();
    let lanes_declared: BTreeMap<String, String> = sluice_core::explain::explain(&config)
        .rows
        .into_iter()
        .map(|r| (r.workload, r.lane.to_string()))
        .collect();
    let config = Arc::new(config);

    let store = Store::open(&format!("sqlite://{}", db.display()), SqliteDurability::Full)
        .await
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    let keys: Vec<String> = config.providers.iter().filter_map(|p| p.api_key_env.clone()).collect();
    let env: Env =
        Arc::new(move |name: &str| keys.iter().any(|k| k == name).then(|| "sk-demo".to_owned()));
    // The compressed day's midnight: the clock of `needed_by` deadlines and of the events' play.
    let midnight = Instant::now();
    let opts = Options {
        listen: ([127, 0, 0, 1], 0).into(),
        tokens: Tokens::default(),
        max_body_bytes: job::MAX_BODY_BYTES,
        executor: ExecutorOptions::for_config(&config),
        learn_turnaround: false,
        day_clock: DayClock::Compressed { midnight, speed },
        batcher: BatcherOptions {
            tick: Duration::from_millis(100),
            poll_min: Duration::from_millis(100),
            poll_max: Duration::from_millis(1000),
            ..BatcherOptions::default()
        },
    };
    let service =
        Service::start(config.clone(), store.clone(), env, opts, std::future::pending()).await?;
    let base = format!("http://{}", service.addr);

    output::eprint(&format!(
        "sluice demo: a business day of {} events ({}) on {}, {}× real time\n\
         simulator on {} · store and results in {}\n\n",
        lines.len(),
        events_name,
        config_name,
        speed,
        sim.base_url(),
        dir.display()
    ));

    // When each event happened, in seconds since the start of its day.
    let mut timed: Vec<(f64, &job::Line)> =
        lines.iter().map(|l| (time_of_day(&l.event).unwrap_or(0.0), l)).collect();
    timed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.number.cmp(&b.1.number)));

    let display = Display::new(&order, &lanes_declared);
    let http = reqwest::Client::new();
    let mut sent = 0usize;
    let mut next = 0usize;
    let mut last_refresh = Instant::now() - Duration::from_secs(1);
    let day = 86_400.0;
    let deadline = Instant::now() + Duration::from_secs_f64(day / speed) + Duration::from_secs(300);
    loop {
        let clock = midnight.elapsed().as_secs_f64() * speed;
        let due: Vec<&job::Line> =
            timed[next..].iter().take_while(|(t, _)| *t <= clock).map(|(_, l)| *l).collect();
        if !due.is_empty() {
            job::post(&http, &base, &due).await?;
            next += due.len();
            sent += due.len();
        }
        if last_refresh.elapsed() >= Duration::from_millis(200) || next == timed.len() {
            last_refresh = Instant::now();
            let rows = store.history(0).await?;
            let batches = store.open_batches().await?.len();
            display.show(clock.min(day), sent, lines.len(), &rows, batches);
            if next == timed.len()
                && rows.iter().all(|r| job::finished(&r.state))
                && !rows.is_empty()
            {
                break;
            }
        }
        if Instant::now() > deadline {
            display.finish();
            bail!(
                "the demo did not finish within 5 minutes of the end of its day; what is stored is in {}",
                dir.display()
            );
        }
        let wait = timed.get(next).map_or(0.05, |(t, _)| ((t - clock) / speed).clamp(0.0, 0.05));
        tokio::time::sleep(Duration::from_secs_f64(wait.max(0.005))).await;
    }
    display.finish();
    service.shutdown().await?;

    let rows = store.history(0).await?;
    let ledger = store.ledger_since(0).await?;
    let report = Report::build(&rows, &ledger, &order, 0, sluice_engine::now_ms());
    let charged = sim.charges().summary();
    let tolerance = i64::try_from(ledger.len()).unwrap_or(i64::MAX);
    let sim_nano = i64::try_from(charged.total_pico_usd / 1000).unwrap_or(i64::MAX);
    let consistent = (report.ledger_nanousd - sim_nano).abs() <= tolerance;

    let results: Vec<_> = rows.iter().map(|r| job::result_line(None, r)).collect();
    job::write_jsonl(&dir.join("results.jsonl"), &results)?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(
        dir.join("report.html"),
        crate::report_html::render(&report, "sluice demo: one business day"),
    )?;
    let summary = Summary {
        dir: dir.clone(),
        events: lines.len(),
        tasks: rows.len(),
        unfinished: rows.iter().filter(|r| !job::finished(&r.state)).count(),
        ledger_entries: ledger.len(),
        ledger_nanousd: report.ledger_nanousd,
        sim_charges: charged.requests,
        sim_charged_pico_usd: charged.total_pico_usd,
        consistent,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    std::fs::write(dir.join("summary.json"), serde_json::to_vec_pretty(&summary)?)?;
    sim.shutdown().await;

    let mut out = String::from("\n");
    out.push_str(&crate::report::render_table(&report, output::use_color(), output::width()));
    out.push_str(&format!(
        "times are those of the compressed day: at {speed}×, a batch that took 1s stands for {} of a real one.\n",
        sluice_core::units::fmt_duration(Duration::from_secs_f64(speed))
    ));
    out.push_str(&format!(
        "\nledger: {} over {} paid calls; the simulator charged {} over {} calls: {}\n",
        fmt_usd(report.ledger_nanousd as f64 / 1e9),
        ledger.len(),
        fmt_usd(charged.total_pico_usd as f64 / 1e12),
        charged.requests,
        if consistent { "they agree" } else { "THEY DISAGREE" }
    ));
    out.push_str(&format!(
        "\nfull results in {}:\n  report.html      the report with charts (open it in a browser)\n  results.jsonl    every task: output, tokens, cost, timings\n  results/         what each workload's sink received\n  sluice.db        the store: sluice report --store sqlite://{} [--format html]\n",
        dir.display(),
        db.display()
    ));
    output::print(&out)?;
    Ok(summary)
}

/// The first `…_at` timestamp of the payload, as seconds since midnight UTC of its day.
fn time_of_day(event: &serde_json::Value) -> Option<f64> {
    let payload = event.get("payload")?.as_object()?;
    payload.iter().find_map(|(k, v)| {
        if !k.ends_with("_at") {
            return None;
        }
        let t = chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
        let secs = t.timestamp().rem_euclid(86_400);
        Some(secs as f64)
    })
}

/// The live view: the simulated clock, then a line per workload.
struct Display {
    multi: MultiProgress,
    clock: ProgressBar,
    lines: Vec<(String, ProgressBar)>,
    declared: BTreeMap<String, String>,
    tty: bool,
    status: output::Every,
}

impl Display {
    fn new(order: &[String], declared: &BTreeMap<String, String>) -> Display {
        let tty = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if tty {
            ProgressDrawTarget::stderr_with_hz(8)
        } else {
            ProgressDrawTarget::hidden()
        });
        let clock = multi.add(ProgressBar::new(86_400));
        clock.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30.cyan/white}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("█▉▊▋▌▍▎▏ "),
        );
        let style = ProgressStyle::with_template("  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let header = multi.add(ProgressBar::new(0));
        header.set_style(style.clone());
        header.set_message(format!(
            "{:<18} {:<7} {:>9}  {:>11}  {:>9}  {:>8}  {:>10}",
            "workload", "lane", "done", "first token", "waiting", "in batch", "spent"
        ));
        let lines = order
            .iter()
            .map(|w| {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(style.clone());
                (w.clone(), bar)
            })
            .collect();
        Display {
            multi,
            clock,
            lines,
            declared: declared.clone(),
            tty,
            status: output::Every::new(Duration::from_secs(5)),
        }
    }

    fn show(&self, clock: f64, sent: usize, events: usize, rows: &[HistoryRow], batches: usize) {
        let secs = clock as u64;
        let spent: i64 = rows.iter().map(|r| r.cost_nanousd).sum();
        let streamed: i64 = rows.iter().map(|r| r.stream_cost_nanousd).sum();
        let done = rows.iter().filter(|r| job::finished(&r.state)).count();
        let summary = format!(
            "{sent}/{events} events · {done}/{} tasks done · {batches} batches running · {} spent (all streamed: {})",
            rows.len(),
            fmt_usd(spent as f64 / 1e9),
            fmt_usd(streamed as f64 / 1e9)
        );
        let hhmm = format!("{:02}:{:02}", secs / 3600, (secs / 60) % 60);
        if !self.tty {
            if self.status.due() {
                output::eprint(&format!("  {hhmm}  {summary}\n"));
            }
            return;
        }
        self.clock.set_prefix(hhmm);
        self.clock.set_position(secs.min(86_400));
        self.clock.set_message(summary);
        let mut by: BTreeMap<&str, Vec<&HistoryRow>> = BTreeMap::new();
        for r in rows {
            by.entry(r.workload.as_str()).or_default().push(r);
        }
        for (name, bar) in &self.lines {
            let mine = by.get(name.as_str()).map(Vec::as_slice).unwrap_or_default();
            let finished = mine.iter().filter(|r| job::finished(&r.state)).count();
            let ttft = Percentiles::of(
                mine.iter()
                    .filter_map(|r| r.first_token_at.map(|t| (t - r.created_at) as f64))
                    .collect(),
            );
            let waiting = mine.iter().filter(|r| r.lane == "batch" && r.state == "queued").count();
            let in_batch = mine.iter().filter(|r| r.state == "batched").count();
            let cost: i64 = mine.iter().map(|r| r.cost_nanousd).sum();
            let lane = self.declared.get(name).map_or("", String::as_str);
            bar.set_message(format!(
                "{:<18} {:<7} {:>9}  {:>11}  {:>9}  {:>8}  {:>10}",
                name,
                lane,
                format!("{finished}/{}", mine.len()),
                ttft.p50.map_or("–".to_owned(), |v| format!("{v:.0} ms")),
                waiting,
                in_batch,
                fmt_usd(cost as f64 / 1e9)
            ));
        }
    }

    fn finish(&self) {
        self.clock.finish();
        for (_, b) in &self.lines {
            b.finish();
        }
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_placed_at_their_time_of_day() {
        let e = serde_json::json!({"type": "t", "payload": {"id": 1, "created_at": "2026-11-25T09:30:15Z"}});
        assert_eq!(time_of_day(&e), Some(9.0 * 3600.0 + 30.0 * 60.0 + 15.0));
        assert_eq!(time_of_day(&serde_json::json!({"payload": {}})), None);
    }

    #[test]
    fn the_embedded_examples_agree_with_each_other() {
        let config = Config::parse(EXAMPLE_CONFIG, "examples/sluice.toml").unwrap();
        let lines =
            job::read_events(Path::new("examples/events.jsonl"), EXAMPLE_EVENTS, &config).unwrap();
        assert!(lines.len() > 300);
        assert!(lines.iter().all(|l| time_of_day(&l.event).is_some()), "every event has a time");
        let sim: SimConfig = toml::from_str(EXAMPLE_RESPONDERS).unwrap();
        assert!(!sim.responders.is_empty());
    }
}
