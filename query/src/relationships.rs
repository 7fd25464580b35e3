//! Linked relationships: a user's parent and ancestors, children and
//! descendants, at any depth. The whole chain of ancestors is listed; the
//! descendants too, up to [`MAX_DESCENDANTS`] (nearest first), past which
//! the answer says so (`descendants_truncated`) rather than cutting
//! silently (which users of the last level listed make it then is not
//! specified). A client may ask for fewer levels with `depth`.

use crate::users::ERASED;
use crate::QueryError;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// At most this many descendants per answer (nearest first).
pub const MAX_DESCENDANTS: i64 = 10_000;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Related {
    pub id: Uuid,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub status: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ancestor {
    pub id: Uuid,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub depth: i32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Descendant {
    pub id: Uuid,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub parent_user_id: Uuid,
    pub depth: i32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Relationships {
    pub user_id: Uuid,
    pub parent: Option<Related>,
    /// Nearest first; depth 1 = the parent.
    pub ancestors: Vec<Ancestor>,
    pub children: Vec<Related>,
    /// By depth, then id; depth 1 = the children.
    pub descendants: Vec<Descendant>,
    /// Whether descendants past [`MAX_DESCENDANTS`] were left out.
    pub descendants_truncated: bool,
}

/// id, first and last name, status, parent, depth, erased.
type Row = (Uuid, Option<String>, Option<String>, String, Option<Uuid>, i32, bool);

/// `None` when the user does not exist for the company. `depth` limits the
/// levels up and down (`None`: all).
///
/// Each walk costs one index lookup per row it returns (no path arrays):
/// the write side never lets links form a cycle, but the view applies the
/// events of different users one batch at a time and is not trusted to be
/// acyclic. Walking down, every user reached has the start among its
/// ancestors, so a cycle can only close through the start, which the walk
/// never enters again. Walking up, Brent's cycle detection carries one
/// `mark` (the ancestor at the last power-of-two depth): a chain that loops
/// returns to its mark within twice its length, and the rows past the first
/// repeated id are dropped here. An erased user (the registry knows at once,
/// the view may lag) and everyone past it is left out.
pub async fn get(
    pool: &PgPool,
    company_id: &str,
    user_id: Uuid,
    depth: Option<u32>,
) -> Result<Option<Relationships>, QueryError> {
    let exists: bool = sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM user_view WHERE id = $1 AND company_id = $2 AND NOT {ERASED})"
    ))
    .bind(user_id)
    .bind(company_id)
    .fetch_one(pool)
    .await?;
    if !exists {
        return Ok(None);
    }
    let depth = depth.map_or(i32::MAX, |d| d.clamp(1, i32::MAX as u32) as i32);
    let up: Vec<Row> = sqlx::query_as(&format!(
        "WITH RECURSIVE up(id, depth, mark) AS (
             SELECT parent_user_id, 1, parent_user_id FROM user_view
              WHERE id = $1 AND company_id = $2 AND parent_user_id IS NOT NULL
             UNION ALL
             SELECT user_view.parent_user_id, up.depth + 1,
                    CASE WHEN (up.depth + 1) & up.depth = 0 THEN user_view.parent_user_id ELSE up.mark END
               FROM up JOIN user_view ON user_view.id = up.id
              WHERE user_view.company_id = $2 AND user_view.parent_user_id IS NOT NULL
                AND user_view.parent_user_id <> up.mark AND up.depth < $3 AND NOT {ERASED})
         SELECT user_view.id, user_view.doc ->> 'first_name', user_view.doc ->> 'last_name', user_view.status,
                user_view.parent_user_id, up.depth, {ERASED}
           FROM up JOIN user_view ON user_view.id = up.id AND user_view.company_id = $2
          ORDER BY up.depth"
    ))
    .bind(user_id)
    .bind(company_id)
    .bind(depth)
    .fetch_all(pool)
    .await?;
    // The chain up to its first erased or repeated user.
    let mut seen = std::collections::HashSet::from([user_id]);
    let up: Vec<Row> = up.into_iter().take_while(|r| !r.6 && seen.insert(r.0)).collect();
    // Postgres evaluates a recursive query one level after the other and
    // only as far as its reader fetches: the LIMIT stops the walk once the
    // nearest levels fill the answer, however large the subtree.
    let mut down: Vec<Row> = sqlx::query_as(&format!(
        "WITH RECURSIVE down(id, first_name, last_name, status, parent, depth) AS (
             SELECT id, doc ->> 'first_name', doc ->> 'last_name', status, parent_user_id, 1 FROM user_view
              WHERE company_id = $2 AND parent_user_id = $1 AND id <> $1 AND NOT {ERASED}
             UNION ALL
             SELECT user_view.id, user_view.doc ->> 'first_name', user_view.doc ->> 'last_name', user_view.status,
                    user_view.parent_user_id, down.depth + 1
               FROM down JOIN user_view ON user_view.parent_user_id = down.id
              WHERE user_view.company_id = $2 AND down.depth < $3 AND user_view.id <> $1 AND NOT {ERASED})
         SELECT id, first_name, last_name, status, parent, depth, false FROM down LIMIT $4"
    ))
    .bind(user_id)
    .bind(company_id)
    .bind(depth)
    .bind(MAX_DESCENDANTS + 1)
    .fetch_all(pool)
    .await?;
    down.sort_by_key(|r| (r.5, r.0));
    let descendants_truncated = down.len() as i64 > MAX_DESCENDANTS;
    down.truncate(MAX_DESCENDANTS as usize);
    let related = |r: &Row| Related {
        id: r.0,
        first_name: r.1.clone(),
        last_name: r.2.clone(),
        status: r.3.clone(),
    };
    Ok(Some(Relationships {
        user_id,
        parent: up.first().map(related),
        ancestors: up
            .iter()
            .map(|r| Ancestor {
                id: r.0,
                first_name: r.1.clone(),
                last_name: r.2.clone(),
                depth: r.5,
            })
            .collect(),
        children: down.iter().filter(|r| r.5 == 1).map(related).collect(),
        descendants: down
            .iter()
            .map(|r| Descendant {
                id: r.0,
                first_name: r.1.clone(),
                last_name: r.2.clone(),
                parent_user_id: r.4.unwrap_or(user_id),
                depth: r.5,
            })
            .collect(),
        descendants_truncated,
    }))
}
