//! Read-your-writes: a write returns `Roster-Consistency-Token` naming the
//! event it appended last; a query that sends it back answers once the
//! projection serving it has applied that event (or 503 after 5 s).

use super::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const HEADER: &str = "roster-consistency-token";
const MAX_WAIT: Duration = Duration::from_secs(5);
const STEP: Duration = Duration::from_millis(5);

/// `<aggregate type>:<aggregate id>:<sequence>` of the write's last event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    pub sequence: u64,
}

impl Token {
    pub fn new(aggregate_type: &str, aggregate_id: Uuid, sequence: u64) -> Self {
        Self {
            aggregate_type: aggregate_type.to_string(),
            aggregate_id,
            sequence,
        }
    }

    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{}:{}:{}",
            self.aggregate_type, self.aggregate_id, self.sequence
        ))
        .expect("token text is a valid header value")
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().splitn(3, ':');
        let aggregate_type = parts.next()?;
        if !matches!(aggregate_type, "user" | "household") {
            return None;
        }
        Some(Token::new(
            aggregate_type,
            parts.next()?.parse().ok()?,
            parts.next()?.parse().ok()?,
        ))
    }
}

/// Puts the token of the write a request's command made on its answer,
/// whatever its status, unless the handler did (a failed verification is
/// 422 and appended its `VerificationFailed`; a failure after the commit is
/// 5xx): the client can always read its own write.
pub async fn stamp(mut req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let appended = roster_command::append::AppendedTo::default();
    req.extensions_mut().insert(appended.clone());
    let mut response = next.run(req).await;
    if let Some((aggregate_type, id, version)) = appended.get() {
        if matches!(aggregate_type, "user" | "household") && !response.headers().contains_key(HEADER) {
            response
                .headers_mut()
                .insert(HEADER, Token::new(aggregate_type, id, version).header_value());
        }
    }
    response
}

/// The token a query was sent with, if any.
pub struct ReadAfter(pub Option<Token>);

impl<St: Send + Sync> FromRequestParts<St> for ReadAfter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, ApiError> {
        match parts.headers.get(HEADER) {
            None => Ok(ReadAfter(None)),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(Token::parse)
                .map(|t| ReadAfter(Some(t)))
                .ok_or_else(|| ApiError::field("Roster-Consistency-Token", "is not a token this API returned")),
        }
    }
}

impl ReadAfter {
    /// Waits until `projection` has applied the token's event. A token of
    /// another company than `company_id` names no write the caller can see,
    /// and is refused as a made-up one is.
    pub async fn wait(&self, pool: &PgPool, projection: &str, company_id: &str) -> Result<(), ApiError> {
        let Some(t) = &self.0 else { return Ok(()) };
        let deadline = Instant::now() + MAX_WAIT;
        let id = t.aggregate_id.to_string();
        loop {
            match roster_projections::engine::has_applied(
                pool,
                projection,
                company_id,
                &t.aggregate_type,
                &id,
                t.sequence as i64,
            )
            .await?
            {
                Some(true) => return Ok(()),
                None => return Err(ApiError::field("Roster-Consistency-Token", "names no write")),
                Some(false) if Instant::now() >= deadline => return Err(ApiError::NotYetConsistent),
                Some(false) => tokio::time::sleep(STEP).await,
            }
        }
    }
}
