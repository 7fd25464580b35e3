//! `/v1/users`: enroll, retrieve, list.

use super::consistency::{ReadAfter, Token};
use super::error::ApiError;
use super::extract::{Auth, Body, Paging, RequestInfo, UsersErase, UsersRead, UsersWrite, Valid, Validate};
use super::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use input::{AccountInput, EnrollUserRequest, KycInput, QuestionInput};
use roster_command::secret::Secret;
use roster_command::user::patch::ProfilePatch;
use roster_command::user::UserAction;
use roster_command::users::{self as app, Change, Enrollment, Question, Target};
use roster_command::validate::{self, Errors, FieldError};
use roster_command::Committed;
use roster_events::user::{Kyc, UserDoc, UserEvent, UserStatus};
use roster_events::Timestamp;
use roster_query::relationships as rel;
use roster_query::users::{self, ListUsers, PROJECTION};
use roster_query::{audit, history};
use uuid::Uuid;

pub mod input;

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
    let mut headers = user_headers(&doc);
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/v1/users/{}", doc.id)).expect("uuid is a valid header value"),
    );
    Ok((StatusCode::CREATED, headers, Json(doc)).into_response())
}

/// Retrieve a user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id"),
        ("version" = Option<u64>, Query, description = "The user right after its event n (1..=current), from the event log", minimum = 1),
        ("as_of" = Option<String>, Query, description = "The user right after its last event at or before this RFC 3339 instant, households as of the instant", format = DateTime),
        super::openapi::ConsistencyToken),
    responses(
        (status = 200, description = "The user (or a past state of it)", body = UserDoc, headers(("ETag" = String))),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn retrieve(
    State(state): State<AppState>,
    auth: Auth<UsersRead>,
    read_after: ReadAfter,
    Path(id): Path<String>,
    query: axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    // `GET /v1/users/{id}:getLinkedRelationships` (the router cannot match a
    // suffix inside a segment).
    if let Some(user) = id.strip_suffix(":getLinkedRelationships") {
        return relationships(State(state), auth, read_after, Path(user.to_string()), query).await;
    }
    let Auth(caller, ..) = auth;
    let id: Uuid = id.parse().map_err(|_| ApiError::user_not_found())?;
    if let Some(at) = point_in_time(query.0.as_deref())? {
        let doc = match history::user_at(&state.pool, state.commands.vault(), &caller.company_id, id, at).await? {
            history::Past::Found(doc) => doc,
            history::Past::NotFound => return Err(missing_user(&state, &caller.company_id, id).await),
            history::Past::AfterCurrent { current } => {
                return Err(ApiError::field(
                    "version",
                    format!("must be from 1 to the current version, {current}"),
                ))
            }
        };
        return Ok(([(header::ETAG, etag(doc.version))], Json(doc)).into_response());
    }
    read_after.wait(&state.pool, PROJECTION, &caller.company_id).await?;
    let Some(doc) = users::get(&state.pool, &caller.company_id, id).await? else {
        return Err(missing_user(&state, &caller.company_id, id).await);
    };
    Ok(([(header::ETAG, etag(doc.version))], Json(doc)).into_response())
}

/// `?version=<n>` or `?as_of=<RFC 3339>` (not both): a past state.
fn point_in_time(query: Option<&str>) -> Result<Option<history::At>, ApiError> {
    let pairs = match query {
        None | Some("") => return Ok(None),
        Some(q) => super::extract::query_pairs(q)?,
    };
    let get = |name: &str| pairs.get(name).map(String::as_str);
    match (get("version"), get("as_of")) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::field("as_of", "give either version or as_of, not both")),
        (Some(v), None) => match v.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Some(history::At::Version(n))),
            _ => Err(ApiError::field("version", "must be a positive integer")),
        },
        (None, Some(t)) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| Some(history::At::Instant(Timestamp::from(t.with_timezone(&chrono::Utc)))))
            .map_err(|_| ApiError::field("as_of", "must be an RFC 3339 instant such as 2026-03-31T23:59:59Z")),
    }
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
            serde_json::from_value::<UserStatus>(serde_json::Value::String(s))
                .map_err(|_| ApiError::field("status", "must be inactive, active, blocked or closed"))?,
        ),
    };
    let parent_user_id = match paging.rest.remove("parent_user_id") {
        None => None,
        Some(p) => Some(
            p.parse::<Uuid>()
                .map_err(|_| ApiError::field("parent_user_id", "must be a user id"))?,
        ),
    };
    read_after.wait(&state.pool, PROJECTION, &caller.company_id).await?;
    let query = ListUsers {
        status,
        parent_user_id,
        limit: paging.limit,
        after: paging.after,
    };
    let page = users::list(&state.pool, &caller.company_id, &query).await?;
    Ok(Json(page).into_response())
}

