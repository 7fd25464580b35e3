//! Signed and encrypted calls (CONTRACT §10): the layer in front of every
//! `/v1` route but the token route (and the seeds' doors, §11) that lets
//! Mastercard's client libraries call Roster unchanged.
//!
//! A request with `Authorization: OAuth …` is verified here ([`oauth1`]):
//! the client's signing key, the clock, the body hash, the signature, then
//! its nonce, remembered in Postgres so a replay is refused by every
//! process (recorded while an encrypted body decrypts, before the route
//! runs). Its caller goes on in the request's extensions, where
//! [`super::extract::caller`] finds it ([`Verified`]). A body `{"encryptedValue": JWE}`
//! is decrypted with Roster's key ([`jwe`]) and handled as if its plaintext
//! had been sent; the answer to it (or to `include_verification_details=true`)
//! is encrypted for the client's key, decided before the route runs so a
//! client without one changes nothing. Everything after this layer
//! (idempotency, commands, the audit trail, logs, Kafka) sees plaintext;
//! nothing encrypted is stored.

use super::error::ApiError;
use super::extract::Verified;
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::jwe::{PrivateKey, PublicKey};
use crate::oauth1::{self, OAuthHeader, Refusal, SignedRequest};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, request::Parts, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lru::LruCache;
use serde::Deserialize;
use sqlx::PgPool;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use uuid::Uuid;

/// Roster's side of §10: its key, and the URL clients sign for.
#[derive(Debug)]
pub struct Sealing {
    pub key: PrivateKey,
    /// `ROSTER_PUBLIC_URL` split into scheme, authority and path prefix.
    public_url: Option<(String, String, String)>,
    /// Clients' keys parsed, by their DER bytes (decoding a key with
    /// OpenSSL 3 cost more than checking the signature with it: see
    /// docs/benchmarks.md). The bytes still come from the database on every
    /// request, so a key replaced by `roster client update` is used at once.
    parsed: Mutex<LruCache<Vec<u8>, PublicKey>>,
}

/// Parsed client keys kept.
const PARSED_KEYS: usize = 1024;

impl Sealing {
    pub fn new(key: PrivateKey, public_url: Option<&str>) -> anyhow::Result<Self> {
        let public_url = match public_url.map(str::trim).filter(|u| !u.is_empty()) {
            None => None,
            Some(url) => {
                let (scheme, rest) = url
                    .split_once("://")
                    .filter(|(s, _)| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
                    .ok_or_else(|| anyhow::anyhow!("ROSTER_PUBLIC_URL must start with http:// or https://"))?;
                let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
                anyhow::ensure!(!authority.is_empty(), "ROSTER_PUBLIC_URL has no host");
                let prefix = prefix.trim_end_matches('/');
                let prefix = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("/{prefix}")
                };
                Some((scheme.to_string(), authority.to_string(), prefix))
            }
        };
        Ok(Sealing {
            key,
            public_url,
            parsed: Mutex::new(LruCache::new(NonZeroUsize::new(PARSED_KEYS).expect("non-zero"))),
        })
    }

    /// A client's key from its DER SubjectPublicKeyInfo.
    fn public_key(&self, der: &[u8]) -> Option<PublicKey> {
        if let Some(key) = self.parsed.lock().ok()?.get(der) {
            return Some(key.clone());
        }
        let key = PublicKey::from_der(der).ok()?;
        self.parsed.lock().ok()?.put(der.to_vec(), key.clone());
        Some(key)
    }

    /// The base URI a request's signature covers: `ROSTER_PUBLIC_URL` and
    /// the path, else `http://` + `Host` + the path.
    fn base_uri(&self, parts: &Parts) -> Option<String> {
        let path = parts.uri.path();
        Some(match &self.public_url {
            Some((scheme, authority, prefix)) => oauth1::base_uri(scheme, authority, &format!("{prefix}{path}")),
            None => {
                let host = parts.headers.get(header::HOST)?.to_str().ok()?;
                oauth1::base_uri("http", host, path)
            }
        })
    }
}

