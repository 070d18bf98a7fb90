//! Live token streams of the tasks running in this process.
//!
//! A watcher subscribes and first receives everything produced so far, then every new delta as
//! it arrives, then the end. Nothing here is durable: the stored result is the truth, and a
//! watcher of a task that is not running here is served from the store.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::{broadcast, oneshot};

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Delta(String),
    /// The attempt failed after producing text; a retry starts over: drop what you have.
    Reset,
    /// The task finished; the final event is read from the store.
    Finished,
    /// The task failed for good, or was put back to run later.
    Stopped(String),
}

#[derive(Debug)]
struct Live {
    text: String,
    tx: broadcast::Sender<Update>,
}

#[derive(Debug, Default)]
struct State {
    live: HashMap<String, Live>,
    /// Watchers waiting for a task to start here, by task: each is told of its own task's start
    /// only, so a thousand waiting watchers do not all wake at every start.
    waiting: HashMap<String, Vec<(u64, oneshot::Sender<()>)>>,
    next_wait: u64,
}

/// Shared by the executor (which publishes) and the HTTP API (which subscribes).
#[derive(Debug, Clone, Default)]
pub struct Hub {
    state: Arc<Mutex<State>>,
}

/// A subscription: the text so far, and what comes next.
#[derive(Debug)]
pub struct Watch {
    pub so_far: String,
    pub updates: broadcast::Receiver<Update>,
}

/// Resolves when its task starts in this process. Dropping it unregisters it.
#[derive(Debug)]
pub struct StartWait {
    hub: Hub,
    task_id: String,
    key: u64,
    rx: oneshot::Receiver<()>,
}

impl Future for StartWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A closed sender means the hub dropped it at the start, too.
        Pin::new(&mut self.rx).poll(cx).map(drop)
    }
}

impl Drop for StartWait {
    fn drop(&mut self) {
        self.hub.with(|s| {
            if let Some(list) = s.waiting.get_mut(&self.task_id) {
                list.retain(|(k, _)| *k != self.key);
                if list.is_empty() {
                    s.waiting.remove(&self.task_id);
                }
            }
        });
    }
}

impl Hub {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of plain text buffers.
        let mut guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    pub fn start(&self, task_id: &str) {
        let waiting = self.with(|s| {
            s.live
                .entry(task_id.to_owned())
                .or_insert_with(|| Live { text: String::new(), tx: broadcast::channel(1024).0 });
            s.waiting.remove(task_id)
        });
        for (_, tx) in waiting.into_iter().flatten() {
            let _ = tx.send(());
        }
    }

    /// Watches a task running here, or, when it is not running here now, returns what resolves
    /// at its next start: one look under the lock, so a start in between is never missed.
    pub fn watch_or_wait(&self, task_id: &str) -> Result<Watch, StartWait> {
        self.with(|s| {
            if let Some(l) = s.live.get(task_id) {
                return Ok(Watch { so_far: l.text.clone(), updates: l.tx.subscribe() });
            }
            let (tx, rx) = oneshot::channel();
            s.next_wait += 1;
            let key = s.next_wait;
            s.waiting.entry(task_id.to_owned()).or_default().push((key, tx));
            Err(StartWait { hub: self.clone(), task_id: task_id.to_owned(), key, rx })
        })
    }

    pub fn delta(&self, task_id: &str, text: &str) {
        self.with(|s| {
            if let Some(l) = s.live.get_mut(task_id) {
                l.text.push_str(text);
                let _ = l.tx.send(Update::Delta(text.to_owned()));
            }
        });
    }

    pub fn reset(&self, task_id: &str) {
        self.with(|s| {
            if let Some(l) = s.live.get_mut(task_id) {
                l.text.clear();
                let _ = l.tx.send(Update::Reset);
            }
        });
    }

    /// Ends a task's stream; its watchers get `update` and then the channel closes.
    pub fn end(&self, task_id: &str, update: Update) {
        if let Some(l) = self.with(|s| s.live.remove(task_id)) {
            let _ = l.tx.send(update);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_watchers_get_what_was_produced_then_the_rest() {
        let hub = Hub::default();
        hub.start("t");
        hub.delta("t", "Hel");
        let mut early = hub.watch_or_wait("t").unwrap();
        hub.delta("t", "lo");
        let late = hub.watch_or_wait("t").unwrap();
        assert_eq!(early.so_far, "Hel");
        assert_eq!(late.so_far, "Hello");
        hub.end("t", Update::Finished);
        assert_eq!(early.updates.recv().await.unwrap(), Update::Delta("lo".into()));
        assert_eq!(early.updates.recv().await.unwrap(), Update::Finished);
        assert!(early.updates.recv().await.is_err(), "closed after the end");
        assert!(hub.watch_or_wait("t").is_err());
    }

    #[tokio::test]
    async fn a_waiting_watcher_wakes_at_its_own_task_start_only() {
        let hub = Hub::default();
        let Err(mut a) = hub.watch_or_wait("a") else { panic!("a is not running") };
        let Err(b) = hub.watch_or_wait("b") else { panic!("b is not running") };
        hub.start("other");
        let woke = tokio::time::timeout(std::time::Duration::from_millis(50), &mut a).await;
        assert!(woke.is_err(), "another task's start does not wake a's watcher");
        hub.start("a");
        tokio::time::timeout(std::time::Duration::from_secs(5), &mut a).await.unwrap();
        assert!(hub.watch_or_wait("a").is_ok(), "a runs: watched, not waited for");
        // A watcher that leaves takes its registration with it.
        drop(b);
        drop(a);
        assert!(hub.with(|s| s.waiting.is_empty()), "{:?}", hub.with(|s| s.waiting.len()));
    }
}
