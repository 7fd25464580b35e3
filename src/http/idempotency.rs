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
use roster_command::Recovered;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// A claim older than this with no response belongs to a process that died.
const ABANDONED: &str = "5 minutes";
/// How long a response that could not be stored is retried in the background.
const STORE_RETRIES: Duration = Duration::from_secs(300);
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
    if !write || req.uri().path() == "/v1/oauth/token" {
        return next.run(req).await;
    }
    let key = match super::extract::idempotency_key(req.headers()) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(req).await,
        Err(e) => return e.into_response(),
    };
    // Keys are scoped to the client; unauthenticated requests just run (and fail).
    let Some(client) = super::extract::caller(req.headers(), req.extensions(), &state.tokens).map(|c| c.client_id)
    else {
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
            Ok(Claim::Mine(recovered)) => {
                let mut req = req;
                let replayed = recovered.is_some();
                if let Some(r) = recovered {
                    req.extensions_mut().insert(r);
                }
                let mut response = next.run(req).await;
                if replayed && !response.status().is_server_error() {
                    response
                        .headers_mut()
                        .insert("idempotent-replayed", HeaderValue::from_static("true"));
                }
                store(pool, client, key, response).await
            }
        }
    });
    task.await.unwrap_or_else(|e| ApiError::internal(e).into_response())
}

/// What a key's request committed: stream type and id, first and last sequence.
type Committed = (Option<String>, Option<String>, Option<i64>, Option<i64>);

/// fingerprint, status (`None` while running), headers, body.
type StoredKey = (Vec<u8>, Option<i16>, Option<serde_json::Value>, Option<Vec<u8>>);

enum Claim {
    /// Ours to run; with what an earlier attempt committed, if it did.
    Mine(Option<Recovered>),
    Replay(Response),
    Reused,
    InUse,
}

