//! The event store: typed appends, stream reads, snapshots.
//!
//! An append is a stream's new events *and* the write-side constraints they
//! carry ([`crate::constraints`]: unique email / external reference /
//! account id per company, parents in the same company, no cycles), in one
//! atomic write: a failed command leaves no reservation behind, and two
//! racing commands serialise on the constraint row. The outcome is typed:
//! [`Appended`] or an [`AppendError`] saying whether the stream moved on
//! ([`AppendError::Conflict`]), a rule would break
//! ([`AppendError::Violation`]), or Postgres is out of reach.
//!
//! Two ways to write, chosen by the constraints:
//!
//! - the common append (events, claims of unique values, a parentless new
//!   user) is one statement, and concurrent ones share it: they go through
//!   the group-commit [`Writer`](crate::writer);
//! - an append that must lock or read first (a parent link, a release of a
//!   claim, an account-ownership check) runs its own transaction here, with
//!   every row it may wait for taken in one order all writers share.
//!
//! Reads are plain: a stream's events after a sequence, upcast, opened
//! (their personal values unsealed, see `roster-vault`) and typed, and the
//! latest snapshot, read through postgres-es' snapshot store.
//!
//! Personal data is sealed before it gets here (`runner.rs`); what this file
//! adds is the keys: a new user's data key is stored with its first events,
//! and unique values are claimed by their keyed hash, never as themselves.

use crate::append::{is_unavailable, Append, AppendError, Appended, NewEvent, Stream};
use crate::constraints::{Claim, Constraint, Violation};
use crate::erasure::{Cascaded, Tail};
use crate::writer::Writer;
use cqrs_es::persist::PersistedEventRepository;
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use roster_events::meta;
use roster_events::Timestamp;
use roster_vault::{ClaimKey, Vault};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Reads of the store failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("event store unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("event store error: {0}")]
    Internal(sqlx::Error),
    #[error("unreadable event {sequence} of {aggregate_id}: {error}")]
    Unreadable {
        aggregate_id: Uuid,
        sequence: u64,
        error: String,
    },
    #[error(transparent)]
    Keys(#[from] roster_vault::VaultError),
}

impl From<sqlx::Error> for ReadError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            ReadError::Unavailable(e)
        } else {
            ReadError::Internal(e)
        }
    }
}

/// The store, shared by every aggregate type's write side.
#[derive(Clone)]
pub struct EventRepo {
    pool: PgPool,
    snapshots: Arc<PostgresEventRepository>,
    writer: Writer,
    vault: Arc<Vault>,
}

