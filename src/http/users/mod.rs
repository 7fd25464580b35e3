//! `/v1/users`: the routes that write (reads in `read.rs`, request bodies
//! in `input.rs`).

use super::consistency::Token;
use super::error::ApiError;
use super::extract::{Auth, Body, RequestInfo, UsersErase, UsersWrite, Valid};
use super::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use input::{AccountInput, EnrollUserRequest, KycInput, ParentRequest, QuestionsRequest, StatusRequest, VerifyRequest};
use roster_command::user::UserAction;
use roster_command::users::{self as app, Target};
use roster_command::Committed;
use roster_events::user::{UserDoc, UserEvent};
use roster_events::Timestamp;
use uuid::Uuid;

pub mod input;
mod read;

pub use read::*;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", get(list).post(enroll))
        .route("/v1/users:search", post(search))
        .route("/v1/users/search", post(search))
        .route("/v1/users/{id}", get(retrieve).patch(update).put(update).delete(erase))
        .route("/v1/users/{id}/relationships", get(relationships))
        .route("/v1/users/{id}/events", get(audit_trail))
        .route("/v1/users/{id}/parent", put(link_parent).delete(unlink_parent))
        .route("/v1/users/{id}/verification-questions", put(set_questions))
        .route("/v1/users/{id}/verifications", post(verify))
        .route("/v1/users/{id}/status", post(change_status))
        .route("/v1/users/{id}/kyc", patch(update_kyc))
        .route("/v1/users/{id}/accounts", post(add_account))
}

/// ETag and consistency token of a user write.
pub(crate) fn user_headers(doc: &UserDoc) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, etag(doc.version));
    h.insert(
        super::consistency::HEADER,
        Token::new("user", doc.id, doc.version).header_value(),
    );
    h
}

/// A new user's headers: [`user_headers`] and `Location` under the door's
/// `prefix` (`/v1/users`, `/v2/users`).
pub(crate) fn created_headers(doc: &UserDoc, prefix: &str) -> HeaderMap {
    let mut headers = user_headers(doc);
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("{prefix}/{}", doc.id)).expect("uuid is a valid header value"),
    );
    headers
}

/// The user `id` of the caller's company as the read model has it (after
/// the request's consistency token), else 404 or 410: what every door's
/// read of one user answers.
pub(crate) async fn current(
    state: &AppState,
    caller: &crate::auth::Caller,
    read_after: &super::consistency::ReadAfter,
    id: Uuid,
) -> Result<UserDoc, ApiError> {
    read_after
        .wait(&state.pool, roster_query::users::PROJECTION, &caller.company_id)
        .await?;
    match roster_query::users::get(&state.pool, &caller.company_id, id).await? {
        Some(doc) => Ok(doc),
        None => Err(missing_user(state, &caller.company_id, id).await),
    }
}

pub(crate) fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header value")
}

/// Enroll a user.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = EnrollUserRequest,
    params(super::openapi::IdempotencyKey),
    responses(
        (status = 201, description = "Enrolled", body = UserDoc, headers(("Location" = String), ("ETag" = String), ("Roster-Consistency-Token" = String))),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 409, response = super::openapi::Conflict),
        (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn enroll(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Valid(e): Valid<EnrollUserRequest>,
) -> Result<Response, ApiError> {
    let Committed { doc, .. } = app::enroll(&state.commands, info.meta(&caller), e).await?;
    Ok((StatusCode::CREATED, created_headers(&doc, "/v1/users"), Json(doc)).into_response())
}

/// A user id from the path: not a UUID cannot name a user.
pub(crate) fn user_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| ApiError::user_not_found())
}

/// `If-Match: "<version>"` (or `*`, or absent: no precondition).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| ApiError::field("If-Match", "must be an ETag this API returned"))
}

/// The user a request names, at the version its `If-Match` expects.
pub(crate) fn target(id: &str, headers: &HeaderMap) -> Result<Target, ApiError> {
    Ok(Target {
        id: user_id(id)?,
        expected_version: if_match(headers)?,
    })
}

