//! `/v1/webhook-endpoints` (CONTRACT §9): a company's webhook endpoints,
//! their secrets and deliveries, and replay. Scope `webhooks`.

use super::error::ApiError;
use super::extract::{Auth, Body, Paging, Webhooks};
use super::idempotency::HoldsSecret;
use super::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use roster_command::user::patch::Patch;
use roster_command::validate;
use roster_projections::engine;
use roster_projections::webhooks::address;
use roster_projections::webhooks::endpoints::{self, Change, Delivery, Endpoint, NewEndpoint};
use roster_query::{cursor, Page};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhook-endpoints", get(list).post(create))
        .route("/v1/webhook-endpoints/{id}", get(retrieve).patch(update).delete(remove))
        .route("/v1/webhook-endpoints/{id}/secret", get(secret))
        .route("/v1/webhook-endpoints/{id}/secret/rotate", post(rotate))
        .route("/v1/webhook-endpoints/{id}/deliveries", get(deliveries))
        .route("/v1/webhook-endpoints/{id}/replay", post(replay))
}

/// Longest description.
const DESCRIPTION_MAX: usize = 500;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// An absolute `https` URL (at most 2,048 characters) whose host is public.
    pub url: String,
    pub description: Option<String>,
    /// CloudEvents types (`roster.user.updated.v1`, …); absent or null: every type.
    pub event_types: Option<Vec<String>>,
    pub disabled: Option<bool>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    pub url: Option<String>,
    /// `null` clears it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub description: Patch<String>,
    /// `null`: every type.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub event_types: Patch<Vec<String>>,
    pub disabled: Option<bool>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// RFC 3339 instant: events appended at or after it are delivered again.
    pub since: String,
    /// Only deliveries that failed.
    pub only_failed: Option<bool>,
}

/// A new endpoint, with its signing secret.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_` and the base64 of 32 bytes.
    pub secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Secret {
    pub secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Replayed {
    pub replayed: u64,
}

/// The deliveries list's cursor: the last delivery's place in the log.
fn encode_position(position: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position.to_be_bytes())
}

fn decode_position(cursor: &str) -> Result<i64, ApiError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_be_bytes)
        .ok_or_else(|| ApiError::field("after", "is not a cursor this API returned"))
}

fn not_found() -> ApiError {
    ApiError::NotFound("WEBHOOK_ENDPOINT_NOT_FOUND", "No such webhook endpoint.")
}

fn endpoint_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| not_found())
}

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::internal(format!("{e:#}"))
}

/// Checks what the fields hold; the URL's host is resolved (so this waits
/// on DNS).
async fn check(
    state: &AppState,
    errors: &mut validate::Errors,
    url: Option<&str>,
    description: Option<&Option<String>>,
    event_types: Option<&Option<Vec<String>>>,
) -> (Option<String>, Option<Option<String>>, Option<Option<Vec<String>>>) {
    let url = match url {
        Some(u) => match address::check_url(u.trim(), state.webhooks.allow_private).await {
            Ok(url) => Some(url.to_string()),
            Err(message) => {
                errors.add("url", message);
                None
            }
        },
        None => None,
    };
    let description = description.map(|d| {
        d.as_ref()
            .and_then(|d| errors.check("description", validate::text(d, 0, DESCRIPTION_MAX)))
            .filter(|d| !d.is_empty())
    });
    let event_types = event_types.map(|types| {
        let types = types.as_ref()?;
        if types.is_empty() {
            errors.add(
                "event_types",
                "must name at least one event type, or be null for every type",
            );
            return None;
        }
        let mut known = Vec::with_capacity(types.len());
        for t in types {
            if !roster_events::CLOUD_EVENT_TYPES.contains(&t.as_str()) {
                errors.add("event_types", format!("{t:?} is not an event type (see CONTRACT §8)"));
            } else if !known.contains(t) {
                known.push(t.clone());
            }
        }
        Some(known)
    });
    (url, description, event_types)
}

