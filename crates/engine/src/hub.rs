//! Live token streams of the tasks running in this process.
//!
//! A watcher subscribes and first receives everything produced so far, then every new delta as
//! it arrives, then the end. Nothing here is durable: the stored result is the truth, and a
//! watcher of a task that is not running here is served from the store.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use sluice_store::ResultRecord;
use tokio::sync::{broadcast, oneshot};

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Delta(String),
    /// The attempt failed after producing text, or a new run of the task took over from one
    /// that lost it: what follows starts over, so drop what you have.
    Reset,
    /// The task finished, and its result is stored: here is what its final event says, so that
    /// no watcher needs to read it back.
    Finished(Arc<Finished>),
    /// The task failed for good, or was put back to run later.
    Stopped(String),
}

/// A finished task, as the executor stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub workload: String,
    pub lane: String,
    pub result: ResultRecord,
    /// Over all the task's ledger lines, as a read of the task would say.
    pub cost_nanousd: i64,
}

/// Updates a watcher may fall behind by before it is sent a `reset` and the text so far.
const WATCHER_LAG: usize = 1024;

/// One run of a task in this process, from [`Hub::start`]. A run that lost its lease may go on
/// a while before it notices, and this process may have claimed the task again meanwhile: what a
/// run publishes counts only while it is the task's latest run here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run(u64);

impl Run {
    /// A task that ends here without starting (a budget cap stopped it first).
    pub const NONE: Run = Run(0);
}

#[derive(Debug)]
struct Live {
    run: Run,
    text: String,
    /// Made for the first watcher: a channel is a ring of `WATCHER_LAG` slots (~64 KiB, each
    /// initialised), which a task that no one follows (its result goes to a sink) need not pay for.
    tx: Option<broadcast::Sender<Update>>,
}

/// How many ended tasks the hub remembers (ids only): for a watcher that arrives just after.
const RECENT_ENDS: usize = 4096;

#[derive(Debug, Default)]
struct State {
    live: HashMap<String, Live>,
    /// The last [`RECENT_ENDS`] tasks that ended here, oldest first, and the same as a set (one
    /// allocation per id for both).
    ended: VecDeque<Arc<str>>,
    ended_set: HashSet<Arc<str>>,
    /// Watchers waiting for a task to start (or end) here, by task: each is told of its own
    /// task's start only, so a thousand waiting watchers do not all wake at every start.
    waiting: HashMap<String, Vec<(u64, oneshot::Sender<()>)>>,
    next_wait: u64,
    next_run: u64,
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

/// Resolves when its task starts in this process, or ends here without starting. Dropping it
/// unregisters it.
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

    pub fn start(&self, task_id: &str) -> Run {
        let (run, waiting) = self.with(|s| {
            s.next_run += 1;
            let run = Run(s.next_run);
            match s.live.get_mut(task_id) {
                // An earlier run here lost the task and has not noticed yet: its watchers
                // follow this run from the start.
                Some(l) => {
                    l.run = run;
                    l.text.clear();
                    if let Some(tx) = &l.tx {
                        let _ = tx.send(Update::Reset);
                    }
                }
                None => {
                    s.live.insert(task_id.to_owned(), Live { run, text: String::new(), tx: None });
                }
            }
            (run, s.waiting.remove(task_id))
        });
        for (_, tx) in waiting.into_iter().flatten() {
            let _ = tx.send(());
        }
        run
    }

    /// Whether the task ended here a moment ago (among the last few thousand to end): its
    /// outcome is in the store, so a watcher need not wait for it to start.
    pub fn ended_recently(&self, task_id: &str) -> bool {
        self.with(|s| s.ended_set.contains(task_id))
    }

    /// Whether the task runs in this process now.
    pub fn is_live(&self, task_id: &str) -> bool {
        self.with(|s| s.live.contains_key(task_id))
    }

