//! The Household aggregate: accounts of users grouped for rewards. Which
//! user owns an account, and that an account is in at most one household,
//! span aggregates: they are enforced in the append transaction
//! ([`crate::constraints`]).

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use roster_events::household::{HouseholdCreated, HouseholdDoc, HouseholdEvent, Member};
use roster_events::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct HouseholdCommand {
    pub company_id: String,
    pub at: Timestamp,
    pub action: HouseholdAction,
}

#[derive(Debug, Clone)]
pub enum HouseholdAction {
    Create { household_id: Uuid, name: Option<String> },
    AddMember { user_id: Uuid, account_id: String },
    RemoveMember { account_id: String },
}

impl HouseholdAction {
    pub fn name(&self) -> &'static str {
        match self {
            HouseholdAction::Create { .. } => "CreateHousehold",
            HouseholdAction::AddMember { .. } => "AddHouseholdMember",
            HouseholdAction::RemoveMember { .. } => "RemoveHouseholdMember",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HouseholdError {
    #[error("household not found")]
    NotFound,
    #[error("household already exists")]
    AlreadyExists,
    #[error("the account is not a member of this household")]
    NotAMember,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Household {
    doc: Option<HouseholdDoc>,
}

impl Household {
    pub fn doc(&self) -> Option<&HouseholdDoc> {
        self.doc.as_ref()
    }

    pub fn decide(&self, cmd: HouseholdCommand) -> Result<Vec<HouseholdEvent>, HouseholdError> {
        let at = cmd.at;
        if let HouseholdAction::Create { household_id, name } = cmd.action {
            if self.doc.is_some() {
                return Err(HouseholdError::AlreadyExists);
            }
            return Ok(vec![HouseholdEvent::HouseholdCreated(HouseholdCreated {
                household_id,
                company_id: cmd.company_id,
                name,
                at,
            })]);
        }
        let doc = self
            .doc
            .as_ref()
            .filter(|d| d.company_id == cmd.company_id)
            .ok_or(HouseholdError::NotFound)?;
        match cmd.action {
            HouseholdAction::Create { .. } => unreachable!("handled above"),
            HouseholdAction::AddMember { user_id, account_id } => {
                if doc
                    .members
                    .iter()
                    .any(|m| m.account_id == account_id && m.user_id == user_id)
                {
                    return Ok(vec![]);
                }
                Ok(vec![HouseholdEvent::HouseholdMemberAdded(Member {
                    user_id,
                    account_id: Some(account_id),
                    at,
                })])
            }
            HouseholdAction::RemoveMember { account_id } => {
                let member = doc
                    .members
                    .iter()
                    .find(|m| m.account_id == account_id)
                    .ok_or(HouseholdError::NotAMember)?;
                Ok(vec![HouseholdEvent::HouseholdMemberRemoved(Member {
                    user_id: member.user_id,
                    account_id: Some(account_id),
                    at,
                })])
            }
        }
    }
}

impl Aggregate for Household {
    const TYPE: &'static str = "household";
    type Command = HouseholdCommand;
    type Event = HouseholdEvent;
    type Error = HouseholdError;
    type Services = ();

    async fn handle(&mut self, command: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: HouseholdEvent) {
        self.doc = HouseholdDoc::fold(self.doc.take(), &event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at() -> Timestamp {
        Timestamp::from(chrono::DateTime::UNIX_EPOCH)
    }

    fn cmd(action: HouseholdAction) -> HouseholdCommand {
        HouseholdCommand {
            company_id: "acme".into(),
            at: at(),
            action,
        }
    }

    fn created() -> HouseholdEvent {
        HouseholdEvent::HouseholdCreated(HouseholdCreated {
            household_id: Uuid::from_u128(1),
            company_id: "acme".into(),
            name: Some("Does".into()),
            at: at(),
        })
    }

    fn added() -> HouseholdEvent {
        HouseholdEvent::HouseholdMemberAdded(Member {
            user_id: Uuid::from_u128(2),
            account_id: Some("A1".into()),
            at: at(),
        })
    }

    #[test]
    fn create_add_remove() {
        TestFramework::<Household>::with(())
            .given_no_previous_events()
            .when(cmd(HouseholdAction::Create {
                household_id: Uuid::from_u128(1),
                name: Some("Does".into()),
            }))
            .then_expect_events(vec![created()]);
        TestFramework::<Household>::with(())
            .given(vec![created()])
            .when(cmd(HouseholdAction::AddMember {
                user_id: Uuid::from_u128(2),
                account_id: "A1".into(),
            }))
            .then_expect_events(vec![added()]);
        TestFramework::<Household>::with(())
            .given(vec![created(), added()])
            .when(cmd(HouseholdAction::AddMember {
                user_id: Uuid::from_u128(2),
                account_id: "A1".into(),
            }))
            .then_expect_events(vec![]);
        TestFramework::<Household>::with(())
            .given(vec![created(), added()])
            .when(cmd(HouseholdAction::RemoveMember {
                account_id: "A1".into(),
            }))
            .then_expect_events(vec![HouseholdEvent::HouseholdMemberRemoved(Member {
                user_id: Uuid::from_u128(2),
                account_id: Some("A1".into()),
                at: at(),
            })]);
    }

    #[test]
    fn an_erased_users_accounts_all_leave() {
        let other = HouseholdEvent::HouseholdMemberAdded(Member {
            user_id: Uuid::from_u128(3),
            account_id: Some("B1".into()),
            at: at(),
        });
        let erased = HouseholdEvent::HouseholdMemberRemoved(Member {
            user_id: Uuid::from_u128(2),
            account_id: None,
            at: at(),
        });
        let mut h = Household::default();
        for e in [created(), added(), other, erased] {
            h.apply(e);
        }
        let members: Vec<_> = h
            .doc()
            .expect("a household")
            .members
            .iter()
            .map(|m| m.user_id)
            .collect();
        assert_eq!(members, vec![Uuid::from_u128(3)]);
        TestFramework::<Household>::with(())
            .given(vec![created(), added()])
            .when(cmd(HouseholdAction::AddMember {
                user_id: Uuid::from_u128(2),
                account_id: "A2".into(),
            }))
            .then_expect_events(vec![HouseholdEvent::HouseholdMemberAdded(Member {
                user_id: Uuid::from_u128(2),
                account_id: Some("A2".into()),
                at: at(),
            })]);
    }

    #[test]
    fn other_companies_and_strangers_are_refused() {
        let mut c = cmd(HouseholdAction::RemoveMember {
            account_id: "A1".into(),
        });
        c.company_id = "globex".into();
        TestFramework::<Household>::with(())
            .given(vec![created(), added()])
            .when(c)
            .then_expect_error(HouseholdError::NotFound);
        TestFramework::<Household>::with(())
            .given(vec![created()])
            .when(cmd(HouseholdAction::RemoveMember {
                account_id: "A1".into(),
            }))
            .then_expect_error(HouseholdError::NotAMember);
    }
}
