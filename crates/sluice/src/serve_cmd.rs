//! `sluice serve`: the HTTP API on a durable store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use sluice_core::Config;
use sluice_engine::{BatcherOptions, ExecutorOptions};
use sluice_server::auth::Tokens;
use sluice_store::{SqliteDurability, Store};

use crate::output;
use crate::service::{Env, Options, Service};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Without SLUICE_API_TOKENS only loopback addresses are allowed.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub store: StoreOpts,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub max_body_bytes: usize,
}

/// Where `serve` and `run` keep their state.
#[derive(Debug, clap::Args)]
pub struct StoreOpts {
    /// Where to keep events and results: sqlite://PATH or postgres://USER@HOST/DB.
    /// Default: an SQLite file in the data folder.
    #[arg(long, env = "SLUICE_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Folder for the default SQLite store.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "sluice-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// SQLite durability: `full` survives power loss (default); `normal` only a crash of sluice,
    /// and commits faster.
    #[arg(long, value_enum, default_value_t = Sync::Full)]
    pub sqlite_sync: Sync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sync {
    Full,
    Normal,
}

pub async fn run(config: Config, args: ServeArgs) -> anyhow::Result<()> {
    let tokens = Tokens::parse(&std::env::var("SLUICE_API_TOKENS").unwrap_or_default());
    if tokens.is_empty() && !args.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {} without API tokens: anyone who can reach it could post events and read results.\n\
             Set SLUICE_API_TOKENS (comma-separated), or listen on a loopback address such as 127.0.0.1:8080.",
            args.listen
        );
    }
    let (store, url) = open_store(&args.store).await?;
    let env: Env = Arc::new(|name: &str| std::env::var(name).ok());
    let opts = Options {
        listen: args.listen,
        tokens: tokens.clone(),
        max_body_bytes: args.max_body_bytes,
        executor: ExecutorOptions::for_config(&config),
        learn_turnaround: true,
        day_clock: Default::default(),
        batcher: BatcherOptions::default(),
    };
    let service = Service::start(Arc::new(config), store, env, opts, shutdown_signal()).await?;
    output::print(&format!(
        "sluice serving on http://{} (store: {})\n",
        service.addr,
        redact(&url)
    ))?;
    if tokens.is_empty() {
        tracing::warn!(
            "no SLUICE_API_TOKENS set: the API is open to anyone on this machine, and listens on loopback only"
        );
    } else {
        tracing::info!(tokens = tokens.len(), "API tokens required on /v1 routes");
    }
    service.stopped().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Opens `--store`, or the SQLite file in the data folder; returns it with its URL.
pub async fn open_store(opts: &StoreOpts) -> anyhow::Result<(Store, String)> {
    let url = opts
        .store
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", opts.data_dir.join("sluice.db").display()));
    let durability = match opts.sqlite_sync {
        Sync::Full => SqliteDurability::Full,
        Sync::Normal => SqliteDurability::Normal,
    };
    let store = Store::open(&url, durability)
        .await
        .with_context(|| format!("cannot open the store {}", redact(&url)))?;
    Ok((store, url))
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: no new requests; finishing the ones in flight");
}

/// A store URL without its password, for messages.
pub fn redact(url: &str) -> String {
    sluice_store::redact_url(url)
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}
