//! From what a client posted to what the store keeps: parse the body, then fan each event out
//! into one task per matching workload, each with its decision (lane, reason, deadline).

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, FixedOffset, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_core::config::Workload;
use sluice_core::policy::{PolicyInput, decide};
use sluice_core::template::{EventInfo, RenderContext};
use sluice_core::units::parse_duration;
use sluice_core::{Config, Lane, config::nearest};
use sluice_store::{NewEvent, NewTask, TaskRecord, TaskState};

use crate::error::ApiError;

/// More events than this in one request is refused: split the array.
pub const MAX_EVENTS_PER_REQUEST: usize = 1_000;
const MAX_KEY_LEN: usize = 255;

/// One event as posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    #[serde(rename = "type")]
    pub event_type: String,
    pub payload: serde_json::Value,
    pub idempotency_key: Option<String>,
    /// Overrides every matching workload's deadline for this event, e.g. `"30s"` for a VIP.
    pub needed_within: Option<String>,
}

/// Parses a body holding one event or an array of events. `header_key` (the `Idempotency-Key`
/// header) keys a single event; with an array, or beside another key in the event, it is an
/// error rather than ignored.
///
/// Each event is read straight into [`EventIn`] (an array's items from their raw text, so that an
/// error names its index), not through a `serde_json::Value` of the whole body: that copied
/// every payload a second time.
pub fn parse_body(body: &[u8], header_key: Option<&str>) -> Result<(Vec<EventIn>, bool), ApiError> {
    let not_json = |e: serde_json::Error| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not valid JSON: {e} (line {}, column {})", e.line(), e.column()),
        )
    };
    let (events, is_array) = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => {
            let items: Vec<&serde_json::value::RawValue> =
                serde_json::from_slice(body).map_err(not_json)?;
            if items.is_empty() {
                return Err(ApiError::unprocessable("invalid_event", "the array holds no events"));
            }
            if items.len() > MAX_EVENTS_PER_REQUEST {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_many_events",
                    format!(
                        "{} events in one request; send at most {MAX_EVENTS_PER_REQUEST} per request",
                        items.len()
                    ),
                ));
            }
            let events = items
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    serde_json::from_str::<EventIn>(raw.get()).map_err(|e| {
                        // Positions within the item would mislead: the index says where.
                        let text = e.to_string();
                        let at = text.rfind(" at line ").unwrap_or(text.len());
                        ApiError::unprocessable(
                            "invalid_event",
                            format!("events[{i}]: {}", &text[..at]),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            (events, true)
        }
        Some(b'{') => {
            let ev = serde_json::from_slice::<EventIn>(body).map_err(|e| match e.classify() {
                serde_json::error::Category::Data => {
                    ApiError::unprocessable("invalid_event", e.to_string())
                }
                _ => not_json(e),
            })?;
            (vec![ev], false)
        }
        _ => {
            let value: serde_json::Value = serde_json::from_slice(body).map_err(not_json)?;
            return Err(ApiError::unprocessable(
                "invalid_event",
                format!("expected an event object or an array of events, got {}", kind(&value)),
            ));
        }
    };
    // A key that would be ignored is refused instead: a client that retries on the strength of
    // it would store its events twice.
    if let Some(header) = header_key {
        if is_array {
            return Err(ApiError::bad_request(
                "idempotency_key_header_on_array",
                "the Idempotency-Key header keys one event: give each event of an array its own \
                 idempotency_key; nothing was stored",
            ));
        }
        if let Some(own) = events.first().and_then(|e| e.idempotency_key.as_deref())
            && own != header
        {
            return Err(ApiError::bad_request(
                "idempotency_key_mismatch",
                format!(
                    "the Idempotency-Key header ({header:?}) and the event's idempotency_key \
                     ({own:?}) differ: send one of them; nothing was stored"
                ),
            ));
        }
    }
    let mut events = events;
    for (i, ev) in events.iter_mut().enumerate() {
        let at = if is_array { format!("events[{i}]: ") } else { String::new() };
        if !is_array && ev.idempotency_key.is_none() {
            ev.idempotency_key = header_key.map(str::to_owned);
        }
        if let Some(key) = &ev.idempotency_key {
            check_key(key)
                .map_err(|msg| ApiError::unprocessable("invalid_event", format!("{at}{msg}")))?;
        }
    }
    Ok((events, is_array))
}

