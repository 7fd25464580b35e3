//! The event store: typed appends, stream reads, snapshots.
//!
//! An append is a stream's new events *and* the write-side constraints they
//! carry ([`crate::constraints`]: unique email / external reference /
//! account id per company, parents in the same company, no cycles), in one
//! atomic write: a failed command leaves no reservation behind, and two
//! racing commands serialise on the constraint row. The outcome is typed:
//! [`Appended`] or an [`AppendError`] saying whether the stream moved on
//! ([`AppendError::Conflict`]), a rule would break
//! ([`AppendError::Violation`]), or Postgres is out of reach.
//!
//! Two ways to write, chosen by the constraints:
//!
//! - the common append (events, claims of unique values, a parentless new
//!   user) is one statement, and concurrent ones share it: they go through
//!   the group-commit [`Writer`](crate::writer);
//! - an append that must lock or read first (a parent link, a release of a
//!   claim, an account-ownership check) runs its own transaction here, with
//!   every row it may wait for taken in one order all writers share.
//!
//! Reads are plain: a stream's events after a sequence, upcast, opened
//! (their personal values unsealed, see `roster-vault`) and typed, and the
//! latest snapshot, read through postgres-es' snapshot store.
//!
//! Personal data is sealed before it gets here (`runner/side.rs`); what this file
//! adds is the keys: a new user's data key is stored with its first events,
//! and unique values are claimed by their keyed hash, never as themselves.
//!
//! - [`transaction`]: the append that takes its locks first;
//! - [`erase`]: the erasure's part of it (who it touches, what it deletes).

mod erase;
mod transaction;

pub use erase::FORGET_RESPONSES;
use transaction::append_in_transaction;
pub use transaction::PARENT_LOCKS;

use crate::append::{is_unavailable, Append, AppendError, Appended, Stream};
use crate::writer::Writer;
use cqrs_es::persist::PersistedEventRepository;
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use roster_vault::Vault;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Reads of the store failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("event store unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("event store error: {0}")]
    Internal(sqlx::Error),
    #[error("unreadable event {sequence} of {aggregate_id}: {error}")]
    Unreadable {
        aggregate_id: Uuid,
        sequence: u64,
        error: String,
    },
    #[error(transparent)]
    Keys(#[from] roster_vault::VaultError),
}

impl From<sqlx::Error> for ReadError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            ReadError::Unavailable(e)
        } else {
            ReadError::Internal(e)
        }
    }
}

/// The store, shared by every aggregate type's write side.
#[derive(Clone)]
pub struct EventRepo {
    pool: PgPool,
    snapshots: Arc<PostgresEventRepository>,
    writer: Writer,
    vault: Arc<Vault>,
}

