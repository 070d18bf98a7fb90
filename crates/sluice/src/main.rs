//! `sluice`: stream what is urgent, batch the rest.
//!
//! The binary wires the crates together behind one CLI:
//! - `explain`: the lane verdict of every workload in a config, in dollars;
//! - `check`: validate a config;
//! - `serve`: the HTTP API, the stream executor, the batcher and the sinks, on a durable store;
//! - `run`: the same on a file of events, once, with results as JSONL;
//! - `demo`: a business day of the examples against the in-process simulator;
//! - `report` and `advise`: what happened, and what should change, from the store's history;
//! - `sim`: the Anthropic/OpenAI simulator on its own.

mod advise;
mod demo;
mod explain_cmd;
mod history_cmd;
mod job;
mod output;
mod report;
mod report_html;
mod run_cmd;
mod serve_cmd;
mod service;
mod sim_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// glibc's malloc spent a third of the ingest benchmark's CPU in its locks and free lists under
/// many threads; mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use sluice_core::Config;

/// Stream what is urgent, batch the rest: LLM work on business events at the right price.
///
/// For every workload sluice asks how soon the result is needed, what a delay costs, and whether
/// the volume makes batching worth it; then it streams, uses the flex tier, or batches.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the lane each workload gets (stream, flex or batch), why, and what it costs a day.
    Explain(ExplainArgs),
    /// Validate a config; exits non-zero and names the file, line and field of every problem.
    Check(ConfigArg),
    /// Run sluice: accept events over HTTP, store them durably, stream what is urgent and batch
    /// the rest.
    Serve(ServeCommand),
    /// Play a simulated business day of the examples in about a minute, against the built-in
    /// simulator (no API key needed), and report what it cost and saved.
    Demo(demo::DemoArgs),
    /// Process a file of events once: each item in its lane, results as JSONL. Run it again after
    /// an interruption to carry on without paying twice.
    Run(RunCommand),
    /// Per workload: items, lanes, deadlines missed, latencies, batch turnaround, tokens, dollars
    /// spent, and what streaming everything would have cost.
    Report(history_cmd::ReportArgs),
    /// The lane decision again, on observed volumes, tokens, deadlines and turnaround: which
    /// workloads should change lane, and what that saves or costs a month.
    Advise(AdviseCommand),
    /// Run the Anthropic/OpenAI API simulator on loopback (no API key needed).
    Sim(sim_cmd::SimArgs),
}

#[derive(Debug, clap::Args)]
struct RunCommand {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    run: run_cmd::RunArgs,
}

#[derive(Debug, clap::Args)]
struct AdviseCommand {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    advise: history_cmd::AdviseArgs,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The config file.
    #[arg(long, short, env = "SLUICE_CONFIG", default_value = "sluice.toml", value_name = "PATH")]
    config: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// How to print the verdicts.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, clap::Args)]
struct ServeCommand {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    serve: serve_cmd::ServeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A table for people.
    Table,
    /// JSON for scripts: every figure behind every verdict.
    Json,
}

/// Why a command failed, and the exit code that says so.
#[derive(Debug)]
enum Failure {
    /// The config is invalid: 1, with the problems already worded for the user.
    Config(String),
    /// Anything else: 1.
    Other(anyhow::Error),
    /// Work was left unfinished (interrupted, or failed tasks): the given code, message printed.
    Exit(u8),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Explain(args) => load(&args.config.config).and_then(|config| {
            explain_cmd::run(&config, args.format == Format::Json).map_err(Failure::from)
        }),
        Command::Check(args) => {
            load(&args.config).and_then(|config| check(&config).map_err(Failure::from))
        }
        Command::Serve(args) => load(&args.config.config).and_then(|config| {
            serve_cmd::init_tracing();
            runtime()?.block_on(serve_cmd::run(config, args.serve)).map_err(Failure::from)
        }),
        Command::Demo(args) => runtime().and_then(|rt| {
            let summary = rt.block_on(demo::run(args)).map_err(Failure::from)?;
            if summary.consistent && summary.unfinished == 0 {
                Ok(())
            } else {
                Err(Failure::Exit(1))
            }
        }),
        Command::Run(args) => load(&args.config.config).and_then(|config| {
            let outcome =
                runtime()?.block_on(run_cmd::run(config, args.run)).map_err(Failure::from)?;
            match outcome {
                run_cmd::Outcome::Done { failed: 0 } => Ok(()),
                run_cmd::Outcome::Done { .. } => Err(Failure::Exit(2)),
                run_cmd::Outcome::Interrupted => Err(Failure::Exit(130)),
            }
        }),
        Command::Report(args) => args.config.as_deref().map(load).transpose().and_then(|config| {
            runtime()?.block_on(history_cmd::report(config.as_ref(), args)).map_err(Failure::from)
        }),
        Command::Advise(args) => load(&args.config.config).and_then(|config| {
            runtime()?.block_on(history_cmd::advise(&config, args.advise)).map_err(Failure::from)
        }),
        Command::Sim(args) => {
            runtime().and_then(|rt| rt.block_on(sim_cmd::run(args)).map_err(Failure::from))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Other(e)) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(Failure::Config(text)) => {
            output::eprint(&text);
            ExitCode::from(1)
        }
        Err(Failure::Other(e)) => {
            output::eprint(&format!("error: {e:#}\n"));
            ExitCode::from(1)
        }
        Err(Failure::Exit(code)) => ExitCode::from(code),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        Failure::Other(anyhow::Error::new(e).context("cannot start the async runtime"))
    })
}

/// Reads and validates a config; every problem is worded for the user.
fn load(path: &Path) -> Result<Config, Failure> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            "\n  = help: pass --config PATH (or set SLUICE_CONFIG); examples/sluice.toml is a complete example"
        } else {
            ""
        };
        Failure::Config(format!("error: cannot read config {name}: {e}{hint}\n"))
    })?;
    Config::parse(&source, &name).map_err(|e| Failure::Config(e.to_string()))
}

fn check(config: &Config) -> anyhow::Result<()> {
    let explained = sluice_core::explain::explain(config);
    let count = |lane| explained.rows.iter().filter(|r| r.lane == lane).count();
    let mut types: Vec<&str> = config.workloads.iter().map(|w| w.event_type.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    output::print(&format!(
        "{} is valid: {} providers, {} workloads on {} event types ({} stream, {} flex, {} batch)\n",
        config.source_name,
        config.providers.len(),
        config.workloads.len(),
        types.len(),
        count(sluice_core::Lane::Stream),
        count(sluice_core::Lane::Flex),
        count(sluice_core::Lane::Batch),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
