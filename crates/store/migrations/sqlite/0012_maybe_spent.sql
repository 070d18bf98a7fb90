-- Calls that failed after the provider took them (a cut stream, a garbled answer, a connection
-- broken once the request was out): the provider may bill them, but no usage came back, so no
-- ledger line says what they cost. Each row is the most such a call could cost, in nano-dollars:
-- under a hard daily cap it counts, on every instance and across restarts, until its day ends.
CREATE TABLE maybe_spent (
    id       TEXT PRIMARY KEY,
    task_id  TEXT NOT NULL,
    at       BIGINT NOT NULL,
    nanousd  BIGINT NOT NULL
);
CREATE INDEX maybe_spent_at ON maybe_spent (at);
