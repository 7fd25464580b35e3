use futures::future::join_all;
use reqwest::{Method, StatusCode};
use roster_tests::{spawn_app, TestApp};
use serde_json::json;

#[tokio::test]
async fn a_repeated_write_replays_the_first_response_and_appends_nothing() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let other = app.creds("acme", None).await;
    let post = |key: &str, body: serde_json::Value, creds| {
        TestApp::send(
            app.request(Some(creds), Method::POST, "/v1/users")
                .header("idempotency-key", key)
                .json(&body),
        )
    };
    let first = post("k-1", json!({"email": "a@example.com"}), &c).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = post("k-1", json!({"email": "a@example.com"}), &c).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("etag"), first.header("etag"));
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(events, 1, "no second event");

    // Same key, other body → 422; same key, another client → its own key.
    let r = post("k-1", json!({"email": "b@example.com"}), &c).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
    );
    let r = post("k-1", json!({"email": "b@example.com"}), &other).await;
    assert_eq!((r.status, r.header("idempotent-replayed")), (StatusCode::CREATED, None));

    // Errors are replayed as well (a 4xx is a final answer).
    let bad = post("k-2", json!({"email": "nope"}), &c).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let again = post("k-2", json!({"email": "nope"}), &c).await;
    assert_eq!(
        (again.status, again.header("idempotent-replayed")),
        (StatusCode::BAD_REQUEST, Some("true"))
    );

    // Key length.
    let r = post(&"x".repeat(256), json!({"email": "c@example.com"}), &c).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));

    // Updates too.
    let id = first.body["id"].as_str().expect("id");
    let patch = |key: &'static str| {
        TestApp::send(
            app.request(Some(&c), Method::PATCH, &format!("/v1/users/{id}"))
                .header("idempotency-key", key)
                .json(&json!({"first_name": "Ann"})),
        )
    };
    let p1 = patch("k-3").await;
    let p2 = patch("k-3").await;
    assert_eq!((p1.status, p2.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(p2.header("idempotent-replayed"), Some("true"));
    assert_eq!(p1.body, p2.body);
    app.cleanup().await;
}

#[tokio::test]
async fn concurrent_repeats_run_once() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    // Argon2id hashing makes the first request slow enough to overlap.
    let body = json!({"email": "a@example.com", "password": "long enough password",
        "verification_questions": [{"code": "A", "answer": "a"}, {"code": "B", "answer": "b"}]});
    let results = join_all((0..8).map(|_| {
        TestApp::send(
            app.request(Some(&c), Method::POST, "/v1/users")
                .header("idempotency-key", "same")
                .json(&body),
        )
    }))
    .await;
    for r in &results {
        assert!(
            r.status == StatusCode::CREATED
                || (r.status == StatusCode::CONFLICT && r.code() == "IDEMPOTENCY_KEY_IN_USE"),
            "{} {}",
            r.status,
            r.body
        );
    }
    assert!(results.iter().any(|r| r.status == StatusCode::CREATED));
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(events, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn keys_older_than_24_hours_are_purged() {
    let app = spawn_app().await;
    for (key, age) in [("old", "25 hours"), ("young", "23 hours")] {
        sqlx::query(&format!(
            "INSERT INTO idempotency_keys (client_id, key, fingerprint, status, created_at)
             VALUES ('c', $1, '\\x00', 201, now() - interval '{age}')"
        ))
        .bind(key)
        .execute(&app.pool)
        .await
        .expect("row");
    }
    // (The app's own purge task may have run first: at most one to delete.)
    let purged = roster::http::idempotency::purge(&app.pool).await.expect("purge");
    assert!(purged <= 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(&app.pool)
        .await
        .expect("keys");
    assert_eq!(left, vec!["young".to_string()]);
    app.cleanup().await;
}
