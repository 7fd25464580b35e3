use futures::future::join_all;
use reqwest::{Method, StatusCode};
use roster_tests::{spawn_app, spawn_app_on, PrivatePostgres, Res, TestApp};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// Sends `body` to `path` with `key` while Postgres goes down right after
/// the command's commit (the failpoint `command::committed`), so that the
/// answer is a 5xx although the change is stored. Then brings Postgres back
/// and retries the same request until the key is no longer in use.
async fn committed_then_outage(
    app: &TestApp,
    pg: &Arc<PrivatePostgres>,
    c: &roster_tests::Creds,
    path: &str,
    key: &str,
    body: &serde_json::Value,
) -> (Res, Res) {
    let send = || {
        TestApp::send(
            app.request(Some(c), Method::POST, path)
                .header("idempotency-key", key)
                .json(body),
        )
    };
    let stopped = Arc::new(AtomicBool::new(false));
    {
        let (pg, stopped) = (pg.clone(), stopped.clone());
        fail::cfg_callback("command::committed", move || {
            if !stopped.swap(true, Ordering::SeqCst) {
                pg.down();
            }
        })
        .expect("failpoint");
    }
    let first = send().await;
    fail::remove("command::committed");
    assert!(stopped.load(Ordering::SeqCst), "the command committed");
    pg.up();
    for _ in 0..200 {
        let retry = send().await;
        if retry.code() != "IDEMPOTENCY_KEY_IN_USE" && retry.code() != "UNAVAILABLE" {
            return (first, retry);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the key stayed in use after Postgres came back");
}

/// A 5xx after the commit must not free the key: the retry answers what
/// was committed (one user, one account), instead of enrolling a second
/// user (or answering 409 `EMAIL_TAKEN` for the client's own enrollment)
/// or adding the account twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_an_outage_between_commit_and_answer_finds_what_was_committed() {
    let pg = Arc::new(PrivatePostgres::start());
    let app = spawn_app_on(pg.url("").trim_end_matches('/'), None).await;
    let c = app.creds("acme", None).await;
    let account = json!({"account_id": "ACC-1", "account_id_type": "T", "status": "GOOD_STANDING",
                         "product_code": "P", "program_identifier": "G"});
    let enrollment = json!({"email": "once@example.com", "account": account});

    let (first, retry) = committed_then_outage(&app, &pg, &c, "/v1/users", "enroll-1", &enrollment).await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE, "{}", first.body);
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    let id = retry.body["id"].as_str().expect("id").to_string();
    assert_eq!(retry.header("location"), Some(format!("/v1/users/{id}").as_str()));
    let enrolled: Vec<String> = sqlx::query_scalar("SELECT aggregate_id FROM events WHERE event_type = 'UserEnrolled'")
        .fetch_all(&app.pool)
        .await
        .expect("enrollments");
    assert_eq!(enrolled, vec![id.clone()], "enrolled once");
    assert_eq!(retry.body["email"], "once@example.com");
    assert_eq!(retry.body["version"], 1);
    // The recovered answer is now the stored one.
    let again = TestApp::send(
        app.request(Some(&c), Method::POST, "/v1/users")
            .header("idempotency-key", "enroll-1")
            .json(&enrollment),
    )
    .await;
    assert_eq!((again.status, &again.body), (StatusCode::CREATED, &retry.body));

    let second = json!({"account_id": "ACC-2", "account_id_type": "T", "status": "GOOD_STANDING",
                        "product_code": "P", "program_identifier": "G"});
    let path = format!("/v1/users/{id}/accounts");
    let (first, retry) = committed_then_outage(&app, &pg, &c, &path, "account-2", &second).await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE, "{}", first.body);
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(retry.body["version"], 2);
    assert_eq!(retry.body["accounts"].as_array().map(Vec::len), Some(2));
    let added: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'AccountAdded'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(added, 1, "the account was added once");
    app.cleanup().await;
}
