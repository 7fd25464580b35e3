//! The erasure's part of its transaction (CONTRACT §3 "Erasure"): who it
//! touches (children, households), what it deletes, and the appends of the
//! events [`crate::erasure::cascade`] decides for them.

use crate::append::{Append, AppendError, NewEvent, Stream};
use crate::erasure::{Cascaded, Tail};
use roster_events::meta;
use roster_events::Timestamp;
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// The rest of an erasure, in the transaction of the user's `UserErased`
/// (CONTRACT §3 "Erasure"): its children unlinked, its claims released, its
/// accounts out of their households, its data key destroyed, its snapshots
/// and the idempotency records of its requests deleted. The registry keeps
/// the id, marked erased. Returns the streams its events go to, which
/// [`Cascade::appends`] makes with the user's own, last.
pub(super) async fn erase(
    tx: &mut Transaction<'_, Postgres>,
    append: &Append,
    at: Timestamp,
) -> Result<Cascade, AppendError> {
    let (company, user) = (append.company_id.as_str(), append.stream.id);
    let children: Vec<Uuid> =
        sqlx::query_scalar("UPDATE user_registry SET parent_id = NULL WHERE parent_id = $1 RETURNING user_id")
            .bind(user)
            .fetch_all(&mut **tx)
            .await?;
    // Account claims and their households' claims hash the same value.
    let released: Vec<Option<String>> = sqlx::query_scalar(
        "DELETE FROM unique_claims WHERE company_id = $1 AND owner_id = $2 RETURNING CASE WHEN kind = 'account' THEN value END",
    )
    .bind(company)
    .bind(user)
    .fetch_all(&mut **tx)
    .await?;
    let accounts: Vec<String> = released.into_iter().flatten().collect();
    let mut households: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM unique_claims WHERE company_id = $1 AND kind = 'household_account' AND value = ANY($2)
         RETURNING owner_id",
    )
    .bind(company)
    .bind(&accounts)
    .fetch_all(&mut **tx)
    .await?;
    households.sort();
    households.dedup();
    // Tests hold the erasure here, its locks taken, to race it.
    fail::fail_point!("store::erasing");
    sqlx::query("UPDATE user_registry SET erased_at = $2, parent_id = NULL WHERE user_id = $1")
        .bind(user)
        .bind(at.as_datetime())
        .execute(&mut **tx)
        .await?;
    // After this commits, the publisher hands over nothing sealed under it.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(roster_vault::ERASURE_LOCK)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM data_keys WHERE owner_id = $1")
        .bind(user)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM snapshots WHERE aggregate_type = 'user' AND aggregate_id = $1")
        .bind(user.to_string())
        .execute(&mut **tx)
        .await?;
    // Every stored response that names the user, but this request's own.
    let (client, key) = append.request.clone().unwrap_or_default();
    sqlx::query(FORGET_RESPONSES)
        .bind(user)
        .bind(client)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(Cascade {
        user,
        at,
        children,
        households,
    })
}

/// The erasure's clean-up of stored responses (`$1` the user, `$2` and `$3`
/// the erasure's own client and key): those of requests that committed to
/// the user's stream, and those whose body names it, each found through an
/// index.
pub const FORGET_RESPONSES: &str = "DELETE FROM idempotency_keys
     WHERE ((committed_type = 'user' AND committed_id = $1::text) OR subjects @> ARRAY[$1::uuid])
       AND NOT (client_id = $2 AND key = $3)";

/// Who an erasure touches besides the user: its children and the
/// households holding one of its accounts, found under the erasure's locks.
/// [`crate::erasure::cascade`] decides the events.
#[derive(Debug)]
pub(super) struct Cascade {
    user: Uuid,
    at: Timestamp,
    children: Vec<Uuid>,
    households: Vec<Uuid>,
}

impl Cascade {
    /// One append per stream, after its last event, with `append`'s
    /// metadata (the instant of each event). Read under the log's lock,
    /// taken first: no other transaction can append meanwhile, so what it
    /// reads of each stream is final.
    pub(super) async fn appends(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        append: &Append,
    ) -> sqlx::Result<Vec<Append>> {
        if self.children.is_empty() && self.households.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query("SELECT roster_lock_log()").execute(&mut **tx).await?;
        let (children, households) = tails(tx, &self.children, &self.households).await?;
        let mut metadata: serde_json::Map<String, Value> = serde_json::from_str(&append.metadata).unwrap_or_default();
        Ok(crate::erasure::cascade(self.user, self.at, &children, &households)
            .into_iter()
            .map(|c| {
                let (stream, after, event, at) = match &c {
                    Cascaded::Unlinked { child, after, event } => (
                        Stream {
                            aggregate_type: "user",
                            id: *child,
                        },
                        *after,
                        NewEvent::sealed("user", event, None),
                        event.at(),
                    ),
                    Cascaded::Removed {
                        household,
                        after,
                        event,
                    } => (
                        Stream {
                            aggregate_type: "household",
                            id: *household,
                        },
                        *after,
                        NewEvent::sealed("household", event, None),
                        event.at(),
                    ),
                };
                metadata.insert(meta::OCCURRED_AT.to_string(), Value::String(at.to_string()));
                Append {
                    stream,
                    expected_version: after,
                    events: vec![event],
                    constraints: Vec::new(),
                    claim_key: append.claim_key.clone(),
                    keys: Vec::new(),
                    company_id: append.company_id.clone(),
                    metadata: Value::Object(metadata.clone()).to_string(),
                    request: None,
                }
            })
            .collect())
    }
}

/// Each child's and each household's stream: its last sequence and
/// instant, in the order given, in one statement.
async fn tails(
    tx: &mut Transaction<'_, Postgres>,
    children: &[Uuid],
    households: &[Uuid],
) -> sqlx::Result<(Vec<Tail>, Vec<Tail>)> {
    let streams: Vec<(&str, &Uuid)> = children
        .iter()
        .map(|id| ("user", id))
        .chain(households.iter().map(|id| ("household", id)))
        .collect();
    let (types, ids): (Vec<&str>, Vec<String>) = streams.iter().map(|(t, id)| (*t, id.to_string())).unzip();
    let last: Vec<(i64, Option<String>)> = sqlx::query_as(
        "SELECT coalesce(l.sequence, 0), l.at
           FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS s(t, i, n)
           LEFT JOIN LATERAL (
                SELECT sequence, payload -> event_type ->> 'at' AS at FROM events
                 WHERE aggregate_type = s.t AND aggregate_id = s.i
                 ORDER BY sequence DESC LIMIT 1) l ON true
          ORDER BY s.n",
    )
    .bind(&types)
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut tails: Vec<Tail> = streams
        .iter()
        .zip(last)
        .map(|((_, id), (sequence, at))| Tail {
            id: **id,
            sequence: sequence as u64,
            at: at.and_then(|t| serde_json::from_value::<Timestamp>(Value::String(t)).ok()),
        })
        .collect();
    let households = tails.split_off(children.len());
    Ok((tails, households))
}
