//! The `user_view` read model: one row per user holding the user resource
//! as the API returns it, folded with the same [`UserDoc::fold`] as the
//! aggregate uses. An erased user's events are skipped and its
//! `UserErased` deletes its rows, so a replay never shows it either.
//!
//! One file of about 490 lines: the projector, its folding of a batch per
//! user and its bulk writes (`COPY` for users without a row, an upsert for
//! the others) share one row type.

use crate::engine::{Projector, StoredEvent};
use anyhow::Context;
use lru::LruCache;
use roster_events::household::HouseholdEvent;
use roster_events::user::{UserDoc, UserEvent};
use sqlx::PgConnection;
use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use uuid::Uuid;

pub const NAME: &str = "user_view";

/// Documents the runner keeps between batches.
const CACHED_DOCS: usize = 20_000;

/// The projector. It keeps the documents it last wrote, so a batch reads
/// back from the table only the versions of its users (to check that what
/// it kept is what the table holds) and the documents it does not have.
pub struct UserView {
    docs: Mutex<LruCache<Uuid, UserDoc>>,
    /// During a replay, the users its batches have named so far: any other
    /// has no row in the rebuilt table, so it is neither looked up nor
    /// upserted but copied in.
    rebuilt: Mutex<Option<HashSet<Uuid>>>,
}

impl Default for UserView {
    fn default() -> Self {
        UserView {
            docs: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHED_DOCS).expect("a positive capacity"),
            )),
            rebuilt: Mutex::new(None),
        }
    }
}

impl UserView {
    /// The current documents of `ids`: those kept at the version the table
    /// holds, the others read; and `absent` extended with the `ids` that
    /// have no row. Only the runner holding the leadership writes the
    /// table, and this batch's transaction holds its checkpoint, so a row
    /// absent now is absent until the batch writes it (copied in, not
    /// upserted).
    async fn current(
        &self,
        tx: &mut PgConnection,
        ids: &[Uuid],
        absent: &mut HashSet<Uuid>,
    ) -> anyhow::Result<HashMap<Uuid, UserDoc>> {
        let versions: Vec<(Uuid, i64)> = sqlx::query_as("SELECT id, version FROM user_view WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut *tx)
            .await?;
        if versions.len() < ids.len() {
            let present: HashSet<Uuid> = versions.iter().map(|(id, _)| *id).collect();
            absent.extend(ids.iter().filter(|id| !present.contains(id)));
        }
        let mut docs = HashMap::with_capacity(versions.len());
        let mut missing = Vec::new();
        {
            let mut kept = self
                .docs
                .lock()
                .map_err(|_| anyhow::anyhow!("user_view cache poisoned"))?;
            for (id, version) in versions {
                match kept.pop(&id) {
                    Some(doc) if doc.version == version as u64 => {
                        docs.insert(id, doc);
                    }
                    _ => missing.push(id),
                }
            }
        }
        if !missing.is_empty() {
            let rows: Vec<(Uuid, sqlx::types::Json<UserDoc>)> =
                sqlx::query_as("SELECT id, doc FROM user_view WHERE id = ANY($1)")
                    .bind(&missing)
                    .fetch_all(&mut *tx)
                    .await?;
            docs.extend(rows.into_iter().map(|(id, d)| (id, d.0)));
        }
        Ok(docs)
    }

    /// Of `ids`, those that certainly have no row without looking (a replay
    /// that has not named them yet); all of them count as named from now
    /// on, before anything is written.
    fn absent(&self, ids: &[Uuid]) -> anyhow::Result<HashSet<Uuid>> {
        let mut rebuilt = self
            .rebuilt
            .lock()
            .map_err(|_| anyhow::anyhow!("user_view rebuild set poisoned"))?;
        let Some(named) = rebuilt.as_mut() else {
            return Ok(HashSet::new());
        };
        Ok(ids.iter().copied().filter(|id| named.insert(*id)).collect())
    }

    fn keep(&self, docs: HashMap<Uuid, UserDoc>) {
        if let Ok(mut kept) = self.docs.lock() {
            for (id, doc) in docs {
                kept.put(id, doc);
            }
        }
    }
}

impl Projector for UserView {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        // User events fold into their user's document. Household membership
        // (accounts[].household_id) is kept per (household, account) in
        // `user_view_memberships`, folded from each household's own stream,
        // and read back into the documents last: the result does not depend
        // on how user and household events interleave.
        let mut users: Vec<(Uuid, &StoredEvent)> = Vec::with_capacity(events.len());
        let mut memberships = Memberships::default();
        for e in events {
            match e.aggregate_type.as_str() {
                "user" => users.push((e.aggregate_id.parse().context("user aggregate id is not a uuid")?, e)),
                "household" => memberships.push(e)?,
                _ => {}
            }
        }
        if users.is_empty() && memberships.is_empty() {
            return Ok(());
        }
        memberships.write(tx).await?;
        let mut ids: Vec<Uuid> = users.iter().map(|(id, _)| *id).collect();
        ids.extend(&memberships.users);
        ids.sort_unstable();
        ids.dedup();
        let mut absent = self.absent(&ids)?;
        ids.retain(|id| !absent.contains(id));
        let mut docs = self.current(tx, &ids, &mut absent).await?;
        // Whose households to read back: users whose memberships changed,
        // and users that gained an account (the fold adds it without one).
        let mut refresh: Vec<Uuid> = memberships.users.clone();
        let mut erased = Vec::new();
        for (id, e) in users {
            if e.erased {
                continue;
            }
            if e.event_type == "UserErased" {
                docs.remove(&id);
                erased.push(id);
                continue;
            }
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
            if matches!(&event, UserEvent::AccountAdded(_))
                || matches!(&event, UserEvent::UserEnrolled(e) if e.account.is_some())
            {
                refresh.push(id);
            }
            docs.insert(id, doc);
        }
        households_into(tx, &mut docs, &refresh).await?;
        write(tx, docs.values(), &absent).await?;
        self.keep(docs);
        if !erased.is_empty() {
            sqlx::query(
                "WITH m AS (DELETE FROM user_view_memberships WHERE user_id = ANY($1))
                 DELETE FROM user_view WHERE id = ANY($1)",
            )
            .bind(&erased)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    fn tables(&self) -> &'static [&'static str] {
        &["user_view", "user_view_memberships"]
    }

