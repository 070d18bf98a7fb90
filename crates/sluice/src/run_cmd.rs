//! `sluice run --config C events.jsonl`: the one-shot job. Ingests the file into the store,
//! processes every item in its workload's lane, waits for all of it, and writes one result line per
//! task. Interrupted and run again, it carries on: the events replay by their idempotency keys,
//! finished tasks stay finished, running batches are followed from their stored ids.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_core::Config;
use sluice_engine::{BatcherOptions, ExecutorOptions};
use sluice_server::auth::Tokens;

use crate::job::{self, finished};
use crate::output;
use crate::serve_cmd::{StoreOpts, open_store, redact};
use crate::service::{Env, Options, Service};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The events, one JSON object per line: {"type": …, "payload": {…}, "idempotency_key": …}.
    #[arg(value_name = "EVENTS.jsonl")]
    pub events: PathBuf,
    /// Where to write the results, one JSON line per task.
    #[arg(long, short, default_value = "results.jsonl", value_name = "PATH")]
    pub output: PathBuf,
    /// The store: run again with the same one to resume.
    #[command(flatten)]
    pub store: StoreOpts,
    /// Submit batches now even outside the config's off-peak windows.
    #[arg(long)]
    pub ignore_off_peak: bool,
}

/// How `run` ended.
pub enum Outcome {
    Done { failed: usize },
    Interrupted,
}

pub async fn run(mut config: Config, args: RunArgs) -> anyhow::Result<Outcome> {
    // reqwest is built without a default TLS provider (the providers crate picks ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = std::fs::read_to_string(&args.events)
        .with_context(|| format!("cannot read {}", args.events.display()))?;
    let lines = job::read_events(&args.events, &text, &config)?;
    // The file is all the work there is: waiting for a batch to fill up gains nothing.
    config.batch.max_age = config.batch.max_age.min(Duration::from_secs(2));
    if args.ignore_off_peak {
        config.batch.off_peak.clear();
    } else if !config.batch.off_peak.is_empty() {
        let windows: Vec<String> = config
            .batch
            .off_peak
            .iter()
            .map(|w| format!("{}-{}", w.start.format("%H:%M"), w.end.format("%H:%M")))
            .collect();
        output::eprint(&format!(
            "batches are submitted inside the off-peak window(s) {} unless a deadline forces them earlier; pass --ignore-off-peak to submit at once\n",
            windows.join(", ")
        ));
    }
    let env: Env = Arc::new(|name: &str| std::env::var(name).ok());
    // A missing key is said before anything is created on disk.
    sluice_engine::executor::build_clients(&config, |name| env(name)).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n  = help: against `sluice sim` (set each provider's base_url to it) any key works; `sluice demo` needs none"
        )
    })?;
    let (store, url) = open_store(&args.store).await?;
    let order: Vec<String> = config.workloads.iter().map(|w| w.name.clone()).collect();
    let opts = Options {
        listen: ([127, 0, 0, 1], 0).into(),
        tokens: Tokens::default(),
        max_body_bytes: job::MAX_BODY_BYTES,
        executor: ExecutorOptions::for_config(&config),
        learn_turnaround: true,
        day_clock: Default::default(),
        batcher: BatcherOptions { poll_max: Duration::from_secs(30), ..BatcherOptions::default() },
    };
    let service =
        Service::start(Arc::new(config), store.clone(), env, opts, std::future::pending()).await?;
    let base = format!("http://{}", service.addr);

    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let events: Vec<&job::Line> = lines.iter().collect();
    let http = reqwest::Client::new();
    let ids = tokio::select! {
        ids = job::post(&http, &base, &events) => ids?,
        _ = &mut interrupted => {
            service.shutdown().await?;
            output::eprint("interrupted while sending events: the ones acknowledged are stored; run the same command again to carry on\n");
            return Ok(Outcome::Interrupted);
        }
    };
    let line_of: HashMap<&str, usize> =
        ids.iter().map(String::as_str).zip(lines.iter().map(|l| l.number)).collect();
    let since = store.earliest_received(&ids).await?.unwrap_or(0);
    output::eprint(&format!(
        "{} events from {} (store: {})\n",
        ids.len(),
        args.events.display(),
        redact(&url)
    ));

    let bars = Bars::new();
    let done = loop {
        let read = Instant::now();
        // Only this run's tasks: a `sluice serve` on the same store has work of its own, some
        // of it batched for hours, which this run must neither count nor wait for.
        let progress = store.progress_of(&ids).await?;
        // Counting a run of a million tasks takes seconds: the bars then move less often rather
        // than the count taking a core from the work it counts, but never less than every 5 s.
        let pause = (read.elapsed() * 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
        let state = Tally::of(&progress.rows);
        bars.show(&state, progress.batches);
        if state.total > 0 && state.open == 0 {
            break true;
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = &mut interrupted => break false,
        }
    };
    bars.finish();
    if !done {
        output::eprint(
            "interrupted: stopping after the calls in flight; batches already submitted keep running at the provider\n",
        );
        service.shutdown().await?;
        output::eprint(
            "run the same command again to carry on: finished work is neither redone nor paid for again\n",
        );
        return Ok(Outcome::Interrupted);
    }
    service.shutdown().await?;

    let rows: Vec<_> = store
        .history(since)
        .await?
        .into_iter()
        .filter(|r| line_of.contains_key(r.event_id.as_str()))
        .collect();
    let mut sorted: Vec<_> = rows.iter().collect();
    sorted.sort_by_key(|r| (line_of.get(r.event_id.as_str()).copied(), r.created_at));
    let out: Vec<_> = sorted
        .iter()
        .map(|r| job::result_line(line_of.get(r.event_id.as_str()).copied(), r))
        .collect();
    job::write_jsonl(&args.output, &out)?;
    // The report counts only the ledger lines of these rows' tasks.
    let ledger = store.ledger_since(since).await?;
    let report =
        crate::report::Report::build(&rows, &ledger, &order, since, sluice_engine::now_ms());
    output::print(&crate::report::render_table(&report, output::use_color(), output::width()))?;
    let failed = rows.iter().filter(|r| r.state != "succeeded").count();
    output::print(&format!("{} results written to {}\n", out.len(), args.output.display()))?;
    Ok(Outcome::Done { failed })
}

