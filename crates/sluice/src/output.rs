//! Writing to the terminal: stdout for results, stderr for errors. A closed pipe
//! (`sluice explain | head`) ends the command quietly, as ripgrep does.

use std::io::{IsTerminal, Write};

pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

pub fn eprint(text: &str) {
    // Nothing sensible is left to do if stderr itself is gone.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Colour only for a person at a terminal, and never when NO_COLOR is set.
pub fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The width to lay tables out in: the terminal's, `COLUMNS`, or 160 when piped.
pub fn width() -> u16 {
    // A pseudo-terminal without a size reports 0 columns.
    if let Some((w, _)) = terminal_size().filter(|(w, _)| *w >= 40) {
        return w;
    }
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(160)
}

fn terminal_size() -> Option<(u16, u16)> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    comfy_table::Table::new().width().map(|w| (w, 0))
}

/// The table style of every command: horizontal rules, laid out in `width`, bold headers.
pub fn table(head: &[&str], color: bool, width: u16) -> comfy_table::Table {
    use comfy_table::{Attribute, Cell, ContentArrangement, Table, presets};
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_HORIZONTAL_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width);
    if !color {
        table.force_no_tty();
    }
    table.set_header(head.iter().map(|h| Cell::new(h).add_attribute(Attribute::Bold)));
    table
}

/// Says yes at most once per `period`: the progress lines printed instead of bars when stderr is
/// not a terminal.
#[derive(Debug)]
pub struct Every {
    period: std::time::Duration,
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Every {
    pub fn new(period: std::time::Duration) -> Every {
        Every { period, last: std::sync::Mutex::new(None) }
    }

    pub fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= self.period);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }
}
