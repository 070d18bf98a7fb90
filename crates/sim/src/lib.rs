//! `sluice-sim`: a local simulator of the Anthropic and OpenAI APIs, faithful enough that the
//! official Python SDKs work against it unmodified (see `docs/sim.md`).
//!
//! It is an independent reading of `shared/spec/providers.md` and shares no wire types with the
//! `providers` crate: two readings of one spec are what catch a misreading.
//!
//! The parts:
//!
//! - [`server`]: [`Sim::start`] binds, runs its own accept loop (per-connection kill switch for the
//!   `reset` fault, `TCP_NODELAY`, graceful shutdown) and routes both providers' paths on one port.
//! - [`config`]: [`SimConfig`], the serde mirror of `sim.toml` (`deny_unknown_fields`, errors with
//!   file and line), validated into the settings the server runs on.
//! - `anthropic`: `POST /v1/messages` (plain and SSE) and Message Batches, with Anthropic's
//!   headers, error bodies and `anthropic-version` rules.
//! - `openai`: `POST /v1/chat/completions` (plain and SSE, flex tier), Files and Batches.
//! - `generate`: deterministic answers for (seed, request): prose, JSON for JSON requests,
//!   schema instances, forced tool calls; token counting (`ceil(chars / 4)`).
//! - [`responders`]: scripted answers picked by regular expression from a TOML file.
//! - [`models`]: the sim's own model catalogue and price table (§6 of the spec).
//! - [`charges`]: the charge log of every billed request and batch line.
//! - [`ratelimit`]: per-key request / input-token / output-token buckets and a concurrency cap.
//! - [`faults`]: fault rates and the `x-sim-fault` header.
//! - `state`, `http`: shared state, the lazy batch clock, ids, and response helpers.

pub(crate) mod anthropic;
pub mod charges;
pub mod config;
pub mod faults;
pub(crate) mod generate;
pub(crate) mod http;
pub mod models;
pub(crate) mod openai;
pub mod ratelimit;
pub mod responders;
pub mod server;
pub(crate) mod state;

pub use charges::{Charge, ChargeLog, Summary, SummaryLine};
pub use config::{ConfigError, Dist, SimConfig};
pub use generate::count_tokens;
pub use server::{RunningSim, Sim, SimError};
