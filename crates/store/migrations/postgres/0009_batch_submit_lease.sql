-- Who is submitting a batch, until when. A batch in `submitting` has no provider id yet: on
-- PostgreSQL several instances follow it, and one that found the provider holding no such batch
-- would send it again while another's create call was still on its way (two batches, every line
-- paid twice). The instance that records or reconciles a batch takes this lease and renews it
-- while it submits; the others leave the batch alone until the lease has run out, as a crashed
-- submitter's does. Batches recorded before this have none: the first instance to look takes them.
ALTER TABLE batches ADD COLUMN submit_owner TEXT;
ALTER TABLE batches ADD COLUMN submit_expires_at BIGINT;
