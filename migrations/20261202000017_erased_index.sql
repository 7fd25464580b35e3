-- The erased users alone: the publisher checks every event's owner against
-- it (projections/src/engine.rs, `Keys::Fresh`), a probe of an index that
-- is empty until someone is erased.
CREATE INDEX user_registry_erased ON user_registry (user_id) WHERE erased_at IS NOT NULL;
