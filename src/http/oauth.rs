//! `POST /v1/oauth/token`: client credentials → bearer token.

use super::error::ApiError;
use super::extract::{parse_json, RawBody};
use super::AppState;
use crate::auth::TokenError;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::post;
use axum::{Json, Router};
use roster_command::secret::Secret;
use serde::Deserialize;

/// The token route: bearer tokens only, never signed (CONTRACT §10).
pub const TOKEN_PATH: &str = "/v1/oauth/token";

pub fn router() -> Router<AppState> {
    Router::new().route(TOKEN_PATH, post(token))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    grant_type: String,
    client_id: String,
    client_secret: String,
    /// Accepted and ignored: a token always carries every scope of its client.
    #[serde(default)]
    #[allow(dead_code)]
    scope: Option<String>,
}

/// Get an access token with client credentials: a form
/// (`application/x-www-form-urlencoded`, as OAuth 2.0 says) or JSON.
#[utoipa::path(post, path = "/v1/oauth/token", tag = "auth",
    request_body(content(
        (TokenRequest = "application/x-www-form-urlencoded"),
        (TokenRequest = "application/json"))),
    responses(
        (status = 200, description = "A bearer token", body = crate::auth::AccessToken),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthenticated),
        (status = 503, response = super::openapi::Unavailable)),
    security(()))]
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<crate::auth::AccessToken>, ApiError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let request: TokenRequest = if is_form {
        let pairs: Vec<(String, String)> = form_pairs(&body)?;
        let map: serde_json::Map<String, serde_json::Value> = pairs
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        parse_json(&serde_json::to_vec(&map).map_err(ApiError::internal)?)?
    } else {
        parse_json(&body)?
    };
    if request.grant_type != "client_credentials" {
        return Err(ApiError::field("grant_type", "must be client_credentials"));
    }
    match state
        .tokens
        .issue(&state.pool, &request.client_id, Secret::new(request.client_secret))
        .await
    {
        Ok(t) => Ok(Json(t)),
        Err(TokenError::BadCredentials) => Err(ApiError::Unauthenticated),
        Err(TokenError::Database(e)) => Err(e.into()),
        Err(TokenError::Busy) => Err(ApiError::Unavailable),
        Err(e @ TokenError::Signing) => Err(ApiError::internal(e)),
    }
}

fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::Malformed("the form is not UTF-8".into()))?;
    let uri: axum::http::Uri = format!("/?{text}")
        .parse()
        .map_err(|_| ApiError::Malformed("the form is not URL-encoded".into()))?;
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|_| ApiError::Malformed("the form is not URL-encoded".into()))
}
