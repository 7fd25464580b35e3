//! The event store: postgres-es for reads, our own append for writes.
//!
//! postgres-es opens its own transaction per append and maps every unique
//! violation to one optimistic-lock error. Rules that span aggregates
//! (unique email / external reference / account id per company, parents in
//! the same company) must hold under concurrency with a precise error, so
//! [`EventRepo::persist`] appends the events *and* the write-side
//! constraint rows ([`crate::constraints`]) in one transaction. A failed
//! command therefore leaves no reservation behind, and two racing commands
//! serialise on the constraint row.

use crate::constraints::{self, Claim, Constraint, Violation};
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use roster_events::meta;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Reads through postgres-es; appends through [`EventRepo::append`].
pub struct EventRepo {
    pool: PgPool,
    reads: PostgresEventRepository,
}

impl EventRepo {
    pub fn new(pool: PgPool) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool.clone()),
            pool,
        }
    }

    async fn append(&self, aggregate_type: &str, events: &[SerializedEvent]) -> Result<(), PersistenceError> {
        // One append is one aggregate's events of one request: one owner,
        // one company.
        let Some(first) = events.first() else { return Ok(()) };
        let company = first
            .metadata
            .get(meta::COMPANY_ID)
            .and_then(Value::as_str)
            .unwrap_or_default();
        let owner: Uuid = first
            .aggregate_id
            .parse()
            .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
        let mut all = Vec::new();
        for event in events {
            all.extend(constraints::of(aggregate_type, &event.payload)?);
        }
        if all.iter().all(Constraint::fits_one_statement) {
            return append_in_one_statement(&self.pool, aggregate_type, events, company, owner, &all).await;
        }
        let mut tx = self.pool.begin().await.map_err(connection)?;
        // Every row and lock this append may wait for comes first, in one
        // order all writers share (see `Step`), and the events last: two
        // appends cannot deadlock on claims, and a transaction waits
        // before its first write rather than after it.
        let steps = steps(&mut tx, company, owner, all).await?;
        for step in steps {
            apply(&mut tx, company, owner, step).await?;
        }
        insert_events(&mut tx, aggregate_type, events).await?;
        remember(&mut tx, aggregate_type, events).await?;
        tx.commit().await.map_err(connection)
    }
}

/// The client and idempotency key of the request an append serves.
struct Request<'a> {
    client: Option<&'a str>,
    key: Option<&'a str>,
}

impl<'a> Request<'a> {
    fn of(events: &'a [SerializedEvent]) -> Self {
        let meta = |name| {
            events
                .first()
                .and_then(|e| e.metadata.get(name))
                .and_then(Value::as_str)
        };
        Request {
            client: meta(meta::CLIENT_ID),
            key: meta(meta::IDEMPOTENCY_KEY),
        }
    }
}

/// Records, in the append's own transaction, what the request behind its
/// idempotency key committed (see `src/http/idempotency.rs`): whatever
/// happens after the commit, a retry finds it.
async fn remember(
    tx: &mut Transaction<'_, Postgres>,
    aggregate_type: &str,
    events: &[SerializedEvent],
) -> Result<(), PersistenceError> {
    let (
        Request {
            client: Some(client),
            key: Some(key),
        },
        Some(first),
        Some(last),
    ) = (Request::of(events), events.first(), events.last())
    else {
        return Ok(());
    };
    sqlx::query(
        "UPDATE idempotency_keys SET committed_type = $3, committed_id = $4, committed_from = $5, committed_to = $6
          WHERE client_id = $1 AND key = $2",
    )
    .bind(client)
    .bind(key)
    .bind(aggregate_type)
    .bind(&first.aggregate_id)
    .bind(first.sequence as i64)
    .bind(last.sequence as i64)
    .execute(&mut **tx)
    .await
    .map_err(connection)?;
    Ok(())
}

/// One step of a multi-statement append, in the order [`steps`] sorts them:
/// the company's parent lock, then unique-claim rows by `(kind, value)` (a
/// release before a claim of the same row), then the checks and registry
/// writes that wait for nothing.
#[derive(Debug)]
enum Step {
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
    Then(Constraint),
}

