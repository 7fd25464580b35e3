//! Cards of a user, oldest first.

use crate::{cursor, Page, QueryError};
use roster_events::card::CardDoc;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

pub async fn list(
    pool: &PgPool,
    company_id: &str,
    owner_id: Uuid,
    limit: usize,
    after: Option<&str>,
) -> Result<Page<CardDoc>, QueryError> {
    let after = after.map(cursor::decode_id).transpose()?;
    let rows: Vec<Json<CardDoc>> = sqlx::query_scalar(
        "SELECT doc FROM card_view
          WHERE owner_id = $1 AND company_id = $2 AND ($3::uuid IS NULL OR id > $3)
          ORDER BY id LIMIT $4",
    )
    .bind(owner_id)
    .bind(company_id)
    .bind(after)
    .bind(limit as i64 + 1)
    .fetch_all(pool)
    .await?;
    let docs = rows.into_iter().map(|d| d.0).collect();
    Ok(Page::from_rows(docs, limit, |d: &CardDoc| cursor::encode_id(d.id)))
}
