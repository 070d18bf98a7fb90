//! sluice's HTTP API: event ingest (`POST /v1/events`), signed webhook ingest, reading tasks and
//! results back, SSE token streams, `/metrics` and `/healthz`.
//!
//! Handlers stay thin: they parse, call the business layer, and render.
//!
//! Nothing lives here yet; the ingest issue fills it in.
