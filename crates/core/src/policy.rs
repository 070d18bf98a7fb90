//! The lane decision: does someone need this result right now?
//!
//! [`decide`] is a pure function of numbers. It applies DESIGN.md's rules in order:
//!
//! 1. **forced**: `lane = "stream" | "flex" | "batch"` in the config wins;
//! 2. **feasibility**: a cheaper lane is a candidate only if its worst case still meets the deadline
//!    with room to escalate to stream (`fill + turnaround p95 + stream p99 + margin` for a batch,
//!    `flex p99 + stream p99 + margin` for flex);
//! 3. **value**: a candidate must save more per item than its expected delay costs;
//! 4. **materiality**: and save at least `min_daily_savings` a day;
//! 5. otherwise the candidate with the best net saving wins (a batch on a tie: it draws on its own
//!    quota and is never refused), and stream if none is left.
//!
//! Each rule can only remove candidates, and a tighter deadline, a higher delay cost or a lower
//! volume only ever removes more. That is what makes the verdict monotone (see the property tests).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{fmt_duration, fmt_usd, serde_secs};

/// Where a task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// A real-time streamed call at the standard price.
    Stream,
    /// The provider's flex tier: a synchronous call at about the batch price, slower, may be refused.
    Flex,
    /// The provider's Batch API: about half price, asynchronous, up to 24 h.
    Batch,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Stream, Lane::Flex, Lane::Batch];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Stream => "stream",
            Lane::Flex => "flex",
            Lane::Batch => "batch",
        }
    }
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long each lane takes, as the policy assumes it. Priors until history replaces them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timing {
    #[serde(with = "serde_secs")]
    pub stream_p50: Duration,
    #[serde(with = "serde_secs")]
    pub stream_p99: Duration,
    #[serde(with = "serde_secs")]
    pub flex_p50: Duration,
    /// Past this a flex call is given up and the task falls back to stream.
    #[serde(with = "serde_secs")]
    pub flex_p99: Duration,
    #[serde(with = "serde_secs")]
    pub batch_turnaround_p50: Duration,
    #[serde(with = "serde_secs")]
    pub batch_turnaround_p95: Duration,
    /// Kept free before a deadline, on top of the worst case, for escalation and clock skew.
    #[serde(with = "serde_secs")]
    pub margin: Duration,
}

impl Timing {
    /// Latency priors for a call that writes about `output_tokens`: a first token within 0.6 s
    /// (3 s at p99), then 60 tokens/s (25 at p99). Flex is assumed twice as slow plus queueing, and
    /// given up after ten minutes.
    pub fn with_output_tokens(
        output_tokens: u64,
        batch_turnaround_p50: Duration,
        batch_turnaround_p95: Duration,
        margin: Duration,
    ) -> Timing {
        let out = output_tokens as f64;
        let stream_p50 = Duration::from_secs_f64(0.6 + out / 60.0);
        let stream_p99 = Duration::from_secs_f64(3.0 + out / 25.0);
        Timing {
            stream_p50,
            stream_p99,
            flex_p50: stream_p50 * 2 + Duration::from_secs(10),
            flex_p99: Duration::from_secs(600),
            batch_turnaround_p50,
            batch_turnaround_p95,
            margin,
        }
    }
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyInput {
    /// A lane set in the config; it wins.
    pub forced: Option<Lane>,
    /// From the item's arrival to its deadline.
    pub slack: Duration,
    /// How the reason words the deadline, e.g. "needed by 08:00 (12h ahead)"; by default
    /// "needed within" the slack.
    pub deadline_words: Option<String>,
    /// Dollars per item per hour that the result arrives later than a streamed one would.
    pub delay_cost_per_hour: f64,
    pub volume_per_day: f64,
    /// Dollars per item in each lane; `None` where the provider or model does not offer the lane.
    pub cost_stream: f64,
    pub cost_flex: Option<f64>,
    pub cost_batch: Option<f64>,
    pub timing: Timing,
    /// A batch is cut at this many items…
    pub batch_max_items: u64,
    /// …or when its oldest item has waited this long.
    pub batch_max_age: Duration,
    pub min_daily_savings: f64,
}

/// Which rule settled the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    Forced,
    Feasibility,
    Value,
    Materiality,
    Cheapest,
}

/// The estimate for one lane.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LaneEstimate {
    pub lane: Lane,
    pub cost_per_item: f64,
    pub cost_per_day: f64,
    /// Stream cost minus this lane's, per day.
    pub saving_per_day: f64,
    #[serde(with = "serde_secs")]
    pub expected_delay: Duration,
    /// The worst case, including the room kept to escalate to stream.
    #[serde(with = "serde_secs")]
    pub worst_delay: Duration,
    pub meets_deadline: bool,
    /// What waiting longer than a streamed call costs, per item.
    pub delay_cost_per_item: f64,
}