/// Tasks counted for the progress bars.
#[derive(Debug, Default)]
struct Tally {
    total: u64,
    finished: u64,
    open: u64,
    failed: u64,
    streaming: u64,
    waiting_for_batch: u64,
    in_batch: u64,
}

impl Tally {
    fn of(rows: &[sluice_store::ProgressRow]) -> Tally {
        let mut t = Tally::default();
        for r in rows {
            let n = u64::try_from(r.count).unwrap_or(0);
            t.total += n;
            if finished(&r.state) {
                t.finished += n;
                if r.state != "succeeded" {
                    t.failed += n;
                }
                continue;
            }
            t.open += n;
            match (r.lane.as_str(), r.state.as_str()) {
                ("batch", "batched") => t.in_batch += n,
                ("batch", _) => t.waiting_for_batch += n,
                (_, "running") => t.streaming += n,
                _ => {}
            }
        }
        t
    }
}

/// The progress display: bars on a terminal, a line every few seconds otherwise.
struct Bars {
    multi: MultiProgress,
    items: ProgressBar,
    detail: ProgressBar,
    tty: bool,
    lines: output::Every,
}

impl Bars {
    fn new() -> Bars {
        let tty = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let items = multi.add(ProgressBar::new(0));
        items.set_style(
            ProgressStyle::with_template(
                "items   [{bar:40.green/white}] {pos}/{len}  {percent}%  elapsed {elapsed}, left ~{eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▉▊▋▌▍▎▏ "),
        );
        let detail = multi.add(ProgressBar::new(0));
        detail.set_style(
            ProgressStyle::with_template("        {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bars { multi, items, detail, tty, lines: output::Every::new(Duration::from_secs(5)) }
    }

    fn show(&self, t: &Tally, open_batches: usize) {
        self.items.set_length(t.total);
        self.items.set_position(t.finished);
        let msg = format!(
            "{} streaming · {} waiting for a batch · {} in {} running batch(es){}",
            t.streaming,
            t.waiting_for_batch,
            t.in_batch,
            open_batches,
            if t.failed > 0 { format!(" · {} failed", t.failed) } else { String::new() }
        );
        if self.tty {
            self.detail.set_message(msg);
            return;
        }
        if self.lines.due() {
            output::eprint(&format!("{}/{} done · {msg}\n", t.finished, t.total));
        }
    }

    fn finish(&self) {
        self.items.finish();
        self.detail.finish();
        let _ = self.multi.clear();
    }
}
