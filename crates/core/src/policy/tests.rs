use super::*;
use proptest::prelude::*;

const MIN: u64 = 60;
const HOUR: u64 = 3600;

/// A typical mid-size workload: $0.004 per streamed item, half that in batch and flex.
fn input() -> PolicyInput {
    PolicyInput {
        forced: None,
        slack: Duration::from_secs(24 * HOUR),
        deadline_words: None,
        delay_cost_per_hour: 0.0,
        volume_per_day: 2_000.0,
        cost_stream: 0.004,
        cost_flex: Some(0.002),
        cost_batch: Some(0.002),
        timing: Timing::with_output_tokens(
            200,
            Duration::from_secs(30 * MIN),
            Duration::from_secs(2 * HOUR),
            Duration::from_secs(10 * MIN),
        ),
        batch_max_items: 5_000,
        batch_max_age: Duration::from_secs(15 * MIN),
        min_daily_savings: 1.0,
    }
}

#[test]
fn forced_lane_wins_and_warns_when_it_may_be_late() {
    let d = decide(&PolicyInput { forced: Some(Lane::Batch), ..input() });
    assert_eq!((d.lane, d.rule), (Lane::Batch, Rule::Forced));
    assert!(!d.reason.contains("miss"));

    let d = decide(&PolicyInput {
        forced: Some(Lane::Batch),
        slack: Duration::from_secs(2 * MIN),
        ..input()
    });
    assert_eq!(d.lane, Lane::Batch);
    assert!(d.reason.contains("may miss the deadline"), "{}", d.reason);
}

#[test]
fn forced_lane_that_is_not_offered_streams() {
    let d = decide(&PolicyInput { forced: Some(Lane::Flex), cost_flex: None, ..input() });
    assert_eq!((d.lane, d.rule), (Lane::Stream, Rule::Forced));
    assert!(d.reason.contains("not offered"), "{}", d.reason);
}

#[test]
fn a_deadline_no_cheaper_lane_can_meet_streams() {
    let d = decide(&PolicyInput { slack: Duration::from_secs(2 * MIN), ..input() });
    assert_eq!((d.lane, d.rule), (Lane::Stream, Rule::Feasibility));
    assert!(d.reason.contains("needed within 2m"), "{}", d.reason);
    assert!(d.reason.contains("too soon for flex (20m) or a batch (2h25m)"), "{}", d.reason);
}

#[test]
fn nothing_cheaper_offered_streams() {
    let d = decide(&PolicyInput { cost_flex: None, cost_batch: None, ..input() });
    assert_eq!((d.lane, d.rule), (Lane::Stream, Rule::Feasibility));
}

#[test]
fn a_delay_that_costs_more_than_it_saves_streams() {
    // Saving $0.002/item; an expected ~40 min wait at $0.25/h costs far more.
    let d = decide(&PolicyInput { delay_cost_per_hour: 0.25, cost_flex: None, ..input() });
    assert_eq!((d.lane, d.rule), (Lane::Stream, Rule::Value));
    assert!(d.reason.contains("waiting costs more than it saves"), "{}", d.reason);
}

#[test]
fn savings_below_the_daily_minimum_stream() {
    // 100 items a day save $0.20 a day.
    let d = decide(&PolicyInput { volume_per_day: 100.0, ..input() });
    assert_eq!((d.lane, d.rule), (Lane::Stream, Rule::Materiality));
    assert!(
        d.reason.contains("a batch would save $0.20/day, under min_daily_savings of $1.00"),
        "{}",
        d.reason
    );
}

#[test]
fn loose_deadline_cheap_delay_high_volume_batches() {
    let d = decide(&input());
    assert_eq!((d.lane, d.rule), (Lane::Batch, Rule::Cheapest));
    assert!((d.saving_per_day - 4.0).abs() < 1e-9);
    assert!((d.stream_cost_per_day - 8.0).abs() < 1e-9);
    assert!(d.reason.contains("saves $4.00/day (50%)"), "{}", d.reason);
}

#[test]
fn flex_when_too_soon_for_a_batch_but_not_for_flex() {
    let d = decide(&PolicyInput { slack: Duration::from_secs(45 * MIN), ..input() });
    assert_eq!((d.lane, d.rule), (Lane::Flex, Rule::Cheapest));
    assert!(d.reason.contains("too soon for a batch"), "{}", d.reason);
}

