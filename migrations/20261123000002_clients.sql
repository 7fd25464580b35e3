-- Tenants and the API clients that act for them.
CREATE TABLE companies
(
    id         text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE clients
(
    client_id   uuid PRIMARY KEY,
    company_id  text        NOT NULL REFERENCES companies (id),
    name        text,
    -- Argon2id PHC string of the client secret; the secret itself is shown once.
    secret_hash text        NOT NULL,
    scopes      text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The key that signs access tokens, generated once, so tokens stay valid
-- across restarts and across processes.
CREATE TABLE signing_keys
(
    id         int PRIMARY KEY CHECK (id = 1),
    secret     bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
