//! Crypto-shredding: personal data in the event store is readable only
//! while its owner's data key exists.
//!
//! - [`cipher`]: the keys (master, per-user data keys, per-company claim
//!   keys) and AES-256-GCM.
//! - [`seal`]: events' personal values sealed and opened in their JSON.
//! - [`Vault`]: the keys as stored (`data_keys`, `company_keys`, each
//!   wrapped by the master key), cached where that is safe.
//!
//! Erasure deletes the user's `data_keys` row in the transaction of its
//! `UserErased` event; from then on its sealed values open as `null`.

pub mod cipher;
pub mod seal;

pub use cipher::{CipherError, ClaimKey, DataKey, MasterKey};

use lru::LruCache;
use sqlx::{PgExecutor, PgPool};
use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// The advisory lock (`pg_advisory_*lock`) an erasure holds exclusively
/// while it destroys a key, and the Kafka publisher shares while it reads
/// keys and hands messages to the producer.
pub const ERASURE_LOCK: i64 = 0x726f_7374_6572_0001;

/// Data keys the write side keeps unwrapped.
const CACHED_KEYS: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("the key of {owner} does not unwrap under master key {master_id}: {error}")]
    Unwrap {
        owner: String,
        master_id: String,
        error: CipherError,
    },
    #[error(
        "keys in the database are wrapped by master key {0}, which is neither ROSTER_MASTER_KEY nor ROSTER_PREVIOUS_MASTER_KEY"
    )]
    UnknownMaster(String),
    #[error("master key file {path}: {error}")]
    KeyFile { path: String, error: String },
}

/// A data key about to be stored with the append that first uses it.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub owner: Uuid,
    pub company_id: String,
    pub wrapped: Vec<u8>,
    pub master_id: String,
}

/// The master key as configured: `ROSTER_MASTER_KEY` (base64 of 32 bytes),
/// else a development key generated once into `dev_file` (and a warning).
pub fn master_key(configured: Option<&str>, dev_file: &Path) -> Result<MasterKey, VaultError> {
    let file_error = |error: String| VaultError::KeyFile {
        path: dev_file.display().to_string(),
        error,
    };
    if let Some(text) = configured.filter(|t| !t.trim().is_empty()) {
        return MasterKey::from_base64(text).map_err(|e| file_error(format!("ROSTER_MASTER_KEY: {e}")));
    }
    let key = match std::fs::read_to_string(dev_file) {
        Ok(text) => MasterKey::from_base64(&text).map_err(|e| file_error(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (key, text) = MasterKey::generate();
            if let Some(dir) = dev_file.parent() {
                std::fs::create_dir_all(dir).map_err(|e| file_error(e.to_string()))?;
            }
            // Two processes starting at once: the first file wins.
            match write_new(dev_file, &text) {
                Ok(()) => key,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(dev_file).map_err(|e| file_error(e.to_string()))?;
                    MasterKey::from_base64(&text).map_err(|e| file_error(e.to_string()))?
                }
                Err(e) => return Err(file_error(e.to_string())),
            }
        }
        Err(e) => return Err(file_error(e.to_string())),
    };
    tracing::warn!(
        path = %dev_file.display(),
        "ROSTER_MASTER_KEY is not set: using a development master key kept in a file; set it in production"
    );
    Ok(key)
}

/// Writes a new file readable by its owner only; `AlreadyExists` when one is there.
pub fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

/// Keys of several owners, read at one moment (what a reader of many
/// events uses), and which of them are erased.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: HashMap<Uuid, DataKey>,
    erased: HashSet<Uuid>,
}

impl Keyring {
    pub fn get(&self, owner: Uuid) -> Option<&DataKey> {
        self.keys.get(&owner)
    }

    /// The owner was erased (its key is gone with it).
    pub fn is_erased(&self, owner: Uuid) -> bool {
        self.erased.contains(&owner)
    }
}

/// An owner, its wrapped key and master id if it has one, and whether it
/// was erased.
type KeyRow = (Uuid, Option<Vec<u8>>, Option<String>, bool);

/// The stored keys, unwrapped by the master key.
pub struct Vault {
    master: MasterKey,
    /// The master key being rotated away from (see `roster keys rotate-master`).
    previous: Option<MasterKey>,
    /// Write side only: a command on an erased user is refused by its
    /// aggregate before its key would be needed.
    keys: Mutex<LruCache<Uuid, DataKey>>,
    companies: Mutex<HashMap<String, ClaimKey>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

impl Vault {
    pub fn new(master: MasterKey, previous: Option<MasterKey>) -> Self {
        Vault {
            master,
            previous,
            keys: Mutex::new(LruCache::new(NonZeroUsize::new(CACHED_KEYS).expect("positive"))),
            companies: Mutex::new(HashMap::new()),
        }
    }