    /// Watches a task running here, or, when it is not running here now, returns what resolves
    /// at its next start: one look under the lock, so a start in between is never missed.
    pub fn watch_or_wait(&self, task_id: &str) -> Result<Watch, StartWait> {
        self.with(|s| {
            if let Some(l) = s.live.get_mut(task_id) {
                let tx = l.tx.get_or_insert_with(|| broadcast::channel(WATCHER_LAG).0);
                return Ok(Watch { so_far: l.text.clone(), updates: tx.subscribe() });
            }
            let (tx, rx) = oneshot::channel();
            s.next_wait += 1;
            let key = s.next_wait;
            s.waiting.entry(task_id.to_owned()).or_default().push((key, tx));
            Err(StartWait { hub: self.clone(), task_id: task_id.to_owned(), key, rx })
        })
    }

    pub fn delta(&self, task_id: &str, run: Run, text: &str) {
        self.with(|s| {
            if let Some(l) = s.live.get_mut(task_id).filter(|l| l.run == run) {
                l.text.push_str(text);
                if let Some(tx) = &l.tx {
                    let _ = tx.send(Update::Delta(text.to_owned()));
                }
            }
        });
    }

    pub fn reset(&self, task_id: &str, run: Run) {
        self.with(|s| {
            if let Some(l) = s.live.get_mut(task_id).filter(|l| l.run == run) {
                l.text.clear();
                if let Some(tx) = &l.tx {
                    let _ = tx.send(Update::Reset);
                }
            }
        });
    }

