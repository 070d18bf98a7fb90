//! `sluice explain`: the verdict table.

use comfy_table::{Attribute, Cell, CellAlignment, Color};
use sluice_core::Config;
use sluice_core::Lane;
use sluice_core::explain::{Explanation, explain};
use sluice_core::units::fmt_usd;

use crate::output;

pub fn run(config: &Config, json: bool) -> anyhow::Result<()> {
    let e = explain(config);
    if json {
        let mut text = serde_json::to_string_pretty(&e)?;
        text.push('\n');
        return output::print(&text);
    }
    output::print(&render(&e, output::use_color(), output::width()))
}

pub fn render(e: &Explanation, color: bool, width: u16) -> String {
    let head = [
        "workload",
        "lane",
        "needed",
        "delay cost",
        "volume/day",
        "streamed/day",
        "as decided/day",
        "saving/day",
        "why",
    ];
    let mut table = output::table(&head, color, width);
    for r in &e.rows {
        let lane = Cell::new(r.lane).add_attribute(Attribute::Bold).fg(match r.lane {
            Lane::Stream => Color::Yellow,
            Lane::Flex => Color::Cyan,
            Lane::Batch => Color::Green,
        });
        let star = if r.tokens_estimated { "*" } else { "" };
        table.add_row(vec![
            Cell::new(&r.workload),
            lane,
            Cell::new(&r.needed),
            Cell::new(&r.delay_cost),
            Cell::new(format_volume(r.volume_per_day)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{}{star}", fmt_usd(r.stream_cost_per_day)))
                .set_alignment(CellAlignment::Right),
            Cell::new(fmt_usd(r.cost_per_day)).set_alignment(CellAlignment::Right),
            Cell::new(if r.saving_per_day > 0.0 {
                fmt_usd(r.saving_per_day)
            } else {
                "–".to_owned()
            })
            .set_alignment(CellAlignment::Right),
            Cell::new(&r.reason),
        ]);
    }
    let t = &e.total;
    table.add_row(vec![
        Cell::new(format!("total ({} workloads)", e.rows.len())).add_attribute(Attribute::Bold),
        Cell::new(""),
        Cell::new(""),
        Cell::new(""),
        Cell::new(""),
        Cell::new(fmt_usd(t.stream_cost_per_day))
            .set_alignment(CellAlignment::Right)
            .add_attribute(Attribute::Bold),
        Cell::new(fmt_usd(t.cost_per_day))
            .set_alignment(CellAlignment::Right)
            .add_attribute(Attribute::Bold),
        Cell::new(fmt_usd(t.saving_per_day))
            .set_alignment(CellAlignment::Right)
            .add_attribute(Attribute::Bold),
        Cell::new(format!(
            "{} a month saved against streaming everything",
            fmt_usd(t.saving_per_month)
        )),
    ]);
    let mut out = format!("{}\n{table}\n", e.config);
    for note in &e.notes {
        out.push_str(note);
        out.push('\n');
    }
    out
}

fn format_volume(v: f64) -> String {
    if v.fract() == 0.0 && v < 1e15 { format!("{}", v as u64) } else { format!("{v:.1}") }
}
