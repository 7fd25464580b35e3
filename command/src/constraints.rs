//! Write-side constraints: what an event claims or requires beyond its own
//! aggregate. Deriving them is pure (here); enforcing them happens in the
//! append transaction ([`crate::store`]).

use crate::catalog::CardCatalog;
use crate::household::Household;
use crate::user::User;
use cqrs_es::Aggregate;
use roster_events::card::CatalogEvent;
use roster_events::household::{HouseholdEvent, Member};
use roster_events::user::UserEvent;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    Email,
    ExternalRef,
    Account,
    /// An account's household: owner = the household.
    HouseholdAccount,
}

impl ClaimKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ClaimKind::Email => "email",
            ClaimKind::ExternalRef => "external_ref",
            ClaimKind::Account => "account",
            ClaimKind::HouseholdAccount => "household_account",
        }
    }
}

/// A value that must be unique per company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Compared case-insensitively.
    Email(String),
    ExternalRef {
        kind: String,
        id: String,
    },
    Account(String),
    HouseholdAccount(String),
}

impl Claim {
    pub fn kind(&self) -> ClaimKind {
        match self {
            Claim::Email(_) => ClaimKind::Email,
            Claim::ExternalRef { .. } => ClaimKind::ExternalRef,
            Claim::Account(_) => ClaimKind::Account,
            Claim::HouseholdAccount(_) => ClaimKind::HouseholdAccount,
        }
    }

    /// The normalised value the uniqueness holds on.
    pub fn value(&self) -> String {
        match self {
            Claim::Email(e) => e.to_lowercase(),
            // The unit separator cannot occur in validated text.
            Claim::ExternalRef { kind, id } => format!("{kind}\u{1f}{id}"),
            Claim::Account(a) | Claim::HouseholdAccount(a) => a.clone(),
        }
    }

    pub fn taken(&self) -> Violation {
        match self {
            Claim::Email(_) => Violation::EmailTaken,
            Claim::ExternalRef { .. } => Violation::ExternalIdTaken,
            Claim::Account(_) => Violation::AccountTaken,
            Claim::HouseholdAccount(_) => Violation::AccountInHousehold,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// The aggregate claims a unique value.
    Claim(Claim),
    /// The aggregate gives up its claim of this kind.
    Release(ClaimKind),
    /// The aggregate gives up this one claim.
    ReleaseValue(Claim),
    /// The account must be owned by this user.
    AccountOwnedBy {
        account_id: String,
        user_id: Uuid,
    },
    /// A new user, with its parent, which must exist in the same company.
    Register {
        parent: Option<Uuid>,
    },
    /// The user's new parent: must exist in the same company and must not
    /// be the user or one of its descendants. Checked under a per-company
    /// lock so that two opposite links cannot both pass.
    LinkParent(Uuid),
    UnlinkParent,
    /// The user is erased: its children, claims, households, key and
    /// stored responses go with it (see `store::erase`).
    Erase {
        at: roster_events::Timestamp,
    },
}

/// A cross-aggregate rule the append would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("email already taken")]
    EmailTaken,
    #[error("external reference already taken")]
    ExternalIdTaken,
    #[error("account already taken")]
    AccountTaken,
    #[error("parent user not found")]
    ParentNotFound,
    #[error("relationship would form a cycle")]
    RelationshipCycle,
    #[error("the account is already in a household")]
    AccountInHousehold,
    #[error("the account does not belong to that user")]
    AccountNotOwned,
}

/// How an aggregate's snapshots are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshots {
    /// As they are: the aggregate holds no personal data.
    Plain,
    /// Sealed under the aggregate's own data key (a user's).
    Sealed,
    /// Not at all: the aggregate holds several users' data.
    Never,
}

/// An aggregate whose events may carry constraints, and personal data.
pub trait Constrained: Aggregate {
    const SNAPSHOTS: Snapshots;

    /// What `event` claims or requires beyond its own aggregate.
    fn constraints(event: &Self::Event) -> Vec<Constraint>;

    /// The user whose data key seals `event`'s personal values
    /// ([`roster_events::personal`]), on the aggregate `stream`.
    fn data_owner(stream: Uuid, event: &Self::Event) -> Option<Uuid>;
}

impl Constrained for User {
    const SNAPSHOTS: Snapshots = Snapshots::Sealed;

