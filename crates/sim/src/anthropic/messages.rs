//! `POST /v1/messages`: validation as Anthropic does it, a deterministic answer, and the plain or
//! SSE response. [`parse`] and [`answer`] are reused for every line of a Message Batch.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{ApiError, Caller, Version, error_response, headers};
use crate::charges::Billable;
use crate::faults::Fault;
use crate::generate::{self, Finish, ForcedTool, Format, GenInput, GenOutput, count_tokens};
use crate::http::{self, ConnKill, Script, json_response, script_response};
use crate::models::{self, Model, Provider, Tier};
use crate::state::AppState;

/// A valid Messages request, reduced to what the sim needs.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub model: &'static Model,
    pub model_name: String,
    pub max_tokens: u64,
    pub stream: bool,
    pub stop: Vec<String>,
    pub format: Format,
    pub tool: Option<ForcedTool>,
    pub prompt: String,
    pub input_tokens: u64,
    pub user_id: Option<String>,
    pub seed: u64,
}

fn text_of(content: &Value, prompt: &mut String) -> u64 {
    match content {
        Value::String(s) => {
            prompt.push_str(s);
            prompt.push('\n');
            count_tokens(s)
        }
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match (b.get("type").and_then(Value::as_str), b.get("text")) {
                (Some("text"), Some(Value::String(t))) => {
                    prompt.push_str(t);
                    prompt.push('\n');
                    count_tokens(t)
                }
                (Some("tool_result"), _) => b.get("content").map_or(0, |c| text_of(c, prompt)),
                (Some("tool_use"), _) => b.get("input").map_or(0, |i| count_tokens(&i.to_string())),
                _ => count_tokens(&b.to_string()),
            })
            .sum(),
        _ => 0,
    }
}

/// Validates a Messages body the way the API does; `in_batch` forbids `stream`.
pub(crate) fn parse(
    state: &AppState,
    body: &Value,
    version: Version,
    in_batch: bool,
) -> Result<Parsed, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::invalid("body: Input should be a valid dictionary"));
    };
    let model_name = match obj.get("model") {
        None => return Err(ApiError::invalid("model: Field required")),
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(ApiError::invalid("model: Input should be a valid string")),
    };
    let max_tokens = match obj.get("max_tokens") {
        None => return Err(ApiError::invalid("max_tokens: Field required")),
        Some(v) => match v.as_i64() {
            Some(n) if n < 0 => {
                return Err(ApiError::invalid(
                    "max_tokens: Input should be greater than or equal to 0",
                ));
            }
            Some(n) => n as u64,
            None => return Err(ApiError::invalid("max_tokens: Input should be a valid integer")),
        },
    };
    let messages = match obj.get("messages") {
        None => return Err(ApiError::invalid("messages: Field required")),
        Some(Value::Array(m)) => m,
        Some(_) => return Err(ApiError::invalid("messages: Input should be a valid list")),
    };
    if messages.is_empty() {
        return Err(ApiError::invalid("messages: at least one message is required"));
    }
    for p in ["temperature", "top_p", "top_k"] {
        if let Some(v) = obj.get(p) {
            if version == Version::V2026 {
                return Err(ApiError::invalid(format!(
                    "{p}: this parameter is not supported in anthropic-version 2026-10-21"
                )));
            }
            let ok = match p {
                "temperature" | "top_p" => v.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)),
                _ => v.as_u64().is_some(),
            };
            if !ok {
                return Err(ApiError::invalid(format!("{p}: Input is out of range")));
            }
        }
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("stream: Input should be a valid boolean")),
    };
    if in_batch && stream {
        return Err(ApiError::invalid("stream: streaming is not supported in message batches"));
    }

    let mut prompt = String::new();
    let mut input_tokens = 0;
    let mut system_text = String::new();
    if let Some(system) = obj.get("system") {
        let mut s = String::new();
        match system {
            Value::String(_) | Value::Array(_) => input_tokens += text_of(system, &mut s),
            Value::Null => {}
            _ => return Err(ApiError::invalid("system: Input should be a valid string or list")),
        }
        prompt.push_str(&s);
        system_text = s;
    }
    let mut last_user = String::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !matches!(role, Some("user" | "assistant" | "system")) {
            return Err(ApiError::invalid(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            )));
        }
        let Some(content) = m.get("content") else {
            return Err(ApiError::invalid(format!("messages.{i}.content: Field required")));
        };
        if !(content.is_string() || content.is_array()) {
            return Err(ApiError::invalid(format!(
                "messages.{i}.content: Input should be a valid string or list"
            )));
        }
        let mut t = String::new();
        input_tokens += 3 + text_of(content, &mut t);
        prompt.push_str(&t);
        if role == Some("user") {
            last_user = t;
        }
    }
    if let Some(tools) = obj.get("tools") {
        input_tokens += count_tokens(&tools.to_string());
    }
    let stop = match obj.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).map(str::to_string).collect()
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "stop_sequences: Input should be a valid list of strings",
            ));
        }
    };
    let user_id = match obj.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(md)) => {
            if let Some(k) = md.keys().find(|k| *k != "user_id") {
                return Err(ApiError::invalid(format!(
                    "metadata.{k}: Extra inputs are not permitted"
                )));
            }
            md.get("user_id").and_then(Value::as_str).map(str::to_string)
        }
        Some(_) => return Err(ApiError::invalid("metadata: Input should be a valid dictionary")),
    };

    let tool = forced_tool(obj)?;
    let format = match obj.get("output_config").and_then(|c| c.get("format")) {
        Some(f) if f.get("type").and_then(Value::as_str) == Some("json_schema") => {
            let Some(schema) = f.get("schema") else {
                return Err(ApiError::invalid("output_config.format.schema: Field required"));
            };
            input_tokens += count_tokens(&schema.to_string());
            Format::JsonSchema(schema.clone())
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "output_config.format.type: Input should be 'json_schema'",
            ));
        }
        None if generate::asks_for_json(&system_text, &last_user) => Format::JsonObject,
        None => Format::Text,
    };

    let Some(model) = models::find(Provider::Anthropic, &model_name) else {
        return Err(ApiError::not_found(format!("model: {model_name}")));
    };
    if max_tokens > models::ANTHROPIC_MAX_OUTPUT {
        return Err(ApiError::invalid(format!(
            "max_tokens: {max_tokens} > {}, which is the maximum allowed number of output tokens for {model_name}",
            models::ANTHROPIC_MAX_OUTPUT
        )));
    }
    Ok(Parsed {
        model,
        model_name,
        max_tokens,
        stream,
        stop,
        format,
        tool,
        prompt,
        input_tokens,
        user_id,
        seed: generate::request_seed(state.settings.config.seed, body),
    })
}