/// Wakes the deliverer (of any process): something became due.
async fn wake(state: &AppState) {
    if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
        .bind(engine::CHANNEL)
        .execute(&state.pool)
        .await
    {
        tracing::debug!(error = %e, "cannot wake the deliverer; it polls");
    }
}

/// Create a webhook endpoint.
#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhooks", operation_id = "create_webhook_endpoint", request_body = CreateEndpoint,
    params(super::openapi::IdempotencyKey),
    responses((status = 201, description = "Created, with its secret", body = CreatedEndpoint),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 503, response = super::openapi::Unavailable)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<Webhooks>,
    Body(body): Body<CreateEndpoint>,
) -> Result<Response, ApiError> {
    let mut errors = validate::Errors::default();
    let (url, description, event_types) = check(
        &state,
        &mut errors,
        Some(&body.url),
        Some(&body.description),
        Some(&body.event_types),
    )
    .await;
    let new = errors
        .into_result(NewEndpoint {
            url: url.unwrap_or_default(),
            description: description.flatten(),
            event_types: event_types.flatten(),
            disabled: body.disabled.unwrap_or(false),
        })
        .map_err(ApiError::Validation)?;
    let (endpoint, secret) = endpoints::create(&state.pool, &state.vault, &caller.company_id, new).await?;
    let location =
        HeaderValue::from_str(&format!("/v1/webhook-endpoints/{}", endpoint.id)).expect("uuid is a valid header value");
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(CreatedEndpoint { endpoint, secret }),
    )
        .into_response();
    response.extensions_mut().insert(HoldsSecret);
    Ok(response)
}

/// The company's webhook endpoints, oldest first (no secrets).
#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhooks", operation_id = "list_webhook_endpoints",
    params(("limit" = Option<u32>, Query, description = "1..=100, default 10"), ("after" = Option<String>, Query, description = "Cursor")),
    responses((status = 200, description = "A page of endpoints", body = super::openapi::EndpointPage),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<Webhooks>,
    paging: Paging,
) -> Result<Response, ApiError> {
    let after = paging.after.as_deref().map(cursor::decode_id).transpose()?;
    let rows = endpoints::list(&state.pool, &caller.company_id, after, paging.limit as i64 + 1).await?;
    Ok(Json(Page::from_rows(rows, paging.limit, |e: &Endpoint| {
        cursor::encode_id(e.id)
    }))
    .into_response())
}

/// Retrieve a webhook endpoint (no secret).
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", operation_id = "retrieve_webhook_endpoint",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "The endpoint", body = Endpoint),
        (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn retrieve(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<Webhooks>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let endpoint = endpoints::get(&state.pool, &caller.company_id, endpoint_id(&id)?)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(endpoint).into_response())
}

/// Change a webhook endpoint. Enabling it clears `disabled_reason`, and
/// what it missed while disabled is delivered.
#[utoipa::path(patch, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", operation_id = "update_webhook_endpoint", request_body = UpdateEndpoint,
    params(("id" = String, Path, description = "Endpoint id"), super::openapi::IdempotencyKey),
    responses((status = 200, description = "The endpoint", body = Endpoint),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<Webhooks>,
    Path(id): Path<String>,
    Body(body): Body<UpdateEndpoint>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&id)?;
    let mut errors = validate::Errors::default();
    let (url, description, event_types) = check(
        &state,
        &mut errors,
        body.url.as_deref(),
        body.description.into_option().as_ref(),
        body.event_types.into_option().as_ref(),
    )
    .await;
    let change = errors
        .into_result(Change {
            url,
            description,
            event_types,
            disabled: body.disabled,
        })
        .map_err(ApiError::Validation)?;
    let enabled = change.disabled == Some(false);
    let endpoint = endpoints::update(&state.pool, &caller.company_id, id, change)
        .await?
        .ok_or_else(not_found)?;
    if enabled {
        wake(&state).await;
    }
    Ok(Json(endpoint).into_response())
}

