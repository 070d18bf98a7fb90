//! `POST /v1/chat/completions`: validation as OpenAI does it, the flex tier, and the plain or SSE
//! response. [`parse`] and [`completion`] are reused for every line of a batch.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{ApiError, error_response, headers};
use crate::charges::Billable;
use crate::faults::Fault;
use crate::generate::{self, Finish, ForcedTool, Format, GenInput, GenOutput, count_tokens};
use crate::http::{self, ConnKill, Script, json_response, script_response};
use crate::models::{self, Model, Provider, Tier};
use crate::ratelimit::{self, Kind};
use crate::state::AppState;

#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub model: &'static Model,
    pub model_name: String,
    pub max_tokens: Option<u64>,
    pub n: u64,
    pub stream: bool,
    pub include_usage: bool,
    pub stop: Vec<String>,
    pub format: Format,
    pub tool: Option<ForcedTool>,
    pub prompt: String,
    pub input_tokens: u64,
    pub user: Option<String>,
    pub metadata: Option<Value>,
    pub flex: bool,
    pub seed: u64,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn content_text(content: &Value, prompt: &mut String) -> u64 {
    match content {
        Value::String(s) => {
            prompt.push_str(s);
            prompt.push('\n');
            count_tokens(s)
        }
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("text").and_then(Value::as_str) {
                Some(t) => {
                    prompt.push_str(t);
                    prompt.push('\n');
                    count_tokens(t)
                }
                None => count_tokens(&p.to_string()),
            })
            .sum(),
        _ => 0,
    }
}

fn positive(obj: &serde_json::Map<String, Value>, name: &str) -> Result<Option<u64>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if n >= 1 => Ok(Some(n as u64)),
            Some(n) => Err(ApiError::invalid(format!(
                "Invalid '{name}': integer below minimum value. Expected a value >= 1, but got {n} instead."
            ))
            .param(name)
            .code("integer_below_min_value")),
            None => Err(ApiError::invalid(format!(
                "Invalid type for '{name}': expected an integer, but got {} instead.",
                type_name(v)
            ))
            .param(name)
            .code("invalid_type")),
        },
    }
}

