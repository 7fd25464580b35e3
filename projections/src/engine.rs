//! The catch-up engine shared by every projector and the publisher.
//!
//! Readers page by `position`, the event's place in commit order: an
//! append takes its positions under the log's lock and holds it until it
//! commits (`roster_next_position()`, migration `commit_order`), so the
//! positions a reader can see are always a prefix of the log and
//! `position > checkpoint` skips nothing. No snapshot watermark: nothing
//! outside Roster's own appends can hold a reader back.
//!
//! Every subscriber sees events opened: personal values unsealed with the
//! owners' keys as they are at the read (`roster-vault`), and events of an
//! erased user marked [`StoredEvent::erased`], their personal values `null`.

use chrono::{DateTime, Utc};
use roster_vault::seal;
use roster_vault::Vault;
use sqlx::{Connection, PgConnection, PgPool, Row};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The channel the `events` trigger notifies on every append.
pub const CHANNEL: &str = "roster_events";

/// How long an idle runner sleeps when no notification arrives.
const POLL: Duration = Duration::from_millis(500);
/// How long a runner waits before retrying after an error or as a standby.
const BACKOFF: Duration = Duration::from_secs(1);

/// A place in the store's commit order: the `position` of an event (0:
/// before the first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub i64);

/// One row of the `events` table.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub position: Position,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The stored payload as JSON text (`{"UserEnrolled": {...}}`), at its
    /// current version. Kept as text: most readers decode it straight into
    /// their typed event ([`StoredEvent::decode`]). Personal values in it
    /// are opened (see `open`).
    pub payload: String,
    pub metadata: Metadata,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    /// Its user is erased: its personal values are `null`, and its data is
    /// shown to no one (the audit trail and Kafka show `null`). Never set on
    /// the `UserErased` event itself.
    pub erased: bool,
}

/// What subscribers read of an event's metadata ([`roster_events::meta`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub company_id: String,
    pub occurred_at: Option<String>,
}

impl StoredEvent {
    /// The payload as a typed event.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.payload)
    }
}

/// Which events a subscriber reads. The store still pages through every
/// event in commit order (the checkpoint moves past the others), but only
/// these are sent and decoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reads {
    /// `None`: every aggregate type.
    pub aggregate_types: Option<&'static [&'static str]>,
    /// `None`: every event type.
    pub event_types: Option<&'static [&'static str]>,
}

impl Reads {
    pub const ALL: Reads = Reads {
        aggregate_types: None,
        event_types: None,
    };
}

/// A page of the store: the events a subscriber reads, and where the page
/// ends (past events it does not read, too).
#[derive(Debug, Default)]
pub struct Page {
    pub events: Vec<StoredEvent>,
    pub end: Option<Position>,
    /// Events the page went through, read or not.
    pub scanned: usize,
}

/// Every event after `after`, in commit order, up to `limit`.
pub async fn read_after(
    conn: &mut PgConnection,
    vault: &Vault,
    after: Position,
    limit: i64,
) -> anyhow::Result<Vec<StoredEvent>> {
    Ok(read_page(conn, vault, Keys::Fresh, after, limit, Reads::ALL)
        .await?
        .events)
}

/// Where a reader takes the owners' keys from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// As stored now: what leaves the service (Kafka) after an erasure
    /// must not be opened with a key kept from before it. The page's query
    /// reads each owner's erasure mark from `user_registry`; the keys of
    /// owners not erased come from the process's cache (a key does not
    /// change while its owner lives), the others are read. Its caller
    /// holds erasure off (the shared [`roster_vault::ERASURE_LOCK`]) from
    /// before the read until it has handed the events over.
    Fresh,
    /// The process's key cache first. A projector may: should it open an
    /// event of a user erased meanwhile, that user's `UserErased`, later in
    /// its order, deletes what it wrote.
    Kept,
}

