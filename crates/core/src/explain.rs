//! `sluice explain`: the verdict for every workload of a config, with the figures behind it.

use serde::Serialize;

use crate::config::{Config, Deadline, Workload};
use crate::policy::{Decision, Lane, decide};
use crate::units::fmt_duration;

/// One workload's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    pub event_type: String,
    pub provider: String,
    pub model: String,
    /// `2m`, `24h` or `by 08:00`; `none` for a forced stream without a deadline.
    pub needed: String,
    pub delay_cost: String,
    pub delay_cost_per_hour: f64,
    pub volume_per_day: f64,
    pub lane: Lane,
    pub reason: String,
    pub stream_cost_per_day: f64,
    pub cost_per_day: f64,
    pub saving_per_day: f64,
    /// True when the token figures are estimated from the prompt rather than declared.
    pub tokens_estimated: bool,
    pub decision: Decision,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub stream_cost_per_day: f64,
    pub cost_per_day: f64,
    pub saving_per_day: f64,
    /// Thirty days of savings.
    pub saving_per_month: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub config: String,
    pub rows: Vec<Row>,
    pub total: Totals,
    /// Assumptions a reader should know about, in plain words.
    pub notes: Vec<String>,
}

pub fn explain(config: &Config) -> Explanation {
    let rows: Vec<Row> = config.workloads.iter().map(|w| row(config, w)).collect();
    let stream: f64 = rows.iter().map(|r| r.stream_cost_per_day).sum();
    let decided: f64 = rows.iter().map(|r| r.cost_per_day).sum();
    let mut notes = Vec::new();
    if config.workloads.iter().any(|w| matches!(w.deadline, Some(Deadline::By(_)))) {
        notes.push(
            "a `needed_by` deadline is explained for an event 12h ahead of it; each event is decided again when it arrives"
                .to_owned(),
        );
    }
    if rows.iter().any(|r| r.tokens_estimated) {
        notes.push("* token counts estimated from the prompt and max_tokens; declare input_tokens and output_tokens for sharper figures".to_owned());
    }
    Explanation {
        config: config.source_name.clone(),
        rows,
        total: Totals {
            stream_cost_per_day: stream,
            cost_per_day: decided,
            saving_per_day: stream - decided,
            saving_per_month: (stream - decided) * 30.0,
        },
        notes,
    }
}

fn row(config: &Config, w: &Workload) -> Row {
    let slack = w.deadline.map_or(std::time::Duration::MAX, |d| d.typical_slack());
    let mut input = config.policy_input(w, slack);
    if let Some(Deadline::By(t)) = w.deadline {
        input.deadline_words =
            Some(format!("needed by {} (~{} ahead)", t.format("%H:%M"), fmt_duration(slack)));
    }
    let decision = decide(&input);
    let p = config.provider(w);
    Row {
        workload: w.name.clone(),
        event_type: w.event_type.clone(),
        provider: p.name.clone(),
        model: w.model.clone(),
        needed: w.deadline.map_or_else(|| "none".to_owned(), |d| d.to_string()),
        delay_cost: w.delay_cost.to_string(),
        delay_cost_per_hour: w.delay_cost.per_hour,
        volume_per_day: w.volume_per_day,
        lane: decision.lane,
        reason: decision.reason.clone(),
        stream_cost_per_day: decision.stream_cost_per_day,
        cost_per_day: decision.cost_per_day,
        saving_per_day: decision.saving_per_day,
        tokens_estimated: !w.tokens_declared,
        decision,
    }
}
