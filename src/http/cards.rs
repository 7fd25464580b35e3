//! Cards (CONTRACT §5): card products, ordering and terminating cards.

use super::consistency::{ReadAfter, Token, HEADER};
use super::error::ApiError;
use super::extract::{Admin, Auth, Body, CardsWrite, Paging, RequestInfo, UsersRead, Valid, Validate};
use super::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use roster_command::cards::{self as app, NewProduct, Order};
use roster_command::user::TerminateCard;
use roster_command::validate::{self, FieldError};
use roster_command::Committed;
use roster_events::card::{AddressToUse, CardDoc, CardProductDoc, CardType, Issuer};
use roster_projections::card_view;
use roster_query::{cards, cursor, Page};
use serde::Deserialize;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/card-products", get(list_products).post(create_product))
        .route("/v1/users/{id}/cards", get(list_cards).post(order_card))
        .route("/v1/users/{id}/cards/terminate", post(terminate_card))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    pub name: String,
    pub card_type: CardType,
    pub issuer: Issuer,
    /// 6 to 8 digits; without one, PANs start with 400000.
    pub bin: Option<String>,
    pub default: Option<bool>,
}

impl Validate for CreateProduct {
    /// The request with its name and BIN checked.
    type Valid = (CreateProduct, String, Option<String>);

    fn validate(self) -> Result<Self::Valid, Vec<FieldError>> {
        let mut errors = validate::Errors::default();
        let name = errors.check("name", validate::text(&self.name, 1, 100));
        let bin = match self.bin.as_deref().map(str::trim) {
            None => None,
            Some(b) if (6..=8).contains(&b.len()) && b.bytes().all(|c| c.is_ascii_digit()) => Some(b.to_string()),
            Some(_) => {
                errors.add("bin", "must be 6 to 8 digits");
                None
            }
        };
        let name = errors.into_result(name)?.unwrap_or_default();
        Ok((self, name, bin))
    }
}

/// Create a card product in the company's catalog.
#[utoipa::path(post, path = "/v1/card-products", tag = "cards", request_body = CreateProduct,
    params(super::openapi::IdempotencyKey),
    responses((status = 201, description = "Created", body = CardProductDoc),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn create_product(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<Admin>,
    info: RequestInfo,
    Valid((body, name, bin)): Valid<CreateProduct>,
) -> Result<Response, ApiError> {
    let product = NewProduct {
        name,
        card_type: body.card_type,
        issuer: body.issuer,
        bin,
        default: body.default.unwrap_or(false),
    };
    let Committed { doc, .. } = app::create_product(&state.commands, info.meta(&caller), product).await?;
    let location =
        HeaderValue::from_str(&format!("/v1/card-products/{}", doc.id)).expect("uuid is a valid header value");
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(doc)).into_response())
}