/// The page query, with an `erased` column and the join that fills it
/// (two texts, so that projectors' pages are planned as cheaply as before).
macro_rules! page_query {
    ($erased:literal, $join:literal) => {
        concat!(
            "SELECT position, wanted, aggregate_type, aggregate_id,
                    sequence, event_type, event_version,
                    CASE WHEN wanted THEN payload::text END AS payload,
                    CASE WHEN wanted THEN metadata::text END AS metadata, event_id, recorded_at, ",
            $erased,
            " AS erased
               FROM events
                    CROSS JOIN LATERAL (SELECT ($3::text[] IS NULL OR aggregate_type = ANY($3))
                                           AND ($4::text[] IS NULL OR event_type = ANY($4)) AS wanted) w ",
            $join,
            " WHERE position > $1
              ORDER BY position
              LIMIT $2"
        )
    };
}

/// The next `limit` events after `after`, in commit order; of those, the ones `reads` names come with their data.
pub async fn read_page(
    conn: &mut PgConnection,
    vault: &Vault,
    keys: Keys,
    after: Position,
    limit: i64,
    reads: Reads,
) -> anyhow::Result<Page> {
    let sql = match keys {
        Keys::Fresh => page_query!(
            "x.erased",
            // Whether the event's owner is erased: a probe of a partial
            // index that holds only erased users.
            "LEFT JOIN LATERAL (
                 SELECT true AS erased FROM user_registry r
                  WHERE wanted AND event_type <> 'UserErased' AND r.erased_at IS NOT NULL
                    AND r.user_id = CASE aggregate_type
                          WHEN 'user' THEN aggregate_id::uuid
                          WHEN 'household' THEN (payload -> event_type ->> 'user_id')::uuid END) x ON true"
        ),
        Keys::Kept => page_query!("NULL::bool", ""),
    };
    let rows = sqlx::query(sql)
        .bind(after.0)
        .bind(limit)
        .bind(reads.aggregate_types)
        .bind(reads.event_types)
        .fetch_all(&mut *conn)
        .await?;
    let mut page = Page {
        events: Vec::with_capacity(rows.len()),
        end: None,
        scanned: rows.len(),
    };
    for r in &rows {
        let position = Position(r.try_get("position")?);
        page.end = Some(position);
        if !r.try_get::<bool, _>("wanted")? {
            continue;
        }
        // Every reader sees events at their current version.
        let aggregate_type: String = r.try_get("aggregate_type")?;
        let event_type: String = r.try_get("event_type")?;
        let stored_version: &str = r.try_get("event_version")?;
        let (event_version, payload) =
            roster_events::upcast::upcast_text(&aggregate_type, &event_type, stored_version, r.try_get("payload")?);
        page.events.push(StoredEvent {
            position,
            aggregate_type,
            aggregate_id: r.try_get("aggregate_id")?,
            sequence: r.try_get("sequence")?,
            event_type,
            event_version,
            payload,
            metadata: serde_json::from_str(r.try_get("metadata")?).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            event_id: r.try_get("event_id")?,
            recorded_at: r.try_get("recorded_at")?,
            erased: r.try_get::<Option<bool>, _>("erased")?.unwrap_or(false),
        });
    }
    open(conn, vault, &mut page.events).await?;
    Ok(page)
}

/// Opens the events' personal values with their owners' keys (those not
/// kept read in one query); marks the events of users whose key is gone as
/// erased. An event already marked erased (by the page's query) is not
/// opened, whatever key is kept.
async fn open(conn: &mut PgConnection, vault: &Vault, events: &mut [StoredEvent]) -> anyhow::Result<()> {
    let mut owned = Vec::with_capacity(events.len());
    for e in events.iter() {
        let sealed = seal::is_sealed(&e.payload);
        // Every user event's owner is looked up, sealed values or not: an
        // erased user's events all show nothing.
        let owner = match e.aggregate_type.as_str() {
            "user" if e.event_type == "UserErased" => None,
            _ if sealed || e.aggregate_type == "user" => {
                seal::owner_of(&e.aggregate_type, &e.aggregate_id, &e.payload)?
            }
            _ => None,
        };
        owned.push((owner, sealed));
    }
    let mut owners: Vec<Uuid> = owned.iter().filter_map(|(o, _)| *o).collect();
    if owners.is_empty() {
        return Ok(());
    }
    owners.sort();
    owners.dedup();
    let keys = vault.kept_keyring(&mut *conn, &owners).await?;
    for (e, (owner, sealed)) in events.iter_mut().zip(owned) {
        let Some(owner) = owner else { continue };
        e.erased |= keys.is_erased(owner);
        if !sealed {
            continue;
        }
        let key = keys.get(owner).filter(|_| !e.erased);
        let opened = seal::open_text(std::mem::take(&mut e.payload), key)
            .map_err(|err| anyhow::anyhow!("event {} of {} {}: {err}", e.sequence, e.aggregate_type, e.aggregate_id))?;
        e.payload = opened.payload;
        e.erased |= opened.erased;
    }
    Ok(())
}

