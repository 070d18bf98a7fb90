//! Versioned schema migrations, embedded in the binary and applied on start.
//!
//! Hand-rolled rather than `sqlx::migrate!`: that macro needs sqlx's `macros` feature, which builds
//! both database drivers a second time for the host (+30 s on a 2-core machine, see
//! shared/notes/rust-stack.md), for what is a loop over a list.

/// One schema change. Versions only grow; a released migration is never edited.
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub static SQLITE: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../migrations/sqlite/0001_init.sql") },
    Migration {
        version: 2,
        name: "delivery_attempts",
        sql: include_str!("../migrations/sqlite/0002_delivery_attempts.sql"),
    },
    Migration {
        version: 3,
        name: "tasks_by_batch",
        sql: include_str!("../migrations/sqlite/0003_tasks_by_batch.sql"),
    },
    Migration {
        version: 4,
        name: "partial_task_indexes",
        sql: include_str!("../migrations/sqlite/0004_partial_task_indexes.sql"),
    },
    Migration {
        version: 5,
        name: "decisions",
        sql: include_str!("../migrations/sqlite/0005_decisions.sql"),
    },
    Migration {
        version: 6,
        name: "one_line_per_batch_task",
        sql: include_str!("../migrations/sqlite/0006_one_line_per_batch_task.sql"),
    },
    Migration {
        version: 7,
        name: "expired_leases",
        sql: include_str!("../migrations/sqlite/0007_expired_leases.sql"),
    },
    Migration {
        version: 8,
        name: "tasks_by_creation",
        sql: include_str!("../migrations/sqlite/0008_tasks_by_creation.sql"),
    },
    Migration {
        version: 9,
        name: "batch_submit_lease",
        sql: include_str!("../migrations/sqlite/0009_batch_submit_lease.sql"),
    },
    Migration {
        version: 10,
        name: "batch_reserved_spend",
        sql: include_str!("../migrations/sqlite/0010_batch_reserved_spend.sql"),
    },
    Migration {
        version: 11,
        name: "delivery_rounds",
        sql: include_str!("../migrations/sqlite/0011_delivery_rounds.sql"),
    },
    Migration {
        version: 12,
        name: "maybe_spent",
        sql: include_str!("../migrations/sqlite/0012_maybe_spent.sql"),
    },
];

pub static POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "delivery_attempts",
        sql: include_str!("../migrations/postgres/0002_delivery_attempts.sql"),
    },
    Migration {
        version: 3,
        name: "tasks_by_batch",
        sql: include_str!("../migrations/postgres/0003_tasks_by_batch.sql"),
    },
    Migration {
        version: 4,
        name: "partial_task_indexes",
        sql: include_str!("../migrations/postgres/0004_partial_task_indexes.sql"),
    },
    Migration {
        version: 5,
        name: "decisions",
        sql: include_str!("../migrations/postgres/0005_decisions.sql"),
    },
    Migration {
        version: 6,
        name: "one_line_per_batch_task",
        sql: include_str!("../migrations/postgres/0006_one_line_per_batch_task.sql"),
    },
    Migration {
        version: 7,
        name: "expired_leases",
        sql: include_str!("../migrations/postgres/0007_expired_leases.sql"),
    },
    Migration {
        version: 8,
        name: "tasks_by_creation",
        sql: include_str!("../migrations/postgres/0008_tasks_by_creation.sql"),
    },
    Migration {
        version: 9,
        name: "batch_submit_lease",
        sql: include_str!("../migrations/postgres/0009_batch_submit_lease.sql"),
    },
    Migration {
        version: 10,
        name: "batch_reserved_spend",
        sql: include_str!("../migrations/postgres/0010_batch_reserved_spend.sql"),
    },
    Migration {
        version: 11,
        name: "delivery_rounds",
        sql: include_str!("../migrations/postgres/0011_delivery_rounds.sql"),
    },
    Migration {
        version: 12,
        name: "maybe_spent",
        sql: include_str!("../migrations/postgres/0012_maybe_spent.sql"),
    },
];

pub(crate) const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_versions_in_order() {
        let v = |m: &[Migration]| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(v(SQLITE), v(POSTGRES));
        assert!(v(SQLITE).windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn every_migration_file_is_listed() {
        // A file left out of the list is a table that never exists (it happened once).
        for (db, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(db);
            let files = std::fs::read_dir(&dir).unwrap().count();
            assert_eq!(
                files,
                list.len(),
                "{} has {files} files, {} listed",
                dir.display(),
                list.len()
            );
        }
    }
}
