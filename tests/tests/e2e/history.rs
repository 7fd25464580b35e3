//! Point-in-time reads (CONTRACT §3): a user as it was right after an
//! event, folded from the event log, with its households as of then.

use reqwest::{Method, StatusCode};
use roster_tests::spawn_app;
use serde_json::{json, Value};

#[tokio::test]
async fn every_past_version_is_what_the_write_answered_then() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let other = app.creds("globex", None).await;
    let account = json!({"account_id": "ACC-1", "account_id_type": "T", "status": "GOOD_STANDING",
                         "product_code": "P", "program_identifier": "G"});
    // Each write's body, by version.
    let mut answered: Vec<Value> = Vec::new();
    let r = app
        .post(
            &c,
            "/v1/users",
            &json!({"email": "past@example.com", "first_name": "Ann", "account": account}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.body["id"].as_str().expect("id").to_string();
    answered.push(r.body);
    let user = format!("/v1/users/{id}");
    let r = app
        .call(&c, Method::PATCH, &user, Some(json!({"last_name": "Lee"})))
        .await;
    answered.push(r.body);
    // Joins a household between versions 2 and 3.
    let h = app.post(&c, "/v1/households", &json!({"name": "Lees"})).await;
    let hid = h.body["id"].as_str().expect("household").to_string();
    let r = app
        .post(
            &c,
            &format!("/v1/households/{hid}/members"),
            &json!({"user_id": id, "account_id": "ACC-1"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .post(
            &c,
            &format!("{user}/status"),
            &json!({"status": "active", "reason": "ok"}),
        )
        .await;
    answered.push(r.body);
    let r = app
        .call(&c, Method::PATCH, &user, Some(json!({"first_name": "Anna"})))
        .await;
    answered.push(r.body);
    assert_eq!(answered[2]["accounts"][0]["household_id"], hid.as_str());

    for (i, body) in answered.iter().enumerate() {
        let n = i + 1;
        let r = app.get(&c, &format!("{user}?version={n}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(&r.body, body, "version {n} is what the write answered");
        assert_eq!(r.header("etag"), Some(format!("\"{n}\"").as_str()));
        // The same state by time: right at that version's instant.
        let at = body["updated_at"].as_str().expect("updated_at");
        let r = app.get(&c, &format!("{user}?as_of={}", at.replace('+', "%2B"))).await;
        assert_eq!(r.body["version"], n, "as_of {at}");
    }
    assert_eq!(answered[1]["accounts"][0]["household_id"], Value::Null);

    // Before the enrollment: no user yet.
    let r = app.get(&c, &format!("{user}?as_of=2001-01-01T00:00:00Z")).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "USER_NOT_FOUND"));
    for bad in [
        "version=0",
        "version=5",
        "version=x",
        "as_of=yesterday",
        "version=1&as_of=2026-01-01T00:00:00Z",
    ] {
        let r = app.get(&c, &format!("{user}?{bad}")).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
            "{bad}"
        );
        let field = r.body["errors"][0]["field"].as_str().unwrap_or_default().to_string();
        assert!(
            bad.starts_with(&field) || bad.contains(&format!("&{field}")),
            "{bad}: {}",
            r.body
        );
    }
    let r = app.get(&other, &format!("{user}?version=1")).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "USER_NOT_FOUND"));
    app.cleanup().await;
}