impl Step {
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
async fn steps(
    tx: &mut Transaction<'_, Postgres>,
    company: &str,
    owner: Uuid,
    constraints: Vec<Constraint>,
) -> Result<Vec<Step>, PersistenceError> {
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
        .await
        .map_err(connection)?;
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
        let rank = |s: &Step| match s {
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
    let mut ordered: Vec<Step> = Vec::with_capacity(steps.len());
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

impl Constraint {
    /// Claims and the registration of a parentless user need no lock and no
    /// read: [`append_in_one_statement`] can do them.
    fn fits_one_statement(&self) -> bool {
        matches!(self, Constraint::Claim(_) | Constraint::Register { parent: None })
    }
}

/// The common append — events, claims of unique values, a new user's
/// registry row — as a single statement: one round trip and no explicit
/// transaction, atomic all the same. A claim held by another owner makes
/// `roster_claim_taken` raise, which undoes the whole statement.
async fn append_in_one_statement(
    pool: &PgPool,
    aggregate_type: &str,
    events: &[SerializedEvent],
    company: &str,
    owner: Uuid,
    constraints: &[Constraint],
) -> Result<(), PersistenceError> {
    let request = Request::of(events);
    let columns = Columns::of(events);
    let mut claims: Vec<&Claim> = Vec::new();
    let mut register = false;
    for c in constraints {
        match c {
            // ON CONFLICT cannot touch one row twice in a statement.
            Constraint::Claim(claim) if !claims.iter().any(|x| x.key() == claim.key()) => claims.push(claim),
            Constraint::Register { .. } => register = true,
            _ => {}
        }
    }
    // Rows in the order every writer takes them (see `Step`).
    claims.sort_by_key(|c| c.key());
    let (kinds, values): (Vec<&str>, Vec<String>) = claims.iter().map(|c| c.key()).unzip();
    let result = sqlx::query(
        "WITH appended AS (
             INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT $1, $2, s, t, v, p::json, m::json
               FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u(s, t, v, p, m)
         ), claimed AS (
             INSERT INTO unique_claims (company_id, kind, value, owner_id)
             SELECT $8, k, v, $9 FROM UNNEST($10::text[], $11::text[]) AS c(k, v)
             ON CONFLICT (company_id, kind, value) DO UPDATE SET owner_id = unique_claims.owner_id
             RETURNING kind, owner_id
         ), registered AS (
             INSERT INTO user_registry (user_id, company_id) SELECT $9, $8 WHERE $12
         ), remembered AS (
             UPDATE idempotency_keys SET committed_type = $1, committed_id = $2,
                    committed_from = $3[1], committed_to = $3[array_length($3, 1)]
              WHERE client_id = $13 AND key = $14
         )
         SELECT roster_claim_taken(kind) FROM claimed WHERE owner_id <> $9",
    )
    .bind(aggregate_type)
    .bind(&events[0].aggregate_id)
    .bind(&columns.seqs)
    .bind(&columns.types)
    .bind(&columns.versions)
    .bind(&columns.payloads)
    .bind(&columns.metas)
    .bind(company)
    .bind(owner)
    .bind(&kinds)
    .bind(&values)
    .bind(register)
    .bind(request.client)
    .bind(request.key)
    .execute(pool)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(PersistenceError::OptimisticLockError),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(CLAIM_TAKEN) => {
            let kind = db.message();
            let claim = claims.iter().find(|c| c.kind().as_str() == kind).ok_or_else(|| {
                PersistenceError::UnknownError(format!("unknown claim kind {kind} reported taken").into())
            })?;
            Err(violation(claim.taken()))
        }
        Err(e) => Err(connection(e)),
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

/// SQLSTATE raised by `roster_claim_taken`.
const CLAIM_TAKEN: &str = "RS001";

/// Whether `e` is Postgres giving up on a transaction that raced another
/// (deadlock, serialization failure): the command is retried like an
/// optimistic conflict.
fn is_race(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

fn connection(e: sqlx::Error) -> PersistenceError {
    if is_race(&e) {
        PersistenceError::OptimisticLockError
    } else if is_unavailable(&e) {
        PersistenceError::ConnectionError(Box::new(e))
    } else {
        PersistenceError::UnknownError(Box::new(e))
    }
}

fn violation(v: Violation) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(v))
}

/// The events of one append as columns, for `UNNEST`.
struct Columns<'a> {
    seqs: Vec<i64>,
    types: Vec<&'a str>,
    versions: Vec<&'a str>,
    payloads: Vec<String>,
    metas: Vec<String>,
}

impl<'a> Columns<'a> {
    fn of(events: &'a [SerializedEvent]) -> Self {
        Self {
            seqs: events.iter().map(|e| e.sequence as i64).collect(),
            types: events.iter().map(|e| e.event_type.as_str()).collect(),
            versions: events.iter().map(|e| e.event_version.as_str()).collect(),
            payloads: events.iter().map(|e| e.payload.to_string()).collect(),
            metas: events.iter().map(|e| e.metadata.to_string()).collect(),
        }
    }
}

/// One statement for the whole batch (of one aggregate); a duplicate
/// `(type, id, sequence)` means another command appended first: an
/// optimistic-lock conflict.
async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    aggregate_type: &str,
    events: &[SerializedEvent],
) -> Result<(), PersistenceError> {
    let Some(first) = events.first() else { return Ok(()) };
    let columns = Columns::of(events);
    let result = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT $1, $2, s, t, v, p::json, m::json
           FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u(s, t, v, p, m)",
    )
    .bind(aggregate_type)
    .bind(&first.aggregate_id)
    .bind(&columns.seqs)
    .bind(&columns.types)
    .bind(&columns.versions)
    .bind(&columns.payloads)
    .bind(&columns.metas)
    .execute(&mut **tx)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(PersistenceError::OptimisticLockError),
        Err(e) => Err(connection(e)),
    }
}

