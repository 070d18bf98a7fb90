-- Instants are unix milliseconds; money is nano-dollars (integers add up exactly).
CREATE TABLE events (
    id               TEXT PRIMARY KEY,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    idempotency_key  TEXT UNIQUE,
    request_hash     TEXT NOT NULL,
    needed_within_ms BIGINT,
    source           TEXT NOT NULL,
    received_at      BIGINT NOT NULL
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
    deadline         BIGINT NOT NULL,
    priority         BIGINT NOT NULL DEFAULT 0,
    after_task_id    TEXT REFERENCES tasks(id),
    attempts         BIGINT NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    fence            BIGINT NOT NULL DEFAULT 0,
    run_after        BIGINT NOT NULL DEFAULT 0,
    batch_id         TEXT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
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
    item_count        BIGINT NOT NULL,
    bytes             BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    submitted_at      BIGINT,
    ended_at          BIGINT,
    last_error        TEXT
);
CREATE INDEX batches_state ON batches (state);

CREATE TABLE attempts (
    id                  TEXT PRIMARY KEY,
    task_id             TEXT NOT NULL REFERENCES tasks(id),
    lane                TEXT NOT NULL,
    batch_id            TEXT,
    fence               BIGINT NOT NULL,
    started_at          BIGINT NOT NULL,
    ended_at            BIGINT,
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
    input_tokens        BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    first_token_ms      BIGINT,
    created_at          BIGINT NOT NULL
);

CREATE TABLE ledger (
    id                   TEXT PRIMARY KEY,
    task_id              TEXT NOT NULL REFERENCES tasks(id),
    attempt_id           TEXT NOT NULL,
    workload             TEXT NOT NULL,
    provider             TEXT NOT NULL,
    model                TEXT NOT NULL,
    lane                 TEXT NOT NULL,
    input_tokens         BIGINT NOT NULL,
    cached_input_tokens  BIGINT NOT NULL,
    output_tokens        BIGINT NOT NULL,
    cost_nanousd         BIGINT NOT NULL,
    stream_cost_nanousd  BIGINT NOT NULL,
    created_at           BIGINT NOT NULL
);
CREATE INDEX ledger_task ON ledger (task_id);
CREATE INDEX ledger_created ON ledger (created_at);

CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    task_id         TEXT NOT NULL REFERENCES tasks(id),
    sink            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