pub(crate) fn user_response(status: StatusCode, doc: UserDoc) -> Response {
    (status, user_headers(&doc), Json(doc)).into_response()
}

/// 410 for a user of the caller's company that was erased, else 404.
pub(crate) async fn missing_user(state: &AppState, company_id: &str, id: Uuid) -> ApiError {
    match state.commands.user_exists(company_id, id).await {
        Err(e) => e.into(),
        Ok(_) => ApiError::user_not_found(),
    }
}

/// What an erasure answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Erased {
    pub id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub erased_at: Timestamp,
}

/// Erase a user (the right to be forgotten): its personal data becomes
/// unreadable everywhere Roster keeps it; its id answers 410 from then on.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id"), super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses((status = 200, description = "Erased", body = Erased, headers(("Roster-Consistency-Token" = String))),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict), (status = 410, response = super::openapi::Gone),
        (status = 412, response = super::openapi::PreconditionFailed), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn erase(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersErase>,
    info: RequestInfo,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = target(&id, &headers)?;
    let c = app::erase(&state.commands, info.meta(&caller), user).await?;
    let id = user.id;
    let token = Token::new("user", id, c.version).header_value();
    let body = Erased {
        id,
        erased_at: c.doc.erased_at,
    };
    let mut response = ([(super::consistency::HEADER, token)], Json(body)).into_response();
    response.extensions_mut().insert(super::idempotency::Impersonal);
    Ok(response)
}

