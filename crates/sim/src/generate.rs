//! Provider-neutral answers: the same (seed, request) always yields the same text, JSON or tool
//! call, of a length that respects `max_tokens` and stops at stop sequences.
//!
//! Token rule (both providers, input and output alike): a text of `n` characters (Unicode scalar
//! values) is `ceil(n / 4)` tokens. Unscripted answers are built so that each token is exactly four
//! characters, which is also how streams are cut into deltas.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::responders::{self, CompiledResponder};

/// Tokens in a text: `ceil(chars / 4)`.
pub fn count_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// 64-bit FNV-1a: a stable hash (std's hasher may change between Rust releases, and answers must
/// stay the same for a seed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new(seed: u64) -> Self {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.write(&seed.to_le_bytes());
        h
    }
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}

/// Hashes a JSON value with object keys sorted, so that key order and whitespace do not change
/// the answer.
pub(crate) fn hash_json(h: &mut Fnv, v: &Value) {
    match v {
        Value::Null => h.write(b"n"),
        Value::Bool(b) => h.write(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            h.write(b"#");
            h.write(n.to_string().as_bytes());
        }
        Value::String(s) => {
            h.write(b"\"");
            h.write(s.as_bytes());
            h.write(b"\"");
        }
        Value::Array(a) => {
            h.write(b"[");
            for x in a {
                hash_json(h, x);
                h.write(b",");
            }
            h.write(b"]");
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            h.write(b"{");
            for k in keys {
                h.write(k.as_bytes());
                h.write(b":");
                if let Some(x) = o.get(k) {
                    hash_json(h, x);
                }
                h.write(b",");
            }
            h.write(b"}");
        }
    }
}

/// The seed of one request: the sim's seed and the request body without the fields that only
/// change delivery (streaming) or bookkeeping (metadata, user, tier).
pub(crate) fn request_seed(seed: u64, body: &Value) -> u64 {
    let mut h = Fnv::new(seed);
    if let Value::Object(o) = body {
        let mut keys: Vec<&String> = o.keys().collect();
        keys.sort();
        for k in keys {
            if matches!(
                k.as_str(),
                "stream" | "stream_options" | "metadata" | "user" | "service_tier" | "store"
            ) {
                continue;
            }
            h.write(k.as_bytes());
            if let Some(v) = o.get(k) {
                hash_json(&mut h, v);
            }
        }
    } else {
        hash_json(&mut h, body);
    }
    h.finish()
}

/// What the answer must look like.
#[derive(Debug, Clone)]
pub(crate) enum Format {
    Text,
    /// Any JSON object (OpenAI `json_object`, or a prompt that asks for JSON).
    JsonObject,
    /// An instance of this JSON Schema.
    JsonSchema(Value),
}

/// A tool the request forces the model to call.
#[derive(Debug, Clone)]
pub(crate) struct ForcedTool {
    pub name: String,
    pub schema: Value,
}

#[derive(Debug)]
pub(crate) struct GenInput<'a> {
    pub provider: &'static str,
    pub model: &'a str,
    /// System prompt and every message's text, one per line (what responders match).
    pub prompt: String,
    /// None: no cap from the request.
    pub max_tokens: Option<u64>,
    pub stop: Vec<String>,
    pub format: Format,
    pub tool: Option<ForcedTool>,
    pub seed: u64,
    pub min_tokens: u64,
    pub max_natural_tokens: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Finish {
    EndTurn,
    MaxTokens,
    StopSequence(String),
    ToolUse,
}

#[derive(Debug, Clone)]
pub(crate) struct GenOutput {
    pub text: String,
    /// (name, input) when a tool is called; `text` is then empty.
    pub tool: Option<(String, Value)>,
    pub output_tokens: u64,
    pub finish: Finish,
}

