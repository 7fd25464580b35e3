//! The card use cases, one function each (see [`crate::users`]): a door
//! hands them typed values and maps the outcome back.

use crate::append::Meta;
use crate::catalog::{CatalogError, CreateCardProduct};
use crate::pan::{Pan, DEFAULT_BIN};
use crate::runner::{CommandError, Commands, Committed};
use crate::user::{OrderCard, TerminateCard, UserAction, UserCommand, UserError};
use roster_events::card::{AddressToUse, CardDoc, CardProductDoc, CardType, CatalogEvent, Issuer};
use roster_events::user::UserEvent;
use uuid::Uuid;

/// PANs drawn before giving up on finding unused last four digits.
const PAN_ATTEMPTS: usize = 20;

/// A card product to create; its name and BIN already valid.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub name: String,
    pub card_type: CardType,
    pub issuer: Issuer,
    pub bin: Option<String>,
    pub default: bool,
}

/// A card order: the product (`None`: the company's default) and how to
/// ship it (defaults: the user's address, not expedited).
#[derive(Debug, Clone, Default)]
pub struct Order {
    pub product: Option<Uuid>,
    pub address2use: Option<AddressToUse>,
    pub expedite: Option<bool>,
}

/// Creates a card product in the company's catalog.
pub async fn create_product(
    commands: &Commands,
    meta: Meta,
    p: NewProduct,
) -> Result<Committed<CardProductDoc, CatalogEvent>, CommandError> {
    let command = CreateCardProduct {
        company_id: meta.company_id.clone(),
        card_product_id: Uuid::now_v7(),
        name: p.name,
        card_type: p.card_type,
        issuer: p.issuer,
        bin: p.bin,
        default: p.default,
        at: meta.at,
    };
    commands.create_card_product(command, meta).await
}

/// Orders a card for `user`: a PAN is drawn under the product's BIN (the
/// full number exists only here; the user keeps its last four digits, which
/// must be unused among its cards, so a taken one is drawn again).
pub async fn order(
    commands: &Commands,
    meta: Meta,
    user: Uuid,
    order: Order,
) -> Result<Committed<CardDoc, UserEvent>, CommandError> {
    if !commands.user_exists(&meta.company_id, user).await? {
        return Err(UserError::NotFound.into());
    }
    let catalog = commands.catalog(&meta.company_id).await?;
    let product = match order.product {
        Some(p) => catalog.product(p).ok_or(CatalogError::ProductNotFound)?,
        None => catalog.default_product().ok_or(CatalogError::NoDefaultProduct)?,
    }
    .clone();
    let card_id = Uuid::now_v7();
    for _ in 0..PAN_ATTEMPTS {
        let last4 = Pan::generate(product.bin.as_deref().unwrap_or(DEFAULT_BIN), &mut rand::thread_rng()).last4();
        let command = UserCommand {
            company_id: meta.company_id.clone(),
            at: meta.at,
            expected_version: None,
            action: UserAction::OrderCard(Box::new(OrderCard {
                card_id,
                product: product.clone(),
                address2use: order.address2use.unwrap_or(AddressToUse::User),
                expedite: order.expedite.unwrap_or(false),
                last4,
            })),
        };
        match commands.user_card(user, command, meta.clone()).await {
            Err(CommandError::User(UserError::Last4Taken)) => continue,
            result => return result,
        }
    }
    Err(UserError::Last4Taken.into())
}

/// Terminates one of `user`'s cards.
pub async fn terminate(
    commands: &Commands,
    meta: Meta,
    user: Uuid,
    terminate: TerminateCard,
) -> Result<Committed<CardDoc, UserEvent>, CommandError> {
    let command = UserCommand {
        company_id: meta.company_id.clone(),
        at: meta.at,
        expected_version: None,
        action: UserAction::TerminateCard(terminate),
    };
    commands.user_card(user, command, meta).await
}
