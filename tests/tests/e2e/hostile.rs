//! Hostile input: every rejection is a problem+json with a stable code, never a 5xx.

use reqwest::{Method, StatusCode};
use roster_tests::{spawn_app, TestApp};
use serde_json::json;

#[tokio::test]
async fn malformed_deep_huge_and_odd_input_is_refused_cleanly() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("deep nesting", deep.into_bytes()),
        ("invalid UTF-8", b"{\"email\": \"\xff\xfe@example.com\"}".to_vec()),
        ("NUL in a string", b"{\"email\": \"a\\u0000@example.com\"}".to_vec()),
        ("a number as big as it gets", b"{\"email\": 1e999999}".to_vec()),
        ("an array", b"[]".to_vec()),
        (
            "SQL",
            b"{\"email\": \"x'; DROP TABLE events; --@example.com\"}".to_vec(),
        ),
    ];
    for (what, body) in bodies {
        let r = TestApp::send(
            app.request(Some(&c), Method::POST, "/v1/users")
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!(r.status.as_u16() / 100, 4, "{what}: {} {}", r.status, r.body);
        assert!(
            matches!(r.code(), "MALFORMED_REQUEST" | "VALIDATION_FAILED"),
            "{what}: {}",
            r.body
        );
        assert_eq!(r.header("content-type"), Some("application/problem+json"), "{what}");
    }
    // Search with SQL and LIKE metacharacters is data, not syntax.
    let r = app
        .call(
            &c,
            Method::POST,
            "/v1/users:search",
            Some(json!({"name": "'; DROP TABLE events; -- %_\\"})),
        )
        .await;
    assert_eq!((r.status, r.body["data"].clone()), (StatusCode::OK, json!([])));
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("events");
    assert_eq!(events, 0);
    // Huge limits, odd headers.
    for q in ["limit=99999999999999999999", "limit=-1", "limit=%00", "after=%FF%FE"] {
        let r = app.get(&c, &format!("/v1/users?{q}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.body);
    }
    let r = TestApp::send(
        app.request(Some(&c), Method::GET, "/v1/users")
            .header("roster-consistency-token", "user:x:1"),
    )
    .await;
    assert_eq!(r.code(), "VALIDATION_FAILED");
    let r = TestApp::send(
        app.request(None, Method::GET, "/v1/users")
            .header("authorization", "Bearer ".to_string() + &"a".repeat(8000))
            .header("x-appid", "x"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = TestApp::send(
        app.request(Some(&c), Method::POST, "/v1/users")
            .header("idempotency-key", "")
            .json(&json!({"email": "a@example.com"})),
    )
    .await;
    assert_eq!(r.code(), "VALIDATION_FAILED");
    app.cleanup().await;
}