    fn forget(&self) {
        if let Ok(mut kept) = self.docs.lock() {
            kept.clear();
        }
        if let Ok(mut rebuilt) = self.rebuilt.lock() {
            *rebuilt = None;
        }
    }

    fn rebuilding(&self) {
        self.forget();
        if let Ok(mut rebuilt) = self.rebuilt.lock() {
            *rebuilt = Some(HashSet::new());
        }
    }

    /// The user's: a document depends only on its user's events and on the
    /// memberships naming that user.
    fn lane(&self, e: &StoredEvent) -> u64 {
        let user = match e.aggregate_type.as_str() {
            "user" => e.aggregate_id.parse::<Uuid>().ok(),
            "household" => match e.decode::<HouseholdEvent>() {
                Ok(HouseholdEvent::HouseholdMemberAdded(m) | HouseholdEvent::HouseholdMemberRemoved(m)) => {
                    Some(m.user_id)
                }
                _ => None,
            },
            _ => None,
        };
        user.map_or(0, |u| {
            let (high, low) = u.as_u64_pair();
            high ^ low
        })
    }
}

/// The membership events of a batch, as rows of `user_view_memberships`.
#[derive(Default)]
struct Memberships {
    households: Vec<Uuid>,
    accounts: Vec<String>,
    companies: Vec<String>,
    users: Vec<Uuid>,
    versions: Vec<i64>,
    members: Vec<bool>,
    positions: Vec<i64>,
}

impl Memberships {
    fn is_empty(&self) -> bool {
        self.households.is_empty()
    }

    fn push(&mut self, e: &StoredEvent) -> anyhow::Result<()> {
        let (m, member) = match e.decode::<HouseholdEvent>()? {
            HouseholdEvent::HouseholdMemberAdded(m) => (m, true),
            HouseholdEvent::HouseholdMemberRemoved(m) => (m, false),
            HouseholdEvent::HouseholdCreated(_) => return Ok(()),
        };
        // An account not named is an erased user's: its `UserErased`
        // deletes all of its memberships.
        let Some(account_id) = m.account_id else { return Ok(()) };
        self.households
            .push(e.aggregate_id.parse().context("household id is not a uuid")?);
        self.accounts.push(account_id);
        self.companies.push(e.metadata.company_id.clone());
        self.users.push(m.user_id);
        self.versions.push(e.sequence);
        self.members.push(member);
        self.positions.push(e.position.0);
        Ok(())
    }

    /// Upserts the rows, keeping per (household, account) the event with
    /// the highest sequence: re-applied or older events change nothing.
    async fn write(&self, tx: &mut PgConnection) -> anyhow::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO user_view_memberships
                 (household_id, account_id, company_id, user_id, version, member, added_position)
             SELECT DISTINCT ON (h, a) h, a, c, u, v, m, p
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::bigint[], $6::bool[], $7::bigint[])
                    AS r(h, a, c, u, v, m, p)
              ORDER BY h, a, v DESC
             ON CONFLICT (household_id, account_id) DO UPDATE SET
                 version = excluded.version, member = excluded.member, user_id = excluded.user_id,
                 added_position = CASE WHEN excluded.member THEN excluded.added_position
                                       ELSE user_view_memberships.added_position END
              WHERE user_view_memberships.version < excluded.version",
        )
        .bind(&self.households)
        .bind(&self.accounts)
        .bind(&self.companies)
        .bind(&self.users)
        .bind(&self.versions)
        .bind(&self.members)
        .bind(&self.positions)
        .execute(tx)
        .await?;
        Ok(())
    }
}

