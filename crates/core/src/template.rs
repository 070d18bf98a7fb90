//! Prompt templates: minijinja (Jinja2 syntax) over the event, compiled once when the config loads.
//!
//! A template sees:
//! - `payload`: the event's JSON payload (`{{ payload.subject }}`);
//! - `event`: `id`, `type` and `received_at` (RFC 3339);
//! - `after` (only in a workload with `after = "…"`): the upstream result, `after.output` as text
//!   and `after.json` parsed when the upstream workload's output is JSON.
//!
//! Undefined values are errors (strict mode): a payload without the field a prompt needs is
//! refused at ingest rather than sent as an empty prompt.

use std::collections::BTreeSet;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The top-level names a template may use.
pub const CONTEXT_NAMES: [&str; 3] = ["payload", "event", "after"];

/// minijinja's global functions, which a template may call without them being context names.
const BUILTIN_FUNCTIONS: [&str; 4] = ["range", "dict", "namespace", "debug"];

/// The compiled templates of one config, by name (`<workload>.prompt`, `<workload>.system`).
pub struct Prompts {
    env: Environment<'static>,
    /// The `payload.…` paths each template uses, sorted: found once at compile time, since
    /// ingest checks them for every event.
    payload_paths: std::collections::HashMap<String, Vec<String>>,
    /// The templates that only print paths (`{{ payload.a.b }}`, `{{ event.id }}`) with no
    /// filter, test, call or block: these render whenever their payload paths exist, so
    /// [`Prompts::check`] looks the paths up instead of rendering.
    path_only: std::collections::HashSet<String>,
}

impl std::fmt::Debug for Prompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompts").finish_non_exhaustive()
    }
}

impl Default for Prompts {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Prompts are not HTML: never escape.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        Prompts { env, payload_paths: Default::default(), path_only: Default::default() }
    }
}

/// Why a template did not compile.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileError {
    pub message: String,
    /// Line within the template, 1-based.
    pub line: Option<usize>,
}

/// What the event looks like to a template.
#[derive(Debug, Serialize)]
pub struct RenderContext<'a> {
    pub payload: &'a serde_json::Value,
    pub event: EventInfo<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<AfterInfo<'a>>,
}

#[derive(Debug, Serialize)]
pub struct EventInfo<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub received_at: &'a str,
}

#[derive(Debug, Serialize)]
pub struct AfterInfo<'a> {
    pub workload: &'a str,
    pub output: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<&'a serde_json::Value>,
}

impl Prompts {
    /// Compiles `source` under `name` and returns the top-level names it uses.
    pub fn add(&mut self, name: &str, source: &str) -> Result<BTreeSet<String>, CompileError> {
        self.env.add_template_owned(name.to_owned(), source.to_owned()).map_err(compile_error)?;
        let template = self.env.get_template(name).map_err(compile_error)?;
        let mut paths: Vec<String> = template
            .undeclared_variables(true)
            .into_iter()
            .filter(|p| p == "payload" || p.starts_with("payload."))
            .collect();
        paths.sort();
        self.payload_paths.insert(name.to_owned(), paths);
        if prints_only_paths(source) {
            self.path_only.insert(name.to_owned());
        } else {
            self.path_only.remove(name);
        }
        Ok(template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !BUILTIN_FUNCTIONS.contains(&v.as_str()))
            .collect())
    }

    /// Renders the template `name`; the error names what was missing, e.g.
    /// `undefined value (in workload.prompt:3)`.
    pub fn render(&self, name: &str, ctx: &RenderContext<'_>) -> Result<String, String> {
        let template = self.env.get_template(name).map_err(|e| e.to_string())?;
        template.render(minijinja::value::Serde(ctx)).map_err(|e| {
            let mut msg = e.to_string();
            if let Some(detail) = e.detail()
                && !msg.contains(detail)
            {
                msg = format!("{msg}: {detail}");
            }
            msg
        })
    }

    /// Whether template `name` renders for this context, the way [`Prompts::render`] would say,
    /// without rendering it when it only prints paths: ingest checks every event against every
    /// template of its workloads, and a render costs far more than a few map look-ups.
    pub fn check(&self, name: &str, ctx: &RenderContext<'_>) -> Result<(), String> {
        if self.path_only.contains(name) && ctx.after.is_none() {
            return match self.missing_payload_path(name, ctx.payload) {
                None => Ok(()),
                Some(path) => Err(format!("undefined value: {path} is undefined")),
            };
        }
        self.render(name, ctx).map(drop)
    }

    /// Checks that `payload` has every `payload.…` path template `name` uses, for templates that
    /// cannot be rendered yet (they wait for an upstream result). Returns the first missing path.
    pub fn missing_payload_path(&self, name: &str, payload: &serde_json::Value) -> Option<String> {
        let paths = self.payload_paths.get(name)?;
        paths
            .iter()
            .find(|path| {
                let mut at = payload;
                for seg in path.split('.').skip(1) {
                    match at.get(seg) {
                        Some(next) => at = next,
                        None => return true,
                    }
                }
                false
            })
            .cloned()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }
}

