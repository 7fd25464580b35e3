//! Household events (rewards householding) and the household document.

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const EVENT_VERSION: &str = "1.0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HouseholdEvent {
    HouseholdCreated(HouseholdCreated),
    HouseholdMemberAdded(Member),
    HouseholdMemberRemoved(Member),
}

impl HouseholdEvent {
    pub fn name(&self) -> &'static str {
        match self {
            HouseholdEvent::HouseholdCreated(_) => "HouseholdCreated",
            HouseholdEvent::HouseholdMemberAdded(_) => "HouseholdMemberAdded",
            HouseholdEvent::HouseholdMemberRemoved(_) => "HouseholdMemberRemoved",
        }
    }

    /// When it happened.
    pub fn at(&self) -> Timestamp {
        match self {
            HouseholdEvent::HouseholdCreated(e) => e.at,
            HouseholdEvent::HouseholdMemberAdded(m) | HouseholdEvent::HouseholdMemberRemoved(m) => m.at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HouseholdCreated {
    pub household_id: Uuid,
    pub company_id: String,
    pub name: Option<String>,
    pub at: Timestamp,
}

/// A member: one account of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberRef {
    pub user_id: Uuid,
    pub account_id: String,
}

/// A membership change: one account of one user. The account is not named
/// (`None`) once its user is erased: an erasure removes all of the user's
/// accounts, and the earlier events' account ids no longer open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: Uuid,
    pub account_id: Option<String>,
    pub at: Timestamp,
}

/// The household resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HouseholdDoc {
    pub id: Uuid,
    #[serde(skip_serializing, default)]
    pub company_id: String,
    pub name: Option<String>,
    pub members: Vec<MemberRef>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(skip_serializing, default)]
    pub version: u64,
}

impl HouseholdDoc {
    pub fn fold(doc: Option<HouseholdDoc>, event: &HouseholdEvent) -> Option<HouseholdDoc> {
        let mut d = match (doc, event) {
            (_, HouseholdEvent::HouseholdCreated(e)) => {
                return Some(HouseholdDoc {
                    id: e.household_id,
                    company_id: e.company_id.clone(),
                    name: e.name.clone(),
                    members: Vec::new(),
                    created_at: e.at,
                    version: 1,
                })
            }
            (doc, _) => doc?,
        };
        match event {
            HouseholdEvent::HouseholdCreated(_) => unreachable!("handled above"),
            HouseholdEvent::HouseholdMemberAdded(m) => {
                if let Some(account_id) = &m.account_id {
                    d.members.push(MemberRef {
                        user_id: m.user_id,
                        account_id: account_id.clone(),
                    })
                }
            }
            HouseholdEvent::HouseholdMemberRemoved(m) => match &m.account_id {
                Some(account_id) => d.members.retain(|x| x.account_id != *account_id),
                None => d.members.retain(|x| x.user_id != m.user_id),
            },
        }
        d.version += 1;
        Some(d)
    }
}

impl cqrs_es::DomainEvent for HouseholdEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}
