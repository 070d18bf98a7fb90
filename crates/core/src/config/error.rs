//! Config errors that point at the file, line, column and field, say what was expected, and
//! suggest the nearest valid name.
//!
//! Rendered like a compiler diagnostic. Hand-written rather than pulled from a diagnostics crate:
//! one caret line under one source line is all it takes.

use std::fmt;
use std::ops::Range;

/// One thing wrong with a config.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The field, as a path into the file: `workloads[2].after`.
    pub field: Option<String>,
    pub message: String,
    pub expected: Option<String>,
    pub suggestion: Option<String>,
    /// Where in the file: filled in from the field's span when it can be found.
    pub location: Option<Location>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
    line_text: String,
    underline: Range<usize>,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            field: Some(field.into()),
            message: message.into(),
            expected: None,
            suggestion: None,
            location: None,
        }
    }

    pub fn expected(mut self, expected: impl Into<String>) -> Problem {
        self.expected = Some(expected.into());
        self
    }

    /// Adds "did you mean …?" when one of `candidates` is close to `typed`.
    pub fn suggest_from<'a>(
        mut self,
        typed: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Problem {
        self.suggestion = nearest(typed, candidates).map(|s| format!("did you mean `{s}`?"));
        self
    }

    pub(crate) fn locate(&mut self, source: &str, span: Range<usize>) {
        self.location = Some(Location::of(source, span));
    }
}

impl Location {
    fn of(source: &str, span: Range<usize>) -> Location {
        let start = span.start.min(source.len());
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..].find('\n').map_or(source.len(), |i| start + i);
        let line_text = source[line_start..line_end].trim_end_matches('\r').to_owned();
        let column = source[line_start..start].chars().count() + 1;
        let line = source[..start].matches('\n').count() + 1;
        let end = span.end.clamp(start, line_end);
        let width = source[start..end].chars().count().max(1);
        Location { line, column, line_text, underline: column - 1..column - 1 + width }
    }
}

/// A config that cannot be used, with every problem found in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file as the user named it.
    pub file: String,
    pub problems: Vec<Problem>,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match &p.field {
                Some(field) => writeln!(f, "error: {field}: {}", p.message)?,
                None => writeln!(f, "error: {}", p.message)?,
            }
            match &p.location {
                Some(loc) => {
                    let gutter = loc.line.to_string().len();
                    writeln!(f, "{:gutter$}--> {}:{}:{}", "", self.file, loc.line, loc.column)?;
                    writeln!(f, "{:gutter$} |", "")?;
                    writeln!(f, "{} | {}", loc.line, loc.line_text)?;
                    let pad = " ".repeat(loc.underline.start);
                    let carets = "^".repeat(loc.underline.len());
                    writeln!(f, "{:gutter$} | {pad}{carets}", "")?;
                }
                None => writeln!(f, "  --> {}", self.file)?,
            }
            if let Some(e) = &p.expected {
                writeln!(f, "  = expected: {e}")?;
            }
            if let Some(s) = &p.suggestion {
                writeln!(f, "  = help: {s}")?;
            }
        }
        Ok(())
    }
}

/// The closest candidate to `typed`, if it is close enough to be a likely typo.
pub fn nearest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let typed_lower = typed.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&typed_lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.chars().count().max(typed.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_typos_but_not_unrelated_names() {
        let keys = ["needed_within", "needed_by", "delay_cost", "volume_per_day"];
        assert_eq!(nearest("neded_within", keys), Some("needed_within"));
        assert_eq!(nearest("volume_per_dya", keys), Some("volume_per_day"));
        assert_eq!(nearest("colour", keys), None);
    }

    #[test]
    fn renders_file_line_column_and_caret() {
        let src = "a = 1\nneded_within = \"2m\"\n";
        let mut p = Problem::new("workloads[0].neded_within", "unknown field")
            .suggest_from("neded_within", ["needed_within"]);
        p.locate(src, 6..18);
        let e = ConfigError { file: "x.toml".into(), problems: vec![p] };
        let text = e.to_string();
        assert!(text.contains("--> x.toml:2:1"), "{text}");
        assert!(text.contains("2 | neded_within = \"2m\""), "{text}");
        assert!(text.contains("  | ^^^^^^^^^^^^\n"), "{text}");
        assert!(text.contains("did you mean `needed_within`?"), "{text}");
    }
}