/// A subscriber's checkpoint; `lock` holds its row until the transaction
/// ends, which serialises batches even if two runners ever overlapped.
pub async fn checkpoint(conn: &mut PgConnection, name: &str, lock: bool) -> sqlx::Result<Position> {
    let sql = if lock {
        "SELECT position FROM subscriber_checkpoints WHERE name = $1 FOR UPDATE"
    } else {
        "SELECT position FROM subscriber_checkpoints WHERE name = $1"
    };
    let row: Option<i64> = sqlx::query_scalar(sql).bind(name).fetch_optional(conn).await?;
    Ok(Position(row.unwrap_or_default()))
}

pub async fn save_checkpoint(conn: &mut PgConnection, name: &str, at: Position) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO subscriber_checkpoints (name, position) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()",
    )
    .bind(name)
    .bind(at.0)
    .execute(conn)
    .await?;
    Ok(())
}

/// Events a subscriber has still to handle (counted up to `cap`).
pub async fn lag(pool: &PgPool, name: &str, cap: i64) -> sqlx::Result<i64> {
    let at = checkpoint(&mut *pool.acquire().await?, name, false).await?;
    sqlx::query_scalar(
        "SELECT count(*) FROM (
            SELECT 1 FROM events WHERE position > $1 LIMIT $2) s",
    )
    .bind(at.0)
    .bind(cap)
    .fetch_one(pool)
    .await
}

/// Whether a subscriber has handled the event `(aggregate_type,
/// aggregate_id, sequence)` of the company `company_id`; `None` when the
/// company has no such event (another company's is answered the same).
pub async fn has_applied(
    pool: &PgPool,
    name: &str,
    company_id: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT c.position >= e.position
                            FROM subscriber_checkpoints c WHERE c.name = $1), false)
           FROM events e
          WHERE e.aggregate_type = $2 AND e.aggregate_id = $3 AND e.sequence = $4
            AND e.metadata ->> 'company_id' = $5",
    )
    .bind(name)
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(sequence)
    .bind(company_id)
    .fetch_optional(pool)
    .await
}

/// Builds one read model from events. `apply` runs inside the batch's
/// transaction, together with the checkpoint update, and must tolerate an
/// event it has already applied (keep the last applied sequence per
/// aggregate).
pub trait Projector: Send + Sync + 'static {
    /// The subscriber name: checkpoint row, lock key, `replay --projection`.
    fn name(&self) -> &'static str;

    fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The read-model tables it writes (rebuilt side by side by [`replay`]).
    fn tables(&self) -> &'static [&'static str];

    /// The events [`Projector::apply`] gets (others only move the checkpoint).
    fn reads(&self) -> Reads {
        Reads::ALL
    }

    /// What `apply` remembered may no longer match the tables: a batch did
    /// not commit, or this runner just took over (another may have written
    /// meanwhile).
    fn forget(&self) {}

    /// [`replay`] made empty copies of the tables and applies to them:
    /// until the swap only this projector writes them, so a row it has not
    /// written is not there. [`Projector::forget`] ends it.
    fn rebuilding(&self) {}

    /// The lane [`replay`] applies `e` on. Lanes apply their events side by
    /// side, each in its own order and transactions, so events whose rows
    /// depend on one another must share a lane (`user_view`: everything
    /// about one user). The default puts every event on one lane.
    fn lane(&self, _e: &StoredEvent) -> u64 {
        0
    }
}

