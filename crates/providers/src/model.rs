//! The normalized request and response: what the engine speaks, whichever provider answers.
//!
//! Each provider module maps these to and from its own wire types; nothing here knows a wire
//! format.

use sluice_core::price::Tokens;

use crate::ratelimit::RateLimitSnapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub role: Role,
    pub text: String,
}

impl Message {
    pub fn user(text: impl Into<String>) -> Self {
        Message { role: Role::User, text: text.into() }
    }
    pub fn assistant(text: impl Into<String>) -> Self {
        Message { role: Role::Assistant, text: text.into() }
    }
}

/// The provider's service tier. `Flex` is OpenAI's half-price, slower, sometimes-refused tier;
/// providers without one reject it before sending (a typed `Unsupported` error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tier {
    #[default]
    Standard,
    Flex,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    pub model: String,
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    /// Dropped for Anthropic when the client speaks `anthropic-version: 2026-10-21`, which answers
    /// 400 to any temperature (spec §0.3); sluice speaks 2023-06-01, where it is still accepted.
    pub temperature: Option<f64>,
    /// Ask for a JSON object (OpenAI `response_format`; Anthropic has no such switch, so the
    /// prompt must ask for JSON itself).
    pub json_output: bool,
    pub tier: Tier,
    /// Ties a call to a task in the provider's records (and the simulator's charge log): sent as
    /// Anthropic `metadata.user_id`, OpenAI `user` and `metadata.sluice_tag`.
    pub request_tag: Option<String>,
    /// Sent verbatim with the request (e.g. `anthropic-beta`, or the simulator's `x-sim-fault` in
    /// tests). Never put credentials here: headers are not redacted.
    pub extra_headers: Vec<(String, String)>,
}

/// What a call is expected to consume, reserved in the rate limiter before it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Estimate {
    pub input_tokens: u64,
    /// The request's `max_tokens`: the most it can cost.
    pub output_tokens: u64,
}

impl ChatRequest {
    /// A conservative estimate: about 3.5 bytes per token (rounded up) plus a few tokens of
    /// framing per message. Admission control needs an upper bound, not an exact count; the
    /// difference is settled from the provider's usage after the call.
    pub fn estimate(&self) -> Estimate {
        const PER_MESSAGE: u64 = 4;
        let bytes: usize = self.system.as_deref().map_or(0, str::len)
            + self.messages.iter().map(|m| m.text.len()).sum::<usize>();
        let messages = self.messages.len() as u64 + u64::from(self.system.is_some());
        let input = (bytes as u64 * 2).div_ceil(7) + PER_MESSAGE * messages;
        Estimate { input_tokens: input, output_tokens: u64::from(self.max_tokens) }
    }

    /// The most input tokens the request can be billed for: the byte-level tokenizers of both
    /// providers never make a token of less than one byte, so one a byte, plus the framing of
    /// each message (a few tokens; 16 leaves room). Four times the usual count for English:
    /// this is what a hard spending cap reserves, not a forecast.
    pub fn most_input_tokens(&self) -> u64 {
        const PER_MESSAGE: u64 = 16;
        let bytes: usize = self.system.as_deref().map_or(0, str::len)
            + self.messages.iter().map(|m| m.text.len()).sum::<usize>();
        let messages = self.messages.len() as u64 + u64::from(self.system.is_some());
        bytes as u64 + PER_MESSAGE * (messages + 1)
    }
}

/// Why generation stopped, normalized across providers (spec §1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    Refusal,
    /// Anything else, as the provider spelled it (`pause_turn`, future values).
    Other(String),
}

