//! `sluice report`: what happened, per workload, read back from the store — items and their lanes,
//! deadlines missed, latencies, batch turnaround, tokens, dollars spent, and what the same work
//! would have cost streamed.

use std::collections::{BTreeMap, HashMap, HashSet};

use comfy_table::{Attribute, Cell, CellAlignment, ColumnConstraint};
use serde::Serialize;
use sluice_core::units::fmt_usd;
use sluice_store::{HistoryRow, LedgerPoint};

/// Nano-dollars to dollars.
pub fn usd(nano: i64) -> f64 {
    nano as f64 / 1e9
}

/// Nearest-rank percentiles of a sample, in the sample's unit.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

impl Percentiles {
    pub fn of(mut sample: Vec<f64>) -> Percentiles {
        sample.retain(|v| v.is_finite());
        sample.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if sample.is_empty() {
                return None;
            }
            let rank = (q * sample.len() as f64).ceil() as usize;
            sample.get(rank.clamp(1, sample.len()) - 1).copied()
        };
        Percentiles { count: sample.len(), p50: at(0.50), p95: at(0.95), p99: at(0.99) }
    }
}

/// Items per lane (the lane each ran in last).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LaneMix {
    pub stream: usize,
    pub flex: usize,
    pub batch: usize,
    /// Of the streamed ones: escalated out of a batch that ran late.
    pub escalated: usize,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct WorkloadReport {
    pub workload: String,
    pub items: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Not finished yet (queued, in a batch, running, held or waiting for the task it follows).
    pub open: usize,
    pub lanes: LaneMix,
    /// Finished after their deadline, failed, or still open past it.
    pub deadline_misses: usize,
    /// From the task's acknowledgement to its first token, streamed and flex calls only (ms).
    pub time_to_first_token_ms: Percentiles,
    /// From the task's acknowledgement to its stored result (seconds).
    pub completion_s: Percentiles,
    /// From submission to the end of the batch, per batched item (seconds).
    pub batch_turnaround_s: Percentiles,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub spent_usd: f64,
    /// The same results streamed at the standard price.
    pub all_streamed_usd: f64,
    pub saving_usd: f64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    pub items: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub open: usize,
    pub deadline_misses: usize,
    pub lanes: LaneMix,
    pub spent_usd: f64,
    pub all_streamed_usd: f64,
    pub saving_usd: f64,
    /// Saving as a share of the all-streamed cost, 0–100.
    pub saving_percent: f64,
}

/// Cumulative dollars at one instant.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CostPoint {
    /// Unix milliseconds.
    pub at: i64,
    pub spent_usd: f64,
    pub all_streamed_usd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// RFC 3339.
    pub generated_at: String,
    /// Unix ms of the oldest task included (`--since`), 0 for everything.
    pub since: i64,
    pub workloads: Vec<WorkloadReport>,
    pub total: Totals,
    pub cost_over_time: Vec<CostPoint>,
    /// The dollars of every ledger entry of the report's tasks summed exactly, in nano-dollars:
    /// without `--since`, what the providers' invoices should say.
    pub ledger_nanousd: i64,
    /// Calls that failed after the provider took them (a cut stream, a garbled answer): the
    /// provider may bill them on top of the ledger, up to this much.
    pub maybe_billed: sluice_store::MaybeSpent,
    /// Raw samples behind the charts (not in the JSON: the percentiles summarize them).
    #[serde(skip)]
    pub samples: Samples,
}

#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub time_to_first_token_ms: Vec<f64>,
}

