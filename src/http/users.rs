//! `/v1/users`: enroll, retrieve, list.

use super::consistency::{ReadAfter, Token};
use super::error::ApiError;
use super::extract::{Auth, Body, Paging, RequestInfo, UsersRead, UsersWrite};
use super::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use roster_command::bus::Load;
use roster_command::secret::{self, Secret};
use roster_command::user::input::EnrollUserRequest;
use roster_command::user::{EnrollUser, UserAction, UserCommand};
use roster_command::{Committed, Meta};
use roster_events::user::{QuestionHash, UserDoc, UserStatus};
use roster_events::Timestamp;
use roster_query::users::{self, ListUsers, PROJECTION};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", get(list).post(enroll))
        .route("/v1/users/{id}", get(retrieve))
}

fn meta(caller: &crate::auth::Caller, info: RequestInfo) -> Meta {
    Meta {
        company_id: caller.company_id.clone(),
        client_id: caller.client_id.clone(),
        request_id: info.request_id,
        idempotency_key: info.idempotency_key,
        at: Timestamp::now(),
    }
}

/// ETag and consistency token of a user write.
fn user_headers(doc: &UserDoc) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, etag(doc.version));
    h.insert(
        super::consistency::HEADER,
        Token::new("user", doc.id, doc.version).header_value(),
    );
    h
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header value")
}

/// Hashes secrets off the async executor: Argon2id is CPU-bound by design.
async fn hash_all(secrets: Vec<Secret>) -> Result<Vec<String>, ApiError> {
    tokio::task::spawn_blocking(move || secrets.iter().map(secret::hash).collect())
        .await
        .map_err(ApiError::internal)
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
    Body(request): Body<EnrollUserRequest>,
) -> Result<Response, ApiError> {
    let e = request.validate().map_err(ApiError::Validation)?;
    let mut secrets: Vec<Secret> = e
        .verification_questions
        .iter()
        .map(|q| q.answer.clone())
        .collect();
    secrets.extend(e.password.clone());
    let mut hashes = hash_all(secrets).await?;
    let password_hash = e.password.is_some().then(|| hashes.pop()).flatten();
    let verification_questions = e
        .verification_questions
        .into_iter()
        .zip(hashes)
        .map(|(q, answer_hash)| QuestionHash {
            code: q.code,
            answer_hash,
        })
        .collect();
    let user_id = Uuid::now_v7();
    let meta = meta(&caller, info);
    let command = UserCommand {
        company_id: caller.company_id.clone(),
        at: meta.at,
        action: UserAction::Enroll(Box::new(EnrollUser {
            user_id,
            profile: e.profile,
            status: e.status,
            status_reason: e.status_reason,
            kyc: e.kyc,
            parent_user_id: e.parent_user_id,
            account: e.account,
            password_hash,
            verification_questions,
        })),
    };
    let Committed { doc, .. } = state
        .commands
        .user(user_id, command, meta, Load::Fresh)
        .await?;
    let mut headers = user_headers(&doc);
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/v1/users/{user_id}"))
            .expect("uuid is a valid header value"),
    );
    Ok((StatusCode::CREATED, headers, Json(doc)).into_response())
}

/// Retrieve a user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id"), super::openapi::ConsistencyToken),
    responses(
        (status = 200, description = "The user", body = UserDoc, headers(("ETag" = String))),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn retrieve(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersRead>,
    read_after: ReadAfter,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::user_not_found())?;
    read_after.wait(&state.pool, PROJECTION).await?;
    let doc = users::get(&state.pool, &caller.company_id, id)
        .await?
        .ok_or_else(ApiError::user_not_found)?;
    Ok(([(header::ETAG, etag(doc.version))], Json(doc)).into_response())
}

/// List users, oldest first.
#[utoipa::path(get, path = "/v1/users", tag = "users",
    params(
        ("limit" = Option<u32>, Query, description = "1..=100, default 10", minimum = 1, maximum = 100),
        ("after" = Option<String>, Query, description = "Cursor from next_cursor"),
        ("status" = Option<UserStatus>, Query, description = "Only users with this status"),
        ("parent_user_id" = Option<String>, Query, description = "Only children of this user"),
        super::openapi::ConsistencyToken),
    responses(
        (status = 200, description = "A page of users", body = super::openapi::UserPage),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersRead>,
    read_after: ReadAfter,
    mut paging: Paging,
) -> Result<Response, ApiError> {
    let status = match paging.rest.remove("status") {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<UserStatus>(serde_json::Value::String(s)).map_err(|_| {
                ApiError::field("status", "must be inactive, active, blocked or closed")
            })?,
        ),
    };
    let parent_user_id = match paging.rest.remove("parent_user_id") {
        None => None,
        Some(p) => Some(
            p.parse::<Uuid>()
                .map_err(|_| ApiError::field("parent_user_id", "must be a user id"))?,
        ),
    };
    read_after.wait(&state.pool, PROJECTION).await?;
    let query = ListUsers {
        status,
        parent_user_id,
        limit: paging.limit,
        after: paging.after,
    };
    let page = users::list(&state.pool, &caller.company_id, &query).await?;
    Ok(Json(page).into_response())
}