    /// Ends a task's stream; its watchers get `update` and then the channel closes. Watchers
    /// waiting for it to start are woken too: a task can end here without starting (a budget
    /// cap held it), and they learn its new state at once, not at their next read of the store.
    /// The end of a run that is not live here (it ended already, or a newer run took over)
    /// changes nothing; an end with [`Run::NONE`] comes from the task's latest claim, and ends
    /// any run still live here.
    pub fn end(&self, task_id: &str, run: Run, update: Update) {
        let (live, waiting) = self.with(|s| {
            if run != Run::NONE && s.live.get(task_id).is_none_or(|l| l.run != run) {
                return (None, None);
            }
            if !s.ended_set.contains(task_id) {
                let id: Arc<str> = task_id.into();
                s.ended_set.insert(id.clone());
                s.ended.push_back(id);
                if s.ended.len() > RECENT_ENDS
                    && let Some(old) = s.ended.pop_front()
                {
                    s.ended_set.remove(&old);
                }
            }
            (s.live.remove(task_id), s.waiting.remove(task_id))
        });
        if let Some(tx) = live.and_then(|l| l.tx) {
            let _ = tx.send(update);
        }
        for (_, tx) in waiting.into_iter().flatten() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_watchers_get_what_was_produced_then_the_rest() {
        let hub = Hub::default();
        let run = hub.start("t");
        hub.delta("t", run, "Hel");
        let mut early = hub.watch_or_wait("t").unwrap();
        hub.delta("t", run, "lo");
        let late = hub.watch_or_wait("t").unwrap();
        assert_eq!(early.so_far, "Hel");
        assert_eq!(late.so_far, "Hello");
        let finished = Arc::new(Finished {
            workload: "w".into(),
            lane: "stream".into(),
            result: ResultRecord {
                output: "Hello".into(),
                stop_reason: "end_turn".into(),
                input_tokens: 3,
                cached_input_tokens: 0,
                output_tokens: 2,
                first_token_ms: Some(1),
                created_at: 0,
            },
            cost_nanousd: 5,
        });
        hub.end("t", run, Update::Finished(finished.clone()));
        assert_eq!(early.updates.recv().await.unwrap(), Update::Delta("lo".into()));
        assert_eq!(early.updates.recv().await.unwrap(), Update::Finished(finished));
        assert!(early.updates.recv().await.is_err(), "closed after the end");
        assert!(hub.watch_or_wait("t").is_err());
    }

    #[tokio::test]
    async fn a_task_no_one_follows_has_no_channel_until_someone_does() {
        let hub = Hub::default();
        let run = hub.start("t");
        hub.delta("t", run, "unwatched ");
        assert!(hub.with(|s| s.live["t"].tx.is_none()), "no channel for no watcher");
        let mut watch = hub.watch_or_wait("t").unwrap();
        assert_eq!(watch.so_far, "unwatched ");
        hub.delta("t", run, "then watched");
        assert_eq!(watch.updates.recv().await.unwrap(), Update::Delta("then watched".into()));
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

    #[tokio::test]
    async fn a_task_that_ends_without_starting_wakes_its_waiting_watchers() {
        let hub = Hub::default();
        let Err(wait) = hub.watch_or_wait("held") else { panic!("not running") };
        hub.end("held", Run::NONE, Update::Stopped("held by the budget".into()));
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .expect("woken by the end, not left to its next read of the store");
        assert!(hub.with(|s| s.waiting.is_empty() && s.live.is_empty()));
    }

    /// This process claims a task again while its earlier run, which lost the lease, has not
    /// noticed yet: the watchers follow the new run, and nothing the old one does reaches them.
    #[tokio::test]
    async fn a_run_that_lost_its_task_cannot_touch_the_next_run_here() {
        let hub = Hub::default();
        let old = hub.start("t");
        hub.delta("t", old, "old text");
        let mut watch = hub.watch_or_wait("t").unwrap();
        let new = hub.start("t");
        assert_eq!(watch.updates.recv().await.unwrap(), Update::Reset, "drop the old run's text");
        hub.delta("t", old, " more old text");
        hub.delta("t", new, "new");
        hub.reset("t", old);
        hub.end("t", old, Update::Stopped("another worker took the task over".into()));
        assert!(!hub.ended_recently("t"));
        assert_eq!(hub.watch_or_wait("t").unwrap().so_far, "new");
        assert_eq!(watch.updates.recv().await.unwrap(), Update::Delta("new".into()));
        hub.end("t", new, Update::Stopped("done".into()));
        assert_eq!(watch.updates.recv().await.unwrap(), Update::Stopped("done".into()));
        assert!(hub.ended_recently("t"));
        // A run ends once: a second end (its outcome written after it was told of the loss)
        // reaches no one.
        let Err(mut waiting) = hub.watch_or_wait("t") else { panic!("t is not running") };
        hub.end("t", new, Update::Stopped("again".into()));
        let woke = tokio::time::timeout(std::time::Duration::from_millis(50), &mut waiting).await;
        assert!(woke.is_err(), "a waiting watcher is not woken by an ended run");

        // A claim stopped by a budget cap before it starts ends whatever run is still here.
        let stale = hub.start("u");
        let mut watch = hub.watch_or_wait("u").unwrap();
        hub.end("u", Run::NONE, Update::Stopped("held".into()));
        assert_eq!(watch.updates.recv().await.unwrap(), Update::Stopped("held".into()));
        hub.delta("u", stale, "late");
        assert!(hub.watch_or_wait("u").is_err(), "not live here any more");
    }

    #[test]
    fn ends_are_remembered_for_a_while() {
        let hub = Hub::default();
        let run = hub.start("first");
        hub.end("first", run, Update::Stopped("done".into()));
        assert!(hub.ended_recently("first"), "a watcher arriving now reads the store at once");
        assert!(!hub.ended_recently("never-ran"));
        for i in 0..RECENT_ENDS {
            hub.end(&format!("t{i}"), Run::NONE, Update::Stopped("done".into()));
        }
        assert!(!hub.ended_recently("first"), "forgotten after {RECENT_ENDS} later ends");
        assert!(hub.ended_recently(&format!("t{}", RECENT_ENDS - 1)));
        assert_eq!(hub.with(|s| (s.ended.len(), s.ended_set.len())), (RECENT_ENDS, RECENT_ENDS));
    }
}