/// Whether a query asks for `include_verification_details=true`: 400 for
/// a value other than `true` or `false`.
pub fn wants_verification_details(query: Option<&str>) -> Result<bool, ApiError> {
    let pairs = match query {
        None | Some("") => return Ok(false),
        Some(q) => super::extract::query_pairs(q)?,
    };
    match pairs.get("include_verification_details").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::field("include_verification_details", "must be true or false")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Encrypted {
    #[serde(rename = "encryptedValue")]
    encrypted_value: String,
}

/// A client's company, scopes and keys (DER SubjectPublicKeyInfo).
#[derive(sqlx::FromRow)]
struct Client {
    company_id: String,
    scopes: Vec<String>,
    signing_key: Option<Vec<u8>>,
    encryption_key: Option<Vec<u8>>,
}

async fn client(pool: &PgPool, client_id: Uuid) -> Result<Option<Client>, ApiError> {
    sqlx::query_as("SELECT company_id, scopes, signing_key, encryption_key FROM clients WHERE client_id = $1")
        .bind(client_id)
        .fetch_optional(pool)
        .await
        .map_err(|e| ApiError::internal(format!("cannot read a client: {e}")))
}

/// Records a signed request's nonce: `false` when the client used it in
/// the last 10 minutes (the span a request's timestamp stays acceptable).
/// Two at once with one nonce: the second waits for the first's row and
/// then finds it, so exactly one is fresh.
pub async fn fresh_nonce<'e>(db: impl sqlx::PgExecutor<'e>, client_id: Uuid, nonce: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO oauth_nonces (client_id, nonce) VALUES ($1, $2)
         ON CONFLICT (client_id, nonce) DO UPDATE SET seen_at = now()
          WHERE oauth_nonces.seen_at < now() - make_interval(secs => $3)",
    )
    .bind(client_id)
    .bind(nonce)
    .bind((2 * oauth1::WINDOW_SECS) as f64)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes nonces too old to matter; returns how many.
