-- Idempotency keys (CONTRACT §2): per client, the first response to a write
-- sent with `Idempotency-Key`, replayed for repeats of the same request.
CREATE TABLE idempotency_keys
(
    client_id    text        NOT NULL,
    key          text        NOT NULL,
    -- SHA-256 of method, path and body: a repeat must be the same request.
    fingerprint  bytea       NOT NULL,
    -- NULL while the first request is still running.
    status       smallint,
    headers      jsonb,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