/// What an idempotency key must be; the problem in words otherwise. Shared with `sluice run`,
/// which checks a whole file before it sends any of it.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!("idempotency_key must be 1 to {MAX_KEY_LEN} characters"));
    }
    // PostgreSQL's text cannot hold NUL: refused here, it cannot fail the group commit that
    // other clients' requests share.
    if key.contains('\0') {
        return Err("idempotency_key must not contain the NUL character (\\u0000)".into());
    }
    // A verified webhook delivery is keyed `hook:<source>:<webhook-id>`: a key of that form from
    // an API client could take a delivery's place before it arrives.
    if key.starts_with("hook:") {
        return Err(
            "idempotency_key may not start with `hook:`, kept for webhook deliveries".into()
        );
    }
    Ok(())
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A prefixed, time-sortable id: `evt_0193…`, `tsk_0193…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// The clock a `needed_by` deadline counts to.
#[derive(Debug, Clone, Copy, Default)]
pub enum DayClock {
    /// The wall clock, in the config's timezone.
    #[default]
    Wall,
    /// A day that plays `speed` times faster than real time, its midnight at `midnight`: `sluice
    /// demo` plays a business day in a minute, and a ticket of its 09:30 has until its 18:00.
    Compressed { midnight: std::time::Instant, speed: f64 },
}

impl DayClock {
    pub fn time_of_day(&self, now: DateTime<Utc>, timezone: FixedOffset) -> NaiveTime {
        match *self {
            DayClock::Wall => now.with_timezone(&timezone).time(),
            // The demo plays its events by their time of day in UTC.
            DayClock::Compressed { midnight, speed } => {
                let utc = midnight.elapsed().as_secs_f64() * speed;
                let secs = (utc + f64::from(timezone.local_minus_utc())).rem_euclid(86_400.0);
                // In range by the rem_euclid above; midnight is only a fallback for the compiler.
                NaiveTime::from_num_seconds_from_midnight_opt(secs as u32, 0)
                    .unwrap_or(NaiveTime::MIN)
            }
        }
    }
}

