//! The `card_view` read model: one row per card, from the card events of
//! user streams. Each row keeps the owner's sequence of the last card event
//! applied to it, so re-applying an event changes nothing. An erased
//! user's card events are skipped and its `UserErased` deletes its cards.

use crate::engine::{Projector, Reads, StoredEvent};
use anyhow::Context;
use roster_events::card::CardDoc;
use roster_events::user::UserEvent;
use sqlx::types::Json;
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

pub const NAME: &str = "card_view";

#[derive(Debug, Default, Clone, Copy)]
pub struct CardView;

impl Projector for CardView {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let cards: Vec<&StoredEvent> = events
            .iter()
            .filter(|e| e.aggregate_type == "user" && !e.erased)
            .filter(|e| matches!(e.event_type.as_str(), "CardOrdered" | "CardTerminated"))
            .collect();
        let erased: Vec<Uuid> = events
            .iter()
            .filter(|e| e.aggregate_type == "user" && e.event_type == "UserErased")
            .map(|e| e.aggregate_id.parse())
            .collect::<Result<_, _>>()
            .context("user id is not a uuid")?;
        self.write(&mut *tx, cards).await?;
        if !erased.is_empty() {
            sqlx::query("DELETE FROM card_view WHERE owner_id = ANY($1)")
                .bind(&erased)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    fn tables(&self) -> &'static [&'static str] {
        &["card_view"]
    }

    fn reads(&self) -> Reads {
        Reads {
            aggregate_types: Some(&["user"]),
            event_types: Some(&["CardOrdered", "CardTerminated", "UserErased"]),
        }
    }
}

impl CardView {
    async fn write(&self, tx: &mut PgConnection, cards: Vec<&StoredEvent>) -> anyhow::Result<()> {
        if cards.is_empty() {
            return Ok(());
        }
        let mut decoded = Vec::with_capacity(cards.len());
        for e in cards {
            let owner: Uuid = e.aggregate_id.parse().context("user id is not a uuid")?;
            let company = e.metadata.company_id.clone();
            let event = e.decode::<UserEvent>()?;
            let card_id = match &event {
                UserEvent::CardOrdered(o) => o.card_id,
                UserEvent::CardTerminated(t) => t.card_id,
                _ => continue,
            };
            decoded.push((card_id, owner, company, e.sequence, event));
        }
        let ids: Vec<Uuid> = decoded.iter().map(|d| d.0).collect();
        let rows: Vec<(Uuid, String, i64, Json<CardDoc>)> =
            sqlx::query_as("SELECT id, company_id, version, doc FROM card_view WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
        // card → (company, version = owner's sequence of its last event, doc)
        let mut docs: HashMap<Uuid, (String, i64, CardDoc)> =
            rows.into_iter().map(|(id, c, v, Json(d))| (id, (c, v, d))).collect();
        for (card_id, owner, company, sequence, event) in decoded {
            let current = docs.get(&card_id);
            if current.is_some_and(|(_, version, _)| *version >= sequence) {
                // Already applied (a batch replayed after a crash).
                continue;
            }
            let doc = match (&event, docs.remove(&card_id)) {
                (UserEvent::CardOrdered(o), _) => CardDoc::ordered(owner, o),
                (UserEvent::CardTerminated(t), Some((_, _, mut doc))) => {
                    doc.terminate(t);
                    doc
                }
                (UserEvent::CardTerminated(t), None) => anyhow::bail!("card {} terminated before ordered", t.card_id),
                _ => continue,
            };
            docs.insert(card_id, (company, sequence, doc));
        }
        let (mut ids, mut owners, mut companies, mut versions, mut bodies) = (vec![], vec![], vec![], vec![], vec![]);
        for (company, version, d) in docs.values() {
            ids.push(d.id);
            owners.push(d.owner_id);
            companies.push(company.as_str());
            versions.push(*version);
            bodies.push(serde_json::to_string(d)?);
        }
        sqlx::query(
            "INSERT INTO card_view (id, owner_id, company_id, version, doc)
             SELECT i, o, c, v, d::jsonb
               FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[]) AS u(i, o, c, v, d)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, doc = excluded.doc
              WHERE card_view.version < excluded.version",
        )
        .bind(&ids)
        .bind(&owners)
        .bind(&companies)
        .bind(&versions)
        .bind(&bodies)
        .execute(tx)
        .await?;
        Ok(())
    }
}