impl LaneEstimate {
    fn saving_per_item(&self, stream: f64) -> f64 {
        stream - self.cost_per_item
    }

    fn net_per_item(&self, stream: f64) -> f64 {
        self.saving_per_item(stream) - self.delay_cost_per_item
    }
}

/// The verdict: a lane, the rule that chose it, the reason in plain words, and the figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub lane: Lane,
    pub rule: Rule,
    pub reason: String,
    pub stream_cost_per_day: f64,
    pub cost_per_day: f64,
    pub saving_per_day: f64,
    #[serde(with = "serde_secs")]
    pub expected_delay: Duration,
    /// Every lane the provider offers for this model, the chosen one included.
    pub lanes: Vec<LaneEstimate>,
}

impl Decision {
    pub fn estimate(&self, lane: Lane) -> Option<&LaneEstimate> {
        self.lanes.iter().find(|e| e.lane == lane)
    }
}

/// Decides the lane. Pure: the same input gives the same decision.
pub fn decide(input: &PolicyInput) -> Decision {
    let lanes = estimates(input);
    let stream_cost = input.cost_stream;
    let by_lane = |lane: Lane| lanes.iter().find(|e| e.lane == lane);
    let stream = by_lane(Lane::Stream).cloned().unwrap_or_else(|| stream_estimate(input));
    let finish = |lane: Lane, rule: Rule, reason: String| {
        let chosen = by_lane(lane).unwrap_or(&stream);
        Decision {
            lane,
            rule,
            reason,
            stream_cost_per_day: stream.cost_per_day,
            cost_per_day: chosen.cost_per_day,
            saving_per_day: chosen.saving_per_day,
            expected_delay: chosen.expected_delay,
            lanes: lanes.clone(),
        }
    };

    if let Some(forced) = input.forced {
        let mut reason = format!("lane = \"{forced}\" is set in the config");
        match by_lane(forced) {
            None => {
                reason
                    .push_str(&format!("; {forced} is not offered for this model, so it streams"));
                return finish(Lane::Stream, Rule::Forced, reason);
            }
            Some(e) if !e.meets_deadline => reason.push_str(&format!(
                "; it may miss the deadline: {}, {} can take {}",
                needed(input),
                lane_noun(forced),
                fmt_duration(e.worst_delay)
            )),
            Some(_) => {}
        }
        return finish(forced, Rule::Forced, reason);
    }

    let offered: Vec<&LaneEstimate> = lanes.iter().filter(|e| e.lane != Lane::Stream).collect();
    if offered.is_empty() {
        return finish(
            Lane::Stream,
            Rule::Feasibility,
            "no batch or flex lane is offered for this model".to_owned(),
        );
    }

    let feasible: Vec<&LaneEstimate> =
        offered.iter().copied().filter(|e| e.meets_deadline).collect();
    if feasible.is_empty() {
        let parts: Vec<String> = offered
            .iter()
            .map(|e| format!("{} ({})", lane_noun(e.lane), fmt_duration(e.worst_delay)))
            .collect();
        let reason = format!("{}: too soon for {}", needed(input), parts.join(" or "));
        return finish(Lane::Stream, Rule::Feasibility, reason);
    }

    let valuable: Vec<&LaneEstimate> =
        feasible.iter().copied().filter(|e| e.net_per_item(stream_cost) > 0.0).collect();
    if valuable.is_empty()
        && let Some(e) = best(&feasible, stream_cost)
    {
        let reason = format!(
            "waiting costs more than it saves: {} saves {}/item, but its ~{} wait costs {}/item at {}/h",
            lane_noun(e.lane),
            fmt_usd(e.saving_per_item(stream_cost)),
            fmt_duration(e.expected_delay),
            fmt_usd(e.delay_cost_per_item),
            fmt_usd(input.delay_cost_per_hour),
        );
        return finish(Lane::Stream, Rule::Value, reason);
    }

    let material: Vec<&LaneEstimate> =
        valuable.iter().copied().filter(|e| e.saving_per_day >= input.min_daily_savings).collect();
    if material.is_empty()
        && let Some(e) = best(&valuable, stream_cost)
    {
        let reason = format!(
            "not worth it: {} would save {}/day, under min_daily_savings of {}",
            lane_noun(e.lane),
            fmt_usd(e.saving_per_day),
            fmt_usd(input.min_daily_savings),
        );
        return finish(Lane::Stream, Rule::Materiality, reason);
    }

    let Some(e) = best(&material, stream_cost) else {
        return finish(Lane::Stream, Rule::Value, "no cheaper lane is worth it".to_owned());
    };
    let pct =
        if stream_cost > 0.0 { 100.0 * e.saving_per_item(stream_cost) / stream_cost } else { 0.0 };
    let mut reason = match by_lane(Lane::Batch) {
        Some(b) if e.lane == Lane::Flex && !b.meets_deadline => format!(
            "{}: too soon for a batch ({}), flex fits ({})",
            needed(input),
            fmt_duration(b.worst_delay),
            fmt_duration(e.worst_delay),
        ),
        _ => format!(
            "{}: {} fits ({} at worst)",
            needed(input),
            lane_noun(e.lane),
            fmt_duration(e.worst_delay)
        ),
    };
    reason.push_str(&format!(" and saves {}/day ({pct:.0}%)", fmt_usd(e.saving_per_day)));
    // Only worth a mention when the wait costs a noticeable share of what it saves.
    if e.delay_cost_per_item > 0.1 * e.saving_per_item(stream_cost) {
        reason.push_str(&format!(
            ", more than its ~{} wait costs ({}/item)",
            fmt_duration(e.expected_delay),
            fmt_usd(e.delay_cost_per_item)
        ));
    }
    finish(e.lane, Rule::Cheapest, reason)
}

