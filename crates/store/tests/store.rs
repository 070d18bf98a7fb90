//! One suite, run against both backends: SQLite in a temporary file, and PostgreSQL in a fresh
//! schema of the database named by `SLUICE_TEST_DATABASE_URL` (skipped, saying so, when unset).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)] // test code: a failure should stop loudly

use sluice_store::*;

fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A batch as the assembler records it: `submitting`, on Anthropic.
fn batch_record(item_count: i64, bytes: i64, created_at: i64) -> BatchRecord {
    BatchRecord {
        id: id(),
        provider: "anthropic".into(),
        model: "claude-sonnet-5-5".into(),
        state: "submitting".into(),
        provider_batch_id: None,
        item_count,
        bytes,
        created_at,
        submitted_at: None,
        ended_at: None,
        last_error: None,
        reserved_nanousd: 0,
    }
}

fn lease(owner: &str, expires_at: i64) -> Lease {
    Lease { owner: owner.into(), expires_at }
}

fn task(workload: &str, state: TaskState, deadline: i64, after: Option<&str>) -> NewTask {
    NewTask {
        id: id(),
        workload: workload.into(),
        lane: "stream".into(),
        state,
        rule: "feasibility".into(),
        reason: "needed within 2m".into(),
        decision: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
        deadline,
        priority: 0,
        after_task_id: after.map(str::to_owned),
        lease: None,
    }
}

fn event(key: Option<&str>, hash: &str) -> NewEvent {
    let first = task("triage", TaskState::Queued, 1_000, None);
    let second = task("digest", TaskState::Pending, 5_000, Some(&first.id));
    NewEvent {
        id: id(),
        event_type: "ticket.created".into(),
        payload: serde_json::value::RawValue::from_string(r#"{"subject":"Refund"}"#.into())
            .unwrap(),
        idempotency_key: key.map(str::to_owned),
        request_hash: hash.into(),
        needed_within_ms: None,
        source: "api".into(),
        received_at: 100,
        tasks: vec![first, second],
    }
}

fn attempt(outcome: &str, at: i64) -> AttemptRecord {
    AttemptRecord {
        id: id(),
        lane: "stream".into(),
        batch_id: None,
        started_at: at,
        ended_at: Some(at + 1),
        outcome: outcome.into(),
        error: (outcome != "succeeded").then(|| format!("{outcome} at {at}")),
        provider_request_id: None,
    }
}

fn completion(at: i64) -> Completion {
    Completion {
        attempt_id: id(),
        started_at: at,
        finished_at: at + 10,
        provider_request_id: Some("req_1".into()),
        output: "billing".into(),
        stop_reason: "end_turn".into(),
        input_tokens: 100,
        cached_input_tokens: 0,
        output_tokens: 20,
        first_token_ms: Some(3),
        ledger: LedgerEntry {
            id: id(),
            workload: "triage".into(),
            provider: "anthropic".into(),
            model: "claude-haiku-5-5".into(),
            lane: "stream".into(),
            input_tokens: 100,
            cached_input_tokens: 0,
            output_tokens: 20,
            cost_nanousd: 20_000,
            stream_cost_nanousd: 20_000,
            created_at: at + 10,
        },
        deliveries: vec![NewDelivery { id: id(), sink: "file:results/triage.jsonl".into() }],
    }
}

/// A store, what keeps its files alive, and its URL (to open it again).
type Opened = (Store, Option<tempfile::TempDir>, String);

/// Raw SQL, for what the store's interface does not show (how it lays rows out).
async fn scalar(store: &Store, sql: &'static str) -> i64 {
    match store {
        Store::Sqlite(pool, _) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Store::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

async fn execute(store: &Store, sql: &str) {
    try_execute(store, sql).await.unwrap();
}

async fn try_execute(store: &Store, sql: &str) -> Result<u64, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    Ok(match store {
        Store::Sqlite(pool, _) => sqlx::query(sql).execute(pool).await?.rows_affected(),
        Store::Postgres(pool) => sqlx::query(sql).execute(pool).await?.rows_affected(),
    })
}

async fn sqlite() -> Option<Opened> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("data/sluice.db").display());
    Some((Store::open(&url, SqliteDurability::Full).await.unwrap(), Some(dir), url))
}

async fn postgres() -> Option<Opened> {
    let Ok(base) = std::env::var("SLUICE_TEST_DATABASE_URL") else {
        eprintln!(
            "skipped: SLUICE_TEST_DATABASE_URL is not set, so the PostgreSQL store suite did not run"
        );
        return None;
    };
    let url = Store::isolated_postgres_url(&base).await.unwrap();
    Some((Store::open(&url, SqliteDurability::Full).await.unwrap(), None, url))
}

