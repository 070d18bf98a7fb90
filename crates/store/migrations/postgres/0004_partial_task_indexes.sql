-- Most tasks run after no other task, and a task has no batch until one is cut: indexing only
-- the rows that have one saves two index insertions per task at ingest. Queries that look a task
-- up by either column (`= value`, `IN (...)`) imply it is not null, so they still use these.
-- On PostgreSQL this holds a lock on `tasks` while the two indexes are built (a migration runs in
-- a transaction, so not CONCURRENTLY): with millions of tasks, ingest pauses for that long.
DROP INDEX tasks_after;
CREATE INDEX tasks_after ON tasks (after_task_id) WHERE after_task_id IS NOT NULL;
DROP INDEX tasks_batch;
CREATE INDEX tasks_batch ON tasks (batch_id) WHERE batch_id IS NOT NULL;
