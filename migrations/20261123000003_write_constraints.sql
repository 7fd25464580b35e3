-- Write-side constraint rows, written in the same transaction as the events
-- that cause them (see command/src/store.rs). They are not read models: they
-- exist so that rules spanning aggregates hold under concurrency.

-- Values unique per company: kind = email (lower case) | external_ref
-- ("type<US>id") | account.
CREATE TABLE unique_claims
(
    company_id text NOT NULL,
    kind       text NOT NULL,
    value      text NOT NULL,
    owner_id   uuid NOT NULL,
    PRIMARY KEY (company_id, kind, value)
);
CREATE INDEX unique_claims_owner ON unique_claims (owner_id, kind);

-- Every user with its company and parent: parent existence and cycle checks.
CREATE TABLE user_registry
(
    user_id    uuid PRIMARY KEY,
    company_id text NOT NULL,
    parent_id  uuid
);
CREATE INDEX user_registry_parent ON user_registry (parent_id) WHERE parent_id IS NOT NULL;
