-- Signed and encrypted calls (CONTRACT §10).

-- A client's RSA public keys, as DER SubjectPublicKeyInfo: the one its
-- OAuth 1.0a signatures verify under, the one its answers are encrypted for.
ALTER TABLE clients
    ADD COLUMN signing_key    bytea,
    ADD COLUMN encryption_key bytea;

-- The nonces of signed requests, kept for 10 minutes: a request's
-- timestamp may be up to 5 minutes either side of the server's clock, so
-- one request stays acceptable for at most 10. A repeat within that time
-- is a replay, across every process of the database.
CREATE TABLE oauth_nonces
(
    client_id uuid        NOT NULL,
    nonce     text        NOT NULL,
    seen_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, nonce)
);
