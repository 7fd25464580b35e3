//! Users: retrieve one, list a company's users oldest first.

use crate::{cursor, Page, QueryError};
use roster_events::user::{UserDoc, UserStatus};
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

/// The projection that serves these queries.
pub const PROJECTION: &str = "user_view";

/// The user's document; `None` also for an erased user the view has not
/// caught up with (the registry knows at once).
pub async fn get(pool: &PgPool, company_id: &str, id: Uuid) -> Result<Option<UserDoc>, QueryError> {
    let row: Option<Json<UserDoc>> = sqlx::query_scalar(&format!(
        "SELECT doc FROM user_view WHERE id = $1 AND company_id = $2 AND NOT {ERASED}"
    ))
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

/// Whether the `user_view` row is an erased user's: the registry knows at
/// once, the view only once it has caught up; an erased user is in no list,
/// search or relationship answer meanwhile (CONTRACT §3).
pub(crate) const ERASED: &str =
    "EXISTS (SELECT 1 FROM user_registry r WHERE r.user_id = user_view.id AND r.erased_at IS NOT NULL)";

/// Users in creation order (ids are UUIDv7), keyset-paginated by id.
pub async fn list(pool: &PgPool, company_id: &str, q: &ListUsers) -> Result<Page<UserDoc>, QueryError> {
    let after = q.after.as_deref().map(cursor::decode_id).transpose()?;
    let rows: Vec<Json<UserDoc>> = sqlx::query_scalar(&format!(
        "SELECT doc FROM user_view
          WHERE company_id = $1
            AND ($2::uuid IS NULL OR id > $2)
            AND ($3::text IS NULL OR status = $3)
            AND ($4::uuid IS NULL OR parent_user_id = $4)
            AND NOT {ERASED}
          ORDER BY id
          LIMIT $5"
    ))
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

/// `POST /v1/users:search`: filters AND-ed; keyset pages by id, so rows
/// added meanwhile only ever appear after the ones already paged.
#[derive(Debug, Clone, Default)]
pub struct SearchUsers {
    /// Case-insensitive substring of "first last".
    pub name: Option<String>,
    /// Exact, case-insensitive.
    pub email: Option<String>,
    /// Exact, already normalised (E.164).
    pub mobile: Option<String>,
    pub status: Option<UserStatus>,
    pub parent_user_id: Option<Uuid>,
    pub limit: usize,
    pub after: Option<String>,
}

/// `%`, `_` and `\\` match themselves in a name search.
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for ch in text.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

pub async fn search(pool: &PgPool, company_id: &str, q: &SearchUsers) -> Result<Page<UserDoc>, QueryError> {
    let after = q.after.as_deref().map(cursor::decode_id).transpose()?;
    // Only the filters present become SQL, so each combination gets a plan
    // that uses its index.
    let mut sql = sqlx::QueryBuilder::new("SELECT doc FROM user_view WHERE company_id = ");
    sql.push_bind(company_id);
    if let Some(after) = after {
        sql.push(" AND id > ").push_bind(after);
    }
    if let Some(name) = &q.name {
        sql.push(" AND search_name LIKE ").push_bind(like_pattern(name.trim()));
    }
    if let Some(email) = &q.email {
        sql.push(" AND email_lower = ").push_bind(email.trim().to_lowercase());
    }
    if let Some(mobile) = &q.mobile {
        sql.push(" AND mobile = ").push_bind(mobile.clone());
    }
    if let Some(status) = q.status {
        sql.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(parent) = q.parent_user_id {
        sql.push(" AND parent_user_id = ").push_bind(parent);
    }
    sql.push(" AND NOT ").push(ERASED);
    sql.push(" ORDER BY id LIMIT ").push_bind(q.limit as i64 + 1);
    let rows: Vec<Json<UserDoc>> = sql.build_query_scalar().fetch_all(pool).await?;
    let docs = rows.into_iter().map(|d| d.0).collect();
    Ok(Page::from_rows(docs, q.limit, |d: &UserDoc| cursor::encode_id(d.id)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn name_patterns_escape_wildcards() {
        assert_eq!(super::like_pattern("Jo_h%n"), "%jo\\_h\\%n%");
    }
}
