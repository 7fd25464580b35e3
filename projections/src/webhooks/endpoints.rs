//! The store of webhook endpoints and their deliveries, as the API manages
//! them. Every function is scoped to one company: another company's
//! endpoint does not exist for it (`None`).
//!
//! Endpoints are configuration, like API clients: rows, not events (their
//! changes are not part of the registry's audit trail).

use super::{deliver, sign};
use chrono::{DateTime, Utc};
use roster_events::Timestamp;
use roster_vault::Vault;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// The CloudEvents types it receives; `null`: every type.
    pub event_types: Option<Vec<String>>,
    pub disabled: bool,
    /// `manual` or `gone` (it answered 410); `null` while enabled.
    pub disabled_reason: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: Uuid,
    url: String,
    description: Option<String>,
    event_types: Option<Vec<String>>,
    disabled: bool,
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<EndpointRow> for Endpoint {
    fn from(r: EndpointRow) -> Self {
        Endpoint {
            id: r.id,
            url: r.url,
            description: r.description,
            event_types: r.event_types,
            disabled: r.disabled,
            disabled_reason: r.disabled_reason,
            created_at: r.created_at.into(),
            updated_at: r.updated_at.into(),
        }
    }
}

const COLUMNS: &str = "id, url, description, event_types, disabled, disabled_reason, created_at, updated_at";

/// A checked new endpoint.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub disabled: bool,
}

/// A checked change: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub event_types: Option<Option<Vec<String>>>,
    pub disabled: Option<bool>,
}

/// Creates an endpoint; returns it with its secret. It receives the events
/// appended after the log's head as it is now.
pub async fn create(
    pool: &PgPool,
    vault: &Vault,
    company_id: &str,
    new: NewEndpoint,
) -> sqlx::Result<(Endpoint, String)> {
    let id = Uuid::now_v7();
    let secret = sign::new_secret();
    let (wrapped, master_id) = vault.wrap_secret(id.as_bytes(), &secret);
    let mut tx = pool.begin().await?;
    // Waits for a batch of the deliverer under way: the events it passes
    // are then at or before the head read below (see the migration).
    sqlx::query("INSERT INTO subscriber_checkpoints (name, position) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING")
        .bind(deliver::NAME)
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT 1 FROM subscriber_checkpoints WHERE name = $1 FOR UPDATE")
        .bind(deliver::NAME)
        .execute(&mut *tx)
        .await?;
    let row: EndpointRow = sqlx::query_as(&format!(
        "INSERT INTO webhook_endpoints
             (id, company_id, url, description, event_types, disabled, disabled_reason, secret, master_id, after_position)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6 THEN 'manual' END, $7, $8,
                 (SELECT coalesce(max(position), 0) FROM events))
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(company_id)
    .bind(&new.url)
    .bind(&new.description)
    .bind(&new.event_types)
    .bind(new.disabled)
    .bind(wrapped)
    .bind(master_id)
    .fetch_one(&mut *tx)
    .await?;
    // Tests hold a creation here, its head read and not committed, to race
    // the recorder.
    fail::fail_point!("webhooks::creating");
    tx.commit().await?;
    Ok((row.into(), sign::text(&secret)))
}

/// Up to `limit` endpoints after the one with id `after`, oldest first.
pub async fn list(pool: &PgPool, company_id: &str, after: Option<Uuid>, limit: i64) -> sqlx::Result<Vec<Endpoint>> {
    let rows: Vec<EndpointRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints
          WHERE company_id = $1 AND ($2::uuid IS NULL OR id > $2)
          ORDER BY id LIMIT $3"
    ))
    .bind(company_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Endpoint::from).collect())
}

pub async fn get(pool: &PgPool, company_id: &str, id: Uuid) -> sqlx::Result<Option<Endpoint>> {
    let row: Option<EndpointRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1 AND company_id = $2"
    ))
    .bind(id)
    .bind(company_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Endpoint::from))
}

