-- A batch's line for a task is recorded once: a poller that dies after recording a batch's lines
-- and before marking the batch done polls it again on restart and brings the same lines, and the
-- store already skips those it holds. This makes the database refuse a second one as well, so
-- that no code path can put a task's line of one batch into the ledger twice. A task moved to
-- another batch (after its first one expired) has a line of each, which is what was paid.
CREATE UNIQUE INDEX attempts_batch_line ON attempts (batch_id, task_id)
    WHERE batch_id IS NOT NULL AND outcome IN ('succeeded', 'late');