/// Update a user: a JSON merge patch of its profile fields, plus `password`
/// and `parent_user_id`. `PUT` has the same (partial) semantics.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", request_body = Object,
    params(("id" = String, Path, description = "User id"), super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses((status = 200, description = "Updated (JSON merge patch of profile fields, password, parent_user_id)", body = UserDoc), (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound), (status = 409, response = super::openapi::Conflict), (status = 412, response = super::openapi::PreconditionFailed), (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<serde_json::Value>,
) -> Result<Response, ApiError> {
    let change = input::change(body).map_err(ApiError::Validation)?;
    let c = app::change(&state.commands, info.meta(&caller), target(&id, &headers)?, change).await?;
    Ok(user_response(StatusCode::OK, c.doc))
}

/// Link a user to a parent.
#[utoipa::path(put, path = "/v1/users/{id}/parent", tag = "users", request_body = ParentRequest, 
    params(("id" = String, Path, description = "User id"), super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses((status = 200, description = "Linked", body = UserDoc), (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound), (status = 409, response = super::openapi::Conflict), (status = 412, response = super::openapi::PreconditionFailed), (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn link_parent(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<ParentRequest>,
) -> Result<Response, ApiError> {
    let action = UserAction::SetParent(Some(body.parent_user_id));
    let c = app::act(&state.commands, info.meta(&caller), target(&id, &headers)?, action).await?;
    Ok(user_response(StatusCode::OK, c.doc))
}

/// Unlink a user from its parent.
#[utoipa::path(delete, path = "/v1/users/{id}/parent", tag = "users", 
    params(("id" = String, Path, description = "User id"), super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses((status = 200, description = "Unlinked", body = UserDoc), (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound), (status = 409, response = super::openapi::Conflict), (status = 412, response = super::openapi::PreconditionFailed), (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn unlink_parent(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let c = app::act(
        &state.commands,
        info.meta(&caller),
        target(&id, &headers)?,
        UserAction::SetParent(None),
    )
    .await?;
    Ok(user_response(StatusCode::OK, c.doc))
}

/// Set the user's security questions.
#[utoipa::path(put, path = "/v1/users/{id}/verification-questions", tag = "users", request_body = QuestionsRequest, 
    params(("id" = String, Path, description = "User id"), super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses((status = 200, description = "Questions set; failures and lock reset", body = UserDoc), (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound), (status = 409, response = super::openapi::Conflict), (status = 412, response = super::openapi::PreconditionFailed), (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn set_questions(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    headers: HeaderMap,
    Valid(questions): Valid<QuestionsRequest>,
) -> Result<Response, ApiError> {
    let user = target(&id, &headers)?;
    let c = app::set_questions(&state.commands, info.meta(&caller), user, questions).await?;
    Ok(user_response(StatusCode::OK, c.doc))
}

/// Verify a user with one of its security questions.
#[utoipa::path(post, path = "/v1/users/{id}/verifications", tag = "users", request_body = VerifyRequest,
    params(("id" = String, Path, description = "User id"), super::openapi::IdempotencyKey),
    responses((status = 200, description = "Verified: {\"verified\": true}", body = Object),
        (status = 423, response = super::openapi::Locked), (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound), (status = 409, response = super::openapi::Conflict), (status = 412, response = super::openapi::PreconditionFailed), (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    headers: HeaderMap,
    Valid(action): Valid<VerifyRequest>,
) -> Result<Response, ApiError> {
    let c = app::act(&state.commands, info.meta(&caller), target(&id, &headers)?, action).await?;
    let mut headers = user_headers(&c.doc);
    headers.remove(header::ETAG);
    let failure = c.events.iter().find_map(|e| match e {
        UserEvent::VerificationFailed(f) => Some(f),
        _ => None,
    });
    match failure {
        None => Ok((headers, Json(serde_json::json!({"verified": true}))).into_response()),
        Some(f) => {
            let code = if f.known_question {
                "VERIFICATION_FAILED"
            } else {
                "UNKNOWN_QUESTION"
            };
            let mut response = ApiError::VerificationFailed {
                code,
                attempts_remaining: f.attempts_remaining,
            }
            .into_response();
            response.headers_mut().extend(headers);
            Ok(response)
        }
    }
}

/// Change the user's status.
#[utoipa::path(post, path = "/v1/users/{id}/status", tag = "users", request_body = StatusRequest, 
    params(("id" = String, Path, description = "User id"), super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses((status = 200, description = "Status changed", body = UserDoc), (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound), (status = 409, response = super::openapi::Conflict), (status = 412, response = super::openapi::PreconditionFailed), (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn change_status(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    headers: HeaderMap,
    Valid(action): Valid<StatusRequest>,
) -> Result<Response, ApiError> {
    let c = app::act(&state.commands, info.meta(&caller), target(&id, &headers)?, action).await?;
    Ok(user_response(StatusCode::OK, c.doc))
}

/// Update the user's KYC record.
#[utoipa::path(patch, path = "/v1/users/{id}/kyc", tag = "users", request_body = KycInput, 
    params(("id" = String, Path, description = "User id"), super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses((status = 200, description = "KYC updated", body = UserDoc), (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound), (status = 409, response = super::openapi::Conflict), (status = 412, response = super::openapi::PreconditionFailed), (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn update_kyc(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    headers: HeaderMap,
    Valid(action): Valid<KycInput>,
) -> Result<Response, ApiError> {
    let c = app::act(&state.commands, info.meta(&caller), target(&id, &headers)?, action).await?;
    Ok(user_response(StatusCode::OK, c.doc))
}

/// Add an account to the user.
#[utoipa::path(post, path = "/v1/users/{id}/accounts", tag = "users", request_body = AccountInput, 
    params(("id" = String, Path, description = "User id"), super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses((status = 201, description = "Account added", body = UserDoc), (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound), (status = 409, response = super::openapi::Conflict), (status = 412, response = super::openapi::PreconditionFailed), (status = 422, response = super::openapi::Unprocessable), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn add_account(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    headers: HeaderMap,
    Valid(action): Valid<AccountInput>,
) -> Result<Response, ApiError> {
    let c = app::act(&state.commands, info.meta(&caller), target(&id, &headers)?, action).await?;
    Ok(user_response(StatusCode::CREATED, c.doc))
}