/// The company's card products, oldest first. Read from the catalog's
/// stream itself: it is small, and always current.
#[utoipa::path(get, path = "/v1/card-products", tag = "cards",
    params(("limit" = Option<u32>, Query, description = "1..=100, default 10"), ("after" = Option<String>, Query, description = "Cursor")),
    responses((status = 200, description = "A page of card products", body = super::openapi::CardProductPage),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn list_products(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersRead>,
    paging: Paging,
) -> Result<Response, ApiError> {
    let after = paging.after.as_deref().map(cursor::decode_id).transpose()?;
    let catalog = state.commands.catalog(&caller.company_id).await?;
    let rows: Vec<CardProductDoc> = catalog
        .products()
        .iter()
        .filter(|p| after.is_none_or(|a| p.id > a))
        .take(paging.limit + 1)
        .cloned()
        .collect();
    Ok(Json(Page::from_rows(rows, paging.limit, |p: &CardProductDoc| {
        cursor::encode_id(p.id)
    }))
    .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Instructions {
    pub address2use: Option<AddressToUse>,
    pub expedite: Option<bool>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCardRequest {
    pub card_product_id: Option<Uuid>,
    pub instructions: Option<Instructions>,
}

/// The consistency token of a card write (the owner's stream).
pub(crate) fn card_headers(c: &Committed<CardDoc, roster_events::user::UserEvent>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER, Token::new("user", c.doc.owner_id, c.version).header_value());
    headers
}

fn card_response(status: StatusCode, c: Committed<CardDoc, roster_events::user::UserEvent>) -> Response {
    (status, card_headers(&c), Json(c.doc)).into_response()
}

impl OrderCardRequest {
    /// The order this body asks for.
    pub(crate) fn order(self) -> Order {
        let instructions = self.instructions.unwrap_or(Instructions {
            address2use: None,
            expedite: None,
        });
        Order {
            product: self.card_product_id,
            address2use: instructions.address2use,
            expedite: instructions.expedite,
        }
    }
}

fn user_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| ApiError::user_not_found())
}

/// Order a card: the product given, or the company's default.
#[utoipa::path(post, path = "/v1/users/{id}/cards", tag = "cards", request_body = OrderCardRequest,
    params(("id" = String, Path, description = "User id"), super::openapi::IdempotencyKey),
    responses((status = 201, description = "Ordered", body = CardDoc),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict), (status = 422, response = super::openapi::Unprocessable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn order_card(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<CardsWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    Body(body): Body<OrderCardRequest>,
) -> Result<Response, ApiError> {
    let committed = app::order(&state.commands, info.meta(&caller), user_id(&id)?, body.order()).await?;
    Ok(card_response(StatusCode::CREATED, committed))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminateRequest {
    /// The card's last four digits.
    pub pan: String,
    pub reason_code: String,
    pub reason: Option<String>,
    /// Default `marqeta`; must be the card's.
    pub issuer: Option<Issuer>,
}

impl Validate for TerminateRequest {
    type Valid = TerminateCard;

    fn validate(self) -> Result<TerminateCard, Vec<FieldError>> {
        let mut errors = validate::Errors::default();
        let pan = self.pan.trim();
        if pan.len() != 4 || !pan.bytes().all(|b| b.is_ascii_digit()) {
            errors.add("pan", "must be the card's last four digits");
        }
        let reason_code = errors.check("reason_code", validate::text(&self.reason_code, 1, 50));
        let reason = self
            .reason
            .as_deref()
            .and_then(|r| errors.check("reason", validate::text(r, 1, 200)));
        let reason_code = errors.into_result(reason_code)?.unwrap_or_default();
        Ok(TerminateCard {
            last4: pan.to_string(),
            reason_code,
            reason,
            issuer: self.issuer.unwrap_or(Issuer::Marqeta),
        })
    }
}

/// Terminate one of the user's cards.
#[utoipa::path(post, path = "/v1/users/{id}/cards/terminate", tag = "cards", request_body = TerminateRequest,
    params(("id" = String, Path, description = "User id"), super::openapi::IdempotencyKey),
    responses((status = 200, description = "Terminated", body = CardDoc),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn terminate_card(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<CardsWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    Valid(terminate): Valid<TerminateRequest>,
) -> Result<Response, ApiError> {
    let committed = app::terminate(&state.commands, info.meta(&caller), user_id(&id)?, terminate).await?;
    Ok(card_response(StatusCode::OK, committed))
}

/// List the user's cards.
#[utoipa::path(get, path = "/v1/users/{id}/cards", tag = "cards",
    params(("id" = String, Path, description = "User id"), ("limit" = Option<u32>, Query, description = "1..=100, default 10"),
        ("after" = Option<String>, Query, description = "Cursor"), super::openapi::ConsistencyToken),
    responses((status = 200, description = "A page of cards", body = super::openapi::CardPage),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn list_cards(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersRead>,
    read_after: ReadAfter,
    Path(id): Path<String>,
    paging: Paging,
) -> Result<Response, ApiError> {
    let user = user_id(&id)?;
    // Whether the user exists comes from the write side: the user view may
    // lag behind the card view.
    if !state.commands.user_exists(&caller.company_id, user).await? {
        return Err(ApiError::user_not_found());
    }
    read_after
        .wait(&state.pool, card_view::NAME, &caller.company_id)
        .await?;
    let page = cards::list(
        &state.pool,
        &caller.company_id,
        user,
        paging.limit,
        paging.after.as_deref(),
    )
    .await?;
    Ok(Json(page).into_response())
}
