//! Settling a group of ingest requests in memory, the same for both backends: given the events
//! already stored under the group's idempotency keys, each request is a replay, a conflict, or new
//! events to insert.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::backend::RequestOutcome;
use crate::{EventRecord, Ingested, KeyConflict, NewEvent, TaskRecord};

/// What one event of a request turned out to be.
pub(crate) enum Seen<'s> {
    /// Stored before: a replay.
    Stored(&'s EventRecord),
    /// New: written by this group, at this very place in the requests.
    New,
    /// New, but named earlier in the group (the same key again): `requests[request][event]`.
    Again { request: usize, event: usize },
}

/// Each request's plan, one entry per event; borrows the stored events only, so that the
/// requests themselves can be moved into the answers once written.
pub(crate) struct Plans<'s>(Vec<Result<Vec<Seen<'s>>, KeyConflict>>);

pub(crate) struct Settled<'r, 's> {
    pub plans: Plans<'s>,
    /// Each new event once, in request order.
    pub to_insert: Vec<&'r NewEvent>,
}

/// The idempotency keys the group names, to look up before settling.
pub(crate) fn keys(requests: &[Vec<NewEvent>]) -> Vec<&str> {
    requests.iter().flatten().filter_map(|e| e.idempotency_key.as_deref()).collect()
}

pub(crate) fn settle<'r, 's>(
    requests: &'r [Vec<NewEvent>],
    stored: &'s HashMap<String, EventRecord>,
) -> Settled<'r, 's> {
    let mut in_group: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut plans = Vec::with_capacity(requests.len());
    let mut to_insert = Vec::new();
    for (r, request) in requests.iter().enumerate() {
        let mut plan = Vec::with_capacity(request.len());
        let mut new_keys: HashMap<&str, (usize, usize)> = HashMap::new();
        let mut conflict = None;
        for (e, ev) in request.iter().enumerate() {
            let Some(key) = ev.idempotency_key.as_deref() else {
                plan.push(Seen::New);
                continue;
            };
            let (first, seen) = if let Some(record) = stored.get(key) {
                ((record.request_hash.as_str(), record.id.as_str()), Seen::Stored(record))
            } else if let Some(&(fr, fe)) = in_group.get(key).or_else(|| new_keys.get(key)) {
                let first = &requests[fr][fe];
                (
                    (first.request_hash.as_str(), first.id.as_str()),
                    Seen::Again { request: fr, event: fe },
                )
            } else {
                new_keys.insert(key, (r, e));
                plan.push(Seen::New);
                continue;
            };
            if first.0 != ev.request_hash {
                conflict = Some(KeyConflict {
                    idempotency_key: key.to_owned(),
                    existing_event_id: first.1.to_owned(),
                });
                break;
            }
            plan.push(seen);
        }
        if let Some(c) = conflict {
            plans.push(Err(c));
            continue;
        }
        in_group.extend(new_keys);
        // `New` is this very event, named here first: each is inserted once.
        to_insert.extend(
            plan.iter().zip(request).filter(|(s, _)| matches!(s, Seen::New)).map(|(_, ev)| ev),
        );
        plans.push(Ok(plan));
    }
    Settled { plans: Plans(plans), to_insert }
}

impl<'s> Plans<'s> {
    /// Events of earlier requests that this group replays: their tasks are read back.
    pub fn replayed_ids(&self) -> Vec<&str> {
        self.0
            .iter()
            .flatten()
            .flatten()
            .filter_map(|s| if let Seen::Stored(e) = s { Some(e.id.as_str()) } else { None })
            .collect()
    }

    /// Each request's outcome, once the new events are written, copying what they hold.
    pub fn outcomes(
        self,
        requests: &[Vec<NewEvent>],
        replayed_tasks: HashMap<String, Vec<TaskRecord>>,
    ) -> Vec<RequestOutcome> {
        let plans = self.resolve(requests);
        answer(plans, requests.iter().map(|r| r.iter().cloned()), replayed_tasks)
    }

    /// [`Plans::outcomes`], moving each new event's text into its answer instead of copying it:
    /// on SQLite's writer thread, which every group waits for, the copy was measurable.
    pub fn outcomes_owned(
        self,
        requests: Vec<Vec<NewEvent>>,
        replayed_tasks: HashMap<String, Vec<TaskRecord>>,
    ) -> Vec<RequestOutcome> {
        let plans = self.resolve(&requests);
        answer(plans, requests.into_iter().map(Vec::into_iter), replayed_tasks)
    }

