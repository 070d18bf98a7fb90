-- `sluice run` counts the tasks created since its events were received, every 250 ms, and reads
-- them back for its report: without an index that walked every task ever stored (0.8 s a poll
-- over a million). Tasks are created in time order, so each insertion lands on the index's last
-- page.
CREATE INDEX tasks_created ON tasks (created_at);
