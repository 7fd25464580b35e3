//! Group commit: concurrent commands' one-statement appends share a
//! statement, hence a transaction and a round trip.
//!
//! Commands put their appends in one queue; one writer task takes
//! whatever is queued (up to [`MAX_BATCH`]) while the previous batch
//! commits, so a lone request waits for nothing and a busy service writes
//! many appends per commit. A batch is one `INSERT … UNNEST` statement of
//! every append's events, claims, registrations and idempotency outcomes:
//! all or nothing. When it fails for a reason other than an outage (a claim
//! taken, a stream that moved, two appends of the batch touching one row),
//! each of its appends is written again on its own, so one command's
//! violation or conflict fails only that command, with its own precise
//! error, and the rules hold exactly as for a lone append.
//!
//! One file of about 600 lines: the queue, the batch statement (built here
//! in its variants) and the fallback append by append are one mechanism.

use crate::append::{is_busy, is_unavailable, Append, AppendError, Appended};
use crate::constraints::Constraint;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgExecutor, PgPool, Postgres, Transaction};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Appends per statement at most.
pub const MAX_BATCH: usize = 128;

struct Job {
    append: Append,
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// The queue in front of the writer task.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Starts the writer (a task on a thread of its own); it ends when the
    /// last `Writer` is dropped.
    ///
    /// One writer, not several: a second one would take half of what is
    /// queued while the first writes, so twice the statements for the same
    /// appends (13 % more of Postgres' CPU, docs/benchmarks.md). It writes
    /// through a connection it owns, made like `pool`'s, not one borrowed
    /// from a pool: a pool pings every connection given back to it (a round
    /// trip, and a task to schedule, between any two batches), and a
    /// statement on one of the big pool's connections, which are handed out
    /// in turn, finds that backend's caches cold.
    pub fn start(pool: PgPool) -> Self {
        let own = Own {
            options: (*pool.connect_options())
                .clone()
                .options([("lock_timeout", BATCH_LOCK_TIMEOUT), ("statement_timeout", "15s")]),
            connect_timeout: pool.options().get_acquire_timeout(),
            conn: None,
        };
        let (jobs, queue) = mpsc::unbounded_channel();
        // On a thread of its own: a batch's answer is taken as soon as it
        // arrives, not after whatever HTTP work the service's workers have
        // queued before the writer's task (1.06–1.08, docs/benchmarks.md).
        // The thread ends with the queue, when the last `Writer` is dropped.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the writer's runtime starts");
        std::thread::Builder::new()
            .name("roster-writer".into())
            .spawn(move || runtime.block_on(run(own, pool, queue)))
            .expect("the writer's thread starts");
        Writer { jobs }
    }

    /// Appends through the queue. Runs to completion even if the caller
    /// goes away.
    pub async fn append(&self, append: Append) -> Result<Appended, AppendError> {
        let (reply, answer) = oneshot::channel();
        let gone = || AppendError::Unavailable(Arc::new(sqlx::Error::PoolClosed));
        let queued = Instant::now();
        self.jobs.send(Job { append, reply }).map_err(|_| gone())?;
        let appended = answer.await.map_err(|_| gone())?;
        metrics::histogram!("roster_append_seconds").record(queued.elapsed().as_secs_f64());
        appended
    }
}

async fn run(mut own: Own, pool: PgPool, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let conn = match own.take().await {
            Ok(conn) => conn,
            Err(e) => {
                unavailable(batch, Arc::new(e));
                continue;
            }
        };
        // In a task of its own: should a batch ever panic, its commands get
        // an answer (503) and the writer goes on (on a new connection).
        let pool = pool.clone();
        match tokio::spawn(async move { write(conn, &pool, batch).await }).await {
            Ok(kept) => own.give_back(kept),
            Err(e) => tracing::error!(error = %e, "a batch of appends failed"),
        }
    }
}

/// Answers every command of `batch`: Postgres cannot be reached.
fn unavailable(batch: Vec<Job>, e: Arc<sqlx::Error>) {
    for job in batch {
        let _ = job.reply.send(Err(AppendError::Unavailable(e.clone())));
    }
}

/// The writer's connection: kept from batch to batch, pinged first when
/// it sat idle (a Postgres restart meanwhile is found before a batch is
/// sent on it, as the pools do), made anew after it failed, within the
/// pool's acquire time-out.
struct Own {
    options: PgConnectOptions,
    connect_timeout: Duration,
    conn: Option<(PgConnection, Instant)>,
}

