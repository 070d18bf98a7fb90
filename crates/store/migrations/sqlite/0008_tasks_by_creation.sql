-- The tasks of a period (`sluice report --since`, the results `sluice run` writes) were read by
-- walking every task ever stored: 0.2 s over a million for an hour's 1,000, and a count of them
-- 0.8-1.3 s. Tasks are created in time order, so each insertion lands on the index's last page.
CREATE INDEX tasks_created ON tasks (created_at);
