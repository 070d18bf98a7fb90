//! Clients for the LLM providers sluice sends work to: Anthropic and OpenAI (and
//! OpenAI-compatible servers such as vLLM, Ollama or llama.cpp).
//!
//! One normalized request/response model; plain and streaming calls (SSE); the Batch APIs (files,
//! create, poll, results, cancel); the outbound rate limiter; the retry policy. Knows nothing of the
//! store. Its wire types are its own reading of `shared/spec/providers.md`, independent of the
//! simulator's, so that a misreading by one is caught by the other.
//!
//! Nothing lives here yet; the stream-path issue fills it in.
