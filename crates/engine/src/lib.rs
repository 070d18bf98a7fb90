//! The schedulers that turn stored tasks into provider calls and results.
//!
//! - the stream executor: earliest deadline first, under leases, through the rate limiter;
//! - the batch assembler, submitter and poller: cut batches by size, age, deadline and off-peak
//!   window; record before submit; resume after a crash;
//! - the deadline guard: escalate a batched task to the stream lane when its batch runs late;
//! - fan-out and `after` chains, sink delivery, crash recovery.
//!
//! Nothing lives here yet; the stream- and batch-path issues fill it in.