    fn constraints(event: &UserEvent) -> Vec<Constraint> {
        of_user(event)
    }

    fn data_owner(stream: Uuid, _: &UserEvent) -> Option<Uuid> {
        Some(stream)
    }
}

impl Constrained for Household {
    const SNAPSHOTS: Snapshots = Snapshots::Never;

    fn constraints(event: &HouseholdEvent) -> Vec<Constraint> {
        of_household(event)
    }

    fn data_owner(_: Uuid, event: &HouseholdEvent) -> Option<Uuid> {
        match event {
            HouseholdEvent::HouseholdCreated(_) => None,
            HouseholdEvent::HouseholdMemberAdded(m) | HouseholdEvent::HouseholdMemberRemoved(m) => Some(m.user_id),
        }
    }
}

impl Constrained for CardCatalog {
    const SNAPSHOTS: Snapshots = Snapshots::Plain;

    fn constraints(_: &CatalogEvent) -> Vec<Constraint> {
        Vec::new()
    }

    fn data_owner(_: Uuid, _: &CatalogEvent) -> Option<Uuid> {
        None
    }
}

pub fn of_user(event: &UserEvent) -> Vec<Constraint> {
    match event {
        UserEvent::UserEnrolled(e) => {
            let mut out = vec![Constraint::Register {
                parent: e.parent_user_id,
            }];
            if let Some(email) = &e.profile.email {
                out.push(Constraint::Claim(Claim::Email(email.clone())));
            }
            if let Some(r) = &e.profile.external_ref {
                out.push(Constraint::Claim(Claim::ExternalRef {
                    kind: r.kind.clone(),
                    id: r.id.clone(),
                }));
            }
            if let Some(a) = &e.account {
                out.push(Constraint::Claim(Claim::Account(a.account_id.clone())));
            }
            out
        }
        UserEvent::UserUpdated(e) => {
            let mut out = Vec::new();
            if let Some(email) = &e.changes.email {
                out.push(Constraint::Release(ClaimKind::Email));
                out.extend(email.iter().map(|email| Constraint::Claim(Claim::Email(email.clone()))));
            }
            if let Some(r) = &e.changes.external_ref {
                out.push(Constraint::Release(ClaimKind::ExternalRef));
                out.extend(r.iter().map(|r| {
                    Constraint::Claim(Claim::ExternalRef {
                        kind: r.kind.clone(),
                        id: r.id.clone(),
                    })
                }));
            }
            out
        }
        UserEvent::ParentLinked(e) => vec![Constraint::LinkParent(e.parent_user_id)],
        UserEvent::ParentUnlinked(_) => vec![Constraint::UnlinkParent],
        UserEvent::UserErased(e) => vec![Constraint::Erase { at: e.erased_at }],
        UserEvent::AccountAdded(e) => vec![Constraint::Claim(Claim::Account(e.account.account_id.clone()))],
        UserEvent::PasswordChanged(_)
        | UserEvent::VerificationQuestionsSet(_)
        | UserEvent::VerificationSucceeded(_)
        | UserEvent::VerificationFailed(_)
        | UserEvent::VerificationLocked(_)
        | UserEvent::StatusChanged(_)
        | UserEvent::KycUpdated(_)
        | UserEvent::CardOrdered(_)
        | UserEvent::CardTerminated(_) => Vec::new(),
    }
}

pub fn of_household(event: &HouseholdEvent) -> Vec<Constraint> {
    match event {
        HouseholdEvent::HouseholdCreated(_) => Vec::new(),
        // An account not named is an erased user's: its erasure released
        // the claims.
        HouseholdEvent::HouseholdMemberAdded(Member {
            account_id: Some(account_id),
            user_id,
            ..
        }) => vec![
            Constraint::AccountOwnedBy {
                account_id: account_id.clone(),
                user_id: *user_id,
            },
            Constraint::Claim(Claim::HouseholdAccount(account_id.clone())),
        ],
        HouseholdEvent::HouseholdMemberRemoved(Member {
            account_id: Some(account_id),
            ..
        }) => vec![Constraint::ReleaseValue(Claim::HouseholdAccount(account_id.clone()))],
        HouseholdEvent::HouseholdMemberAdded(_) | HouseholdEvent::HouseholdMemberRemoved(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_claimed_case_insensitively() {
        assert_eq!(Claim::Email("John@Example.COM".into()).value(), "john@example.com");
    }
}