fn forced_tool(obj: &serde_json::Map<String, Value>) -> Result<Option<ForcedTool>, ApiError> {
    let tools = obj.get("tools").and_then(Value::as_array);
    let choice = obj.get("tool_choice");
    let kind = choice.and_then(|c| c.get("type")).and_then(Value::as_str);
    let find = |name: Option<&str>| -> Option<ForcedTool> {
        let t = tools?
            .iter()
            .find(|t| name.is_none_or(|n| t.get("name").and_then(Value::as_str) == Some(n)))?;
        Some(ForcedTool {
            name: t.get("name").and_then(Value::as_str).unwrap_or("tool").to_string(),
            schema: t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
        })
    };
    match kind {
        Some("any") => Ok(find(None)),
        Some("tool") => {
            let name = choice.and_then(|c| c.get("name")).and_then(Value::as_str);
            match find(name) {
                Some(t) => Ok(Some(t)),
                None => Err(ApiError::invalid(format!(
                    "tool_choice.name: tool {:?} not found in tools",
                    name.unwrap_or("")
                ))),
            }
        }
        _ => Ok(None),
    }
}

/// The answer to a parsed request.
pub(crate) fn answer(state: &AppState, p: &Parsed) -> GenOutput {
    let out = &state.settings.config.output;
    generate::generate(
        &GenInput {
            provider: "anthropic",
            model: &p.model_name,
            prompt: p.prompt.clone(),
            max_tokens: Some(p.max_tokens),
            stop: p.stop.clone(),
            format: p.format.clone(),
            tool: p.tool.clone(),
            seed: p.seed,
            min_tokens: out.min_tokens,
            max_natural_tokens: out.max_tokens,
        },
        &state.settings.responders,
    )
}

fn stop_reason(f: &Finish) -> (&'static str, Value) {
    match f {
        Finish::EndTurn => ("end_turn", Value::Null),
        Finish::MaxTokens => ("max_tokens", Value::Null),
        Finish::StopSequence(s) => ("stop_sequence", json!(s)),
        Finish::ToolUse => ("tool_use", Value::Null),
    }
}

fn usage(input: u64, output: u64, tier: &str) -> Value {
    json!({
        "input_tokens": input,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output,
        "service_tier": tier,
    })
}

