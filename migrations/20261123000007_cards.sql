-- Cards as the API returns them (only the last four digits of a PAN exist).
CREATE TABLE card_view
(
    id         uuid PRIMARY KEY,
    owner_id   uuid NOT NULL,
    company_id text NOT NULL,
    doc        jsonb NOT NULL
);
-- A user's cards, oldest first (ids are UUIDv7).
CREATE INDEX card_view_owner ON card_view (owner_id, id);
