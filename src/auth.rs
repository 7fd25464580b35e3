//! API clients, access tokens and scopes (CONTRACT §2).
//!
//! A client belongs to exactly one company. Its secret is stored as an
//! Argon2id hash. Access tokens are HS256 JWTs signed with a key kept in
//! the database, so they stay valid across restarts and processes until
//! they expire; checking one needs no database round trip.

use crate::jwe::PublicKey;
use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lru::LruCache;
use rand::RngCore;
use roster_command::secret::{self, Secret};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock, Mutex};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Lifetime of an access token.
pub const TOKEN_TTL_SECS: i64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    UsersRead,
    UsersWrite,
    CardsWrite,
    UsersErase,
    Admin,
    Webhooks,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::UsersRead,
        Scope::UsersWrite,
        Scope::CardsWrite,
        Scope::UsersErase,
        Scope::Admin,
        Scope::Webhooks,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::UsersRead => "users:read",
            Scope::UsersWrite => "users:write",
            Scope::CardsWrite => "cards:write",
            Scope::UsersErase => "users:erase",
            Scope::Admin => "admin",
            Scope::Webhooks => "webhooks",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// What `client create` prints.
#[derive(Debug, Serialize)]
pub struct NewClient {
    pub client_id: Uuid,
    pub client_secret: String,
    pub company_id: String,
    pub scopes: Vec<&'static str>,
    pub signing_key_fingerprint: Option<String>,
    pub encryption_key_fingerprint: Option<String>,
}

/// A client's keys for signed and encrypted calls (CONTRACT §10).
#[derive(Debug, Clone, Default)]
pub struct ClientKeys {
    /// Its OAuth 1.0a signatures verify under this key.
    pub signing: Option<PublicKey>,
    /// Its encrypted answers are made for this key.
    pub encryption: Option<PublicKey>,
}

/// What `client update` prints: the client, without its secret.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ClientDoc {
    pub client_id: Uuid,
    pub company_id: String,
    pub name: Option<String>,
    pub scopes: Vec<String>,
    pub signing_key_fingerprint: Option<String>,
    pub encryption_key_fingerprint: Option<String>,
}

/// Registers or replaces the keys given; keeps the others.
pub async fn update_client(pool: &PgPool, client_id: Uuid, keys: &ClientKeys) -> anyhow::Result<ClientDoc> {
    // A key's fingerprint is the hex SHA-256 of its DER SubjectPublicKeyInfo,
    // which is what the columns hold.
    let doc: Option<ClientDoc> = sqlx::query_as(
        "UPDATE clients SET signing_key = coalesce($2, signing_key), encryption_key = coalesce($3, encryption_key)
          WHERE client_id = $1
         RETURNING client_id, company_id, name, scopes,
                   encode(sha256(signing_key), 'hex') AS signing_key_fingerprint,
                   encode(sha256(encryption_key), 'hex') AS encryption_key_fingerprint",
    )
    .bind(client_id)
    .bind(keys.signing.as_ref().map(PublicKey::der))
    .bind(keys.encryption.as_ref().map(PublicKey::der))
    .fetch_optional(pool)
    .await?;
    doc.with_context(|| format!("no client {client_id}"))
}

/// Provisions a client, creating its company if new.
pub async fn create_client(
    pool: &PgPool,
    company: &str,
    name: Option<&str>,
    scopes: Option<&[String]>,
    keys: &ClientKeys,
) -> anyhow::Result<NewClient> {
    let company = company.trim();
    anyhow::ensure!(
        !company.is_empty()
            && company.len() <= 64
            && company
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "--company must be 1 to 64 letters, digits, '-' or '_'"
    );
    let scopes: Vec<Scope> = match scopes {
        None => Scope::ALL.to_vec(),
        Some(list) => list
            .iter()
            .map(|s| Scope::parse(s.trim()).with_context(|| format!("unknown scope {s:?}")))
            .collect::<anyhow::Result<_>>()?,
    };
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let client_secret = URL_SAFE_NO_PAD.encode(raw);
    let hash = secret::hash(&Secret::new(client_secret.clone()));
    let client_id = Uuid::now_v7();
    let scope_names: Vec<&'static str> = scopes.iter().map(Scope::as_str).collect();
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO companies (id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(company)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO clients (client_id, company_id, name, secret_hash, scopes, signing_key, encryption_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(client_id)
    .bind(company)
    .bind(name)
    .bind(&hash)
    .bind(&scope_names)
    .bind(keys.signing.as_ref().map(PublicKey::der))
    .bind(keys.encryption.as_ref().map(PublicKey::der))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(NewClient {
        client_id,
        client_secret,
        company_id: company.to_string(),
        scopes: scope_names,
        signing_key_fingerprint: keys.signing.as_ref().map(|k| k.fingerprint().to_string()),
        encryption_key_fingerprint: keys.encryption.as_ref().map(|k| k.fingerprint().to_string()),
    })
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The client id.
    pub sub: String,
    /// The company the client acts for.
    pub company: String,
    /// Space-separated scopes.
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client_id: String,
    pub company_id: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens whose signature was checked, with their caller and expiry: a
    /// client presents the same token for its whole life, so its signature
    /// and claims are checked once, its expiry on every request.
    verified: Mutex<LruCache<String, (Caller, i64)>>,
    /// Client secrets being checked at once (each an Argon2id run of 19 MiB
    /// on the blocking pool), at most [`secret_checks`].
    checking: Arc<Semaphore>,
}

/// Verified tokens kept.
const VERIFIED_TOKENS: usize = 1024;

/// How many client secrets a process checks at once: one per core. A token
/// request past them is answered at once with 503 `UNAVAILABLE` and
/// `Retry-After` instead of queueing work (and memory) that no bound would
/// stop; requests with a token never hash and keep being answered.
pub fn secret_checks() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The hash an unknown client id is checked against, so that it costs the
/// same time and the same permit as a known one with a wrong secret.
static UNKNOWN_CLIENT: LazyLock<String> = LazyLock::new(|| secret::hash(&Secret::new(Uuid::new_v4().to_string())));

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid client credentials")]
    BadCredentials,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("token signing failed")]
    Signing,
    /// Every secret check is taken: retry later.
    #[error("too many client secrets being checked")]
    Busy,
}