/// The Message object (§1.3).
pub(crate) fn message_json(p: &Parsed, out: &GenOutput, id: &str, tier: &str) -> Value {
    let content = match &out.tool {
        Some((name, input)) => vec![json!({
            "type": "tool_use", "id": http::new_id("toolu_01", 22), "name": name, "input": input,
        })],
        None => vec![json!({"type": "text", "text": out.text})],
    };
    let (reason, seq) = stop_reason(&out.finish);
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": p.model_name,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": seq,
        "stop_details": null,
        "usage": usage(p.input_tokens, out.output_tokens, tier),
    })
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// `POST /v1/messages`.
pub(crate) async fn create(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let caller = match super::authenticate(&state, &parts.headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Caller { key, request_id: rid, version } = caller;
    let limits = state.limiter.snapshot(&key);
    let fail = |e: ApiError| error_response(&e, &rid, Some(&limits));
    let forced = match http::forced_fault(&parts.headers) {
        Ok(f) => f,
        Err(m) => return fail(ApiError::invalid(m)),
    };
    let Ok(bytes) = http::read_body(body, 32 * 1024 * 1024).await else {
        return fail(ApiError::new(
            413,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ));
    };
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return fail(ApiError::invalid("There was an error parsing the body as JSON"));
    };
    let p = match parse(&state, &value, version, false) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };

    let fault = state.dice.roll(forced);
    let retry = crate::ratelimit::retry_after_secs(state.dice.retry_after());
    match fault {
        Some(Fault::RateLimit) => {
            let mut e = ApiError::new(
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit (simulated)",
            );
            e.retry_after = Some(retry);
            return fail(e);
        }
        Some(Fault::Server) => {
            return fail(ApiError::new(500, "api_error", "Internal server error"));
        }
        Some(Fault::Overloaded) => {
            let mut e = ApiError::new(529, "overloaded_error", "Overloaded");
            e.retry_after = Some(retry);
            return fail(e);
        }
        Some(Fault::Reset) => {
            return state.reset(parts.extensions.get::<ConnKill>()).await;
        }
        Some(Fault::Stall(d)) => state.sleep(state.dice.stall_for(d)).await,
        _ => {}
    }

    let (permit, _) = match state.limiter.acquire(&key, p.input_tokens) {
        Ok(x) => x,
        Err(refused) => {
            let what = match refused.kind {
                crate::ratelimit::Kind::Requests => "Number of requests",
                crate::ratelimit::Kind::InputTokens => "Number of input tokens",
                crate::ratelimit::Kind::OutputTokens => "Number of output tokens",
                crate::ratelimit::Kind::Concurrency => "Number of concurrent connections",
            };
            let mut e = ApiError::new(
                429,
                "rate_limit_error",
                format!(
                    "{what} has exceeded your rate limit of {} (per minute, or at once for connections). Please reduce the rate or retry after the time in retry-after.",
                    refused.limit
                ),
            );
            e.retry_after = Some(crate::ratelimit::retry_after_secs(refused.retry_after));
            return error_response(&e, &rid, Some(&refused.snapshot));
        }
    };

    let out = answer(&state, &p);
    let limits = permit.charge_output(out.output_tokens);
    let msg_id = http::new_id("msg_01", 22);
    if fault != Some(Fault::MidStream) || !p.stream {
        state.charges.record(Billable {
            model: p.model,
            model_name: p.model_name.clone(),
            tier: Tier::Standard,
            endpoint: "messages",
            request_id: rid.clone(),
            response_id: msg_id.clone(),
            batch_id: None,
            custom_id: None,
            user_id: p.user_id.clone(),
            user: None,
            metadata: None,
            key_fingerprint: http::fingerprint(&key),
            input_tokens: p.input_tokens,
            output_tokens: out.output_tokens,
        });
    }
    let lat = &state.settings.config.latency;
    let ttft = state.sample(&lat.time_to_first_token);
    let per_token = state.sample(&lat.per_token);
    let hdrs = headers(&rid, Some(&limits));

    if !p.stream {
        let total = ttft.saturating_add(
            per_token.saturating_mul(u32::try_from(out.output_tokens).unwrap_or(u32::MAX)),
        );
        state.sleep(total).await;
        let body = message_json(&p, &out, &msg_id, "standard");
        return match fault {
            Some(Fault::Cut) => {
                let s = body.to_string();
                let mut script = Script { abort: true, permit: Some(permit), ..Script::default() };
                script.push(Duration::ZERO, http::first_half(&s));
                script_response(StatusCode::OK, "application/json", script, hdrs)
            }
            Some(Fault::Malformed) => {
                let s = body.to_string();
                let mut script = Script { permit: Some(permit), ..Script::default() };
                script.push(Duration::ZERO, http::first_half(&s));
                script_response(StatusCode::OK, "application/json", script, hdrs)
            }
            _ => json_response(StatusCode::OK, &body, hdrs),
        };
    }
    let script = stream_script(&p, &out, &msg_id, &rid, fault, ttft, per_token, permit);
    script_response(StatusCode::OK, "text/event-stream; charset=utf-8", script, hdrs)
}