/// Validates a Chat Completions body; `in_batch` forbids `stream`.
pub(crate) fn parse(state: &AppState, body: &Value, in_batch: bool) -> Result<Parsed, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::invalid("The request body must be a JSON object.")
            .code("invalid_request_body"));
    };
    let model_name = match obj.get("model") {
        None | Some(Value::Null) => return Err(ApiError::missing("model")),
        Some(Value::String(m)) => m.clone(),
        Some(v) => {
            return Err(ApiError::invalid(format!(
                "Invalid type for 'model': expected a string, but got {} instead.",
                type_name(v)
            ))
            .param("model")
            .code("invalid_type"));
        }
    };
    let messages = match obj.get("messages") {
        None | Some(Value::Null) => return Err(ApiError::missing("messages")),
        Some(Value::Array(m)) => m,
        Some(v) => {
            return Err(ApiError::invalid(format!(
                "Invalid type for 'messages': expected an array of objects, but got {} instead.",
                type_name(v)
            ))
            .param("messages")
            .code("invalid_type"));
        }
    };
    if messages.is_empty() {
        return Err(ApiError::invalid("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.")
            .param("messages")
            .code("empty_array"));
    }
    let Some(model) = models::find(Provider::Openai, &model_name) else {
        return Err(ApiError::new(
            404,
            "invalid_request_error",
            format!("The model `{model_name}` does not exist or you do not have access to it."),
        )
        .code("model_not_found"));
    };
    let reasoning = models::openai_is_reasoning(model);
    if reasoning && obj.get("max_tokens").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid("Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.")
            .param("max_tokens")
            .code("unsupported_parameter"));
    }
    let max_tokens = match positive(obj, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => positive(obj, "max_tokens")?,
    };
    let n = positive(obj, "n")?.unwrap_or(1);
    if n > 128 {
        return Err(ApiError::invalid(format!("Invalid 'n': integer above maximum value. Expected a value <= 128, but got {n} instead."))
            .param("n")
            .code("integer_above_max_value"));
    }
    for (p, hi) in [("temperature", 2.0), ("top_p", 1.0)] {
        if let Some(v) = obj.get(p).filter(|v| !v.is_null())
            && !v.as_f64().is_some_and(|x| (0.0..=hi).contains(&x))
        {
            return Err(ApiError::invalid(format!(
                "Invalid '{p}': expected a number between 0 and {hi}."
            ))
            .param(p)
            .code("invalid_value"));
        }
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid("Invalid type for 'stream': expected a boolean.")
                .param("stream")
                .code("invalid_type"));
        }
    };
    if in_batch && stream {
        return Err(
            ApiError::invalid("Streaming is not supported in the Batch API.").param("stream")
        );
    }
    let include_usage = match obj.get("stream_options").filter(|v| !v.is_null()) {
        None => false,
        Some(_) if !stream => {
            return Err(ApiError::invalid(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            )
            .param("stream_options")
            .code("invalid_value"));
        }
        Some(o) => o.get("include_usage").and_then(Value::as_bool).unwrap_or(false),
    };
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).map(str::to_string).collect()
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid 'stop': expected a string or an array of at most 4 strings.",
            )
            .param("stop")
            .code("invalid_value"));
        }
    };

    let mut prompt = String::new();
    let mut input_tokens = 0;
    let mut system = String::new();
    let mut last_user = String::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool" | "function") {
            return Err(ApiError::invalid(format!("Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."))
                .param(format!("messages[{i}].role"))
                .code("invalid_value"));
        }
        let content = m.get("content").unwrap_or(&Value::Null);
        if content.is_null() && role != "assistant" {
            return Err(ApiError::missing(&format!("messages[{i}].content")));
        }
        let mut t = String::new();
        input_tokens += 3 + content_text(content, &mut t);
        if let Some(calls) = m.get("tool_calls") {
            input_tokens += count_tokens(&calls.to_string());
        }
        prompt.push_str(&t);
        match role {
            "system" | "developer" => system.push_str(&t),
            "user" => last_user = t,
            _ => {}
        }
    }
    if let Some(tools) = obj.get("tools") {
        input_tokens += count_tokens(&tools.to_string());
    }
    let format = match obj.get("response_format").filter(|v| !v.is_null()) {
        None => {
            if generate::asks_for_json(&system, &last_user) {
                Format::JsonObject
            } else {
                Format::Text
            }
        }
        Some(rf) => match rf.get("type").and_then(Value::as_str) {
            Some("text") => Format::Text,
            Some("json_object") => {
                if !prompt.to_ascii_lowercase().contains("json") {
                    return Err(ApiError::invalid("'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.")
                        .param("messages"));
                }
                Format::JsonObject
            }
            Some("json_schema") => {
                let Some(js) = rf.get("json_schema") else {
                    return Err(ApiError::missing("response_format.json_schema"));
                };
                if js.get("name").and_then(Value::as_str).is_none() {
                    return Err(ApiError::missing("response_format.json_schema.name"));
                }
                let schema = js.get("schema").cloned().unwrap_or_else(|| json!({"type": "object"}));
                input_tokens += count_tokens(&schema.to_string());
                Format::JsonSchema(schema)
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "Invalid value: '{}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
                    other.unwrap_or("")
                ))
                .param("response_format.type")
                .code("invalid_value"));
            }
        },
    };
    let tool = forced_tool(obj)?;
    let flex = match obj.get("service_tier").and_then(Value::as_str) {
        None | Some("auto" | "default" | "scale" | "priority" | "fast") => false,
        Some("flex") if models::openai_offers_flex(model) => true,
        Some("flex") => {
            return Err(ApiError::invalid(format!(
                "Flex processing is not available for model '{model_name}'."
            ))
            .param("service_tier")
            .code("invalid_value"));
        }
        Some(other) => {
            return Err(ApiError::invalid(format!("Invalid value: '{other}'. Supported values are: 'auto', 'default', 'flex', 'scale', and 'priority'."))
                .param("service_tier")
                .code("invalid_value"));
        }
    };
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.len() <= 16 && m.values().all(Value::is_string) => {
            Some(Value::Object(m.clone()))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid 'metadata': expected an object of at most 16 string values.",
            )
            .param("metadata")
            .code("invalid_value"));
        }
    };
    let user = obj
        .get("user")
        .or_else(|| obj.get("safety_identifier"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Parsed {
        model,
        model_name,
        max_tokens,
        n,
        stream,
        include_usage,
        stop,
        format,
        tool,
        prompt,
        input_tokens,
        user,
        metadata,
        flex,
        seed: generate::request_seed(state.settings.config.seed, body),
    })
}

