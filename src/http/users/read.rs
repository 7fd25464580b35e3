//! The user routes that read: a user (now or at a past point), lists,
//! search, relationships and the audit trail.

use crate::http::consistency::ReadAfter;
use crate::http::error::ApiError;
use crate::http::extract::{Auth, Paging, UsersRead, Valid, Validate};
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use roster_command::validate::{self, Errors, FieldError};
use roster_events::user::{UserDoc, UserStatus};
use roster_events::Timestamp;
use roster_query::relationships as rel;
use roster_query::users::{self, ListUsers, PROJECTION};
use roster_query::{audit, history};
use uuid::Uuid;

use super::{etag, missing_user, user_id};

/// Retrieve a user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id"),
        ("version" = Option<u64>, Query, description = "The user right after its event n (1..=current), from the event log", minimum = 1),
        ("as_of" = Option<String>, Query, description = "The user right after its last event at or before this RFC 3339 instant, households as of the instant", format = DateTime),
        ("include_verification_details" = Option<bool>, Query, description = "Adds `verification_details` (question codes, lock, attempts remaining, last verified); the answer is then always `{\"encryptedValue\"}` for the client's encryption key (CONTRACT §10)"),
        crate::http::openapi::ConsistencyToken),
    responses(
        (status = 200, description = "The user (or a past state of it)", body = UserDoc, headers(("ETag" = String))),
        (status = 400, response = crate::http::openapi::BadRequest), (status = 401, response = crate::http::openapi::Unauthenticated),
        (status = 403, response = crate::http::openapi::Forbidden), (status = 404, response = crate::http::openapi::NotFound),
        (status = 503, response = crate::http::openapi::Unavailable)),
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
    let details = crate::http::signed::wants_verification_details(query.0.as_deref())?;
    if let Some(at) = point_in_time(query.0.as_deref())? {
        if details {
            return Err(ApiError::field(
                "include_verification_details",
                "is about the user now; not with version or as_of",
            ));
        }
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
    let doc = super::current(&state, &caller, &read_after, id).await?;
    if details {
        // Sent only encrypted: the signed-call layer saw the same query.
        let events = history::verification_events(&state.pool, state.commands.vault(), &caller.company_id, id).await?;
        let details = history::VerificationDetails::fold(&doc, &events);
        let mut body = serde_json::to_value(&doc).map_err(ApiError::internal)?;
        body["verification_details"] = serde_json::to_value(details).map_err(ApiError::internal)?;
        return Ok(([(header::ETAG, etag(doc.version))], Json(body)).into_response());
    }
    Ok(([(header::ETAG, etag(doc.version))], Json(doc)).into_response())
}

/// `?version=<n>` or `?as_of=<RFC 3339>` (not both): a past state.
fn point_in_time(query: Option<&str>) -> Result<Option<history::At>, ApiError> {
    let pairs = match query {
        None | Some("") => return Ok(None),
        Some(q) => crate::http::extract::query_pairs(q)?,
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
        crate::http::openapi::ConsistencyToken),
    responses(
        (status = 200, description = "A page of users", body = crate::http::openapi::UserPage),
        (status = 400, response = crate::http::openapi::BadRequest), (status = 401, response = crate::http::openapi::Unauthenticated),
        (status = 403, response = crate::http::openapi::Forbidden), (status = 503, response = crate::http::openapi::Unavailable)),
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
            Some(serde_json::Value::Number(n)) => crate::http::extract::parse_limit(&n.to_string()).ok(),
            Some(serde_json::Value::String(s)) => crate::http::extract::parse_limit(s).ok(),
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
            .and_then(|a| errors.check("after", validate::text(&a, 1, crate::http::extract::CURSOR_MAX)));
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
    params(crate::http::openapi::ConsistencyToken),
    responses((status = 200, description = "A page of users", body = crate::http::openapi::UserPage),
        (status = 400, response = crate::http::openapi::BadRequest), (status = 401, response = crate::http::openapi::Unauthenticated),
        (status = 403, response = crate::http::openapi::Forbidden), (status = 503, response = crate::http::openapi::Unavailable)),
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
        crate::http::openapi::ConsistencyToken),
    responses((status = 200, description = "Relationships", body = roster_query::relationships::Relationships),
        (status = 400, response = crate::http::openapi::BadRequest), (status = 401, response = crate::http::openapi::Unauthenticated),
        (status = 403, response = crate::http::openapi::Forbidden), (status = 404, response = crate::http::openapi::NotFound)),
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
    responses((status = 200, description = "A page of audit entries", body = crate::http::openapi::AuditPage),
        (status = 400, response = crate::http::openapi::BadRequest), (status = 401, response = crate::http::openapi::Unauthenticated),
        (status = 403, response = crate::http::openapi::Forbidden), (status = 404, response = crate::http::openapi::NotFound)),
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
