//! The cost of a signed and encrypted enrollment (CONTRACT §10): how much
//! longer `POST /v1/users` takes when it is signed (OAuth 1.0a RSA-SHA256)
//! and its body and answer are encrypted (JWE RSA-OAEP-256 + A256GCM) than
//! when it is plain with a bearer token.
//!
//!     cargo run --release -p roster-tests --bin seal-bench [-- N]
//!
//! Roster runs in this process (API, projectors, publisher to
//! `KAFKA_BROKERS`) on a fresh database `roster_seal_bench` of
//! `$ROSTER_TEST_PG`. One client alternates a plain and a sealed enrollment,
//! one request at a time, N of each (default 2,000; the first 200 pairs warm
//! up and are not counted), so both see the same machine. The clock runs
//! from sending to the whole answer: the client's own signing, encrypting
//! and decrypting are outside it (they are the client's cost, not
//! Roster's). Prints p50 and p99 of both and their difference.
//!
//! The requests are signed here the way `mastercard-oauth1-signer` signs
//! (its base string, `roster::oauth1::base_strings`); that the library's
//! own requests verify is what `tests/tests/e2e/mastercard.rs` proves.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use roster::auth::ClientKeys;
use roster::jwe::PrivateKey;
use roster::oauth1::{self, SignedRequest};
use serde_json::{json, Value};
use sha2::Digest;
use std::time::{Duration, Instant};

const WARMUP: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let server = roster_tests::pg_server();
    let admin = sqlx::PgPool::connect(&format!("{server}/postgres")).await?;
    sqlx::query("DROP DATABASE IF EXISTS roster_seal_bench WITH (FORCE)")
        .execute(&admin)
        .await?;
    let database_url = format!("{server}/roster_seal_bench");
    let pool = roster::db::prepare(&database_url, 32).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let brokers = roster_tests::brokers();
    let settings = roster::app::Settings {
        roles: vec![
            roster::config::Role::Api,
            roster::config::Role::Projector,
            roster::config::Role::Publisher,
        ],
        kafka: (!brokers.is_empty()).then(|| roster_projections::publisher::KafkaConfig {
            brokers,
            topic: format!("roster.seal-bench.{}", uuid::Uuid::new_v4().simple()),
        }),
        vault: roster_tests::test_vault(),
        webhooks: roster_tests::test_webhooks(),
        sealing: roster_tests::test_sealing(),
    };
    let app = roster::app::App::start(pool.clone(), settings, Some(listener)).await?;
    let base = format!("http://{}", app.addr.expect("api address"));
    let http = reqwest::Client::new();

    let client = roster::auth::create_client(&pool, "bench", None, None, &ClientKeys::default()).await?;
    let signing = PrivateKey::generate()?;
    let answers = PrivateKey::generate()?;
    roster::auth::update_client(
        &pool,
        client.client_id,
        &ClientKeys {
            signing: Some(signing.public().clone()),
            encryption: Some(answers.public().clone()),
        },
    )
    .await?;
    let token: Value = http
        .post(format!("{base}/v1/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &client.client_id.to_string()),
            ("client_secret", &client.client_secret),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"].as_str().expect("a token").to_string();
    let signer_key = PKey::private_key_from_pem(signing.to_pem()?.as_bytes())?;
    let roster_key = roster_tests::test_sealing().key.public().clone();
    let url = format!("{base}/v1/users");
    let base_uri = oauth1::base_uri("http", base.trim_start_matches("http://"), "/v1/users");

    let person = |kind: &str, i: usize| {
        json!({"first_name": "Maria", "last_name": "Okafor", "email": format!("{kind}{i}@example.com"),
               "mobile": "+971501234567", "address": {"line1": "1 Road", "city": "Dubai", "postal_code": "00000", "country": "AE"}})
        .to_string()
    };
    let (mut plain, mut sealed) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + WARMUP {
        let body = person("plain", i);
        let started = Instant::now();
        let r = http
            .post(&url)
            .bearer_auth(&token)
            .header("x-appid", client.client_id.to_string())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        r.bytes().await?;
        let took = started.elapsed();
        anyhow::ensure!(status == 201, "plain enrollment: {status}");
        if i >= WARMUP {
            plain.push(took);
        }

        // The client's work: encrypt, hash, sign.
        let body = json!({"encryptedValue": roster_key.encrypt(person("sealed", i).as_bytes())?}).to_string();
        let body_hash = STANDARD.encode(sha2::Sha256::digest(body.as_bytes()));
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let params: Vec<(String, String)> = vec![
            ("oauth_consumer_key".into(), client.client_id.to_string()),
            ("oauth_nonce".into(), nonce),
            ("oauth_timestamp".into(), chrono::Utc::now().timestamp().to_string()),
            ("oauth_signature_method".into(), "RSA-SHA256".into()),
            ("oauth_version".into(), "1.0".into()),
            ("oauth_body_hash".into(), body_hash),
        ];
        let request = SignedRequest {
            method: "POST",
            base_uri: &base_uri,
            query: None,
            body: body.as_bytes(),
        };
        let [base_string, _] = oauth1::base_strings(&request, &params);
        let mut signer = Signer::new(MessageDigest::sha256(), &signer_key)?;
        let signature = STANDARD.encode(signer.sign_oneshot_to_vec(base_string.as_bytes())?);
        let header = params
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .chain(std::iter::once(format!(
                "oauth_signature=\"{}\"",
                oauth1::encode(&signature)
            )))
            .collect::<Vec<_>>()
            .join(",");
        let started = Instant::now();
        let r = http
            .post(&url)
            .header("authorization", format!("OAuth {header}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let answer = r.bytes().await?;
        let took = started.elapsed();
        anyhow::ensure!(
            status == 201,
            "sealed enrollment: {status} {}",
            String::from_utf8_lossy(&answer)
        );
        if i >= WARMUP {
            sealed.push(took);
        }
        if i % 500 == 0 {
            // The answer is the client's to decrypt (outside the clock).
            let answer: Value = serde_json::from_slice(&answer)?;
            let user: Value =
                serde_json::from_slice(&answers.decrypt(answer["encryptedValue"].as_str().unwrap_or_default())?)?;
            anyhow::ensure!(
                user["email"] == format!("sealed{i}@example.com"),
                "the answer is the user"
            );
        }
    }
    plain.sort();
    sealed.sort();
    let (p50, p99) = (percentile(&plain, 0.5), percentile(&plain, 0.99));
    let (s50, s99) = (percentile(&sealed, 0.5), percentile(&sealed, 0.99));
    println!("{n} enrollments of each, one at a time, alternating (after {WARMUP} pairs of warm-up)");
    println!("plain  (bearer):             p50 {p50:6.2} ms   p99 {p99:6.2} ms");
    println!("signed and encrypted:        p50 {s50:6.2} ms   p99 {s99:6.2} ms");
    println!(
        "extra:                       p50 {:6.2} ms   p99 {:6.2} ms   (target: p50 ≤ 2 ms)",
        s50 - p50,
        s99 - p99
    );
    app.stop().await;
    Ok(())
}
