-- The tasks of a period (`sluice report --since`, the results `sluice run` writes) were read by
-- walking every task ever stored. Tasks are created in time order, so each insertion lands on
-- the index's last page.
-- On PostgreSQL this holds a lock on `tasks` while the index is built (a migration runs in a
-- transaction, so not CONCURRENTLY): with millions of tasks, ingest pauses for that long.
CREATE INDEX tasks_created ON tasks (created_at);
