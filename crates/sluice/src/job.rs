//! What `run` and `demo` share: reading a JSONL file of events (all of it checked before any of it
//! is sent), posting them to the service as any client would, and the results file.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_core::Config;
use sluice_engine::rfc3339;
use sluice_server::plan::{EventIn, check_key, plan};
use sluice_store::HistoryRow;

/// One event of the file.
#[derive(Debug, Clone)]
pub struct Line {
    /// 1-based line number in the file.
    pub number: usize,
    /// The event as posted, with its idempotency key.
    pub event: Value,
}

/// The largest request body `run` and `demo` let their service take; [`post`] sends events in
/// requests under it.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Reads and checks every line; any problem (bad JSON, an unknown event type, a payload a
/// workload's template cannot render, an idempotency key the service would refuse or one used
/// twice for different events, an event too large to send) is reported with its line and
/// nothing is returned: the file is sent whole or not at all.
///
/// Lines without an `idempotency_key` (or with `null`) get one made of their content and how
/// many identical lines came before, so that running the file again replays the same events
/// instead of storing them twice, while two identical lines stay two events.
pub fn read_events(path: &Path, text: &str, config: &Config) -> anyhow::Result<Vec<Line>> {
    let name = path.display();
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    let mut seen: HashMap<[u8; 32], usize> = HashMap::new();
    // Explicit keys: the line that first used each, and its event.
    let mut keys: HashMap<String, (usize, Value)> = HashMap::new();
    let now = chrono::Utc::now();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let mut value: Value = match serde_json::from_str(trimmed) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{name}:{number}: not JSON: {e}"));
                continue;
            }
        };
        let Some(obj) = value.as_object_mut() else {
            problems.push(format!(
                "{name}:{number}: expected an event object {{\"type\": …, \"payload\": {{…}}}}"
            ));
            continue;
        };
        if obj.get("idempotency_key").is_none_or(Value::is_null) {
            let digest: [u8; 32] = Sha256::digest(trimmed.as_bytes()).into();
            let n = seen.entry(digest).or_insert(0);
            *n += 1;
            let hex = hex::encode(&digest[..16]);
            obj.insert("idempotency_key".into(), json!(format!("line:{hex}:{n}")));
        }
        let event: EventIn = match serde_json::from_value(value.clone()) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("{name}:{number}: {e}"));
                continue;
            }
        };
        if let Some(key) = &event.idempotency_key {
            if let Err(msg) = check_key(key) {
                problems.push(format!("{name}:{number}: {msg}"));
                continue;
            }
            match keys.get(key) {
                Some((first, earlier)) if *earlier != value => {
                    problems.push(format!(
                        "{name}:{number}: idempotency_key {key:?} is already used on line {first} for a different event"
                    ));
                    continue;
                }
                Some(_) => {}
                None => {
                    keys.insert(key.clone(), (number, value.clone()));
                }
            }
        }
        if let Err(e) = plan(config, event, None, now, &Default::default(), "run", None) {
            problems.push(format!("{name}:{number}: {}", e.message));
            continue;
        }
        let size = value.to_string().len();
        // The array's brackets around it.
        if size + 2 > MAX_BODY_BYTES {
            problems.push(format!(
                "{name}:{number}: the event is {size} bytes, over the {} MiB a request may carry",
                MAX_BODY_BYTES / (1024 * 1024)
            ));
            continue;
        }
        lines.push(Line { number, event: value });
    }
    if !problems.is_empty() {
        let more = problems.len().saturating_sub(20);
        let mut text = problems.into_iter().take(20).collect::<Vec<_>>().join("\n");
        if more > 0 {
            text.push_str(&format!("\n… and {more} more"));
        }
        bail!("{text}\nnothing was sent: fix the file and run again");
    }
    if lines.is_empty() {
        bail!(
            "{name} holds no events (one JSON object per line: {{\"type\": …, \"payload\": {{…}}}})"
        );
    }
    Ok(lines)
}

