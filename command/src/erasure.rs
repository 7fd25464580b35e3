//! What an erasure does to the streams around the erased user (CONTRACT §3
//! "Erasure"), decided here as a pure function: a `ParentUnlinked` on each
//! of its children and a `HouseholdMemberRemoved` on each household that
//! holds one of its accounts (the account not named: it was the user's
//! personal data). The store finds the children and households under its
//! locks, reads each stream's tail, and appends what this returns, in the
//! erasure's transaction.

use roster_events::household::{HouseholdEvent, Member};
use roster_events::user::{ParentUnlinked, UserEvent};
use roster_events::Timestamp;
use uuid::Uuid;

/// A stream the erasure appends to, as it stands: its last sequence (0:
/// empty) and the instant of its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub id: Uuid,
    pub sequence: u64,
    pub at: Option<Timestamp>,
}

/// One event of an erasure on another stream, after `after` in it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cascaded {
    /// On a child's stream.
    Unlinked { child: Uuid, after: u64, event: UserEvent },
    /// On a household's stream.
    Removed {
        household: Uuid,
        after: u64,
        event: HouseholdEvent,
    },
}

/// The events of `user`'s erasure at `at` on its children's and households'
/// streams, children first. Each follows its stream's last event in
/// sequence and in time: at the erasure's instant, or a microsecond after
/// the stream's last event should that be later (another append committed
/// there while the erasure waited), so a point-in-time read never shows the
/// erasure's effect before what preceded it.
pub fn cascade(user: Uuid, at: Timestamp, children: &[Tail], households: &[Tail]) -> Vec<Cascaded> {
    let when = |tail: &Tail| {
        tail.at
            .map(|last| Timestamp::from(last.as_datetime() + chrono::Duration::microseconds(1)))
            .map_or(at, |after| after.max(at))
    };
    let unlinked = children.iter().map(|c| Cascaded::Unlinked {
        child: c.id,
        after: c.sequence,
        event: UserEvent::ParentUnlinked(ParentUnlinked {
            previous_parent_user_id: user,
            at: when(c),
        }),
    });
    let removed = households.iter().map(|h| Cascaded::Removed {
        household: h.id,
        after: h.sequence,
        event: HouseholdEvent::HouseholdMemberRemoved(Member {
            user_id: user,
            account_id: None,
            at: when(h),
        }),
    });
    unlinked.chain(removed).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instant(text: &str) -> Timestamp {
        serde_json::from_value(serde_json::Value::String(text.into())).expect("a timestamp")
    }

    #[test]
    fn an_erasure_unlinks_each_child_and_leaves_each_household_after_its_last_event() {
        let (user, child, late_child, household) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let at = instant("2026-12-05T12:00:00.000000Z");
        let events = cascade(
            user,
            at,
            &[
                Tail {
                    id: child,
                    sequence: 3,
                    at: Some(instant("2026-12-05T11:00:00.000000Z")),
                },
                // Another append committed here while the erasure waited.
                Tail {
                    id: late_child,
                    sequence: 7,
                    at: Some(instant("2026-12-05T12:00:00.000005Z")),
                },
            ],
            &[Tail {
                id: household,
                sequence: 2,
                at: None,
            }],
        );
        assert_eq!(
            events,
            vec![
                Cascaded::Unlinked {
                    child,
                    after: 3,
                    event: UserEvent::ParentUnlinked(ParentUnlinked {
                        previous_parent_user_id: user,
                        at,
                    }),
                },
                Cascaded::Unlinked {
                    child: late_child,
                    after: 7,
                    event: UserEvent::ParentUnlinked(ParentUnlinked {
                        previous_parent_user_id: user,
                        at: instant("2026-12-05T12:00:00.000006Z"),
                    }),
                },
                Cascaded::Removed {
                    household,
                    after: 2,
                    event: HouseholdEvent::HouseholdMemberRemoved(Member {
                        user_id: user,
                        account_id: None,
                        at,
                    }),
                },
            ]
        );
    }

    #[test]
    fn a_user_alone_erases_nothing_else() {
        let at = instant("2026-12-05T12:00:00.000000Z");
        assert!(cascade(Uuid::now_v7(), at, &[], &[]).is_empty());
    }
}
