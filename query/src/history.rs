//! A user as it was (CONTRACT §3, "Point in time"): folded from the event
//! log with [`UserDoc::fold`] — the same function the aggregate and the user
//! view use — and with each account's household as of the same instant,
//! folded from the households' own streams the way the user view does
//! (membership per household and account; the latest added wins). It reads
//! only the event log, so it needs no consistency token and is current
//! while projections lag.

use crate::QueryError;
use roster_events::household::HouseholdEvent;
use roster_events::user::{UserDoc, UserEvent};
use roster_events::Timestamp;
use roster_vault::{DataKey, Vault};
use sqlx::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

/// Which past state.
#[derive(Debug, Clone, Copy)]
pub enum At {
    /// Right after the user's event `n` (1 = the enrollment).
    Version(u64),
    /// Right after the user's last event at or before this instant;
    /// households as of the instant itself.
    Instant(Timestamp),
}

#[derive(Debug)]
pub enum Past {
    Found(Box<UserDoc>),
    /// No such user for the company, or the instant is before its enrollment.
    NotFound,
    /// The version is past the user's current one.
    AfterCurrent {
        current: u64,
    },
}

type EventRow = (i64, String, String, String, Option<String>);

/// An erased user has no past either: [`Past::NotFound`].
pub async fn user_at(
    pool: &PgPool,
    vault: &Vault,
    company_id: &str,
    user_id: Uuid,
    at: At,
) -> Result<Past, QueryError> {
    let erased: Option<bool> =
        sqlx::query_scalar("SELECT erased_at IS NOT NULL FROM user_registry WHERE user_id = $1 AND company_id = $2")
            .bind(user_id)
            .bind(company_id)
            .fetch_optional(pool)
            .await?;
    if erased == Some(true) {
        return Ok(Past::NotFound);
    }
    let keys = vault.keyring(pool, &[user_id]).await?;
    let key = keys.get(user_id);
    let last = match at {
        At::Version(n) => n as i64,
        At::Instant(_) => i64::MAX,
    };
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT sequence, event_type, event_version, payload::text, metadata ->> 'company_id' FROM events
          WHERE aggregate_type = 'user' AND aggregate_id = $1 AND sequence <= $2
          ORDER BY sequence",
    )
    .bind(user_id.to_string())
    .bind(last)
    .fetch_all(pool)
    .await?;
    if rows.first().and_then(|r| r.4.as_deref()) != Some(company_id) {
        return Ok(Past::NotFound);
    }
    if let At::Version(n) = at {
        if (rows.len() as u64) < n {
            return Ok(Past::AfterCurrent {
                current: rows.len() as u64,
            });
        }
    }
    let mut doc: Option<UserDoc> = None;
    for (_, event_type, version, payload, _) in rows {
        let (_, payload) = roster_events::upcast::upcast_text("user", &event_type, &version, payload);
        let payload = roster_vault::seal::open_text(payload, key)?.payload;
        let event: UserEvent = serde_json::from_str(&payload)?;
        if matches!(at, At::Instant(t) if event.at() > t) {
            break;
        }
        doc = UserDoc::fold(doc, &event);
    }
    let Some(mut doc) = doc else { return Ok(Past::NotFound) };
    let instant = match at {
        At::Version(_) => doc.updated_at,
        At::Instant(t) => t,
    };
    households_at(pool, key, &mut doc, instant).await?;
    Ok(Past::Found(Box::new(doc)))
}

/// A user's verification state in full (CONTRACT §10,
/// `include_verification_details=true`; only ever sent encrypted).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct VerificationDetails {
    pub question_codes: Vec<String>,
    pub locked: bool,
    /// Wrong answers left before the lock.
    pub attempts_remaining: u32,
    /// The last right answer, if any.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_verified_at: Option<Timestamp>,
}

