//! Signed and encrypted calls (CONTRACT §10), made by Mastercard's own
//! client libraries: `tests/mastercard/client.py` signs with
//! `mastercard-oauth1-signer` and encrypts and decrypts with
//! `mastercard-client-encryption` (PyPI, pinned by
//! `tests/mastercard/requirements.txt`, installed by `scripts/infra.sh`).

use reqwest::StatusCode;
use roster::auth::ClientKeys;
use roster::jwe::{PrivateKey, PublicKey};
use roster_tests::{roster_bin, spawn_app, spawn_app_sealed, test_sealing, test_webhooks, Creds, TestApp};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// A client of a Mastercard program: its credentials, and its keys as files
/// the library reads.
struct Client {
    creds: Creds,
    /// Its signing key (private, PEM).
    signing: PathBuf,
    /// Its decryption key (private, PEM): answers are encrypted for it.
    decryption: PathBuf,
    /// Roster's encryption certificate, as `roster encryption-certificate`
    /// prints it.
    roster_cert: PathBuf,
    dir: PathBuf,
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path
}

/// A client with a signing key and, when `encryption`, an encryption key.
async fn client(app: &TestApp, scopes: Option<&[&str]>, encryption: bool) -> Client {
    let creds = app.creds(&format!("mc-{}", Uuid::new_v4().simple()), scopes).await;
    let dir = std::env::temp_dir().join(format!("roster-mc-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let signing = PrivateKey::generate().expect("a key");
    let decryption = PrivateKey::generate().expect("a key");
    let keys = ClientKeys {
        signing: Some(signing.public().clone()),
        encryption: encryption.then(|| decryption.public().clone()),
    };
    roster::auth::update_client(&app.pool, creds.client_id.parse().expect("uuid"), &keys)
        .await
        .expect("keys registered");
    Client {
        signing: write(&dir, "signing.pem", &signing.to_pem().expect("pem")),
        decryption: write(&dir, "decryption.pem", &decryption.to_pem().expect("pem")),
        roster_cert: write(&dir, "roster.pem", &test_sealing().key.certificate_pem().expect("cert")),
        creds,
        dir,
    }
}

/// What the Mastercard client got: status, headers, body (decrypted by the
/// library when it came encrypted) and whether it came encrypted.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: Value,
    body: Value,
    encrypted: bool,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
    fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or_default()
    }
}

