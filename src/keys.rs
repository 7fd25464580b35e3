//! The keys of personal data at the command line: the vault a process runs
//! with, `roster keys rotate-master` and `roster keys seal-existing` (the
//! upgrade of a store written before encryption).

use crate::config::KeyArgs;
use anyhow::Context;
use roster_vault::seal::{has_plain_values, seal_payload};
use roster_vault::{master_key, DataKey, MasterKey, Vault};
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// The vault of `args`, checked against the keys the database holds.
pub async fn vault(pool: &PgPool, args: &KeyArgs) -> anyhow::Result<Arc<Vault>> {
    let master = master_key(args.master_key.as_deref(), &args.dev_key_file())?;
    let previous = args
        .previous_master_key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
        .map(MasterKey::from_base64)
        .transpose()
        .context("ROSTER_PREVIOUS_MASTER_KEY")?;
    let vault = Vault::new(master, previous);
    vault.check(pool).await?;
    Ok(Arc::new(vault))
}

/// Refuses to serve or replay a store that still holds plaintext.
pub async fn require_sealed(pool: &PgPool) -> anyhow::Result<()> {
    let done: bool = sqlx::query_scalar("SELECT done FROM vault_migration")
        .fetch_one(pool)
        .await?;
    anyhow::ensure!(
        done,
        "this event store was written before personal data was encrypted: run `roster keys seal-existing` first"
    );
    Ok(())
}

/// Rewraps every key under the previous master key; returns how many.
pub async fn rotate_master(pool: &PgPool, vault: &Vault, mut progress: impl FnMut(u64)) -> anyhow::Result<u64> {
    let mut total = 0;
    loop {
        let n = vault.rewrap_batch(pool, 500).await? as u64;
        if n == 0 {
            return Ok(total);
        }
        total += n;
        progress(n);
    }
}

/// Events still to seal (for a progress bar).
pub async fn events_to_seal(pool: &PgPool) -> anyhow::Result<u64> {
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events, vault_migration WHERE NOT done AND position > sealed_through")
            .fetch_one(pool)
            .await?;
    Ok(n as u64)
}

type EventRow = (i64, String, String, String, String);

/// Seals a store written before encryption, in place: each event's personal
/// values under its owner's key (created as needed), the unique claims'
/// values replaced by keyed hashes, the snapshots dropped (they are only a
/// shortcut). A batch per transaction, recording how far it got, so an
/// interrupted run goes on where it stopped. Writers of the old version
/// must be stopped; `roster serve` refuses to start until this is done.
pub async fn seal_existing(
    pool: &PgPool,
    vault: &Vault,
    batch: i64,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<u64> {
    let (mut through, done): (i64, bool) = sqlx::query_as("SELECT sealed_through, done FROM vault_migration")
        .fetch_one(pool)
        .await?;
    if done {
        return Ok(0);
    }
    let mut keys: HashMap<Uuid, DataKey> = HashMap::new();
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT position, aggregate_type, aggregate_id, event_type, payload::text FROM events
              WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(through)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last().map(|r| r.0) else { break };
        let (mut positions, mut payloads) = (Vec::new(), Vec::new());
        for (position, aggregate_type, aggregate_id, event_type, payload) in &rows {
            let mut value: Value = serde_json::from_str(payload)?;
            if !has_plain_values(aggregate_type, event_type, &mut value) {
                continue;
            }
            let owner = value
                .as_object()
                .and_then(|m| m.values().next())
                .and_then(|inner| roster_events::personal::owner(aggregate_type, aggregate_id, inner))
                .with_context(|| format!("event {position} holds personal data of no user"))?;
            let key = match keys.get(&owner) {
                Some(key) => key,
                None => keys.entry(owner).or_insert(key_of(&mut tx, vault, owner).await?),
            };
            seal_payload(aggregate_type, event_type, &mut value, key);
            positions.push(*position);
            payloads.push(value.to_string());
        }
        sqlx::query(
            "UPDATE events e SET payload = u.p::json FROM UNNEST($1::bigint[], $2::text[]) AS u(g, p)
              WHERE e.position = u.g",
        )
        .bind(&positions)
        .bind(&payloads)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE vault_migration SET sealed_through = $1")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        through = last;
        total += rows.len() as u64;
        progress(rows.len() as u64);
    }
    hash_claims(pool, vault).await?;
    sqlx::query("DELETE FROM snapshots").execute(pool).await?;
    sqlx::query("UPDATE vault_migration SET done = true")
        .execute(pool)
        .await?;
    Ok(total)
}

/// The owner's stored key, or a new one stored now.
async fn key_of(tx: &mut sqlx::PgConnection, vault: &Vault, owner: Uuid) -> anyhow::Result<DataKey> {
    if let Some(key) = vault.keyring(&mut *tx, &[owner]).await?.get(owner) {
        return Ok(key.clone());
    }
    let company: String = sqlx::query_scalar("SELECT company_id FROM user_registry WHERE user_id = $1")
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?
        .with_context(|| format!("user {owner} is not registered"))?;
    let (key, new) = vault.new_key(owner, &company);
    sqlx::query("INSERT INTO data_keys (owner_id, company_id, wrapped, master_id) VALUES ($1, $2, $3, $4)")
        .bind(new.owner)
        .bind(&new.company_id)
        .bind(&new.wrapped)
        .bind(&new.master_id)
        .execute(&mut *tx)
        .await?;
    Ok(key)
}

/// Replaces every claim written before encryption by its keyed hash.
async fn hash_claims(pool: &PgPool, vault: &Vault) -> anyhow::Result<()> {
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT company_id, kind, value FROM unique_claims WHERE plain LIMIT 1000 FOR UPDATE")
                .fetch_all(&mut *tx)
                .await?;
        if rows.is_empty() {
            return Ok(());
        }
        for (company, kind, value) in rows {
            let hash = vault.claim_key(pool, &company).await?.hash(&value);
            sqlx::query(
                "UPDATE unique_claims SET value = $4, plain = false WHERE company_id = $1 AND kind = $2 AND value = $3",
            )
            .bind(&company)
            .bind(&kind)
            .bind(&value)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
}
