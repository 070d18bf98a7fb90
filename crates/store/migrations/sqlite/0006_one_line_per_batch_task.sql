-- A batch's line for a task is recorded once: a poller that dies after recording a batch's lines
-- and before marking the batch done polls it again on restart and brings the same lines, and the
-- store already skips those it holds. This makes the database refuse a second one as well, so
-- that no code path can put a task's line of one batch into the ledger twice. A task moved to
-- another batch (after its first one expired) has a line of each, which is what was paid.
-- Stores written before batch_lines skipped recorded lines may hold such a second line, which
-- was never paid for (the provider charged the line once): it goes, with its ledger entry, so
-- that the index can be built.
DELETE FROM ledger WHERE attempt_id IN (
    SELECT a.id FROM attempts a
     WHERE a.batch_id IS NOT NULL AND a.outcome IN ('succeeded', 'late')
       AND EXISTS (SELECT 1 FROM attempts b
                    WHERE b.task_id = a.task_id AND b.batch_id = a.batch_id
                      AND b.outcome IN ('succeeded', 'late') AND b.id < a.id));
DELETE FROM attempts
 WHERE batch_id IS NOT NULL AND outcome IN ('succeeded', 'late')
   AND EXISTS (SELECT 1 FROM attempts b
                WHERE b.task_id = attempts.task_id AND b.batch_id = attempts.batch_id
                  AND b.outcome IN ('succeeded', 'late') AND b.id < attempts.id);
CREATE UNIQUE INDEX attempts_batch_line ON attempts (batch_id, task_id)
    WHERE batch_id IS NOT NULL AND outcome IN ('succeeded', 'late');
