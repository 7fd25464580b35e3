-- Catch-up subscribers (projectors and the Kafka publisher) and read models.

-- Where each subscriber is in the (transaction_id, global_position) order.
-- A projector updates its row in the same transaction as its read-model rows.
CREATE TABLE subscriber_checkpoints
(
    name       text PRIMARY KEY,
    last_xid   xid8        NOT NULL DEFAULT '0',
    last_pos   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The user resource as the API returns it (doc), plus the columns queries
-- filter and sort on.
CREATE TABLE user_view
(
    id             uuid PRIMARY KEY,
    company_id     text   NOT NULL,
    version        bigint NOT NULL,
    status         text   NOT NULL,
    parent_user_id uuid,
    doc            jsonb  NOT NULL
);
-- List pages: company, optional status / parent filter, ordered by id
-- (UUIDv7, so oldest first).
CREATE INDEX user_view_company_id ON user_view (company_id, id);
CREATE INDEX user_view_company_status ON user_view (company_id, status, id);
CREATE INDEX user_view_company_parent ON user_view (company_id, parent_user_id, id)
    WHERE parent_user_id IS NOT NULL;
