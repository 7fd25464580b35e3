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
//! Reads are plain: a stream's events after a sequence, upcast and typed,
//! and the latest snapshot, read through postgres-es' snapshot store.

use crate::bus::Meta;
use crate::constraints::{Claim, Constraint, Violation};
use crate::writer::Writer;
use cqrs_es::persist::PersistedEventRepository;
use cqrs_es::{Aggregate, DomainEvent};
use postgres_es::PostgresEventRepository;
use roster_events::meta;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use std::sync::Arc;
use uuid::Uuid;

/// One aggregate's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stream {
    pub aggregate_type: &'static str,
    pub id: Uuid,
}

/// An event ready to store: its name, version and payload as JSON text.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
}

impl NewEvent {
    pub fn of<E: DomainEvent>(event: &E) -> Self {
        NewEvent {
            event_type: event.event_type(),
            event_version: event.event_version(),
            // Derived `Serialize` of string-keyed data cannot fail.
            payload: serde_json::to_string(event).expect("events serialise"),
        }
    }
}

/// One append, owned (it may wait in the writer's queue).
#[derive(Debug, Clone)]
pub struct Append {
    pub stream: Stream,
    /// The stream's version the events follow (0: a new stream).
    pub expected_version: u64,
    pub events: Vec<NewEvent>,
    pub constraints: Vec<Constraint>,
    pub company_id: String,
    /// Every event's metadata, as JSON text.
    pub metadata: String,
    /// The client and idempotency key of the request: the append records on
    /// that key what it committed (see `src/http/idempotency.rs`), so that
    /// whatever happens after the commit, a retry finds it.
    pub request: Option<(String, String)>,
}

impl Append {
    pub fn new(
        stream: Stream,
        expected_version: u64,
        events: Vec<NewEvent>,
        constraints: Vec<Constraint>,
        origin: &Meta,
    ) -> Self {
        let mut metadata = serde_json::Map::with_capacity(5);
        let mut put = |k: &str, v: &str| metadata.insert(k.to_string(), Value::String(v.to_string()));
        put(meta::COMPANY_ID, &origin.company_id);
        put(meta::CLIENT_ID, &origin.client_id);
        put(meta::REQUEST_ID, &origin.request_id);
        put(meta::OCCURRED_AT, &origin.at.to_string());
        if let Some(k) = &origin.idempotency_key {
            put(meta::IDEMPOTENCY_KEY, k);
        }
        Append {
            stream,
            expected_version,
            events,
            constraints,
            company_id: origin.company_id.clone(),
            metadata: Value::Object(metadata).to_string(),
            request: origin
                .idempotency_key
                .as_ref()
                .map(|k| (origin.client_id.clone(), k.clone())),
        }
    }

    /// The stream's version after this append.
    pub fn version(&self) -> u64 {
        self.expected_version + self.events.len() as u64
    }

    /// Claims and the registration of a parentless user need no lock and no
    /// read: the one-statement (batched) append can do them.
    pub(crate) fn fits_one_statement(&self) -> bool {
        self.constraints
            .iter()
            .all(|c| matches!(c, Constraint::Claim(_) | Constraint::Register { parent: None }))
    }
}

/// What an append wrote: the stream's new version and the global position
/// of its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub version: u64,
    pub position: i64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// Another command appended to the stream first (or Postgres gave up on
    /// a transaction that raced another): load again and retry.
    #[error("the stream moved past the expected version")]
    Conflict,
    #[error(transparent)]
    Violation(#[from] Violation),
    /// Postgres is out of reach for now: the client may retry.
    #[error("event store unavailable: {0}")]
    Unavailable(Arc<sqlx::Error>),
    #[error("event store error: {0}")]
    Internal(Arc<sqlx::Error>),
}

impl From<sqlx::Error> for AppendError {
    fn from(e: sqlx::Error) -> Self {
        if is_race(&e) || matches!(&e, sqlx::Error::Database(db) if db.is_unique_violation()) {
            AppendError::Conflict
        } else if is_unavailable(&e) {
            AppendError::Unavailable(Arc::new(e))
        } else {
            AppendError::Internal(Arc::new(e))
        }
    }
}

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
        error: serde_json::Error,
    },
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
}