fn forced_tool(obj: &serde_json::Map<String, Value>) -> Result<Option<ForcedTool>, ApiError> {
    let tools = obj.get("tools").and_then(Value::as_array);
    let find = |name: Option<&str>| -> Option<ForcedTool> {
        let t = tools?.iter().find(|t| {
            name.is_none_or(|n| t.pointer("/function/name").and_then(Value::as_str) == Some(n))
        })?;
        Some(ForcedTool {
            name: t.pointer("/function/name").and_then(Value::as_str).unwrap_or("tool").to_string(),
            schema: t
                .pointer("/function/parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"})),
        })
    };
    match obj.get("tool_choice") {
        Some(Value::String(s)) if s == "required" => Ok(find(None)),
        Some(Value::Object(c)) => {
            let name = c.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
            match find(name) {
                Some(t) => Ok(Some(t)),
                None => Err(ApiError::invalid(format!(
                    "Invalid value for 'tool_choice': function '{}' not found in 'tools'.",
                    name.unwrap_or("")
                ))
                .param("tool_choice")),
            }
        }
        _ => Ok(None),
    }
}

/// One answer per choice.
pub(crate) fn answers(state: &AppState, p: &Parsed) -> Vec<GenOutput> {
    let out = &state.settings.config.output;
    (0..p.n)
        .map(|i| {
            generate::generate(
                &GenInput {
                    provider: "openai",
                    model: &p.model_name,
                    prompt: p.prompt.clone(),
                    max_tokens: p.max_tokens,
                    stop: p.stop.clone(),
                    format: p.format.clone(),
                    tool: p.tool.clone(),
                    seed: p.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    min_tokens: out.min_tokens,
                    max_natural_tokens: out.max_tokens,
                },
                &state.settings.responders,
            )
        })
        .collect()
}

fn finish_reason(f: &Finish) -> &'static str {
    match f {
        Finish::EndTurn | Finish::StopSequence(_) => "stop",
        Finish::MaxTokens => "length",
        Finish::ToolUse => "tool_calls",
    }
}

fn usage(input: u64, output: u64) -> Value {
    json!({
        "prompt_tokens": input,
        "completion_tokens": output,
        "total_tokens": input + output,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        },
    })
}

fn tool_call(name: &str, input: &Value) -> Value {
    json!({"id": http::new_id("call_", 24), "type": "function", "function": {"name": name, "arguments": input.to_string()}})
}

/// The ChatCompletion object (§3.3).
pub(crate) fn completion(
    p: &Parsed,
    outs: &[GenOutput],
    id: &str,
    created: i64,
    tier: &str,
) -> Value {
    let choices: Vec<Value> = outs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let message = match &o.tool {
                Some((name, input)) => json!({
                    "role": "assistant", "content": null, "refusal": null, "annotations": [],
                    "tool_calls": [tool_call(name, input)],
                }),
                None => json!({"role": "assistant", "content": o.text, "refusal": null, "annotations": []}),
            };
            json!({"index": i, "message": message, "logprobs": null, "finish_reason": finish_reason(&o.finish)})
        })
        .collect();
    let output: u64 = outs.iter().map(|o| o.output_tokens).sum();
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": p.model_name,
        "choices": choices,
        "usage": usage(p.input_tokens, output),
        "service_tier": tier,
        "system_fingerprint": "fp_sluicesim",
    })
}