/// True when `source` is text and `{{ … }}` expressions that are each a dotted path rooted at
/// `payload`, or one of `event.id`, `event.type`, `event.received_at`: nothing that can fail
/// on a value's type. Anything else (a block, a comment, an `after` path, any filter: even
/// `tojson`, which prints a missing last field as `null`) is rendered to be checked.
/// Hand-written: minijinja does not expose its syntax tree in a stable API.
fn prints_only_paths(source: &str) -> bool {
    let is_ident = |seg: &str| {
        let mut chars = seg.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut rest = source;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        if after.starts_with('%') || after.starts_with('#') {
            return false;
        }
        if !after.starts_with('{') {
            rest = after;
            continue;
        }
        let Some(close) = after.find("}}") else { return false };
        // One `-` or `+` on each side is whitespace control; a second one is an operator.
        let expr = &after[1..close];
        let expr = expr.strip_prefix(['-', '+']).unwrap_or(expr);
        let expr = expr.strip_suffix(['-', '+']).unwrap_or(expr);
        let segments: Vec<&str> = expr.trim().split('.').collect();
        let path_ok = segments.iter().all(|seg| is_ident(seg))
            && match segments.as_slice() {
                ["payload", ..] => true,
                ["event", field] => ["id", "type", "received_at"].contains(field),
                _ => false,
            };
        if !path_ok {
            return false;
        }
        rest = &after[close + 2..];
    }
    true
}

fn compile_error(e: minijinja::Error) -> CompileError {
    let message = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    CompileError { message, line: e.line() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(payload: &serde_json::Value) -> RenderContext<'_> {
        RenderContext {
            payload,
            event: EventInfo {
                id: "evt_1",
                event_type: "ticket.created",
                received_at: "2026-11-26T09:00:00Z",
            },
            after: None,
        }
    }

    #[test]
    fn renders_payload_fields_without_html_escaping() {
        let mut p = Prompts::default();
        let used = p.add("t.prompt", "Subject: {{ payload.subject }} <{{ event.type }}>").unwrap();
        assert_eq!(used.into_iter().collect::<Vec<_>>(), ["event", "payload"]);
        let out = p.render("t.prompt", &ctx(&json!({"subject": "Refund & <return>"}))).unwrap();
        assert_eq!(out, "Subject: Refund & <return> <ticket.created>");
    }

    #[test]
    fn a_missing_field_is_an_error_not_an_empty_prompt() {
        let mut p = Prompts::default();
        p.add("t.prompt", "{{ payload.subject }}").unwrap();
        assert!(p.render("t.prompt", &ctx(&json!({"body": "x"}))).is_err());
    }

    #[test]
    fn syntax_errors_carry_the_template_line() {
        let mut p = Prompts::default();
        let e = p.add("t.prompt", "line one\n{{ payload.subject ").unwrap_err();
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn missing_payload_paths_are_named_without_rendering() {
        let mut p = Prompts::default();
        p.add("t", "{{ after.output }} {{ payload.customer.name }} {{ payload.subject }}").unwrap();
        let full = json!({"subject": "x", "customer": {"name": "Ada"}});
        assert_eq!(p.missing_payload_path("t", &full), None);
        let partial = json!({"subject": "x", "customer": {}});
        assert_eq!(p.missing_payload_path("t", &partial).as_deref(), Some("payload.customer.name"));
    }

    #[test]
    fn the_path_check_agrees_with_rendering() {
        let templates = [
            ("plain", "no expressions, {not one} and a } or two", true),
            (
                "paths",
                "{{ payload.subject }} / {{- payload.customer.name -}} ({{ event.id }})",
                true,
            ),
            ("whole", "{{ payload }} at {{ event.received_at }} {{ event.type }}", true),
            ("event_attr", "{{ event.nope }}", false),
            ("negated", "{{--payload.subject}} {{+-payload.subject}}", false),
            ("tojson", "{{ payload.customer | tojson }} {{- payload.items|tojson -}}", false),
            ("filter", "{{ payload.subject | upper }}", false),
            ("join", "{{ payload.items | join(\"; \") }}", false),
            ("length", "{{ payload.items | length }}", false),
            ("block", "{% if payload.vip %}VIP {% endif %}{{ payload.subject }}", false),
            ("index", "{{ payload.items[0] }}", false),
            ("comment", "{# a note #}{{ payload.subject }}", false),
        ];
        let payloads = [
            json!({"subject": "x", "customer": {"name": "Ada"}, "items": [1], "vip": true}),
            json!({"subject": "x", "customer": {}, "items": 3}),
            json!({"subject": null, "customer": "Ada"}),
            json!({"customer": {"name": null}}),
            json!([1, 2]),
            json!("just text"),
        ];
        let mut p = Prompts::default();
        for (name, source, path_only) in templates {
            p.add(name, source).unwrap();
            assert_eq!(p.path_only.contains(name), path_only, "{name}");
            for payload in &payloads {
                let rendered = p.render(name, &ctx(payload));
                let checked = p.check(name, &ctx(payload));
                assert_eq!(checked.is_ok(), rendered.is_ok(), "{name} on {payload}: {rendered:?}");
            }
        }
    }

    #[test]
    fn loops_and_builtins_are_not_context_names() {
        let mut p = Prompts::default();
        let used =
            p.add("t", "{% for x in range(3) %}{{ x }}{{ loop.index }}{% endfor %}").unwrap();
        assert!(used.is_empty(), "{used:?}");
    }
}
