//! The Cradl routes (CONTRACT §11, `seeds/cradl-users.md`): another door to
//! the same use cases as `/v1` (enroll with a password, retrieve, update
//! KYC), with Cradl's paths, field names and shapes. Each handler reads
//! Cradl's body into the `/v1` input, lets `/v1`'s validation judge it (its
//! errors renamed back to Cradl's fields), runs the same use case and
//! answers with the same headers. Every error under `/v2/users`, whichever
//! extractor, use case or layer raised it, leaves as Cradl's error body (see
//! [`errors`]).

use super::consistency::ReadAfter;
use super::error::ApiError;
use super::extract::{Auth, RequestInfo, UsersRead, UsersWrite, Valid, Validate};
use super::users::input::{EnrollUserRequest, KycInput};
use super::users::{created_headers, current, etag, target, user_headers, user_id};
use super::AppState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use roster_command::user::UserAction;
use roster_command::users::{self as app, Enrollment};
use roster_command::validate::FieldError;
use roster_command::Committed;
use roster_events::user::UserDoc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/users", post(create_user))
        .route("/v2/users/{user_id}", get(get_user).patch(update_kyc))
}

/// Whether a request path is the Cradl door's.
pub fn is_cradl(path: &str) -> bool {
    path == "/v2/users" || path.starts_with("/v2/users/")
}

/// `/v1` field names and theirs.
const NAMES: [(&str, &str); 3] = [
    ("email", "login.email"),
    ("password", "login.password"),
    ("mobile", "phone_number"),
];

/// A `/v1` field name as Cradl spells it (the rest of a nested path kept).
#[cfg(test)]
fn cradl_field(field: &str) -> String {
    super::error::renamed_field(field, &NAMES)
}

/// `/v1`'s field errors under Cradl's names.
fn cradl_errors_named(errors: Vec<FieldError>) -> Vec<FieldError> {
    super::error::renamed(errors, &NAMES)
}

/// A Cradl error: §6's code(s), and for validation one `VALIDATION_FAILED`
/// per invalid field with `errors[]` beside them.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CradlError {
    /// The user the request named, or null.
    pub user_id: Option<String>,
    /// CONTRACT §6 codes (`USER_NOT_FOUND`, `EMAIL_TAKEN`, …).
    pub error_codes: Vec<String>,
    /// With `VALIDATION_FAILED`: each invalid field (Cradl's names).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<super::openapi::FieldErrorDoc>>)]
    pub errors: Option<Vec<serde_json::Value>>,
}

/// A layer around the whole router (outside the idempotency layer, so its
/// refusals and the 405 fallback are covered too): rewrites the §2 problem
/// of any failure under `/v2/users` (auth, scope, body, validation, use
/// case, idempotency, method) into Cradl's error body, keeping its status
/// and headers (`WWW-Authenticate`, `Retry-After`, `Allow`); `content-type`
/// becomes `application/json`. `user_id` is the path's id as sent (the
/// caller's own input), null on `POST /v2/users`. Other paths pass as they
/// are.
pub async fn errors(req: Request, next: Next) -> Response {
    if !is_cradl(req.uri().path()) {
        return next.run(req).await;
    }
    let user = req
        .uri()
        .path()
        .strip_prefix("/v2/users/")
        .filter(|s| !s.is_empty() && !s.contains('/'))
        .map(str::to_string);
    let response = next.run(req).await;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, super::BODY_LIMIT).await else {
        return ApiError::internal("cannot read a problem body").into_response();
    };
    let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let code = problem["code"].as_str().unwrap_or("INTERNAL").to_string();
    let errors = problem["errors"].as_array().cloned();
    let error_codes = match &errors {
        Some(e) if code == "VALIDATION_FAILED" && !e.is_empty() => vec![code; e.len()],
        _ => vec![code],
    };
    let body = CradlError {
        user_id: user,
        error_codes,
        errors,
    };
    let bytes = serde_json::to_vec(&body).expect("a Cradl error serialises");
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// Cradl's login object at creation.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CradlLoginInput {
    /// Unique within the company; becomes the user's `email` and `login.email`.
    pub email: String,
    /// Stored only as a hash; never returned.
    #[schema(format = Password)]
    pub password: String,
}

/// `POST /v2/users` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CradlCreateUser {
    pub login: CradlLoginInput,
    /// The user's mobile number (used for MFA).
    pub phone_number: Option<String>,
    pub first_name: String,
    pub last_name: String,
}

impl Validate for CradlCreateUser {
    type Valid = Enrollment;

    fn validate(self) -> Result<Enrollment, Vec<FieldError>> {
        EnrollUserRequest {
            first_name: Some(self.first_name),
            last_name: Some(self.last_name),
            email: Some(self.login.email),
            password: Some(self.login.password),
            mobile: self.phone_number,
            ..EnrollUserRequest::default()
        }
        .validate()
        .map_err(cradl_errors_named)
    }
}

/// What Cradl's writes answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CradlWritten {
    pub user_id: Uuid,
    /// Always empty on success.
    pub error_codes: Vec<String>,
}

fn written(status: StatusCode, headers: HeaderMap, doc: &UserDoc) -> Response {
    let body = CradlWritten {
        user_id: doc.id,
        error_codes: Vec::new(),
    };
    (status, headers, Json(body)).into_response()
}

