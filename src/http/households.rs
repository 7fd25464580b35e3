//! `/v1/households`: rewards householding (CONTRACT §4).

use super::consistency::{ReadAfter, Token, HEADER};
use super::error::ApiError;
use super::extract::{Auth, RequestInfo, UsersRead, UsersWrite, Valid, Validate};
use super::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use roster_command::household::HouseholdAction;
use roster_command::households as app;
use roster_command::validate::{self, FieldError};
use roster_events::household::HouseholdDoc;
use roster_projections::household_view;
use roster_query::households;
use serde::Deserialize;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/households", post(create))
        .route("/v1/households/{id}", get(retrieve))
        .route("/v1/households/{id}/members", post(add_member))
        .route("/v1/households/{id}/members/{account_id}", delete(remove_member))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHousehold {
    pub name: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user_id: Uuid,
    pub account_id: String,
}

impl Validate for CreateHousehold {
    /// The name.
    type Valid = Option<String>;

    fn validate(self) -> Result<Option<String>, Vec<FieldError>> {
        let mut errors = validate::Errors::default();
        let name = self.name.and_then(|n| errors.check("name", validate::text(&n, 1, 100)));
        errors.into_result(name)
    }
}

impl Validate for AddMember {
    type Valid = HouseholdAction;

    fn validate(self) -> Result<HouseholdAction, Vec<FieldError>> {
        let mut errors = validate::Errors::default();
        let account_id = errors.check("account_id", validate::text(&self.account_id, 1, ACCOUNT_ID_MAX));
        Ok(HouseholdAction::AddMember {
            user_id: self.user_id,
            account_id: errors.into_result(account_id)?.unwrap_or_default(),
        })
    }
}

/// Longest account id (as in `POST /v1/users/{id}/accounts`).
const ACCOUNT_ID_MAX: usize = 100;

fn household_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| ApiError::household_not_found())
}

fn respond(status: StatusCode, doc: HouseholdDoc) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER, Token::new("household", doc.id, doc.version).header_value());
    (status, headers, Json(doc)).into_response()
}

/// Create a household.
#[utoipa::path(post, path = "/v1/households", tag = "households", request_body = CreateHousehold,
    params(super::openapi::IdempotencyKey),
    responses((status = 201, description = "Created", body = HouseholdDoc), (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound), (status = 409, response = super::openapi::Conflict), (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)), security(("bearer" = [], "app_id" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Valid(name): Valid<CreateHousehold>,
) -> Result<Response, ApiError> {
    let doc = app::create(&state.commands, info.meta(&caller), name).await?.doc;
    let location = HeaderValue::from_str(&format!("/v1/households/{}", doc.id)).expect("uuid is a valid header value");
    let mut response = respond(StatusCode::CREATED, doc);
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// Add a user's account to a household.
#[utoipa::path(post, path = "/v1/households/{id}/members", tag = "households", request_body = AddMember,
    params(("id" = String, Path, description = "Household id"), super::openapi::IdempotencyKey),
    responses((status = 200, description = "Member added", body = HouseholdDoc), (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound), (status = 409, response = super::openapi::Conflict), (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)), security(("bearer" = [], "app_id" = [])))]
pub async fn add_member(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    Valid(action): Valid<AddMember>,
) -> Result<Response, ApiError> {
    let id = household_id(&id)?;
    let doc = app::act(&state.commands, info.meta(&caller), id, action).await?.doc;
    Ok(respond(StatusCode::OK, doc))
}

/// Remove an account from a household.
#[utoipa::path(delete, path = "/v1/households/{id}/members/{account_id}", tag = "households",
    params(("id" = String, Path, description = "Household id"), ("account_id" = String, Path, description = "Account id"), super::openapi::IdempotencyKey),
    responses((status = 200, description = "Member removed", body = HouseholdDoc), (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound), (status = 409, response = super::openapi::Conflict), (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)), security(("bearer" = [], "app_id" = [])))]
pub async fn remove_member(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Path((id, account_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = household_id(&id)?;
    if account_id.chars().count() > ACCOUNT_ID_MAX {
        return Err(ApiError::field(
            "account_id",
            format!("must be 1 to {ACCOUNT_ID_MAX} characters"),
        ));
    }
    let action = HouseholdAction::RemoveMember { account_id };
    let doc = app::act(&state.commands, info.meta(&caller), id, action).await?.doc;
    Ok(respond(StatusCode::OK, doc))
}

/// Retrieve a household.
#[utoipa::path(get, path = "/v1/households/{id}", tag = "households", operation_id = "retrieve_household",
    params(("id" = String, Path, description = "Household id"), super::openapi::ConsistencyToken),
    responses((status = 200, description = "The household", body = HouseholdDoc), (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound), (status = 409, response = super::openapi::Conflict), (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)), security(("bearer" = [], "app_id" = [])))]
pub async fn retrieve(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersRead>,
    read_after: ReadAfter,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = household_id(&id)?;
    read_after
        .wait(&state.pool, household_view::NAME, &caller.company_id)
        .await?;
    let doc = households::get(&state.pool, &caller.company_id, id)
        .await?
        .ok_or_else(ApiError::household_not_found)?;
    Ok(Json(doc).into_response())
}