impl EventRepo {
    /// Starts the group-commit writer on `pool` (needs a Tokio runtime).
    pub fn new(pool: PgPool, vault: Arc<Vault>) -> Self {
        Self {
            snapshots: Arc::new(PostgresEventRepository::new(pool.clone())),
            writer: Writer::start(pool.clone()),
            pool,
            vault,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The registry's word on `user` in `company_id`: `None` if it is no
    /// user of that company, else whether it is erased. Always current.
    pub async fn registered(&self, company_id: &str, user: Uuid) -> Result<Option<bool>, ReadError> {
        Ok(
            sqlx::query_scalar(
                "SELECT erased_at IS NOT NULL FROM user_registry WHERE user_id = $1 AND company_id = $2",
            )
            .bind(user)
            .bind(company_id)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// The first of `users` the registry marks erased (of any company).
    pub async fn first_erased(&self, users: &[Uuid]) -> Result<Option<Uuid>, ReadError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM user_registry WHERE user_id = ANY($1) AND erased_at IS NOT NULL LIMIT 1",
        )
        .bind(users)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The household each of `accounts` (keyed hashes of account ids) is a
    /// member of in `company_id`, as the membership claims say, in order.
    pub async fn households_of(&self, company_id: &str, accounts: &[String]) -> Result<Vec<Option<Uuid>>, ReadError> {
        let rows: Vec<(String, Uuid)> = sqlx::query_as(
            "SELECT value, owner_id FROM unique_claims
              WHERE company_id = $1 AND kind = 'household_account' AND value = ANY($2)",
        )
        .bind(company_id)
        .bind(accounts)
        .fetch_all(&self.pool)
        .await?;
        Ok(accounts
            .iter()
            .map(|hash| rows.iter().find(|(v, _)| v == hash).map(|(_, h)| *h))
            .collect())
    }

    /// Appends `events` to `stream` at `expected_version`, with the
    /// constraints they carry, atomically.
    pub async fn append(&self, append: Append) -> Result<Appended, AppendError> {
        if append.events.is_empty() {
            return Ok(Appended {
                version: append.expected_version,
                position: 0,
            });
        }
        if append.fits_one_statement() {
            return self.writer.append(append).await;
        }
        append_in_transaction(&self.pool, &append).await
    }

    /// The stream's events after `sequence`, upcast, opened and typed, with
    /// their sequences. An event whose owner is erased comes with its
    /// personal values `null`, or not at all when it cannot be typed so (a
    /// user's events before its `UserErased`, which folds to the same
    /// state whatever came before).
    pub async fn events_after<A: Aggregate>(&self, id: Uuid, sequence: u64) -> Result<Vec<(u64, A::Event)>, ReadError> {
        let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT sequence, event_type, event_version, payload::text FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
              ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(id.to_string())
        .bind(sequence as i64)
        .fetch_all(&self.pool)
        .await?;
        let stream = id.to_string();
        let mut keys: HashMap<Uuid, Option<roster_vault::DataKey>> = HashMap::new();
        let mut events = Vec::with_capacity(rows.len());
        for (sequence, event_type, version, payload) in rows {
            let unreadable = |error: String| ReadError::Unreadable {
                aggregate_id: id,
                sequence: sequence as u64,
                error,
            };
            let (_, payload) = roster_events::upcast::upcast_text(A::TYPE, &event_type, &version, payload);
            let (payload, erased) = if roster_vault::seal::is_sealed(&payload) {
                let owner =
                    roster_vault::seal::owner_of(A::TYPE, &stream, &payload).map_err(|e| unreadable(e.to_string()))?;
                let key = match owner {
                    Some(owner) => match keys.get(&owner) {
                        Some(key) => key.clone(),
                        None => {
                            let key = self.vault.key(&self.pool, owner).await?;
                            keys.insert(owner, key.clone());
                            key
                        }
                    },
                    None => None,
                };
                let opened =
                    roster_vault::seal::open_text(payload, key.as_ref()).map_err(|e| unreadable(e.to_string()))?;
                (opened.payload, opened.erased)
            } else {
                (payload, false)
            };
            match serde_json::from_str(&payload) {
                Ok(event) => events.push((sequence as u64, event)),
                Err(_) if erased => {}
                Err(e) => return Err(unreadable(e.to_string())),
            }
        }
        Ok(events)
    }

    /// The aggregate's latest snapshot, if it has one this code can read.
    /// Snapshots only shorten loads: one written by an older shape of the
    /// aggregate, or one that cannot be read now, is ignored (the stream is
    /// read instead, and reports a real outage).
    /// A snapshot sealed under the aggregate's own data key (`sealed`)
    /// opens only while that key exists.
    pub async fn snapshot<A: Aggregate>(&self, id: Uuid, sealed: bool) -> Option<(A, u64)> {
        let snapshot = match self.snapshots.get_snapshot::<A>(&id.to_string()).await {
            Ok(s) => s?,
            Err(e) => {
                tracing::debug!(aggregate_id = %id, error = %e, "snapshot not read");
                return None;
            }
        };
        let state = if sealed {
            let key = self.vault.key(&self.pool, id).await.ok().flatten()?;
            match roster_vault::seal::open_value(&snapshot.aggregate, &key) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(aggregate_id = %id, error = %e, "sealed snapshot ignored");
                    return None;
                }
            }
        } else {
            snapshot.aggregate
        };
        match serde_json::from_value::<A>(state) {
            Ok(a) => Some((a, snapshot.current_snapshot as u64)),
            Err(e) => {
                tracing::warn!(aggregate_id = %id, error = %e, "unreadable snapshot ignored");
                None
            }
        }
    }

    /// Replaces the aggregate's snapshot with one at `sequence` (unless a
    /// newer one is there). Whichever a racing writer leaves, the events
    /// after it are read on top.
    pub async fn save_snapshot(
        &self,
        stream: Stream,
        sequence: u64,
        payload: &Value,
        sealed: bool,
    ) -> Result<(), ReadError> {
        let payload = match sealed {
            true => match self.vault.key(&self.pool, stream.id).await? {
                Some(key) => roster_vault::seal::seal_value(payload, &key),
                None => return Ok(()),
            },
            false => payload.clone(),
        };
        sqlx::query(
            "WITH older AS (
                 DELETE FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2 AND last_sequence < $3
             )
             INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
             SELECT $1, $2, $3, $3, $4::json
              WHERE NOT EXISTS (SELECT 1 FROM snapshots
                                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND last_sequence >= $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(stream.aggregate_type)
        .bind(stream.id.to_string())
        .bind(sequence as i64)
        .bind(payload.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// An append that must lock or read before it writes, in its own
/// transaction. Every row and lock it may wait for comes first, in one
/// order all writers share (see [`Step`]), and the events last: two appends
/// cannot deadlock on claims, and a transaction waits before its first
/// write rather than after it.
async fn append_in_transaction(pool: &PgPool, append: &Append) -> Result<Appended, AppendError> {
    let mut tx = pool.begin().await?;
    sqlx::query(crate::writer::WAIT_LIMITS).execute(&mut *tx).await?;
    let mut cascade = None;
    for step in steps(&mut tx, append).await? {
        apply(&mut tx, append, step, &mut cascade).await?;
    }
    // Events last, from here to the commit under the log's lock (their
    // positions' default takes it): an erasure's events on other streams,
    // then the append's events and idempotency outcome, in one group-commit
    // statement without the constraints the steps above applied.
    let cascaded = match &cascade {
        Some(c) => c.appends(&mut tx, append).await?,
        None => Vec::new(),
    };
    let all: Vec<&Append> = cascaded.iter().chain([append]).collect();
    let position = crate::writer::insert_stepped(&mut tx, &all).await?;
    tx.commit().await?;
    Ok(Appended {
        version: append.version(),
        position,
    })
}

/// The class (first key of the two-key advisory locks) of the per-company
/// parent locks. Classes keep lock families apart: a company's lock and a
/// subscriber's (`roster_projections::engine::SUBSCRIBER_LOCKS`) can never
/// be the same lock, whatever their names hash to; the one-key locks (the
/// log's, the erasure's) are a space of their own.
pub const PARENT_LOCKS: i32 = 1;

/// One step of a transactional append, in the order [`steps`] sorts them:
/// the company's parent lock, then unique-claim rows by `(kind, value)` (a
/// release before a claim of the same row), then the checks and registry
/// writes that wait for nothing.
#[derive(Debug)]
enum Step<'a> {
    ParentLock,
    Release {
        kind: &'static str,
        value: String,
    },
    Claim {
        kind: &'static str,
        value: String,
        taken: Violation,
    },
    Then(&'a Constraint),
}

impl Step<'_> {
    /// The claim row a step touches, for sorting.
    fn row(&self) -> Option<(&'static str, &str)> {
        match self {
            Step::Release { kind, value } | Step::Claim { kind, value, .. } => Some((kind, value)),
            _ => None,
        }
    }
}

/// The constraints as ordered steps. A release by kind is resolved to the
/// owner's current value (only the owner's own appends change it).
async fn steps<'a>(tx: &mut Transaction<'_, Postgres>, append: &'a Append) -> Result<Vec<Step<'a>>, AppendError> {
    let (company, owner, constraints) = (&append.company_id, append.stream.id, &append.constraints);
    let mut steps = Vec::with_capacity(constraints.len() + 1);
    let released: Vec<&'static str> = constraints
        .iter()
        .filter_map(|c| match c {
            Constraint::Release(kind) => Some(kind.as_str()),
            _ => None,
        })
        .collect();
    if !released.is_empty() {
        let held: Vec<(String, String)> = sqlx::query_as(
            "SELECT kind, value FROM unique_claims WHERE company_id = $1 AND owner_id = $2 AND kind = ANY($3)",
        )
        .bind(company)
        .bind(owner)
        .bind(&released)
        .fetch_all(&mut **tx)
        .await?;
        for (kind, value) in held {
            if let Some(kind) = released.iter().find(|k| **k == kind) {
                steps.push(Step::Release { kind, value });
            }
        }
    }
    for c in constraints {
        match c {
            Constraint::Release(_) => {}
            Constraint::ReleaseValue(claim) => {
                let (kind, value) = claim.key(&append.claim_key);
                steps.push(Step::Release { kind, value });
            }
            Constraint::Claim(claim) => {
                let (kind, value) = claim.key(&append.claim_key);
                steps.push(Step::Claim {
                    kind,
                    value,
                    taken: claim.taken(),
                });
            }
            // Erasing unlinks the user's children; a new child waits for it.
            c @ (Constraint::LinkParent(_) | Constraint::Register { parent: Some(_) } | Constraint::Erase { .. }) => {
                steps.push(Step::ParentLock);
                steps.push(Step::Then(c));
            }
            c => steps.push(Step::Then(c)),
        }
    }
    steps.sort_by(|a, b| {
        let rank = |s: &Step<'_>| match s {
            Step::ParentLock => 0,
            Step::Release { .. } | Step::Claim { .. } => 1,
            Step::Then(_) => 2,
        };
        rank(a)
            .cmp(&rank(b))
            .then_with(|| a.row().cmp(&b.row()))
            .then_with(|| matches!(a, Step::Claim { .. }).cmp(&matches!(b, Step::Claim { .. })))
    });
    // The same claim twice is one; releasing and re-claiming one row (an
    // email changed only in case) keeps it.
    let mut ordered: Vec<Step<'a>> = Vec::with_capacity(steps.len());
    for step in steps {
        match (ordered.last(), &step) {
            (Some(prev @ Step::Claim { .. }), Step::Claim { .. }) if prev.row() == step.row() => continue,
            (Some(prev @ Step::Release { .. }), Step::Claim { .. }) if prev.row() == step.row() => {
                ordered.pop();
            }
            _ => {}
        }
        ordered.push(step);
    }
    Ok(ordered)
}

async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    append: &Append,
    step: Step<'_>,
    cascade: &mut Option<Cascade>,
) -> Result<(), AppendError> {
    let (company, owner) = (append.company_id.as_str(), append.stream.id);
    match step {
        Step::ParentLock => {
            // Serialises every parent link of the company.
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext('roster.parents.' || $2))")
                .bind(PARENT_LOCKS)
                .bind(company)
                .execute(&mut **tx)
                .await?;
        }
        Step::Claim { kind, value, taken } => {
            // A claim already held by the same owner is kept; one held by
            // another owner is a violation. A racing insert of the same
            // value waits here until the other transaction ends.
            let row = sqlx::query_scalar::<_, Uuid>(
                "INSERT INTO unique_claims (company_id, kind, value, owner_id) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (company_id, kind, value) DO UPDATE SET owner_id = unique_claims.owner_id
                 RETURNING owner_id",
            )
            .bind(company)
            .bind(kind)
            .bind(&value)
            .bind(owner)
            .fetch_one(&mut **tx)
            .await?;
            if row != owner {
                return Err(taken.into());
            }
        }
        Step::Release { kind, value } => {
            sqlx::query(
                "DELETE FROM unique_claims WHERE company_id = $1 AND kind = $2 AND value = $3 AND owner_id = $4",
            )
            .bind(company)
            .bind(kind)
            .bind(&value)
            .bind(owner)
            .execute(&mut **tx)
            .await?;
        }
        Step::Then(Constraint::AccountOwnedBy { account_id, user_id }) => {
            // Locked, so that erasing the owner (which deletes the claim)
            // waits for this append or this append for the erasure.
            let (kind, value) = Claim::Account(account_id.clone()).key(&append.claim_key);
            let owned: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM unique_claims
                  WHERE company_id = $1 AND kind = $2 AND value = $3 AND owner_id = $4
                    FOR SHARE",
            )
            .bind(company)
            .bind(kind)
            .bind(value)
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?;
            if owned.is_none() {
                return Err(Violation::AccountNotOwned.into());
            }
        }
        Step::Then(Constraint::LinkParent(parent)) => {
            // Under the company's parent lock (taken first): the parent
            // exists here, and walking up from it never reaches the user.
            if !user_in_company(tx, company, *parent).await? {
                return Err(Violation::ParentNotFound.into());
            }
            let cycle: bool = sqlx::query_scalar(
                "WITH RECURSIVE up(id) AS (
                     SELECT $1::uuid
                     UNION
                     SELECT r.parent_id FROM user_registry r JOIN up ON r.user_id = up.id
                      WHERE r.parent_id IS NOT NULL)
                 SELECT EXISTS (SELECT 1 FROM up WHERE id = $2)",
            )
            .bind(parent)
            .bind(owner)
            .fetch_one(&mut **tx)
            .await?;
            if cycle {
                return Err(Violation::RelationshipCycle.into());
            }
            set_parent(tx, owner, Some(*parent)).await?;
        }
        Step::Then(Constraint::UnlinkParent) => set_parent(tx, owner, None).await?,
        Step::Then(Constraint::Register { parent }) => {
            if let Some(parent) = parent {
                if !user_in_company(tx, company, *parent).await? {
                    return Err(Violation::ParentNotFound.into());
                }
            }
            sqlx::query("INSERT INTO user_registry (user_id, company_id, parent_id) VALUES ($1, $2, $3)")
                .bind(owner)
                .bind(company)
                .bind(parent)
                .execute(&mut **tx)
                .await?;
        }
        Step::Then(Constraint::Erase { at }) => *cascade = Some(erase(tx, append, *at).await?),
        Step::Then(c @ (Constraint::Claim(_) | Constraint::Release(_) | Constraint::ReleaseValue(_))) => {
            unreachable!("claims and releases become their own steps: {c:?}")
        }
    }
    Ok(())
}