async fn claim(pool: &sqlx::PgPool, client: &str, key: &str, fingerprint: &[u8]) -> sqlx::Result<Claim> {
    // Take the key if it is free or expired, or if its request ended
    // without a response (released after a 5xx, or abandoned by a dead
    // process); one that committed something only for the same request.
    let taken: Option<Committed> = sqlx::query_as(&format!(
        "INSERT INTO idempotency_keys (client_id, key, fingerprint) VALUES ($1, $2, $3)
         ON CONFLICT (client_id, key) DO UPDATE
            SET fingerprint = excluded.fingerprint, status = NULL, headers = NULL, body = NULL, created_at = now(),
                released = false,
                committed_type = CASE WHEN {expired} THEN NULL ELSE idempotency_keys.committed_type END,
                committed_id = CASE WHEN {expired} THEN NULL ELSE idempotency_keys.committed_id END,
                committed_from = CASE WHEN {expired} THEN NULL ELSE idempotency_keys.committed_from END,
                committed_to = CASE WHEN {expired} THEN NULL ELSE idempotency_keys.committed_to END
          WHERE {expired}
             OR (idempotency_keys.status IS NULL
                 AND (idempotency_keys.released OR idempotency_keys.created_at < now() - interval '{ABANDONED}')
                 AND (idempotency_keys.committed_id IS NULL OR idempotency_keys.fingerprint = excluded.fingerprint))
         RETURNING committed_type, committed_id, committed_from, committed_to",
        expired = "idempotency_keys.created_at < now() - interval '24 hours'",
    ))
    .bind(client)
    .bind(key)
    .bind(fingerprint)
    .fetch_optional(pool)
    .await?;
    if let Some(committed) = taken {
        let recovered = match committed {
            (Some(aggregate_type), Some(aggregate_id), Some(from), Some(to)) => Some(Recovered {
                aggregate_type,
                aggregate_id,
                from: from as u64,
                to: to as u64,
            }),
            _ => None,
        };
        return Ok(Claim::Mine(recovered));
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

/// Stores the response (or, after a 5xx, frees or releases the key) and
/// returns it. Should the database be out of reach, keeps trying in the
/// background: the retry of a client must not meet `IDEMPOTENCY_KEY_IN_USE`
/// for long.
async fn store(pool: sqlx::PgPool, client: String, key: String, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let subjects = match parts.extensions.get::<Impersonal>() {
        Some(_) => Vec::new(),
        None => subjects(&bytes),
    };
    let outcome = Outcome {
        status: parts.status,
        headers: kept_headers(&parts.headers),
        body: match parts.extensions.get::<HoldsSecret>() {
            Some(_) => without_secret(&bytes),
            None => bytes.to_vec(),
        },
        subjects,
    };
    // Tests hold a response here, computed and not stored, to race it.
    fail::fail_point!("idempotency::storing");
    if let Err(e) = outcome.save(&pool, &client, &key).await {
        tracing::warn!(error = %e, "cannot store the idempotent response; retrying in the background");
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + STORE_RETRIES;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if outcome.save(&pool, &client, &key).await.is_ok() {
                    return;
                }
            }
            tracing::warn!("gave up storing an idempotent response; the key is taken over once abandoned");
        });
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Marks a response that holds nothing personal although it names a user
/// who is erased (the erasure's own answer): stored like any other.
#[derive(Debug, Clone, Copy)]
pub struct Impersonal;

/// Marks a response whose body holds a `secret` (a new webhook endpoint's,
/// a rotated one): it is stored without it, and a replay answers the rest
/// (the secret is read again with `GET …/secret`).
#[derive(Debug, Clone, Copy)]
pub struct HoldsSecret;

fn without_secret(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut o)) => {
            o.remove("secret");
            serde_json::to_vec(&o).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Every id a response body names (the users among them are the ones whose
/// erasure must forget it).
fn subjects(body: &[u8]) -> Vec<uuid::Uuid> {
    fn walk(v: &serde_json::Value, out: &mut Vec<uuid::Uuid>) {
        match v {
            serde_json::Value::String(s) if s.len() == 36 => out.extend(uuid::Uuid::try_parse(s).ok()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        walk(&v, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// A response as the key's row keeps it.
struct Outcome {
    status: StatusCode,
    headers: serde_json::Value,
    body: Vec<u8>,
    subjects: Vec<uuid::Uuid>,
}

impl Outcome {
    async fn save(&self, pool: &sqlx::PgPool, client: &str, key: &str) -> sqlx::Result<()> {
        if self.status.is_server_error() {
            // Free the key if the request committed nothing (the row lock
            // taken by an append makes this wait for its outcome); else
            // release it, so that a retry recovers what was committed.
            let freed =
                sqlx::query("DELETE FROM idempotency_keys WHERE client_id = $1 AND key = $2 AND committed_id IS NULL")
                    .bind(client)
                    .bind(key)
                    .execute(pool)
                    .await?
                    .rows_affected();
            if freed == 0 {
                sqlx::query(
                    "UPDATE idempotency_keys SET released = true WHERE client_id = $1 AND key = $2 AND status IS NULL",
                )
                .bind(client)
                .bind(key)
                .execute(pool)
                .await?;
            }
            return Ok(());
        }
        // A response that names a user erased meanwhile is not kept (its
        // erasure promised that nothing of the person stays): the key is
        // freed, or released if the request committed, as after a 5xx. The
        // share lock on the named users' registry rows orders this against
        // an erasure: one that is running finishes first (and is seen here),
        // one that starts later waits and then deletes what this stored.
        sqlx::query(
            "WITH erased AS (
                 SELECT count(*) FILTER (WHERE erased_at IS NOT NULL) > 0 AS yes
                   FROM (SELECT erased_at FROM user_registry WHERE user_id = ANY($6) FOR SHARE) named),
             freed AS (
                 DELETE FROM idempotency_keys
                  WHERE client_id = $1 AND key = $2 AND committed_id IS NULL AND (SELECT yes FROM erased))
             UPDATE idempotency_keys
                SET status = CASE WHEN e.yes THEN NULL ELSE $3 END,
                    headers = CASE WHEN e.yes THEN NULL ELSE $4 END,
                    body = CASE WHEN e.yes THEN NULL ELSE $5 END,
                    subjects = CASE WHEN e.yes THEN '{}' ELSE $6 END,
                    released = e.yes
               FROM erased e
              WHERE client_id = $1 AND key = $2 AND (NOT e.yes OR committed_id IS NOT NULL)",
        )
        .bind(client)
        .bind(key)
        .bind(self.status.as_u16() as i16)
        .bind(&self.headers)
        .bind(&self.body)
        .bind(&self.subjects)
        .execute(pool)
        .await?;
        Ok(())
    }
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