async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    company: &str,
    owner: Uuid,
    step: Step,
) -> Result<(), PersistenceError> {
    match step {
        Step::ParentLock => {
            // Serialises every parent link of the company.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('roster.parents.' || $1))")
                .bind(company)
                .execute(&mut **tx)
                .await
                .map_err(connection)?;
        }
        Step::Claim { kind, value, taken } => {
            // A claim already held by the same owner is kept; one held by
            // another owner is a conflict. A racing insert of the same value
            // waits here until the other transaction ends.
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
            .await
            .map_err(connection)?;
            if row != owner {
                return Err(violation(taken));
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
            .await
            .map_err(connection)?;
        }
        Step::Then(Constraint::AccountOwnedBy { account_id, user_id }) => {
            let owned: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM unique_claims
                                 WHERE company_id = $1 AND kind = 'account' AND value = $2 AND owner_id = $3)",
            )
            .bind(company)
            .bind(&account_id)
            .bind(user_id)
            .fetch_one(&mut **tx)
            .await
            .map_err(connection)?;
            if !owned {
                return Err(violation(Violation::AccountNotOwned));
            }
        }
        Step::Then(Constraint::LinkParent(parent)) => {
            // Under the company's parent lock (taken first): the parent
            // exists here, and walking up from it never reaches the user.
            let exists = user_in_company(tx, company, parent).await?;
            if !exists {
                return Err(violation(Violation::ParentNotFound));
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
            .await
            .map_err(connection)?;
            if cycle {
                return Err(violation(Violation::RelationshipCycle));
            }
            set_parent(tx, owner, Some(parent)).await?;
        }
        Step::Then(Constraint::UnlinkParent) => set_parent(tx, owner, None).await?,
        Step::Then(Constraint::Register { parent }) => {
            if let Some(parent) = parent {
                let exists = user_in_company(tx, company, parent).await?;
                if !exists {
                    return Err(violation(Violation::ParentNotFound));
                }
            }
            sqlx::query("INSERT INTO user_registry (user_id, company_id, parent_id) VALUES ($1, $2, $3)")
                .bind(owner)
                .bind(company)
                .bind(parent)
                .execute(&mut **tx)
                .await
                .map_err(connection)?;
        }
        Step::Then(c @ (Constraint::Claim(_) | Constraint::Release(_) | Constraint::ReleaseValue(_))) => {
            unreachable!("claims and releases become their own steps: {c:?}")
        }
    }
    Ok(())
}

