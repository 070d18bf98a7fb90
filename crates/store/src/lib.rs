//! Durable state for sluice, behind one interface with two implementations.
//!
//! - **SQLite** (the embedded default): one file in WAL mode with `synchronous=FULL`, so an
//!   acknowledged event survives power loss, not only a crash. `synchronous=NORMAL` is an explicit,
//!   documented choice ([`SqliteDurability::Normal`]) that survives crashes but may lose the last
//!   commits on power loss.
//! - **PostgreSQL** (scale-out): several `sluice serve` instances share one database and claim work
//!   with `FOR UPDATE SKIP LOCKED`.
//!
//! What it holds: events, tasks (lane, decision, state, deadline, priority, lease and fencing
//! token), batches, attempts, results, the ledger and outbound deliveries ([`migrations`]).
//!
//! Work is claimed under **leases**: every claim bumps the task's fencing token, and heartbeats and
//! result writes name the token they hold, so a worker that lost its lease (it stalled, its lease
//! expired, another worker took the task) cannot overwrite the new owner's work.
//!
//! The business layer makes ids and timestamps; the store writes what it is given. Instants are
//! unix milliseconds, money nano-dollars.

mod backend;
pub mod migrations;
mod model;
mod settle;
mod writer;

pub use backend::{RequestOutcome, Store};
pub use model::*;
pub use writer::SqliteWriter;

/// What can go wrong in the store itself (as opposed to a conflict the caller must handle).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the SQLite writer stopped: {0}")]
    WriterStopped(String),
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
    /// Holds the URL without its password ([`redact_url`]).
    #[error("the store URL {0:?} is not sqlite://PATH or postgres://…")]
    BadUrl(String),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// One failure answered to several callers (a group commit that failed).
    #[error("{0}")]
    Shared(std::sync::Arc<StoreError>),
}

/// A store URL without its password, for messages and errors: the password of the user info
/// (`postgres://app:***@db/x`) and any `password=` query parameter (`?password=***`).
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match base[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &base[..scheme + 3], &base[at..]),
            None => base.to_owned(),
        },
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// How hard SQLite works to keep a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteDurability {
    /// `synchronous=FULL`: a commit is on disk before it is acknowledged. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a process crash; the last commits may be lost on power loss.
    Normal,
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        for (url, shown) in [
            ("postgres://app:s3cret@db/x", "postgres://app:***@db/x"),
            ("postgres://app:s3@cret@db/x", "postgres://app:***@db/x"),
            ("postgres://app@db/x", "postgres://app@db/x"),
            ("sqlite://data/s.db", "sqlite://data/s.db"),
            ("postgres://db/x?user=app&password=s3cret", "postgres://db/x?user=app&password=***"),
            (
                "postgress://app:s3cret@db/x?PASSWORD=s3cret",
                "postgress://app:***@db/x?PASSWORD=***",
            ),
        ] {
            assert_eq!(super::redact_url(url), shown);
        }
    }

    #[test]
    fn webhook_tokens_never_reach_answers_or_logs() {
        for (sink, shown) in [
            (
                "webhook:https://hooks.slack.com/services/T0/B0/XyZ",
                "webhook:https://hooks.slack.com/…",
            ),
            ("webhook:http://127.0.0.1:9/hook?token=s3cret", "webhook:http://127.0.0.1:9/…"),
            ("webhook:https://user:s3cret@crm.example.com/in", "webhook:https://crm.example.com/…"),
            ("webhook:https://crm.example.com#s3cret", "webhook:https://crm.example.com/…"),
            ("file:results/triage.jsonl", "file:results/triage.jsonl"),
            ("stdout", "stdout"),
        ] {
            assert_eq!(super::shown_sink(sink), shown);
        }
    }

    #[tokio::test]
    async fn a_mistyped_store_url_is_refused_without_its_password() {
        let err = super::Store::open("postgress://app:s3cret@db/x", super::SqliteDurability::Full)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("postgress://app:***@db/x"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}
