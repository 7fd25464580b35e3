//! The `household_view` read model: one row per household.

use crate::engine::{Projector, Reads, StoredEvent};
use anyhow::Context;
use roster_events::household::{HouseholdDoc, HouseholdEvent};
use sqlx::types::Json;
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

pub const NAME: &str = "household_view";

#[derive(Debug, Default, Clone, Copy)]
pub struct HouseholdView;

impl Projector for HouseholdView {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let events: Vec<&StoredEvent> = events.iter().filter(|e| e.aggregate_type == "household").collect();
        if events.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = events
            .iter()
            .map(|e| e.aggregate_id.parse())
            .collect::<Result<_, _>>()
            .context("household id is not a uuid")?;
        let rows: Vec<(Uuid, String, i64, Json<HouseholdDoc>)> =
            sqlx::query_as("SELECT id, company_id, version, doc FROM household_view WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
        let mut docs: HashMap<Uuid, HouseholdDoc> = rows
            .into_iter()
            .map(|(id, company_id, version, Json(mut d))| {
                d.company_id = company_id;
                d.version = version as u64;
                (id, d)
            })
            .collect();
        for (e, id) in events.iter().zip(ids) {
            let current = docs.remove(&id);
            if let Some(d) = current.as_ref().filter(|d| d.version >= e.sequence as u64) {
                docs.insert(id, d.clone());
                continue;
            }
            let event: HouseholdEvent = e
                .decode()
                .with_context(|| format!("cannot read {} {} of household {id}", e.event_type, e.sequence))?;
            let doc =
                HouseholdDoc::fold(current, &event).with_context(|| format!("household {id} was never created"))?;
            docs.insert(id, doc);
        }
        let (mut ids, mut companies, mut versions, mut bodies) = (vec![], vec![], vec![], vec![]);
        for d in docs.values() {
            ids.push(d.id);
            companies.push(d.company_id.as_str());
            versions.push(d.version as i64);
            bodies.push(serde_json::to_string(d)?);
        }
        sqlx::query(
            "INSERT INTO household_view (id, company_id, version, doc)
             SELECT i, c, v, d::jsonb FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[]) AS u(i, c, v, d)
             ON CONFLICT (id) DO UPDATE SET company_id = excluded.company_id, version = excluded.version, doc = excluded.doc",
        )
        .bind(&ids)
        .bind(&companies)
        .bind(&versions)
        .bind(&bodies)
        .execute(tx)
        .await?;
        Ok(())
    }

    fn tables(&self) -> &'static [&'static str] {
        &["household_view"]
    }

    fn reads(&self) -> Reads {
        Reads {
            aggregate_types: Some(&["household"]),
            event_types: None,
        }
    }
}
