//! Users: retrieve one, list a company's users oldest first.

use crate::{cursor, Page, QueryError};
use roster_events::user::{UserDoc, UserStatus};
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

/// The projection that serves these queries.
pub const PROJECTION: &str = "user_view";

pub async fn get(pool: &PgPool, company_id: &str, id: Uuid) -> Result<Option<UserDoc>, QueryError> {
    let row: Option<Json<UserDoc>> = sqlx::query_scalar("SELECT doc FROM user_view WHERE id = $1 AND company_id = $2")
        .bind(id)
        .bind(company_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|d| d.0))
}

#[derive(Debug, Clone, Default)]
pub struct ListUsers {
    pub status: Option<UserStatus>,
    pub parent_user_id: Option<Uuid>,
    pub limit: usize,
    pub after: Option<String>,
}

/// Users in creation order (ids are UUIDv7), keyset-paginated by id.
pub async fn list(pool: &PgPool, company_id: &str, q: &ListUsers) -> Result<Page<UserDoc>, QueryError> {
    let after = q.after.as_deref().map(cursor::decode_id).transpose()?;
    let rows: Vec<Json<UserDoc>> = sqlx::query_scalar(
        "SELECT doc FROM user_view
          WHERE company_id = $1
            AND ($2::uuid IS NULL OR id > $2)
            AND ($3::text IS NULL OR status = $3)
            AND ($4::uuid IS NULL OR parent_user_id = $4)
          ORDER BY id
          LIMIT $5",
    )
    .bind(company_id)
    .bind(after)
    .bind(q.status.map(|s| s.as_str()))
    .bind(q.parent_user_id)
    .bind(q.limit as i64 + 1)
    .fetch_all(pool)
    .await?;
    let docs = rows.into_iter().map(|d| d.0).collect();
    Ok(Page::from_rows(docs, q.limit, |d: &UserDoc| cursor::encode_id(d.id)))
}
