-- The user document is stored as `json` (its text as written) rather than
-- `jsonb`: every reader decodes it whole into the typed document, and no
-- query looks inside it, so the binary form only cost a conversion on
-- every write and every read. Documents are written without their null
-- members (see `roster_events::compact`).
ALTER TABLE user_view ALTER COLUMN doc TYPE json USING doc::json;
