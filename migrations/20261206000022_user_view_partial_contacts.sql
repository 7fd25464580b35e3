-- A user without a mobile (or an email) has nothing to be found by there:
-- the two lookup indexes keep only users that have one. Searches compare
-- with `=`, which implies NOT NULL, so they still use them. Issue 28: one
-- index entry fewer per enrollment without a mobile.
DROP INDEX user_view_company_mobile;
CREATE INDEX user_view_company_mobile ON user_view (company_id, mobile, id) WHERE mobile IS NOT NULL;
DROP INDEX user_view_company_email;
CREATE INDEX user_view_company_email ON user_view (company_id, email_lower, id) WHERE email_lower IS NOT NULL;