/// Produces the answer.
pub(crate) fn generate(input: &GenInput<'_>, responders: &[CompiledResponder]) -> GenOutput {
    let mut rng = StdRng::seed_from_u64(input.seed);
    if let Some(tool) = &input.tool {
        let args = instance(&tool.schema, &mut rng, 0);
        let tokens = count_tokens(&args.to_string()).max(1);
        return GenOutput {
            text: String::new(),
            tool: Some((tool.name.clone(), args)),
            output_tokens: tokens,
            finish: Finish::ToolUse,
        };
    }
    let pick: u64 = rng.random();
    let scripted =
        responders::respond(responders, input.provider, input.model, &input.prompt, pick);
    let natural = match (scripted, &input.format) {
        (Some(t), _) => t,
        (None, Format::Text) => {
            let n = rng.random_range(input.min_tokens..=input.max_natural_tokens);
            prose(&mut rng, n)
        }
        (None, Format::JsonObject) => json!({
            "answer": prose(&mut rng, 6),
            "confidence": f64::from(rng.random_range(50..100u32)) / 100.0,
            "labels": [word(&mut rng), word(&mut rng)],
        })
        .to_string(),
        (None, Format::JsonSchema(schema)) => instance(schema, &mut rng, 0).to_string(),
    };
    let (mut text, mut finish) = (natural, Finish::EndTurn);
    if let Some((pos, stop)) = input
        .stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|p| (p, s)))
        .min_by_key(|(p, _)| *p)
    {
        finish = Finish::StopSequence(stop.clone());
        text.truncate(pos);
    }
    if let Some(max) = input.max_tokens
        && count_tokens(&text) > max
    {
        let keep = usize::try_from(max.saturating_mul(4)).unwrap_or(usize::MAX);
        if let Some((byte, _)) = text.char_indices().nth(keep) {
            text.truncate(byte);
        }
        finish = Finish::MaxTokens;
    }
    let mut output_tokens = count_tokens(&text);
    // Anthropic reports a non-zero count even for an empty answer.
    if output_tokens == 0 && input.max_tokens != Some(0) {
        output_tokens = 1;
    }
    GenOutput { text, tool: None, output_tokens, finish }
}

/// Splits a text into the pieces streamed as deltas: one token (four characters) each.
pub(crate) fn token_pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(4).map(|c| c.iter().collect()).collect()
}

const WORDS: &[&str] = &[
    "the", "order", "customer", "ticket", "refund", "account", "invoice", "shipping", "team",
    "update", "request", "issue", "payment", "support", "review", "priority", "status", "report",
    "summary", "product", "delivery", "billing", "access", "error", "within", "today", "resolved",
    "pending", "details", "follow", "please", "thanks", "quickly", "next", "steps", "week", "lead",
    "plan", "budget", "campaign", "score", "risk", "note", "form", "data", "clear", "likely",
    "and", "with", "for", "was", "has", "will", "should", "needs", "about", "after", "before",
    "our", "their", "this", "that", "new", "high",
];

fn word(rng: &mut StdRng) -> String {
    let i = rng.random_range(0..WORDS.len());
    WORDS.get(i).copied().unwrap_or("data").to_string()
}

/// Words of each length from 1 to 16, to end a text at an exact length.
const FILLERS: &[&str] = &[
    "a",
    "to",
    "the",
    "team",
    "order",
    "update",
    "account",
    "shipping",
    "customers",
    "resolution",
    "escalations",
    "notification",
    "subscriptions",
    "reconciliation",
    "troubleshooting",
    "misconfiguration",
];

fn push_word(s: &mut String, w: &str, capital: bool) {
    let mut c = w.chars();
    if let Some(f) = c.next() {
        if capital {
            s.extend(f.to_uppercase());
        } else {
            s.push(f);
        }
        s.push_str(c.as_str());
    }
}

/// English-looking prose of exactly `tokens` tokens (`4 * tokens` characters, ending with '.').
fn prose(rng: &mut StdRng, tokens: u64) -> String {
    let target = usize::try_from(tokens.saturating_mul(4)).unwrap_or(4096).max(4);
    // Everything but the final '.'; the vocabulary is ASCII, so bytes are characters.
    let body = target - 1;
    let mut s = String::with_capacity(target);
    let (mut capital, mut last) = (true, String::new());
    while s.len() < body {
        let remaining = body - s.len();
        let mut w = word(rng);
        if w == last {
            w = word(rng);
        }
        let sentence_end = rng.random_range(0..9) == 0;
        let step = w.len() + if sentence_end { 2 } else { 1 };
        if remaining <= FILLERS.len() && remaining < step + 3 {
            push_word(&mut s, FILLERS.get(remaining - 1).copied().unwrap_or("a"), capital);
            break;
        }
        push_word(&mut s, &w, capital);
        s.push_str(if sentence_end { ". " } else { " " });
        capital = sentence_end;
        last = w;
    }
    s.push('.');
    s
}

