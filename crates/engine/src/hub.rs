//! Live token streams of the tasks running in this process.
//!
//! A watcher subscribes and first receives everything produced so far, then every new delta as
//! it arrives, then the end. Nothing here is durable: the stored result is the truth, and a
//! watcher of a task that is not running here is served from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

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

/// Shared by the executor (which publishes) and the HTTP API (which subscribes).
#[derive(Debug, Clone, Default)]
pub struct Hub {
    live: Arc<Mutex<HashMap<String, Live>>>,
    /// Rung whenever a task starts, so a watcher waiting for its task never misses the start.
    started: Arc<tokio::sync::Notify>,
}

/// A subscription: the text so far, and what comes next.
#[derive(Debug)]
pub struct Watch {
    pub so_far: String,
    pub updates: broadcast::Receiver<Update>,
}

impl Hub {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Live>) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of plain text buffers.
        let mut guard = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    pub fn start(&self, task_id: &str) {
        self.with(|live| {
            live.entry(task_id.to_owned())
                .or_insert_with(|| Live { text: String::new(), tx: broadcast::channel(1024).0 });
        });
        self.started.notify_waiters();
    }

    /// Resolves at the next start of any task. Create it *before* checking [`Hub::watch`], so that
    /// a start in between is not missed.
    pub fn started(&self) -> std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>> {
        let mut n = Box::pin(self.started.clone().notified_owned());
        n.as_mut().enable();
        n
    }

    pub fn delta(&self, task_id: &str, text: &str) {
        self.with(|live| {
            if let Some(l) = live.get_mut(task_id) {
                l.text.push_str(text);
                let _ = l.tx.send(Update::Delta(text.to_owned()));
            }
        });
    }

    pub fn reset(&self, task_id: &str) {
        self.with(|live| {
            if let Some(l) = live.get_mut(task_id) {
                l.text.clear();
                let _ = l.tx.send(Update::Reset);
            }
        });
    }

    /// Ends a task's stream; its watchers get `update` and then the channel closes.
    pub fn end(&self, task_id: &str, update: Update) {
        if let Some(l) = self.with(|live| live.remove(task_id)) {
            let _ = l.tx.send(update);
        }
    }

    /// Watches a task running here; `None` when it is not (finished, queued, or elsewhere).
    pub fn watch(&self, task_id: &str) -> Option<Watch> {
        self.with(|live| {
            live.get(task_id).map(|l| Watch { so_far: l.text.clone(), updates: l.tx.subscribe() })
        })
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
        let mut early = hub.watch("t").unwrap();
        hub.delta("t", "lo");
        let late = hub.watch("t").unwrap();
        assert_eq!(early.so_far, "Hel");
        assert_eq!(late.so_far, "Hello");
        hub.end("t", Update::Finished);
        assert_eq!(early.updates.recv().await.unwrap(), Update::Delta("lo".into()));
        assert_eq!(early.updates.recv().await.unwrap(), Update::Finished);
        assert!(early.updates.recv().await.is_err(), "closed after the end");
        assert!(hub.watch("t").is_none());
    }
}
