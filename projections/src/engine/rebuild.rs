//! `roster replay`: a projection rebuilt from position zero beside the live
//! one, then swapped in.

use super::*;
use roster_vault::Vault;
use sqlx::{Connection, PgConnection, PgPool};
use std::sync::Arc;

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
