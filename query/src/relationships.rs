//! Linked relationships: a user's parent and ancestors, children and
//! descendants, at any depth. The whole chain of ancestors is listed; the
//! descendants too, up to [`MAX_DESCENDANTS`] (nearest first), past which
//! the answer says so (`descendants_truncated`) rather than cutting
//! silently. A client may ask for fewer levels with `depth`.

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

type Row = (Uuid, Option<String>, Option<String>, String, Option<Uuid>, i32);

/// `None` when the user does not exist for the company. `depth` limits the
/// levels up and down (`None`: all).
pub async fn get(
    pool: &PgPool,
    company_id: &str,
    user_id: Uuid,
    depth: Option<u32>,
) -> Result<Option<Relationships>, QueryError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM user_view WHERE id = $1 AND company_id = $2)")
        .bind(user_id)
        .bind(company_id)
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(None);
    }
    let depth = depth.map_or(i32::MAX, |d| d.clamp(1, i32::MAX as u32) as i32);
    // The write side never lets links form a cycle, but the read model
    // applies links of different users in commit order and could hold one
    // for a moment: `CYCLE` stops the walk there.
    let up: Vec<Row> = sqlx::query_as(
        "WITH RECURSIVE up(id, depth) AS (
             SELECT parent_user_id, 1 FROM user_view WHERE id = $1 AND company_id = $2 AND parent_user_id IS NOT NULL
             UNION ALL
             SELECT v.parent_user_id, up.depth + 1 FROM user_view v JOIN up ON v.id = up.id
              WHERE v.company_id = $2 AND v.parent_user_id IS NOT NULL AND up.depth < $3)
             CYCLE id SET is_cycle USING path
         SELECT v.id, v.doc ->> 'first_name', v.doc ->> 'last_name', v.status, v.parent_user_id, up.depth
           FROM up JOIN user_view v ON v.id = up.id AND v.company_id = $2
          WHERE NOT up.is_cycle AND up.id <> $1
          ORDER BY up.depth",
    )
    .bind(user_id)
    .bind(company_id)
    .bind(depth)
    .fetch_all(pool)
    .await?;
    let down: Vec<Row> = sqlx::query_as(
        "WITH RECURSIVE down(id, depth) AS (
             SELECT id, 1 FROM user_view WHERE company_id = $2 AND parent_user_id = $1
             UNION ALL
             SELECT v.id, down.depth + 1 FROM user_view v JOIN down ON v.parent_user_id = down.id
              WHERE v.company_id = $2 AND down.depth < $3)
             CYCLE id SET is_cycle USING path
         SELECT v.id, v.doc ->> 'first_name', v.doc ->> 'last_name', v.status, v.parent_user_id, down.depth
           FROM down JOIN user_view v ON v.id = down.id
          WHERE NOT down.is_cycle AND down.id <> $1
          ORDER BY down.depth, v.id
          LIMIT $4",
    )
    .bind(user_id)
    .bind(company_id)
    .bind(depth)
    .bind(MAX_DESCENDANTS + 1)
    .fetch_all(pool)
    .await?;
    let mut down = down;
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