#[test]
fn flex_beats_batch_when_waiting_has_a_price() {
    // Both fit; at $0.002/h the batch's longer wait makes flex the better deal.
    let d = decide(&PolicyInput { delay_cost_per_hour: 0.002, ..input() });
    assert_eq!(d.lane, Lane::Flex);
}

#[test]
fn batch_fill_time_follows_volume() {
    // 10 items a day never fill 5,000: the batch is cut at max age (15m).
    let low = decide(&PolicyInput { volume_per_day: 10.0, min_daily_savings: 0.0, ..input() });
    let b = low.estimate(Lane::Batch).unwrap();
    assert_eq!(b.worst_delay.as_secs() / 60, (15 + 120 + 10));
    // 1M items a day fill a 5,000-item batch in 7.2 minutes.
    let high = decide(&PolicyInput { volume_per_day: 1_000_000.0, ..input() });
    let b = high.estimate(Lane::Batch).unwrap();
    assert!(b.worst_delay < Duration::from_secs((8 + 120 + 11) * MIN));
}

fn arb_input() -> impl Strategy<Value = PolicyInput> {
    (
        1u64..(48 * HOUR),                     // slack, seconds
        prop_oneof![Just(0.0), 0.0..2.0f64],   // delay cost per hour
        0.0..200_000.0f64,                     // volume per day
        0.000_01..0.5f64,                      // stream cost per item
        proptest::option::of(0.3..1.0f64),     // flex multiplier
        proptest::option::of(0.3..1.0f64),     // batch multiplier
        0u64..2_000,                           // output tokens
        (1u64..(4 * HOUR), 1u64..(20 * HOUR)), // turnaround p50, extra to p95
        (1u64..100_000, 1u64..(6 * HOUR)),     // batch max items, max age
        0.0..20.0f64,                          // min daily savings
    )
        .prop_map(
            |(slack, c, v, stream, flex, batch, out, (p50, extra), (items, age), min)| {
                PolicyInput {
                    forced: None,
                    slack: Duration::from_secs(slack),
                    deadline_words: None,
                    delay_cost_per_hour: c,
                    volume_per_day: v,
                    cost_stream: stream,
                    cost_flex: flex.map(|m| stream * m),
                    cost_batch: batch.map(|m| stream * m),
                    timing: Timing::with_output_tokens(
                        out,
                        Duration::from_secs(p50),
                        Duration::from_secs(p50 + extra),
                        Duration::from_secs(5 * MIN),
                    ),
                    batch_max_items: items,
                    batch_max_age: Duration::from_secs(age),
                    min_daily_savings: min,
                }
            },
        )
}

proptest! {
    #[test]
    fn a_tighter_deadline_never_turns_stream_into_batch(i in arb_input(), f in 0.0..1.0f64) {
        let loose = decide(&i);
        let tight = decide(&PolicyInput { slack: i.slack.mul_f64(f), ..i.clone() });
        if loose.lane == Lane::Stream {
            prop_assert_eq!(tight.lane, Lane::Stream, "{}", tight.reason);
        }
    }

    #[test]
    fn a_higher_delay_cost_never_turns_stream_into_batch(i in arb_input(), extra in 0.0..5.0f64) {
        let cheap = decide(&i);
        let dear = decide(&PolicyInput { delay_cost_per_hour: i.delay_cost_per_hour + extra, ..i.clone() });
        if cheap.lane == Lane::Stream {
            prop_assert_eq!(dear.lane, Lane::Stream, "{}", dear.reason);
        }
    }

    #[test]
    fn a_higher_volume_never_turns_batch_into_stream(i in arb_input(), factor in 1.0..100.0f64) {
        let low = decide(&i);
        let high = decide(&PolicyInput { volume_per_day: i.volume_per_day * factor, ..i.clone() });
        if low.lane == Lane::Batch {
            prop_assert_ne!(high.lane, Lane::Stream, "{}", high.reason);
        }
    }

    #[test]
    fn the_chosen_lane_meets_the_deadline_when_any_lane_can(i in arb_input()) {
        let d = decide(&i);
        if d.lanes.iter().any(|e| e.meets_deadline) {
            let chosen = d.estimate(d.lane).unwrap();
            prop_assert!(chosen.meets_deadline, "{:?} {}", d.lane, d.reason);
        }
    }

    #[test]
    fn a_cheaper_lane_is_only_chosen_when_it_saves_enough(i in arb_input()) {
        let d = decide(&i);
        if d.lane != Lane::Stream {
            prop_assert!(d.saving_per_day >= i.min_daily_savings);
            prop_assert!(d.cost_per_day <= d.stream_cost_per_day);
        }
    }
}