/// The rest of an erasure, in the transaction of the user's `UserErased`
/// (CONTRACT §3 "Erasure"): its children unlinked, its claims released, its
/// accounts out of their households, its data key destroyed, its snapshots
/// and the idempotency records of its requests deleted. The registry keeps
/// the id, marked erased. Returns the streams its events go to, which
/// [`Cascade::appends`] makes with the user's own, last.
async fn erase(tx: &mut Transaction<'_, Postgres>, append: &Append, at: Timestamp) -> Result<Cascade, AppendError> {
    let (company, user) = (append.company_id.as_str(), append.stream.id);
    let children: Vec<Uuid> =
        sqlx::query_scalar("UPDATE user_registry SET parent_id = NULL WHERE parent_id = $1 RETURNING user_id")
            .bind(user)
            .fetch_all(&mut **tx)
            .await?;
    // Account claims and their households' claims hash the same value.
    let released: Vec<Option<String>> = sqlx::query_scalar(
        "DELETE FROM unique_claims WHERE company_id = $1 AND owner_id = $2 RETURNING CASE WHEN kind = 'account' THEN value END",
    )
    .bind(company)
    .bind(user)
    .fetch_all(&mut **tx)
    .await?;
    let accounts: Vec<String> = released.into_iter().flatten().collect();
    let mut households: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM unique_claims WHERE company_id = $1 AND kind = 'household_account' AND value = ANY($2)
         RETURNING owner_id",
    )
    .bind(company)
    .bind(&accounts)
    .fetch_all(&mut **tx)
    .await?;
    households.sort();
    households.dedup();
    // Tests hold the erasure here, its locks taken, to race it.
    fail::fail_point!("store::erasing");
    sqlx::query("UPDATE user_registry SET erased_at = $2, parent_id = NULL WHERE user_id = $1")
        .bind(user)
        .bind(at.as_datetime())
        .execute(&mut **tx)
        .await?;
    // After this commits, the publisher hands over nothing sealed under it.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(roster_vault::ERASURE_LOCK)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM data_keys WHERE owner_id = $1")
        .bind(user)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM snapshots WHERE aggregate_type = 'user' AND aggregate_id = $1")
        .bind(user.to_string())
        .execute(&mut **tx)
        .await?;
    // Every stored response that names the user, but this request's own.
    let (client, key) = append.request.clone().unwrap_or_default();
    sqlx::query(FORGET_RESPONSES)
        .bind(user)
        .bind(client)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(Cascade {
        user,
        at,
        children,
        households,
    })
}