/// A pooled connection idle this long is pinged before it is handed out
/// (`roster::db` sets the pools so); the writer's own likewise before a
/// batch.
pub const PING_WHEN_IDLE: Duration = Duration::from_secs(1);

impl Own {
    async fn take(&mut self) -> sqlx::Result<PgConnection> {
        if let Some((mut conn, used)) = self.conn.take() {
            if used.elapsed() < PING_WHEN_IDLE || conn.ping().await.is_ok() {
                return Ok(conn);
            }
        }
        tokio::time::timeout(self.connect_timeout, PgConnection::connect_with(&self.options))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    /// Keeps `conn` for the next batch (`None`: it failed, make another).
    fn give_back(&mut self, conn: Option<PgConnection>) {
        self.conn = conn.map(|c| (c, Instant::now()));
    }
}

/// Writes one batch on `own` and answers its commands; gives `own` back
/// unless it failed. When the batch must be written append by append, each
/// one is written and answered in a task of its own, which the writer does
/// not wait for: an append that waits for a row (or the time-out of its
/// wait) holds no other append up.
async fn write(mut own: PgConnection, pool: &PgPool, batch: Vec<Job>) -> Option<PgConnection> {
    let all: Vec<&Append> = batch.iter().map(|j| &j.append).collect();
    match together(&mut own, &all).await {
        Together::Done(results) => {
            for (job, result) in batch.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Together::Unavailable(e) => {
            unavailable(batch, e);
            return None;
        }
        Together::OneByOne => {
            for job in batch {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let result = alone(&pool, &job.append).await;
                    let _ = job.reply.send(result);
                });
            }
        }
    }
    Some(own)
}

/// Writes `appends` as one batch (the writer task's step, public so tests
/// can force a batch): one statement for all on `own`; should it fail for
/// another reason than an outage, each append alone, side by side on
/// `pool`. Outcomes in order.
pub async fn write_batch(
    own: &mut PgConnection,
    pool: &PgPool,
    appends: &[Append],
) -> Vec<Result<Appended, AppendError>> {
    let all: Vec<&Append> = appends.iter().collect();
    match together(own, &all).await {
        Together::Done(results) => results,
        Together::Unavailable(e) => all.iter().map(|_| Err(AppendError::Unavailable(e.clone()))).collect(),
        Together::OneByOne => futures::future::join_all(all.iter().map(|a| alone(pool, a))).await,
    }
}

/// What one statement for a whole batch came to.
enum Together {
    /// Every append's outcome, in order.
    Done(Vec<Result<Appended, AppendError>>),
    /// Postgres could not be reached: every append is unavailable, and the
    /// connection is not to be used again.
    Unavailable(Arc<sqlx::Error>),
    /// Refused as a whole: each append is to be written on its own.
    OneByOne,
}

/// How long a batch waits for a row or lock another transaction holds
/// before it gives up and its appends are written one by one (the writer's
/// connection is opened with it, see [`Writer::start`]): a batch is a
/// statement of many commands, and the one of them that waits must not
/// hold the others up for longer.
pub const BATCH_LOCK_TIMEOUT: &str = "200ms";

/// The bounds of an append written on its own (and of a transactional
/// append, `store::append_in_transaction`): a wait for a row or lock
/// longer than `lock_timeout`, or a statement longer than
/// `statement_timeout`, ends the append with [`AppendError::Busy`] (503).
pub const WAIT_LIMITS: &str =
    "SELECT set_config('lock_timeout', '5s', true), set_config('statement_timeout', '15s', true)";

async fn together(own: &mut PgConnection, appends: &[&Append]) -> Together {
    metrics::histogram!("roster_append_batch_size").record(appends.len() as f64);
    let started = Instant::now();
    let inserted = insert(own, appends).await;
    metrics::histogram!("roster_append_batch_seconds").record(started.elapsed().as_secs_f64());
    match inserted {
        Ok(done) => Together::Done(done.into_iter().map(Ok).collect()),
        Err(e) if is_unavailable(&e) => Together::Unavailable(Arc::new(e)),
        // Waited too long for a row: whichever append waits, it waits alone.
        Err(e) if is_busy(&e) => {
            tracing::debug!(error = %e, size = appends.len(), "batch waited too long; appending one by one");
            Together::OneByOne
        }
        Err(e) if appends.len() == 1 => Together::Done(vec![Err(refused(appends[0], e))]),
        Err(e) => {
            tracing::debug!(error = %e, size = appends.len(), "batch refused; appending one by one");
            Together::OneByOne
        }
    }
}

