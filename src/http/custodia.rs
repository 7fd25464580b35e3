//! The Custodia routes (CONTRACT §11, `seeds/custodia-users.md`): another
//! door to the same use cases as `/v1` (enroll, retrieve, update, order and
//! terminate a card), with Custodia's paths, field names and shapes. Each
//! handler reads Custodia's body into the `/v1` input, lets `/v1`'s
//! validation judge it (its errors renamed back to Custodia's fields), runs
//! the same use case and answers with the same headers.

use super::consistency::ReadAfter;
use super::error::ApiError;
use super::extract::{Auth, Body, CardsWrite, RequestInfo, UsersRead, UsersWrite, Valid, Validate};
use super::users::input::{self, EnrollUserRequest};
use super::users::{current, etag, target, user_headers, user_id};
use super::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use roster_command::cards as card_app;
use roster_command::user::{TerminateCard, UserError};
use roster_command::users::{self as app, Change, Enrollment};
use roster_command::validate::FieldError;
use roster_command::{CommandError, Committed};
use roster_events::card::{CardDoc, CardState, CardType, Issuer};
use roster_events::user::{UserDoc, UserEvent, UserStatus};
use roster_events::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/md/api/User", post(create_user))
        .route("/md/api/User/{userId}", get(get_user).patch(update_user))
        .route("/md/api/User/{userId}/order-card", post(order_card))
        .route("/md/api/User/{userId}/terminate-card", post(terminate_card))
}

/// `/v1` field names and theirs.
const NAMES: [(&str, &str); 8] = [
    ("first_name", "firstname"),
    ("last_name", "lastname"),
    ("email_verified", "emailVerified"),
    ("employee_id", "employeeId"),
    ("status_reason", "reason"),
    ("office_phone", "office"),
    ("office_extension", "extension"),
    ("reason_code", "reasonCode"),
];

/// A `/v1` field name as Custodia spells it (the rest of a nested path
/// kept).
#[cfg(test)]
fn custodia_field(field: &str) -> String {
    super::error::renamed_field(field, &NAMES)
}

/// `/v1`'s field errors under Custodia's names.
fn custodia_errors(errors: Vec<FieldError>) -> Vec<FieldError> {
    super::error::renamed(errors, &NAMES)
}

/// A Custodia user.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustodiaUser {
    pub id: Uuid,
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub email: Option<String>,
    pub company_id: String,
    /// Whether the user's status is `active`.
    pub active: bool,
    /// The status reason.
    pub reason: Option<String>,
    pub email_verified: bool,
    pub mobile: Option<String>,
    pub employee_id: Option<String>,
    /// Office phone number.
    pub office: Option<String>,
    /// Office phone extension.
    pub extension: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub modified: Timestamp,
}

impl From<UserDoc> for CustodiaUser {
    fn from(doc: UserDoc) -> Self {
        let p = doc.profile;
        CustodiaUser {
            id: doc.id,
            firstname: p.first_name,
            lastname: p.last_name,
            email: p.email,
            company_id: doc.company_id,
            active: doc.status == UserStatus::Active,
            reason: doc.status_reason,
            email_verified: p.email_verified,
            mobile: p.mobile,
            employee_id: p.employee_id,
            office: p.office_phone,
            extension: p.office_extension,
            created: doc.created_at,
            modified: doc.updated_at,
        }
    }
}

/// A user write's answer: 200, the Custodia user, `/v1`'s ETag and
/// consistency token.
fn user_response(doc: UserDoc) -> Response {
    (user_headers(&doc), Json(CustodiaUser::from(doc))).into_response()
}

/// `POST /md/api/User` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateUserRequest {
    /// At most 50 characters.
    pub firstname: String,
    /// At most 50 characters.
    pub lastname: String,
    /// Unique within the company.
    pub email: String,
    /// The caller's company (another → 403).
    pub company_id: String,
    /// `true`: enrolled `active`; else `inactive`.
    pub active: Option<bool>,
    /// The status reason.
    pub reason: Option<String>,
    pub email_verified: Option<bool>,
    pub mobile: Option<String>,
    pub employee_id: Option<String>,
}

impl Validate for CreateUserRequest {
    /// The enrollment and the company the client named.
    type Valid = (Enrollment, String);

    fn validate(self) -> Result<Self::Valid, Vec<FieldError>> {
        let v1 = EnrollUserRequest {
            first_name: Some(self.firstname),
            last_name: Some(self.lastname),
            email: Some(self.email),
            email_verified: self.email_verified,
            mobile: self.mobile,
            employee_id: self.employee_id,
            status: Some(if self.active == Some(true) {
                UserStatus::Active
            } else {
                UserStatus::Inactive
            }),
            status_reason: self.reason,
            ..EnrollUserRequest::default()
        };
        let enrollment = v1.validate().map_err(custodia_errors)?;
        Ok((enrollment, self.company_id))
    }
}

