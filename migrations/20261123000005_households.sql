-- The household resource as the API returns it.
CREATE TABLE household_view
(
    id         uuid PRIMARY KEY,
    company_id text   NOT NULL,
    version    bigint NOT NULL,
    doc        jsonb  NOT NULL
);
