use futures::future::join_all;
use reqwest::{Method, StatusCode};
use roster_tests::{spawn_app, TestApp};
use serde_json::{json, Value};
use std::collections::HashSet;

fn full_user() -> Value {
    json!({
        "external_ref": {"id": "CUST-001", "type": "CUSTOMER_ID"},
        "first_name": " John ", "last_name": "Doe",
        "email": "John.Doe@Example.com", "email_verified": true,
        "mobile": "+971 (50) 123-4567", "office_phone": "+97141234567", "office_extension": "12",
        "employee_id": "E-1", "date_of_birth": "1990-04-01", "gender": "male",
        "nationality": "ae", "locale": "en-US",
        "address": {"line1": "1 Palm St", "city": "Dubai", "postal_code": "00000", "country": "AE"},
        "communication_preferences": {"email": true},
        "status": "active", "status_reason": "onboarded",
        "kyc": {"kyc_id": "kyc_123", "status": "approved"},
        "password": "correct horse battery",
        "verification_questions": [{"code": "FIRST_SCHOOL", "answer": "St Mary"}],
        "account": {"account_id": "ACC-1", "account_id_type": "CARD_NUMBER_TOKEN", "status": "GOOD_STANDING",
                    "product_code": "MC-REWARDS", "program_identifier": "PRG-1"}
    })
}

#[tokio::test]
async fn enroll_then_read_back_by_id_and_in_the_list() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let r = app.post(&c, "/v1/users", &full_user()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let user = r.body.clone();
    let id = user["id"].as_str().expect("id");
    assert_eq!(r.header("location"), Some(format!("/v1/users/{id}").as_str()));
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(user["version"], 1);
    assert_eq!(user["company_id"], "acme");
    assert_eq!(user["first_name"], "John");
    assert_eq!(user["mobile"], "+971501234567");
    assert_eq!(user["nationality"], "AE");
    assert_eq!(user["status"], "active");
    assert_eq!(user["status_reason"], "onboarded");
    assert_eq!(user["login"], json!({"email": "John.Doe@Example.com"}));
    assert_eq!(
        user["verification"],
        json!({"question_codes": ["FIRST_SCHOOL"], "locked": false})
    );
    assert_eq!(user["accounts"][0]["household_id"], Value::Null);
    assert_eq!(
        user["communication_preferences"],
        json!({"email": true, "sms": false, "post": false})
    );
    assert_eq!(user["created_at"], user["updated_at"]);
    let created = user["created_at"].as_str().expect("created_at");
    assert_eq!(created.len(), "2026-01-01T00:00:00.000000Z".len(), "{created}");
    let text = user.to_string();
    assert!(
        !text.contains("password") && !text.contains("argon2") && !text.contains("St Mary"),
        "{text}"
    );

    let token = r.header("roster-consistency-token").expect("token");
    let got = app.get_after(&c, &format!("/v1/users/{id}"), token).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, user, "a write's response equals a later read");
    assert_eq!(got.header("etag"), Some("\"1\""));
    let list = app.get_after(&c, "/v1/users", token).await;
    assert_eq!(list.body["data"], json!([user]));
    assert_eq!(list.body["has_more"], false);
    assert_eq!(list.body["next_cursor"], Value::Null);

    // Nothing secret in the event store's public views either: the read model.
    let doc: String = sqlx::query_scalar("SELECT doc::text FROM user_view")
        .fetch_one(&app.pool)
        .await
        .expect("row");
    assert!(!doc.contains("argon2") && !doc.contains("St Mary"));
    app.cleanup().await;
}