/// Create a user (Cradl): enroll with a password, as `POST /v1/users`.
#[utoipa::path(post, path = "/v2/users", tag = "cradl", operation_id = "cradl_create_user",
    request_body = CradlCreateUser,
    params(super::openapi::IdempotencyKey),
    responses(
        (status = 201, description = "Enrolled", body = CradlWritten, headers(("Location" = String), ("ETag" = String), ("Roster-Consistency-Token" = String))),
        (status = 400, description = "VALIDATION_FAILED (once per field, with errors[]) or MALFORMED_REQUEST", body = CradlError),
        (status = 401, description = "UNAUTHENTICATED", body = CradlError),
        (status = 403, description = "FORBIDDEN", body = CradlError),
        (status = 409, description = "EMAIL_TAKEN, ...", body = CradlError),
        (status = 503, description = "UNAVAILABLE", body = CradlError)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Valid(enrollment): Valid<CradlCreateUser>,
) -> Result<Response, ApiError> {
    let Committed { doc, .. } = app::enroll(&state.commands, info.meta(&caller), enrollment).await?;
    Ok(written(StatusCode::CREATED, created_headers(&doc, "/v2/users"), &doc))
}

/// Cradl's login object: the email only, never the password.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CradlLogin {
    pub email: Option<String>,
}

/// A Cradl user.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CradlUser {
    pub id: Uuid,
    /// The KYC reference (`kyc.kyc_id` on `/v1`).
    pub kyc_id: Option<String>,
    pub login: CradlLogin,
    /// The user's mobile number.
    pub phone_number: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// The ids of the user's accounts.
    pub account_ids: Vec<String>,
    /// Always empty on success.
    pub error_codes: Vec<String>,
}

impl From<UserDoc> for CradlUser {
    fn from(doc: UserDoc) -> Self {
        let p = doc.profile;
        CradlUser {
            id: doc.id,
            kyc_id: doc.kyc.and_then(|k| k.kyc_id),
            login: CradlLogin {
                email: doc.login.and_then(|l| l.email).or(p.email),
            },
            phone_number: p.mobile,
            first_name: p.first_name,
            last_name: p.last_name,
            account_ids: doc.accounts.into_iter().map(|a| a.account.account_id).collect(),
            error_codes: Vec::new(),
        }
    }
}

/// Get a user (Cradl): the same read as `GET /v1/users/{id}`.
#[utoipa::path(get, path = "/v2/users/{user_id}", tag = "cradl", operation_id = "cradl_get_user",
    params(("user_id" = String, Path, description = "User id"), super::openapi::ConsistencyToken),
    responses(
        (status = 200, description = "The user", body = CradlUser, headers(("ETag" = String))),
        (status = 401, description = "UNAUTHENTICATED", body = CradlError),
        (status = 403, description = "FORBIDDEN", body = CradlError),
        (status = 404, description = "USER_NOT_FOUND", body = CradlError),
        (status = 410, description = "USER_ERASED", body = CradlError),
        (status = 503, description = "UNAVAILABLE or NOT_YET_CONSISTENT", body = CradlError)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn get_user(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersRead>,
    read_after: ReadAfter,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let doc = current(&state, &caller, &read_after, user_id(&id)?).await?;
    Ok(([(header::ETAG, etag(doc.version))], Json(CradlUser::from(doc))).into_response())
}

/// `PATCH /v2/users/{user_id}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CradlKycRequest {
    /// The id of the user's KYC object (1..=100 characters).
    pub kyc_id: String,
}

/// `kyc_id` maps onto `/v1`'s `PATCH /v1/users/{id}/kyc` body
/// `{"kyc_id": <kyc_id>}` with no `status`: the same `UpdateKyc` action,
/// which sets `kyc.kyc_id` and keeps the KYC status the user already has
/// (the action merges; an unchanged id records no event).
impl Validate for CradlKycRequest {
    type Valid = UserAction;

    fn validate(self) -> Result<UserAction, Vec<FieldError>> {
        KycInput {
            kyc_id: Some(self.kyc_id),
            status: None,
        }
        .validate()
        .map_err(cradl_errors_named)
    }
}

/// Update a user's KYC reference (Cradl): `PATCH /v1/users/{id}/kyc` with
/// `kyc_id` only.
#[utoipa::path(patch, path = "/v2/users/{user_id}", tag = "cradl", operation_id = "cradl_update_kyc",
    request_body = CradlKycRequest,
    params(("user_id" = String, Path, description = "User id"), super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses(
        (status = 200, description = "KYC updated", body = CradlWritten, headers(("ETag" = String), ("Roster-Consistency-Token" = String))),
        (status = 400, description = "VALIDATION_FAILED (once per field, with errors[]) or MALFORMED_REQUEST", body = CradlError),
        (status = 401, description = "UNAUTHENTICATED", body = CradlError),
        (status = 403, description = "FORBIDDEN", body = CradlError),
        (status = 404, description = "USER_NOT_FOUND", body = CradlError),
        (status = 409, description = "CONCURRENT_MODIFICATION, ...", body = CradlError),
        (status = 412, description = "PRECONDITION_FAILED", body = CradlError),
        (status = 503, description = "UNAVAILABLE", body = CradlError)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn update_kyc(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersWrite>,
    info: RequestInfo,
    Path(id): Path<String>,
    headers: HeaderMap,
    Valid(action): Valid<CradlKycRequest>,
) -> Result<Response, ApiError> {
    let c = app::act(&state.commands, info.meta(&caller), target(&id, &headers)?, action).await?;
    Ok(written(StatusCode::OK, user_headers(&c.doc), &c.doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_fields_are_renamed_to_cradls() {
        assert_eq!(cradl_field("email"), "login.email");
        assert_eq!(cradl_field("password"), "login.password");
        assert_eq!(cradl_field("mobile"), "phone_number");
        assert_eq!(cradl_field("first_name"), "first_name");
        assert_eq!(cradl_field("emailx"), "emailx");
    }
}