/// What `POST /v1/oauth/token` returns.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccessToken {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
}

impl Tokens {
    /// Loads the signing key, generating it on first use.
    pub async fn load(pool: &PgPool) -> anyhow::Result<Self> {
        let mut candidate = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut candidate);
        sqlx::query("INSERT INTO signing_keys (id, secret) VALUES (1, $1) ON CONFLICT DO NOTHING")
            .bind(&candidate[..])
            .execute(pool)
            .await?;
        let key: Vec<u8> = sqlx::query_scalar("SELECT secret FROM signing_keys WHERE id = 1")
            .fetch_one(pool)
            .await?;
        Ok(Self::with_key(&key))
    }

    fn with_key(key: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            verified: Mutex::new(LruCache::new(
                NonZeroUsize::new(VERIFIED_TOKENS).expect("a positive capacity"),
            )),
            checking: Arc::new(Semaphore::new(secret_checks())),
        }
    }

    /// Checks client credentials and issues a token.
    pub async fn issue(
        &self,
        pool: &PgPool,
        client_id: &str,
        client_secret: Secret,
    ) -> Result<AccessToken, TokenError> {
        let permit = self
            .checking
            .clone()
            .try_acquire_owned()
            .map_err(|_| TokenError::Busy)?;
        let id = client_id.parse::<Uuid>().ok();
        let row: Option<(String, String, Vec<String>)> = match id {
            Some(id) => {
                sqlx::query_as("SELECT company_id, secret_hash, scopes FROM clients WHERE client_id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?
            }
            None => None,
        };
        // An unknown client is checked too (against a hash no secret
        // matches): it answers in the same way and time as a wrong secret.
        let hash = row.as_ref().map(|r| r.1.clone());
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // Tests hold a check here, its permit taken.
            fail::fail_point!("auth::checking_secret");
            secret::verify(&client_secret, hash.as_deref().unwrap_or(&UNKNOWN_CLIENT))
        })
        .await
        .unwrap_or(false);
        let (Some(id), Some((company, _, scopes)), true) = (id, row, ok) else {
            return Err(TokenError::BadCredentials);
        };
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: id.to_string(),
            company,
            scope: scopes.join(" "),
            iat: now,
            exp: now + TOKEN_TTL_SECS,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| TokenError::Signing)?;
        Ok(AccessToken {
            access_token: token,
            token_type: "Bearer",
            expires_in: TOKEN_TTL_SECS,
            scope: claims.scope,
        })
    }

    /// Verifies a bearer token presented with `x-appid`.
    pub fn verify(&self, token: &str, app_id: &str) -> Option<Caller> {
        let now = chrono::Utc::now().timestamp();
        let kept = self.verified.lock().ok().and_then(|mut v| v.get(token).cloned());
        let (caller, exp) = match kept {
            Some(kept) => kept,
            None => {
                let c = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
                    .ok()?
                    .claims;
                let caller = Caller {
                    client_id: c.sub,
                    company_id: c.company,
                    scopes: c.scope.split(' ').filter_map(Scope::parse).collect(),
                };
                if let Ok(mut v) = self.verified.lock() {
                    v.put(token.to_string(), (caller.clone(), c.exp));
                }
                (caller, c.exp)
            }
        };
        // As `Validation` (leeway 0): expired once `exp` has passed.
        (exp >= now && caller.client_id == app_id).then_some(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(tokens: &Tokens, sub: &str, exp: i64) -> String {
        let claims = Claims {
            sub: sub.into(),
            company: "acme".into(),
            scope: "users:read".into(),
            iat: exp - 60,
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &tokens.encoding).expect("signed")
    }

    #[test]
    fn a_kept_token_still_expires_and_still_names_its_client() {
        let tokens = Tokens::with_key(b"a test key of thirty-two bytes!!");
        let now = chrono::Utc::now().timestamp();
        let t = token(&tokens, "client-a", now + 1);
        assert!(tokens.verify(&t, "client-a").is_some(), "valid");
        assert!(tokens.verify(&t, "client-a").is_some(), "valid, from the kept ones");
        assert!(tokens.verify(&t, "client-b").is_none(), "another x-appid");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert!(tokens.verify(&t, "client-a").is_none(), "expired although kept");
        let forged = Tokens::with_key(b"another key, not the service's!!");
        assert!(tokens
            .verify(&token(&forged, "client-a", now + 60), "client-a")
            .is_none());
    }
}
