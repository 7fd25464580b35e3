-- Search columns of the user view (filled by the user_view projector).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

ALTER TABLE user_view
    ADD COLUMN search_name text NOT NULL DEFAULT '',
    ADD COLUMN email_lower text,
    ADD COLUMN mobile      text;

-- Rows projected before this migration.
UPDATE user_view
   SET search_name = lower(trim(coalesce(doc ->> 'first_name', '') || ' ' || coalesce(doc ->> 'last_name', ''))),
       email_lower = lower(doc ->> 'email'),
       mobile      = doc ->> 'mobile';

-- name: case-insensitive substring of "first last" (trigram index).
CREATE INDEX user_view_search_name ON user_view USING gin (search_name gin_trgm_ops);
CREATE INDEX user_view_company_email ON user_view (company_id, email_lower, id);
CREATE INDEX user_view_company_mobile ON user_view (company_id, mobile, id);