/// Applies one batch and advances the checkpoint, atomically. Returns the
/// number of events it went through (a full page means more may wait).
pub async fn run_batch<P: Projector>(
    conn: &mut PgConnection,
    vault: &Vault,
    projector: &P,
    limit: i64,
) -> anyhow::Result<usize> {
    let result = try_batch(conn, vault, projector, limit).await;
    if result.is_err() {
        projector.forget();
    }
    result
}

async fn try_batch<P: Projector>(
    conn: &mut PgConnection,
    vault: &Vault,
    projector: &P,
    limit: i64,
) -> anyhow::Result<usize> {
    let mut tx = conn.begin().await?;
    let at = checkpoint(&mut tx, projector.name(), true).await?;
    let page = read_page(&mut tx, vault, Keys::Kept, at, limit, projector.reads()).await?;
    let Some(end) = page.end else {
        tx.commit().await?;
        return Ok(0);
    };
    if !page.events.is_empty() {
        projector.apply(&mut tx, &page.events).await?;
    }
    save_checkpoint(&mut tx, projector.name(), end).await?;
    tx.commit().await?;
    Ok(page.scanned)
}

/// Rebuilds a projection from position zero beside the live one, then swaps.
///
/// 1. Empty copies of the projector's tables are made in a schema of their
///    own, with their primary and unique keys only.
/// 2. Every event is applied to them, a batch per short transaction, with
///    `search_path` pointing there (the projector's SQL names its tables
///    unqualified), commits not waiting for the WAL flush (a crash loses
///    only the rebuild, which starts over). Each batch is split over
///    [`LANES`] connections by [`Projector::lane`], so that one lane's
///    inserts overlap another's decoding and folding. The API keeps reading
///    the live tables meanwhile.
/// 3. The other indexes are built once, over the full tables (much cheaper
///    than maintaining them row by row), several side by side.
/// 4. One short transaction locks the live checkpoint (the live runner
///    waits), applies the events appended since, swaps the tables and moves
///    the checkpoint.
///
/// Calls `progress` with the size of each batch.
pub async fn replay<P: Projector>(
    pool: &PgPool,
    vault: &Arc<Vault>,
    projector: &Arc<P>,
    batch: i64,
    progress: impl FnMut(usize),
) -> anyhow::Result<u64> {
    let replayed = rebuild(pool, vault, projector, batch, progress).await;
    projector.forget();
    replayed
}

