-- Instants are unix milliseconds; money is nano-dollars (integers add up exactly).
CREATE TABLE events (
    id               TEXT PRIMARY KEY,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    idempotency_key  TEXT UNIQUE,
    request_hash     TEXT NOT NULL,
    needed_within_ms INTEGER,
    source           TEXT NOT NULL,
    received_at      INTEGER NOT NULL
);

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES events(id),
    workload         TEXT NOT NULL,
    lane             TEXT NOT NULL,
    state            TEXT NOT NULL,
    rule             TEXT NOT NULL,
    reason           TEXT NOT NULL,
    decision         TEXT NOT NULL,
    deadline         INTEGER NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    after_task_id    TEXT REFERENCES tasks(id),
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    fence            INTEGER NOT NULL DEFAULT 0,
    run_after        INTEGER NOT NULL DEFAULT 0,
    batch_id         TEXT,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX tasks_claim ON tasks (lane, state, deadline);
CREATE INDEX tasks_event ON tasks (event_id);
CREATE INDEX tasks_after ON tasks (after_task_id);
CREATE INDEX tasks_state_id ON tasks (state, id);
CREATE INDEX tasks_workload_id ON tasks (workload, id);

CREATE TABLE batches (
    id                TEXT PRIMARY KEY,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    state             TEXT NOT NULL,
    provider_batch_id TEXT,
    item_count        INTEGER NOT NULL,
    bytes             INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    submitted_at      INTEGER,
    ended_at          INTEGER,
    last_error        TEXT
);
CREATE INDEX batches_state ON batches (state);

CREATE TABLE attempts (
    id                  TEXT PRIMARY KEY,
    task_id             TEXT NOT NULL REFERENCES tasks(id),
    lane                TEXT NOT NULL,
    batch_id            TEXT,
    fence               INTEGER NOT NULL,
    started_at          INTEGER NOT NULL,
    ended_at            INTEGER,
    outcome             TEXT NOT NULL,
    error               TEXT,
    provider_request_id TEXT
);
CREATE INDEX attempts_task ON attempts (task_id);

CREATE TABLE results (
    task_id             TEXT PRIMARY KEY REFERENCES tasks(id),
    attempt_id          TEXT NOT NULL,
    output              TEXT NOT NULL,
    stop_reason         TEXT NOT NULL,
    input_tokens        INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    first_token_ms      INTEGER,
    created_at          INTEGER NOT NULL
);

CREATE TABLE ledger (
    id                   TEXT PRIMARY KEY,
    task_id              TEXT NOT NULL REFERENCES tasks(id),
    attempt_id           TEXT NOT NULL,
    workload             TEXT NOT NULL,
    provider             TEXT NOT NULL,
    model                TEXT NOT NULL,
    lane                 TEXT NOT NULL,
    input_tokens         INTEGER NOT NULL,
    cached_input_tokens  INTEGER NOT NULL,
    output_tokens        INTEGER NOT NULL,
    cost_nanousd         INTEGER NOT NULL,
    stream_cost_nanousd  INTEGER NOT NULL,
    created_at           INTEGER NOT NULL
);
CREATE INDEX ledger_task ON ledger (task_id);
CREATE INDEX ledger_created ON ledger (created_at);

CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    task_id         TEXT NOT NULL REFERENCES tasks(id),
    sink            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