/// The erasure's clean-up of stored responses (`$1` the user, `$2` and `$3`
/// the erasure's own client and key): those of requests that committed to
/// the user's stream, and those whose body names it, each found through an
/// index.
pub const FORGET_RESPONSES: &str = "DELETE FROM idempotency_keys
     WHERE ((committed_type = 'user' AND committed_id = $1::text) OR subjects @> ARRAY[$1::uuid])
       AND NOT (client_id = $2 AND key = $3)";

/// Who an erasure touches besides the user: its children and the
/// households holding one of its accounts, found under the erasure's locks.
/// [`crate::erasure::cascade`] decides the events.
#[derive(Debug)]
struct Cascade {
    user: Uuid,
    at: Timestamp,
    children: Vec<Uuid>,
    households: Vec<Uuid>,
}

impl Cascade {
    /// One append per stream, after its last event, with `append`'s
    /// metadata (the instant of each event). Read under the log's lock,
    /// taken first: no other transaction can append meanwhile, so what it
    /// reads of each stream is final.
    async fn appends(&self, tx: &mut Transaction<'_, Postgres>, append: &Append) -> sqlx::Result<Vec<Append>> {
        if self.children.is_empty() && self.households.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query("SELECT roster_lock_log()").execute(&mut **tx).await?;
        let children = tails(tx, "user", &self.children).await?;
        let households = tails(tx, "household", &self.households).await?;
        let mut metadata: serde_json::Map<String, Value> = serde_json::from_str(&append.metadata).unwrap_or_default();
        Ok(crate::erasure::cascade(self.user, self.at, &children, &households)
            .into_iter()
            .map(|c| {
                let (stream, after, event, at) = match &c {
                    Cascaded::Unlinked { child, after, event } => (
                        Stream {
                            aggregate_type: "user",
                            id: *child,
                        },
                        *after,
                        NewEvent::sealed("user", event, None),
                        event.at(),
                    ),
                    Cascaded::Removed {
                        household,
                        after,
                        event,
                    } => (
                        Stream {
                            aggregate_type: "household",
                            id: *household,
                        },
                        *after,
                        NewEvent::sealed("household", event, None),
                        event.at(),
                    ),
                };
                metadata.insert(meta::OCCURRED_AT.to_string(), Value::String(at.to_string()));
                Append {
                    stream,
                    expected_version: after,
                    events: vec![event],
                    constraints: Vec::new(),
                    claim_key: append.claim_key.clone(),
                    keys: Vec::new(),
                    company_id: append.company_id.clone(),
                    metadata: Value::Object(metadata.clone()).to_string(),
                    request: None,
                }
            })
            .collect())
    }
}

