//! Extractors: authenticate and authorise, parse and validate, so handlers
//! only issue one command or one query.

use super::error::ApiError;
use super::parse;
use super::AppState;
use crate::auth::{Caller, Scope};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use roster_command::validate::FieldError;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::marker::PhantomData;

/// A scope a route requires.
pub trait Required: Send + Sync {
    const SCOPE: Scope;
}

pub struct UsersRead;
impl Required for UsersRead {
    const SCOPE: Scope = Scope::UsersRead;
}

pub struct UsersWrite;
impl Required for UsersWrite {
    const SCOPE: Scope = Scope::UsersWrite;
}

pub struct CardsWrite;
impl Required for CardsWrite {
    const SCOPE: Scope = Scope::CardsWrite;
}

pub struct UsersErase;
impl Required for UsersErase {
    const SCOPE: Scope = Scope::UsersErase;
}

pub struct Admin;
impl Required for Admin {
    const SCOPE: Scope = Scope::Admin;
}

pub struct Webhooks;
impl Required for Webhooks {
    const SCOPE: Scope = Scope::Webhooks;
}

/// A caller a signed request authenticated, set by [`super::signed::layer`].
#[derive(Debug, Clone)]
pub struct Verified(pub Caller);

/// The caller a signed request authenticated ([`Verified`]), or the
/// one a request's `Authorization: Bearer <token>` and `x-appid` name, if
/// the token is valid for that client.
pub(crate) fn caller(
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
    tokens: &crate::auth::Tokens,
) -> Option<Caller> {
    if let Some(Verified(caller)) = extensions.get() {
        return Some(caller.clone());
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let token =
        header("authorization").and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))?;
    tokens.verify(token.trim(), header("x-appid")?.trim())
}

/// A request's `Idempotency-Key` (CONTRACT §2): `None` without one, 400
/// for a key that is not 1 to 255 visible ASCII characters.
pub(crate) fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) => Ok(Some(k.to_string())),
        _ => Err(ApiError::field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// An authenticated caller holding scope `S`: 401 without valid
/// credentials, 403 without the scope.
pub struct Auth<S: Required>(pub Caller, pub PhantomData<S>);

impl<S: Required> FromRequestParts<AppState> for Auth<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = caller(&parts.headers, &parts.extensions, &state.tokens).ok_or(ApiError::Unauthenticated)?;
        if !caller.has(S::SCOPE) {
            return Err(ApiError::Forbidden(S::SCOPE.as_str()));
        }
        Ok(Auth(caller, PhantomData))
    }
}

/// Longest `X-Request-Id` a client may send.
pub const REQUEST_ID_MAX: usize = 128;

/// Request id (set by the request-id layer), `Idempotency-Key`, and what
/// an earlier attempt with that key committed (set by the idempotency
/// layer, [`super::idempotency`]).
pub struct RequestInfo {
    pub request_id: String,
    pub idempotency_key: Option<String>,
    pub recovered: Option<roster_command::Recovered>,
    /// Filled by the command runner; read by [`super::consistency::stamp`].
    pub appended: roster_command::append::AppendedTo,
}

impl RequestInfo {
    /// The metadata of the command this request issues, timed now.
    pub fn meta(self, caller: &Caller) -> roster_command::Meta {
        roster_command::Meta {
            company_id: caller.company_id.clone(),
            client_id: caller.client_id.clone(),
            request_id: self.request_id,
            idempotency_key: self.idempotency_key,
            at: roster_events::Timestamp::now(),
            recovered: self.recovered,
            appended: self.appended,
        }
    }
}

impl<St: Send + Sync> FromRequestParts<St> for RequestInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, ApiError> {
        // The client's own request id (kept in every event's metadata), or
        // the one the request-id layer made.
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if request_id.len() > REQUEST_ID_MAX {
            return Err(ApiError::field(
                "X-Request-Id",
                format!("must be at most {REQUEST_ID_MAX} characters"),
            ));
        }
        let idempotency_key = idempotency_key(&parts.headers)?;
        Ok(RequestInfo {
            request_id,
            idempotency_key,
            recovered: parts.extensions.get::<roster_command::Recovered>().cloned(),
            appended: parts
                .extensions
                .get::<roster_command::append::AppendedTo>()
                .cloned()
                .unwrap_or_default(),
        })
    }
}

/// The raw body, within [`super::BODY_LIMIT`] (else 413 `PAYLOAD_TOO_LARGE`).
pub struct RawBody(pub Bytes);

impl<St: Send + Sync> FromRequest<St> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self, ApiError> {
        Bytes::from_request(req, state).await.map(RawBody).map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::Malformed(format!("cannot read the body: {}", e.body_text()))
            }
        })
    }
}

/// A JSON body: unparsable → 400 `MALFORMED_REQUEST`; unknown fields, wrong
/// types (an array where an object belongs too), missing fields → 400
/// `VALIDATION_FAILED` naming every such field.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(Body)
    }
}

/// A request body with rules beyond its JSON shape.
pub trait Validate: DeserializeOwned {
    /// The request with every value checked and normalised.
    type Valid;

    fn validate(self) -> Result<Self::Valid, Vec<FieldError>>;
}

/// A JSON body read as [`Body`] and then validated: the errors of both
/// steps are reported together, one per field.
pub struct Valid<T: Validate>(pub T::Valid);

impl<T: Validate, St: Send + Sync> FromRequest<St> for Valid<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_valid::<T>(&bytes).map(Valid)
    }
}

fn json_value(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Malformed("a JSON body is required".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::Malformed(format!("the body is not valid JSON: {e}")))
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let parsed = parse::parse_all::<T>(json_value(bytes)?);
    match parsed.value {
        Some(value) if parsed.errors.is_empty() => Ok(value),
        _ => Err(ApiError::Validation(parsed.errors)),
    }
}

pub fn parse_valid<T: Validate>(bytes: &[u8]) -> Result<T::Valid, ApiError> {
    parse::parse_all::<T>(json_value(bytes)?)
        .validate(T::validate)
        .map_err(ApiError::Validation)
}

/// Longest cursor (`after`) accepted; the service's own are far shorter.
pub const CURSOR_MAX: usize = 200;

/// `limit` (1..=100, default 10) and `after` of a list route, plus the other
/// query parameters for the route to read.
pub struct Paging {
    pub limit: usize,
    pub after: Option<String>,
    pub rest: HashMap<String, String>,
}

impl<St: Send + Sync> FromRequestParts<St> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let mut rest: HashMap<String, String> = query_pairs(query)?;
        let limit = match rest.remove("limit") {
            None => 10,
            Some(l) => parse_limit(&l)?,
        };
        let after = rest.remove("after").filter(|a| !a.is_empty());
        if after.as_ref().is_some_and(|a| a.len() > CURSOR_MAX) {
            return Err(ApiError::field("after", "must be a cursor from next_cursor"));
        }
        Ok(Paging { limit, after, rest })
    }
}

pub fn parse_limit(text: &str) -> Result<usize, ApiError> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=100).contains(&n) => Ok(n),
        _ => Err(ApiError::field("limit", "must be an integer from 1 to 100")),
    }
}

/// A query string's parameters (the last of a repeated one).
pub fn query_pairs(query: &str) -> Result<HashMap<String, String>, ApiError> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| ApiError::Malformed("invalid query string".into()))?,
    )
    .map(|q| q.0)
    .map_err(|_| ApiError::Malformed("invalid query string".into()))
}
