-- The most a batch can cost (every line's input at one token a byte, every line generating its
-- `max_tokens`, at the batch price), in nano-dollars. Its lines are billed only as its results
-- come back, hours after it is sent: until then the hard daily cap counts this, so that the
-- batches of one day cannot together pass it. Batches recorded before this reserve nothing.
ALTER TABLE batches ADD COLUMN reserved_nanousd BIGINT NOT NULL DEFAULT 0;