/// The candidate with the best net saving per item; on a tie, batch before flex.
/// The candidate with the best net saving per item; on a tie, batch before flex.
fn best<'a>(candidates: &[&'a LaneEstimate], stream_cost: f64) -> Option<&'a LaneEstimate> {
    let better = |c: &LaneEstimate, b: &LaneEstimate| {
        let (nc, nb) = (c.net_per_item(stream_cost), b.net_per_item(stream_cost));
        nc > nb + 1e-12 || ((nc - nb).abs() <= 1e-12 && c.lane > b.lane)
    };
    candidates.iter().copied().reduce(|b, c| if better(c, b) { c } else { b })
}

fn lane_noun(lane: Lane) -> &'static str {
    match lane {
        Lane::Stream => "streaming",
        Lane::Flex => "flex",
        Lane::Batch => "a batch",
    }
}

fn needed(input: &PolicyInput) -> String {
    input
        .deadline_words
        .clone()
        .unwrap_or_else(|| format!("needed within {}", fmt_duration(input.slack)))
}

/// How long the first item of a batch waits for the batch to be cut, at the declared volume.
fn fill_time(input: &PolicyInput) -> Duration {
    let per_sec = input.volume_per_day / 86_400.0;
    if per_sec <= 0.0 || !per_sec.is_finite() {
        return input.batch_max_age;
    }
    let to_fill = Duration::try_from_secs_f64(input.batch_max_items as f64 / per_sec)
        .unwrap_or(Duration::MAX);
    to_fill.min(input.batch_max_age)
}

fn stream_estimate(input: &PolicyInput) -> LaneEstimate {
    LaneEstimate {
        lane: Lane::Stream,
        cost_per_item: input.cost_stream,
        cost_per_day: input.cost_stream * input.volume_per_day,
        saving_per_day: 0.0,
        expected_delay: input.timing.stream_p50,
        worst_delay: input.timing.stream_p99,
        meets_deadline: input.timing.stream_p99 <= input.slack,
        delay_cost_per_item: 0.0,
    }
}

fn estimates(input: &PolicyInput) -> Vec<LaneEstimate> {
    let t = &input.timing;
    let escalation_room = t.stream_p99 + t.margin;
    let fill = fill_time(input);
    let mut out = vec![stream_estimate(input)];
    let mut push = |lane, cost: Option<f64>, expected: Duration, worst: Duration| {
        let Some(cost) = cost else { return };
        let extra_wait = expected.saturating_sub(t.stream_p50).as_secs_f64() / 3600.0;
        out.push(LaneEstimate {
            lane,
            cost_per_item: cost,
            cost_per_day: cost * input.volume_per_day,
            saving_per_day: (input.cost_stream - cost) * input.volume_per_day,
            expected_delay: expected,
            worst_delay: worst,
            meets_deadline: worst <= input.slack,
            delay_cost_per_item: input.delay_cost_per_hour * extra_wait,
        });
    };
    push(Lane::Flex, input.cost_flex, t.flex_p50, t.flex_p99 + escalation_room);
    push(
        Lane::Batch,
        input.cost_batch,
        fill / 2 + t.batch_turnaround_p50,
        fill.saturating_add(t.batch_turnaround_p95).saturating_add(escalation_room),
    );
    out
}

#[cfg(test)]
mod tests;
