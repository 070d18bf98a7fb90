//! Durable state for sluice, behind one interface with two implementations.
//!
//! - **SQLite** (the embedded default): one file in WAL mode, `synchronous=FULL`.
//! - **PostgreSQL** (scale-out): several `sluice serve` instances share one database and claim work
//!   with `FOR UPDATE SKIP LOCKED`.
//!
//! It holds events, tasks (lane, decision, state, deadline, lease and fencing token), batches,
//! attempts, results, the ledger and outbound deliveries. It depends only on `sluice-core`: the
//! business layer makes ids and timestamps, the store writes what it is given.
//!
//! Nothing lives here yet; the store issue fills it in.