macro_rules! suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn ingest_stores_the_event_and_its_tasks() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let ev = event(None, "h1");
                let out = store.ingest(&[vec![ev.clone()]]).await.unwrap();
                let done = out[0].as_ref().unwrap();
                assert!(!done[0].replayed);
                let (stored, tasks) = store.event(&ev.id).await.unwrap().unwrap();
                let payload: serde_json::Value =
                    serde_json::from_str(stored.payload.get()).unwrap();
                assert_eq!(payload["subject"], "Refund");
                assert_eq!(tasks.len(), 2);
                assert_eq!(tasks[0].workload, "triage");
                assert_eq!(tasks[1].state, TaskState::Pending);
                assert_eq!(store.counts().await.unwrap(), (1, 2));
                assert!(store.event("nope").await.unwrap().is_none());
            }

            #[tokio::test]
            async fn progress_and_history_hold_only_the_tasks_asked_for() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let mut old = event(None, "h-old");
                old.received_at = 100;
                let mut new = event(None, "h-new");
                new.received_at = 200;
                store.ingest(&[vec![old.clone()], vec![new.clone()]]).await.unwrap();
                let counted = |rows: Vec<ProgressRow>| {
                    let mut rows: Vec<_> = rows
                        .into_iter()
                        .map(|r| (r.workload, r.lane, r.state, r.count))
                        .collect();
                    rows.sort();
                    rows
                };
                let row = |w: &str, s: &str, n| (w.to_owned(), "stream".to_owned(), s.to_owned(), n);
                assert_eq!(
                    counted(store.progress(200).await.unwrap()),
                    [row("digest", "pending", 1), row("triage", "queued", 1)]
                );
                assert_eq!(
                    counted(store.progress(0).await.unwrap()),
                    [row("digest", "pending", 2), row("triage", "queued", 2)]
                );
                assert!(store.progress(201).await.unwrap().is_empty());
                // One job's events among others, in chunks of the id list.
                let mut ids: Vec<String> = (0..1_200).map(|i| format!("evt_absent_{i}")).collect();
                ids.push(new.id.clone());
                assert_eq!(
                    counted(store.progress_of(&ids).await.unwrap().rows),
                    [row("digest", "pending", 1), row("triage", "queued", 1)]
                );
                ids.insert(0, old.id.clone());
                assert_eq!(
                    counted(store.progress_of(&ids).await.unwrap().rows),
                    [row("digest", "pending", 2), row("triage", "queued", 2)],
                    "counts of several chunks add up"
                );
                // An event named twice, the second time in another chunk, is counted once.
                ids.insert(700, old.id.clone());
                assert_eq!(
                    counted(store.progress_of(&ids).await.unwrap().rows),
                    [row("digest", "pending", 2), row("triage", "queued", 2)]
                );
                assert_eq!(store.progress_of(&[]).await.unwrap(), JobProgress::default());
                let history = store.history(200).await.unwrap();
                assert_eq!(history.len(), 2);
                assert!(history.iter().all(|r| r.event_id == new.id && r.created_at == 200));
                assert_eq!(store.history(0).await.unwrap().len(), 4);
            }

            #[tokio::test]
            async fn a_jobs_progress_counts_only_the_batches_its_tasks_are_in() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let batch_task = || {
                    let mut t = task("scoring", TaskState::Queued, 9_000, None);
                    t.lane = "batch".into();
                    t
                };
                let (a1, a2, c) = (batch_task(), batch_task(), batch_task());
                let mut mine = event(None, "h-mine");
                mine.tasks = vec![a1.clone(), a2.clone()];
                let mut other = event(None, "h-other");
                other.tasks = vec![c.clone()];
                store.ingest(&[vec![mine.clone()], vec![other.clone()]]).await.unwrap();
                let batch = |n| batch_record(n, 100, 200);
                // One batch shared with another job's task, one of this job's alone, and a
                // third holding only the other job's work.
                let (shared, alone, theirs) = (batch(2), batch(1), batch(1));
                let c2 = batch_task();
                let mut later = event(None, "h-later");
                later.tasks = vec![c2.clone()];
                store.ingest(&[vec![later.clone()]]).await.unwrap();
                assert!(store.record_batch(&shared, &[a1.id.clone(), c.id.clone()], &lease("submitter", 1_000)).await.unwrap());
                assert!(store.record_batch(&alone, std::slice::from_ref(&a2.id), &lease("submitter", 1_000)).await.unwrap());
                assert!(store.record_batch(&theirs, std::slice::from_ref(&c2.id), &lease("submitter", 1_000)).await.unwrap());
                assert_eq!(store.open_batches().await.unwrap().len(), 3);

                let progress = |ids: Vec<String>| {
                    let store = store.clone();
                    async move { store.progress_of(&ids).await.unwrap() }
                };
                let p = progress(vec![mine.id.clone()]).await;
                assert_eq!(p.batches, 2, "the shared batch and its own, not the other job's");
                assert_eq!(
                    p.rows,
                    [ProgressRow {
                        workload: "scoring".into(),
                        lane: "batch".into(),
                        state: "batched".into(),
                        count: 2
                    }]
                );
                assert_eq!(progress(vec![other.id.clone()]).await.batches, 1);
                assert_eq!(progress(vec![mine.id.clone(), other.id.clone()]).await.batches, 2);

                // Once a task's line is in, its batch no longer holds work of this job, though
                // the task keeps the batch's id.
                store.batch_lines(&alone.id, &[(a2.id.clone(), completion(400))]).await.unwrap();
                let p = progress(vec![mine.id.clone()]).await;
                assert_eq!(p.batches, 1);
                let states: Vec<(&str, i64)> =
                    p.rows.iter().map(|r| (r.state.as_str(), r.count)).collect();
                assert_eq!(states, [("batched", 1), ("succeeded", 1)]);
            }

            #[tokio::test]
            async fn open_batches_reserve_what_they_may_cost_until_they_end() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                assert_eq!(store.reserved_by_open_batches().await.unwrap(), 0);
                let batch_task = || {
                    let mut t = task("scoring", TaskState::Queued, 9_000, None);
                    t.lane = "batch".into();
                    t
                };
                let (a, b) = (batch_task(), batch_task());
                let mut e = event(None, "h-reserve");
                e.tasks = vec![a.clone(), b.clone()];
                store.ingest(&[vec![e]]).await.unwrap();
                let first = BatchRecord { reserved_nanousd: 7_000_000_000, ..batch_record(1, 100, 200) };
                let second = BatchRecord { reserved_nanousd: 2_500, ..batch_record(1, 100, 200) };
                assert!(store.record_batch(&first, std::slice::from_ref(&a.id), &lease("s", 1_000)).await.unwrap());
                assert!(store.record_batch(&second, std::slice::from_ref(&b.id), &lease("s", 1_000)).await.unwrap());
                assert_eq!(store.reserved_by_open_batches().await.unwrap(), 7_000_002_500);
                let read = store.batch(&first.id).await.unwrap().unwrap().0;
                assert_eq!(read.reserved_nanousd, 7_000_000_000);
                assert!(store.batch_submitted(&first.id, "msgbatch_1", 300).await.unwrap());
                assert_eq!(store.reserved_by_open_batches().await.unwrap(), 7_000_002_500, "submitted is still open");
                store.finish_batch(&first.id, "ended", 400, None).await.unwrap();
                store.finish_batch(&second.id, "failed", 400, Some("refused")).await.unwrap();
                assert_eq!(store.reserved_by_open_batches().await.unwrap(), 0);
                // An ended batch stays as it ended.
                store.finish_batch(&first.id, "failed", 500, Some("late")).await.unwrap();
                let read = store.batch(&first.id).await.unwrap().unwrap().0;
                assert_eq!((read.state.as_str(), read.ended_at, read.last_error), ("ended", Some(400), None));
            }

            #[tokio::test]
            async fn a_replayed_key_returns_the_original_and_writes_nothing() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let first = event(Some("k-1"), "h1");
                let out = store.ingest(&[vec![first.clone()]]).await.unwrap();
                let original = out[0].as_ref().unwrap()[0].clone();
                let again = event(Some("k-1"), "h1");
                let out = store.ingest(&[vec![again]]).await.unwrap();
                let replay = &out[0].as_ref().unwrap()[0];
                assert!(replay.replayed);
                assert_eq!(replay.event.id, original.event.id);
                let ids = |i: &Ingested| i.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
                assert_eq!(ids(replay), ids(&original));
                assert_eq!(store.counts().await.unwrap(), (1, 2));
            }

            #[tokio::test]
            async fn a_reused_key_with_another_body_conflicts_and_undoes_only_its_request() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                store.ingest(&[vec![event(Some("k-1"), "h1")]]).await.unwrap();
                // One group: a good request, a request whose second event conflicts, a good one.
                let good = event(Some("k-2"), "h2");
                let bad = vec![event(Some("k-3"), "h3"), event(Some("k-1"), "different")];
                let other = event(None, "h4");
                let out = store.ingest(&[vec![good], bad, vec![other]]).await.unwrap();
                assert!(out[0].is_ok());
                let conflict = out[1].as_ref().unwrap_err();
                assert_eq!(conflict.idempotency_key, "k-1");
                assert!(out[2].is_ok());
                // k-3 was in the conflicting request: it must not be stored.
                assert_eq!(store.counts().await.unwrap(), (3, 6));
            }

            #[tokio::test]
            async fn the_careful_path_settles_keys_the_same_way() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                store.ingest_one_by_one(&[vec![event(Some("k-1"), "h1")]]).await.unwrap();
                let good = event(Some("k-2"), "h2");
                let bad = vec![event(Some("k-3"), "h3"), event(Some("k-1"), "different")];
                let replay = event(Some("k-1"), "h1");
                let out = store.ingest_one_by_one(&[vec![good], bad, vec![replay]]).await.unwrap();
                assert!(out[0].is_ok());
                assert_eq!(out[1].as_ref().unwrap_err().idempotency_key, "k-1");
                assert!(out[2].as_ref().unwrap()[0].replayed);
                assert_eq!(store.counts().await.unwrap(), (2, 4));
            }

            #[tokio::test]
            async fn the_same_key_twice_in_one_group_is_one_event() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let out = store
                    .ingest(&[vec![event(Some("k"), "h")], vec![event(Some("k"), "h")]])
                    .await
                    .unwrap();
                assert!(!out[0].as_ref().unwrap()[0].replayed);
                assert!(out[1].as_ref().unwrap()[0].replayed);
                assert_eq!(
                    out[0].as_ref().unwrap()[0].event.id,
                    out[1].as_ref().unwrap()[0].event.id
                );
                let task_ids = |i: usize| -> Vec<String> {
                    out[i].as_ref().unwrap()[0].tasks.iter().map(|t| t.id.clone()).collect()
                };
                assert_eq!(task_ids(0), task_ids(1), "the replay answers with the first's tasks");
                assert_eq!(task_ids(0).len(), 2);
                // A stored event replayed twice in one group: both answers carry its tasks.
                let out = store
                    .ingest(&[vec![event(Some("k"), "h")], vec![event(Some("k"), "h")]])
                    .await
                    .unwrap();
                assert!(out.iter().all(|o| o.as_ref().unwrap()[0].replayed));
                let replayed_ids = |i: usize| -> Vec<String> {
                    out[i].as_ref().unwrap()[0].tasks.iter().map(|t| t.id.clone()).collect()
                };
                assert_eq!(replayed_ids(0), replayed_ids(1));
                assert_eq!(replayed_ids(1), task_ids(0), "the stored event's own tasks");
                // The same key twice within one request, and once with another body.
                let out = store
                    .ingest(&[
                        vec![event(Some("j"), "h"), event(Some("j"), "h")],
                        vec![event(Some("j"), "x")],
                    ])
                    .await
                    .unwrap();
                let both = out[0].as_ref().unwrap();
                assert_eq!(both[0].event.id, both[1].event.id);
                assert!(out[1].is_err());
                assert_eq!(store.counts().await.unwrap(), (2, 4));
            }

            #[tokio::test]
            async fn each_distinct_decision_is_stored_once_and_every_task_reads_its_own() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let decided = |mut ev: NewEvent, bodies: [&str; 2]| {
                    for (t, body) in ev.tasks.iter_mut().zip(bodies) {
                        t.decision = serde_json::value::RawValue::from_string(body.into()).unwrap();
                    }
                    ev
                };
                let (a, b, c) = (r#"{"lane":"batch"}"#, r#"{"lane":"stream"}"#, r#"{"lane":"flex"}"#);
                let first = decided(event(None, "h1"), [a, b]);
                let second = decided(event(None, "h2"), [b, a]);
                let third = decided(event(None, "h3"), [a, c]);
                store.ingest(&[vec![first.clone()], vec![second.clone()]]).await.unwrap();
                // The careful path writes them the same way.
                store.ingest_one_by_one(&[vec![third.clone()]]).await.unwrap();
                for (ev, bodies) in [(&first, [a, b]), (&second, [b, a]), (&third, [a, c])] {
                    let (_, tasks) = store.event(&ev.id).await.unwrap().unwrap();
                    let read: Vec<&str> = tasks.iter().map(|t| t.decision.get()).collect();
                    let mut want = vec![(ev.tasks[0].id.as_str(), bodies[0]), (ev.tasks[1].id.as_str(), bodies[1])];
                    want.sort();
                    assert_eq!(read, want.iter().map(|w| w.1).collect::<Vec<_>>());
                }
                assert_eq!(scalar(&store, "SELECT COUNT(*) FROM decisions").await, 3);
                assert_eq!(scalar(&store, "SELECT COUNT(*) FROM tasks WHERE decision <> ''").await, 0);

                // A task written before decisions were shared keeps its own copy, and reads it.
                let old = &first.tasks[0].id;
                execute(&store, &format!("UPDATE tasks SET decision = '{{\"old\":true}}', decision_id = NULL WHERE id = '{old}'")).await;
                let detail = store.task(old).await.unwrap().unwrap();
                assert_eq!(detail.task.decision.get(), r#"{"old":true}"#);
            }

            #[tokio::test]
            async fn leases_fence_out_a_worker_that_lost_its_task() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let ev = event(None, "h");
                store.ingest(&[vec![ev.clone()]]).await.unwrap();
                let lanes = ["stream", "flex"];
                let a = store.claim(&lanes, "worker-a", 1_000, 100, 10).await.unwrap();
                assert_eq!(a.len(), 1, "only the queued task; the pending one waits for it");
                let task_id = a[0].task.id.clone();
                let fence_a = a[0].fence;
                assert!(store.claim(&lanes, "worker-b", 1_050, 100, 10).await.unwrap().is_empty());
                assert!(store.heartbeat(&task_id, fence_a, 1_050, 100).await.unwrap().is_ok());

                // worker-a stalls; its lease (extended to 1_150) runs out and worker-b takes over.
                let b = store.claim(&lanes, "worker-b", 1_200, 100, 10).await.unwrap();
                assert_eq!(b.len(), 1);
                assert!(b[0].fence > fence_a);
                assert_eq!(b[0].task.attempts, 2);
                assert!(store.heartbeat(&task_id, fence_a, 1_210, 100).await.unwrap().is_err());
                // worker-a's call was paid for: its cost is kept, not its result; written again
                // (an unanswered commit tried once more), it is kept once.
                let mut late = completion(1_210);
                late.output = "worker-a's".into();
                late.ledger.cost_nanousd = 7_000;
                assert!(store.complete(&task_id, fence_a, &late).await.unwrap().is_err());
                assert!(store.complete(&task_id, fence_a, &late).await.unwrap().is_err());
                let detail = store.task(&task_id).await.unwrap().unwrap();
                assert_eq!(detail.task.state, TaskState::Running);
                assert!(detail.result.is_none());
                assert_eq!(detail.cost_nanousd, 7_000);

                store.complete(&task_id, b[0].fence, &completion(1_220)).await.unwrap().unwrap();
                let detail = store.task(&task_id).await.unwrap().unwrap();
                assert_eq!(detail.task.state, TaskState::Succeeded);
                assert_eq!(detail.result.unwrap().output, "billing");
                assert_eq!(detail.cost_nanousd, 27_000, "both calls were paid for");
                let outcomes: Vec<&str> =
                    detail.attempt_log.iter().map(|a| a.outcome.as_str()).collect();
                assert_eq!(outcomes, ["superseded", "succeeded"]);
                assert_eq!(store.spend_since(0).await.unwrap(), [("triage".to_owned(), 27_000)]);

                // The task that runs after it is released.
                let next = store.claim(&lanes, "worker-b", 1_300, 100, 10).await.unwrap();
                assert_eq!(next.len(), 1);
                assert_eq!(next[0].task.workload, "digest");
            }

            #[tokio::test]
            async fn claimed_tasks_read_their_inputs_together() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let (a, b) = (event(None, "a"), event(None, "b"));
                store.ingest(&[vec![a.clone()], vec![b.clone()]]).await.unwrap();
                let (first, after) = (&a.tasks[0].id, &a.tasks[1].id);
                let ids = [first.as_str(), b.tasks[0].id.as_str(), after.as_str(), "tsk_unknown"];
                let inputs = store.task_inputs(&ids).await.unwrap();
                assert_eq!(inputs.len(), 2, "the follower waits for a result; unknown ids are left out");
                assert_eq!(inputs[first].event.id, a.id);
                assert_eq!(inputs[first].event.payload.get(), a.payload.get());
                assert_eq!(inputs[&b.tasks[0].id].event.id, b.id);
                assert!(inputs[first].upstream.is_none());

                let claimed = store.claim(&["stream"], "w", 1_000, 100, 10).await.unwrap();
                let upstream = claimed.iter().find(|c| &c.task.id == first).unwrap();
                store.complete(first, upstream.fence, &completion(1_010)).await.unwrap().unwrap();
                let inputs = store.task_inputs(&[after.as_str()]).await.unwrap();
                assert_eq!(inputs[after].upstream, Some(("triage".into(), "billing".into())));
                // The same as one task's own read.
                let task = store.task(after).await.unwrap().unwrap().task;
                let one = store.task_input(&task).await.unwrap().unwrap();
                assert_eq!((one.event.id, one.upstream), (inputs[after].event.id.clone(), inputs[after].upstream.clone()));
            }

            #[tokio::test]
            async fn a_task_stored_claimed_is_owned_until_its_lease_runs_out() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let mut ev = event(None, "h");
                ev.tasks[0].state = TaskState::Running;
                ev.tasks[0].lease =
                    Some(Lease { owner: "ingest-worker".into(), expires_at: 1_100 });
                let out = store.ingest(&[vec![ev.clone()]]).await.unwrap();
                let stored = &out[0].as_ref().unwrap()[0].tasks[0];
                assert_eq!(
                    (stored.state, stored.fence, stored.attempts),
                    (TaskState::Running, 1, 1)
                );
                assert_eq!(stored.lease_owner.as_deref(), Some("ingest-worker"));
                let task_id = stored.id.clone();
                let detail = store.task(&task_id).await.unwrap().unwrap();
                assert_eq!((detail.task.state, detail.task.fence), (TaskState::Running, 1));
                assert_eq!(detail.task.lease_expires_at, Some(1_100));

                // Nobody else claims it while the lease holds; its owner renews it with fence 1.
                let lanes = ["stream", "flex"];
                assert!(store.claim(&lanes, "other", 1_050, 100, 10).await.unwrap().is_empty());
                assert!(store.heartbeat(&task_id, 1, 1_050, 100).await.unwrap().is_ok());

                // Its owner dies: once the lease has run out, the task is taken over, fenced.
                let taken = store.claim(&lanes, "other", 1_200, 100, 10).await.unwrap();
                assert_eq!(taken.len(), 1);
                assert_eq!((taken[0].task.id.as_str(), taken[0].fence), (task_id.as_str(), 2));
                assert_eq!(taken[0].task.attempts, 2);
                assert!(store.complete(&task_id, 1, &completion(1_210)).await.unwrap().is_err());
                store.complete(&task_id, 2, &completion(1_220)).await.unwrap().unwrap();
            }

            #[tokio::test]
            async fn results_stored_together_are_fenced_one_by_one() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let mut evs = Vec::new();
                for _ in 0..2 {
                    let mut ev = event(None, "h");
                    ev.tasks.truncate(1);
                    evs.push(ev);
                }
                store.ingest(&[evs]).await.unwrap();
                let got = store.claim(&["stream"], "w", 1_000, 100, 10).await.unwrap();
                assert_eq!(got.len(), 2);
                let (a, b) = (&got[0], &got[1]);
                // `b`'s lease runs out and another worker takes it over.
                let again = store.claim(&["stream"], "w2", 1_200, 100, 10).await.unwrap();
                assert_eq!(again.len(), 2, "both leases ran out");
                let (a2, b2) = (&again[0], &again[1]);
                assert_eq!(
                    (a2.task.id.as_str(), b2.task.id.as_str()),
                    (a.task.id.as_str(), b.task.id.as_str())
                );
                let (done_a, done_b) = (completion(1_210), completion(1_210));
                // One stale fence and one current one in the same group.
                let out = store
                    .complete_many(&[
                        (&a.task.id, a.fence, &done_a),
                        (&b.task.id, b2.fence, &done_b),
                    ])
                    .await
                    .unwrap();
                assert_eq!(out[0], Err(LeaseLost { fence: a.fence }));
                // The stored one answers with what a read of the task says it cost.
                assert_eq!(out[1], Ok(Completed { cost_nanousd: 20_000 }));
                let a_now = store.task(&a.task.id).await.unwrap().unwrap();
                assert_eq!(a_now.task.state, TaskState::Running, "a stale result changes nothing");
                assert!(a_now.result.is_none());
                assert_eq!(a_now.cost_nanousd, 20_000, "its result is not kept, but what it cost is");
                let b_now = store.task(&b.task.id).await.unwrap().unwrap();
                assert_eq!(b_now.task.state, TaskState::Succeeded);
                assert_eq!(b_now.cost_nanousd, 20_000);
            }

            #[tokio::test]
            async fn claims_go_earliest_deadline_first_and_respect_run_after() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let mut evs = Vec::new();
                for deadline in [900, 300, 600] {
                    let mut ev = event(None, "h");
                    ev.tasks.truncate(1);
                    ev.tasks[0].deadline = deadline;
                    evs.push(ev);
                }
                store.ingest(&[evs]).await.unwrap();
                let got = store.claim(&["stream"], "w", 10, 10_000, 2).await.unwrap();
                let deadlines: Vec<i64> = got.iter().map(|c| c.task.deadline).collect();
                assert_eq!(deadlines, [300, 600]);

                // A retry later: invisible until run_after.
                let c = &got[0];
                store
                    .requeue(&c.task.id, c.fence, 500, &attempt("retry", 20))
                    .await
                    .unwrap()
                    .unwrap();
                let got = store.claim(&["stream"], "w", 30, 10_000, 10).await.unwrap();
                assert_eq!(got.iter().map(|c| c.task.deadline).collect::<Vec<_>>(), [900]);
                let got = store.claim(&["stream"], "w", 500, 10_000, 10).await.unwrap();
                assert_eq!(got.iter().map(|c| c.task.deadline).collect::<Vec<_>>(), [300]);
            }

            #[tokio::test]
            async fn claims_merge_lanes_and_expired_leases_by_deadline_then_priority() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                // (lane, deadline, priority, lease expiry if stored running)
                let specs = [
                    ("stream", 500, 0, None),
                    ("flex", 200, 0, None),
                    ("stream", 100, 0, Some(1_000)),
                    ("flex", 200, 5, None),
                    ("stream", 50, 0, Some(9_000)),
                    ("batch", 10, 0, None),
                ];
                let evs: Vec<NewEvent> = specs
                    .iter()
                    .map(|&(lane, deadline, priority, lease)| {
                        let mut ev = event(None, "h");
                        ev.tasks.truncate(1);
                        let t = &mut ev.tasks[0];
                        (t.lane, t.deadline, t.priority) = (lane.into(), deadline, priority);
                        if let Some(expires_at) = lease {
                            t.state = TaskState::Running;
                            t.lease = Some(Lease { owner: "gone".into(), expires_at });
                        }
                        ev
                    })
                    .collect();
                store.ingest(&[evs]).await.unwrap();
                let order = |got: &[Claimed]| -> Vec<(String, i64, i64)> {
                    got.iter().map(|c| (c.task.lane.clone(), c.task.deadline, c.task.priority)).collect()
                };
                let lanes = ["stream", "flex"];
                let got = store.claim(&lanes, "w", 2_000, 10_000, 2).await.unwrap();
                assert_eq!(
                    order(&got),
                    [("stream".into(), 100, 0), ("flex".into(), 200, 5)],
                    "the expired lease first, then of equal deadlines the higher priority; not the live lease"
                );
                let got = store.claim(&lanes, "w", 2_000, 10_000, 3).await.unwrap();
                assert_eq!(order(&got), [("flex".into(), 200, 0), ("stream".into(), 500, 0)]);
                let got = store.claim(&["flex"], "w", 2_000, 10_000, 3).await.unwrap();
                assert!(got.is_empty(), "one lane asked twice gives nothing twice");
            }

            #[tokio::test]
            async fn a_failed_task_fails_the_chain_below_it() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let ev = event(None, "h");
                store.ingest(&[vec![ev.clone()]]).await.unwrap();
                let c = store.claim(&["stream"], "w", 10, 100, 10).await.unwrap().remove(0);
                store.fail(&c.task.id, c.fence, &attempt("failed", 20)).await.unwrap().unwrap();
                let (_, tasks) = store.event(&ev.id).await.unwrap().unwrap();
                assert!(tasks.iter().all(|t| t.state == TaskState::Failed));
                assert!(tasks[1].last_error.as_deref().unwrap().contains("runs after"));
            }

            #[tokio::test]
            async fn listing_pages_by_cursor_and_filters() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let evs: Vec<NewEvent> = (0..5).map(|_| event(None, "h")).collect();
                store.ingest(&[evs]).await.unwrap();
                let mut seen = Vec::new();
                let mut q = TaskQuery { limit: 3, ..TaskQuery::default() };
                loop {
                    let page = store.tasks(&q).await.unwrap();
                    if page.is_empty() {
                        break;
                    }
                    q.after_id = page.last().map(|t| t.id.clone());
                    seen.extend(page);
                    assert!(seen.len() <= 10, "pagination must end");
                }
                assert_eq!(seen.len(), 10);
                let mut ids: Vec<&String> = seen.iter().map(|t| &t.id).collect();
                ids.dedup();
                assert_eq!(ids.len(), 10);
                let pending = store
                    .tasks(&TaskQuery {
                        state: Some(TaskState::Pending),
                        limit: 100,
                        ..TaskQuery::default()
                    })
                    .await
                    .unwrap();
                assert_eq!(pending.len(), 5);
                let triage = store
                    .tasks(&TaskQuery {
                        workload: Some("triage".into()),
                        limit: 100,
                        ..TaskQuery::default()
                    })
                    .await
                    .unwrap();
                assert_eq!(triage.len(), 5);
            }

            #[tokio::test]
            async fn reopening_keeps_everything_and_migrates_once() {
                let Some((store, _guard, url)) = super::$backend().await else { return };
                let ev = event(Some("persist"), "h");
                store.ingest(&[vec![ev.clone()]]).await.unwrap();
                drop(store);
                let store = Store::open(&url, SqliteDurability::Full).await.unwrap();
                assert!(store.event(&ev.id).await.unwrap().is_some());
                assert_eq!(store.counts().await.unwrap(), (1, 2));
            }

            /// Two groups storing the same new keys in opposite orders at once (two instances
            /// on PostgreSQL) may deadlock there: neither group's requests may fail for it.
            #[tokio::test]
            async fn groups_storing_the_same_keys_in_opposite_orders_both_succeed() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                for round in 0..40 {
                    let keys: Vec<String> = (0..16).map(|i| format!("dl-{round}-{i}")).collect();
                    let group = |keys: Vec<&String>| -> Vec<Vec<NewEvent>> {
                        keys.into_iter().map(|k| vec![event(Some(k), k)]).collect()
                    };
                    let forward = group(keys.iter().collect());
                    let backward = group(keys.iter().rev().collect());
                    let (a, b) = tokio::join!(store.ingest(&forward), store.ingest(&backward));
                    for out in a.unwrap().into_iter().chain(b.unwrap()) {
                        out.unwrap();
                    }
                }
            }

            /// A newer instance migrating the shared database (a rolling upgrade on PostgreSQL)
            /// adds columns under a running store, whose connections have their statements
            /// prepared already: its reads go on returning what they did.
            #[tokio::test]
            async fn reads_survive_a_column_added_under_a_running_store() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let mut t = task("scoring", TaskState::Queued, 9_000, None);
                t.lane = "batch".into();
                let mut ev = event(Some("cols"), "h-cols");
                ev.tasks = vec![t.clone()];
                store.ingest(&[vec![ev.clone()]]).await.unwrap();
                let batch = batch_record(1, 100, 100);
                let ids = std::slice::from_ref(&t.id);
                assert!(store.record_batch(&batch, ids, &lease("a", 1_000)).await.unwrap());
                store.batch_lines(&batch.id, &[(t.id.clone(), completion(400))]).await.unwrap();
                let read = async || {
                    let event = store.event(&ev.id).await.unwrap().unwrap();
                    let replay = store.ingest(&[vec![ev.clone()]]).await.unwrap();
                    let task = store.task(&t.id).await.unwrap().unwrap();
                    let open = store.open_batches().await.unwrap();
                    let recent = store.batches(10).await.unwrap();
                    let one = store.batch(&batch.id).await.unwrap().unwrap();
                    format!("{event:?} {replay:?} {task:?} {open:?} {recent:?} {one:?}")
                };
                let before = read().await;
                assert!(before.contains("billing"), "the task's result is read: {before}");
                for table in ["events", "batches", "results", "attempts"] {
                    execute(&store, &format!("ALTER TABLE {table} ADD COLUMN added_later TEXT")).await;
                }
                for _ in 0..4 {
                    assert_eq!(read().await, before);
                }
            }

            /// A batch task that fails for good, in its batch or before one took it, takes down
            /// what runs after it: a follower left `pending` would hold its job open for ever.
            #[tokio::test]
            async fn a_batch_task_failed_for_good_fails_what_runs_after_it() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let chain = |label: &str| {
                    let mut first = task("scoring", TaskState::Queued, 9_000, None);
                    first.lane = "batch".into();
                    let mut then = task("digest", TaskState::Pending, 9_000, Some(&first.id));
                    then.lane = "batch".into();
                    let last = task("notify", TaskState::Pending, 9_000, Some(&then.id));
                    let mut ev = event(None, label);
                    ev.tasks = vec![first.clone(), then.clone(), last.clone()];
                    (ev, [first.id, then.id, last.id])
                };
                let (in_batch, batched) = chain("h-in-batch");
                let (unclaimed, queued) = chain("h-unclaimed");
                store.ingest(&[vec![in_batch], vec![unclaimed]]).await.unwrap();
                let batch = batch_record(1, 100, 200);
                let ids = std::slice::from_ref(&batched[0]);
                assert!(store.record_batch(&batch, ids, &lease("a", 1_000)).await.unwrap());
                let refused = AttemptRecord { batch_id: Some(batch.id.clone()), ..attempt("failed", 300) };
                let out = store
                    .unbatch(&batched[0], &batch.id, TaskState::Failed, "batch", 0, None, &refused)
                    .await
                    .unwrap();
                assert!(out);
                assert!(store.fail_unclaimed(&queued[0], &attempt("failed", 300)).await.unwrap());
                assert!(
                    !store.fail_unclaimed(&queued[0], &attempt("failed", 400)).await.unwrap(),
                    "failed once"
                );
                for ids in [batched, queued] {
                    for id in &ids {
                        let d = store.task(id).await.unwrap().unwrap();
                        assert_eq!(d.task.state, TaskState::Failed, "{id}");
                    }
                    let d = store.task(&ids[2]).await.unwrap().unwrap();
                    let why = d.task.last_error.unwrap_or_default();
                    assert!(why.contains(&ids[1]), "{why}");
                    let d = store.task(&ids[0]).await.unwrap().unwrap();
                    assert_eq!(d.attempt_log.len(), 1, "{:?}", d.attempt_log);
                }
                // A task a worker holds is not the assembler's to fail.
                let ev = event(None, "h-running");
                store.ingest(&[vec![ev.clone()]]).await.unwrap();
                let claimed = store.claim(&["stream"], "w", 1_000, 60_000, 10).await.unwrap();
                assert_eq!(claimed.len(), 1);
                assert!(!store.fail_unclaimed(&claimed[0].task.id, &attempt("failed", 1_000)).await.unwrap());
            }

            /// A deliverer whose claim ran out (it stalled) and came back late cannot undo the
            /// outcome of the one that took the delivery over; but a late success is a success.
            #[tokio::test]
            async fn a_delivery_outcome_stands_only_under_its_claim() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let result = async |key: &str, at: i64| {
                    store.ingest(&[vec![event(Some(key), key)]]).await.unwrap();
                    let c = store.claim(&["stream"], "w", at, 60_000, 1).await.unwrap();
                    store.complete(&c[0].task.id, c[0].fence, &completion(at)).await.unwrap().unwrap();
                };
                let delivered = DeliveryOutcome::Delivered { status: Some(200) };
                let retry = DeliveryOutcome::Retry {
                    status: Some(503),
                    error: "down".into(),
                    next_attempt_at: 5_000,
                };

                result("h-first", 1_000).await;
                let stalled = store.claim_deliveries(2_000, 100, 10).await.unwrap();
                assert_eq!(stalled.len(), 1);
                assert!(store.claim_deliveries(2_050, 100, 10).await.unwrap().is_empty());
                let took_over = store.claim_deliveries(2_200, 100, 10).await.unwrap();
                assert_eq!(took_over[0].attempts, 2);
                assert!(store.finish_delivery(&took_over[0], &id(), 2_200, &delivered).await.unwrap());
                assert!(!store.finish_delivery(&stalled[0], &id(), 2_000, &retry).await.unwrap());
                assert!(
                    store.claim_deliveries(9_000_000, 100, 10).await.unwrap().is_empty(),
                    "delivered, not due again"
                );

                result("h-second", 3_000).await;
                let stalled = store.claim_deliveries(4_000, 100, 10).await.unwrap();
                let took_over = store.claim_deliveries(4_200, 100, 10).await.unwrap();
                assert!(store.finish_delivery(&took_over[0], &id(), 4_200, &retry).await.unwrap());
                assert!(store.finish_delivery(&stalled[0], &id(), 4_000, &delivered).await.unwrap());
                assert!(
                    store.claim_deliveries(9_000_000, 100, 10).await.unwrap().is_empty(),
                    "its late success counts"
                );
            }

            /// A failed delivery is listed, and put back in the queue on request with its
            /// schedule started over; one that is not failed is left as it is. Its attempts go on
            /// counting, since they fence its senders: a sender whose claim was taken over and
            /// answers only after the redelivery's claim does not overwrite it.
            #[tokio::test]
            async fn a_failed_delivery_can_be_queued_again() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                store.ingest(&[vec![event(None, "h-redeliver")]]).await.unwrap();
                let c = store.claim(&["stream"], "w", 1_000, 60_000, 1).await.unwrap();
                store.complete(&c[0].task.id, c[0].fence, &completion(1_000)).await.unwrap().unwrap();
                // A sender claims it and hangs past its lease; another claims it and is told 410.
                let stale = store.claim_deliveries(2_000, 100, 10).await.unwrap();
                let due = store.claim_deliveries(2_200, 100, 10).await.unwrap();
                assert_eq!((stale[0].attempts, due[0].attempts, due[0].round), (1, 2, 2));
                let gone = DeliveryOutcome::Failed { status: Some(410), error: "gone".into() };
                assert!(store.finish_delivery(&due[0], &id(), 2_200, &gone).await.unwrap());
                let failed = DeliveryQuery { state: Some("failed".into()), after_id: None, limit: 10 };
                let listed = store.deliveries(&failed).await.unwrap();
                assert_eq!(listed.len(), 1);
                assert_eq!((listed[0].last_status, listed[0].attempts), (Some(410), 2));
                let all = DeliveryQuery { limit: 10, ..DeliveryQuery::default() };
                assert_eq!(store.deliveries(&all).await.unwrap().len(), 1);
                let past = DeliveryQuery { after_id: Some(listed[0].id.clone()), ..all.clone() };
                assert!(store.deliveries(&past).await.unwrap().is_empty());

                let Redelivery::Queued(d) = store.redeliver(&listed[0].id, 3_000).await.unwrap() else { panic!() };
                assert_eq!((d.state.as_str(), d.attempts, d.next_attempt_at), ("pending", 2, 3_000));
                assert!(store.deliveries(&failed).await.unwrap().is_empty());
                assert!(matches!(store.redeliver(&d.id, 3_000).await.unwrap(), Redelivery::NotFailed(r) if r.state == "pending"));
                assert_eq!(store.redeliver("dlv_none", 3_000).await.unwrap(), Redelivery::NotFound);
                let again = store.claim_deliveries(3_000, 60_000, 10).await.unwrap();
                assert_eq!(again.len(), 1, "due at once");
                assert_eq!((again[0].attempts, again[0].round), (3, 1), "its schedule started over");

                // The hung sender answers at last: its outcome does not stand over the new claim's.
                assert!(!store.finish_delivery(&stale[0], &id(), 2_000, &gone).await.unwrap());
                let now = store.deliveries(&all).await.unwrap();
                assert_eq!(now[0].state, "sending", "the new claim's send is still under way");
                let ok = DeliveryOutcome::Delivered { status: Some(200) };
                assert!(store.finish_delivery(&again[0], &id(), 3_000, &ok).await.unwrap());
            }

            /// What failed calls may cost counts from the instant it was recorded: a day's read
            /// does not see the day before's.
            #[tokio::test]
            async fn what_failed_calls_may_cost_is_summed_by_day() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let sum = async |since| store.maybe_spent_since(since).await.unwrap();
                assert_eq!(sum(0).await, MaybeSpent::default());
                store.record_maybe_spent("tsk_a", 1_000, 700).await.unwrap();
                store.record_maybe_spent("tsk_a", 5_000, 300).await.unwrap();
                store.record_maybe_spent("tsk_b", 9_000, 50).await.unwrap();
                assert_eq!(sum(0).await, MaybeSpent { calls: 3, nanousd: 1_050 });
                assert_eq!(sum(5_000).await, MaybeSpent { calls: 2, nanousd: 350 });
                assert_eq!(sum(9_001).await, MaybeSpent::default());
            }

            /// The deadline guard moved a task to stream, but its batch's line came back before
            /// any executor took it: that line, already paid for, is its result; no second call.
            #[tokio::test]
            async fn an_escalated_task_not_yet_started_takes_its_batch_line() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let batch_task = || {
                    let mut t = task("scoring", TaskState::Queued, 9_000, None);
                    t.lane = "batch".into();
                    t
                };
                let (a, b) = (batch_task(), batch_task());
                let mut ev = event(None, "h-escalated");
                ev.tasks = vec![a.clone(), b.clone()];
                store.ingest(&[vec![ev]]).await.unwrap().remove(0).unwrap();
                let batch = batch_record(2, 100, 200);
                let ids = [a.id.clone(), b.id.clone()];
                assert!(store.record_batch(&batch, &ids, &lease("submitter", 1_000)).await.unwrap());
                store.batch_submitted(&batch.id, "msgbatch_1", 210).await.unwrap();
                let escalated =
                    AttemptRecord { batch_id: Some(batch.id.clone()), ..attempt("escalated", 300) };
                let why = Some("escalated to stream");
                let moved = store
                    .unbatch(&b.id, &batch.id, TaskState::Queued, "stream", 0, why, &escalated)
                    .await
                    .unwrap();
                assert!(moved);
                let lines = [(a.id.clone(), completion(400)), (b.id.clone(), completion(400))];
                let out = store.batch_lines(&batch.id, &lines).await.unwrap();
                assert_eq!(out, [BatchLine::Stored, BatchLine::Stored]);

                let db = store.task(&b.id).await.unwrap().unwrap();
                assert_eq!((db.task.state, db.task.lane.as_str()), (TaskState::Succeeded, "batch"));
                assert_eq!(db.result.as_ref().unwrap().output, "billing");
                let outcomes: Vec<&str> = db.attempt_log.iter().map(|x| x.outcome.as_str()).collect();
                assert_eq!(outcomes, ["escalated", "succeeded"]);
                assert_eq!(db.cost_nanousd, 20_000, "paid once, in the batch");
                assert!(
                    store.claim(&["stream"], "executor", 500, 60_000, 10).await.unwrap().is_empty(),
                    "nothing left for the stream lane"
                );
                assert_eq!(store.claim_deliveries(1_000_000, 1_000, 10).await.unwrap().len(), 2);
            }

            #[tokio::test]
            async fn a_batch_being_submitted_is_taken_over_only_once_its_lease_runs_out() {
                let Some((store, _guard, _)) = super::$backend().await else { return };
                let batch = batch_record(0, 0, 100);
                assert!(store.record_batch(&batch, &[], &lease("a", 1_000)).await.unwrap());
                // While a's lease lasts, b may not reconcile the batch; a renews it.
                assert!(!store.take_batch_submit(&batch.id, &lease("b", 1_500), 500).await.unwrap());
                assert!(store.take_batch_submit(&batch.id, &lease("a", 2_000), 900).await.unwrap());
                assert!(!store.take_batch_submit(&batch.id, &lease("b", 2_500), 1_500).await.unwrap());
                // a is gone: once its lease has run out, b takes the batch, and a no longer can.
                assert!(store.take_batch_submit(&batch.id, &lease("b", 3_000), 2_001).await.unwrap());
                assert!(!store.take_batch_submit(&batch.id, &lease("a", 3_000), 2_002).await.unwrap());
                // Once the batch is sent, nobody submits it again, whatever the leases; and a
                // second copy sent by a submitter that lost its lease is not stored over it.
                assert!(store.batch_submitted(&batch.id, "msgbatch_1", 2_100).await.unwrap());
                assert!(!store.batch_submitted(&batch.id, "msgbatch_2", 2_150).await.unwrap());
                let (stored, _) = store.batch(&batch.id).await.unwrap().unwrap();
                assert_eq!(stored.provider_batch_id.as_deref(), Some("msgbatch_1"));
                assert!(!store.take_batch_submit(&batch.id, &lease("b", 9_000), 2_200).await.unwrap());
                assert!(!store.take_batch_submit(&batch.id, &lease("c", 9_000), 9_999).await.unwrap());
                assert!(!store.take_batch_submit("bat_unknown", &lease("b", 9_000), 0).await.unwrap());
            }

            #[tokio::test]
            async fn a_batch_is_taken_with_its_inputs_and_its_lines_stored_in_bulk() {
                let Some((store, _guard, url)) = super::$backend().await else { return };
                let batch_task = |after: Option<&str>| {
                    let mut t = task(
                        "scoring",
                        if after.is_some() { TaskState::Pending } else { TaskState::Queued },
                        9_000,
                        after,
                    );
                    t.lane = "batch".into();
                    t
                };
                let a = batch_task(None);
                let b = batch_task(None);
                let follower = batch_task(Some(&a.id));
                let mut ev = event(None, "h-batch");
                ev.tasks = vec![a.clone(), b.clone(), follower.clone()];
                store.ingest(&[vec![ev.clone()]]).await.unwrap().remove(0).unwrap();

                let summary = store.batch_queue_summary(i64::MAX).await.unwrap();
                assert_eq!(summary.len(), 1);
                assert_eq!((summary[0].workload.as_str(), summary[0].count), ("scoring", 2));
                assert_eq!(summary[0].earliest_deadline, 9_000);
                let taken =
                    store.batch_queue_take(&["scoring".into()], i64::MAX, 10).await.unwrap();
                assert_eq!(taken.len(), 2, "the pending follower is not taken");
                let input = taken[0].1.as_ref().unwrap();
                assert_eq!(input.event.id, ev.id);
                assert!(input.event.payload.get().contains("Refund"));
                assert!(input.upstream.is_none());

                let batch = batch_record(2, 100, 200);
                assert!(store.record_batch(&batch, &[a.id.clone(), b.id.clone()], &lease("submitter", 1_000)).await.unwrap());
                store.batch_submitted(&batch.id, "msgbatch_1", 210).await.unwrap();
                // b is escalated before the batch ends, and its stream call starts: its line is
                // paid for but not its result.
                let escalated =
                    AttemptRecord { batch_id: Some(batch.id.clone()), ..attempt("escalated", 300) };
                assert!(
                    store
                        .unbatch(
                            &b.id,
                            &batch.id,
                            TaskState::Queued,
                            "stream",
                            0,
                            Some("escalated"),
                            &escalated
                        )
                        .await
                        .unwrap()
                );
                let claimed = store.claim(&["stream"], "executor", 300, 60_000, 10).await.unwrap();
                assert_eq!(claimed.iter().map(|c| &c.task.id).collect::<Vec<_>>(), [&b.id]);
                // Two pollers at once (two instances), each with its own ids for the lines: one
                // records them, the other finds them recorded.
                let lines = vec![(a.id.clone(), completion(400)), (b.id.clone(), completion(400))];
                let rival = vec![(a.id.clone(), completion(400)), (b.id.clone(), completion(400))];
                // On PostgreSQL another session holds the tasks' rows meanwhile, so that both
                // pollers are past their look-up of recorded lines before either writes.
                let mut blocker = None;
                if url.starts_with("postgres") {
                    use sqlx::Connection;
                    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                    sqlx::query("BEGIN").execute(&mut c).await.unwrap();
                    sqlx::query("UPDATE tasks SET state = state WHERE id = $1 OR id = $2")
                        .bind(&a.id)
                        .bind(&b.id)
                        .execute(&mut c)
                        .await
                        .unwrap();
                    blocker = Some(c);
                }
                let release = async {
                    if let Some(mut c) = blocker {
                        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                        sqlx::query("COMMIT").execute(&mut c).await.unwrap();
                    }
                };
                let (one, two, ()) = tokio::join!(
                    store.batch_lines(&batch.id, &lines),
                    store.batch_lines(&batch.id, &rival),
                    release
                );
                let mut outs = [one.unwrap(), two.unwrap()];
                outs.sort_by_key(|o| o[0] == BatchLine::AlreadyRecorded);
                assert_eq!(outs[0], vec![BatchLine::Stored, BatchLine::LedgerOnly]);
                assert_eq!(outs[1], vec![BatchLine::AlreadyRecorded, BatchLine::AlreadyRecorded]);
                // A poller that died before `finish_batch` polls again on restart and brings the
                // same lines under new ids: nothing is recorded twice.
                let again = vec![(a.id.clone(), completion(900)), (b.id.clone(), completion(900))];
                let out = store.batch_lines(&batch.id, &again).await.unwrap();
                assert_eq!(out, vec![BatchLine::AlreadyRecorded, BatchLine::AlreadyRecorded]);
                // And the database refuses a second line of one batch for a task, whatever writes it.
                let second = format!(
                    "INSERT INTO attempts (id, task_id, lane, batch_id, fence, started_at, outcome)
                     VALUES ('att_again', '{}', 'batch', '{}', 1, 500, 'succeeded')",
                    a.id, batch.id
                );
                let refused = try_execute(&store, &second).await.unwrap_err();
                assert!(refused.to_string().to_lowercase().contains("unique"), "{refused}");

                let da = store.task(&a.id).await.unwrap().unwrap();
                assert_eq!(da.task.state, TaskState::Succeeded);
                assert_eq!(da.result.as_ref().unwrap().output, "billing");
                assert_eq!(da.cost_nanousd, 20_000);
                assert!(da.attempt_log.iter().any(|x| x.outcome == "succeeded"
                    && x.batch_id.as_deref() == Some(batch.id.as_str())));
                let db = store.task(&b.id).await.unwrap().unwrap();
                assert_eq!(db.task.state, TaskState::Running, "b's stream call goes on");
                assert!(db.result.is_none());
                assert_eq!(db.cost_nanousd, 20_000, "the late line is in the ledger");
                assert!(db.attempt_log.iter().any(|x| x.outcome == "late"));
                let df = store.task(&follower.id).await.unwrap().unwrap();
                assert_eq!(df.task.state, TaskState::Queued, "the follower is released");
                assert_eq!(store.ledger_since(0).await.unwrap().len(), 2, "one line each");
                assert_eq!(da.attempt_log.len(), 1, "{:?}", da.attempt_log);
                let due = store.claim_deliveries(1_000_000, 1_000, 10).await.unwrap();
                assert_eq!(due.len(), 1, "a delivery for the stored result only");
                let delivered = DeliveryOutcome::Delivered { status: Some(200) };
                store.finish_delivery(&due[0], &id(), 1_000_000, &delivered).await.unwrap();
                assert!(
                    store.claim_deliveries(9_000_000, 1_000, 10).await.unwrap().is_empty(),
                    "a delivered result is never sent again, even after its lease"
                );
                let followed =
                    store.batch_queue_take(&["scoring".into()], i64::MAX, 10).await.unwrap();
                let up = followed.iter().find(|(t, _)| t.id == follower.id).unwrap();
                assert_eq!(
                    up.1.as_ref().unwrap().upstream,
                    Some(("scoring".into(), "billing".into()))
                );

                // A result file that lists a task twice: its first line counts, once.
                let batch2 = BatchRecord { id: id(), item_count: 1, ..batch.clone() };
                assert!(store.record_batch(&batch2, std::slice::from_ref(&follower.id), &lease("submitter", 1_000)).await.unwrap());
                store.batch_submitted(&batch2.id, "msgbatch_2", 220).await.unwrap();
                let twice = vec![
                    (follower.id.clone(), completion(500)),
                    (follower.id.clone(), completion(500)),
                ];
                let out = store.batch_lines(&batch2.id, &twice).await.unwrap();
                assert_eq!(out, vec![BatchLine::Stored, BatchLine::AlreadyRecorded]);
                assert_eq!(store.ledger_since(0).await.unwrap().len(), 3, "one more line");
            }
        }
    };
}

