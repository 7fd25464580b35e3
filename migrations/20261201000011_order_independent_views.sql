-- Read models that combine aggregates give the same rows whatever order the
-- aggregates' events reach them in, and re-applying an event changes nothing.

-- Household membership as the user_view projector folds it: for each
-- (household, account), the last membership event of that household's own
-- stream (`version` = its sequence; older or repeated events are ignored).
-- A user's `accounts[].household_id` is the household in which the account
-- is a member; should two say so for a moment (their events reached the
-- projector in the opposite order from their commits), the later-added one.
CREATE TABLE user_view_memberships
(
    household_id uuid    NOT NULL,
    account_id   text    NOT NULL,
    company_id   text    NOT NULL,
    user_id      uuid    NOT NULL,
    version      bigint  NOT NULL,
    member       boolean NOT NULL,
    -- Where the event that made it a member is in the store's order.
    added_xid    xid8    NOT NULL,
    added_pos    bigint  NOT NULL,
    PRIMARY KEY (household_id, account_id)
);
CREATE INDEX user_view_memberships_user ON user_view_memberships (user_id) WHERE member;

-- Memberships of households created before this migration.
INSERT INTO user_view_memberships (household_id, account_id, company_id, user_id, version, member, added_xid, added_pos)
SELECT DISTINCT ON (e.aggregate_id, m.account_id)
       e.aggregate_id::uuid, m.account_id, e.metadata ->> 'company_id', m.user_id::uuid, e.sequence,
       e.event_type = 'HouseholdMemberAdded', e.transaction_id, e.global_position
  FROM events e,
       LATERAL (SELECT coalesce(e.payload -> 'HouseholdMemberAdded', e.payload -> 'HouseholdMemberRemoved') AS data) p,
       LATERAL (SELECT p.data ->> 'account_id' AS account_id, p.data ->> 'user_id' AS user_id) m
 WHERE e.aggregate_type = 'household'
   AND e.event_type IN ('HouseholdMemberAdded', 'HouseholdMemberRemoved')
 ORDER BY e.aggregate_id, m.account_id, e.sequence DESC;

-- The sequence (in the owner's stream) of the last card event applied to a
-- card, so that a re-applied `CardOrdered` cannot reset a terminated card.
ALTER TABLE card_view ADD COLUMN version bigint NOT NULL DEFAULT 0;
UPDATE card_view c
   SET version = coalesce((SELECT max(e.sequence) FROM events e
                   WHERE e.aggregate_type = 'user' AND e.aggregate_id = c.owner_id::text
                     AND e.event_type IN ('CardOrdered', 'CardTerminated')
                     AND coalesce(e.payload -> 'CardOrdered' ->> 'card_id',
                                  e.payload -> 'CardTerminated' ->> 'card_id') = c.id::text), 0);
