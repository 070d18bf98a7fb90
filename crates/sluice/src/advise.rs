//! `sluice advise`: the decision framework again, on what was observed instead of what was
//! declared. Per workload: the volume that really came, the tokens calls really took, the deadlines
//! events really carried and how long batches really took; then the lane the policy picks on those
//! figures, against the lane the config gives today, and what changing would save or cost a month.

use std::collections::BTreeMap;
use std::time::Duration;

use comfy_table::{Attribute, Cell, CellAlignment, Color};
use serde::Serialize;
use sluice_core::Config;
use sluice_core::config::Workload;
use sluice_core::policy::{Lane, Timing, decide};
use sluice_core::price::Tokens;
use sluice_core::units::{fmt_duration, fmt_usd};
use sluice_store::{BatchRecord, HistoryRow};

use crate::report::Percentiles;

const DAY_MS: f64 = 86_400_000.0;

/// What was observed of one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Observed {
    pub items: usize,
    pub volume_per_day: f64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    /// Median time events gave it, from arrival to deadline (seconds).
    pub slack_s: f64,
    /// Its provider's batches, submission to end (seconds), when any ended.
    pub batch_turnaround_p50_s: Option<f64>,
    pub batch_turnaround_p95_s: Option<f64>,
    /// Share of its items in each lane.
    pub lanes: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Advice {
    pub workload: String,
    /// The lane the config gives it today (declared estimates, or forced).
    pub current: Lane,
    pub recommended: Lane,
    pub change: bool,
    /// Positive: the recommended lane saves this much a month; negative: it costs more (the
    /// price of meeting the deadline).
    pub monthly_saving_usd: f64,
    pub reason: String,
    /// Set when there is too little history to say anything.
    pub insufficient: Option<String>,
    pub observed: Option<Observed>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Advisory {
    /// How much time the history covers, and how many days it was counted as.
    pub history_span_s: f64,
    pub days: f64,
    pub workloads: Vec<Advice>,
    /// Of every recommended change together, a month.
    pub monthly_saving_usd: f64,
}

/// `days`: how many days the history stands for; by default its span, at least one day (a
/// short history is not extrapolated into a volume it never had).
pub fn advise(
    config: &Config,
    rows: &[HistoryRow],
    batches: &[BatchRecord],
    days: Option<f64>,
) -> Advisory {
    let first = rows.iter().map(|r| r.created_at).min().unwrap_or(0);
    let last = rows.iter().map(|r| r.created_at).max().unwrap_or(0);
    let span_ms = (last - first).max(0) as f64;
    let days = days.filter(|d| *d > 0.0).unwrap_or_else(|| (span_ms / DAY_MS).max(1.0));

    // Turnaround is the provider's, not the workload's: every batch of the provider counts.
    let mut turnaround: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for b in batches {
        if let (Some(s), Some(e), "ended") = (b.submitted_at, b.ended_at, b.state.as_str()) {
            turnaround.entry(b.provider.as_str()).or_default().push((e - s).max(0) as f64 / 1e3);
        }
    }
    let turnaround: BTreeMap<&str, Percentiles> =
        turnaround.into_iter().map(|(p, v)| (p, Percentiles::of(v))).collect();

    let mut out = Vec::new();
    for w in &config.workloads {
        let mine: Vec<&HistoryRow> = rows.iter().filter(|r| r.workload == w.name).collect();
        out.push(one(config, w, &mine, days, turnaround.get(config.provider(w).name.as_str())));
    }
    let monthly = out.iter().filter(|a| a.change).map(|a| a.monthly_saving_usd).sum();
    Advisory { history_span_s: span_ms / 1e3, days, workloads: out, monthly_saving_usd: monthly }
}

fn one(
    config: &Config,
    w: &Workload,
    rows: &[&HistoryRow],
    days: f64,
    turnaround: Option<&Percentiles>,
) -> Advice {
    let declared = {
        let slack = w.deadline.map_or(Duration::MAX, |d| d.typical_slack());
        decide(&config.policy_input(w, slack))
    };
    let mut advice = Advice {
        workload: w.name.clone(),
        current: declared.lane,
        recommended: declared.lane,
        change: false,
        monthly_saving_usd: 0.0,
        reason: String::new(),
        insufficient: None,
        observed: None,
    };
    let done: Vec<&&HistoryRow> = rows.iter().filter(|r| r.state == "succeeded").collect();
    if done.is_empty() {
        advice.insufficient = Some(if rows.is_empty() {
            "no items in the history".to_owned()
        } else {
            "no finished items yet".to_owned()
        });
        advice.reason = "keeps its lane: nothing observed to go on".to_owned();
        return advice;
    }
    let n = done.len() as u64;
    let mean = |f: fn(&HistoryRow) -> i64| {
        (done.iter().map(|r| u64::try_from(f(r)).unwrap_or(0)).sum::<u64>() + n / 2) / n
    };
    let tokens = Tokens {
        input: mean(|r| r.input_tokens),
        cached_input: mean(|r| r.cached_input_tokens),
        output: mean(|r| r.output_tokens),
    };
    let slack_s = Percentiles::of(
        rows.iter().map(|r| (r.deadline - r.created_at).max(0) as f64 / 1e3).collect(),
    )
    .p50
    .unwrap_or(0.0);
    let mut lanes = BTreeMap::new();
    for r in rows {
        *lanes.entry(r.lane.clone()).or_insert(0) += 1;
    }
    let p = config.provider(w);
    let secs = |s: Option<f64>, prior: Duration| s.map_or(prior, Duration::from_secs_f64);
    let observed = Observed {
        items: rows.len(),
        volume_per_day: rows.len() as f64 / days,
        input_tokens: tokens.input,
        cached_input_tokens: tokens.cached_input,
        output_tokens: tokens.output,
        slack_s,
        batch_turnaround_p50_s: turnaround.and_then(|t| t.p50),
        batch_turnaround_p95_s: turnaround.and_then(|t| t.p95),
        lanes,
    };

    let mut input = config.policy_input(w, Duration::from_secs_f64(slack_s));
    input.forced = None;
    input.volume_per_day = observed.volume_per_day;
    input.cost_stream = w.price.standard_cost(tokens);
    input.cost_flex = w.price.flex_cost(tokens);
    input.cost_batch = p.batch_api.then(|| w.price.batch_cost(tokens));
    input.timing = Timing::with_output_tokens(
        tokens.output,
        secs(observed.batch_turnaround_p50_s, p.batch_turnaround_p50),
        secs(observed.batch_turnaround_p95_s, p.batch_turnaround_p95),
        config.batch.margin,
    );
    let now = decide(&input);
    let cost_in = |lane: Lane| now.estimate(lane).map(|e| e.cost_per_day);
    advice.recommended = now.lane;
    advice.change = now.lane != declared.lane;
    advice.monthly_saving_usd = match (cost_in(declared.lane), cost_in(now.lane)) {
        (Some(cur), Some(new)) if advice.change => (cur - new) * 30.0,
        _ => 0.0,
    };
    let seen = format!(
        "observed {:.0}/day, {} in / {} out tokens, {} to its deadline{}",
        observed.volume_per_day,
        tokens.input,
        tokens.output,
        fmt_duration(Duration::from_secs_f64(slack_s)),
        observed
            .batch_turnaround_p95_s
            .map(|t| format!(", batches took {} at p95", fmt_duration(Duration::from_secs_f64(t))))
            .unwrap_or_default()
    );
    advice.reason = if advice.change {
        let forced = if w.forced_lane().is_some() { " (forced in the config)" } else { "" };
        let money = if advice.monthly_saving_usd >= 0.0 {
            format!("saves {}/month", fmt_usd(advice.monthly_saving_usd))
        } else {
            format!("costs {}/month more", fmt_usd(-advice.monthly_saving_usd))
        };
        format!(
            "move from {}{forced} to {}: {money}. {seen}: {}",
            declared.lane, now.lane, now.reason
        )
    } else {
        format!("keep {}: {seen}", declared.lane)
    };
    advice.observed = Some(observed);
    advice
}

pub fn render_table(a: &Advisory, color: bool, width: u16) -> String {
    let head = ["workload", "items", "per day", "today", "advice", "a month", "why"];
    let mut table = crate::output::table(&head, color, width);
    let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
    for w in &a.workloads {
        let (items, per_day) = w.observed.as_ref().map_or(("0".into(), "–".into()), |o| {
            (o.items.to_string(), format!("{:.0}", o.volume_per_day))
        });
        let advice = if w.insufficient.is_some() {
            Cell::new("–")
        } else if w.change {
            Cell::new(format!("→ {}", w.recommended))
                .add_attribute(Attribute::Bold)
                .fg(if w.monthly_saving_usd >= 0.0 { Color::Green } else { Color::Yellow })
        } else {
            Cell::new("keep")
        };
        let month = if w.change {
            if w.monthly_saving_usd >= 0.0 {
                format!("saves {}", fmt_usd(w.monthly_saving_usd))
            } else {
                format!("costs {}", fmt_usd(-w.monthly_saving_usd))
            }
        } else {
            "–".to_owned()
        };
        let why = w.insufficient.clone().unwrap_or_else(|| w.reason.clone());
        table.add_row(vec![
            Cell::new(&w.workload),
            right(items),
            right(per_day),
            Cell::new(w.current),
            advice,
            right(month),
            Cell::new(why),
        ]);
    }
    let changes = a.workloads.iter().filter(|w| w.change).count();
    let mut out = table.to_string();
    out.push('\n');
    out.push_str(&format!(
        "history: {} counted as {:.1} day(s).\n",
        fmt_duration(Duration::from_secs_f64(a.history_span_s)),
        a.days
    ));
    if changes == 0 {
        out.push_str("every workload is in the right lane for what was observed.\n");
    } else {
        let net = a.monthly_saving_usd;
        // A change can cost more: streaming what misses its deadline in a batch, or what saves too
        // little batched to be worth the wait. Each row says which.
        out.push_str(&format!(
            "{changes} change(s) advised: {} a month {}.\n",
            fmt_usd(net.abs()),
            if net >= 0.0 { "saved" } else { "more, for results that arrive sooner (see why)" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = include_str!("../tests/fixtures/advise.toml");

    const H: i64 = 3_600_000;

    fn row(workload: &str, i: i64, lane: &str, slack_ms: i64, tokens: (i64, i64)) -> HistoryRow {
        let created = 1_000_000 + i;
        HistoryRow {
            task_id: format!("tsk_{workload}_{i}"),
            event_id: format!("evt_{i}"),
            workload: workload.into(),
            lane: lane.into(),
            state: "succeeded".into(),
            reason: String::new(),
            deadline: created + slack_ms,
            created_at: created,
            last_error: None,
            output: Some("{}".into()),
            stop_reason: Some("end_turn".into()),
            input_tokens: tokens.0,
            cached_input_tokens: 0,
            output_tokens: tokens.1,
            finished_at: Some(created + 1000),
            first_token_at: None,
            batch_submitted_at: None,
            batch_ended_at: None,
            cost_nanousd: 0,
            stream_cost_nanousd: 0,
        }
    }

    fn batch(hours: i64) -> BatchRecord {
        BatchRecord {
            id: format!("bat_{hours}"),
            provider: "anthropic".into(),
            model: "claude-opus-5-5".into(),
            state: "ended".into(),
            provider_batch_id: None,
            item_count: 100,
            bytes: 1,
            created_at: 0,
            submitted_at: Some(0),
            ended_at: Some(hours * H),
            last_error: None,
            reserved_nanousd: 0,
        }
    }

    #[test]
    fn a_batch_slower_than_the_deadline_is_advised_to_stream_and_a_busy_idle_stream_to_batch() {
        let config = Config::parse(CONFIG, "advise.toml").unwrap();
        // Declared: lead scoring batches (2h turnaround fits 4h); tagging streams (5 a day are
        // not worth a batch).
        let mut rows: Vec<HistoryRow> =
            (0..300).map(|i| row("lead-scoring", i, "batch", 4 * H, (3500, 900))).collect();
        // A day of history in which tagging came 20,000 times.
        rows.extend((0..20_000).map(|i| row("tagging", i * 4_000, "stream", 48 * H, (400, 60))));
        // Batches took 5 to 6 hours: more than lead scoring's 4h.
        let batches: Vec<BatchRecord> = (0..20).map(|i| batch(5 + i % 2)).collect();
        let a = advise(&config, &rows, &batches, Some(1.0));

        let scoring = &a.workloads[0];
        assert_eq!((scoring.current, scoring.recommended), (Lane::Batch, Lane::Stream));
        assert!(scoring.monthly_saving_usd < 0.0, "streaming costs more: {scoring:?}");
        assert!(scoring.reason.contains("costs"), "{}", scoring.reason);
        // 300 a day of opus at 3500/900 tokens: the batch discount is half the standard cost.
        let per_item = 3500.0 * 4.0 / 1e6 + 900.0 * 20.0 / 1e6;
        let expected = -(per_item * 0.5 * 300.0 * 30.0);
        assert!(
            (scoring.monthly_saving_usd - expected).abs() < expected.abs() * 0.05,
            "{} vs {expected}",
            scoring.monthly_saving_usd
        );

        let tagging = &a.workloads[1];
        assert_eq!((tagging.current, tagging.recommended), (Lane::Stream, Lane::Batch));
        assert!(tagging.monthly_saving_usd > 0.0, "{tagging:?}");
        assert!(tagging.reason.contains("saves"), "{}", tagging.reason);
        let table = render_table(&a, false, 200);
        assert!(table.contains("→ stream") && table.contains("→ batch"), "{table}");
    }

    #[test]
    fn no_history_changes_nothing() {
        let config = Config::parse(CONFIG, "advise.toml").unwrap();
        let a = advise(&config, &[], &[], None);
        assert!(a.workloads.iter().all(|w| !w.change && w.insufficient.is_some()));
        assert_eq!(a.monthly_saving_usd, 0.0);
    }
}