/// One append in a statement and transaction of its own, within
/// [`WAIT_LIMITS`].
async fn alone(pool: &PgPool, append: &Append) -> Result<Appended, AppendError> {
    let mut tx = pool.begin().await?;
    sqlx::query(WAIT_LIMITS).execute(&mut *tx).await?;
    let mut done = insert_rows(&mut *tx, &[append], Constraints::InStatement)
        .await
        .map_err(|e| refused(append, e))?;
    tx.commit().await?;
    Ok(done.remove(0))
}

/// The error of one append written alone: a claim reported taken is that
/// claim's violation.
fn refused(append: &Append, e: sqlx::Error) -> AppendError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(CLAIM_TAKEN) => {
            let kind = db.message();
            append
                .constraints
                .iter()
                .find_map(|c| match c {
                    Constraint::Claim(claim) if claim.kind().as_str() == kind => Some(claim.taken().into()),
                    _ => None,
                })
                .unwrap_or_else(|| e.into())
        }
        _ => e.into(),
    }
}

/// SQLSTATE raised by `roster_claim_taken`.
const CLAIM_TAKEN: &str = "RS001";

/// The appends' rows as columns, for `UNNEST`.
#[derive(Default)]
struct Columns<'a> {
    // events
    types: Vec<&'a str>,
    ids: Vec<String>,
    seqs: Vec<i64>,
    names: Vec<&'a str>,
    versions: Vec<&'a str>,
    payloads: Vec<&'a str>,
    metas: Vec<&'a str>,
    // unique claims
    claim_companies: Vec<&'a str>,
    claim_kinds: Vec<&'static str>,
    claim_values: Vec<String>,
    claim_owners: Vec<Uuid>,
    // new parentless users
    users: Vec<Uuid>,
    user_companies: Vec<&'a str>,
    // new data keys
    key_owners: Vec<Uuid>,
    key_companies: Vec<&'a str>,
    key_wrapped: Vec<&'a [u8]>,
    key_masters: Vec<&'a str>,
    // idempotency outcomes
    clients: Vec<&'a str>,
    keys: Vec<&'a str>,
    committed_types: Vec<&'a str>,
    committed_ids: Vec<String>,
    froms: Vec<i64>,
    tos: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn events(&mut self, a: &'a Append) {
        for (i, e) in a.events.iter().enumerate() {
            self.types.push(a.stream.aggregate_type);
            self.ids.push(a.stream.id.to_string());
            self.seqs.push((a.expected_version + 1 + i as u64) as i64);
            self.names.push(&e.event_type);
            self.versions.push(&e.event_version);
            self.payloads.push(&e.payload);
            self.metas.push(&a.metadata);
        }
        for k in &a.keys {
            self.key_owners.push(k.owner);
            self.key_companies.push(&k.company_id);
            self.key_wrapped.push(&k.wrapped);
            self.key_masters.push(&k.master_id);
        }
    }

    /// The rows of `appends`; their constraints too unless `constraints` is
    /// `Stepped` (a transactional append has applied them already).
    fn of(appends: &[&'a Append], constraints: Constraints) -> Self {
        let mut c = Columns::default();
        let mut claims: Vec<(&'a str, &'static str, String, Uuid)> = Vec::new();
        for a in appends {
            c.events(a);
            let own = match constraints {
                Constraints::InStatement | Constraints::Batched => a.constraints.as_slice(),
                Constraints::Stepped => &[],
            };
            for constraint in own {
                match constraint {
                    Constraint::Claim(claim) => {
                        let (kind, value) = claim.key(&a.claim_key);
                        claims.push((&a.company_id, kind, value, a.stream.id));
                    }
                    Constraint::Register { parent: None } => {
                        c.users.push(a.stream.id);
                        c.user_companies.push(&a.company_id);
                    }
                    other => unreachable!("not a one-statement constraint: {other:?}"),
                }
            }
            if let Some((client, key)) = &a.request {
                c.clients.push(client);
                c.keys.push(key);
                c.committed_types.push(a.stream.aggregate_type);
                c.committed_ids.push(a.stream.id.to_string());
                c.froms.push(a.expected_version as i64 + 1);
                c.tos.push(a.version() as i64);
            }
        }
        // Rows in the order every writer takes them, so that two batches
        // cannot deadlock; ON CONFLICT cannot touch one row twice in a
        // statement (two appends of a batch claiming one value fail it).
        claims.sort();
        claims.dedup();
        for (company, kind, value, owner) in claims {
            c.claim_companies.push(company);
            c.claim_kinds.push(kind);
            c.claim_values.push(value);
            c.claim_owners.push(owner);
        }
        c
    }
}