#[tokio::test]
async fn invalid_input_is_a_400_with_field_errors_never_a_500() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let r = app
        .post(
            &c,
            "/v1/users",
            &json!({"email": "nope", "mobile": "12", "first_name": "", "nationality": "XX"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "VALIDATION_FAILED");
    let fields: HashSet<&str> = r.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, HashSet::from(["email", "mobile", "first_name", "nationality"]));

    let cases = [
        (json!({"first_name": "John"}), "email"),
        (json!({"email": "a@example.com", "shoe_size": 42}), "shoe_size"),
        (json!({"email": 42}), "email"),
        (
            json!({"email": "a@example.com", "date_of_birth": "1990-02-30"}),
            "date_of_birth",
        ),
        (
            json!({"email": "a@example.com", "address": {"line1": "x", "city": "y"}}),
            "address",
        ),
        (json!({"email": "a@example.com", "status": "closed"}), "status"),
        (
            json!({"email": "a@example.com", "external_ref": {"id": "1"}}),
            "external_ref",
        ),
    ];
    for (body, field) in cases {
        let r = app.post(&c, "/v1/users", &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert_eq!(r.code(), "VALIDATION_FAILED", "{body}");
        let named = r.body["errors"][0]["field"].as_str().unwrap_or_default();
        assert!(named.starts_with(field), "{body}: {named}");
    }
    for raw in ["{", "not json", "", "[1,2"] {
        let r = TestApp::send(
            app.request(Some(&c), Method::POST, "/v1/users")
                .header("content-type", "application/json")
                .body(raw),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{raw:?}");
        assert_eq!(r.code(), "MALFORMED_REQUEST", "{raw:?}");
    }
    for q in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=1.5",
        "after=garbage",
        "status=gone",
    ] {
        let r = app.get(&c, &format!("/v1/users?{q}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(r.code(), "VALIDATION_FAILED", "{q}");
    }
    let r = app.get(&c, "/v1/users/not-a-uuid").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    app.cleanup().await;
}

#[tokio::test]
async fn racing_enrollments_with_one_email_create_exactly_one_user() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let bodies: Vec<Value> = (0..20)
        .map(|i| json!({"email": "Same@Example.com", "external_ref": {"id": format!("C{i}"), "type": "T"}}))
        .collect();
    let results = join_all(bodies.iter().map(|b| app.post(&c, "/v1/users", b))).await;
    let created = results.iter().filter(|r| r.status == StatusCode::CREATED).count();
    let taken = results
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT && r.code() == "EMAIL_TAKEN")
        .count();
    assert_eq!((created, taken), (1, 19));
    // Case-insensitive.
    let r = app.post(&c, "/v1/users", &json!({"email": "same@example.COM"})).await;
    assert_eq!(r.code(), "EMAIL_TAKEN");
    // The losers left no reservation behind: their external refs are free.
    let winner = results
        .iter()
        .find(|r| r.status == StatusCode::CREATED)
        .expect("winner");
    let winner_ref = winner.body["external_ref"]["id"].as_str().expect("ref");
    for i in 0..20 {
        let id = format!("C{i}");
        let r = app
            .post(
                &c,
                "/v1/users",
                &json!({"email": format!("u{i}@example.com"), "external_ref": {"id": id, "type": "T"}}),
            )
            .await;
        if id == winner_ref {
            assert_eq!(r.code(), "EXTERNAL_ID_TAKEN");
        } else {
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(events, 20);
    app.cleanup().await;
}

#[tokio::test]
async fn account_ids_are_unique_and_parents_must_exist() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let other = app.creds("globex", None).await;
    let account = json!({"account_id": "ACC-9", "account_id_type": "T", "status": "GOOD_STANDING",
                         "product_code": "P", "program_identifier": "G"});
    let parent = app
        .post(&c, "/v1/users", &json!({"email": "p@example.com", "account": account}))
        .await;
    assert_eq!(parent.status, StatusCode::CREATED);
    let r = app
        .post(&c, "/v1/users", &json!({"email": "q@example.com", "account": account}))
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "ACCOUNT_TAKEN"));

    // The owner adding the same account again: refused, nothing appended.
    let parent_id = parent.body["id"].as_str().expect("id");
    let again = app.post(&c, &format!("/v1/users/{parent_id}/accounts"), &account).await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "ACCOUNT_TAKEN"),
        "{}",
        again.body
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(parent_id)
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(events, 1, "only the enrollment is stored");

    let child = app
        .post(
            &c,
            "/v1/users",
            &json!({"email": "c@example.com", "parent_user_id": parent_id}),
        )
        .await;
    assert_eq!(child.status, StatusCode::CREATED);
    assert_eq!(child.body["parent_user_id"], parent_id);
    let token = child.header("roster-consistency-token").expect("token");
    let children = app
        .get_after(&c, &format!("/v1/users?parent_user_id={parent_id}"), token)
        .await;
    assert_eq!(children.body["data"].as_array().map(Vec::len), Some(1));

    // A parent in another company, or none at all.
    let r = app
        .post(
            &other,
            "/v1/users",
            &json!({"email": "x@example.com", "parent_user_id": parent_id}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "PARENT_NOT_FOUND")
    );
    let r = app
        .post(
            &c,
            "/v1/users",
            &json!({"email": "y@example.com", "parent_user_id": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!(r.code(), "PARENT_NOT_FOUND");
    app.cleanup().await;
}

#[tokio::test]
async fn list_pages_never_repeat_or_skip() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let mut ids = Vec::new();
    let mut token = String::new();
    for i in 0..25 {
        let status = if i % 2 == 0 { "active" } else { "inactive" };
        let r = app
            .post(
                &c,
                "/v1/users",
                &json!({"email": format!("u{i}@example.com"), "status": status}),
            )
            .await;
        ids.push(r.body["id"].as_str().expect("id").to_string());
        token = r.header("roster-consistency-token").expect("token").to_string();
    }
    let mut seen = Vec::new();
    let mut path = "/v1/users?limit=10".to_string();
    loop {
        let page = app.get_after(&c, &path, &token).await;
        assert_eq!(page.status, StatusCode::OK);
        for u in page.body["data"].as_array().expect("data") {
            seen.push(u["id"].as_str().expect("id").to_string());
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(page.body["has_more"], true);
                path = format!("/v1/users?limit=\"10\"&after={cursor}").replace('"', "");
            }
            None => {
                assert_eq!(page.body["has_more"], false);
                break;
            }
        }
    }
    assert_eq!(seen, ids, "oldest first, each once");
    let active = app.get_after(&c, "/v1/users?status=active&limit=100", &token).await;
    assert_eq!(active.body["data"].as_array().map(Vec::len), Some(13));
    app.cleanup().await;
}
