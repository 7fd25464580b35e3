//! Households: retrieve one.

use crate::QueryError;
use roster_events::household::HouseholdDoc;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

pub async fn get(pool: &PgPool, company_id: &str, id: Uuid) -> Result<Option<HouseholdDoc>, QueryError> {
    let row: Option<Json<HouseholdDoc>> =
        sqlx::query_scalar("SELECT doc FROM household_view WHERE id = $1 AND company_id = $2")
            .bind(id)
            .bind(company_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|d| d.0))
}