/// Sets the accounts' `household_id` of the users `refresh` names from
/// `user_view_memberships`: the household each is a member of (the latest
/// added, should two claim it for a moment), or none. Other documents keep
/// theirs: no event of theirs in the batch changes it.
async fn households_into(
    tx: &mut PgConnection,
    docs: &mut HashMap<Uuid, UserDoc>,
    refresh: &[Uuid],
) -> anyhow::Result<()> {
    let mut ids: Vec<Uuid> = refresh
        .iter()
        .copied()
        .filter(|id| docs.get(id).is_some_and(|d| !d.accounts.is_empty()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    let rows: Vec<(Uuid, String, Uuid)> = sqlx::query_as(
        "SELECT DISTINCT ON (user_id, account_id) user_id, account_id, household_id
           FROM user_view_memberships
          WHERE user_id = ANY($1) AND member
          ORDER BY user_id, account_id, added_position DESC",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    for id in ids {
        let Some(doc) = docs.get_mut(&id) else { continue };
        for a in &mut doc.accounts {
            a.household_id = rows
                .iter()
                .find(|(u, account, _)| *u == id && *account == a.account.account_id)
                .map(|(_, _, h)| *h);
        }
    }
    Ok(())
}

/// The batch's documents: those of users without a row (`absent`, see
/// [`UserView::current`]) copied in, the others upserted.
async fn write<'a>(
    tx: &mut PgConnection,
    docs: impl Iterator<Item = &'a UserDoc>,
    absent: &HashSet<Uuid>,
) -> anyhow::Result<()> {
    let (mut new, mut rows) = (Rows::default(), Rows::default());
    for d in docs {
        if absent.contains(&d.id) {
            new.push(d)?;
        } else {
            rows.push(d)?;
        }
    }
    rows.write(tx).await?;
    new.copy_in(tx).await
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
        // Stored without its null members (read back as `None`): half the
        // bytes to write, log and read.
        self.bodies.push(roster_events::compact::to_string(d)?);
        Ok(())
    }

    pub(crate) async fn write(&self, tx: &mut PgConnection) -> anyhow::Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO user_view (id, company_id, version, status, parent_user_id, search_name, email_lower, mobile, doc)
             SELECT i, c, v, s, p, n, e, m, d::json
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

    /// Inserts rows known to be absent as one `COPY` (text format): a third
    /// cheaper for Postgres than the upsert's arrays, casts and conflict
    /// checks.
    async fn copy_in(&self, tx: &mut PgConnection) -> anyhow::Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let mut data = Vec::with_capacity(self.bodies.iter().map(|b| b.len() + 200).sum());
        let mut uuid = Uuid::encode_buffer();
        for i in 0..self.ids.len() {
            let version = self.versions[i].to_string();
            let parent = self.parents[i].map(|p| p.hyphenated().to_string());
            let fields = [
                Some(&*self.ids[i].hyphenated().encode_lower(&mut uuid)),
                Some(self.companies[i]),
                Some(version.as_str()),
                Some(self.statuses[i]),
                parent.as_deref(),
                Some(self.names[i].as_str()),
                self.emails[i].as_deref(),
                self.mobiles[i],
                Some(self.bodies[i].as_str()),
            ];
            for (n, field) in fields.into_iter().enumerate() {
                if n > 0 {
                    data.push(b'\t');
                }
                copy_field(&mut data, field);
            }
            data.push(b'\n');
        }
        let mut copy = tx
            .copy_in_raw(
                "COPY user_view (id, company_id, version, status, parent_user_id, search_name, email_lower, mobile, doc)
                 FROM STDIN",
            )
            .await?;
        copy.send(data).await?;
        copy.finish().await?;
        Ok(())
    }
}

/// Appends `value` as a field of `COPY`'s text format: `\N` for none,
/// backslash, tab, newline and carriage return escaped.
fn copy_field(data: &mut Vec<u8>, value: Option<&str>) {
    let Some(value) = value else {
        data.extend_from_slice(b"\\N");
        return;
    };
    let bytes = value.as_bytes();
    let mut from = 0;
    for (at, byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        data.extend_from_slice(&bytes[from..at]);
        data.extend_from_slice(escaped);
        from = at + 1;
    }
    data.extend_from_slice(&bytes[from..]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_fields_escape_what_the_text_format_reads_as_syntax() {
        let mut data = Vec::new();
        super::copy_field(&mut data, Some("a\\b\tc\nd\re \"f\""));
        data.push(b'|');
        super::copy_field(&mut data, None);
        data.push(b'|');
        super::copy_field(&mut data, Some(""));
        assert_eq!(String::from_utf8(data).expect("utf-8"), r#"a\\b\tc\nd\re "f"|\N|"#);
    }
}
