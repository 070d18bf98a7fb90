-- Every attempt to deliver a result to a sink, for the record.
CREATE TABLE delivery_attempts (
    id          TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES deliveries(id),
    started_at  BIGINT NOT NULL,
    status      BIGINT,
    error       TEXT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id);
