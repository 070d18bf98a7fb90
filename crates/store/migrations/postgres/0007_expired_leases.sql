-- A claim also takes over running tasks whose lease has expired. Read through the claim index
-- (lane, state, deadline), that part walked every running task of the lane and looked each one
-- up for its lease, at every claim: in a profile of a backlog's drain, a quarter of SQLite's
-- time. Only running tasks are in this index, so ingest does not pay for it, and a claim finds
-- the expired leases (most often none) in a range of it.
-- On PostgreSQL this holds a lock on `tasks` while the index is built (a migration runs in a
-- transaction, so not CONCURRENTLY): with millions of tasks, ingest pauses for that long.
CREATE INDEX tasks_expired ON tasks (lane, lease_expires_at) WHERE state = 'running';