suite!(sqlite);
suite!(postgres);

/// Ingest writes SQLite's WAL with a connection of its own (`SqliteWriter`), which must still
/// copy the log back into the database now and then: under a steady load the WAL starts over
/// rather than grow with everything ever written.
#[tokio::test]
async fn sqlite_wal_starts_over_under_steady_ingest() {
    let (store, dir, _) = sqlite().await.unwrap();
    let wal = dir.as_ref().unwrap().path().join("data/sluice.db-wal");
    let payload = format!(r#"{{"body":"{}"}}"#, "x".repeat(3_000));
    let mut biggest = 0;
    // About 50 pages a group: some 10,000 pages in all, ten times the checkpoint's threshold.
    for _ in 0..200 {
        let group: Vec<Vec<NewEvent>> = (0..50)
            .map(|_| {
                let mut ev = event(None, "h");
                ev.payload = serde_json::value::RawValue::from_string(payload.clone()).unwrap();
                vec![ev]
            })
            .collect();
        store.ingest(&group).await.unwrap();
        biggest = biggest.max(std::fs::metadata(&wal).unwrap().len());
    }
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM events").await, 10_000);
    // Without checkpoints the log would hold every page written, about 40 MB.
    assert!(biggest < 12 << 20, "the WAL grew to {biggest} bytes");
}

/// Tests cannot drop their schemas when they end: a later run drops those older than a day, and
/// only those.
#[tokio::test]
async fn old_test_schemas_are_dropped_and_recent_ones_kept() {
    use sqlx::Connection;
    let Ok(base) = std::env::var("SLUICE_TEST_DATABASE_URL") else {
        eprintln!("skipped: SLUICE_TEST_DATABASE_URL is not set");
        return;
    };
    let mut c = sqlx::PgConnection::connect(&base).await.unwrap();
    // A UUIDv7 begins with its time in ms: this one was made in 1970, that one an hour ago.
    let old =
        format!("sluice_test_000000000001{}", &uuid::Uuid::now_v7().simple().to_string()[12..]);
    let hour_ago =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            - 3_600_000;
    let recent =
        format!("sluice_test_{hour_ago:012x}{}", &uuid::Uuid::now_v7().simple().to_string()[12..]);
    for s in [&old, &recent] {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {s}")))
            .execute(&mut c)
            .await
            .unwrap();
    }
    Store::isolated_postgres_url(&base).await.unwrap();
    let exists = |name: String| {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
        )
        .bind(name)
    };
    assert!(!exists(old.clone()).fetch_one(&mut c).await.unwrap(), "{old} is dropped");
    assert!(exists(recent.clone()).fetch_one(&mut c).await.unwrap(), "{recent} is kept");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {recent}")))
        .execute(&mut c)
        .await
        .unwrap();
}
