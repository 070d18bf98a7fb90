//! Scripted answers: the first responder whose `pattern` matches the prompt decides the answer's
//! content, so that a demo's ticket triage returns plausible categories instead of filler text.
//!
//! ```toml
//! [[responder]]
//! pattern = "(?i)refund|charged twice"   # regex over the prompt (system + every message, one per line)
//! provider = "anthropic"                 # optional: "anthropic" or "openai"
//! model = "claude-haiku-5-5"             # optional: exact model id
//! text = "billing: $0"                   # the answer; $1, ${name} expand capture groups
//! # or: json = { category = "billing", urgency = "high" }   (answered as compact JSON)
//! # or: choices = ["billing", "refunds"]                      (one picked per request, deterministically)
//! ```

use std::path::Path;

use regex::Regex;
use serde::Deserialize;

use crate::config::ConfigError;

/// One scripted answer as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Responder {
    pub pattern: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub json: Option<toml::Value>,
    #[serde(default)]
    pub choices: Option<Vec<String>>,
}

/// The file format: `[[responder]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResponderFile {
    #[serde(default)]
    responder: Vec<Responder>,
}

impl ResponderFile {
    pub(crate) fn load(path: &Path) -> Result<Vec<CompiledResponder>, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let origin = path.display().to_string();
        let file: ResponderFile =
            toml::from_str(&text).map_err(|e| ConfigError::from_toml(&origin, &text, &e))?;
        file.responder
            .iter()
            .enumerate()
            .map(|(i, r)| r.compile(&format!("{origin}: responder[{i}]")))
            .collect()
    }
}

/// What a matching responder answers.
#[derive(Debug, Clone)]
pub enum Answer {
    Text(String),
    Json(serde_json::Value),
    Choices(Vec<String>),
}

/// A responder with its pattern compiled.
#[derive(Debug, Clone)]
pub struct CompiledResponder {
    pattern: Regex,
    provider: Option<String>,
    model: Option<String>,
    answer: Answer,
}

impl Responder {
    pub(crate) fn compile(&self, at: &str) -> Result<CompiledResponder, ConfigError> {
        let pattern = Regex::new(&self.pattern)
            .map_err(|e| ConfigError::invalid(&format!("{at}.pattern"), e.to_string()))?;
        if let Some(p) = &self.provider
            && p != "anthropic"
            && p != "openai"
        {
            return Err(ConfigError::invalid(
                &format!("{at}.provider"),
                format!("expected \"anthropic\" or \"openai\", got {p:?}"),
            ));
        }
        let answer = match (&self.text, &self.json, &self.choices) {
            (Some(t), None, None) => Answer::Text(t.clone()),
            (None, Some(j), None) => Answer::Json(
                serde_json::to_value(j)
                    .map_err(|e| ConfigError::invalid(&format!("{at}.json"), e.to_string()))?,
            ),
            (None, None, Some(c)) if !c.is_empty() => Answer::Choices(c.clone()),
            _ => {
                return Err(ConfigError::invalid(
                    at,
                    "give exactly one of text, json, or a non-empty choices list",
                ));
            }
        };
        Ok(CompiledResponder {
            pattern,
            provider: self.provider.clone(),
            model: self.model.clone(),
            answer,
        })
    }
}

/// Finds the first responder that applies and renders its answer. `pick` chooses among
/// `choices` (the request's deterministic random number).
pub(crate) fn respond(
    responders: &[CompiledResponder],
    provider: &str,
    model: &str,
    prompt: &str,
    pick: u64,
) -> Option<String> {
    responders.iter().find_map(|r| {
        if r.provider.as_deref().is_some_and(|p| p != provider)
            || r.model.as_deref().is_some_and(|m| m != model)
        {
            return None;
        }
        let caps = r.pattern.captures(prompt)?;
        Some(match &r.answer {
            Answer::Text(t) => {
                let mut out = String::new();
                caps.expand(t, &mut out);
                out
            }
            Answer::Json(v) => v.to_string(),
            Answer::Choices(c) => {
                let i = usize::try_from(pick % c.len() as u64).unwrap_or(0);
                c.get(i).cloned().unwrap_or_default()
            }
        })
    })
}