/// Whether the statement writes the appends' constraints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Constraints {
    /// Claims and registrations are rows of the statement; a claim another
    /// owner holds raises `roster_claim_taken` (naming its kind), one its
    /// owner holds already passes.
    InStatement,
    /// As `InStatement`, but the claims are inserted plainly: a claim
    /// already held, by anyone, refuses the whole statement (a unique
    /// violation), and its appends are then written one by one, each
    /// `InStatement`. For batches of many appends, whose claims are almost
    /// always new: it spares Postgres the `ON CONFLICT` check of every
    /// claim, an index search before the insert's own.
    Batched,
    /// The transaction around the statement applied them step by step.
    Stepped,
}

async fn insert(own: &mut PgConnection, appends: &[&Append]) -> sqlx::Result<Vec<Appended>> {
    // A lone append is written exactly: its error is the command's.
    let constraints = match appends.len() {
        1 => Constraints::InStatement,
        _ => Constraints::Batched,
    };
    insert_rows(own, appends, constraints).await
}

/// The events and idempotency outcomes of appends whose constraints their
/// transaction has applied (see `store::append_in_transaction`), in one
/// statement, in order; returns the position of the last one's last event.
pub(crate) async fn insert_stepped(tx: &mut Transaction<'_, Postgres>, appends: &[&Append]) -> sqlx::Result<i64> {
    let done = insert_rows(&mut **tx, appends, Constraints::Stepped).await?;
    Ok(done.last().map(|d| d.position).unwrap_or_default())
}

/// The parts of a batch's statement besides its events, as bits.
const CLAIMS: usize = 1;
const NEW_USERS: usize = 2;
const DATA_KEYS: usize = 4;
const OUTCOMES: usize = 8;
/// The claims inserted plainly ([`Constraints::Batched`]).
const PLAIN_CLAIMS: usize = 16;