#[allow(clippy::too_many_arguments)]
fn stream_script(
    p: &Parsed,
    out: &GenOutput,
    msg_id: &str,
    rid: &str,
    fault: Option<Fault>,
    ttft: Duration,
    per_token: Duration,
    permit: crate::ratelimit::Permit,
) -> Script {
    let mut s = Script { permit: Some(permit), ..Script::default() };
    let start = json!({
        "type": "message_start",
        "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": p.model_name,
            "content": [], "stop_reason": null, "stop_sequence": null, "stop_details": null,
            "usage": usage(p.input_tokens, 1, "standard"),
        }
    });
    s.push(Duration::ZERO, event("message_start", &start));
    let (block, deltas): (Value, Vec<Value>) = match &out.tool {
        Some((name, input)) => {
            let args = input.to_string();
            let chars: Vec<char> = args.chars().collect();
            let mut d = vec![json!({"type": "input_json_delta", "partial_json": ""})];
            d.extend(chars.chunks(16).map(|c| {
                json!({"type": "input_json_delta", "partial_json": c.iter().collect::<String>()})
            }));
            (
                json!({"type": "tool_use", "id": http::new_id("toolu_01", 22), "name": name, "input": {}}),
                d,
            )
        }
        None => (
            json!({"type": "text", "text": ""}),
            generate::token_pieces(&out.text)
                .into_iter()
                .map(|t| json!({"type": "text_delta", "text": t}))
                .collect(),
        ),
    };
    s.push(
        Duration::ZERO,
        event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": block}),
        ),
    );
    s.push(Duration::ZERO, event("ping", &json!({"type": "ping"})));
    let half = deltas.len() / 2;
    for (i, d) in deltas.iter().enumerate() {
        if i == half {
            match fault {
                Some(Fault::Cut) => {
                    let e = event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": 0, "delta": d}),
                    );
                    s.push(per_token, http::first_half(&e));
                    s.abort = true;
                    return s;
                }
                Some(Fault::Malformed) => {
                    s.push(Duration::ZERO, "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_del\n\n");
                }
                Some(Fault::MidStream) => {
                    let e = ApiError::new(529, "overloaded_error", "Overloaded");
                    s.push(per_token, event("error", &e.body(Some(rid))));
                    return s;
                }
                _ => {}
            }
        }
        let delay = if i == 0 { ttft } else { per_token };
        s.push(
            delay,
            event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": d}),
            ),
        );
        if i > 0 && i % 64 == 0 {
            s.push(Duration::ZERO, event("ping", &json!({"type": "ping"})));
        }
    }
    s.push(
        Duration::ZERO,
        event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})),
    );
    let (reason, seq) = stop_reason(&out.finish);
    s.push(
        Duration::ZERO,
        event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": seq},
                "usage": {
                    "input_tokens": p.input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": out.output_tokens,
                },
            }),
        ),
    );
    s.push(Duration::ZERO, event("message_stop", &json!({"type": "message_stop"})));
    s
}

/// `POST /v1/messages/count_tokens`.
pub(crate) async fn count(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let caller = match super::authenticate(&state, &parts.headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let rid = caller.request_id;
    let fail = |e: ApiError| error_response(&e, &rid, None);
    let Ok(bytes) = http::read_body(body, 32 * 1024 * 1024).await else {
        return fail(ApiError::new(
            413,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ));
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return fail(ApiError::invalid("There was an error parsing the body as JSON"));
    };
    if let Some(o) = value.as_object_mut() {
        o.entry("max_tokens").or_insert(json!(1));
    }
    match parse(&state, &value, caller.version, false) {
        Ok(p) => json_response(
            StatusCode::OK,
            &json!({"input_tokens": p.input_tokens}),
            headers(&rid, Some(&state.limiter.snapshot(&caller.key))),
        ),
        Err(e) => fail(e),
    }
}
