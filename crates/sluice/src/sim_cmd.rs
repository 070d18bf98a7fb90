//! `sluice sim`: run the provider simulator on its own until SIGINT or SIGTERM.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use sluice_sim::{Sim, SimConfig};

/// Options of `sluice sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Port to listen on (127.0.0.1); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Simulator configuration (TOML); see docs/sim.md.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seed of the generated answers (overrides `seed` in the config).
    #[arg(long)]
    pub seed: Option<u64>,
}

pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => SimConfig::load(path)?,
        None => SimConfig::default(),
    };
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(path) = &args.config {
        // Checked here too so that a bad value is reported with the file it came from.
        if let Err(e) = config.validate() {
            anyhow::bail!("{}: {e}", path.display());
        }
    }
    let sim = Sim::start(config, ("127.0.0.1", args.port))
        .await
        .with_context(|| format!("cannot start the simulator on 127.0.0.1:{}", args.port))?;
    {
        // Scripts read the address from this first line, so it goes out at once.
        let mut out = std::io::stdout().lock();
        writeln!(out, "sluice sim listening on {}", sim.base_url())?;
        out.flush()?;
    }
    wait_for_signal().await?;
    sim.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("cannot listen for Ctrl-C")
}
