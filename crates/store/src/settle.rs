//! Settling a group of ingest requests in memory, the same for both backends: given the events
//! already stored under the group's idempotency keys, each request is a replay, a conflict, or new
//! events to insert.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::backend::RequestOutcome;
use crate::{EventRecord, Ingested, KeyConflict, NewEvent, TaskRecord};

pub(crate) enum Seen<'a> {
    Stored(&'a EventRecord),
    New(&'a NewEvent),
}

pub(crate) struct Settled<'a> {
    plans: Vec<Result<Vec<Seen<'a>>, KeyConflict>>,
    /// Each new event once, in request order.
    pub to_insert: Vec<&'a NewEvent>,
}

/// The idempotency keys the group names, to look up before settling.
pub(crate) fn keys(requests: &[Vec<NewEvent>]) -> Vec<&str> {
    requests.iter().flatten().filter_map(|e| e.idempotency_key.as_deref()).collect()
}

pub(crate) fn settle<'a>(
    requests: &'a [Vec<NewEvent>],
    stored: &'a HashMap<String, EventRecord>,
) -> Settled<'a> {
    let mut in_group: HashMap<&str, &NewEvent> = HashMap::new();
    let mut plans = Vec::with_capacity(requests.len());
    let mut to_insert = Vec::new();
    // Ids already in `to_insert`: a group holds thousands of events, a scan per event would be
    // quadratic.
    let mut inserting: HashSet<&str> = HashSet::new();
    for request in requests {
        let mut plan = Vec::with_capacity(request.len());
        let mut new_keys: HashMap<&str, &NewEvent> = HashMap::new();
        let mut conflict = None;
        for ev in request {
            let Some(key) = ev.idempotency_key.as_deref() else {
                plan.push(Seen::New(ev));
                continue;
            };
            let (hash, id, seen) = if let Some(record) = stored.get(key) {
                (record.request_hash.as_str(), record.id.as_str(), Seen::Stored(record))
            } else if let Some(first) = in_group.get(key).or_else(|| new_keys.get(key)) {
                (first.request_hash.as_str(), first.id.as_str(), Seen::New(first))
            } else {
                new_keys.insert(key, ev);
                plan.push(Seen::New(ev));
                continue;
            };
            if hash != ev.request_hash {
                conflict = Some(KeyConflict {
                    idempotency_key: key.to_owned(),
                    existing_event_id: id.to_owned(),
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
        for seen in &plan {
            if let Seen::New(ev) = seen
                && inserting.insert(ev.id.as_str())
            {
                to_insert.push(*ev);
            }
        }
        plans.push(Ok(plan));
    }
    Settled { plans, to_insert }
}

impl Settled<'_> {
    /// Events of earlier requests that this group replays: their tasks are read back.
    pub fn replayed_ids(&self) -> Vec<&str> {
        self.plans
            .iter()
            .flatten()
            .flatten()
            .filter_map(|s| if let Seen::Stored(e) = s { Some(e.id.as_str()) } else { None })
            .collect()
    }

    /// Each request's outcome, once the new events are written.
    pub fn outcomes(
        self,
        mut replayed_tasks: HashMap<String, Vec<TaskRecord>>,
    ) -> Vec<RequestOutcome> {
        let mut outcomes = Vec::with_capacity(self.plans.len());
        for plan in self.plans {
            outcomes.push(match plan {
                Err(c) => Err(c),
                Ok(seen) => Ok(seen
                    .into_iter()
                    .map(|s| match s {
                        Seen::Stored(e) => Ingested {
                            event: e.clone(),
                            tasks: replayed_tasks.remove(&e.id).unwrap_or_default(),
                            replayed: true,
                        },
                        Seen::New(ev) => new_ingested(ev),
                    })
                    .collect()),
            });
        }
        mark_group_replays(&mut outcomes);
        outcomes
    }
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
pub(crate) fn new_ingested(ev: &NewEvent) -> Ingested {
    let tasks = ev
        .tasks
        .iter()
        .map(|t| TaskRecord {
            id: t.id.clone(),
            event_id: ev.id.clone(),
            workload: t.workload.clone(),
            lane: t.lane.clone(),
            state: t.state,
            rule: t.rule.clone(),
            reason: t.reason.clone(),
            decision: t.decision.clone(),
            deadline: t.deadline,
            priority: t.priority,
            after_task_id: t.after_task_id.clone(),
            attempts: i64::from(t.lease.is_some()),
            lease_owner: t.lease.as_ref().map(|l| l.owner.clone()),
            lease_expires_at: t.lease.as_ref().map(|l| l.expires_at),
            fence: i64::from(t.lease.is_some()),
            batch_id: None,
            last_error: None,
            created_at: ev.received_at,
            updated_at: ev.received_at,
        })
        .collect();
    let event = EventRecord {
        id: ev.id.clone(),
        event_type: ev.event_type.clone(),
        payload: ev.payload.clone(),
        idempotency_key: ev.idempotency_key.clone(),
        request_hash: ev.request_hash.clone(),
        needed_within_ms: ev.needed_within_ms,
        source: ev.source.clone(),
        received_at: ev.received_at,
    };
    Ingested { event, tasks, replayed: false }
}

/// A decision's key in `decisions`: 128 bits of the SHA-256 of its text, in hex. The same
/// decision gets the same key in every process, so instances sharing a database store it once.
pub(crate) fn decision_id(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..16])
}