/// Posts events to the service in arrays (at most 200 events and [`MAX_BODY_BYTES`] a request);
/// returns each one's event id, in order. A refusal names the file line of the event refused.
pub async fn post(
    http: &reqwest::Client,
    base: &str,
    lines: &[&Line],
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(lines.len());
    let mut rest = lines;
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(fitting(rest, 200, MAX_BODY_BYTES));
        rest = after;
        let events: Vec<&Value> = chunk.iter().map(|l| &l.event).collect();
        let resp = http
            .post(format!("{base}/v1/events"))
            .json(&events)
            .send()
            .await
            .context("cannot reach the service")?;
        let status = resp.status();
        let body: Value =
            resp.json().await.context("the service answered something that is not JSON")?;
        if status.as_u16() != 202 {
            let msg = body["error"]["message"].as_str().unwrap_or("no message");
            bail!("the service refused events ({status}): {}", at_line(msg, chunk));
        }
        let Some(stored) = body["events"].as_array() else {
            bail!("the service's answer has no `events`");
        };
        for e in stored {
            ids.push(e["event_id"].as_str().unwrap_or_default().to_owned());
        }
    }
    Ok(ids)
}

/// How many of `lines` (at least one) go in the next request: at most `max_events`, and as
/// many as an array of their JSON (`[`, `]` and a comma between two) keeps within `max_bytes`.
fn fitting(lines: &[&Line], max_events: usize, max_bytes: usize) -> usize {
    let mut bytes = 2;
    let mut n = 0;
    while n < lines.len().min(max_events) {
        let size = lines[n].event.to_string().len() + usize::from(n > 0);
        if n > 0 && bytes + size > max_bytes {
            break;
        }
        bytes += size;
        n += 1;
    }
    n
}

/// A refusal's `events[i]: …` (the event's place in its request) as the line it came from.
fn at_line(msg: &str, chunk: &[&Line]) -> String {
    let place = msg
        .strip_prefix("events[")
        .and_then(|m| m.split_once("]: "))
        .and_then(|(i, rest)| Some((chunk.get(i.parse::<usize>().ok()?)?, rest)));
    match place {
        Some((line, rest)) => format!("line {}: {rest}", line.number),
        None => msg.to_owned(),
    }
}

/// True once the task will not change any more.
pub fn finished(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled")
}

/// One result line: what the task produced, what it took and what it cost.
pub fn result_line(line: Option<usize>, r: &HistoryRow) -> Value {
    json!({
        "line": line,
        "event_id": r.event_id,
        "task_id": r.task_id,
        "workload": r.workload,
        "lane": r.lane,
        "state": r.state,
        "output": r.output,
        "stop_reason": r.stop_reason,
        "error": r.last_error.as_ref().filter(|_| r.state != "succeeded"),
        "tokens": {
            "input": r.input_tokens,
            "cached_input": r.cached_input_tokens,
            "output": r.output_tokens,
        },
        "cost_usd": r.cost_nanousd as f64 / 1e9,
        "stream_cost_usd": r.stream_cost_nanousd as f64 / 1e9,
        "timings": {
            "accepted_at": rfc3339(r.created_at),
            "deadline": rfc3339(r.deadline),
            "finished_at": r.finished_at.map(rfc3339),
            "first_token_ms": r.first_token_at.map(|t| t - r.created_at),
            "completion_ms": r.finished_at.map(|t| t - r.created_at),
            "batch_turnaround_ms": r.batch_submitted_at.zip(r.batch_ended_at).map(|(s, e)| e - s),
        },
    })
}

