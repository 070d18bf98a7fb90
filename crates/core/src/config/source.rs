//! Finding fields in the TOML source, so that errors found after deserialization (an unknown
//! provider, an `after` cycle) can still point at a line and column.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a path into the document: a key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// `workloads[2].after`
pub fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(&quote_key(k)),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(&quote_key(k));
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn quote_key(k: &str) -> String {
    if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        k.to_owned()
    } else {
        format!("\"{}\"", k.replace('"', "\\\""))
    }
}

/// The parsed document with the span of every key and value.
pub struct Document<'i> {
    root: Spanned<DeTable<'i>>,
}

impl std::fmt::Debug for Document<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Document")
    }
}

impl<'i> Document<'i> {
    pub fn parse(source: &'i str) -> Result<Document<'i>, toml::de::Error> {
        Ok(Document { root: DeTable::parse(source)? })
    }

    /// The span of the value at `path`; with `key = true`, the span of its key instead.
    pub fn span_of(&self, path: &[Seg], key: bool) -> Option<Range<usize>> {
        let mut table = self.root.get_ref();
        let mut current: Option<(&Spanned<_>, &Spanned<DeValue<'i>>)> = None;
        let mut array: Option<&Spanned<DeValue<'i>>> = None;
        for seg in path {
            match seg {
                Seg::Key(name) => {
                    let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
                    current = Some((k, v));
                    array = None;
                    match v.get_ref() {
                        DeValue::Table(t) => table = t,
                        DeValue::Array(_) => array = Some(v),
                        _ => {}
                    }
                }
                Seg::Index(i) => {
                    let DeValue::Array(items) = array?.get_ref() else { return None };
                    let item = items.get(*i)?;
                    if let DeValue::Table(t) = item.get_ref() {
                        table = t;
                    }
                    // An array element has no key of its own: point at the element.
                    current = current.map(|(k, _)| (k, item));
                    array = None;
                }
            }
        }
        let (k, v) = current?;
        Some(if key { k.span() } else { v.span() })
    }

    /// The innermost path whose key or value contains `offset`: turns the span of a serde error
    /// into the field it is about.
    pub fn path_at(&self, offset: usize) -> Vec<Seg> {
        let mut path = Vec::new();
        walk_table(self.root.get_ref(), offset, &mut path);
        path
    }
}

/// Depth-first: header tables (`[providers.x]`) may have spans that do not enclose their keys,
/// so every child is visited rather than only those whose span contains `offset`.
fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<Seg>) -> bool {
    for (k, v) in table.iter() {
        path.push(Seg::Key(k.get_ref().to_string()));
        if k.span().contains(&offset) || walk_value(v, offset, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn walk_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<Seg>) -> bool {
    let inside = match value.get_ref() {
        DeValue::Table(t) => walk_table(t, offset, path),
        DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
            path.push(Seg::Index(i));
            let found = walk_value(item, offset, path);
            if !found {
                path.pop();
            }
            found
        }),
        _ => false,
    };
    inside || value.span().contains(&offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"min_daily_savings = 1

[providers.openai]
kind = "openai"

[[workloads]]
name = "a"
after = "b"

[[workloads]]
name = "b"
after = "a"
"#;

    #[test]
    fn finds_values_and_keys_by_path() {
        let doc = Document::parse(SRC).unwrap();
        let path = [Seg::Key("workloads".into()), Seg::Index(1), Seg::Key("after".into())];
        let span = doc.span_of(&path, false).unwrap();
        assert_eq!(&SRC[span], "\"a\"");
        let span = doc.span_of(&path, true).unwrap();
        assert_eq!(&SRC[span], "after");
        let kind =
            [Seg::Key("providers".into()), Seg::Key("openai".into()), Seg::Key("kind".into())];
        assert_eq!(&SRC[doc.span_of(&kind, false).unwrap()], "\"openai\"");
        assert!(doc.span_of(&[Seg::Key("nope".into())], false).is_none());
    }

    #[test]
    fn finds_the_path_at_an_offset() {
        let doc = Document::parse(SRC).unwrap();
        let offset = SRC.rfind("after").unwrap() + 1;
        assert_eq!(path_string(&doc.path_at(offset)), "workloads[1].after");
        let offset = SRC.find("kind").unwrap();
        assert_eq!(path_string(&doc.path_at(offset)), "providers.openai.kind");
    }
}