    /// A vault with a random master key (tests).
    pub fn ephemeral() -> Self {
        Self::new(MasterKey::generate().0, None)
    }

    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Refuses a master key that does not match the stored keys.
    pub async fn check(&self, pool: &PgPool) -> Result<(), VaultError> {
        // The distinct masters of `data_keys`, one index probe each (a
        // loose index scan), not a read of every key; `company_keys` has a
        // row per company.
        let ids: Vec<String> = sqlx::query_scalar(
            "WITH RECURSIVE m(id) AS (
                 (SELECT master_id FROM data_keys ORDER BY master_id LIMIT 1)
                 UNION ALL
                 SELECT (SELECT master_id FROM data_keys WHERE master_id > m.id ORDER BY master_id LIMIT 1)
                   FROM m WHERE m.id IS NOT NULL)
             SELECT id FROM m WHERE id IS NOT NULL
             UNION SELECT master_id FROM company_keys
             UNION SELECT master_id FROM webhook_endpoints",
        )
        .fetch_all(pool)
        .await?;
        match ids.into_iter().find(|id| self.master_for(id).is_none()) {
            Some(unknown) => Err(VaultError::UnknownMaster(unknown)),
            None => Ok(()),
        }
    }

    /// A secret of the service's own wrapped under the master key, with
    /// that key's id (store both).
    pub fn wrap_secret(&self, aad: &[u8], secret: &[u8; cipher::KEY_LEN]) -> (Vec<u8>, String) {
        (self.master.wrap_secret(aad, secret), self.master.id().to_string())
    }

    /// A secret [`Vault::wrap_secret`] wrapped, under the master or the
    /// previous one.
    pub fn unwrap_secret(
        &self,
        aad: &[u8],
        wrapped: &[u8],
        master_id: &str,
    ) -> Result<zeroize::Zeroizing<[u8; cipher::KEY_LEN]>, VaultError> {
        let master = self
            .master_for(master_id)
            .ok_or_else(|| VaultError::UnknownMaster(master_id.to_string()))?;
        master.unwrap_secret(aad, wrapped).map_err(|error| VaultError::Unwrap {
            owner: String::from_utf8_lossy(aad).into_owned(),
            master_id: master_id.to_string(),
            error,
        })
    }

