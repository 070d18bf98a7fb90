-- The poller and the deadline guard read a batch's tasks; without this, every poll scanned tasks.
CREATE INDEX tasks_batch ON tasks (batch_id);