impl Report {
    /// Summarizes `rows` (tasks with their results) and `ledger` (every paid call). Workloads
    /// come in `order` first (the config's order), then any others alphabetically.
    pub fn build(
        rows: &[HistoryRow],
        ledger: &[LedgerPoint],
        order: &[String],
        since: i64,
        now_ms: i64,
    ) -> Report {
        let mut by: BTreeMap<&str, Vec<&HistoryRow>> = BTreeMap::new();
        for r in rows {
            by.entry(r.workload.as_str()).or_default().push(r);
        }
        let mut names: Vec<&str> =
            order.iter().map(String::as_str).filter(|n| by.contains_key(n)).collect();
        for n in by.keys() {
            if !names.contains(n) {
                names.push(n);
            }
        }
        let mut samples = Samples::default();
        let workloads: Vec<WorkloadReport> = names
            .iter()
            .map(|name| {
                let rows = by.get(name).map(Vec::as_slice).unwrap_or_default();
                workload(name, rows, now_ms, &mut samples)
            })
            .collect();
        let mut total = Totals::default();
        for w in &workloads {
            total.items += w.items;
            total.succeeded += w.succeeded;
            total.failed += w.failed;
            total.open += w.open;
            total.deadline_misses += w.deadline_misses;
            total.lanes.stream += w.lanes.stream;
            total.lanes.flex += w.lanes.flex;
            total.lanes.batch += w.lanes.batch;
            total.lanes.escalated += w.lanes.escalated;
        }
        // Money from the ledger itself, so that the total is exactly what was paid, including
        // the late batch results of escalated tasks; only the lines of the tasks reported on,
        // since under `--since` a line of an older task would count in what was spent but not
        // in what streaming it would have cost.
        let reported: HashSet<&str> = rows.iter().map(|r| r.task_id.as_str()).collect();
        let ledger: Vec<&LedgerPoint> =
            ledger.iter().filter(|l| reported.contains(l.task_id.as_str())).collect();
        let ledger_nanousd: i64 = ledger.iter().map(|l| l.cost_nanousd).sum();
        total.spent_usd = usd(ledger_nanousd);
        total.all_streamed_usd = workloads.iter().map(|w| w.all_streamed_usd).sum();
        total.saving_usd = total.all_streamed_usd - total.spent_usd;
        total.saving_percent = if total.all_streamed_usd > 0.0 {
            100.0 * total.saving_usd / total.all_streamed_usd
        } else {
            0.0
        };
        Report {
            generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            since,
            workloads,
            total,
            cost_over_time: cost_over_time(&ledger, 120),
            ledger_nanousd,
            maybe_billed: sluice_store::MaybeSpent::default(),
            samples,
        }
    }
}

fn workload(
    name: &str,
    rows: &[&HistoryRow],
    now_ms: i64,
    samples: &mut Samples,
) -> WorkloadReport {
    let mut w =
        WorkloadReport { workload: name.to_owned(), items: rows.len(), ..Default::default() };
    let mut ttft = Vec::new();
    let mut done = Vec::new();
    let mut turnaround = Vec::new();
    let mut spent = 0i64;
    let mut streamed = 0i64;
    for r in rows {
        match r.state.as_str() {
            "succeeded" => w.succeeded += 1,
            "failed" | "cancelled" => w.failed += 1,
            _ => w.open += 1,
        }
        match r.lane.as_str() {
            "flex" => w.lanes.flex += 1,
            "batch" => w.lanes.batch += 1,
            _ => w.lanes.stream += 1,
        }
        if r.reason.starts_with("escalated") {
            w.lanes.escalated += 1;
        }
        let missed = match (r.state.as_str(), r.finished_at) {
            ("succeeded", Some(f)) => f > r.deadline,
            ("failed" | "cancelled", _) => true,
            _ => now_ms > r.deadline,
        };
        w.deadline_misses += usize::from(missed);
        if let Some(t) = r.first_token_at {
            ttft.push((t - r.created_at).max(0) as f64);
        }
        if let Some(f) = r.finished_at {
            done.push((f - r.created_at).max(0) as f64 / 1000.0);
        }
        if r.lane == "batch"
            && let (Some(s), Some(e)) = (r.batch_submitted_at, r.batch_ended_at)
        {
            turnaround.push((e - s).max(0) as f64 / 1000.0);
        }
        w.input_tokens += r.input_tokens;
        w.cached_input_tokens += r.cached_input_tokens;
        w.output_tokens += r.output_tokens;
        spent += r.cost_nanousd;
        streamed += r.stream_cost_nanousd;
    }
    samples.time_to_first_token_ms.extend(&ttft);
    w.time_to_first_token_ms = Percentiles::of(ttft);
    w.completion_s = Percentiles::of(done);
    w.batch_turnaround_s = Percentiles::of(turnaround);
    w.spent_usd = usd(spent);
    w.all_streamed_usd = usd(streamed);
    w.saving_usd = w.all_streamed_usd - w.spent_usd;
    w
}