/// Applies `change`. Enabling clears the reason and makes what the
/// endpoint missed while disabled due at once; disabling by hand sets the
/// reason `manual`.
pub async fn update(pool: &PgPool, company_id: &str, id: Uuid, change: Change) -> sqlx::Result<Option<Endpoint>> {
    let mut tx = pool.begin().await?;
    let row: Option<EndpointRow> = sqlx::query_as(&format!(
        "UPDATE webhook_endpoints w SET
             url = coalesce($3, url),
             description = CASE WHEN $4 THEN $5 ELSE description END,
             event_types = CASE WHEN $6 THEN $7 ELSE event_types END,
             disabled = coalesce($8, disabled),
             disabled_reason = CASE WHEN $8 IS NULL THEN disabled_reason
                                    WHEN NOT $8 THEN NULL
                                    WHEN disabled THEN disabled_reason
                                    ELSE 'manual' END,
             updated_at = now()
          WHERE id = $1 AND company_id = $2
          RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(company_id)
    .bind(&change.url)
    .bind(change.description.is_some())
    .bind(change.description.flatten())
    .bind(change.event_types.is_some())
    .bind(change.event_types.flatten())
    .bind(change.disabled)
    .fetch_optional(&mut *tx)
    .await?;
    if row.is_some() && change.disabled == Some(false) {
        sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = now()
              WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at > now()",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(row.map(Endpoint::from))
}

/// Deletes the endpoint and its deliveries; `false` if there is none.
pub async fn delete(pool: &PgPool, company_id: &str, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND company_id = $2")
        .bind(id)
        .bind(company_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The current secret's text.
pub async fn secret(pool: &PgPool, vault: &Vault, company_id: &str, id: Uuid) -> anyhow::Result<Option<String>> {
    let row: Option<(Vec<u8>, String)> =
        sqlx::query_as("SELECT secret, master_id FROM webhook_endpoints WHERE id = $1 AND company_id = $2")
            .bind(id)
            .bind(company_id)
            .fetch_optional(pool)
            .await?;
    let Some((wrapped, master_id)) = row else {
        return Ok(None);
    };
    let secret = vault.unwrap_secret(id.as_bytes(), &wrapped, &master_id)?;
    Ok(Some(sign::text(&secret)))
}

/// A new secret; the current one keeps signing beside it for
/// [`ROTATION_OVERLAP_HOURS`]. Returns the new secret's text.
pub async fn rotate(pool: &PgPool, vault: &Vault, company_id: &str, id: Uuid) -> anyhow::Result<Option<String>> {
    let mut tx = pool.begin().await?;
    let row: Option<(Vec<u8>, String)> =
        sqlx::query_as("SELECT secret, master_id FROM webhook_endpoints WHERE id = $1 AND company_id = $2 FOR UPDATE")
            .bind(id)
            .bind(company_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((old, master_id)) = row else { return Ok(None) };
    // Both are stored under the current master key.
    let old = vault.unwrap_secret(id.as_bytes(), &old, &master_id)?;
    let (old, _) = vault.wrap_secret(id.as_bytes(), &old);
    let secret = sign::new_secret();
    let (wrapped, master_id) = vault.wrap_secret(id.as_bytes(), &secret);
    sqlx::query(
        "UPDATE webhook_endpoints
            SET secret = $2, previous_secret = $3, master_id = $4,
                previous_until = now() + make_interval(hours => $5), updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(wrapped)
    .bind(old)
    .bind(master_id)
    .bind(ROTATION_OVERLAP_HOURS as i32)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(sign::text(&secret)))
}

/// One (endpoint, event) delivery.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    /// The event's place in the log (the list's cursor).
    #[serde(skip)]
    pub position: i64,
    /// The `webhook-id` of every attempt.
    pub event_id: Uuid,
    pub event_type: String,
    /// `users/<id>`, `households/<id>`, …
    pub subject: String,
    pub sequence: i64,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_attempt_at: Option<Timestamp>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<Timestamp>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    position: i64,
    event_id: Uuid,
    event_type: String,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    status: String,
    attempts: i32,
    last_attempt_at: Option<DateTime<Utc>>,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
}

/// The statuses a delivery can have.
pub const STATUSES: [&str; 3] = ["pending", "delivered", "failed"];

/// Up to `limit` deliveries of the endpoint, newest first (in the log's
/// order), after the one at `after`, with status `status` if given; `None`:
/// no such endpoint.
pub async fn deliveries(
    pool: &PgPool,
    company_id: &str,
    endpoint_id: Uuid,
    status: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> sqlx::Result<Option<Vec<Delivery>>> {
    if get(pool, company_id, endpoint_id).await?.is_none() {
        return Ok(None);
    }
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT id, position, event_id, event_type, aggregate_type, aggregate_id, sequence, status, attempts,
                last_attempt_at, last_status_code, last_error, next_attempt_at, delivered_at
           FROM webhook_deliveries
          WHERE endpoint_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::bigint IS NULL OR position < $3)
          ORDER BY position DESC LIMIT $4",
    )
    .bind(endpoint_id)
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(Some(
        rows.into_iter()
            .map(|r| Delivery {
                id: r.id,
                position: r.position,
                event_id: r.event_id,
                event_type: r.event_type,
                subject: format!("{}s/{}", r.aggregate_type, r.aggregate_id),
                sequence: r.sequence,
                status: r.status,
                attempts: r.attempts,
                last_attempt_at: r.last_attempt_at.map(Timestamp::from),
                last_status_code: r.last_status_code,
                last_error: r.last_error,
                next_attempt_at: r.next_attempt_at.map(Timestamp::from),
                delivered_at: r.delivered_at.map(Timestamp::from),
            })
            .collect(),
    ))
}

/// Events per statement of a replay.
const REPLAY_CHUNK: i64 = 5_000;

/// Delivers again every event of the company since `since` that the
/// endpoint subscribes to (with `only_failed`, only its failed deliveries):
/// each becomes a pending delivery with no attempts, due now, and goes out
/// in order. Events from before the endpoint was created are included (a
/// replay can fill a new endpoint). Returns how many; `None`: no such
/// endpoint.
pub async fn replay(
    pool: &PgPool,
    company_id: &str,
    endpoint_id: Uuid,
    since: DateTime<Utc>,
    only_failed: bool,
) -> sqlx::Result<Option<u64>> {
    let Some(endpoint) = get(pool, company_id, endpoint_id).await? else {
        return Ok(None);
    };
    const RESET: &str = "status = 'pending', attempts = 0, next_attempt_at = now(), delivered_at = NULL,
                         last_status_code = NULL, last_error = NULL";
    if only_failed {
        let done = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET {RESET}
              WHERE endpoint_id = $1 AND status = 'failed' AND recorded_at >= $2"
        ))
        .bind(endpoint_id)
        .bind(since)
        .execute(pool)
        .await?;
        return Ok(Some(done.rows_affected()));
    }
    let mut replayed = 0;
    let mut at = 0i64;
    loop {
        // The company's events since `since`, a chunk at a time, in commit
        // order; the types are told apart here (CloudEvents names).
        let events: Vec<deliver::Light> = sqlx::query_as(&format!(
            "SELECT {} FROM events
              WHERE position > $1 AND recorded_at >= $2 AND metadata ->> 'company_id' = $3
              ORDER BY position LIMIT $4",
            deliver::LIGHT
        ))
        .bind(at)
        .bind(since)
        .bind(company_id)
        .bind(REPLAY_CHUNK)
        .fetch_all(pool)
        .await?;
        let Some(last) = events.last().map(|e| e.position) else {
            break;
        };
        at = last;
        let mut rows = deliver::Rows::default();
        for event in &events {
            let ce_type = deliver::cloud_type(&event.aggregate_type, &event.kind);
            if endpoint.event_types.as_ref().is_some_and(|t| !t.contains(&ce_type)) {
                continue;
            }
            rows.push(endpoint_id, event, ce_type);
        }
        replayed += rows.insert(pool, &format!("DO UPDATE SET {RESET}")).await?;
    }
    Ok(Some(replayed))
}