/// Fans `ev` out into its tasks. `index` names the event in error messages of an array request.
pub fn plan(
    config: &Config,
    ev: EventIn,
    index: Option<usize>,
    now: DateTime<Utc>,
    day: &DayClock,
    source: &str,
    learned: Option<&sluice_engine::Turnarounds>,
) -> Result<NewEvent, ApiError> {
    let at = index.map(|i| format!("events[{i}]: ")).unwrap_or_default();
    let workloads: Vec<&Workload> =
        config.workloads.iter().filter(|w| w.event_type == ev.event_type).collect();
    if workloads.is_empty() {
        let known = config.event_types();
        let mut message = format!("{at}no workload runs on events of type {:?}", ev.event_type);
        if let Some(s) = nearest(&ev.event_type, known.iter().copied()) {
            message.push_str(&format!(" (did you mean {s:?}?)"));
        }
        return Err(ApiError::unprocessable("unknown_event_type", message)
            .with_detail(serde_json::json!({ "known_event_types": known })));
    }
    let override_slack = match &ev.needed_within {
        None => None,
        Some(text) => match parse_duration(text) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                return Err(ApiError::unprocessable(
                    "invalid_event",
                    format!(
                        "{at}needed_within {text:?} is not a duration such as \"30s\", \"15m\" or \"2h\""
                    ),
                ));
            }
        },
    };

    let event_id = new_id("evt");
    let received_at = now.timestamp_millis();
    let received_text = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let local_time = day.time_of_day(now, config.timezone);

    // Every task's id first, so that `after` can point at its upstream task.
    let ids: Vec<String> = workloads.iter().map(|_| new_id("tsk")).collect();
    let mut tasks = Vec::with_capacity(workloads.len());
    for (w, id) in workloads.iter().zip(&ids) {
        check_templates(config, w, &ev, &event_id, &received_text).map_err(|msg| {
            ApiError::unprocessable("payload_does_not_render", format!("{at}{msg}"))
        })?;
        let slack = override_slack
            .or_else(|| w.deadline.map(|d| d.slack_at(local_time)))
            .unwrap_or(Duration::from_secs(86_400));
        let mut input = config.policy_input(w, slack);
        if let Some(learned) = learned {
            learned.apply(&config.provider(w).name, &mut input);
        }
        let decision = decided(input).map_err(|e| internal(&e))?;
        let after_task_id = w.after.and_then(|upstream| {
            let name = &config.workloads[upstream].name;
            workloads.iter().position(|o| &o.name == name).map(|i| ids[i].clone())
        });
        let millis = i64::try_from(slack.as_millis()).unwrap_or(i64::MAX);
        tasks.push(NewTask {
            id: id.clone(),
            workload: w.name.clone(),
            lane: decision.lane.to_owned(),
            state: if after_task_id.is_some() { TaskState::Pending } else { TaskState::Queued },
            rule: decision.rule.clone(),
            reason: decision.reason.clone(),
            decision: decision.json.clone(),
            deadline: received_at.saturating_add(millis),
            priority: i64::from(w.critical),
            after_task_id,
            lease: None,
        });
    }

    // serde_json keeps object keys sorted, so the text is canonical: the same payload, however
    // its keys were ordered, hashes the same.
    let payload = serde_json::value::to_raw_value(&ev.payload).map_err(|e| internal(&e))?;
    let request_hash = {
        let mut h = Sha256::new();
        for part in
            [ev.event_type.as_str(), payload.get(), ev.needed_within.as_deref().unwrap_or("")]
        {
            h.update(part.len().to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    };
    Ok(NewEvent {
        id: event_id,
        event_type: ev.event_type,
        payload,
        idempotency_key: ev.idempotency_key,
        request_hash,
        needed_within_ms: override_slack.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        source: source.to_owned(),
        received_at,
        tasks,
    })
}

/// A decision as tasks carry it.
#[derive(Debug)]
struct Decided {
    lane: &'static str,
    rule: String,
    reason: String,
    json: Box<serde_json::value::RawValue>,
}

/// Distinct policy inputs remembered per thread.
const DECIDED_PER_THREAD: usize = 32;

thread_local! {
    /// `decide` is pure, and every event of a workload with a fixed deadline gives it the same
    /// input: the decision and its JSON are made once, not for every task. `needed_by`
    /// deadlines, whose slack moves with the clock, pass through without evicting for long.
    static DECIDED: std::cell::RefCell<std::collections::VecDeque<(PolicyInput, std::rc::Rc<Decided>)>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

fn decided(input: PolicyInput) -> Result<std::rc::Rc<Decided>, serde_json::Error> {
    DECIDED.with_borrow_mut(|cache| {
        if let Some((_, d)) = cache.iter().find(|(i, _)| *i == input) {
            return Ok(d.clone());
        }
        let decision = decide(&input);
        let d = std::rc::Rc::new(Decided {
            lane: decision.lane.as_str(),
            rule: serde_json::to_value(decision.rule)?.as_str().unwrap_or_default().to_owned(),
            reason: decision.reason.clone(),
            json: serde_json::value::to_raw_value(&decision)?,
        });
        if cache.len() == DECIDED_PER_THREAD {
            cache.pop_front();
        }
        cache.push_back((input, d.clone()));
        Ok(d)
    })
}

/// The payload must give each workload's templates what they use: rendered now when the workload
/// runs on the event alone, path by path when it waits for an upstream result.
fn check_templates(
    config: &Config,
    w: &Workload,
    ev: &EventIn,
    id: &str,
    received: &str,
) -> Result<(), String> {
    let names = std::iter::once(w.prompt_template()).chain(w.system_template());
    for name in names {
        if w.after.is_some() {
            if let Some(path) = config.prompts.missing_payload_path(&name, &ev.payload) {
                return Err(format!(
                    "the payload has no `{path}`, which workload {:?} uses",
                    w.name
                ));
            }
        } else {
            let ctx = RenderContext {
                payload: &ev.payload,
                event: EventInfo { id, event_type: &ev.event_type, received_at: received },
                after: None,
            };
            config.prompts.check(&name, &ctx).map_err(|e| {
                let path = config.prompts.missing_payload_path(&name, &ev.payload);
                match path {
                    Some(path) => {
                        format!("the payload has no `{path}`, which workload {:?} uses", w.name)
                    }
                    None => format!(
                        "workload {:?} cannot render its template for this payload: {e}",
                        w.name
                    ),
                }
            })?;
        }
    }
    Ok(())
}

/// JSON encoding of values sluice built itself cannot fail in practice; if it does, say so.
fn internal(e: &serde_json::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("cannot encode JSON: {e}"))
}

/// A task as the API shows it.
#[derive(Debug, Serialize)]
pub struct TaskOut {
    pub id: String,
    pub workload: String,
    pub lane: String,
    pub state: TaskState,
    pub reason: String,
    pub deadline: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_url: Option<String>,
}

impl TaskOut {
    pub fn from_record(t: &TaskRecord) -> TaskOut {
        let streams = t.lane == Lane::Stream.as_str() || t.lane == Lane::Flex.as_str();
        TaskOut {
            id: t.id.clone(),
            workload: t.workload.clone(),
            lane: t.lane.clone(),
            state: t.state,
            reason: t.reason.clone(),
            deadline: rfc3339(t.deadline),
            stream_url: streams.then(|| format!("/v1/tasks/{}/stream", t.id)),
        }
    }
}

pub use sluice_engine::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
min_daily_savings = 0.5
[providers.anthropic]
kind = "anthropic"

[[workloads]]
name = "triage"
on = "ticket.created"
provider = "anthropic"
model = "claude-haiku-5-5"
prompt = "{{ payload.subject }}"
max_tokens = 100
needed_within = "2m"
volume_per_day = 100

[[workloads]]
name = "digest"
on = "ticket.created"
after = "triage"
provider = "anthropic"
model = "claude-sonnet-5-5"
prompt = "{{ after.output }} {{ payload.body }}"
max_tokens = 300
needed_within = "24h"
delay_cost = "minimal"
volume_per_day = 5000
"#;

    fn config() -> Config {
        Config::parse(CONFIG, "test.toml").unwrap()
    }

    fn ev(payload: serde_json::Value) -> EventIn {
        EventIn {
            event_type: "ticket.created".into(),
            payload,
            idempotency_key: None,
            needed_within: None,
        }
    }

    #[test]
    fn an_event_fans_out_into_a_task_per_workload_with_its_lane() {
        let now = Utc::now();
        let e = plan(
            &config(),
            ev(serde_json::json!({"subject": "s", "body": "b"})),
            None,
            now,
            &DayClock::Wall,
            "api",
            None,
        )
        .unwrap();
        assert_eq!(e.tasks.len(), 2);
        let (triage, digest) = (&e.tasks[0], &e.tasks[1]);
        assert_eq!((triage.lane.as_str(), triage.state), ("stream", TaskState::Queued));
        assert_eq!((digest.lane.as_str(), digest.state), ("batch", TaskState::Pending));
        assert_eq!(digest.after_task_id.as_ref(), Some(&triage.id));
        assert_eq!(triage.deadline - now.timestamp_millis(), 120_000);
        assert!(e.id.starts_with("evt_") && triage.id.starts_with("tsk_"));
    }

    #[test]
    fn needed_by_counts_to_the_clock_of_the_day_it_is_given() {
        let config = Config::parse(
            &CONFIG.replace(r#"needed_within = "24h""#, r#"needed_by = "18:00""#),
            "test.toml",
        )
        .unwrap();
        let payload = serde_json::json!({"subject": "s", "body": "b"});
        let digest_slack =
            |e: NewEvent, now: DateTime<Utc>| e.tasks[1].deadline - now.timestamp_millis();

        let ten_to_six: DateTime<Utc> = "2026-11-27T17:50:00Z".parse().unwrap();
        let e = plan(&config, ev(payload.clone()), None, ten_to_six, &DayClock::Wall, "api", None);
        assert_eq!(digest_slack(e.unwrap(), ten_to_six), 10 * 60 * 1000);

        // A day at 3,600× real time whose midnight was 9.5 s ago: it is 09:30 there, whatever
        // the wall clock says, and the digest has until 18:00.
        let midnight = std::time::Instant::now().checked_sub(Duration::from_millis(9_500)).unwrap();
        let day = DayClock::Compressed { midnight, speed: 3_600.0 };
        let now = Utc::now();
        let e = plan(&config, ev(payload), None, now, &day, "api", None).unwrap();
        let slack = digest_slack(e, now);
        let expected = (8 * 3600 + 30 * 60) * 1000;
        // The test's own run time passes 3,600 times faster on that clock: a second is an hour.
        assert!((expected - 3_600_000..=expected).contains(&slack), "slack {slack} ms");
    }

    #[test]
    fn a_needed_within_override_tightens_every_task() {
        let mut e = ev(serde_json::json!({"subject": "s", "body": "b"}));
        e.needed_within = Some("30s".into());
        let planned = plan(&config(), e, None, Utc::now(), &DayClock::Wall, "api", None).unwrap();
        assert!(planned.tasks.iter().all(|t| t.lane == "stream"), "{:?}", planned.tasks);
    }

    #[test]
    fn remembered_decisions_are_those_decided_afresh() {
        let config = config();
        for needed_within in [None, Some("30s"), None, Some("3h"), Some("30s")] {
            let mut e = ev(serde_json::json!({"subject": "s", "body": "b"}));
            e.needed_within = needed_within.map(str::to_owned);
            let now = Utc::now();
            let planned = plan(&config, e, None, now, &DayClock::Wall, "api", None).unwrap();
            for (t, w) in planned.tasks.iter().zip(&config.workloads) {
                let slack = match needed_within {
                    Some(text) => parse_duration(text).unwrap(),
                    None => w.deadline.unwrap().slack_at(now.time()),
                };
                let fresh = decide(&config.policy_input(w, slack));
                assert_eq!(t.decision.get(), serde_json::to_string(&fresh).unwrap());
                assert_eq!((t.lane.as_str(), &t.reason), (fresh.lane.as_str(), &fresh.reason));
            }
        }
    }

    #[test]
    fn a_payload_missing_a_field_is_refused_naming_it() {
        let e = plan(
            &config(),
            ev(serde_json::json!({"subject": "s"})),
            Some(3),
            Utc::now(),
            &DayClock::Wall,
            "api",
            None,
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            e.message.contains("events[3]") && e.message.contains("payload.body"),
            "{}",
            e.message
        );
        let e = plan(
            &config(),
            ev(serde_json::json!({"body": "b"})),
            None,
            Utc::now(),
            &DayClock::Wall,
            "api",
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("payload.subject"), "{}", e.message);
    }

    #[test]
    fn an_unknown_type_lists_the_known_ones() {
        let mut e = ev(serde_json::json!({}));
        e.event_type = "ticket.create".into();
        let err = plan(&config(), e, None, Utc::now(), &DayClock::Wall, "api", None).unwrap_err();
        assert!(err.message.contains("did you mean \"ticket.created\""), "{}", err.message);
        assert_eq!(err.detail.unwrap()["known_event_types"][0], "ticket.created");
    }

    #[test]
    fn bodies_are_parsed_strictly() {
        assert_eq!(parse_body(b"{", None).unwrap_err().code, "invalid_json");
        assert_eq!(parse_body(b"[]", None).unwrap_err().code, "invalid_event");
        assert_eq!(parse_body(b"42", None).unwrap_err().code, "invalid_event");
        let e = parse_body(br#"[{"type":"a","payload":{}},{"typ":"a","payload":{}}]"#, None)
            .unwrap_err();
        assert!(e.message.starts_with("events[1]: unknown field `typ`"), "{}", e.message);
        assert!(
            !e.message.contains(" at line "),
            "positions within an item mislead: {}",
            e.message
        );
        let e = parse_body(br#"{"type":"a"}"#, None).unwrap_err();
        assert_eq!((e.code, e.status), ("invalid_event", StatusCode::UNPROCESSABLE_ENTITY));
        assert!(e.message.contains("missing field `payload`"), "{}", e.message);
        assert_eq!(
            parse_body(br#"{"type":"a","payload":{}} x"#, None).unwrap_err().code,
            "invalid_json"
        );
        assert_eq!(
            parse_body(br#"[{"type":"a","payload":{}},"#, None).unwrap_err().code,
            "invalid_json"
        );
        assert_eq!(parse_body(b" \"text\"", None).unwrap_err().code, "invalid_event");
        assert_eq!(parse_body(b"", None).unwrap_err().code, "invalid_json");
        let (evs, array) = parse_body(
            br#" [{"type":"a","payload":{"b":[1,{"c":null}]}},{"type":"b","payload":2,"idempotency_key":"k"}]"#,
            None,
        )
        .unwrap();
        assert!(array);
        assert_eq!(evs[0].payload, serde_json::json!({"b": [1, {"c": null}]}));
        assert_eq!(
            (evs[0].idempotency_key.as_deref(), evs[1].idempotency_key.as_deref()),
            (None, Some("k"))
        );
        let (evs, array) = parse_body(br#"{"type":"a","payload":{}}"#, Some("k1")).unwrap();
        assert!(!array);
        assert_eq!(evs[0].idempotency_key.as_deref(), Some("k1"));
        // The header beside the same key in the event is one key; with an array, or beside
        // another key, it would be ignored: refused.
        let same = parse_body(br#"{"type":"a","payload":{},"idempotency_key":"k1"}"#, Some("k1"));
        assert_eq!(same.unwrap().0[0].idempotency_key.as_deref(), Some("k1"));
        let other = parse_body(br#"{"type":"a","payload":{},"idempotency_key":"k2"}"#, Some("k1"));
        assert_eq!(other.unwrap_err().code, "idempotency_key_mismatch");
        let array = parse_body(br#"[{"type":"a","payload":{}}]"#, Some("k1"));
        assert_eq!(array.unwrap_err().code, "idempotency_key_header_on_array");
        let hook = parse_body(br#"{"type":"a","payload":{},"idempotency_key":"hook:gh:1"}"#, None);
        assert!(hook.unwrap_err().message.contains("webhook deliveries"));
    }
}