impl StopReason {
    /// The reason as sluice stores and shows it: `end_turn`, `max_tokens`, …, or the provider's
    /// own word for anything else.
    pub fn as_str(&self) -> &str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopSequence => "stop_sequence",
            StopReason::ToolUse => "tool_use",
            StopReason::Refusal => "refusal",
            StopReason::Other(s) => s,
        }
    }

    pub fn from_anthropic(s: &str) -> Self {
        match s {
            "end_turn" => StopReason::EndTurn,
            "max_tokens" | "model_context_window_exceeded" => StopReason::MaxTokens,
            "stop_sequence" => StopReason::StopSequence,
            "tool_use" => StopReason::ToolUse,
            "refusal" => StopReason::Refusal,
            other => StopReason::Other(other.to_owned()),
        }
    }

    pub fn from_openai(s: &str) -> Self {
        match s {
            // OpenAI does not tell a natural end from a stop sequence.
            "stop" => StopReason::EndTurn,
            "length" => StopReason::MaxTokens,
            "tool_calls" | "function_call" => StopReason::ToolUse,
            "content_filter" => StopReason::Refusal,
            other => StopReason::Other(other.to_owned()),
        }
    }
}

/// Token usage, normalized. `input_tokens` counts every prompt token (cached, cache-written and
/// plain), so that price × tokens works the same for both providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u64,
    /// The part of `input_tokens` read from the prompt cache.
    pub cached_input_tokens: u64,
    /// The part of `input_tokens` written to the prompt cache (Anthropic; OpenAI where reported).
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    /// The provider reported no usage (an OpenAI-compatible server that ignores
    /// `stream_options.include_usage`, a proxy that strips it): the counts are sluice's
    /// estimate, so that the ledger, the budget and the rate limiter are not told it was free.
    pub estimated: bool,
}

impl Usage {
    /// What a parser returns for an answer that carries no usage; the client fills it in with
    /// [`Usage::estimate`].
    pub fn missing() -> Usage {
        Usage { estimated: true, ..Usage::default() }
    }

    /// The estimate of a call that reported no usage: the request's input estimate, and the
    /// answer's text counted the same way (never more than the request allowed).
    pub fn estimate(req: &ChatRequest, text: &str) -> Usage {
        let output = ((text.len() as u64) * 2).div_ceil(7).min(u64::from(req.max_tokens));
        Usage {
            input_tokens: req.estimate().input_tokens,
            output_tokens: output,
            estimated: true,
            ..Usage::default()
        }
    }

    /// The counts the price table takes.
    pub fn tokens(&self) -> Tokens {
        Tokens {
            input: self.input_tokens,
            cached_input: self.cached_input_tokens,
            output: self.output_tokens,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// Every text block, concatenated in order.
    pub text: String,
    pub stop_reason: StopReason,
    pub usage: Usage,
    /// The model that answered (often a dated snapshot of the alias asked for).
    pub model: String,
    /// The provider's id for the call (`request-id` / `x-request-id`), for support tickets.
    pub provider_request_id: Option<String>,
    /// The rate-limit headers of the response, if it had any.
    pub rate_limit: Option<RateLimitSnapshot>,
}

/// One item of [`crate::Client::stream`].
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Text as the model produced it; forward it to whoever waits.
    Delta(String),
    /// The end: the whole response, with its usage. Always the last item of a successful stream.
    Done(Box<ChatResponse>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_is_an_upper_bound_of_the_sims_count() {
        let req = ChatRequest {
            system: Some("You are terse.".into()),
            messages: vec![Message::user("Say hello to the nice people.")],
            max_tokens: 100,
            ..Default::default()
        };
        let e = req.estimate();
        // The sim counts ceil(chars / 4) per text.
        assert!(e.input_tokens >= 4 + 8);
        assert_eq!(e.output_tokens, 100);
    }

    #[test]
    fn stop_reasons_map() {
        assert_eq!(StopReason::from_anthropic("end_turn"), StopReason::EndTurn);
        assert_eq!(
            StopReason::from_anthropic("model_context_window_exceeded"),
            StopReason::MaxTokens
        );
        assert_eq!(StopReason::from_openai("length"), StopReason::MaxTokens);
        assert_eq!(StopReason::from_openai("stop"), StopReason::EndTurn);
        assert_eq!(StopReason::from_openai("weird"), StopReason::Other("weird".into()));
    }
}
