//! Cards (on the user stream) and card products (on a company's catalog
//! stream), and the documents they fold into.

use crate::user::Address;
use crate::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CardType {
    Physical,
    Virtual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Issuer {
    Marqeta,
    Dipocket,
    Icc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AddressToUse {
    User,
    Business,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CardState {
    Unactivated,
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shipping {
    pub address2use: AddressToUse,
    pub expedite: bool,
    /// The user's address when shipped to the user; `null` for the business address.
    pub address: Option<Address>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Termination {
    pub reason_code: String,
    pub reason: Option<String>,
    pub issuer: Issuer,
}

/// Event: a card was ordered. Only the last four digits of the PAN exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardOrdered {
    pub card_id: Uuid,
    pub card_product_id: Uuid,
    pub last4: String,
    pub card_type: CardType,
    pub issuer: Issuer,
    pub shipping: Option<Shipping>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardTerminated {
    pub card_id: Uuid,
    pub last4: String,
    pub reason_code: String,
    pub reason: Option<String>,
    pub issuer: Issuer,
    pub at: Timestamp,
}

/// The card resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CardDoc {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub card_product_id: Uuid,
    /// `****` and the last four digits.
    pub card_no: String,
    pub last4: String,
    pub state: CardState,
    pub card_type: CardType,
    pub issuer: Issuer,
    pub shipping: Option<Shipping>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub terminated_at: Option<Timestamp>,
    pub termination: Option<Termination>,
}

impl CardDoc {
    pub fn ordered(owner_id: Uuid, e: &CardOrdered) -> Self {
        CardDoc {
            id: e.card_id,
            owner_id,
            card_product_id: e.card_product_id,
            card_no: format!("****{}", e.last4),
            last4: e.last4.clone(),
            state: CardState::Unactivated,
            card_type: e.card_type,
            issuer: e.issuer,
            shipping: e.shipping.clone(),
            created_at: e.at,
            terminated_at: None,
            termination: None,
        }
    }

    pub fn terminate(&mut self, e: &CardTerminated) {
        self.state = CardState::Terminated;
        self.terminated_at = Some(e.at);
        self.termination = Some(Termination {
            reason_code: e.reason_code.clone(),
            reason: e.reason.clone(),
            issuer: e.issuer,
        });
    }
}

/// Events of a company's card catalog (aggregate type `card_catalog`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogEvent {
    /// A product; when `default`, it takes over from the previous default.
    CardProductCreated(CardProductCreated),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardProductCreated {
    pub card_product_id: Uuid,
    pub company_id: String,
    pub name: String,
    pub card_type: CardType,
    pub issuer: Issuer,
    pub bin: Option<String>,
    pub default: bool,
    pub at: Timestamp,
}

/// The card product resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CardProductDoc {
    pub id: Uuid,
    pub name: String,
    pub card_type: CardType,
    pub issuer: Issuer,
    pub bin: Option<String>,
    pub default: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl CatalogEvent {
    pub fn name(&self) -> &'static str {
        match self {
            CatalogEvent::CardProductCreated(_) => "CardProductCreated",
        }
    }
}

impl cqrs_es::DomainEvent for CatalogEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}
