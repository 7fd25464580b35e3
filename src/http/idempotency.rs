//! `Idempotency-Key` on every write (CONTRACT §2).
//!
//! The first request with a key claims `(client, key)` and runs; its
//! response (status, the headers a client needs, body) is stored. A repeat
//! with the same method, path and body gets that response back with
//! `Idempotent-Replayed: true` and runs nothing; with another request →
//! 422 `IDEMPOTENCY_KEY_REUSED`; while the first still runs → 409
//! `IDEMPOTENCY_KEY_IN_USE`. A 5xx is not stored (the key is freed, so the
//! client can retry). Keys are kept 24 h, after which a key may be reused.
//!
//! The request runs in its own task, so the response is stored even if the
//! client disconnects. A claim left by a crashed process is taken over after
//! [`ABANDONED`].

use super::error::ApiError;
use super::AppState;
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// A claim older than this with no response belongs to a process that died.
const ABANDONED: &str = "5 minutes";
/// How often [`purge`] runs.
pub const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Deletes keys past their 24 hours, a few thousand rows per statement so
/// that no statement runs long. Returns how many went. Any number of
/// processes may run it.
pub async fn purge(pool: &sqlx::PgPool) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM idempotency_keys WHERE ctid IN (
                 SELECT ctid FROM idempotency_keys WHERE created_at < now() - interval '24 hours' LIMIT 5000)",
        )
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < 5000 {
            return Ok(total);
        }
    }
}
/// Headers replayed with a stored response.
const KEPT_HEADERS: [&str; 4] = ["content-type", "location", "etag", "roster-consistency-token"];

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let write = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let Some(key) = req.headers().get("idempotency-key").cloned() else {
        return next.run(req).await;
    };
    if !write || req.uri().path() == "/v1/oauth/token" {
        return next.run(req).await;
    }
    let key = match key.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) => k.to_string(),
        _ => return ApiError::field("Idempotency-Key", "must be 1 to 255 visible ASCII characters").into_response(),
    };
    // Keys are scoped to the client; unauthenticated requests just run (and fail).
    let client = {
        let h = req.headers();
        let token = h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        let app_id = h.get("x-appid").and_then(|v| v.to_str().ok());
        match (token, app_id) {
            (Some(t), Some(a)) => state.tokens.verify(t.trim(), a.trim()).map(|c| c.client_id),
            _ => None,
        }
    };
    let Some(client) = client else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, super::BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update([0]);
    hasher.update(parts.uri.path());
    hasher.update([0]);
    hasher.update(&bytes);
    let fingerprint = hasher.finalize().to_vec();
    let req = Request::from_parts(parts, Body::from(bytes));
    let pool = state.pool.clone();
    // Claim, run, store: in a task of its own, so it ends even if the client goes.
    let task = tokio::spawn(async move {
        match claim(&pool, &client, &key, &fingerprint).await {
            Err(e) => ApiError::from(e).into_response(),
            Ok(Claim::Replay(r)) => r,
            Ok(Claim::Reused) => ApiError::Unprocessable(
                "IDEMPOTENCY_KEY_REUSED",
                "This Idempotency-Key was used with a different request.",
            )
            .into_response(),
            Ok(Claim::InUse) => ApiError::Conflict(
                "IDEMPOTENCY_KEY_IN_USE",
                "A request with this Idempotency-Key is still running.",
            )
            .into_response(),
            Ok(Claim::Mine) => {
                let response = next.run(req).await;
                store(&pool, &client, &key, response).await
            }
        }
    });
    task.await.unwrap_or_else(|e| ApiError::internal(e).into_response())
}

/// fingerprint, status (`None` while running), headers, body.
type StoredKey = (Vec<u8>, Option<i16>, Option<serde_json::Value>, Option<Vec<u8>>);

enum Claim {
    Mine,
    Replay(Response),
    Reused,
    InUse,
}

async fn claim(pool: &sqlx::PgPool, client: &str, key: &str, fingerprint: &[u8]) -> sqlx::Result<Claim> {
    // Take the key if it is free, expired, or abandoned by a dead process.
    let taken: Option<bool> = sqlx::query_scalar(&format!(
        "INSERT INTO idempotency_keys (client_id, key, fingerprint) VALUES ($1, $2, $3)
         ON CONFLICT (client_id, key) DO UPDATE
            SET fingerprint = excluded.fingerprint, status = NULL, headers = NULL, body = NULL, created_at = now()
          WHERE idempotency_keys.created_at < now() - interval '24 hours'
             OR (idempotency_keys.status IS NULL AND idempotency_keys.created_at < now() - interval '{ABANDONED}')
         RETURNING true"
    ))
    .bind(client)
    .bind(key)
    .bind(fingerprint)
    .fetch_optional(pool)
    .await?;
    if taken.is_some() {
        return Ok(Claim::Mine);
    }
    let row: Option<StoredKey> = sqlx::query_as(
        "SELECT fingerprint, status, headers, body FROM idempotency_keys WHERE client_id = $1 AND key = $2",
    )
    .bind(client)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        // Freed between our two statements (its first request failed): in use, retry.
        None => Claim::InUse,
        Some((f, _, _, _)) if f != fingerprint => Claim::Reused,
        Some((_, None, _, _)) => Claim::InUse,
        Some((_, Some(status), headers, body)) => Claim::Replay(replay(status, headers, body.unwrap_or_default())),
    })
}

fn replay(status: i16, headers: Option<serde_json::Value>, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
    if let Some(serde_json::Value::Object(h)) = headers {
        for (name, value) in h {
            if let (Ok(n), Some(Ok(v))) = (HeaderName::try_from(name), value.as_str().map(HeaderValue::from_str)) {
                response.headers_mut().insert(n, v);
            }
        }
    }
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Stores the response (or frees the key after a 5xx) and returns it.
async fn store(pool: &sqlx::PgPool, client: &str, key: &str, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let result = if parts.status.is_server_error() {
        sqlx::query("DELETE FROM idempotency_keys WHERE client_id = $1 AND key = $2")
            .bind(client)
            .bind(key)
            .execute(pool)
            .await
    } else {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 WHERE client_id = $1 AND key = $2",
        )
        .bind(client)
        .bind(key)
        .bind(parts.status.as_u16() as i16)
        .bind(kept_headers(&parts.headers))
        .bind(bytes.as_ref())
        .execute(pool)
        .await
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot store the idempotent response");
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn kept_headers(headers: &HeaderMap) -> serde_json::Value {
    KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .map(|v| (name.to_string(), serde_json::Value::String(v.to_string())))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}
