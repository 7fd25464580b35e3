//! The audit trail of a user: every event of its stream, read from the event
//! log itself (the source of truth), public data only. An erased user's
//! trail keeps every entry, each before its `UserErased` with `data: null`
//! and `erased: true`.

use crate::{Page, QueryError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use roster_events::{meta, public_data, Timestamp};
use roster_vault::{DataKey, Vault};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Actor {
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub sequence: i64,
    pub event_id: Uuid,
    pub event_type: String,
    /// The major version of the event's schema (as in `ce_type`).
    pub event_version: u32,
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: Timestamp,
    pub actor: Actor,
    pub request_id: Option<String>,
    /// The event's public data: what Kafka carries (`null` once erased).
    #[schema(value_type = Object)]
    pub data: Value,
    /// The user was erased: this entry's data is gone.
    pub erased: bool,
}

fn encode(sequence: i64) -> String {
    URL_SAFE_NO_PAD.encode(sequence.to_be_bytes())
}

fn decode(cursor: &str) -> Result<i64, QueryError> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| QueryError::InvalidCursor)?;
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| QueryError::InvalidCursor)?;
    Ok(i64::from_be_bytes(bytes))
}

type Row = (i64, Uuid, String, String, Value, Value, chrono::DateTime<chrono::Utc>);

/// The payload with its personal values opened.
fn open(payload: Value, key: Option<&DataKey>) -> Result<Value, QueryError> {
    let opened = roster_vault::seal::open_text(payload.to_string(), key)?;
    Ok(serde_json::from_str(&opened.payload)?)
}

/// `None` when the user does not exist for the company.
pub async fn user_events(
    pool: &PgPool,
    vault: &Vault,
    company_id: &str,
    user_id: Uuid,
    limit: usize,
    after: Option<&str>,
) -> Result<Option<Page<AuditEntry>>, QueryError> {
    let after = after.map(decode).transpose()?.unwrap_or(0);
    let id = user_id.to_string();
    let enrolled: Option<(Option<String>, bool)> = sqlx::query_as(
        "SELECT e.metadata ->> 'company_id', coalesce(r.erased_at IS NOT NULL, false)
           FROM events e LEFT JOIN user_registry r ON r.user_id = $2
          WHERE e.aggregate_type = 'user' AND e.aggregate_id = $1 AND e.sequence = 1",
    )
    .bind(&id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    let Some((owner, erased)) = enrolled else {
        return Ok(None);
    };
    if owner.as_deref() != Some(company_id) {
        return Ok(None);
    }
    let keys = match erased {
        true => Default::default(),
        false => vault.keyring(pool, &[user_id]).await?,
    };
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT sequence, event_id, event_type, event_version, payload, metadata, recorded_at FROM events
          WHERE aggregate_type = 'user' AND aggregate_id = $1 AND sequence > $2
          ORDER BY sequence LIMIT $3",
    )
    .bind(&id)
    .bind(after)
    .bind(limit as i64 + 1)
    .fetch_all(pool)
    .await?;
    let entries = rows
        .into_iter()
        .map(
            |(sequence, event_id, event_type, event_version, payload, metadata, recorded_at)| {
                let text = |k: &str| metadata.get(k).and_then(Value::as_str).map(str::to_string);
                let (event_version, payload) =
                    roster_events::upcast::upcast("user", &event_type, &event_version, payload);
                let gone = erased && event_type != "UserErased";
                let data = match gone {
                    true => Value::Null,
                    false => public_data(open(payload, keys.get(user_id))?),
                };
                Ok(AuditEntry {
                    sequence,
                    event_id,
                    event_type,
                    event_version: event_version
                        .split('.')
                        .next()
                        .and_then(|m| m.parse().ok())
                        .unwrap_or(1),
                    occurred_at: text(meta::OCCURRED_AT)
                        .and_then(|t| serde_json::from_value(Value::String(t)).ok())
                        .unwrap_or_else(|| Timestamp::from(recorded_at)),
                    actor: Actor {
                        client_id: text(meta::CLIENT_ID),
                    },
                    request_id: text(meta::REQUEST_ID),
                    data,
                    erased: gone,
                })
            },
        )
        .collect::<Result<_, QueryError>>()?;
    Ok(Some(Page::from_rows(entries, limit, |e: &AuditEntry| {
        encode(e.sequence)
    })))
}
