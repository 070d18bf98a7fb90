-- `sluice run` counts the tasks created since its events were received, every 250 ms, and reads
-- them back for its report: without an index that walked every task ever stored. Tasks are
-- created in time order, so each insertion lands on the index's last page.
-- On PostgreSQL this holds a lock on `tasks` while the index is built (a migration runs in a
-- transaction, so not CONCURRENTLY): with millions of tasks, ingest pauses for that long.
CREATE INDEX tasks_created ON tasks (created_at);