/// Cumulative spend against the all-streamed cost, in at most `points` steps. A task's
/// all-streamed cost counts once (the largest of its lines, as in the table), however many
/// calls it paid for.
fn cost_over_time(ledger: &[&LedgerPoint], points: usize) -> Vec<CostPoint> {
    let (Some(first), Some(last)) = (ledger.first(), ledger.last()) else {
        return Vec::new();
    };
    let span = (last.created_at - first.created_at).max(1);
    let step = (span / points.max(1) as i64).max(1);
    let mut out = vec![CostPoint { at: first.created_at, spent_usd: 0.0, all_streamed_usd: 0.0 }];
    let (mut spent, mut streamed) = (0i64, 0i64);
    let mut counted: HashMap<&str, i64> = HashMap::new();
    let mut bucket_end = first.created_at + step;
    for l in ledger {
        while l.created_at > bucket_end {
            out.push(CostPoint {
                at: bucket_end,
                spent_usd: usd(spent),
                all_streamed_usd: usd(streamed),
            });
            bucket_end += step;
        }
        spent += l.cost_nanousd;
        let seen = counted.entry(l.task_id.as_str()).or_insert(0);
        if l.stream_cost_nanousd > *seen {
            streamed += l.stream_cost_nanousd - *seen;
            *seen = l.stream_cost_nanousd;
        }
    }
    out.push(CostPoint {
        at: last.created_at,
        spent_usd: usd(spent),
        all_streamed_usd: usd(streamed),
    });
    out
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(v) if v < 1000.0 => format!("{v:.0}ms"),
        Some(v) => secs(Some(v / 1000.0)),
    }
}

/// Seconds in the shortest readable unit.
pub fn secs_label(v: f64) -> String {
    secs(Some(v))
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(v) if v < 1.0 => format!("{:.0}ms", v * 1000.0),
        Some(v) if v < 60.0 => format!("{v:.1}s"),
        Some(v) if v < 3600.0 => format!("{:.0}m{:02.0}s", (v / 60.0).floor(), v % 60.0),
        Some(v) => format!("{:.0}h{:02.0}m", (v / 3600.0).floor(), (v % 3600.0) / 60.0),
    }
}

