-- The ids a stored response names (every UUID in its body), so that an
-- erasure finds the responses that name its user through an index instead
-- of scanning every body, and a response is never stored naming a user
-- erased meanwhile (src/http/idempotency.rs).
ALTER TABLE idempotency_keys ADD COLUMN subjects uuid[] NOT NULL DEFAULT '{}';
UPDATE idempotency_keys
   SET subjects = ARRAY(SELECT DISTINCT m[1]::uuid
                          FROM regexp_matches(convert_from(body, 'UTF8'),
                               '([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})', 'g') m)
 WHERE body IS NOT NULL;
CREATE INDEX idempotency_keys_subjects ON idempotency_keys USING gin (subjects);
-- The requests that committed to a user's stream (an erasure forgets them).
CREATE INDEX idempotency_keys_committed_user ON idempotency_keys (committed_id) WHERE committed_type = 'user';