/// A JSON value that satisfies a (simple) JSON Schema: types, properties, items, enum, const,
/// anyOf/oneOf (first branch). Every declared property is filled in.
fn instance(schema: &Value, rng: &mut StdRng, depth: usize) -> Value {
    let Some(obj) = schema.as_object() else {
        return json!({});
    };
    if let Some(c) = obj.get("const") {
        return c.clone();
    }
    if let Some(Value::Array(options)) = obj.get("enum")
        && !options.is_empty()
    {
        let i = rng.random_range(0..options.len());
        return options.get(i).cloned().unwrap_or(Value::Null);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(branches)) = obj.get(key)
            && let Some(first) = branches.first()
        {
            return instance(first, rng, depth + 1);
        }
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => {
            ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null")
        }
        _ if obj.contains_key("properties") => "object",
        _ if obj.contains_key("items") => "array",
        _ => "string",
    };
    if depth > 8 {
        return Value::Null;
    }
    match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(Value::Object(props)) = obj.get("properties") {
                for (k, v) in props {
                    out.insert(k.clone(), instance(v, rng, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let min = obj.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            let max = obj.get("maxItems").and_then(Value::as_u64).unwrap_or(min.max(2));
            let n = rng.random_range(min.min(max)..=max).min(8);
            let items = obj.get("items").cloned().unwrap_or(json!({"type": "string"}));
            Value::Array((0..n).map(|_| instance(&items, rng, depth + 1)).collect())
        }
        "integer" => {
            let lo = obj.get("minimum").and_then(Value::as_i64).unwrap_or(0);
            let hi = obj.get("maximum").and_then(Value::as_i64).unwrap_or(lo.saturating_add(100));
            json!(rng.random_range(lo..=hi.max(lo)))
        }
        "number" => {
            let lo = obj.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
            let hi = obj.get("maximum").and_then(Value::as_f64).unwrap_or(lo + 1.0);
            let x = lo + (hi - lo).max(0.0) * rng.random::<f64>();
            json!((x * 100.0).round() / 100.0)
        }
        "boolean" => json!(rng.random::<bool>()),
        "null" => Value::Null,
        _ => match obj.get("format").and_then(Value::as_str) {
            Some("date-time") => json!("2026-11-26T09:00:00Z"),
            Some("date") => json!("2026-11-26"),
            Some("email") => json!("someone@example.com"),
            Some("uri") => json!("https://example.com/"),
            _ => {
                let n = rng.random_range(1..=3);
                json!((0..n).map(|_| word(rng)).collect::<Vec<_>>().join(" "))
            }
        },
    }
}

/// The rule for "the prompt asks for JSON": the system prompt or the last user message contains
/// the word "json" (any case).
pub(crate) fn asks_for_json(system: &str, last_user: &str) -> bool {
    let has = |s: &str| {
        let lower = s.to_ascii_lowercase();
        lower.match_indices("json").any(|(i, _)| {
            let before = lower[..i].chars().next_back();
            let after = lower[i + 4..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
    };
    has(system) || has(last_user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(max: Option<u64>, stop: Vec<String>, format: Format) -> GenInput<'static> {
        GenInput {
            provider: "anthropic",
            model: "m",
            prompt: "hello".into(),
            max_tokens: max,
            stop,
            format,
            tool: None,
            seed: 42,
            min_tokens: 20,
            max_natural_tokens: 40,
        }
    }

    #[test]
    fn prose_has_exact_token_count_and_is_deterministic() {
        let a = generate(&input(None, vec![], Format::Text), &[]);
        let b = generate(&input(None, vec![], Format::Text), &[]);
        assert_eq!(a.text, b.text);
        assert!((20..=40).contains(&a.output_tokens));
        assert_eq!(a.text.len() as u64, a.output_tokens * 4);
        assert_eq!(a.finish, Finish::EndTurn);
    }

    #[test]
    fn prose_is_exact_for_every_length() {
        assert!(FILLERS.iter().enumerate().all(|(i, w)| w.len() == i + 1));
        let mut rng = StdRng::seed_from_u64(1);
        for tokens in 1..300 {
            let p = prose(&mut rng, tokens);
            assert_eq!(p.len() as u64, tokens * 4, "{p:?}");
            assert!(p.ends_with('.') && !p.ends_with(" .") && !p.contains("  "), "{p:?}");
        }
    }

    #[test]
    fn max_tokens_truncates() {
        let a = generate(&input(Some(5), vec![], Format::Text), &[]);
        assert_eq!(a.output_tokens, 5);
        assert_eq!(a.finish, Finish::MaxTokens);
    }

    #[test]
    fn json_schema_gives_valid_json() {
        let schema = json!({"type":"object","properties":{"category":{"enum":["a","b"]},"n":{"type":"integer"}}});
        let a = generate(&input(None, vec![], Format::JsonSchema(schema)), &[]);
        let v: Value = serde_json::from_str(&a.text).unwrap();
        assert!(v["category"] == "a" || v["category"] == "b");
        assert!(v["n"].is_i64());
    }

    #[test]
    fn json_rule() {
        assert!(asks_for_json("Answer in JSON.", ""));
        assert!(asks_for_json("", "give me json please"));
        assert!(!asks_for_json("jsonify", "the jsonl file"));
    }
}