async fn rebuild<P: Projector>(
    pool: &PgPool,
    vault: &Arc<Vault>,
    projector: &Arc<P>,
    batch: i64,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<u64> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    sqlx::query("SET synchronous_commit = off").execute(&mut conn).await?;
    let tables = projector.tables();
    // Where the new tables are built, and where the replaced ones go until dropped.
    let rebuild = format!("roster_rebuild_{}", projector.name());
    let retired = format!("roster_retired_{}", projector.name());
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {rebuild} CASCADE; CREATE SCHEMA {rebuild}"
    ))
    .execute(&mut conn)
    .await?;
    let mut deferred_indexes = Vec::new();
    for table in tables {
        sqlx::raw_sql(&format!(
            "CREATE TABLE {rebuild}.{table} (LIKE public.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        ))
        .execute(&mut conn)
        .await?;
        let keys: Vec<(String, String)> = sqlx::query_as(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
              WHERE conrelid = ('public.' || $1)::regclass AND contype IN ('p', 'u')",
        )
        .bind(table)
        .fetch_all(&mut conn)
        .await?;
        for (name, def) in &keys {
            sqlx::raw_sql(&format!("ALTER TABLE {rebuild}.{table} ADD CONSTRAINT {name} {def}"))
                .execute(&mut conn)
                .await?;
        }
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT indexdef FROM pg_indexes
              WHERE schemaname = 'public' AND tablename = $1 AND indexname <> ALL($2)",
        )
        .bind(table)
        .bind(keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
        .fetch_all(&mut conn)
        .await?;
        let on_live = format!(" ON public.{table} ");
        let on_rebuild = format!(" ON {rebuild}.{table} ");
        deferred_indexes.extend(indexes.into_iter().map(|def| def.replacen(&on_live, &on_rebuild, 1)));
    }

    projector.rebuilding();

    // The next page is read (on a connection of its own) while the current
    // one is applied: reading and decoding overlap the inserts.
    let (pages, mut next) = tokio::sync::mpsc::channel::<anyhow::Result<Page>>(2);
    let mut reader = PgConnection::connect_with(&pool.connect_options()).await?;
    let reads = projector.reads();
    let reader_vault = vault.clone();
    let read_ahead = tokio::spawn(async move {
        let mut after = Position::default();
        loop {
            let page = read_page(&mut reader, &reader_vault, Keys::Kept, after, batch, reads).await;
            let end = page.as_ref().ok().and_then(|p| p.end);
            if pages.send(page).await.is_err() {
                return;
            }
            match end {
                Some(end) => after = end,
                None => return,
            }
        }
    });
    let started = std::time::Instant::now();
    let mut lanes = Vec::with_capacity(LANES);
    let mut senders = Vec::with_capacity(LANES);
    for _ in 0..LANES {
        let (send, batches) = tokio::sync::mpsc::channel::<Vec<StoredEvent>>(2);
        let mut lane = PgConnection::connect_with(&pool.connect_options()).await?;
        sqlx::query("SET synchronous_commit = off").execute(&mut lane).await?;
        lanes.push(tokio::spawn(apply_lane(
            lane,
            projector.clone(),
            rebuild.clone(),
            batches,
        )));
        senders.push(send);
    }
    let mut at = Position::default();
    let mut total = 0u64;
    'pages: while let Some(page) = next.recv().await {
        let page = page?;
        let Some(end) = page.end else { break };
        let mut split: Vec<Vec<StoredEvent>> = (0..LANES).map(|_| Vec::new()).collect();
        for e in page.events {
            split[(projector.lane(&e) % LANES as u64) as usize].push(e);
        }
        for (lane, events) in senders.iter().zip(split) {
            // A lane that stopped has failed: its error is returned below.
            if !events.is_empty() && lane.send(events).await.is_err() {
                break 'pages;
            }
        }
        at = end;
        total += page.scanned as u64;
        progress(page.scanned);
    }
    drop(senders);
    for lane in lanes {
        lane.await??;
    }
    drop(next);
    read_ahead.await?;
    let loaded = started.elapsed();
    build_indexes(pool, deferred_indexes).await?;
    let indexed = started.elapsed();

    // The swap is acknowledged only once it is durable.
    sqlx::query("SET synchronous_commit = on").execute(&mut conn).await?;
    let mut tx = conn.begin().await?;
    checkpoint(&mut tx, projector.name(), true).await?;
    loop {
        let n = apply_rebuild(&mut tx, vault, &**projector, &rebuild, &mut at, batch).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
        progress(n);
    }
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {retired} CASCADE; CREATE SCHEMA {retired}"
    ))
    .execute(&mut *tx)
    .await?;
    for table in tables {
        sqlx::raw_sql(&format!(
            "ALTER TABLE public.{table} SET SCHEMA {retired}; ALTER TABLE {rebuild}.{table} SET SCHEMA public"
        ))
        .execute(&mut *tx)
        .await?;
    }
    save_checkpoint(&mut tx, projector.name(), at).await?;
    tx.commit().await?;
    let swapped = started.elapsed();
    sqlx::raw_sql(&format!("DROP SCHEMA {retired} CASCADE; DROP SCHEMA {rebuild} CASCADE"))
        .execute(&mut conn)
        .await?;
    tracing::info!(
        projection = projector.name(),
        events = total,
        load_s = loaded.as_secs_f64(),
        indexes_s = (indexed - loaded).as_secs_f64(),
        swap_s = (swapped - indexed).as_secs_f64(),
        "replayed"
    );
    Ok(total)
}