/// A user id from the path: not a UUID cannot name a user.
fn user_id(id: &str) -> Result<Uuid, ApiError> {
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
fn target(id: &str, headers: &HeaderMap) -> Result<Target, ApiError> {
    Ok(Target {
        id: user_id(id)?,
        expected_version: if_match(headers)?,
    })
}

fn user_response(status: StatusCode, doc: UserDoc) -> Response {
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
    let serde_json::Value::Object(fields) = body else {
        return Err(ApiError::field("body", "must be a JSON object"));
    };
    let mut change = Change::default();
    let mut profile = serde_json::Map::new();
    let mut errors = Vec::new();
    for (key, value) in fields {
        match key.as_str() {
            "password" => match value.as_str().map(validate::field::password) {
                Some(Ok(p)) => change.password = Some(Secret::new(p)),
                // A value that is not text breaks the same rule.
                _ => errors.push(FieldError::new("password", "must be 8 to 128 characters")),
            },
            "parent_user_id" => match &value {
                serde_json::Value::Null => change.parent = Some(None),
                v => match v.as_str().and_then(|s| s.parse::<Uuid>().ok()) {
                    Some(p) => change.parent = Some(Some(p)),
                    None => errors.push(FieldError::new("parent_user_id", "must be a user id or null")),
                },
            },
            "status" | "status_reason" => {
                errors.push(FieldError::new(&key, "is changed with POST /v1/users/{id}/status"))
            }
            "kyc" => errors.push(FieldError::new(&key, "is changed with PATCH /v1/users/{id}/kyc")),
            "verification_questions" => errors.push(FieldError::new(
                &key,
                "is changed with PUT /v1/users/{id}/verification-questions",
            )),
            "account" | "accounts" => errors.push(FieldError::new(&key, "is added with POST /v1/users/{id}/accounts")),
            // A profile field, or one `ProfilePatch` reports as unknown.
            _ => {
                profile.insert(key, value);
            }
        }
    }
    // Every profile field is checked by its rule here; what spans fields
    // (an identifier kept, a merged address whole) the aggregate checks.
    match ProfilePatch::parse(profile) {
        Ok(patch) => change.patch = patch,
        Err(more) => errors.extend(more),
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let c = app::change(&state.commands, info.meta(&caller), target(&id, &headers)?, change).await?;
    Ok(user_response(StatusCode::OK, c.doc))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParentRequest {
    pub parent_user_id: Uuid,
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

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuestionsRequest {
    pub questions: Vec<QuestionInput>,
}

impl Validate for QuestionsRequest {
    type Valid = Vec<Question>;

    fn validate(self) -> Result<Self::Valid, Vec<FieldError>> {
        let mut errors = Errors::default();
        let questions = input::questions(&mut errors, "questions", &self.questions);
        errors.into_result(questions)
    }
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

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub code: String,
    pub answer: String,
}

impl Validate for VerifyRequest {
    type Valid = UserAction;

    fn validate(self) -> Result<UserAction, Vec<FieldError>> {
        let mut errors = Errors::default();
        let code = errors.check("code", validate::field::QUESTION_CODE(&self.code));
        let answer = errors.check("answer", validate::field::answer(&self.answer));
        let (code, answer) = errors.into_result((code, answer))?;
        Ok(UserAction::Verify {
            code: code.unwrap_or_default(),
            answer: Secret::new(answer.unwrap_or_default()),
        })
    }
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

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    pub status: UserStatus,
    pub reason: Option<String>,
}

impl Validate for StatusRequest {
    type Valid = UserAction;

    fn validate(self) -> Result<UserAction, Vec<FieldError>> {
        let mut errors = Errors::default();
        let reason = self
            .reason
            .and_then(|r| errors.check("reason", validate::field::STATUS_REASON(&r)));
        errors.into_result(UserAction::ChangeStatus {
            status: self.status,
            reason,
        })
    }
}

impl Validate for KycInput {
    type Valid = UserAction;

    fn validate(self) -> Result<UserAction, Vec<FieldError>> {
        let mut errors = Errors::default();
        let kyc_id = self
            .kyc_id
            .and_then(|k| errors.check("kyc_id", validate::field::KYC_ID(&k)));
        errors.into_result(UserAction::UpdateKyc(Kyc {
            kyc_id,
            status: self.status,
        }))
    }
}

impl Validate for AccountInput {
    type Valid = UserAction;

    fn validate(self) -> Result<UserAction, Vec<FieldError>> {
        input::account(&self).map(UserAction::AddAccount)
    }
}

impl Validate for EnrollUserRequest {
    type Valid = Enrollment;

    fn validate(self) -> Result<Enrollment, Vec<FieldError>> {
        EnrollUserRequest::validate(self)
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

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Case-insensitive substring of the first, last or full name.
    pub name: Option<String>,
    /// Exact, case-insensitive.
    pub email: Option<String>,
    /// Exact, after normalising to E.164.
    pub mobile: Option<String>,
    pub status: Option<UserStatus>,
    pub parent_user_id: Option<Uuid>,
    /// 1..=100 (a number or a numeric string), default 10.
    #[schema(value_type = Option<u32>)]
    pub limit: Option<serde_json::Value>,
    pub after: Option<String>,
}

impl Validate for SearchRequest {
    type Valid = users::SearchUsers;

    fn validate(self) -> Result<users::SearchUsers, Vec<FieldError>> {
        let mut errors = Errors::default();
        let limit = match &self.limit {
            None | Some(serde_json::Value::Null) => Some(10),
            Some(serde_json::Value::Number(n)) => super::extract::parse_limit(&n.to_string()).ok(),
            Some(serde_json::Value::String(s)) => super::extract::parse_limit(s).ok(),
            Some(_) => None,
        };
        if limit.is_none() {
            errors.add("limit", "must be an integer from 1 to 100");
        }
        let mobile = self
            .mobile
            .as_deref()
            .and_then(|m| errors.check("mobile", validate::mobile(m)));
        let name = self
            .name
            .as_deref()
            .and_then(|n| errors.check("name", validate::text(n, 1, 100)));
        let email = self
            .email
            .as_deref()
            .and_then(|e| errors.check("email", validate::text(e, 1, 254)));
        let after = self
            .after
            .and_then(|a| errors.check("after", validate::text(&a, 1, super::extract::CURSOR_MAX)));
        errors.into_result(users::SearchUsers {
            name,
            email,
            mobile,
            status: self.status,
            parent_user_id: self.parent_user_id,
            limit: limit.unwrap_or(10),
            after,
        })
    }
}

/// Search users; filters are AND-ed, pages are stable while users are added.
#[utoipa::path(post, path = "/v1/users:search", tag = "users", request_body = SearchRequest,
    params(super::openapi::ConsistencyToken),
    responses((status = 200, description = "A page of users", body = super::openapi::UserPage),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn search(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersRead>,
    read_after: ReadAfter,
    Valid(query): Valid<SearchRequest>,
) -> Result<Response, ApiError> {
    read_after.wait(&state.pool, PROJECTION, &caller.company_id).await?;
    Ok(Json(users::search(&state.pool, &caller.company_id, &query).await?).into_response())
}

/// Parent, ancestors (nearest first), children and descendants: every level,
/// or `depth` levels up and down.
#[utoipa::path(get, path = "/v1/users/{id}/relationships", tag = "users",
    params(("id" = String, Path, description = "User id; `/v1/users/{id}:getLinkedRelationships` is the same route"),
        ("depth" = Option<u32>, Query, description = "Levels up and down (a positive integer); default: all", minimum = 1),
        super::openapi::ConsistencyToken),
    responses((status = 200, description = "Relationships", body = roster_query::relationships::Relationships),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn relationships(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersRead>,
    read_after: ReadAfter,
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let id = user_id(&id)?;
    let depth = match query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|p| p.strip_prefix("depth="))
    {
        None => None,
        Some(d) => match d.parse::<u32>() {
            Ok(d) if d >= 1 => Some(d),
            _ => return Err(ApiError::field("depth", "must be a positive integer")),
        },
    };
    read_after.wait(&state.pool, PROJECTION, &caller.company_id).await?;
    // Erased is final and known at once; the view may not have caught up.
    state.commands.user_exists(&caller.company_id, id).await?;
    let Some(r) = rel::get(&state.pool, &caller.company_id, id, depth).await? else {
        return Err(missing_user(&state, &caller.company_id, id).await);
    };
    Ok(Json(r).into_response())
}

/// The user's events, oldest first, from the event log (public data only).
#[utoipa::path(get, path = "/v1/users/{id}/events", tag = "users",
    params(("id" = String, Path, description = "User id"), ("limit" = Option<u32>, Query, description = "1..=100, default 10"),
        ("after" = Option<String>, Query, description = "Cursor")),
    responses((status = 200, description = "A page of audit entries", body = super::openapi::AuditPage),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn audit_trail(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<UsersRead>,
    Path(id): Path<String>,
    paging: Paging,
) -> Result<Response, ApiError> {
    let id = user_id(&id)?;
    let page = audit::user_events(
        &state.pool,
        state.commands.vault(),
        &caller.company_id,
        id,
        paging.limit,
        paging.after.as_deref(),
    )
    .await?
    .ok_or_else(ApiError::user_not_found)?;
    Ok(Json(page).into_response())
}
