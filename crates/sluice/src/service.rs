//! The whole service in one process: the HTTP API, the stream executor, the batcher and the
//! deliverer on one store. `serve` runs it until a signal; `demo` and `run` start it on loopback,
//! post their events to it as any client would, and stop it when the work is done.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use sluice_core::Config;
use sluice_engine::sinks::DelivererOptions;
use sluice_engine::{Batcher, BatcherOptions, Deliverer, Executor, ExecutorOptions, Hub};
use sluice_server::auth::Tokens;
use sluice_server::ingest::Committer;
use sluice_server::plan::DayClock;
use sluice_server::{AppState, Running, ServerOptions};
use sluice_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where provider keys and webhook secrets come from: the process environment for `serve`, a
/// fixed key for the in-process simulator.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub struct Options {
    pub listen: SocketAddr,
    pub tokens: Tokens,
    pub max_body_bytes: usize,
    pub executor: ExecutorOptions,
    pub batcher: BatcherOptions,
    /// Let observed batch turnaround replace the config's in new decisions. The demo turns it off:
    /// its batches run in compressed time while its deadlines do not.
    pub learn_turnaround: bool,
    /// The clock of `needed_by` deadlines: the wall clock, except in the demo's compressed day.
    pub day_clock: DayClock,
}

/// A started service.
pub struct Service {
    pub addr: SocketAddr,
    running: Running,
    workers: Workers,
}

/// The workers, stopped in two steps: the executor and the batcher first (calls in flight finish
/// and store their results), then the deliverer, which delivers those results before it returns.
struct Workers {
    stop: watch::Sender<bool>,
    running: Vec<JoinHandle<()>>,
    stop_delivering: watch::Sender<bool>,
    delivering: JoinHandle<()>,
}

impl Service {
    /// Starts every part; the API stops accepting when `signal` completes or on [`Service::shutdown`].
    pub async fn start(
        config: Arc<Config>,
        store: Store,
        env: Env,
        opts: Options,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Service> {
        let (hook_keys, missing) = sluice_server::hook_keys(&config, |name| env(name));
        for m in &missing {
            tracing::warn!(hook = %m, "webhook secret not set, empty or not base64: deliveries to this source are refused with 503");
        }
        raise_open_files(opts.executor.max_in_flight);
        let hub = Hub::default();
        let executor = Executor::new(
            store.clone(),
            config.clone(),
            hub.clone(),
            |name| env(name),
            opts.executor,
        )?;
        let wake = executor.waker();
        let handoff = executor.handoff();
        let budget = executor.budget();
        let (stop, stopping) = watch::channel(false);
        let mut workers = vec![tokio::spawn(executor.run(stopping.clone()))];
        let batcher = Batcher::new(
            store.clone(),
            config.clone(),
            |name| env(name),
            Some(wake.clone()),
            opts.batcher,
        )?
        .with_budget(budget);
        let turnarounds = batcher.turnarounds();
        workers.push(tokio::spawn(batcher.run(stopping)));
        let deliverer = Deliverer::new(
            store.clone(),
            config.clone(),
            |name| env(name),
            DelivererOptions::default(),
        )?;
        let (stop_delivering, delivering) = watch::channel(false);
        let delivering = tokio::spawn(deliverer.run(delivering));
        let workers = Workers { stop, running: workers, stop_delivering, delivering };

        let committers = if store.backend() == "postgres" { 4 } else { 1 };
        let (committer, committing) =
            Committer::with_handoff(store.clone(), committers, Some(handoff));
        let state = AppState {
            config,
            store,
            committer,
            tokens: opts.tokens,
            hook_keys,
            metrics: sluice_server::metrics_handle(),
            options: ServerOptions {
                max_body_bytes: opts.max_body_bytes,
                day_clock: opts.day_clock,
            },
            hub: Some(hub),
            wake: Some(wake),
            turnarounds: opts.learn_turnaround.then_some(turnarounds),
        };
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let running = sluice_server::start(listener, state, committing, signal)?;
        Ok(Service { addr: running.addr, running, workers })
    }

    /// Waits for the API to stop (its signal), then stops the workers: calls in flight finish,
    /// nothing new is claimed.
    pub async fn stopped(self) -> anyhow::Result<()> {
        let Service { running, workers, .. } = self;
        running.stopped().await?;
        tracing::info!("every accepted event is committed; waiting for the calls in flight");
        workers.stop().await;
        Ok(())
    }

    /// Stops the API and then the workers.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let Service { running, workers, .. } = self;
        running.shutdown().await?;
        workers.stop().await;
        Ok(())
    }
}

impl Workers {
    /// Tells the workers to stop (calls in flight finish, nothing new is claimed) and waits for
    /// them; then the deliverer.
    async fn stop(self) {
        let _ = self.stop.send(true);
        for w in self.running {
            let _ = w.await;
        }
        let _ = self.stop_delivering.send(true);
        let _ = self.delivering.await;
    }
}

/// Each call in flight holds a socket, and so does each client following a task's tokens. Raises
/// the soft limit of open files to the hard one (as Go's runtime does at start; a shell's default
/// soft limit is often 1,024), and says so if that is still short for the call slots.
fn raise_open_files(call_slots: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            // A socket per call and per watcher, plus the store, listeners and clients' requests.
            let wanted = call_slots as u64 * 2 + 256;
            if limit < wanted {
                tracing::warn!(
                    limit,
                    call_slots,
                    "the open-file limit is low for this many calls at once, each with a client \
                     following it: raise it (ulimit -n, or LimitNOFILE= for systemd) or lower the \
                     providers' max_concurrency"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}
