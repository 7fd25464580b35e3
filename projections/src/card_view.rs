//! The `card_view` read model: one row per card, from the card events of
//! user streams.

use crate::engine::{Projector, StoredEvent};
use anyhow::Context;
use roster_events::card::CardDoc;
use roster_events::meta;
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
            .filter(|e| e.aggregate_type == "user" && matches!(e.event_type.as_str(), "CardOrdered" | "CardTerminated"))
            .collect();
        if cards.is_empty() {
            return Ok(());
        }
        let mut docs: HashMap<Uuid, (String, CardDoc)> = HashMap::new();
        for e in cards {
            let owner: Uuid = e.aggregate_id.parse().context("user id is not a uuid")?;
            let company = e.meta(meta::COMPANY_ID).unwrap_or_default().to_string();
            match e.decode::<UserEvent>()? {
                UserEvent::CardOrdered(o) => {
                    docs.insert(o.card_id, (company, CardDoc::ordered(owner, &o)));
                }
                UserEvent::CardTerminated(t) => {
                    let mut doc = match docs.remove(&t.card_id) {
                        Some((_, doc)) => doc,
                        None => {
                            let row: Option<Json<CardDoc>> =
                                sqlx::query_scalar("SELECT doc FROM card_view WHERE id = $1")
                                    .bind(t.card_id)
                                    .fetch_optional(&mut *tx)
                                    .await?;
                            row.with_context(|| format!("card {} terminated before ordered", t.card_id))?
                                .0
                        }
                    };
                    doc.terminate(&t);
                    docs.insert(t.card_id, (company, doc));
                }
                _ => {}
            }
        }
        let (mut ids, mut owners, mut companies, mut bodies) = (vec![], vec![], vec![], vec![]);
        for (company, d) in docs.values() {
            ids.push(d.id);
            owners.push(d.owner_id);
            companies.push(company.as_str());
            bodies.push(serde_json::to_string(d)?);
        }
        sqlx::query(
            "INSERT INTO card_view (id, owner_id, company_id, doc)
             SELECT i, o, c, d::jsonb FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[]) AS u(i, o, c, d)
             ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
        )
        .bind(&ids)
        .bind(&owners)
        .bind(&companies)
        .bind(&bodies)
        .execute(tx)
        .await?;
        Ok(())
    }

    fn tables(&self) -> &'static [&'static str] {
        &["card_view"]
    }
}
