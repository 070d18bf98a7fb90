-- A decision (lane, reason, every lane's estimate in dollars) is about 700 bytes of JSON, and the
-- tasks of one workload within the same minute of slack share it: each distinct one is stored once
-- here, by the hash of its text, and a task names it. Tasks written before this keep their own
-- copy in `tasks.decision`; newer ones leave that column empty. No foreign key: on PostgreSQL
-- every task insert would lock the shared decision row (FOR KEY SHARE), and ingest writes the
-- decision in the same transaction as its tasks anyway.
CREATE TABLE decisions (
    id   TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
ALTER TABLE tasks ADD COLUMN decision_id TEXT;