    fn master_for(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.master)
            .chain(self.previous.as_ref())
            .find(|m| m.id() == id)
    }

    fn unwrap_data(&self, owner: Uuid, wrapped: &[u8], master_id: &str) -> Result<DataKey, VaultError> {
        let master = self
            .master_for(master_id)
            .ok_or_else(|| VaultError::UnknownMaster(master_id.to_string()))?;
        DataKey::unwrap(owner, master, wrapped).map_err(|error| VaultError::Unwrap {
            owner: owner.to_string(),
            master_id: master_id.to_string(),
            error,
        })
    }

    /// A new data key for `owner`: store the [`NewKey`] with the append of
    /// the owner's first event, then [`Vault::remember`] it.
    pub fn new_key(&self, owner: Uuid, company_id: &str) -> (DataKey, NewKey) {
        let (key, wrapped) = DataKey::generate(owner, &self.master);
        let new = NewKey {
            owner,
            company_id: company_id.to_string(),
            wrapped,
            master_id: self.master.id().to_string(),
        };
        (key, new)
    }

    /// Keeps a key that is stored.
    pub fn remember(&self, key: DataKey) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.put(key.owner(), key);
        }
    }

    /// Drops a key from the cache (its owner was erased).
    pub fn forget(&self, owner: Uuid) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.pop(&owner);
        }
    }

    /// The owner's data key for the write side (cached); `None`: erased.
    pub async fn key(&self, pool: &PgPool, owner: Uuid) -> Result<Option<DataKey>, VaultError> {
        if let Some(key) = self.keys.lock().ok().and_then(|mut k| k.get(&owner).cloned()) {
            return Ok(Some(key));
        }
        let ring = self.keyring(pool, &[owner]).await?;
        let key = ring.get(owner).cloned();
        if let Some(key) = &key {
            self.remember(key.clone());
        }
        Ok(key)
    }

    /// The keys of `owners` as stored now (no cache: what a reader shows
    /// after an erasure must not come from a key kept from before it).
    pub async fn keyring<'e>(&self, executor: impl PgExecutor<'e>, owners: &[Uuid]) -> Result<Keyring, VaultError> {
        let mut ring = Keyring::default();
        if owners.is_empty() {
            return Ok(ring);
        }
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT o.id, k.wrapped, k.master_id, coalesce(r.erased_at IS NOT NULL, false)
               FROM UNNEST($1::uuid[]) AS o(id)
               LEFT JOIN data_keys k ON k.owner_id = o.id
               LEFT JOIN user_registry r ON r.user_id = o.id",
        )
        .bind(owners)
        .fetch_all(executor)
        .await?;
        for (owner, wrapped, master_id, erased) in rows {
            if let (Some(wrapped), Some(master_id)) = (wrapped, master_id) {
                ring.keys.insert(owner, self.unwrap_data(owner, &wrapped, &master_id)?);
            }
            if erased {
                ring.erased.insert(owner);
            }
        }
        Ok(ring)
    }

    /// [`Vault::keyring`] for a projector: keys this process keeps are
    /// taken as they are, only the others are read (and kept).
    pub async fn kept_keyring<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        owners: &[Uuid],
    ) -> Result<Keyring, VaultError> {
        let mut kept = HashMap::new();
        let mut missing = Vec::new();
        {
            let mut keys = self.keys.lock().ok();
            for owner in owners {
                match keys.as_mut().and_then(|k| k.get(owner)) {
                    Some(key) => {
                        kept.insert(*owner, key.clone());
                    }
                    None => missing.push(*owner),
                }
            }
        }
        let mut ring = self.keyring(executor, &missing).await?;
        for key in ring.keys.values() {
            self.remember(key.clone());
        }
        ring.keys.extend(kept);
        Ok(ring)
    }

    /// The company's claim key, created on first use.
    pub async fn claim_key(&self, pool: &PgPool, company_id: &str) -> Result<ClaimKey, VaultError> {
        if let Some(key) = self.companies.lock().ok().and_then(|c| c.get(company_id).cloned()) {
            return Ok(key);
        }
        let (_, wrapped) = ClaimKey::generate(company_id, &self.master);
        sqlx::query(
            "INSERT INTO company_keys (company_id, wrapped, master_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(company_id)
        .bind(&wrapped)
        .bind(self.master.id())
        .execute(pool)
        .await?;
        let (wrapped, master_id): (Vec<u8>, String) =
            sqlx::query_as("SELECT wrapped, master_id FROM company_keys WHERE company_id = $1")
                .bind(company_id)
                .fetch_one(pool)
                .await?;
        let master = self
            .master_for(&master_id)
            .ok_or_else(|| VaultError::UnknownMaster(master_id.clone()))?;
        let key = ClaimKey::unwrap(company_id, master, &wrapped).map_err(|error| VaultError::Unwrap {
            owner: company_id.to_string(),
            master_id,
            error,
        })?;
        if let Ok(mut c) = self.companies.lock() {
            c.insert(company_id.to_string(), key.clone());
        }
        Ok(key)
    }

    /// Rewraps up to `limit` keys still under the previous master key with
    /// the current one; returns how many (0: done).
    pub async fn rewrap_batch(&self, pool: &PgPool, limit: i64) -> Result<usize, VaultError> {
        let Some(previous) = &self.previous else { return Ok(0) };
        let mut tx = pool.begin().await?;
        let mut done = 0;
        let data: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT owner_id, wrapped FROM data_keys WHERE master_id = $1 LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(previous.id())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        for (owner, wrapped) in &data {
            let rewrapped = self.rewrap(previous, owner.as_bytes(), wrapped, &owner.to_string())?;
            sqlx::query("UPDATE data_keys SET wrapped = $2, master_id = $3 WHERE owner_id = $1")
                .bind(owner)
                .bind(rewrapped)
                .bind(self.master.id())
                .execute(&mut *tx)
                .await?;
            done += 1;
        }
        let companies: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT company_id, wrapped FROM company_keys WHERE master_id = $1 LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(previous.id())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        for (company, wrapped) in &companies {
            let rewrapped = self.rewrap(previous, company.as_bytes(), wrapped, company)?;
            sqlx::query("UPDATE company_keys SET wrapped = $2, master_id = $3 WHERE company_id = $1")
                .bind(company)
                .bind(rewrapped)
                .bind(self.master.id())
                .execute(&mut *tx)
                .await?;
            done += 1;
        }
        let secrets: Vec<(Uuid, Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT id, secret, previous_secret FROM webhook_endpoints
              WHERE master_id = $1 LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(previous.id())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        for (id, secret, before) in &secrets {
            let name = id.to_string();
            let secret = self.rewrap(previous, id.as_bytes(), secret, &name)?;
            let before = match before {
                Some(b) => Some(self.rewrap(previous, id.as_bytes(), b, &name)?),
                None => None,
            };
            sqlx::query("UPDATE webhook_endpoints SET secret = $2, previous_secret = $3, master_id = $4 WHERE id = $1")
                .bind(id)
                .bind(secret)
                .bind(before)
                .bind(self.master.id())
                .execute(&mut *tx)
                .await?;
            done += 1;
        }
        tx.commit().await?;
        Ok(done)
    }

    fn rewrap(&self, previous: &MasterKey, aad: &[u8], wrapped: &[u8], owner: &str) -> Result<Vec<u8>, VaultError> {
        self.master
            .rewrap(previous, aad, wrapped)
            .map_err(|error| VaultError::Unwrap {
                owner: owner.to_string(),
                master_id: previous.id().to_string(),
                error,
            })
    }

    /// How many keys are still wrapped by the previous master key.
    pub async fn under_previous(&self, pool: &PgPool) -> Result<i64, VaultError> {
        let Some(previous) = &self.previous else { return Ok(0) };
        Ok(sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM data_keys WHERE master_id = $1)
                  + (SELECT count(*) FROM company_keys WHERE master_id = $1)
                  + (SELECT count(*) FROM webhook_endpoints WHERE master_id = $1)",
        )
        .bind(previous.id())
        .fetch_one(pool)
        .await?)
    }
}

/// The vault shared by every part of one process.
pub type SharedVault = Arc<Vault>;