impl EventRepo {
    /// Starts the group-commit writer on `pool` (needs a Tokio runtime).
    pub fn new(pool: PgPool) -> Self {
        Self {
            snapshots: Arc::new(PostgresEventRepository::new(pool.clone())),
            writer: Writer::start(pool.clone()),
            pool,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
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

    /// The stream's events after `sequence`, upcast and typed, with their
    /// sequences.
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
        rows.into_iter()
            .map(|(sequence, event_type, version, payload)| {
                let (_, payload) = roster_events::upcast::upcast_text(A::TYPE, &event_type, &version, payload);
                serde_json::from_str(&payload)
                    .map(|event| (sequence as u64, event))
                    .map_err(|error| ReadError::Unreadable {
                        aggregate_id: id,
                        sequence: sequence as u64,
                        error,
                    })
            })
            .collect()
    }

    /// The aggregate's latest snapshot, if it has one this code can read.
    /// Snapshots only shorten loads: one written by an older shape of the
    /// aggregate, or one that cannot be read now, is ignored (the stream is
    /// read instead, and reports a real outage).
    pub async fn snapshot<A: Aggregate>(&self, id: Uuid) -> Option<(A, u64)> {
        let snapshot = match self.snapshots.get_snapshot::<A>(&id.to_string()).await {
            Ok(s) => s?,
            Err(e) => {
                tracing::debug!(aggregate_id = %id, error = %e, "snapshot not read");
                return None;
            }
        };
        match serde_json::from_value::<A>(snapshot.aggregate) {
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
    pub async fn save_snapshot(&self, stream: Stream, sequence: u64, payload: &Value) -> sqlx::Result<()> {
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
    let (company, owner) = (append.company_id.as_str(), append.stream.id);
    for step in steps(&mut tx, company, owner, &append.constraints).await? {
        apply(&mut tx, company, owner, step).await?;
    }
    // The events and the idempotency outcome: the group-commit statement,
    // without the constraints the steps above applied.
    let position = crate::writer::insert_stepped(&mut tx, append).await?;
    tx.commit().await?;
    Ok(Appended {
        version: append.version(),
        position,
    })
}

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
async fn steps<'a>(
    tx: &mut Transaction<'_, Postgres>,
    company: &str,
    owner: Uuid,
    constraints: &'a [Constraint],
) -> Result<Vec<Step<'a>>, AppendError> {
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
                let (kind, value) = claim.key();
                steps.push(Step::Release { kind, value });
            }
            Constraint::Claim(claim) => {
                let (kind, value) = claim.key();
                steps.push(Step::Claim {
                    kind,
                    value,
                    taken: claim.taken(),
                });
            }
            c @ Constraint::LinkParent(_) => {
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
    company: &str,
    owner: Uuid,
    step: Step<'_>,
) -> Result<(), AppendError> {
    match step {
        Step::ParentLock => {
            // Serialises every parent link of the company.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('roster.parents.' || $1))")
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
            let owned: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM unique_claims
                                 WHERE company_id = $1 AND kind = 'account' AND value = $2 AND owner_id = $3)",
            )
            .bind(company)
            .bind(account_id)
            .bind(user_id)
            .fetch_one(&mut **tx)
            .await?;
            if !owned {
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
        Step::Then(c @ (Constraint::Claim(_) | Constraint::Release(_) | Constraint::ReleaseValue(_))) => {
            unreachable!("claims and releases become their own steps: {c:?}")
        }
    }
    Ok(())
}

/// Whether the user exists in the company (for parent links).
async fn user_in_company(tx: &mut Transaction<'_, Postgres>, company: &str, user: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM user_registry WHERE company_id = $1 AND user_id = $2)")
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
    pub(crate) fn key(&self) -> (&'static str, String) {
        (self.kind().as_str(), self.value())
    }
}

/// Whether `e` means the database is out of reach for now (down,
/// restarting, shutting down, out of connections) rather than a bug: the
/// client gets 503 and may retry.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-03: shutdown or starting up;
            // 53300: too many connections; 25006: read-only (a failover).
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300" | "25006")
        }),
        _ => false,
    }
}

/// Whether `e` is Postgres giving up on a transaction that raced another
/// (deadlock, serialization failure): the command is retried like an
/// optimistic conflict.
fn is_race(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}