/// `POST /v1/chat/completions`.
pub(crate) async fn create(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let caller = match super::authenticate(&state, &parts.headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (key, rid) = (caller.key, caller.request_id);
    let limits = state.limiter.snapshot(&key);
    let fail = |e: ApiError| error_response(&e, &rid, Some(&limits));
    let forced = match http::forced_fault(&parts.headers) {
        Ok(f) => f,
        Err(m) => return fail(ApiError::invalid(m)),
    };
    let Ok(bytes) = http::read_body(body, 32 * 1024 * 1024).await else {
        return fail(ApiError::new(413, "invalid_request_error", "Request body too large."));
    };
    let value = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return fail(
                ApiError::invalid(format!(
                    "We could not parse the JSON body of your request. ({e})"
                ))
                .code("invalid_json"),
            );
        }
    };
    let p = match parse(&state, &value, false) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };

    let fault = state.dice.roll(forced);
    let retry = ratelimit::retry_after_secs(state.dice.retry_after());
    match fault {
        Some(Fault::RateLimit) => {
            let mut e = ApiError::new(
                429,
                "requests",
                "Rate limit reached for requests (simulated). Please try again later.",
            )
            .code("rate_limit_exceeded");
            e.retry_after = Some(retry);
            return fail(e);
        }
        Some(Fault::Server) => {
            return fail(ApiError::new(
                500,
                "server_error",
                "The server had an error while processing your request. Sorry about that!",
            ));
        }
        Some(Fault::Overloaded) => {
            let mut e = ApiError::new(
                503,
                "service_unavailable_error",
                "The server is overloaded, please try again later.",
            )
            .code("server_is_overloaded");
            e.retry_after = Some(retry);
            return fail(e);
        }
        Some(Fault::Reset) => return state.reset(parts.extensions.get::<ConnKill>()).await,
        Some(Fault::Stall(d)) => state.sleep(state.dice.stall_for(d)).await,
        _ => {}
    }
    if p.flex
        && (fault == Some(Fault::Unavailable)
            || state.dice.uniform() < state.settings.config.flex.refuse_rate)
    {
        let mut e = ApiError::new(429, "resource_unavailable", "Resource unavailable: flex processing capacity is temporarily exhausted. Retry later, or use the default service tier.")
            .code("resource_unavailable");
        e.retry_after = Some(retry);
        return fail(e);
    }

    let (permit, _) = match state.limiter.acquire(&key, p.input_tokens) {
        Ok(x) => x,
        Err(r) => {
            let (kind, what) = match r.kind {
                Kind::Requests => ("requests", "requests per min (RPM)"),
                Kind::InputTokens | Kind::OutputTokens => ("tokens", "tokens per min (TPM)"),
                Kind::Concurrency => ("requests", "concurrent requests"),
            };
            let wait = ratelimit::go_duration(r.retry_after);
            let mut e = ApiError::new(
                429,
                kind,
                format!(
                    "Rate limit reached for {} on {what}: Limit {}. Please try again in {wait}.",
                    p.model_name, r.limit
                ),
            )
            .code("rate_limit_exceeded");
            e.retry_after = Some(ratelimit::retry_after_secs(r.retry_after));
            return error_response(&e, &rid, Some(&r.snapshot));
        }
    };

    let outs = answers(&state, &p);
    let output_tokens: u64 = outs.iter().map(|o| o.output_tokens).sum();
    let limits = permit.charge_output(output_tokens);
    let id = http::new_id("chatcmpl-", 29);
    let tier = if p.flex { Tier::Flex } else { Tier::Standard };
    if !(fault == Some(Fault::MidStream) && p.stream) {
        state.charges.record(Billable {
            model: p.model,
            model_name: p.model_name.clone(),
            tier,
            endpoint: "chat.completions",
            request_id: rid.clone(),
            response_id: id.clone(),
            batch_id: None,
            custom_id: None,
            user_id: None,
            user: p.user.clone(),
            metadata: p.metadata.clone(),
            key_fingerprint: http::fingerprint(&key),
            input_tokens: p.input_tokens,
            output_tokens,
        });
    }
    let lat =
        if p.flex { &state.settings.config.flex.latency } else { &state.settings.config.latency };
    let ttft = state.sample(&lat.time_to_first_token);
    let per_token = state.sample(&lat.per_token);
    let created = chrono::Utc::now().timestamp();
    let tier_name = if p.flex { "flex" } else { "default" };

    if !p.stream {
        let total = ttft.saturating_add(
            per_token.saturating_mul(u32::try_from(output_tokens).unwrap_or(u32::MAX)),
        );
        state.sleep(total).await;
        let mut hdrs = headers(&rid, Some(&limits));
        if let Some(h) = hdrs.iter_mut().find(|(k, _)| *k == "openai-processing-ms") {
            h.1 = http::millis(started.elapsed());
        }
        let body = completion(&p, &outs, &id, created, tier_name);
        return match fault {
            Some(Fault::Cut | Fault::Malformed) => {
                let mut script = Script {
                    abort: fault == Some(Fault::Cut),
                    permit: Some(permit),
                    ..Script::default()
                };
                script.push(Duration::ZERO, http::first_half(&body.to_string()));
                script_response(StatusCode::OK, "application/json", script, hdrs)
            }
            _ => json_response(StatusCode::OK, &body, hdrs),
        };
    }
    let script = stream_script(&p, &outs, &id, created, tier_name, fault, ttft, per_token, permit);
    script_response(
        StatusCode::OK,
        "text/event-stream; charset=utf-8",
        script,
        headers(&rid, Some(&limits)),
    )
}

