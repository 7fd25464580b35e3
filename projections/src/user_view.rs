//! The `user_view` read model: one row per user holding the user resource
//! as the API returns it, folded with the same [`UserDoc::fold`] as the
//! aggregate uses.

use crate::engine::{Projector, StoredEvent};
use anyhow::Context;
use roster_events::household::HouseholdEvent;
use roster_events::user::{UserDoc, UserEvent};
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

pub const NAME: &str = "user_view";

#[derive(Debug, Default, Clone, Copy)]
pub struct UserView;

impl Projector for UserView {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        // User events, and household membership (accounts[].household_id).
        let mut changes: Vec<(Uuid, Change<'_>)> = Vec::with_capacity(events.len());
        for e in events {
            match e.aggregate_type.as_str() {
                "user" => {
                    let id = e.aggregate_id.parse().context("user aggregate id is not a uuid")?;
                    changes.push((id, Change::User(e)));
                }
                "household" => {
                    let household: Uuid = e.aggregate_id.parse().context("household id is not a uuid")?;
                    match e.decode::<HouseholdEvent>()? {
                        HouseholdEvent::HouseholdMemberAdded(m) => {
                            changes.push((m.user_id, Change::Household(m.account_id, Some(household))))
                        }
                        HouseholdEvent::HouseholdMemberRemoved(m) => {
                            changes.push((m.user_id, Change::Household(m.account_id, None)))
                        }
                        HouseholdEvent::HouseholdCreated(_) => {}
                    }
                }
                _ => {}
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<Uuid> = Vec::with_capacity(changes.len());
        for (id, _) in &changes {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        let rows: Vec<(Uuid, sqlx::types::Json<UserDoc>)> =
            sqlx::query_as("SELECT id, doc FROM user_view WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
        let mut docs: HashMap<Uuid, UserDoc> = rows.into_iter().map(|(id, d)| (id, d.0)).collect();
        for (id, change) in changes {
            let e = match change {
                Change::User(e) => e,
                Change::Household(account_id, household) => {
                    let doc = docs
                        .get_mut(&id)
                        .with_context(|| format!("household member {id} has no user"))?;
                    for a in doc.accounts.iter_mut().filter(|a| a.account.account_id == account_id) {
                        a.household_id = household;
                    }
                    continue;
                }
            };
            let current = docs.remove(&id);
            if current.as_ref().is_some_and(|d| d.version >= e.sequence as u64) {
                // Already applied (a batch replayed after a crash).
                docs.insert(id, current.expect("checked above"));
                continue;
            }
            let event: UserEvent = e
                .decode()
                .with_context(|| format!("cannot read {} {} of user {id}", e.event_type, e.sequence))?;
            let doc = UserDoc::fold(current, &event)
                .with_context(|| format!("{} {} of user {id} has no enrollment", e.event_type, e.sequence))?;
            docs.insert(id, doc);
        }
        upsert(tx, docs.values()).await
    }

    fn tables(&self) -> &'static [&'static str] {
        &["user_view"]
    }
}

enum Change<'a> {
    User(&'a StoredEvent),
    /// An account of the user joined (`Some`) or left a household.
    Household(String, Option<Uuid>),
}

/// One statement for the whole batch.
async fn upsert<'a>(tx: &mut PgConnection, docs: impl Iterator<Item = &'a UserDoc>) -> anyhow::Result<()> {
    let mut rows = Rows::default();
    for d in docs {
        rows.push(d)?;
    }
    rows.write(tx).await
}

/// `user_view` rows as column arrays, for one `INSERT … SELECT FROM UNNEST`.
#[derive(Default)]
pub(crate) struct Rows<'a> {
    ids: Vec<Uuid>,
    companies: Vec<&'a str>,
    versions: Vec<i64>,
    statuses: Vec<&'static str>,
    parents: Vec<Option<Uuid>>,
    names: Vec<String>,
    emails: Vec<Option<String>>,
    mobiles: Vec<Option<&'a str>>,
    bodies: Vec<String>,
}

impl<'a> Rows<'a> {
    pub(crate) fn push(&mut self, d: &'a UserDoc) -> anyhow::Result<()> {
        let p = &d.profile;
        self.ids.push(d.id);
        self.companies.push(d.company_id.as_str());
        self.versions.push(d.version as i64);
        self.statuses.push(d.status.as_str());
        self.parents.push(d.parent_user_id);
        let name = format!(
            "{} {}",
            p.first_name.as_deref().unwrap_or_default(),
            p.last_name.as_deref().unwrap_or_default()
        );
        self.names.push(name.trim().to_lowercase());
        self.emails.push(p.email.as_ref().map(|e| e.to_lowercase()));
        self.mobiles.push(p.mobile.as_deref());
        self.bodies.push(serde_json::to_string(d)?);
        Ok(())
    }

    pub(crate) async fn write(&self, tx: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO user_view (id, company_id, version, status, parent_user_id, search_name, email_lower, mobile, doc)
             SELECT i, c, v, s, p, n, e, m, d::jsonb
               FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::uuid[], $6::text[], $7::text[],
                           $8::text[], $9::text[]) AS u(i, c, v, s, p, n, e, m, d)
             ON CONFLICT (id) DO UPDATE SET
                 company_id = excluded.company_id, version = excluded.version, status = excluded.status,
                 parent_user_id = excluded.parent_user_id, search_name = excluded.search_name,
                 email_lower = excluded.email_lower, mobile = excluded.mobile, doc = excluded.doc",
        )
        .bind(&self.ids)
        .bind(&self.companies)
        .bind(&self.versions)
        .bind(&self.statuses)
        .bind(&self.parents)
        .bind(&self.names)
        .bind(&self.emails)
        .bind(&self.mobiles)
        .bind(&self.bodies)
        .execute(tx)
        .await?;
        Ok(())
    }
}