impl VerificationDetails {
    /// Folds the user's verification events, oldest first, over what its
    /// document shows (codes and lock).
    pub fn fold(doc: &UserDoc, events: &[UserEvent]) -> Self {
        let max = roster_events::user::MAX_FAILED_VERIFICATIONS;
        let mut details = VerificationDetails {
            question_codes: doc
                .verification
                .as_ref()
                .map(|v| v.question_codes.clone())
                .unwrap_or_default(),
            locked: doc.verification.as_ref().is_some_and(|v| v.locked),
            attempts_remaining: max,
            last_verified_at: None,
        };
        for event in events {
            match event {
                UserEvent::VerificationQuestionsSet(_) => details.attempts_remaining = max,
                UserEvent::VerificationSucceeded(e) => {
                    details.attempts_remaining = max;
                    details.last_verified_at = Some(e.at);
                }
                UserEvent::VerificationFailed(e) => details.attempts_remaining = e.attempts_remaining,
                UserEvent::VerificationLocked(_) => details.attempts_remaining = 0,
                _ => {}
            }
        }
        details
    }
}

/// The verification events of a user of `company_id`, oldest first.
pub async fn verification_events(
    pool: &PgPool,
    vault: &Vault,
    company_id: &str,
    user_id: Uuid,
) -> Result<Vec<UserEvent>, QueryError> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT sequence, event_type, event_version, payload::text, metadata ->> 'company_id' FROM events
          WHERE aggregate_type = 'user' AND aggregate_id = $1
            AND event_type IN ('VerificationQuestionsSet', 'VerificationSucceeded', 'VerificationFailed', 'VerificationLocked')
          ORDER BY sequence",
    )
    .bind(user_id.to_string())
    .fetch_all(pool)
    .await?;
    let keys = vault.keyring(pool, &[user_id]).await?;
    let mut events = Vec::with_capacity(rows.len());
    for (_, event_type, version, payload, company) in rows {
        if company.as_deref() != Some(company_id) {
            continue;
        }
        let (_, payload) = roster_events::upcast::upcast_text("user", &event_type, &version, payload);
        let payload = roster_vault::seal::open_text(payload, keys.get(user_id))?.payload;
        events.push(serde_json::from_str(&payload)?);
    }
    Ok(events)
}

type MemberRow = (String, i64, String, String, String);

/// Sets each account's household as of `instant`.
async fn households_at(
    pool: &PgPool,
    key: Option<&DataKey>,
    doc: &mut UserDoc,
    instant: Timestamp,
) -> Result<(), QueryError> {
    for a in &mut doc.accounts {
        a.household_id = None;
    }
    if doc.accounts.is_empty() {
        return Ok(());
    }
    // Indexed by `events_household_member_user`.
    let rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT aggregate_id, sequence, event_type, event_version, payload::text FROM events
          WHERE aggregate_type = 'household'
            AND coalesce(payload -> 'HouseholdMemberAdded' ->> 'user_id',
                         payload -> 'HouseholdMemberRemoved' ->> 'user_id') = $1
          ORDER BY aggregate_id, sequence",
    )
    .bind(doc.id.to_string())
    .fetch_all(pool)
    .await?;
    // (household, account) → when it was added, while it is a member.
    let mut members: HashMap<(Uuid, String), Option<Timestamp>> = HashMap::new();
    for (household, _, event_type, version, payload) in rows {
        let household: Uuid = household
            .parse()
            .map_err(|_| QueryError::Corrupt(serde::de::Error::custom("household id is not a uuid")))?;
        let (_, payload) = roster_events::upcast::upcast_text("household", &event_type, &version, payload);
        // The member's personal values are this user's: its key opens them.
        let payload = roster_vault::seal::open_text(payload, key)?.payload;
        let (m, added) = match serde_json::from_str::<HouseholdEvent>(&payload)? {
            HouseholdEvent::HouseholdMemberAdded(m) => (m, true),
            HouseholdEvent::HouseholdMemberRemoved(m) => (m, false),
            HouseholdEvent::HouseholdCreated(_) => continue,
        };
        let Some(account_id) = m.account_id.filter(|_| m.at <= instant) else {
            continue;
        };
        members.insert((household, account_id), added.then_some(m.at));
    }
    // The household whose membership was added last, of those it is in.
    for a in &mut doc.accounts {
        a.household_id = members
            .iter()
            .filter(|((_, account), _)| *account == a.account.account_id)
            .filter_map(|((household, _), added)| added.map(|at| (at, *household)))
            .max()
            .map(|(_, household)| household);
    }
    Ok(())
}
