use reqwest::{Method, StatusCode};
use roster_tests::{spawn_app, TestApp};
use serde_json::json;

#[tokio::test]
async fn tokens_scopes_and_app_ids_are_enforced() {
    let app = spawn_app().await;
    let full = app.creds("acme", None).await;
    let reader = app.creds("acme", Some(&["users:read"])).await;

    // No credentials, a wrong token, a token with another client's x-appid.
    let r = TestApp::send(app.request(None, Method::GET, "/v1/users")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "UNAUTHENTICATED");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let r = TestApp::send(
        app.request(None, Method::GET, "/v1/users")
            .bearer_auth("not-a-token")
            .header("x-appid", &full.client_id),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = TestApp::send(
        app.request(None, Method::GET, "/v1/users")
            .bearer_auth(&full.token)
            .header("x-appid", &reader.client_id),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // A reader may read but not write.
    assert_eq!(app.get(&reader, "/v1/users").await.status, StatusCode::OK);
    let r = app.post(&reader, "/v1/users", &json!({"email": "a@example.com"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "FORBIDDEN");

    // Wrong secret, JSON token request.
    let r = TestApp::send(app.request(None, Method::POST, "/v1/oauth/token").json(&json!({
        "grant_type": "client_credentials", "client_id": full.client_id, "client_secret": "wrong"
    })))
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = TestApp::send(app.request(None, Method::POST, "/v1/oauth/token").json(&json!({
        "grant_type": "client_credentials", "client_id": full.client_id, "client_secret": full.client_secret
    })))
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 3600);
    assert_eq!(
        r.body["scope"],
        "users:read users:write cards:write users:erase admin webhooks"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn another_companys_users_do_not_exist() {
    let app = spawn_app().await;
    let acme = app.creds("acme", None).await;
    let globex = app.creds("globex", None).await;
    let r = app
        .post(&acme, "/v1/users", &json!({"email": "john@example.com"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.body["id"].as_str().expect("id").to_string();
    let token = r.header("roster-consistency-token").expect("token").to_string();

    // The view has the user (acme reads it with its token); globex does not
    // see it. (Globex cannot use acme's token: it names no write of its.)
    let r = app.get_after(&acme, &format!("/v1/users/{id}"), &token).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.get(&globex, &format!("/v1/users/{id}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "USER_NOT_FOUND");
    let r = app.get(&globex, "/v1/users").await;
    assert_eq!(r.body["data"], json!([]));
    // The same email is free in another company.
    let r = app
        .post(&globex, "/v1/users", &json!({"email": "john@example.com"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    app.cleanup().await;
}

/// Client secrets are checked (Argon2id, 19 MiB each) at most
/// `secret_checks()` at a time: with every check held (failpoint
/// `auth::checking_secret`), one more token request, for a known client with
/// a wrong secret or for an unknown client, is answered at once with 503 and
/// `Retry-After`, and requests with a token keep being answered. An unknown
/// client id takes a check like a known one (it reaches the failpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secret_checks_are_bounded_and_the_excess_is_answered_at_once() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let request = |client_id: &str| {
        app.request(None, Method::POST, "/v1/oauth/token").json(&json!({
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": "wrong"}))
    };
    let (release, mut reached) = roster_tests::hold_at("auth::checking_secret");
    let slots = roster::auth::secret_checks();
    let unknown = uuid::Uuid::new_v4().to_string();
    let mut held = Vec::new();
    for i in 0..slots {
        // The first check is an unknown client's: it costs a check too.
        let id = if i == 0 { unknown.clone() } else { c.client_id.clone() };
        held.push(tokio::spawn(TestApp::send(request(&id))));
        tokio::time::timeout(std::time::Duration::from_secs(10), reached.recv())
            .await
            .expect("the check is reached")
            .expect("reached");
    }
    for id in [&c.client_id, &unknown, &"not-a-uuid".to_string()] {
        let r = tokio::time::timeout(std::time::Duration::from_secs(2), TestApp::send(request(id)))
            .await
            .expect("the excess is answered at once");
        assert_eq!(
            (r.status, r.code(), r.header("retry-after")),
            (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", Some("1")),
            "{}",
            r.body
        );
    }
    let r = tokio::time::timeout(std::time::Duration::from_secs(2), app.get(&c, "/v1/users"))
        .await
        .expect("authenticated traffic is answered meanwhile");
    assert_eq!(r.status, StatusCode::OK);
    fail::remove("auth::checking_secret");
    drop(release);
    for h in held {
        let r = h.await.expect("held request");
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            "{}",
            r.body
        );
    }
    app.cleanup().await;
}
