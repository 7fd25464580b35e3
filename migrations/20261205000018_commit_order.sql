-- Positions in commit order (docs/design.md, "The log's order").
--
-- Every event gets `position` from `roster_next_position()`, which first
-- takes the log's lock (a transaction-level advisory lock, held until the
-- transaction ends) and then the next value of `event_positions`. So a
-- transaction that appends holds the lock from its first event to its
-- commit, and the next appender takes its positions only once that commit
-- is visible: positions are visible in order, as a prefix, and a reader
-- that pages by `position > checkpoint` skips nothing. A stream's event
-- n+1 is inserted only after its event n is visible (the primary key), so
-- its position is higher: per-stream order holds for every append path,
-- since none can insert an event without taking a position this way.
--
-- This replaces paging by (transaction_id, global_position) below the
-- server-wide snapshot xmin: that order put a transaction that took its id
-- early and appended late ahead of events committed before it, stalled
-- every reader while any transaction anywhere on the server was open, and
-- did not survive a dump and restore (transaction ids belong to a cluster).
--
-- Writers of the previous version must be stopped before this runs (they
-- write the columns dropped below). The lock waits for any still running.
LOCK TABLE events, subscriber_checkpoints, user_view_memberships IN ACCESS EXCLUSIVE MODE;

-- The key is `roster` in ASCII and 2 (the erasure lock is 1).
CREATE FUNCTION roster_lock_log() RETURNS void
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_advisory_xact_lock(8245936386494038018);
END
$$;

CREATE SEQUENCE event_positions AS bigint;

CREATE FUNCTION roster_next_position() RETURNS bigint
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_advisory_xact_lock(8245936386494038018);
    RETURN nextval('event_positions');
END
$$;

-- Existing events keep the order readers saw them in: every checkpoint was
-- below the snapshot xmin when it was saved, so every event at or before it
-- in (transaction_id, global_position) order had committed and been read.
ALTER TABLE events ADD COLUMN position bigint;
UPDATE events e
   SET position = o.n
  FROM (SELECT global_position, row_number() OVER (ORDER BY transaction_id, global_position) AS n FROM events) o
 WHERE e.global_position = o.global_position;

ALTER TABLE subscriber_checkpoints ADD COLUMN position bigint NOT NULL DEFAULT 0;
UPDATE subscriber_checkpoints c
   SET position = coalesce((SELECT e.position FROM events e
                             WHERE (e.transaction_id, e.global_position) <= (c.last_xid, c.last_pos)
                             ORDER BY e.transaction_id DESC, e.global_position DESC LIMIT 1), 0);
ALTER TABLE subscriber_checkpoints DROP COLUMN last_xid, DROP COLUMN last_pos;

ALTER TABLE user_view_memberships ADD COLUMN added_position bigint NOT NULL DEFAULT 0;
UPDATE user_view_memberships m
   SET added_position = e.position
  FROM events e
 WHERE (e.transaction_id, e.global_position) = (m.added_xid, m.added_pos);
ALTER TABLE user_view_memberships DROP COLUMN added_xid, DROP COLUMN added_pos;
ALTER TABLE user_view_memberships ALTER COLUMN added_position DROP DEFAULT;

-- `roster keys seal-existing` goes through events by position; an
-- unfinished run starts over (it skips what is sealed already).
UPDATE vault_migration SET sealed_through = 0 WHERE NOT done;

ALTER TABLE events DROP COLUMN transaction_id, DROP COLUMN global_position;
SELECT setval('event_positions', coalesce(max(position), 0) + 1, false) FROM events;
ALTER TABLE events
    ALTER COLUMN position SET DEFAULT roster_next_position(),
    ALTER COLUMN position SET NOT NULL;
ALTER SEQUENCE event_positions OWNED BY events.position;
CREATE UNIQUE INDEX events_position ON events (position);
