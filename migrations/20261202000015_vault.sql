-- Crypto-shredding (CONTRACT §3 "Erasure"; vault/src/lib.rs).
--
-- Every user's data key, wrapped (AES-256-GCM) by the master key whose id
-- is beside it. Erasure deletes the row: the user's sealed values in the
-- event store never open again.
CREATE TABLE data_keys
(
    owner_id   uuid PRIMARY KEY,
    company_id text  NOT NULL,
    wrapped    bytea NOT NULL,
    master_id  text  NOT NULL
);

-- Each company's key for the keyed hashes its unique_claims hold instead of
-- values (emails, external references, account ids).
CREATE TABLE company_keys
(
    company_id text PRIMARY KEY,
    wrapped    bytea NOT NULL,
    master_id  text  NOT NULL
);

-- An erased user stays registered (its id answers 410, never again 404),
-- with no parent and nothing else.
ALTER TABLE user_registry ADD COLUMN erased_at timestamptz;

-- A store written before sealing holds plaintext: `roster keys seal-existing`
-- seals its events in place (resumable: it records how far it got) and
-- replaces its claims' values by keyed hashes; `roster serve` refuses to
-- start until it is done. A new store has nothing to seal.
CREATE TABLE vault_migration
(
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    sealed_through bigint  NOT NULL DEFAULT 0,
    done           boolean NOT NULL
);
INSERT INTO vault_migration (done) SELECT NOT EXISTS (SELECT 1 FROM events);

-- Claims written before this change hold values, later ones keyed hashes.
ALTER TABLE unique_claims ADD COLUMN plain boolean NOT NULL DEFAULT true;
ALTER TABLE unique_claims ALTER COLUMN plain SET DEFAULT false;
