-- The event store: the postgres-es `events` and `snapshots` tables, as the
-- postgres-es crate defines them, extended with columns its INSERT does not
-- name (so their defaults fill them):
--   global_position  total order of appends (gaps are possible, never reuse)
--   transaction_id   the appending transaction; readers use it as a
--                    watermark so that a late commit is never skipped
--   event_id         the CloudEvents id
--   recorded_at      when the store accepted the event
CREATE TABLE events
(
    aggregate_type  text                         NOT NULL,
    aggregate_id    text                         NOT NULL,
    sequence        bigint CHECK (sequence >= 0) NOT NULL,
    event_type      text                         NOT NULL,
    event_version   text                         NOT NULL,
    payload         json                         NOT NULL,
    metadata        json                         NOT NULL,
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid                         NOT NULL DEFAULT gen_random_uuid(),
    recorded_at     timestamptz                  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- Catch-up readers page through (transaction_id, global_position).
CREATE INDEX events_xid_position ON events (transaction_id, global_position);

CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Wake catch-up subscribers (projectors, publisher) in every process.
-- Once per statement; Postgres folds identical notifications of one
-- transaction into one.
CREATE FUNCTION notify_events_appended() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('roster_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_appended
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_events_appended();