    /// Copies out the events named twice (rare), before the requests may be consumed.
    fn resolve(self, requests: &[Vec<NewEvent>]) -> Vec<Result<Vec<Answer<'s>>, KeyConflict>> {
        self.0
            .into_iter()
            .map(|plan| {
                plan.map(|seen| {
                    seen.into_iter()
                        .map(|s| match s {
                            Seen::Stored(e) => Answer::Stored(e),
                            Seen::New => Answer::New,
                            Seen::Again { request, event } => {
                                Answer::Copy(Box::new(requests[request][event].clone()))
                            }
                        })
                        .collect()
                })
            })
            .collect()
    }
}

/// A plan entry ready to answer with.
enum Answer<'s> {
    Stored(&'s EventRecord),
    /// This very event, to be moved (or copied) into its answer.
    New,
    /// The event named earlier in the group.
    Copy(Box<NewEvent>),
}

/// `requests` gives each request's events in order, to be moved into their answers.
fn answer<R: Iterator<Item = NewEvent>>(
    plans: Vec<Result<Vec<Answer<'_>>, KeyConflict>>,
    requests: impl Iterator<Item = R>,
    replayed_tasks: HashMap<String, Vec<TaskRecord>>,
) -> Vec<RequestOutcome> {
    let mut outcomes: Vec<RequestOutcome> = Vec::with_capacity(plans.len());
    for (plan, events) in plans.into_iter().zip(requests) {
        outcomes.push(plan.map(|plan| {
            plan.into_iter()
                .zip(events)
                .map(|(a, ev)| match a {
                    Answer::Stored(e) => Ingested {
                        event: e.clone(),
                        // Cloned, not taken: a group may replay one stored event twice.
                        tasks: replayed_tasks.get(&e.id).cloned().unwrap_or_default(),
                        replayed: true,
                    },
                    Answer::New => new_ingested(ev),
                    Answer::Copy(first) => new_ingested(*first),
                })
                .collect()
        }));
    }
    mark_group_replays(&mut outcomes);
    outcomes
}

/// Within one group the same new event can be named by two requests (the same key twice): the
/// first gets it as stored, every later one as a replay.
fn mark_group_replays(outcomes: &mut [RequestOutcome]) {
    let mut first_seen = HashSet::new();
    for done in outcomes.iter_mut().flatten() {
        for ingested in done.iter_mut() {
            if !ingested.replayed && !first_seen.insert(ingested.event.id.clone()) {
                ingested.replayed = true;
            }
        }
    }
}

/// What a newly written event and its tasks look like, without reading them back.
pub(crate) fn new_ingested(ev: NewEvent) -> Ingested {
    let (id, received_at) = (&ev.id, ev.received_at);
    let tasks = ev
        .tasks
        .into_iter()
        .map(|t| {
            let leased = t.lease.is_some();
            let (lease_owner, lease_expires_at) = match t.lease {
                Some(l) => (Some(l.owner), Some(l.expires_at)),
                None => (None, None),
            };
            TaskRecord {
                id: t.id,
                event_id: id.clone(),
                workload: t.workload,
                lane: t.lane,
                state: t.state,
                rule: t.rule,
                reason: t.reason,
                decision: t.decision,
                deadline: t.deadline,
                priority: t.priority,
                after_task_id: t.after_task_id,
                attempts: i64::from(leased),
                lease_owner,
                lease_expires_at,
                fence: i64::from(leased),
                batch_id: None,
                last_error: None,
                created_at: received_at,
                updated_at: received_at,
            }
        })
        .collect();
    let event = EventRecord {
        id: ev.id,
        event_type: ev.event_type,
        payload: ev.payload,
        idempotency_key: ev.idempotency_key,
        request_hash: ev.request_hash,
        needed_within_ms: ev.needed_within_ms,
        source: ev.source,
        received_at,
    };
    Ingested { event, tasks, replayed: false }
}

/// A decision's key in `decisions`: 128 bits of the SHA-256 of its text, in hex. The same
/// decision gets the same key in every process, so instances sharing a database store it once.
pub(crate) fn decision_id(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..16])
}
