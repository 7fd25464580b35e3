//! Subscribers' checkpoints: where each one is, and what it has applied.

use super::*;
use sqlx::{PgConnection, PgPool};

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