impl EventRepo {
    /// Starts the group-commit writer on `pool` (needs a Tokio runtime).
    pub fn new(pool: PgPool, vault: Arc<Vault>) -> Self {
        Self {
            snapshots: Arc::new(PostgresEventRepository::new(pool.clone())),
            writer: Writer::start(pool.clone()),
            pool,
            vault,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The registry's word on `user` in `company_id`: `None` if it is no
    /// user of that company, else whether it is erased. Always current.
    pub async fn registered(&self, company_id: &str, user: Uuid) -> Result<Option<bool>, ReadError> {
        Ok(
            sqlx::query_scalar(
                "SELECT erased_at IS NOT NULL FROM user_registry WHERE user_id = $1 AND company_id = $2",
            )
            .bind(user)
            .bind(company_id)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// The first of `users` the registry marks erased (of any company).
    pub async fn first_erased(&self, users: &[Uuid]) -> Result<Option<Uuid>, ReadError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM user_registry WHERE user_id = ANY($1) AND erased_at IS NOT NULL LIMIT 1",
        )
        .bind(users)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The household each of `accounts` (keyed hashes of account ids) is a
    /// member of in `company_id`, as the membership claims say, in order.
    pub async fn households_of(&self, company_id: &str, accounts: &[String]) -> Result<Vec<Option<Uuid>>, ReadError> {
        let rows: Vec<(String, Uuid)> = sqlx::query_as(
            "SELECT value, owner_id FROM unique_claims
              WHERE company_id = $1 AND kind = 'household_account' AND value = ANY($2)",
        )
        .bind(company_id)
        .bind(accounts)
        .fetch_all(&self.pool)
        .await?;
        Ok(accounts
            .iter()
            .map(|hash| rows.iter().find(|(v, _)| v == hash).map(|(_, h)| *h))
            .collect())
    }

    /// Appends `events` to `stream` at `expected_version`, with the
    /// constraints they carry, atomically.
    pub async fn append(&self, append: Append) -> Result<Appended, AppendError> {
        if append.events.is_empty() {
            return Ok(Appended {
                version: append.expected_version,
                position: 0,
            });
        }
        if append.fits_one_statement() {
            return self.writer.append(append).await;
        }
        append_in_transaction(&self.pool, &append).await
    }

    /// The stream's events after `sequence`, upcast, opened and typed, with
    /// their sequences. An event whose owner is erased comes with its
    /// personal values `null`, or not at all when it cannot be typed so (a
    /// user's events before its `UserErased`, which folds to the same
    /// state whatever came before).
    pub async fn events_after<A: Aggregate>(&self, id: Uuid, sequence: u64) -> Result<Vec<(u64, A::Event)>, ReadError> {
        let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT sequence, event_type, event_version, payload::text FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
              ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(id.to_string())
        .bind(sequence as i64)
        .fetch_all(&self.pool)
        .await?;
        let stream = id.to_string();
        let mut keys: HashMap<Uuid, Option<roster_vault::DataKey>> = HashMap::new();
        let mut events = Vec::with_capacity(rows.len());
        for (sequence, event_type, version, payload) in rows {
            let unreadable = |error: String| ReadError::Unreadable {
                aggregate_id: id,
                sequence: sequence as u64,
                error,
            };
            let (_, payload) = roster_events::upcast::upcast_text(A::TYPE, &event_type, &version, payload);
            let (payload, erased) = if roster_vault::seal::is_sealed(&payload) {
                let owner =
                    roster_vault::seal::owner_of(A::TYPE, &stream, &payload).map_err(|e| unreadable(e.to_string()))?;
                let key = match owner {
                    Some(owner) => match keys.get(&owner) {
                        Some(key) => key.clone(),
                        None => {
                            let key = self.vault.key(&self.pool, owner).await?;
                            keys.insert(owner, key.clone());
                            key
                        }
                    },
                    None => None,
                };
                let opened =
                    roster_vault::seal::open_text(payload, key.as_ref()).map_err(|e| unreadable(e.to_string()))?;
                (opened.payload, opened.erased)
            } else {
                (payload, false)
            };
            match serde_json::from_str(&payload) {
                Ok(event) => events.push((sequence as u64, event)),
                Err(_) if erased => {}
                Err(e) => return Err(unreadable(e.to_string())),
            }
        }
        Ok(events)
    }

    /// The aggregate's latest snapshot, if it has one this code can read.
    /// Snapshots only shorten loads: one written by an older shape of the
    /// aggregate, or one that cannot be read now, is ignored (the stream is
    /// read instead, and reports a real outage).
    /// A snapshot sealed under the aggregate's own data key (`sealed`)
    /// opens only while that key exists.
    pub async fn snapshot<A: Aggregate>(&self, id: Uuid, sealed: bool) -> Option<(A, u64)> {
        let snapshot = match self.snapshots.get_snapshot::<A>(&id.to_string()).await {
            Ok(s) => s?,
            Err(e) => {
                tracing::debug!(aggregate_id = %id, error = %e, "snapshot not read");
                return None;
            }
        };
        let state = if sealed {
            let key = self.vault.key(&self.pool, id).await.ok().flatten()?;
            match roster_vault::seal::open_value(&snapshot.aggregate, &key) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(aggregate_id = %id, error = %e, "sealed snapshot ignored");
                    return None;
                }
            }
        } else {
            snapshot.aggregate
        };
        match serde_json::from_value::<A>(state) {
            Ok(a) => Some((a, snapshot.current_snapshot as u64)),
            Err(e) => {
                tracing::warn!(aggregate_id = %id, error = %e, "unreadable snapshot ignored");
                None
            }
        }
    }

    /// Replaces the aggregate's snapshot with one at `sequence` (unless a
    /// newer one is there). Whichever a racing writer leaves, the events
    /// after it are read on top.
    pub async fn save_snapshot(
        &self,
        stream: Stream,
        sequence: u64,
        payload: &Value,
        sealed: bool,
    ) -> Result<(), ReadError> {
        let payload = match sealed {
            true => match self.vault.key(&self.pool, stream.id).await? {
                Some(key) => roster_vault::seal::seal_value(payload, &key),
                None => return Ok(()),
            },
            false => payload.clone(),
        };
        sqlx::query(
            "WITH older AS (
                 DELETE FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2 AND last_sequence < $3
             )
             INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
             SELECT $1, $2, $3, $3, $4::json
              WHERE NOT EXISTS (SELECT 1 FROM snapshots
                                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND last_sequence >= $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(stream.aggregate_type)
        .bind(stream.id.to_string())
        .bind(sequence as i64)
        .bind(payload.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