fn lanes(l: &LaneMix) -> String {
    let mut parts = Vec::new();
    let used: Vec<(usize, &str)> = [(l.stream, "stream"), (l.flex, "flex"), (l.batch, "batch")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .collect();
    // One lane needs no count: the items column has it.
    if let [(_, name)] = used.as_slice() {
        parts.push((*name).to_owned());
    } else {
        parts.extend(used.iter().map(|(n, name)| format!("{n} {name}")));
    }
    if l.escalated > 0 {
        parts.push(format!("{} escalated", l.escalated));
    }
    if parts.is_empty() { "–".to_owned() } else { parts.join(" · ") }
}

/// The table for people.
pub fn render_table(r: &Report, color: bool, width: u16) -> String {
    let head = [
        "workload",
        "items",
        "lanes",
        "late",
        "1st token p50/p99",
        "done p50/p95",
        "batch p50/p95",
        "spent",
        "all streamed",
        "saved",
    ];
    let mut table = crate::output::table(&head, color, width);
    let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
    let pair =
        |p: &Percentiles, f: fn(Option<f64>) -> String, hi: fn(&Percentiles) -> Option<f64>| {
            if p.count > 0 { format!("{} / {}", f(p.p50), f(hi(p))) } else { "–".into() }
        };
    for w in &r.workloads {
        let items = if w.open > 0 || w.failed > 0 {
            format!("{} ({} open, {} failed)", w.items, w.open, w.failed)
        } else {
            w.items.to_string()
        };
        table.add_row(vec![
            Cell::new(&w.workload),
            right(items),
            Cell::new(lanes(&w.lanes)),
            right(w.deadline_misses.to_string()),
            right(pair(&w.time_to_first_token_ms, ms, |p| p.p99)),
            right(pair(&w.completion_s, secs, |p| p.p95)),
            right(pair(&w.batch_turnaround_s, secs, |p| p.p95)),
            right(fmt_usd(w.spent_usd)),
            right(fmt_usd(w.all_streamed_usd)),
            right(if w.saving_usd > 0.0 { fmt_usd(w.saving_usd) } else { "–".into() }),
        ]);
    }
    let t = &r.total;
    let bold =
        |s: String| Cell::new(s).set_alignment(CellAlignment::Right).add_attribute(Attribute::Bold);
    table.add_row(vec![
        Cell::new("total").add_attribute(Attribute::Bold),
        bold(t.items.to_string()),
        Cell::new(""),
        bold(t.deadline_misses.to_string()),
        Cell::new(""),
        Cell::new(""),
        Cell::new(""),
        bold(fmt_usd(t.spent_usd)),
        bold(fmt_usd(t.all_streamed_usd)),
        bold(format!("{} ({:.0}%)", fmt_usd(t.saving_usd), t.saving_percent)),
    ]);
    // Names never wrap; the figures do, if they must.
    if let Some(c) = table.column_mut(0) {
        c.set_constraint(ColumnConstraint::ContentWidth);
    }
    let mut out = table.to_string();
    out.push('\n');
    if t.items == 0 {
        out.push_str("no tasks in this period\n");
    } else {
        out.push_str(&format!("{} items: {}.\n", t.items, lanes(&t.lanes).replace(" · ", ", ")));
        out.push_str(&format!(
            "spent {} where streaming everything would have cost {}: {} saved ({:.0}%).\n",
            fmt_usd(t.spent_usd),
            fmt_usd(t.all_streamed_usd),
            fmt_usd(t.saving_usd),
            t.saving_percent
        ));
        if t.deadline_misses > 0 {
            out.push_str(&format!(
                "{} item(s) missed their deadline (finished late, failed, or still open past it).\n",
                t.deadline_misses
            ));
        }
    }
    if let Some(note) = maybe_billed_note(r) {
        out.push_str(&note);
        out.push('\n');
    }
    out
}

/// What the provider may bill beyond the ledger, when anything.
pub fn maybe_billed_note(r: &Report) -> Option<String> {
    let m = r.maybe_billed;
    (m.calls > 0).then(|| {
        format!(
            "{} call(s) failed after the provider took them: it may bill up to {} for them, which the ledger cannot show (no usage came back).",
            m.calls,
            fmt_usd(m.nanousd as f64 / 1e9)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &str, lane: &str, state: &str) -> HistoryRow {
        HistoryRow {
            task_id: format!("tsk_{workload}_{lane}"),
            event_id: "evt".into(),
            workload: workload.into(),
            lane: lane.into(),
            state: state.into(),
            reason: String::new(),
            deadline: 10_000,
            created_at: 1_000,
            last_error: None,
            output: Some("ok".into()),
            stop_reason: Some("end_turn".into()),
            input_tokens: 100,
            cached_input_tokens: 0,
            output_tokens: 10,
            finished_at: Some(2_000),
            first_token_at: (lane == "stream").then_some(1_050),
            batch_submitted_at: (lane == "batch").then_some(1_100),
            batch_ended_at: (lane == "batch").then_some(1_900),
            cost_nanousd: if lane == "batch" { 500 } else { 1_000 },
            stream_cost_nanousd: 1_000,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p95, p.p99), (Some(50.0), Some(95.0), Some(99.0)));
        assert_eq!(Percentiles::of(vec![]).p50, None);
        assert_eq!(Percentiles::of(vec![7.0]).p99, Some(7.0));
    }

    #[test]
    fn savings_come_from_the_ledger_and_misses_from_deadlines() {
        let mut late = row("triage", "stream", "succeeded");
        late.finished_at = Some(20_000);
        late.task_id = "late".into();
        let rows = vec![
            row("triage", "stream", "succeeded"),
            late,
            row("scoring", "batch", "succeeded"),
            row("scoring", "batch", "failed"),
        ];
        let ledger: Vec<LedgerPoint> =
            [("tsk_triage_stream", 1_000), ("late", 1_000), ("tsk_scoring_batch", 500)]
                .iter()
                .enumerate()
                .map(|(i, (task, c))| LedgerPoint {
                    created_at: 2_000 + i as i64,
                    task_id: (*task).to_owned(),
                    workload: "w".into(),
                    lane: "stream".into(),
                    cost_nanousd: *c,
                    stream_cost_nanousd: 1_000,
                })
                .collect();
        let r = Report::build(&rows, &ledger, &["scoring".into()], 0, 5_000);
        assert_eq!(r.workloads[0].workload, "scoring", "config order first");
        assert_eq!(r.workloads[1].deadline_misses, 1);
        assert_eq!(r.workloads[0].deadline_misses, 1, "a failed task missed its deadline");
        assert_eq!(r.workloads[0].lanes.batch, 2);
        assert_eq!(r.workloads[0].batch_turnaround_s.p50, Some(0.8));
        assert_eq!(r.workloads[1].time_to_first_token_ms.p50, Some(50.0));
        assert_eq!(r.ledger_nanousd, 2_500);
        assert!((r.total.all_streamed_usd - 4e-6).abs() < 1e-12);
        assert!((r.total.saving_usd - 1.5e-6).abs() < 1e-12);
        let last = r.cost_over_time.last().unwrap();
        assert!((last.spent_usd - 2.5e-6).abs() < 1e-12);
        let table = render_table(&r, false, 200);
        assert!(table.contains("total"), "{table}");
        assert!(table.contains("2 item(s) missed their deadline"), "{table}");
        assert!(!table.contains("failed after the provider took them"), "{table}");
        let mut r = r;
        r.maybe_billed = sluice_store::MaybeSpent { calls: 2, nanousd: 190_000 };
        let table = render_table(&r, false, 200);
        assert!(
            table.contains(
                "2 call(s) failed after the provider took them: it may bill up to $0.00019"
            ),
            "{table}"
        );
    }

    /// Under `--since`, a line of an older task that fell in the window is not counted: what was
    /// spent and what streaming would have cost cover the same tasks, and the chart ends where
    /// the table does though a task paid for two calls.
    #[test]
    fn money_covers_the_reported_tasks_once() {
        let rows = vec![row("triage", "stream", "succeeded"), row("scoring", "batch", "succeeded")];
        let line = |task: &str, at: i64, cost: i64, stream: i64| LedgerPoint {
            created_at: at,
            task_id: task.to_owned(),
            workload: "w".into(),
            lane: "batch".into(),
            cost_nanousd: cost,
            stream_cost_nanousd: stream,
        };
        let ledger = vec![
            line("tsk_older", 1_500, 9_000, 9_000),
            line("tsk_triage_stream", 2_000, 1_000, 1_000),
            // An escalated batch task: its late batch line, then the stream call that ran.
            line("tsk_scoring_batch", 2_100, 500, 1_000),
            line("tsk_scoring_batch", 2_200, 1_000, 1_000),
        ];
        let r = Report::build(&rows, &ledger, &[], 1_000, 5_000);
        assert_eq!(r.ledger_nanousd, 2_500);
        assert!((r.total.spent_usd - 2.5e-6).abs() < 1e-12);
        let last = r.cost_over_time.last().unwrap();
        assert!((last.spent_usd - r.total.spent_usd).abs() < 1e-12);
        assert!((last.all_streamed_usd - 2e-6).abs() < 1e-12, "{last:?}");
    }
}