/// Lanes a rebuild's batches are applied on side by side, so that the
/// client's decoding, folding and serialising overlap Postgres' inserts.
/// Measured on two cores (docs/benchmarks.md): one lane 34–37 s for the
/// 1M-event `user_view` bench, two 28–32 s, three 24–32 s, four 28–29 s.
const LANES: usize = 3;

/// One lane of a rebuild: each batch it is sent, in its own transaction.
async fn apply_lane<P: Projector>(
    mut conn: PgConnection,
    projector: Arc<P>,
    schema: String,
    mut batches: tokio::sync::mpsc::Receiver<Vec<StoredEvent>>,
) -> anyhow::Result<()> {
    while let Some(events) = batches.recv().await {
        let mut tx = conn.begin().await?;
        apply_page(&mut tx, &*projector, &schema, &events).await?;
        // Tests hold a lane here, its transaction open and written to, to
        // show that a replay holds no reader back.
        fail::fail_point!("engine::rebuilding");
        tx.commit().await?;
    }
    Ok(())
}

/// Connections that build a rebuild's deferred indexes side by side (each
/// index is built by one backend, its sort mostly on one core).
const INDEX_BUILDERS: usize = 2;

/// Builds `indexes`, [`INDEX_BUILDERS`] at a time, the slowest kind (GIN)
/// first, each connection with room to sort in memory.
async fn build_indexes(pool: &PgPool, mut indexes: Vec<String>) -> anyhow::Result<()> {
    // Taken from the end: GIN last in the queue.
    indexes.sort_by_key(|def| def.contains(" USING gin "));
    let queue = Arc::new(std::sync::Mutex::new(indexes));
    let mut builders = tokio::task::JoinSet::new();
    for _ in 0..INDEX_BUILDERS {
        builders.spawn(build_from(pool.clone(), queue.clone()));
    }
    while let Some(built) = builders.join_next().await {
        built??;
    }
    Ok(())
}

/// One index builder: the next index of `queue` until none is left.
async fn build_from(pool: PgPool, queue: Arc<std::sync::Mutex<Vec<String>>>) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    // `query`, not `raw_sql`: a spawned future's borrow of the connection
    // must satisfy `Executor` for every lifetime.
    sqlx::query("SET maintenance_work_mem = '256MB'")
        .execute(&mut conn)
        .await?;
    loop {
        let next = queue.lock().map_err(|_| anyhow::anyhow!("index queue poisoned"))?.pop();
        let Some(index) = next else { return Ok(()) };
        sqlx::query(&index).persistent(false).execute(&mut conn).await?;
    }
}

/// Applies the next batch after `at` to the tables being rebuilt.
async fn apply_rebuild<P: Projector>(
    tx: &mut PgConnection,
    vault: &Vault,
    projector: &P,
    schema: &str,
    at: &mut Position,
    batch: i64,
) -> anyhow::Result<usize> {
    let page = read_page(tx, vault, Keys::Kept, *at, batch, projector.reads()).await?;
    let Some(end) = page.end else {
        return Ok(0);
    };
    apply_page(tx, projector, schema, &page.events).await?;
    *at = end;
    Ok(page.scanned)
}

/// Applies `events` to the tables in `schema` (projectors name their tables
/// unqualified).
async fn apply_page<P: Projector>(
    tx: &mut PgConnection,
    projector: &P,
    schema: &str,
    events: &[StoredEvent],
) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    // `query`, not `raw_sql`: lanes run this in spawned tasks (see
    // `build_from`).
    sqlx::query(&format!("SET LOCAL search_path TO {schema}, public"))
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    projector.apply(tx, events).await?;
    sqlx::query("SET LOCAL search_path TO public").execute(&mut *tx).await?;
    Ok(())
}

/// Wake-ups shared by every runner of a process.
pub type Wake = watch::Receiver<u64>;

