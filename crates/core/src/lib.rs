//! The pure heart of sluice: no I/O beyond reading a config file, no async runtime.
//!
//! - [`config`]: `sluice.toml` as typed ([`config::raw`]) and as validated ([`Config`]), with errors
//!   that point at the file, line and field.
//! - [`price`]: the built-in price table (dated, sourced) and per-item cost estimates.
//! - [`policy`]: the lane decision (stream, flex or batch) with its reason and dollar figures.
//! - [`explain`]: the verdict table of `sluice explain`, one row per workload.
//! - [`template`]: prompt templates (minijinja) compiled once and rendered per event.
//! - [`units`]: durations and dollars as people read and write them.
//! - [`webhook`]: Standard Webhooks signatures, for inbound hooks and outbound deliveries.
//!
//! Everything here is unit-testable in microseconds; later crates (store, engine, server) call into
//! it and never the other way round.

pub mod config;
pub mod explain;
pub mod policy;
pub mod price;
pub mod template;
pub mod units;
pub mod webhook;

pub use config::{Config, ConfigError};
pub use policy::{Decision, Lane};
