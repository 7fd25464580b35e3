-- Point-in-time reads (query/src/history.rs) find a user's household
-- membership events in the event log itself. Only household rows are in
-- this index, so user appends do not pay for it.
CREATE INDEX events_household_member_user ON events
    ((coalesce(payload -> 'HouseholdMemberAdded' ->> 'user_id', payload -> 'HouseholdMemberRemoved' ->> 'user_id')))
    WHERE aggregate_type = 'household';
