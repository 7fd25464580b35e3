-- Webhooks (CONTRACT §9): a company's endpoints, and one delivery per
-- (endpoint, event) recorded before it is attempted.
--
-- Nothing here holds personal data: a delivery names its event (position
-- and id) and the body is built from the event at each attempt, opened
-- with its owner's key as it is then (after an erasure: `"data": null`).
-- Secrets are stored wrapped under the master key (like users' data keys).

CREATE TABLE webhook_endpoints (
    id              uuid PRIMARY KEY,
    company_id      text NOT NULL,
    url             text NOT NULL,
    description     text,
    -- CloudEvents types (`roster.user.updated.v1`); NULL: every type.
    event_types     text[],
    disabled        boolean NOT NULL DEFAULT false,
    disabled_reason text CHECK (disabled_reason IN ('manual', 'gone')),
    -- The signing secret, and during a rotation the one before it with
    -- the instant it stops signing; each wrapped under `master_id`.
    secret          bytea NOT NULL,
    previous_secret bytea,
    previous_until  timestamptz,
    master_id       text NOT NULL,
    -- Events at positions after this one are delivered to it (the log's
    -- head when it was created).
    after_position  bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_endpoints_company ON webhook_endpoints (company_id, id);

CREATE TABLE webhook_deliveries (
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- The event's place in the log: one delivery per (endpoint, event), and
    -- an endpoint's deliveries in the log's order (the key grows at its end).
    position         bigint NOT NULL,
    -- What clients see of it (not looked up by).
    id               uuid NOT NULL,
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    aggregate_type   text NOT NULL,
    aggregate_id     text NOT NULL,
    sequence         bigint NOT NULL,
    -- When the event was appended (replay's `since`, delivery latency).
    recorded_at      timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    -- When a pending delivery is due (attempts under way are known to the
    -- sender alone); NULL once delivered or failed.
    next_attempt_at  timestamptz,
    delivered_at     timestamptz,
    PRIMARY KEY (endpoint_id, position)
);

-- What is due per endpoint; the per-aggregate order check.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at, position)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_chain ON webhook_deliveries (endpoint_id, aggregate_type, aggregate_id, position)
    WHERE status = 'pending';

-- The deliverer starts at the log's head: no endpoint existed before.
-- Creating an endpoint locks this row, so that no batch of the deliverer
-- passes events the endpoint should get without seeing it.
INSERT INTO subscriber_checkpoints (name, position)
SELECT 'webhook_deliverer', coalesce(max(position), 0) FROM events
ON CONFLICT (name) DO NOTHING;
