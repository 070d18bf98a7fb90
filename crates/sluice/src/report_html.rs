//! The report as one self-contained HTML file: the figures, and three charts drawn as inline SVG
//! (cost over time, stream latency distribution, batch turnaround). No network, no chart library:
//! the file opens anywhere, mails well, and prints. A few lines of script only make the table
//! sortable; the charts do not need it.

use std::fmt::Write as _;

use sluice_core::units::fmt_usd;

use crate::report::{Percentiles, Report};

const W: f64 = 640.0;
const H: f64 = 260.0;
const PAD_L: f64 = 64.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 16.0;
const PAD_B: f64 = 40.0;

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(r: &Report, title: &str) -> String {
    let mut h = String::new();
    let t = &r.total;
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; margin: 2rem auto; max-width: 1180px; padding: 0 1rem; }}
h1 {{ font-size: 1.5rem; margin-bottom: .2rem; }} h2 {{ font-size: 1.1rem; margin-top: 2rem; }}
.sub {{ color: #5b6475; }}
.cards {{ display: flex; gap: 1rem; flex-wrap: wrap; margin: 1.2rem 0; }}
.card {{ border: 1px solid #dde2ea; border-radius: 8px; padding: .7rem 1rem; min-width: 9rem; }}
.card b {{ display: block; font-size: 1.35rem; }}
.charts {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 1.2rem; }}
figure {{ margin: 0; border: 1px solid #dde2ea; border-radius: 8px; padding: .6rem; }}
figcaption {{ font-weight: 600; margin-bottom: .3rem; }}
svg.chart {{ width: 100%; height: auto; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #5b6475; }}
table {{ border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }}
th, td {{ padding: .35rem .5rem; border-bottom: 1px solid #eef1f5; text-align: right; white-space: nowrap; }}
th {{ cursor: pointer; user-select: none; background: #f6f8fb; }}
td:first-child, th:first-child, td.l {{ text-align: left; }}
tfoot td {{ font-weight: 700; }}
.legend span {{ margin-right: 1rem; }} .sw {{ display: inline-block; width: .8rem; height: .8rem; border-radius: 2px; margin-right: .3rem; vertical-align: -1px; }}
.empty {{ color: #8a93a3; font-style: italic; }}
.wide {{ overflow-x: auto; }}
</style></head><body>
<h1>{title}</h1>
<p class="sub">Generated {generated}. Money from sluice's ledger: every provider call paid, at the price of the lane it ran in.</p>
<div class="cards">
<div class="card">items<b>{items}</b></div>
<div class="card">spent<b>{spent}</b></div>
<div class="card">all streamed would be<b>{streamed}</b></div>
<div class="card">saved<b>{saved} ({pct:.0}%)</b></div>
<div class="card">deadlines missed<b>{misses}</b></div>
</div>
"#,
        title = esc(title),
        generated = esc(&r.generated_at),
        items = t.items,
        spent = fmt_usd(t.spent_usd),
        streamed = fmt_usd(t.all_streamed_usd),
        saved = fmt_usd(t.saving_usd),
        pct = t.saving_percent,
        misses = t.deadline_misses,
    );
    if let Some(note) = crate::report::maybe_billed_note(r) {
        h.push_str(&format!("<p class=\"sub\">{}</p>\n", esc(&note)));
    }
    h.push_str("<div class=\"charts\">\n");
    h.push_str(&cost_chart(r));
    h.push_str(&latency_chart(&r.samples.time_to_first_token_ms));
    h.push_str(&turnaround_chart(r));
    h.push_str("</div>\n");
    h.push_str(&table(r));
    h.push_str(SCRIPT);
    h.push_str("</body></html>\n");
    h
}

fn figure(id: &str, caption: &str, legend: &str, body: &str) -> String {
    format!(
        "<figure id=\"{id}\"><figcaption>{caption}</figcaption>{legend}\
         <svg class=\"chart\" data-chart=\"{id}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{caption}\">{body}</svg></figure>\n",
        caption = esc(caption),
    )
}

fn empty(id: &str, caption: &str, why: &str) -> String {
    figure(
        id,
        caption,
        "",
        &format!(
            "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            W / 2.0,
            H / 2.0,
            esc(why)
        ),
    )
}

/// Round tick steps: 1, 2 or 5 times a power of ten, about `n` of them up to `max`.
fn ticks(max: f64, n: usize) -> Vec<f64> {
    if max <= 0.0 || !max.is_finite() {
        return vec![0.0];
    }
    let raw = max / n.max(1) as f64;
    let pow = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * pow).find(|s| *s >= raw).unwrap_or(raw);
    (0..=n * 2).map(|i| i as f64 * step).take_while(|v| *v <= max * 1.0001 + step).collect()
}

/// Axes with horizontal grid lines; returns the SVG and the y scale's top value.
fn y_axis(max: f64, label: impl Fn(f64) -> String) -> (String, f64) {
    let ts = ticks(max, 4);
    let top = ts.last().copied().unwrap_or(1.0).max(f64::MIN_POSITIVE);
    let mut s = String::new();
    for v in &ts {
        let y = PAD_T + (H - PAD_T - PAD_B) * (1.0 - v / top);
        let _ = write!(
            s,
            "<line x1=\"{PAD_L}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eef1f5\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - PAD_R,
            PAD_L - 6.0,
            y + 4.0,
            esc(&label(*v))
        );
    }
    let _ = write!(
        s,
        "<line x1=\"{PAD_L}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#9aa3b2\"/>",
        W - PAD_R,
        H - PAD_B,
        H - PAD_B
    );
    (s, top)
}

fn cost_chart(r: &Report) -> String {
    const ID: &str = "cost-over-time";
    const CAP: &str = "Cost over time (cumulative)";
    let pts = &r.cost_over_time;
    let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
        return empty(ID, CAP, "nothing paid in this period");
    };
    let max = pts.iter().map(|p| p.all_streamed_usd.max(p.spent_usd)).fold(0.0, f64::max);
    let (mut body, top) = y_axis(max, fmt_usd);
    let span = (last.at - first.at).max(1) as f64;
    let x = |at: i64| PAD_L + (W - PAD_L - PAD_R) * ((at - first.at) as f64 / span);
    let y = |v: f64| PAD_T + (H - PAD_T - PAD_B) * (1.0 - v / top);
    for (color, pick) in [
        ("#c2410c", (|p: &crate::report::CostPoint| p.all_streamed_usd) as fn(&_) -> f64),
        ("#15803d", |p: &crate::report::CostPoint| p.spent_usd),
    ] {
        let d: Vec<String> = pts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!("{}{:.1},{:.1}", if i == 0 { "M" } else { "L" }, x(p.at), y(pick(p)))
            })
            .collect();
        let _ = write!(
            body,
            "<path class=\"series\" d=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
            d.join(" ")
        );
    }
    for (at, anchor) in [(first.at, "start"), (last.at, "end")] {
        let label = chrono::DateTime::from_timestamp_millis(at)
            .map(|t| t.format("%H:%M:%S").to_string())
            .unwrap_or_default();
        let _ = write!(
            body,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{label} UTC</text>",
            x(at),
            H - PAD_B + 16.0
        );
    }
    let legend = "<div class=\"legend\"><span><i class=\"sw\" style=\"background:#c2410c\"></i>all streamed</span>\
                  <span><i class=\"sw\" style=\"background:#15803d\"></i>spent</span></div>";
    figure(ID, CAP, legend, &body)
}

/// Histogram of time to first token on log-spaced buckets: latency spans orders of magnitude.
fn latency_chart(sample: &[f64]) -> String {
    const ID: &str = "stream-latency";
    const CAP: &str = "Stream latency: time to first token";
    if sample.is_empty() {
        return empty(ID, CAP, "no streamed calls in this period");
    }
    let edges: Vec<f64> =
        [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5]
            .to_vec();
    let mut counts = vec![0usize; edges.len() + 1];
    for v in sample {
        let i = edges.iter().position(|e| v < e).unwrap_or(edges.len());
        if let Some(c) = counts.get_mut(i) {
            *c += 1;
        }
    }
    // Trim empty buckets at both ends.
    let lo = counts.iter().position(|c| *c > 0).unwrap_or(0);
    let hi = counts.iter().rposition(|c| *c > 0).unwrap_or(0);
    let label = |i: usize| -> String {
        let fmt = |v: f64| if v >= 1000.0 { format!("{}s", v / 1000.0) } else { format!("{v}ms") };
        match i {
            0 => format!("<{}", fmt(edges[0])),
            i if i >= edges.len() => format!("≥{}", fmt(edges[edges.len() - 1])),
            i => format!("{}–{}", fmt(edges[i - 1]), fmt(edges[i])),
        }
    };
    bars(ID, CAP, &(lo..=hi).map(|i| (label(i), counts[i])).collect::<Vec<_>>(), "#2563eb", {
        let p = Percentiles::of(sample.to_vec());
        format!(
            "<div class=\"legend\"><span>{} calls</span><span>p50 {:.0} ms</span><span>p99 {:.0} ms</span></div>",
            p.count,
            p.p50.unwrap_or(0.0),
            p.p99.unwrap_or(0.0)
        )
    })
}

fn turnaround_chart(r: &Report) -> String {
    const ID: &str = "batch-turnaround";
    const CAP: &str = "Batch turnaround, per workload (p50 and p95)";
    let rows: Vec<_> = r.workloads.iter().filter(|w| w.batch_turnaround_s.count > 0).collect();
    if rows.is_empty() {
        return empty(ID, CAP, "no batches ended in this period");
    }
    let max = rows.iter().filter_map(|w| w.batch_turnaround_s.p95).fold(0.0, f64::max);
    let (mut body, top) = y_axis(max, crate::report::secs_label);
    let n = rows.len() as f64;
    let slot = (W - PAD_L - PAD_R) / n;
    let y = |v: f64| PAD_T + (H - PAD_T - PAD_B) * (1.0 - v / top);
    for (i, w) in rows.iter().enumerate() {
        let x0 = PAD_L + slot * i as f64 + slot * 0.15;
        let bw = slot * 0.35;
        for (j, (v, color)) in
            [(w.batch_turnaround_s.p50, "#15803d"), (w.batch_turnaround_s.p95, "#86efac")]
                .iter()
                .enumerate()
        {
            let v = v.unwrap_or(0.0);
            let _ = write!(
                body,
                "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{}: {}</title></rect>",
                x0 + bw * j as f64,
                y(v),
                (H - PAD_B - y(v)).max(0.5),
                esc(&w.workload),
                crate::report::secs_label(v)
            );
        }
        let _ = write!(
            body,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x0 + bw,
            H - PAD_B + 16.0,
            esc(&w.workload)
        );
    }
    let legend = "<div class=\"legend\"><span><i class=\"sw\" style=\"background:#15803d\"></i>p50</span>\
                  <span><i class=\"sw\" style=\"background:#86efac\"></i>p95</span></div>";
    figure(ID, CAP, legend, &body)
}

fn bars(id: &str, caption: &str, data: &[(String, usize)], color: &str, legend: String) -> String {
    let max = data.iter().map(|d| d.1).max().unwrap_or(0) as f64;
    let (mut body, top) = y_axis(max, |v| format!("{v:.0}"));
    let slot = (W - PAD_L - PAD_R) / data.len().max(1) as f64;
    let y = |v: f64| PAD_T + (H - PAD_T - PAD_B) * (1.0 - v / top);
    for (i, (label, n)) in data.iter().enumerate() {
        let x = PAD_L + slot * i as f64 + slot * 0.1;
        let v = *n as f64;
        let _ = write!(
            body,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{}: {n}</title></rect>\
             <text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            y(v),
            slot * 0.8,
            (H - PAD_B - y(v)).max(0.5),
            esc(label),
            x + slot * 0.4,
            H - PAD_B + 16.0,
            esc(label)
        );
    }
    figure(id, caption, &legend, &body)
}

fn table(r: &Report) -> String {
    let mut s = String::from(
        "<h2>Per workload</h2><div class=\"wide\"><table id=\"workloads\"><thead><tr>\
         <th>workload</th><th>items</th><th>stream</th><th>flex</th><th>batch</th><th>escalated</th>\
         <th>late</th><th>first token p50</th><th>first token p99</th><th>done p50</th><th>done p95</th>\
         <th>batch turnaround p95</th><th>tokens in</th><th>tokens out</th><th>spent</th><th>all streamed</th><th>saving</th>\
         </tr></thead><tbody>\n",
    );
    let opt_ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0} ms"));
    let opt_s = |v: Option<f64>| v.map_or("–".to_owned(), crate::report::secs_label);
    for w in &r.workloads {
        let _ = writeln!(
            s,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td></tr>",
            esc(&w.workload),
            w.items,
            w.lanes.stream,
            w.lanes.flex,
            w.lanes.batch,
            w.lanes.escalated,
            w.deadline_misses,
            opt_ms(w.time_to_first_token_ms.p50),
            opt_ms(w.time_to_first_token_ms.p99),
            opt_s(w.completion_s.p50),
            opt_s(w.completion_s.p95),
            opt_s(w.batch_turnaround_s.p95),
            w.input_tokens,
            w.output_tokens,
            w.spent_usd,
            fmt_usd(w.spent_usd),
            w.all_streamed_usd,
            fmt_usd(w.all_streamed_usd),
            w.saving_usd,
            fmt_usd(w.saving_usd),
        );
    }
    let t = &r.total;
    let _ = writeln!(
        s,
        "</tbody><tfoot><tr><td class=\"l\">total</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td></td><td></td><td></td><td></td><td></td><td></td><td></td><td>{}</td><td>{}</td><td>{} ({:.0}%)</td></tr></tfoot></table></div>",
        t.items,
        t.lanes.stream,
        t.lanes.flex,
        t.lanes.batch,
        t.lanes.escalated,
        t.deadline_misses,
        fmt_usd(t.spent_usd),
        fmt_usd(t.all_streamed_usd),
        fmt_usd(t.saving_usd),
        t.saving_percent
    );
    s
}

/// Sorts the table by a clicked column; marks the page ready, and records script errors where a
/// test (or a curious reader) can see them.
const SCRIPT: &str = r#"<script>
window.addEventListener("error", function (e) {
  document.documentElement.setAttribute("data-script-error", String(e.message));
});
(function () {
  var table = document.getElementById("workloads");
  if (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var asc = th.getAttribute("data-sort") !== "asc";
        var key = function (r) {
          var c = r.cells[col];
          var v = c.getAttribute("data-v") || c.textContent;
          var n = parseFloat(v);
          return isNaN(n) ? v : n;
        };
        rows.sort(function (a, b) {
          var x = key(a), y = key(b);
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
        th.setAttribute("data-sort", asc ? "asc" : "desc");
      });
    });
  }
  var charts = document.querySelectorAll("svg.chart");
  var drawn = 0;
  charts.forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    if (box.width > 0 && box.height > 0 && svg.querySelector("path.series, rect.bar, text.empty")) drawn++;
  });
  document.documentElement.setAttribute("data-charts-drawn", String(drawn));
})();
</script>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(9.0, 4), vec![0.0, 5.0, 10.0]);
        assert_eq!(ticks(0.0, 4), vec![0.0]);
        assert!(ticks(0.037, 4).iter().all(|v| v.is_finite()));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
