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

/// The fields a 400 names.
fn fields(r: &roster_tests::Res) -> Vec<String> {
    let mut f: Vec<String> = r.body["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|x| x["field"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    f.sort();
    f
}

#[tokio::test]
async fn every_invalid_field_is_reported_whatever_else_is_wrong() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    // An array is not an object.
    let r = app
        .post(
            &c,
            "/v1/users",
            &json!({"email": "x@example.com", "external_ref": ["X", "Y"]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    assert_eq!(fields(&r), vec!["external_ref"]);
    // An unknown field, wrong types, a missing field and invalid values, at once.
    let r = app
        .post(
            &c,
            "/v1/users",
            &json!({"nickname": "J", "email": "nope", "first_name": " ", "mobile": 5,
                    "address": {"city": 5, "country": "ZZ"}, "status": "sleeping"}),
        )
        .await;
    assert_eq!(r.code(), "VALIDATION_FAILED");
    assert_eq!(
        fields(&r),
        vec![
            "address.city",
            "address.country",
            "address.line1",
            "email",
            "first_name",
            "mobile",
            "nickname",
            "status"
        ],
        "{}",
        r.body
    );
    // The same in a merge patch: fields this route does not take, and bad values.
    let id = app.enroll(&c, json!({"email": "ok@example.com"})).await;
    let r = app
        .call(
            &c,
            Method::PATCH,
            &format!("/v1/users/{id}"),
            Some(json!({"nickname": "J", "email": "nope", "external_ref": ["X"]})),
        )
        .await;
    assert_eq!(fields(&r), vec!["email", "external_ref", "nickname"], "{}", r.body);
    let r = app
        .post(
            &c,
            &format!("/v1/users/{id}/status"),
            &json!({"status": "gone", "reason": "", "extra": 1}),
        )
        .await;
    assert_eq!(fields(&r), vec!["extra", "reason", "status"], "{}", r.body);
    app.cleanup().await;
}

#[tokio::test]
async fn every_string_has_a_limit_and_a_400_past_it() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let id = app
        .enroll(
            &c,
            json!({"email": "long@example.com", "status": "active",
                   "verification_questions": [{"code": "PET", "answer": "Rex"}]}),
        )
        .await;
    let household = app.post(&c, "/v1/households", &json!({})).await;
    let household = household.body["id"].as_str().expect("household").to_string();
    let long = "x".repeat(100_000);
    let cases: Vec<(Method, String, serde_json::Value, &str)> = vec![
        (
            Method::POST,
            format!("/v1/users/{id}/verifications"),
            json!({"code": long, "answer": "Rex"}),
            "code",
        ),
        (
            Method::POST,
            format!("/v1/users/{id}/verifications"),
            json!({"code": "PET", "answer": long}),
            "answer",
        ),
        (
            Method::POST,
            "/v1/users".into(),
            json!({"email": "a@example.com", "locale": long}),
            "locale",
        ),
        (Method::POST, "/v1/users".into(), json!({"email": long}), "email"),
        (Method::POST, "/v1/users:search".into(), json!({"email": long}), "email"),
        (Method::POST, "/v1/users:search".into(), json!({"after": long}), "after"),
        (Method::POST, "/v1/users:search".into(), json!({"name": long}), "name"),
        (
            Method::POST,
            format!("/v1/users/{id}/status"),
            json!({"status": "active", "reason": long}),
            "reason",
        ),
        (
            Method::PATCH,
            format!("/v1/users/{id}/kyc"),
            json!({"kyc_id": long}),
            "kyc_id",
        ),
        (Method::POST, "/v1/households".into(), json!({"name": long}), "name"),
        (
            Method::POST,
            format!("/v1/households/{household}/members"),
            json!({"user_id": id, "account_id": long}),
            "account_id",
        ),
        (
            Method::POST,
            "/v1/card-products".into(),
            json!({"name": long, "card_type": "virtual", "issuer": "icc"}),
            "name",
        ),
        (
            Method::POST,
            format!("/v1/users/{id}/cards/terminate"),
            json!({"pan": "1234", "reason_code": long}),
            "reason_code",
        ),
    ];
    for (method, path, body, field) in cases {
        let r = app.call(&c, method.clone(), &path, Some(body)).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
            "{method} {path}: {}",
            r.body
        );
        assert!(fields(&r).iter().any(|f| f == field), "{method} {path}: {}", r.body);
    }
    let r = app
        .call(
            &c,
            Method::DELETE,
            &format!("/v1/households/{household}/members/{}", "y".repeat(500)),
            None,
        )
        .await;
    assert_eq!(fields(&r), vec!["account_id"]);
    let r = app.get(&c, &format!("/v1/users?after={}", "z".repeat(500))).await;
    assert_eq!(fields(&r), vec!["after"]);
    let r = TestApp::send(
        app.request(Some(&c), Method::POST, &format!("/v1/users/{id}/status"))
            .header("x-request-id", "r".repeat(1000))
            .json(&json!({"status": "blocked"})),
    )
    .await;
    assert_eq!(fields(&r), vec!["X-Request-Id"]);
    // Nothing of it was stored.
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE payload::text LIKE '%xxxxxxxxxx%'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(events, 0);
    app.cleanup().await;
}