/// Listens for append notifications and bumps the returned counter; the
/// runners still poll, so a lost connection only slows them down.
pub fn listen(pool: PgPool, shutdown: CancellationToken) -> Wake {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for appends; polling");
                    tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(BACKOFF) => continue }
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; polling");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(BACKOFF) => continue }
            }
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    msg = listener.try_recv() => match msg {
                        Ok(Some(_)) => { tx.send_modify(|n| *n = n.wrapping_add(1)); }
                        // The connection dropped; we may have missed appends.
                        Ok(None) => { tx.send_modify(|n| *n = n.wrapping_add(1)); }
                        Err(e) => { tracing::warn!(error = %e, "listener failed"); break; }
                    }
                }
            }
        }
    });
    rx
}

/// Shortest time between two batches of a runner that has caught up: under
/// load, batches grow instead of every commit costing every subscriber a
/// transaction; a write after a quiet spell is still picked up at once.
pub const PACE: Duration = Duration::from_millis(25);

/// Waits for a notification, the poll interval, or shutdown (→ false); then
/// lets at least [`PACE`] pass since `last_batch` started.
pub async fn idle(wake: &mut Wake, shutdown: &CancellationToken, last_batch: tokio::time::Instant) -> bool {
    let woke = tokio::select! {
        _ = shutdown.cancelled() => false,
        r = wake.changed() => {
            if r.is_err() { tokio::time::sleep(POLL).await; }
            true
        }
        _ = tokio::time::sleep(POLL) => true,
    };
    if woke {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep_until(last_batch + PACE) => {}
        }
    }
    woke
}

/// The class (first key of the two-key advisory locks) of the subscribers'
/// leadership locks; see `roster_command::store::PARENT_LOCKS`.
pub const SUBSCRIBER_LOCKS: i32 = 2;

/// Opens a dedicated connection holding the subscriber's session advisory
/// lock, or `None` if another runner holds it. Work done on this connection
/// stops with the lock: if the connection dies, so does the leadership.
pub async fn lead(pool: &PgPool, name: &str) -> sqlx::Result<Option<PgConnection>> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext('roster.subscriber.' || $2))")
        .bind(SUBSCRIBER_LOCKS)
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    if got {
        // A subscriber's writes are derived from the store: a checkpoint
        // lost in a database crash means re-applying (or re-publishing) a
        // few events, which is harmless. So its commits need not wait for
        // the WAL flush, and leave it to the commands that do.
        sqlx::query("SET synchronous_commit = off").execute(&mut conn).await?;
        // The connection lives as long as the leadership, while the tables
        // grow from nothing: a generic plan cached while a read model was
        // small (a scan of the whole table per `id = ANY(…)`) would stay.
        sqlx::query("SET plan_cache_mode = force_custom_plan")
            .execute(&mut conn)
            .await?;
    }
    Ok(got.then_some(conn))
}

/// Runs a projector until shutdown: one active runner per projection across
/// every process, batches of `batch` events.
pub async fn run<P: Projector>(
    pool: PgPool,
    vault: Arc<Vault>,
    projector: Arc<P>,
    mut wake: Wake,
    batch: i64,
    shutdown: CancellationToken,
) {
    let name = projector.name();
    while !shutdown.is_cancelled() {
        let mut conn = match lead(&pool, name).await {
            Ok(Some(conn)) => conn,
            Ok(None) => {
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(BACKOFF) => continue }
            }
            Err(e) => {
                tracing::warn!(projection = name, error = %e, "cannot reach the database");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(BACKOFF) => continue }
            }
        };
        tracing::info!(projection = name, "projection runner active");
        projector.forget();
        loop {
            let started = tokio::time::Instant::now();
            match run_batch(&mut conn, &vault, &*projector, batch).await {
                Ok(n) if n as i64 >= batch => continue,
                Ok(_) => {
                    if !idle(&mut wake, &shutdown, started).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(projection = name, error = %e, "projection batch failed");
                    tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(BACKOFF) => break }
                }
            }
        }
    }
}
