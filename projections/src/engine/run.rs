//! The runner: one leader per subscriber across processes, batches applied
//! with their checkpoint, woken by notifications.

use super::*;
use roster_vault::Vault;
use sqlx::{Connection, PgConnection, PgPool};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The channel the `events` trigger notifies on every append.
pub const CHANNEL: &str = "roster_events";

/// How long an idle runner sleeps when no notification arrives.
const POLL: Duration = Duration::from_millis(500);
/// How long a runner waits before retrying after an error or as a standby.
const BACKOFF: Duration = Duration::from_secs(1);

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