#[allow(clippy::too_many_arguments)]
fn stream_script(
    p: &Parsed,
    outs: &[GenOutput],
    id: &str,
    created: i64,
    tier: &str,
    fault: Option<Fault>,
    ttft: Duration,
    per_token: Duration,
    permit: ratelimit::Permit,
) -> Script {
    let mut s = Script { permit: Some(permit), ..Script::default() };
    let chunk = |choices: Value, usage: Option<Value>| -> String {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": p.model_name,
            "service_tier": tier, "system_fingerprint": "fp_sluicesim", "choices": choices,
        });
        if p.include_usage
            && let Some(o) = c.as_object_mut()
        {
            o.insert("usage".into(), usage.unwrap_or(Value::Null));
        }
        format!("data: {c}\n\n")
    };
    let mut first = true;
    for (i, o) in outs.iter().enumerate() {
        s.push(Duration::ZERO, chunk(json!([{"index": i, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]), None));
        let deltas: Vec<Value> = match &o.tool {
            Some((name, input)) => {
                let args = input.to_string();
                let chars: Vec<char> = args.chars().collect();
                let mut d = vec![
                    json!({"tool_calls": [{"index": 0, "id": http::new_id("call_", 24), "type": "function", "function": {"name": name, "arguments": ""}}]}),
                ];
                d.extend(chars.chunks(16).map(|c| json!({"tool_calls": [{"index": 0, "function": {"arguments": c.iter().collect::<String>()}}]})));
                d
            }
            None => {
                generate::token_pieces(&o.text).into_iter().map(|t| json!({"content": t})).collect()
            }
        };
        let half = deltas.len() / 2;
        for (j, d) in deltas.iter().enumerate() {
            if i == 0 && j == half {
                match fault {
                    Some(Fault::Cut) => {
                        let c = chunk(
                            json!([{"index": i, "delta": d, "logprobs": null, "finish_reason": null}]),
                            None,
                        );
                        s.push(per_token, http::first_half(&c));
                        s.abort = true;
                        return s;
                    }
                    Some(Fault::Malformed) => s.push(
                        Duration::ZERO,
                        "data: {\"id\": \"chatcmpl-broken\", \"object\": \"chat.completion.chu\n\n",
                    ),
                    Some(Fault::MidStream) => {
                        let e = ApiError::new(
                            503,
                            "server_error",
                            "The server is overloaded, please try again later.",
                        )
                        .code("server_is_overloaded");
                        s.push(per_token, format!("data: {}\n\n", e.body()));
                        return s;
                    }
                    _ => {}
                }
            }
            let delay = if first { ttft } else { per_token };
            first = false;
            s.push(
                delay,
                chunk(
                    json!([{"index": i, "delta": d, "logprobs": null, "finish_reason": null}]),
                    None,
                ),
            );
        }
        s.push(Duration::ZERO, chunk(json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": finish_reason(&o.finish)}]), None));
    }
    if p.include_usage {
        let output: u64 = outs.iter().map(|o| o.output_tokens).sum();
        s.push(Duration::ZERO, chunk(json!([]), Some(usage(p.input_tokens, output))));
    }
    s.push(Duration::ZERO, "data: [DONE]\n\n");
    s
}