/// The statement for `c`'s rows: only the parts that have rows (an
/// update's batch is the events alone), since every part costs Postgres
/// its planning and executor set-up even when empty. Every variant binds
/// the same parameters; each is prepared once per connection.
fn statement(c: &Columns<'_>, constraints: Constraints) -> &'static str {
    static VARIANTS: LazyLock<Vec<String>> = LazyLock::new(|| (0..32).map(variant).collect());
    let part = |rows: bool, part: usize| if rows { part } else { 0 };
    let claims = !c.claim_values.is_empty();
    &VARIANTS[part(claims, CLAIMS)
        | part(claims && constraints == Constraints::Batched, PLAIN_CLAIMS)
        | part(!c.users.is_empty(), NEW_USERS)
        | part(!c.key_owners.is_empty(), DATA_KEYS)
        | part(!c.clients.is_empty(), OUTCOMES)]
}

/// The statement with the parts named by `parts` besides the events.
///
/// The events come last: their first row takes the log's lock (its
/// `position` default, `roster_next_position()`), which every appender
/// then waits for until this statement's transaction commits. So every
/// other part runs first, where it may wait (on a claim another
/// transaction is inserting) without holding every writer up or waiting
/// while holding what a transactional append is waiting for: the events'
/// rows are filtered by a one-time condition on every other part's
/// result, which Postgres evaluates before it produces the first row.
fn variant(parts: usize) -> String {
    let mut ctes: Vec<&str> = Vec::new();
    let mut before: Vec<&str> = Vec::new();
    if parts & PLAIN_CLAIMS != 0 {
        ctes.push(
            "claimed AS (
             INSERT INTO unique_claims (company_id, kind, value, owner_id)
             SELECT * FROM UNNEST($8::text[], $9::text[], $10::text[], $11::uuid[])
             RETURNING 1
         )",
        );
        before.push("(SELECT count(*) FROM claimed)");
    } else if parts & CLAIMS != 0 {
        ctes.push(
            "wanted AS (
             SELECT * FROM UNNEST($8::text[], $9::text[], $10::text[], $11::uuid[]) AS w(company_id, kind, value, owner_id)
         ), claimed AS (
             INSERT INTO unique_claims (company_id, kind, value, owner_id)
             SELECT company_id, kind, value, owner_id FROM wanted
             ON CONFLICT (company_id, kind, value) DO UPDATE SET owner_id = unique_claims.owner_id
             RETURNING company_id, kind, value, owner_id
         ), taken AS (
             SELECT count(roster_claim_taken(c.kind)) AS n
               FROM claimed c JOIN wanted w USING (company_id, kind, value)
              WHERE c.owner_id <> w.owner_id
         )",
        );
        before.push("(SELECT n FROM taken)");
    }
    if parts & NEW_USERS != 0 {
        ctes.push(
            "registered AS (
             INSERT INTO user_registry (user_id, company_id) SELECT * FROM UNNEST($12::uuid[], $13::text[])
             RETURNING 1
         )",
        );
        before.push("(SELECT count(*) FROM registered)");
    }
    if parts & DATA_KEYS != 0 {
        ctes.push(
            "keyed AS (
             INSERT INTO data_keys (owner_id, company_id, wrapped, master_id)
             SELECT * FROM UNNEST($20::uuid[], $21::text[], $22::bytea[], $23::text[])
             RETURNING 1
         )",
        );
        before.push("(SELECT count(*) FROM keyed)");
    }
    if parts & OUTCOMES != 0 {
        ctes.push(
            "remembered AS (
             UPDATE idempotency_keys k
                SET committed_type = r.t, committed_id = r.i, committed_from = r.f, committed_to = r.l
               FROM UNNEST($14::text[], $15::text[], $16::text[], $17::text[], $18::bigint[], $19::bigint[])
                    AS r(c, k, t, i, f, l)
              WHERE k.client_id = r.c AND k.key = r.k
             RETURNING 1
         )",
        );
        before.push("(SELECT count(*) FROM remembered)");
    }
    let after = if before.is_empty() {
        String::new()
    } else {
        format!(" WHERE {} >= 0", before.join(" + "))
    };
    let mut sql = String::from("WITH ");
    for cte in &ctes {
        sql.push_str(cte);
        sql.push_str(", ");
    }
    sql.push_str(&format!(
        "appended AS (
             INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT a, i, s, t, v, p::json, m::json
               FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
                    AS e(a, i, s, t, v, p, m){after}
             RETURNING aggregate_type, aggregate_id, position
         )
         SELECT aggregate_type, aggregate_id, max(position) FROM appended GROUP BY 1, 2"
    ));
    sql
}

/// The appends as one statement: one round trip and, outside a
/// transaction, atomic all the same. A claim held by another owner makes
/// `roster_claim_taken` raise, and a stream that moved makes the events'
/// primary key refuse: either undoes the whole statement. Returns each
/// append's outcome, in order.
async fn insert_rows<'e>(
    executor: impl PgExecutor<'e>,
    appends: &[&Append],
    constraints: Constraints,
) -> sqlx::Result<Vec<Appended>> {
    let c = Columns::of(appends, constraints);
    let rows: Vec<(String, String, i64)> = sqlx::query_as(statement(&c, constraints))
        .bind(&c.types)
        .bind(&c.ids)
        .bind(&c.seqs)
        .bind(&c.names)
        .bind(&c.versions)
        .bind(&c.payloads)
        .bind(&c.metas)
        .bind(&c.claim_companies)
        .bind(&c.claim_kinds)
        .bind(&c.claim_values)
        .bind(&c.claim_owners)
        .bind(&c.users)
        .bind(&c.user_companies)
        .bind(&c.clients)
        .bind(&c.keys)
        .bind(&c.committed_types)
        .bind(&c.committed_ids)
        .bind(&c.froms)
        .bind(&c.tos)
        .bind(&c.key_owners)
        .bind(&c.key_companies)
        .bind(&c.key_wrapped)
        .bind(&c.key_masters)
        .fetch_all(executor)
        .await?;
    let positions: HashMap<(String, String), i64> = rows.into_iter().map(|(t, i, p)| ((t, i), p)).collect();
    Ok(appends
        .iter()
        .map(|a| Appended {
            version: a.version(),
            position: positions
                .get(&(a.stream.aggregate_type.to_string(), a.stream.id.to_string()))
                .copied()
                .unwrap_or_default(),
        })
        .collect())
}
