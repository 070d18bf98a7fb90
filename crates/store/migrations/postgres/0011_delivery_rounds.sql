-- The delivery's `attempts` when it was last sent again by hand (POST /v1/deliveries/{id}/retry).
-- `attempts` only grows, since it is also the fence of a sender's claim; the retry schedule
-- starts over from here.
ALTER TABLE deliveries ADD COLUMN round_start BIGINT NOT NULL DEFAULT 0;
