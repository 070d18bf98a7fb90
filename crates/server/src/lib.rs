//! sluice's HTTP API.
//!
//! - [`ingest`]: `POST /v1/events` — parse, fan out into tasks with their decisions ([`plan`]),
//!   and store them through the group committer, answering `202` only once the commit is durable.
//! - [`hooks`]: `POST /v1/hooks/{source}` — signed webhooks (Standard Webhooks), verified over the
//!   raw body, mapped to event types by config.
//! - [`routes`]: reading events and tasks back, `/healthz`, `/metrics`; the router and auth.
//! - [`error`]: every error is JSON naming the problem, with its status.
//!
//! Handlers stay thin: they parse, call [`plan`] or the store, and render.

pub mod auth;
pub mod error;
pub mod hooks;
pub mod ingest;
pub mod metrics;
pub mod plan;
pub mod routes;
pub mod serve;
pub mod stream;

pub use routes::{AppState, ServerOptions, hook_keys, metrics_handle, router};
pub use serve::{Running, start};