pub async fn purge_nonces(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM oauth_nonces WHERE seen_at < now() - make_interval(secs => $1)")
            .bind((2 * oauth1::WINDOW_SECS) as f64)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// A signed request that passed every check but its nonce's.
struct Signed {
    caller: Caller,
    /// The key its answers are encrypted for (DER), if the client has one.
    answer_key: Option<Vec<u8>>,
    client_id: Uuid,
    nonce: String,
}

/// Checks a signed request's client, clock, body hash and signature; the
/// nonce is the caller's to record next.
async fn verify(state: &AppState, header: &str, parts: &Parts, body: &[u8]) -> Result<Signed, ApiError> {
    let oauth = OAuthHeader::parse(header).map_err(ApiError::SignatureRefused)?;
    let refused = |r: Refusal| ApiError::SignatureRefused(r);
    let client_id: Uuid = oauth
        .consumer_key
        .parse()
        .map_err(|_| refused(Refusal::UnknownClient))?;
    let client = client(&state.pool, client_id)
        .await?
        .ok_or(refused(Refusal::UnknownClient))?;
    let key = client
        .signing_key
        .as_deref()
        .and_then(|der| state.sealing.public_key(der))
        .ok_or(refused(Refusal::UnknownClient))?;
    let base_uri = state.sealing.base_uri(parts).ok_or(refused(Refusal::Malformed))?;
    let request = SignedRequest {
        method: parts.method.as_str(),
        base_uri: &base_uri,
        query: parts.uri.query(),
        body,
    };
    oauth
        .verify(&key, chrono::Utc::now().timestamp(), &request)
        .map_err(refused)?;
    Ok(Signed {
        caller: Caller {
            client_id: client_id.to_string(),
            company_id: client.company_id,
            scopes: client.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        },
        answer_key: client.encryption_key,
        client_id,
        nonce: oauth.nonce,
    })
}

/// The routes that take signed and encrypted calls: every `/v1` route but
/// the token route (CONTRACT §10), and the seeds' own doors, which share
/// `/v1`'s authentication (§11).
pub fn covers(path: &str) -> bool {
    (path.starts_with("/v1/") && path != super::oauth::TOKEN_PATH)
        || path.starts_with("/md/api/")
        || super::cradl::is_cradl(path)
}

fn is_oauth(value: &str) -> bool {
    value.len() > 6 && value[..6].eq_ignore_ascii_case("oauth ")
}

/// The layer: see the module's documentation.
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !covers(req.uri().path()) {
        return next.run(req).await;
    }
    let signed = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_oauth(v))
        .map(str::to_string);
    let details = wants_verification_details(req.uri().query()).unwrap_or(false);
    let has_body =
        req.headers().contains_key(header::CONTENT_LENGTH) || req.headers().contains_key(header::TRANSFER_ENCODING);
    // The common case, a bearer request in plaintext, goes on untouched
    // but for a look at its body.
    if signed.is_none() && !details && !has_body {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, super::BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let encrypted = (object && contains(&bytes, b"\"encryptedValue\""))
        .then(|| serde_json::from_slice::<Encrypted>(&bytes).ok())
        .flatten();
    let mut nonce = None;
    let (caller, answer_key) = match &signed {
        Some(header) => match verify(&state, header, &parts, &bytes).await {
            Ok(signed) => {
                nonce = Some((signed.client_id, signed.nonce));
                (Some(signed.caller), signed.answer_key)
            }
            Err(e) => return e.into_response(),
        },
        None if encrypted.is_some() || details => {
            match super::extract::caller(&parts.headers, &parts.extensions, &state.tokens) {
                Some(caller) => {
                    let key = match caller.client_id.parse() {
                        Ok(id) => match client(&state.pool, id).await {
                            Ok(client) => client.and_then(|c| c.encryption_key),
                            Err(e) => return e.into_response(),
                        },
                        Err(_) => None,
                    };
                    (Some(caller), key)
                }
                // Not authenticated: the route answers 401.
                None => (None, None),
            }
        }
        None => (None, None),
    };
    let mut body = bytes;
    let mut answer_for = None;
    if let Some(caller) = caller {
        // The nonce is recorded while the payload decrypts: the round trip
        // and the RSA decryption overlap. A reused nonce is refused first.
        let record = async {
            match &nonce {
                Some((client_id, nonce)) => fresh_nonce(&state.pool, *client_id, nonce)
                    .await
                    .map_err(|e| ApiError::internal(format!("cannot record a nonce: {e}"))),
                None => Ok(true),
            }
        };
        let open = async {
            encrypted
                .as_ref()
                .map(|e| state.sealing.key.decrypt(&e.encrypted_value))
        };
        let (fresh, opened) = tokio::join!(record, open);
        match fresh {
            Ok(true) => {}
            Ok(false) => return ApiError::SignatureRefused(Refusal::NonceReused).into_response(),
            Err(e) => return e.into_response(),
        }
        if let Some(opened) = opened {
            match opened {
                Ok(plain) if serde_json::from_slice::<serde::de::IgnoredAny>(&plain).is_ok() => {
                    body = Bytes::from(plain);
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                    parts
                        .headers
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                Ok(_) => return ApiError::DecryptionFailed(crate::jwe::JweError::NotJson).into_response(),
                Err(e) => return ApiError::DecryptionFailed(e).into_response(),
            }
        }
        if encrypted.is_some() || details {
            match answer_key.as_deref().and_then(|der| state.sealing.public_key(der)) {
                Some(key) => answer_for = Some(key),
                _ => {
                    return ApiError::Unprocessable(
                        "ENCRYPTION_REQUIRED",
                        "The answer must be encrypted and the client has no encryption key; register one with `roster client update --encryption-cert`.",
                    )
                    .into_response()
                }
            }
        }
        parts.extensions.insert(Verified(caller));
    }
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    match answer_for {
        Some(key) if response.status().is_success() => encrypt_answer(response, &key).await,
        _ => response,
    }
}

/// The answer's body as `{"encryptedValue": JWE}` for `key`; its other
/// headers (ETag, Location, the consistency token) as they were.
async fn encrypt_answer(response: Response, key: &PublicKey) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(plain) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal("cannot read an answer to encrypt").into_response();
    };
    if plain.is_empty() {
        return Response::from_parts(parts, Body::empty());
    }
    let jwe = match key.encrypt(&plain) {
        Ok(jwe) => jwe,
        Err(e) => return ApiError::internal(format!("cannot encrypt an answer: {e}")).into_response(),
    };
    let sealed = serde_json::json!({ "encryptedValue": jwe }).to_string();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(sealed.len()));
    Response::from_parts(parts, Body::from(sealed))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