/// Delete a webhook endpoint and its deliveries: nothing more is sent to it.
#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", operation_id = "delete_webhook_endpoint",
    params(("id" = String, Path, description = "Endpoint id"), super::openapi::IdempotencyKey),
    responses((status = 204, description = "Deleted"),
        (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<Webhooks>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !endpoints::delete(&state.pool, &caller.company_id, endpoint_id(&id)?).await? {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The endpoint's signing secret.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/secret", tag = "webhooks", operation_id = "retrieve_webhook_endpoint_secret",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "The current secret", body = Secret),
        (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn secret(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<Webhooks>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let secret = endpoints::secret(&state.pool, &state.vault, &caller.company_id, endpoint_id(&id)?)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    Ok(Json(Secret { secret }).into_response())
}

/// Rotate the signing secret: the new one signs from now on, and the old
/// one keeps signing beside it for 24 hours.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/secret/rotate", tag = "webhooks", operation_id = "rotate_webhook_endpoint_secret",
    params(("id" = String, Path, description = "Endpoint id"), super::openapi::IdempotencyKey),
    responses((status = 200, description = "The new secret", body = Secret),
        (status = 401, response = super::openapi::Unauthenticated), (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn rotate(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<Webhooks>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let secret = endpoints::rotate(&state.pool, &state.vault, &caller.company_id, endpoint_id(&id)?)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let mut response = Json(Secret { secret }).into_response();
    response.extensions_mut().insert(HoldsSecret);
    Ok(response)
}

/// The endpoint's deliveries, newest first.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/deliveries", tag = "webhooks", operation_id = "list_webhook_deliveries",
    params(("id" = String, Path, description = "Endpoint id"),
        ("status" = Option<String>, Query, description = "pending, delivered or failed"),
        ("limit" = Option<u32>, Query, description = "1..=100, default 10"), ("after" = Option<String>, Query, description = "Cursor")),
    responses((status = 200, description = "A page of deliveries", body = super::openapi::DeliveryPage),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<Webhooks>,
    Path(id): Path<String>,
    mut paging: Paging,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&id)?;
    let status = paging.rest.remove("status");
    if let Some(s) = &status {
        if !endpoints::STATUSES.contains(&s.as_str()) {
            return Err(ApiError::field("status", "must be pending, delivered or failed"));
        }
    }
    let after = paging.after.as_deref().map(decode_position).transpose()?;
    let rows = endpoints::deliveries(
        &state.pool,
        &caller.company_id,
        id,
        status.as_deref(),
        after,
        paging.limit as i64 + 1,
    )
    .await?
    .ok_or_else(not_found)?;
    Ok(Json(Page::from_rows(rows, paging.limit, |d: &Delivery| {
        encode_position(d.position)
    }))
    .into_response())
}

/// Deliver again every event since an instant (only the failed deliveries
/// with `only_failed`), in order.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/replay", tag = "webhooks", operation_id = "replay_webhook_deliveries", request_body = ReplayRequest,
    params(("id" = String, Path, description = "Endpoint id"), super::openapi::IdempotencyKey),
    responses((status = 202, description = "Accepted: how many deliveries will be made", body = Replayed),
        (status = 400, response = super::openapi::BadRequest), (status = 401, response = super::openapi::Unauthenticated),
        (status = 403, response = super::openapi::Forbidden), (status = 404, response = super::openapi::NotFound)),
    security(("bearer" = [], "app_id" = [])))]
pub async fn replay(
    State(state): State<AppState>,
    Auth(caller, ..): Auth<Webhooks>,
    Path(id): Path<String>,
    Body(body): Body<ReplayRequest>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&id)?;
    let since = chrono::DateTime::parse_from_rfc3339(body.since.trim())
        .map_err(|_| ApiError::field("since", "must be an RFC 3339 instant"))?
        .to_utc();
    let replayed = endpoints::replay(
        &state.pool,
        &caller.company_id,
        id,
        since,
        body.only_failed.unwrap_or(false),
    )
    .await?
    .ok_or_else(not_found)?;
    wake(&state).await;
    Ok((StatusCode::ACCEPTED, Json(Replayed { replayed })).into_response())
}