/// Create a user (Custodia): enroll, `active: true` → status `active`.
#[utoipa::path(post, path = "/md/api/User", tag = "custodia", operation_id = "custodia_create_user",
    request_body = CreateUserRequest,
    params(super::openapi::IdempotencyKey),
    responses(
        (status = 200, description = "Enrolled", body = CustodiaUser, headers(("ETag" = String), ("Roster-Consistency-Token" = String))),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 409, response = super::openapi::Conflict),
        (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Valid((enrollment, company_id)): Valid<CreateUserRequest>,
) -> Result<Response, ApiError> {
    if company_id != caller.company_id {
        return Err(ApiError::ForbiddenBecause(
            "companyId must be the company of the calling client.",
        ));
    }
    let Committed { doc, .. } = app::enroll(&state.commands, info.meta(&caller), enrollment).await?;
    Ok(user_response(doc))
}

/// Retrieve a user (Custodia): the same read as `GET /v1/users/{id}`.
#[utoipa::path(get, path = "/md/api/User/{userId}", tag = "custodia", operation_id = "custodia_get_user",
    params(("userId" = String, Path, description = "User id"), super::openapi::ConsistencyToken),
    responses(
        (status = 200, description = "The user", body = CustodiaUser, headers(("ETag" = String))),
        (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound), (status = 410, response = super::openapi::Gone),
        (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn get_user(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersRead>,
    read_after: ReadAfter,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let doc = current(&state, &caller, &read_after, user_id(&id)?).await?;
    Ok(([(header::ETAG, etag(doc.version))], Json(CustodiaUser::from(doc))).into_response())
}

/// Custodia's names of the profile fields its `PATCH` changes, and their
/// `/v1` names.
const PATCHABLE: [(&str, &str); 7] = [
    ("firstname", "first_name"),
    ("lastname", "last_name"),
    ("email", "email"),
    ("mobile", "mobile"),
    ("employeeId", "employee_id"),
    ("office", "office_phone"),
    ("extension", "office_extension"),
];

/// `PATCH /md/api/User/{userId}` body (a JSON merge patch).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
pub struct UpdateUserRequest {
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub email: Option<String>,
    pub mobile: Option<String>,
    pub employee_id: Option<String>,
    /// Office phone number.
    pub office: Option<String>,
    /// Office phone extension.
    pub extension: Option<String>,
}

/// A Custodia patch as `/v1`'s patch body (its fields renamed), and the
/// refusal of any other field under its own name.
fn v1_patch(body: serde_json::Value) -> Result<(serde_json::Value, Vec<FieldError>), Vec<FieldError>> {
    let serde_json::Value::Object(fields) = body else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut v1 = serde_json::Map::new();
    let mut errors = Vec::new();
    for (key, value) in fields {
        match PATCHABLE.iter().find(|(c, _)| *c == key) {
            Some((_, name)) => {
                v1.insert(name.to_string(), value);
            }
            None => errors.push(FieldError::new(&key, "is not a field of this route")),
        }
    }
    Ok((serde_json::Value::Object(v1), errors))
}

/// A Custodia patch as the `/v1` change: every bad field reported at once.
fn custodia_change(body: serde_json::Value) -> Result<Change, Vec<FieldError>> {
    let (v1, mut errors) = v1_patch(body)?;
    match input::change(v1) {
        Ok(change) if errors.is_empty() => Ok(change),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(custodia_errors(more));
            Err(errors)
        }
    }
}

/// Update a user (Custodia): the same merge patch as `PATCH /v1/users/{id}`.
#[utoipa::path(patch, path = "/md/api/User/{userId}", tag = "custodia", operation_id = "custodia_update_user",
    request_body = UpdateUserRequest,
    params(("userId" = String, Path, description = "User id"), super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses(
        (status = 200, description = "Updated", body = CustodiaUser, headers(("ETag" = String), ("Roster-Consistency-Token" = String))),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict), (status = 412, response = super::openapi::PreconditionFailed),
        (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn update_user(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<serde_json::Value>,
) -> Result<Response, ApiError> {
    let change = custodia_change(body).map_err(ApiError::Validation)?;
    let c = app::change(&state.commands, info.meta(&caller), target(&id, &headers)?, change).await?;
    Ok(user_response(c.doc))
}

/// Shipping instructions of a Custodia card order.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustodiaInstructions {
    /// `user` (the user's address) or `business`.
    pub address2use: Option<roster_events::card::AddressToUse>,
    pub expedite: Option<bool>,
}

/// `POST /md/api/User/{userId}/order-card` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CustodiaOrderRequest {
    /// Without one, the company's default card product.
    pub card_product_id: Option<Uuid>,
    pub instructions: Option<CustodiaInstructions>,
}

/// The card as Custodia shows it: `state` in capitals (`UNACTIVATED`).
fn custodia_state(state: CardState) -> &'static str {
    match state {
        CardState::Unactivated => "UNACTIVATED",
        CardState::Terminated => "TERMINATED",
    }
}

