//! Running the API: bind, serve, and shut down gracefully.
//!
//! Shutdown protocol: the `shutdown` signal stops the listener from accepting; axum lets in-flight
//! requests finish (each waits for its commit); then the last handle on the committer drops, its
//! workers drain whatever is queued and stop, and [`Running::stopped`] returns.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::routes::{AppState, router};

/// A server started with [`start`].
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    committers: Vec<JoinHandle<()>>,
}

/// Serves `state` on `listener` until [`Running::shutdown`] (or the end of `signal`).
pub fn start(
    listener: TcpListener,
    state: AppState,
    committers: Vec<JoinHandle<()>>,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(Arc::new(state));
    // Without TCP_NODELAY small responses wait on the client's delayed ACK (~40 ms).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                // Dropping the handle without calling shutdown leaves the server running, as
                // dropping a JoinHandle leaves its task running.
                let asked = async {
                    if stopped.await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    () = asked => {}
                    () = signal => {}
                }
            })
            .await
    });
    Ok(Running { addr, stop: Some(stop), task, committers })
}

impl Running {
    /// Stops accepting, finishes in-flight requests and commits, and waits until all is done.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.stopped().await
    }

    /// Waits until the server has stopped (after its signal) and every commit is done.
    pub async fn stopped(self) -> std::io::Result<()> {
        let served = self.task.await.map_err(std::io::Error::other)?;
        for c in self.committers {
            let _ = c.await;
        }
        served
    }
}