/// Each stream's last sequence and instant, in `ids`' order.
async fn tails(tx: &mut Transaction<'_, Postgres>, aggregate_type: &str, ids: &[Uuid]) -> sqlx::Result<Vec<Tail>> {
    let texts: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let last: Vec<(i64, Option<String>)> = sqlx::query_as(
        "SELECT coalesce(l.sequence, 0), l.at
           FROM UNNEST($2::text[]) WITH ORDINALITY AS s(i, n)
           LEFT JOIN LATERAL (
                SELECT sequence, payload -> event_type ->> 'at' AS at FROM events
                 WHERE aggregate_type = $1 AND aggregate_id = s.i
                 ORDER BY sequence DESC LIMIT 1) l ON true
          ORDER BY s.n",
    )
    .bind(aggregate_type)
    .bind(&texts)
    .fetch_all(&mut **tx)
    .await?;
    Ok(ids
        .iter()
        .zip(last)
        .map(|(id, (sequence, at))| Tail {
            id: *id,
            sequence: sequence as u64,
            at: at.and_then(|t| serde_json::from_value::<Timestamp>(Value::String(t)).ok()),
        })
        .collect())
}

/// Whether the user exists, not erased, in the company (for parent links).
async fn user_in_company(tx: &mut Transaction<'_, Postgres>, company: &str, user: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM user_registry WHERE company_id = $1 AND user_id = $2 AND erased_at IS NULL)",
    )
    .bind(company)
    .bind(user)
    .fetch_one(&mut **tx)
    .await
}

async fn set_parent(tx: &mut Transaction<'_, Postgres>, user: Uuid, parent: Option<Uuid>) -> sqlx::Result<()> {
    sqlx::query("UPDATE user_registry SET parent_id = $2 WHERE user_id = $1")
        .bind(user)
        .bind(parent)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Claim {
    /// The claim's row: its kind and the keyed hash of its value.
    pub(crate) fn key(&self, claim_key: &ClaimKey) -> (&'static str, String) {
        let kind = self.kind().as_str();
        (kind, claim_key.hash(&self.value()))
    }
}