/// Runs the Mastercard client with `spec` plus the client's keys and the
/// URL of `path` on `app`; one answer per request it sent.
async fn call_all(app: &TestApp, c: &Client, method: &str, path: &str, spec: Value) -> Vec<Answer> {
    let mut full = json!({
        "method": method,
        "url": format!("{}{}", app.base, path),
        "consumer_key": c.creds.client_id,
        "signing_key": c.signing,
        "encryption_cert": c.roster_cert,
        "decryption_key": c.decryption,
    });
    for (k, v) in spec.as_object().expect("spec object") {
        full[k] = v.clone();
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mastercard");
    let mut child = tokio::process::Command::new(dir.join(".venv/bin/python"))
        .arg(dir.join("client.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tests/mastercard/.venv runs (scripts/infra.sh installs it)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(full.to_string().as_bytes())
        .await
        .expect("spec written");
    drop(stdin);
    let out = child.wait_with_output().await.expect("client ran");
    assert!(
        out.status.success(),
        "client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("one JSON answer per line");
            Answer {
                status: StatusCode::from_u16(v["status"].as_u64().expect("status") as u16).expect("status"),
                headers: v["headers"].clone(),
                body: v["body"].clone(),
                encrypted: v["encrypted"].as_bool().expect("encrypted"),
            }
        })
        .collect()
}

async fn call(app: &TestApp, c: &Client, method: &str, path: &str, spec: Value) -> Answer {
    call_all(app, c, method, path, spec).await.remove(0)
}

fn person(email: &str) -> Value {
    json!({"first_name": "Maria", "last_name": "Okafor", "email": email, "mobile": "+971501234567",
           "verification_questions": [{"code": "FIRST_SCHOOL", "answer": "Al Noor"}]})
}

/// How many users the registry holds.
async fn users(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM user_registry")
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

/// An answer encrypted for the client, decrypted with its key (what the
/// library does), as JSON.
fn open(c: &Client, sealed: &str) -> Value {
    let key = PrivateKey::from_pem(&std::fs::read(&c.decryption).expect("key")).expect("key");
    serde_json::from_slice(&key.decrypt(sealed).expect("decrypts for the client")).expect("json")
}

fn count_containing(rows: &[String], needle: &str) -> usize {
    rows.iter().filter(|r| r.contains(needle)).count()
}

#[tokio::test]
async fn a_signed_and_encrypted_enrollment_is_handled_as_its_plaintext() {
    let logs = roster_tests::capture_logs();
    let app = spawn_app().await;
    let c = client(&app, None, true).await;
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/users",
        json!({"body": person("maria@example.com"), "encrypt": true, "headers": {"Idempotency-Key": "enroll-1"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(r.encrypted, "the answer to an encrypted request is encrypted");
    assert_eq!(r.body["email"], "maria@example.com");
    assert_eq!(r.body["company_id"].as_str(), Some(c.creds.company_id.as_str()));
    let id = r.body["id"].as_str().expect("id").to_string();
    assert!(
        r.headers["location"].as_str().is_some_and(|l| l.ends_with(&id)),
        "{:?}",
        r.headers
    );
    assert_eq!(r.headers["etag"], "\"1\"");

    // The same user through the plain door.
    let plain = app.get(&c.creds, &format!("/v1/users/{id}")).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.body, r.body, "the decrypted answer is the user resource");

    // A retry after an unknown outcome: signed anew (a new nonce), the same
    // key: the first answer, encrypted again.
    let again = call(
        &app,
        &c,
        "POST",
        "/v1/users",
        json!({"body": person("maria@example.com"), "encrypt": true, "headers": {"Idempotency-Key": "enroll-1"}}),
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert!(again.encrypted);
    assert_eq!(again.body["id"].as_str(), Some(id.as_str()));

    // The audit trail and Kafka hold the plaintext's effect; nothing
    // encrypted is stored anywhere.
    let trail = app.get(&c.creds, &format!("/v1/users/{id}/events")).await;
    assert_eq!(trail.body["data"][0]["event_type"], "UserEnrolled", "{}", trail.body);
    assert_eq!(trail.body["data"][0]["data"]["email"], "maria@example.com");
    let records = app.consume(1, std::time::Duration::from_secs(30)).await;
    assert!(records.iter().all(|r| !r.value.to_string().contains("encryptedValue")));
    for table in ["events", "idempotency_keys", "user_view"] {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM {table} t"))
            .fetch_all(&app.pool)
            .await
            .expect("rows");
        assert_eq!(count_containing(&rows, "encryptedValue"), 0, "{table} holds ciphertext");
        assert_eq!(count_containing(&rows, "Al Noor"), 0, "{table} holds an answer");
    }
    let logged = String::from_utf8_lossy(&logs.lock().expect("logs")).into_owned();
    assert!(logged.contains("request"), "logs were captured");
    for secret in ["encryptedValue", "Al Noor", "maria@example.com", "oauth_signature"] {
        assert!(!logged.contains(secret), "the logs hold {secret}");
    }
    drop(c);
    app.cleanup().await;
}

#[tokio::test]
async fn signed_requests_carry_the_clients_scopes_on_every_kind_of_route() {
    let app = spawn_app().await;
    let c = client(&app, None, false).await;
    let id = app
        .enroll(
            &c.creds,
            json!({"first_name": "Ann", "last_name": "Lee", "email": "ann@example.com"}),
        )
        .await;

    // No body (the hash of the empty string), a query, no x-appid.
    let read = call(&app, &c, "GET", &format!("/v1/users/{id}"), json!({})).await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    assert!(!read.encrypted, "a plain request gets a plain answer");
    assert_eq!(read.body["id"].as_str(), Some(id.as_str()));
    let list = call(&app, &c, "GET", "/v1/users?limit=5&status=inactive", json!({})).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    assert_eq!(list.body["data"][0]["id"].as_str(), Some(id.as_str()));
    let escaped = call(
        &app,
        &c,
        "POST",
        "/v1/users:search",
        json!({"body": {"email": "ann@example.com"}}),
    )
    .await;
    assert_eq!(escaped.status, StatusCode::OK, "{:?}", escaped.body);
    let patched = call(
        &app,
        &c,
        "PATCH",
        &format!("/v1/users/{id}"),
        json!({"body": {"first_name": "Anna"}}),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(patched.body["first_name"], "Anna");

    // A read-only client signs a write: its scopes hold.
    let reader = client(&app, Some(&["users:read"]), false).await;
    let r = call(
        &app,
        &reader,
        "POST",
        "/v1/users",
        json!({"body": person("x@example.com")}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    // Another company's user is not found.
    let r = call(&app, &reader, "GET", &format!("/v1/users/{id}"), json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    drop((c, reader));
    app.cleanup().await;
}

#[tokio::test]
async fn every_failed_check_is_a_401_naming_the_check() {
    let app = spawn_app().await;
    let c = client(&app, None, true).await;
    let now = chrono::Utc::now().timestamp();
    let body = person("eve@example.com");
    let refused = |r: &Answer, check: &str| {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{check}: {:?}", r.body);
        assert_eq!(r.code(), "UNAUTHENTICATED");
        assert!(r.detail().contains(check), "{check}: {}", r.detail());
        assert!(!r.encrypted);
    };

    // Signed with a key that is not the client's.
    let other = PrivateKey::generate().expect("a key");
    let wrong = write(&c.dir, "wrong.pem", &other.to_pem().expect("pem"));
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/users",
        json!({"body": body, "signing_key": wrong}),
    )
    .await;
    refused(&r, "oauth_signature");
    // The body sent is not the one signed.
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/users",
        json!({"body": body, "sign_body": {"email": "x@example.com"}}),
    )
    .await;
    refused(&r, "oauth_body_hash");
    // Stale, either side of the clock.
    for t in [now - 400, now + 400] {
        let r = call(&app, &c, "POST", "/v1/users", json!({"body": body, "timestamp": t})).await;
        refused(&r, "oauth_timestamp");
    }
    // A reused nonce: the same request twice.
    let spec = json!({"body": person("once@example.com"), "nonce": "n0nce-reused", "timestamp": now});
    let first = call(&app, &c, "POST", "/v1/users", spec.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let second = call(&app, &c, "POST", "/v1/users", spec).await;
    refused(&second, "oauth_nonce");
    // A consumer key that is no client, and a client without a signing key.
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/users",
        json!({"body": body, "consumer_key": Uuid::new_v4()}),
    )
    .await;
    refused(&r, "oauth_consumer_key");
    let bare = app.creds("bare", None).await;
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/users",
        json!({"body": body, "consumer_key": bare.client_id}),
    )
    .await;
    refused(&r, "oauth_consumer_key");
    // Signed for another URL.
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/users",
        json!({"body": body, "sign_url": "http://elsewhere.example/v1/users"}),
    )
    .await;
    refused(&r, "oauth_signature");

    // None of them enrolled anyone; the details never name what was
    // expected (the real body hash, say).
    let n = users(&app).await;
    assert_eq!(n, 1, "only the first nonce's request enrolled");
    drop(c);
    app.cleanup().await;
}

#[tokio::test]
async fn a_nonce_is_used_once_across_processes_even_at_once() {
    let app = spawn_app().await;
    let second = app.beside().await;
    let c = client(&app, None, false).await;
    let now = chrono::Utc::now().timestamp();
    let spec = json!({"body": person("race@example.com"), "nonce": "raced", "timestamp": now, "copies": 8});
    let answers = call_all(&app, &c, "POST", "/v1/users", spec).await;
    let created = answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
    let replays = answers
        .iter()
        .filter(|a| a.status == StatusCode::UNAUTHORIZED && a.detail().contains("oauth_nonce"))
        .count();
    assert_eq!((created, replays), (1, 7), "{answers:?}");
    // The same signed request at the other process.
    let r = call(
        &second,
        &c,
        "POST",
        "/v1/users",
        json!({"body": person("race@example.com"), "nonce": "raced", "timestamp": now}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert!(r.detail().contains("oauth_nonce"));
    // A fresh nonce at the other process is fine (an email taken is not a
    // signature matter).
    let r = call(
        &second,
        &c,
        "POST",
        "/v1/users",
        json!({"body": person("race2@example.com")}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    drop(c);
    second.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn payloads_that_do_not_decrypt_are_400_and_errors_stay_plain() {
    let app = spawn_app().await;
    let c = client(&app, None, true).await;
    let body = person("dee@example.com");
    let failed = |r: &Answer, what: &str| {
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {:?}", r.body);
        assert_eq!(r.code(), "DECRYPTION_FAILED", "{what}");
        assert!(!r.encrypted, "{what}: errors are plain");
    };
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/users",
        json!({"body": body, "encrypt": true, "kid": "00".repeat(32)}),
    )
    .await;
    failed(&r, "foreign kid");
    assert!(r.detail().contains("kid"), "{}", r.detail());
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/users",
        json!({"body": body, "encrypt": true, "tamper": "ciphertext"}),
    )
    .await;
    failed(&r, "tampered ciphertext");

    // Made here, sent with a bearer token: not JSON inside, another alg,
    // another enc, not a JWE.
    let roster_key = test_sealing().key.public().clone();
    let not_json = roster_key.encrypt(b"not json").expect("encrypts");
    let swap_header = |header: &str| {
        use base64::Engine;
        let jwe = roster_key.encrypt(br#"{"email":"x@example.com"}"#).expect("encrypts");
        let rest = jwe.split_once('.').expect("parts").1.to_string();
        format!(
            "{}.{rest}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header)
        )
    };
    for (jwe, what) in [
        (not_json, "not JSON"),
        (swap_header(r#"{"alg":"RSA1_5","enc":"A256GCM"}"#), "alg"),
        (swap_header(r#"{"alg":"RSA-OAEP-256","enc":"A192GCM"}"#), "enc"),
        ("eyJ.abc".to_string(), "JWE"),
    ] {
        let r = app.post(&c.creds, "/v1/users", &json!({ "encryptedValue": jwe })).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.body);
        assert_eq!(r.code(), "DECRYPTION_FAILED", "{what}");
        assert!(
            r.body["detail"].as_str().unwrap_or_default().contains(what),
            "{what}: {}",
            r.body
        );
    }

    // An encrypted request that fails validation: a plain problem that
    // holds none of the request's personal data.
    let bad = json!({"first_name": "Dee", "last_name": "Moss", "email": "not-an-email", "mobile": "+971509999999"});
    let r = call(&app, &c, "POST", "/v1/users", json!({"body": bad, "encrypt": true})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.code(), "VALIDATION_FAILED");
    assert!(!r.encrypted);
    let text = r.body.to_string();
    assert!(
        !text.contains("not-an-email") && !text.contains("971509999999"),
        "{text}"
    );
    let n = users(&app).await;
    assert_eq!(n, 0);
    drop(c);
    app.cleanup().await;
}

#[tokio::test]
async fn a128cbc_hs256_payloads_and_bearer_callers_are_served_too() {
    let app = spawn_app().await;
    let c = client(&app, None, true).await;
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/users",
        json!({"body": person("cbc@example.com"), "encrypt": true, "enc": "A128CBC-HS256"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(r.encrypted);
    assert_eq!(r.body["email"], "cbc@example.com");

    // A bearer caller may encrypt as well: its answer comes for its key.
    let jwe = test_sealing()
        .key
        .public()
        .encrypt(
            json!({"first_name": "Bo", "last_name": "Ng", "email": "bo@example.com"})
                .to_string()
                .as_bytes(),
        )
        .expect("encrypts");
    let r = app.post(&c.creds, "/v1/users", &json!({ "encryptedValue": jwe })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let sealed = r.body["encryptedValue"].as_str().expect("an encrypted answer");
    let key = PrivateKey::from_pem(&std::fs::read(&c.decryption).expect("key")).expect("key");
    // For the client's key: RSA-OAEP-256, A256GCM, kid = its fingerprint.
    let header: Value = {
        use base64::Engine;
        let first = sealed.split('.').next().expect("a header");
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(first)
                .expect("b64"),
        )
        .expect("json")
    };
    assert_eq!(header["alg"], "RSA-OAEP-256");
    assert_eq!(header["enc"], "A256GCM");
    assert_eq!(header["kid"].as_str(), Some(sha256_hex(key.public().der()).as_str()));
    assert_eq!(open(&c, sealed)["email"], "bo@example.com");
    drop(c);
    app.cleanup().await;
}

#[tokio::test]
async fn answers_that_must_be_encrypted_need_the_clients_key_and_change_nothing_without_it() {
    let app = spawn_app().await;
    let c = client(&app, None, false).await;
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/users",
        json!({"body": person("nokey@example.com"), "encrypt": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert_eq!(r.code(), "ENCRYPTION_REQUIRED");
    let n = users(&app).await;
    assert_eq!(n, 0, "nothing was enrolled");
    let id = app
        .enroll(
            &c.creds,
            json!({"first_name": "Ann", "last_name": "Lee", "email": "a@example.com"}),
        )
        .await;
    let r = call(
        &app,
        &c,
        "GET",
        &format!("/v1/users/{id}?include_verification_details=true"),
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert_eq!(r.code(), "ENCRYPTION_REQUIRED");
    let r = app
        .get(&c.creds, &format!("/v1/users/{id}?include_verification_details=true"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    drop(c);
    app.cleanup().await;
}

#[tokio::test]
async fn verification_details_are_always_encrypted() {
    let app = spawn_app().await;
    let c = client(&app, None, true).await;
    let id = app.enroll(&c.creds, person("v@example.com")).await;
    let path = format!("/v1/users/{id}?include_verification_details=true");
    let wrong = app
        .post(
            &c.creds,
            &format!("/v1/users/{id}/verifications"),
            &json!({"code": "FIRST_SCHOOL", "answer": "no"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);

    let r = call(&app, &c, "GET", &path, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.encrypted, "verification details only travel encrypted");
    assert_eq!(r.body["id"].as_str(), Some(id.as_str()));
    assert_eq!(
        r.body["verification_details"],
        json!({"question_codes": ["FIRST_SCHOOL"], "locked": false, "attempts_remaining": 4, "last_verified_at": null})
    );

    let right = app
        .post(
            &c.creds,
            &format!("/v1/users/{id}/verifications"),
            &json!({"code": "FIRST_SCHOOL", "answer": "al noor"}),
        )
        .await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.body);
    // Through the bearer door too: encrypted.
    let r = app.get(&c.creds, &path).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let plain = open(&c, r.body["encryptedValue"].as_str().expect("encrypted"));
    let details = &plain["verification_details"];
    assert_eq!(details["attempts_remaining"], 5, "{details}");
    assert!(details["last_verified_at"].as_str().is_some(), "{details}");
    // Not with a past version; not a value but true or false.
    let r = app.get(&c.creds, &format!("{path}&version=1")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = app
        .get(&c.creds, &format!("/v1/users/{id}?include_verification_details=yes"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    drop(c);
    app.cleanup().await;
}

#[tokio::test]
async fn the_base_uri_is_the_public_url_when_set() {
    let sealing = roster::http::signed::Sealing::new(
        PrivateKey::from_pem(roster_tests::TEST_ENCRYPTION_KEY.as_bytes()).expect("key"),
        Some("https://Roster.Example.com:443/"),
    )
    .expect("sealing");
    let app = spawn_app_sealed(
        &roster_tests::pg_server(),
        None,
        test_webhooks(),
        std::sync::Arc::new(sealing),
    )
    .await;
    let c = client(&app, None, false).await;
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/users?source=app",
        json!({"body": person("pub@example.com"), "sign_url": "https://roster.example.com/v1/users?source=app"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // Signed for the address it was sent to: not the public URL.
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/users",
        json!({"body": person("pub2@example.com")}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert!(r.detail().contains("oauth_signature"));
    // The token route is never signed: a signed token request is not let in.
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/oauth/token",
        json!({"body": {}, "sign_url": "https://roster.example.com/v1/oauth/token"}),
    )
    .await;
    assert!(r.status.is_client_error(), "{:?}", r.body);
    assert!(r.body.get("access_token").is_none());
    drop(c);
    app.cleanup().await;
}

/// `roster client update|create --signing-cert --encryption-cert` and
/// `roster encryption-certificate`, as an operator runs them.
#[tokio::test]
async fn keys_are_registered_and_printed_by_the_command_line() {
    let app = spawn_app().await;
    let creds = app.creds("cli", None).await;
    let dir = std::env::temp_dir().join(format!("roster-cli-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let signing = PrivateKey::generate().expect("key");
    let encryption = PrivateKey::generate().expect("key");
    // A certificate for one, a bare public key for the other.
    let cert = write(&dir, "signing-cert.pem", &signing.certificate_pem().expect("cert"));
    let public = openssl_public_pem(&encryption);
    let public = write(&dir, "encryption.pem", &public);
    let roster = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(roster_bin());
        cmd.args(args)
            .env("DATABASE_URL", &app.database_url)
            .env_remove("ROSTER_ENCRYPTION_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("roster runs")
    };
    let out = roster(
        &[
            "client",
            "update",
            &creds.client_id,
            "--signing-cert",
            cert.to_str().expect("path"),
            "--encryption-cert",
            public.to_str().expect("path"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(printed["client_id"].as_str(), Some(creds.client_id.as_str()));
    assert_eq!(
        printed["signing_key_fingerprint"].as_str(),
        Some(sha256_hex(signing.public().der()).as_str())
    );
    assert_eq!(
        printed["encryption_key_fingerprint"].as_str(),
        Some(sha256_hex(encryption.public().der()).as_str())
    );
    assert!(printed.get("client_secret").is_none());

    let out = roster(
        &[
            "client",
            "create",
            "--company",
            "cli2",
            "--signing-cert",
            cert.to_str().expect("path"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        printed["signing_key_fingerprint"].as_str(),
        Some(signing.public().fingerprint())
    );
    assert!(printed["encryption_key_fingerprint"].is_null());

    // Too small a key is refused, and nothing changes.
    let small = write(&dir, "small.pem", SMALL_KEY);
    let out = roster(
        &[
            "client",
            "update",
            &creds.client_id,
            "--signing-cert",
            small.to_str().expect("path"),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2048"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Roster's certificate: of ROSTER_ENCRYPTION_KEY, else of a
    // development key made once, with a warning.
    let out = roster(
        &["encryption-certificate"],
        &[("ROSTER_ENCRYPTION_KEY", roster_tests::TEST_ENCRYPTION_KEY)],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = PublicKey::from_pem(&out.stdout).expect("a PEM certificate");
    assert_eq!(printed.fingerprint(), test_sealing().key.public().fingerprint());
    let dev = dir.join("dev-encryption.pem");
    let dev = dev.to_str().expect("path");
    let first = roster(&["encryption-certificate"], &[("ROSTER_ENCRYPTION_KEY_FILE", dev)]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stdout).contains("-----BEGIN CERTIFICATE-----"));
    assert!(String::from_utf8_lossy(&first.stderr).contains("development encryption key"));
    let second = roster(&["encryption-certificate"], &[("ROSTER_ENCRYPTION_KEY_FILE", dev)]);
    assert_eq!(
        PublicKey::from_pem(&first.stdout).expect("cert").fingerprint(),
        PublicKey::from_pem(&second.stdout).expect("cert").fingerprint(),
        "the development key is made once"
    );
    let _ = std::fs::remove_dir_all(&dir);
    app.cleanup().await;
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The SubjectPublicKeyInfo PEM of a key.
fn openssl_public_pem(key: &PrivateKey) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(key.public().der());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// A 1024-bit RSA public key: too small.
const SMALL_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDXnfMhCEmWBzbxkwMcuTORiZRp
lZtXNaLNWw1s7rmiRKXiLNrdfEEj61svcW3D/F3VOedoyLTSFc9191j8uITxCmrE
D7ANd//4CLuDzncRInr36NUxvsL6eDfvGkTJpQzn4RUa08kXMkBxKOC2f0ONpH3t
QSdgGch6Wh9u+hwyIwIDAQAB
-----END PUBLIC KEY-----
";

/// Parsed keys are cached by their bytes, read from the database on every
/// request: a replaced signing key is the only one that holds at once.
#[tokio::test]
async fn a_replaced_signing_key_holds_at_once_and_the_old_one_no_more() {
    let app = spawn_app().await;
    let c = client(&app, None, false).await;
    let r = call(&app, &c, "POST", "/v1/users", json!({"body": person("k1@example.com")})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let new = PrivateKey::generate().expect("a key");
    roster::auth::update_client(
        &app.pool,
        c.creds.client_id.parse().expect("uuid"),
        &ClientKeys {
            signing: Some(new.public().clone()),
            encryption: None,
        },
    )
    .await
    .expect("replaced");
    let old = call(&app, &c, "POST", "/v1/users", json!({"body": person("k2@example.com")})).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED, "{:?}", old.body);
    assert!(old.detail().contains("oauth_signature"));
    let path = write(&c.dir, "new.pem", &new.to_pem().expect("pem"));
    let r = call(
        &app,
        &c,
        "POST",
        "/v1/users",
        json!({"body": person("k3@example.com"), "signing_key": path}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    drop(c);
    app.cleanup().await;
}

/// The seeds' doors share `/v1`'s authentication (CONTRACT §11): signed and
/// encrypted calls work there too, and their refusals take the door's shape.
#[tokio::test]
async fn the_seeds_doors_take_signed_and_encrypted_calls_too() {
    let app = spawn_app().await;
    let c = client(&app, None, true).await;
    let custodia = json!({"firstname": "Ann", "lastname": "Lee", "email": "ann@example.com",
                          "companyId": c.creds.company_id, "active": true});
    let r = call(&app, &c, "POST", "/md/api/User", json!({ "body": custodia })).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["firstname"], "Ann");
    assert!(!r.encrypted);

    let cradl = json!({"login": {"email": "bo@example.com", "password": "correct horse battery"},
                       "first_name": "Bo", "last_name": "Ng"});
    let r = call(&app, &c, "POST", "/v2/users", json!({"body": cradl, "encrypt": true})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(r.encrypted);
    assert_eq!(r.body["error_codes"], json!([]));
    let id = r.body["user_id"].as_str().expect("user_id").to_string();
    let r = call(&app, &c, "GET", &format!("/v2/users/{id}"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["login"]["email"], "bo@example.com");

    let other = PrivateKey::generate().expect("a key");
    let wrong = write(&c.dir, "wrong.pem", &other.to_pem().expect("pem"));
    let r = call(
        &app,
        &c,
        "GET",
        &format!("/v2/users/{id}"),
        json!({ "signing_key": wrong }),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert_eq!(
        r.body["error_codes"],
        json!(["UNAUTHENTICATED"]),
        "Cradl's shape: {:?}",
        r.body
    );
    let r = call(
        &app,
        &c,
        "GET",
        &format!("/md/api/User/{id}"),
        json!({ "signing_key": wrong }),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert_eq!(r.code(), "UNAUTHENTICATED");
    drop(c);
    app.cleanup().await;
}

/// Two requests with one nonce, driven step by step: the first records it
/// in a transaction left open; the second blocks on that row, and once the
/// first commits finds it used. A nonce seen more than 10 minutes ago is
/// fresh again (no request with it can still pass the clock check).
#[tokio::test]
async fn a_nonce_raced_by_two_requests_is_fresh_for_one_only() {
    use roster::http::signed::fresh_nonce;
    let app = spawn_app().await;
    let client = Uuid::now_v7();
    let mut first = app.pool.begin().await.expect("tx");
    assert!(fresh_nonce(&mut *first, client, "n1").await.expect("recorded"));
    let pool = app.pool.clone();
    let second = tokio::spawn(async move { fresh_nonce(&pool, client, "n1").await.expect("answered") });
    // The second waits on the first's uncommitted row.
    let waiting = async {
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO oauth_nonces%'",
            )
            .fetch_one(&app.pool)
            .await
            .expect("activity");
            if n > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the second request waits for the first's row");
    assert!(!second.is_finished());
    first.commit().await.expect("commit");
    assert!(!second.await.expect("joined"), "the second finds the nonce used");

    // Ten minutes on, the same nonce is fresh again; within them it is not.
    sqlx::query("UPDATE oauth_nonces SET seen_at = now() - interval '9 minutes' WHERE nonce = 'n1'")
        .execute(&app.pool)
        .await
        .expect("aged");
    assert!(!fresh_nonce(&app.pool, client, "n1").await.expect("answered"));
    sqlx::query("UPDATE oauth_nonces SET seen_at = now() - interval '11 minutes' WHERE nonce = 'n1'")
        .execute(&app.pool)
        .await
        .expect("aged");
    assert!(fresh_nonce(&app.pool, client, "n1").await.expect("answered"));
    assert!(
        fresh_nonce(&app.pool, Uuid::now_v7(), "n1").await.expect("answered"),
        "nonces are per client"
    );
    app.cleanup().await;
}