/// An ordered card (Custodia).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustodiaOrderedCard {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub card_product_id: Uuid,
    /// `****` and the last four digits.
    pub card_no: String,
    /// `UNACTIVATED` or `TERMINATED`.
    pub state: String,
    pub card_type: CardType,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
}

/// Order a card for a user (Custodia): the same order as `POST /v1/users/{id}/cards`.
#[utoipa::path(post, path = "/md/api/User/{userId}/order-card", tag = "custodia", operation_id = "custodia_order_card",
    request_body = CustodiaOrderRequest,
    params(("userId" = String, Path, description = "User id"), super::openapi::IdempotencyKey),
    responses(
        (status = 200, description = "Ordered", body = CustodiaOrderedCard, headers(("Roster-Consistency-Token" = String))),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn order_card(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<CardsWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    Body(body): Body<CustodiaOrderRequest>,
) -> Result<Response, ApiError> {
    let order = super::cards::OrderCardRequest {
        card_product_id: body.card_product_id,
        instructions: body.instructions.map(|i| super::cards::Instructions {
            address2use: i.address2use,
            expedite: i.expedite,
        }),
    }
    .order();
    let c = card_app::order(&state.commands, info.meta(&caller), user_id(&id)?, order)
        .await
        .map_err(|e| match e {
            CommandError::User(UserError::NotActive) => {
                ApiError::Conflict("INVALID-USER-STATE", "The user must be active.")
            }
            e => e.into(),
        })?;
    let headers = super::cards::card_headers(&c);
    let card: CardDoc = c.doc;
    let body = CustodiaOrderedCard {
        id: card.id,
        owner_id: card.owner_id,
        card_product_id: card.card_product_id,
        card_no: card.card_no,
        state: custodia_state(card.state).into(),
        card_type: card.card_type,
        created: card.created_at,
    };
    Ok((headers, Json(body)).into_response())
}

/// `POST /md/api/User/{userId}/terminate-card` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CustodiaTerminateRequest {
    /// The card's last four digits.
    pub pan: String,
    /// Why, as a code (`01`: requested by user or admin; `09`: reissued).
    pub reason_code: String,
    /// Default `marqeta`; must be the card's.
    pub issuer: Option<Issuer>,
    /// Why, in words.
    pub reason: Option<String>,
}

impl Validate for CustodiaTerminateRequest {
    type Valid = TerminateCard;

    fn validate(self) -> Result<TerminateCard, Vec<FieldError>> {
        super::cards::TerminateRequest {
            pan: self.pan,
            reason_code: self.reason_code,
            reason: self.reason,
            issuer: self.issuer,
        }
        .validate()
        .map_err(custodia_errors)
    }
}

/// A terminated card (Custodia).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustodiaTerminatedCard {
    pub id: Uuid,
    pub owner_id: Uuid,
    /// `****` and the last four digits.
    pub card_no: String,
    /// `TERMINATED`.
    pub state: String,
    pub card_type: CardType,
    /// The card's issuer.
    pub vendor: Issuer,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub terminated_on: Option<Timestamp>,
}

/// Terminate a user's card (Custodia): the same as `POST /v1/users/{id}/cards/terminate`.
#[utoipa::path(post, path = "/md/api/User/{userId}/terminate-card", tag = "custodia", operation_id = "custodia_terminate_card",
    request_body = CustodiaTerminateRequest,
    params(("userId" = String, Path, description = "User id"), super::openapi::IdempotencyKey),
    responses(
        (status = 200, description = "Terminated", body = CustodiaTerminatedCard, headers(("Roster-Consistency-Token" = String))),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn terminate_card(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<CardsWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    Valid(terminate): Valid<CustodiaTerminateRequest>,
) -> Result<Response, ApiError> {
    let c: Committed<CardDoc, UserEvent> =
        card_app::terminate(&state.commands, info.meta(&caller), user_id(&id)?, terminate).await?;
    let headers = super::cards::card_headers(&c);
    let card = c.doc;
    let body = CustodiaTerminatedCard {
        id: card.id,
        owner_id: card.owner_id,
        card_no: card.card_no,
        state: custodia_state(card.state).into(),
        card_type: card.card_type,
        vendor: card.issuer,
        terminated_on: card.terminated_at,
    };
    Ok((headers, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_fields_are_renamed_to_custodias() {
        assert_eq!(custodia_field("first_name"), "firstname");
        assert_eq!(custodia_field("status_reason"), "reason");
        assert_eq!(custodia_field("office_extension"), "extension");
        assert_eq!(custodia_field("reason_code"), "reasonCode");
        assert_eq!(custodia_field("email"), "email");
        assert_eq!(custodia_field("first_named"), "first_named");
    }
}
