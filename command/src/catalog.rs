//! The card catalog: a company's card products, one stream per company
//! (aggregate type `card_catalog`, id = UUIDv5 of the company). Keeping every
//! product of a company in one stream makes "at most one default" a plain
//! rule of the aggregate, race-safe through the stream's sequence numbers.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use roster_events::card::{CardProductCreated, CardProductDoc, CardType, CatalogEvent, Issuer};
use roster_events::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The catalog stream of a company.
pub fn catalog_id(company_id: &str) -> Uuid {
    const NAMESPACE: Uuid = Uuid::from_u128(0x6f1f_3c52_0b8e_4f0e_9a4c_2d3b_7e51_c0de);
    Uuid::new_v5(&NAMESPACE, company_id.as_bytes())
}

#[derive(Debug, Clone)]
pub struct CreateCardProduct {
    pub company_id: String,
    pub card_product_id: Uuid,
    pub name: String,
    pub card_type: CardType,
    pub issuer: Issuer,
    pub bin: Option<String>,
    pub default: bool,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("card product already exists")]
    AlreadyExists,
    #[error("no such card product")]
    ProductNotFound,
    #[error("the company has no default card product")]
    NoDefaultProduct,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CardCatalog {
    products: Vec<CardProductDoc>,
}

impl CardCatalog {
    /// Products, oldest first.
    pub fn products(&self) -> &[CardProductDoc] {
        &self.products
    }

    pub fn product(&self, id: Uuid) -> Option<&CardProductDoc> {
        self.products.iter().find(|p| p.id == id)
    }

    pub fn default_product(&self) -> Option<&CardProductDoc> {
        self.products.iter().find(|p| p.default)
    }

    pub fn decide(&self, c: CreateCardProduct) -> Result<Vec<CatalogEvent>, CatalogError> {
        if self.product(c.card_product_id).is_some() {
            return Err(CatalogError::AlreadyExists);
        }
        Ok(vec![CatalogEvent::CardProductCreated(CardProductCreated {
            card_product_id: c.card_product_id,
            company_id: c.company_id,
            name: c.name,
            card_type: c.card_type,
            issuer: c.issuer,
            bin: c.bin,
            default: c.default,
            at: c.at,
        })])
    }

    /// Folds an event: a new default takes over from the old one.
    pub fn fold(&mut self, event: &CatalogEvent) {
        match event {
            CatalogEvent::CardProductCreated(e) => {
                if e.default {
                    for p in &mut self.products {
                        p.default = false;
                    }
                }
                self.products.push(CardProductDoc {
                    id: e.card_product_id,
                    name: e.name.clone(),
                    card_type: e.card_type,
                    issuer: e.issuer,
                    bin: e.bin.clone(),
                    default: e.default,
                    created_at: e.at,
                });
            }
        }
    }
}

impl Aggregate for CardCatalog {
    const TYPE: &'static str = "card_catalog";
    type Command = CreateCardProduct;
    type Event = CatalogEvent;
    type Error = CatalogError;
    type Services = ();

    async fn handle(&mut self, command: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: CatalogEvent) {
        self.fold(&event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn create(n: u128, default: bool) -> CreateCardProduct {
        CreateCardProduct {
            company_id: "acme".into(),
            card_product_id: Uuid::from_u128(n),
            name: format!("P{n}"),
            card_type: CardType::Physical,
            issuer: Issuer::Marqeta,
            bin: None,
            default,
            at: Timestamp::from(chrono::DateTime::UNIX_EPOCH),
        }
    }

    fn created(n: u128, default: bool) -> CatalogEvent {
        CardCatalog::default()
            .decide(create(n, default))
            .expect("creates")
            .remove(0)
    }

    #[test]
    fn a_new_default_takes_over() {
        let mut catalog = CardCatalog::default();
        for e in [created(1, true), created(2, false), created(3, true)] {
            catalog.fold(&e);
        }
        let defaults: Vec<Uuid> = catalog.products().iter().filter(|p| p.default).map(|p| p.id).collect();
        assert_eq!(defaults, vec![Uuid::from_u128(3)]);
        assert_eq!(catalog.default_product().map(|p| p.id), Some(Uuid::from_u128(3)));
    }

    #[test]
    fn ids_are_unique() {
        TestFramework::<CardCatalog>::with(())
            .given(vec![created(1, false)])
            .when(create(1, true))
            .then_expect_error(CatalogError::AlreadyExists);
        TestFramework::<CardCatalog>::with(())
            .given(vec![created(1, false)])
            .when(create(2, true))
            .then_expect_events(vec![created(2, true)]);
    }

    #[test]
    fn each_company_has_its_own_catalog() {
        assert_ne!(catalog_id("acme"), catalog_id("globex"));
        assert_eq!(catalog_id("acme"), catalog_id("acme"));
    }
}
