use futures::future::join_all;
use reqwest::{Method, StatusCode};
use roster_tests::{account, spawn_app};
use serde_json::{json, Value};

#[tokio::test]
async fn households_group_accounts_and_users_follow() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let other = app.creds("globex", None).await;
    let u = app
        .post(
            &c,
            "/v1/users",
            &json!({"email": "a@example.com", "account": account("ACC-1")}),
        )
        .await;
    let uid = u.body["id"].as_str().expect("id").to_string();
    let v = app
        .post(
            &c,
            "/v1/users",
            &json!({"email": "b@example.com", "account": account("ACC-2")}),
        )
        .await;
    let vid = v.body["id"].as_str().expect("id").to_string();

    let h = app.post(&c, "/v1/households", &json!({"name": "The Does"})).await;
    assert_eq!(h.status, StatusCode::CREATED, "{}", h.body);
    assert_eq!(h.body["members"], json!([]));
    assert_eq!(h.body["name"], "The Does");
    assert!(h.body["created_at"].is_string());
    let hid = h.body["id"].as_str().expect("id").to_string();
    let members = format!("/v1/households/{hid}/members");

    let r = app
        .call(
            &c,
            Method::POST,
            &members,
            Some(json!({"user_id": uid, "account_id": "ACC-1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["members"], json!([{"user_id": uid, "account_id": "ACC-1"}]));
    let token = r.header("roster-consistency-token").expect("token").to_string();
    let got = app.get_after(&c, &format!("/v1/households/{hid}"), &token).await;
    assert_eq!(got.body, r.body);
    let user = app.get_after(&c, &format!("/v1/users/{uid}"), &token).await;
    assert_eq!(user.body["accounts"][0]["household_id"], hid.as_str());
    // A user write answers with the same household id as the read model.
    let w = app
        .call(
            &c,
            Method::PATCH,
            &format!("/v1/users/{uid}"),
            Some(json!({"first_name": "Ann"})),
        )
        .await;
    assert_eq!(w.body["accounts"][0]["household_id"], hid.as_str());

    // Not that user's account; another company's household; unknown household.
    let r = app
        .call(
            &c,
            Method::POST,
            &members,
            Some(json!({"user_id": uid, "account_id": "ACC-2"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "ACCOUNT_NOT_OWNED")
    );
    // A user id that names no user: no account of it can be added.
    let nobody = uuid::Uuid::now_v7().to_string();
    let r = app
        .call(
            &c,
            Method::POST,
            &members,
            Some(json!({"user_id": nobody, "account_id": "ACC-1"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "ACCOUNT_NOT_OWNED")
    );
    let r = app
        .call(
            &other,
            Method::POST,
            &members,
            Some(json!({"user_id": vid, "account_id": "ACC-2"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "HOUSEHOLD_NOT_FOUND"));
    let r = app.get(&other, &format!("/v1/households/{hid}")).await;
    assert_eq!(r.code(), "HOUSEHOLD_NOT_FOUND");

    // An account is in at most one household.
    let h2 = app.post(&c, "/v1/households", &json!({})).await;
    let h2id = h2.body["id"].as_str().expect("id").to_string();
    let r = app
        .call(
            &c,
            Method::POST,
            &format!("/v1/households/{h2id}/members"),
            Some(json!({"user_id": uid, "account_id": "ACC-1"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "ACCOUNT_IN_HOUSEHOLD"));

    // Leaving frees the account.
    let r = app.call(&c, Method::DELETE, &format!("{members}/ACC-1"), None).await;
    assert_eq!((r.status, r.body["members"].clone()), (StatusCode::OK, json!([])));
    let token = r.header("roster-consistency-token").expect("token").to_string();
    let user = app.get_after(&c, &format!("/v1/users/{uid}"), &token).await;
    assert_eq!(user.body["accounts"][0]["household_id"], Value::Null);
    let r = app.call(&c, Method::DELETE, &format!("{members}/ACC-1"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .call(
            &c,
            Method::POST,
            &format!("/v1/households/{h2id}/members"),
            Some(json!({"user_id": uid, "account_id": "ACC-1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    app.cleanup().await;
}

#[tokio::test]
async fn two_households_racing_for_one_account_get_one_membership() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    for round in 0..10 {
        let acc = format!("ACC-{round}");
        let u = app
            .post(
                &c,
                "/v1/users",
                &json!({"email": format!("u{round}@example.com"), "account": account(&acc)}),
            )
            .await;
        let uid = u.body["id"].as_str().expect("id").to_string();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let h = app.post(&c, "/v1/households", &json!({})).await;
            ids.push(h.body["id"].as_str().expect("id").to_string());
        }
        let body = json!({"user_id": uid, "account_id": acc});
        let paths: Vec<String> = ids.iter().map(|h| format!("/v1/households/{h}/members")).collect();
        let results = join_all(paths.iter().map(|p| app.call(&c, Method::POST, p, Some(body.clone())))).await;
        let ok = results.iter().filter(|r| r.status == StatusCode::OK).count();
        let taken = results.iter().filter(|r| r.code() == "ACCOUNT_IN_HOUSEHOLD").count();
        assert_eq!((ok, taken), (1, 1), "round {round}");
    }
    app.cleanup().await;
}