/// Writes the lines to `path` through a temporary file and a rename: a reader never sees half a
/// file, and an interrupted write leaves the previous one.
pub fn write_jsonl(path: &Path, lines: &[Value]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("jsonl.partial");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?,
    );
    for l in lines {
        serde_json::to_writer(&mut out, l)?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
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
"#;

    #[test]
    fn every_bad_line_is_named_and_nothing_is_kept() {
        let config = Config::parse(CONFIG, "t.toml").unwrap();
        let text = "{\"type\": \"ticket.created\", \"payload\": {\"subject\": \"hi\"}}\n\
                    not json\n\
                    {\"type\": \"ticket.closed\", \"payload\": {}}\n\
                    {\"type\": \"ticket.created\", \"payload\": {}}\n";
        let err = read_events(Path::new("ev.jsonl"), text, &config).unwrap_err().to_string();
        assert!(err.contains("ev.jsonl:2: not JSON"), "{err}");
        assert!(err.contains("ev.jsonl:3:") && err.contains("ticket.closed"), "{err}");
        assert!(err.contains("ev.jsonl:4:") && err.contains("subject"), "{err}");
        assert!(err.contains("nothing was sent"), "{err}");
    }

    #[test]
    fn identical_lines_get_distinct_stable_keys() {
        let config = Config::parse(CONFIG, "t.toml").unwrap();
        let line = "{\"type\": \"ticket.created\", \"payload\": {\"subject\": \"hi\"}}";
        let text = format!("{line}\n\n{line}\n");
        let a = read_events(Path::new("ev.jsonl"), &text, &config).unwrap();
        let b = read_events(Path::new("ev.jsonl"), &text, &config).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].number, a[1].number), (1, 3));
        assert_ne!(a[0].event["idempotency_key"], a[1].event["idempotency_key"]);
        assert_eq!(a[1].event["idempotency_key"], b[1].event["idempotency_key"]);
    }

    #[test]
    fn a_null_key_gets_a_stable_one_like_a_missing_key() {
        // Otherwise the event goes without a key, and a second run stores (and pays for) it again.
        let config = Config::parse(CONFIG, "t.toml").unwrap();
        let text =
            r#"{"type": "ticket.created", "payload": {"subject": "hi"}, "idempotency_key": null}"#;
        let a = read_events(Path::new("ev.jsonl"), text, &config).unwrap();
        let b = read_events(Path::new("ev.jsonl"), text, &config).unwrap();
        let key = a[0].event["idempotency_key"].as_str().unwrap();
        assert!(key.starts_with("line:"), "{key}");
        assert_eq!(a[0].event["idempotency_key"], b[0].event["idempotency_key"]);
    }

    #[test]
    fn keys_the_service_would_refuse_are_found_before_anything_is_sent() {
        let config = Config::parse(CONFIG, "t.toml").unwrap();
        let ev = |key: &str, subject: &str| {
            json!({"type": "ticket.created", "payload": {"subject": subject}, "idempotency_key": key})
                .to_string()
        };
        let text = [
            ev("k-1", "hi"),
            ev("", "hi"),
            ev(&"k".repeat(256), "hi"),
            ev("k-1", "hi"),
            ev("k-1", "another"),
        ]
        .join("\n");
        let err = read_events(Path::new("ev.jsonl"), &text, &config).unwrap_err().to_string();
        assert!(err.contains("ev.jsonl:2: idempotency_key must be 1 to 255"), "{err}");
        assert!(err.contains("ev.jsonl:3: idempotency_key must be 1 to 255"), "{err}");
        // The same event again under its key is a replay, not a problem.
        assert!(!err.contains("ev.jsonl:4"), "{err}");
        assert!(
            err.contains("ev.jsonl:5: idempotency_key \"k-1\" is already used on line 1"),
            "{err}"
        );
        assert!(err.contains("nothing was sent"), "{err}");
    }

    #[test]
    fn requests_hold_as_many_events_as_fit() {
        // Each event is 10 bytes of JSON: {"a":"xx"}.
        let lines: Vec<Line> =
            (1..=5).map(|number| Line { number, event: json!({"a": "xx"}) }).collect();
        let all: Vec<&Line> = lines.iter().collect();
        assert_eq!(fitting(&all, 200, 1024), 5);
        assert_eq!(fitting(&all, 2, 1024), 2);
        // [e1,e2] is 23 bytes, [e1,e2,e3] 34.
        assert_eq!(fitting(&all, 200, 33), 2);
        assert_eq!(fitting(&all, 200, 34), 3);
        // One event alone goes even over the budget: the service will say why.
        assert_eq!(fitting(&all, 200, 5), 1);
    }

    #[test]
    fn a_refusal_names_the_line_of_the_event() {
        let line = |number| Line { number, event: json!({}) };
        let (a, b) = (line(7), line(12));
        let chunk = [&a, &b];
        assert_eq!(
            at_line("events[1]: payload is not an object", &chunk),
            "line 12: payload is not an object"
        );
        assert_eq!(at_line("events[9]: out of range", &chunk), "events[9]: out of range");
        assert_eq!(at_line("the body is over the limit", &chunk), "the body is over the limit");
    }
}