/// Whether the user exists in the company (for parent links).
async fn user_in_company(
    tx: &mut Transaction<'_, Postgres>,
    company: &str,
    user: Uuid,
) -> Result<bool, PersistenceError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM user_registry WHERE company_id = $1 AND user_id = $2)")
        .bind(company)
        .bind(user)
        .fetch_one(&mut **tx)
        .await
        .map_err(connection)
}

async fn set_parent(
    tx: &mut Transaction<'_, Postgres>,
    user: Uuid,
    parent: Option<Uuid>,
) -> Result<(), PersistenceError> {
    sqlx::query("UPDATE user_registry SET parent_id = $2 WHERE user_id = $1")
        .bind(user)
        .bind(parent)
        .execute(&mut **tx)
        .await
        .map_err(connection)?;
    Ok(())
}

impl EventRepo {
    /// The aggregate's latest snapshot (postgres-es' `snapshots` table), if
    /// it has one this code can read: one written by an older shape of the
    /// aggregate is ignored (the stream is read instead).
    pub async fn snapshot<A: Aggregate>(&self, aggregate_id: &str) -> Result<Option<(A, usize)>, PersistenceError> {
        let row: Option<(i64, Value)> = sqlx::query_as(
            "SELECT last_sequence, payload::jsonb FROM snapshots
              WHERE aggregate_type = $1 AND aggregate_id = $2
              ORDER BY last_sequence DESC LIMIT 1",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(connection)?;
        Ok(
            row.and_then(|(sequence, payload)| match serde_json::from_value::<A>(payload) {
                Ok(a) => Some((a, sequence as usize)),
                Err(e) => {
                    tracing::warn!(aggregate_id, error = %e, "unreadable snapshot ignored");
                    None
                }
            }),
        )
    }

    /// Replaces the aggregate's snapshot with one at `sequence` (unless a
    /// newer one is there). Snapshots only shorten loads: whichever a racing
    /// writer leaves, the events after it are read on top.
    pub async fn save_snapshot(
        pool: &PgPool,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: usize,
        payload: &Value,
    ) -> sqlx::Result<()> {
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
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence as i64)
        .bind(payload.to_string())
        .execute(pool)
        .await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The aggregate's events after `sequence`, upcast and typed.
    pub async fn events_after<A: Aggregate>(
        &self,
        aggregate_id: &str,
        sequence: usize,
    ) -> Result<Vec<cqrs_es::EventEnvelope<A>>, PersistenceError> {
        let upcasters = upcasters();
        self.reads
            .get_last_events::<A>(aggregate_id, sequence)
            .await?
            .into_iter()
            .map(|mut e| {
                for u in &upcasters {
                    if u.can_upcast(&e.event_type, &e.event_version) {
                        e = u.upcast(e);
                    }
                }
                cqrs_es::EventEnvelope::try_from(e)
            })
            .collect()
    }
}

impl PersistedEventRepository for EventRepo {
    async fn get_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads.get_last_events::<A>(aggregate_id, last_sequence).await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.reads.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        _snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        // The store is configured without snapshots (`new_event_store`).
        self.append(A::TYPE, events).await
    }

    async fn stream_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_all_events::<A>().await
    }
}

impl Claim {
    fn key(&self) -> (&'static str, String) {
        (self.kind().as_str(), self.value())
    }
}

/// The registered upcasters ([`roster_events::upcast`]) in cqrs-es's shape,
/// for the stores that load aggregates.
pub fn upcasters() -> Vec<Box<dyn cqrs_es::persist::EventUpcaster>> {
    roster_events::upcast::REGISTERED
        .iter()
        .map(|u| Box::new(Registered(u)) as Box<dyn cqrs_es::persist::EventUpcaster>)
        .collect()
}

struct Registered(&'static roster_events::upcast::Upcaster);

impl cqrs_es::persist::EventUpcaster for Registered {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        self.0.event_type == event_type && self.0.from == event_version
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(inner) = event.payload.get_mut(&event.event_type) {
            *inner = (self.0.rewrite)(inner.take());
        }
        event.event_version = self.0.to.to_string();
        event
    }
}
