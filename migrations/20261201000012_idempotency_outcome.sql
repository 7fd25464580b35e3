-- What the request behind an idempotency key committed, written by the
-- append transaction itself (command/src/store.rs): the stream and the
-- sequences of its events. A key whose request failed with a 5xx is freed
-- only when nothing was committed; otherwise a retry reads the committed
-- outcome back from the store instead of running the command again.
ALTER TABLE idempotency_keys
    ADD COLUMN committed_type text,
    ADD COLUMN committed_id   text,
    ADD COLUMN committed_from bigint,
    ADD COLUMN committed_to   bigint,
    -- The request ended without a stored response (a 5xx after its
    -- commit): a retry may take the key over at once.
    ADD COLUMN released       boolean NOT NULL DEFAULT false;
