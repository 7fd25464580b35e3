//! Security checks over every route of the OpenAPI document: credentials,
//! scopes and tenancy; forged and expired tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use roster::auth::Claims;
use roster_tests::{account, spawn_app, Creds, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// One operation, with a request that would succeed for its own company.
struct Op {
    method: Method,
    template: &'static str,
    scope: &'static str,
    body: Option<Value>,
}

/// Company A's resources the requests name.
struct Ids {
    user: String,
    household: String,
    last4: String,
    /// A user of the *calling* company (a parent to link to).
    own_user: String,
    webhook: String,
}

fn operations(ids: &Ids) -> Vec<Op> {
    let op = |method: Method, template: &'static str, scope: &'static str, body: Option<Value>| Op {
        method,
        template,
        scope,
        body,
    };
    let (r, w, cw, admin) = ("users:read", "users:write", "cards:write", "admin");
    vec![
        op(Method::GET, "/v1/users", r, None),
        op(Method::POST, "/v1/users", w, Some(json!({"email": "eve@example.com"}))),
        op(Method::POST, "/v1/users:search", r, Some(json!({"name": "a"}))),
        op(Method::POST, "/v1/users/search", r, Some(json!({"name": "a"}))),
        op(Method::GET, "/v1/users/{id}", r, None),
        op(
            Method::PATCH,
            "/v1/users/{id}",
            w,
            Some(json!({"first_name": "Mallory"})),
        ),
        op(Method::PUT, "/v1/users/{id}", w, Some(json!({"first_name": "Mallory"}))),
        op(Method::GET, "/v1/users/{id}/relationships", r, None),
        op(Method::GET, "/v1/users/{id}:getLinkedRelationships", r, None),
        op(Method::GET, "/v1/users/{id}/events", r, None),
        op(
            Method::PUT,
            "/v1/users/{id}/parent",
            w,
            Some(json!({"parent_user_id": ids.own_user})),
        ),
        op(Method::DELETE, "/v1/users/{id}/parent", w, None),
        op(Method::DELETE, "/v1/users/{id}", "users:erase", None),
        op(
            Method::PUT,
            "/v1/users/{id}/verification-questions",
            w,
            Some(json!({"questions": [{"code": "FIRST_SCHOOL", "answer": "Elm"}]})),
        ),
        op(
            Method::POST,
            "/v1/users/{id}/verifications",
            w,
            Some(json!({"code": "FIRST_SCHOOL", "answer": "Elm"})),
        ),
        op(
            Method::POST,
            "/v1/users/{id}/status",
            w,
            Some(json!({"status": "blocked", "reason": "x"})),
        ),
        op(
            Method::PATCH,
            "/v1/users/{id}/kyc",
            w,
            Some(json!({"status": "approved"})),
        ),
        op(
            Method::POST,
            "/v1/users/{id}/accounts",
            w,
            Some(
                json!({"account_id": "ACC-9", "account_id_type": "T", "status": "GOOD_STANDING",
                        "product_code": "P", "program_identifier": "G"}),
            ),
        ),
        op(Method::GET, "/v1/users/{id}/cards", r, None),
        op(Method::POST, "/v1/users/{id}/cards", cw, Some(json!({}))),
        op(
            Method::POST,
            "/v1/users/{id}/cards/terminate",
            cw,
            Some(json!({"pan": ids.last4, "reason_code": "LOST"})),
        ),
        op(Method::GET, "/v1/card-products", r, None),
        op(
            Method::POST,
            "/v1/card-products",
            admin,
            Some(json!({"name": "X", "card_type": "virtual", "issuer": "icc"})),
        ),
        op(Method::POST, "/v1/households", w, Some(json!({"name": "H"}))),
        op(Method::GET, "/v1/households/{hid}", r, None),
        op(
            Method::POST,
            "/v1/households/{hid}/members",
            w,
            Some(json!({"user_id": ids.user, "account_id": "ACC-1"})),
        ),
        op(Method::DELETE, "/v1/households/{hid}/members/{account_id}", w, None),
        op(
            Method::POST,
            "/v1/webhook-endpoints",
            "webhooks",
            Some(json!({"url": "http://127.0.0.1:9/hook"})),
        ),
        op(Method::GET, "/v1/webhook-endpoints", "webhooks", None),
        op(Method::GET, "/v1/webhook-endpoints/{wid}", "webhooks", None),
        op(
            Method::PATCH,
            "/v1/webhook-endpoints/{wid}",
            "webhooks",
            Some(json!({"description": "x"})),
        ),
        op(Method::GET, "/v1/webhook-endpoints/{wid}/secret", "webhooks", None),
        op(
            Method::POST,
            "/v1/webhook-endpoints/{wid}/secret/rotate",
            "webhooks",
            None,
        ),
        op(Method::GET, "/v1/webhook-endpoints/{wid}/deliveries", "webhooks", None),
        op(
            Method::POST,
            "/v1/webhook-endpoints/{wid}/replay",
            "webhooks",
            Some(json!({"since": "2020-01-01T00:00:00Z"})),
        ),
        op(Method::DELETE, "/v1/webhook-endpoints/{wid}", "webhooks", None),
        // The Custodia door (CONTRACT §11).
        op(
            Method::POST,
            "/md/api/User",
            w,
            Some(json!({"firstname": "Eve", "lastname": "E", "email": "eve@example.com", "companyId": "x"})),
        ),
        op(Method::GET, "/md/api/User/{userId}", r, None),
        op(
            Method::PATCH,
            "/md/api/User/{userId}",
            w,
            Some(json!({"firstname": "Mallory"})),
        ),
        op(Method::POST, "/md/api/User/{userId}/order-card", cw, Some(json!({}))),
        op(
            Method::POST,
            "/md/api/User/{userId}/terminate-card",
            cw,
            Some(json!({"pan": ids.last4, "reasonCode": "01"})),
        ),
        // The Cradl door (CONTRACT §11).
        op(
            Method::POST,
            "/v2/users",
            w,
            Some(
                json!({"login": {"email": "eve@example.com", "password": "correct horse"}, "first_name": "Eve", "last_name": "E"}),
            ),
        ),
        op(Method::GET, "/v2/users/{user_id}", r, None),
        op(
            Method::PATCH,
            "/v2/users/{user_id}",
            w,
            Some(json!({"kyc_id": "KYC-X"})),
        ),
    ]
}

/// The error code of an answer: §2's `code`, or the first of a Cradl
/// body's `error_codes`.
fn code(r: &roster_tests::Res) -> &str {
    match r.body["error_codes"].as_array().and_then(|c| c.first()) {
        Some(c) => c.as_str().unwrap_or_default(),
        None => r.code(),
    }
}

/// The body without what the request itself sent back (a Cradl error
/// echoes the path's `user_id`, the caller's own input).
fn answered(r: &roster_tests::Res) -> String {
    let mut body = r.body.clone();
    if let Some(o) = body.as_object_mut() {
        o.remove("user_id");
    }
    body.to_string()
}

impl Op {
    /// The path with company A's ids.
    fn path(&self, ids: &Ids) -> String {
        self.template
            .replace("{hid}", &ids.household)
            .replace("{wid}", &ids.webhook)
            .replace("{id}", &ids.user)
            .replace("{userId}", &ids.user)
            .replace("{user_id}", &ids.user)
            .replace("{account_id}", "ACC-1")
    }

    /// The template as the OpenAPI document spells it.
    fn documented(&self) -> String {
        self.template.replace("{hid}", "{id}").replace("{wid}", "{id}")
    }

    async fn send(&self, app: &TestApp, c: Option<&Creds>, ids: &Ids) -> roster_tests::Res {
        let mut r = app.request(c, self.method.clone(), &self.path(ids));
        if let Some(body) = &self.body {
            r = r.json(body);
        }
        TestApp::send(r).await
    }
}

/// Company A with one of each resource; company B with a user of its own.
async fn two_companies(app: &TestApp) -> (Creds, Creds, Ids) {
    let a = app.creds("acme", None).await;
    let b = app.creds("globex", None).await;
    let user = app
        .enroll(
            &a,
            json!({"email": "victim@example.com", "status": "active",
                    "verification_questions": [{"code": "FIRST_SCHOOL", "answer": "Elm"}],
                    "account": {"account_id": "ACC-1", "account_id_type": "T", "status": "GOOD_STANDING",
                                "product_code": "P", "program_identifier": "G"}}),
        )
        .await;
    let r = app
        .post(
            &a,
            "/v1/card-products",
            &json!({"name": "Web", "card_type": "virtual", "issuer": "dipocket", "default": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app.post(&a, &format!("/v1/users/{user}/cards"), &json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let last4 = r.body["last4"].as_str().expect("last4").to_string();
    let r = app.post(&a, "/v1/households", &json!({"name": "Lees"})).await;
    let household = r.body["id"].as_str().expect("id").to_string();
    let r = app
        .post(
            &a,
            &format!("/v1/households/{household}/members"),
            &json!({"user_id": user, "account_id": "ACC-1"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let own_user = app.enroll(&b, json!({"email": "bob@example.com"})).await;
    let r = app
        .post(&a, "/v1/webhook-endpoints", &json!({"url": "http://127.0.0.1:9/hook"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let webhook = r.body["id"].as_str().expect("id").to_string();
    let ids = Ids {
        user,
        household,
        last4,
        own_user,
        webhook,
    };
    (a, b, ids)
}

/// Every documented operation (but the token endpoint) is in the table.
async fn assert_table_complete(app: &TestApp, ops: &[Op]) {
    let doc = TestApp::send(app.http.get(format!("{}/openapi.json", app.base)))
        .await
        .body;
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .filter(|op| op != "POST /v1/oauth/token")
        .collect();
    let tested: BTreeSet<String> = ops.iter().map(|o| format!("{} {}", o.method, o.documented())).collect();
    assert_eq!(documented, tested, "every documented operation is checked here");
}

async fn stream_lengths(app: &TestApp) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT aggregate_id, max(sequence) FROM events GROUP BY 1 ORDER BY 1")
        .fetch_all(&app.pool)
        .await
        .expect("streams")
}

#[tokio::test]
async fn every_route_needs_credentials_its_scope_and_hides_other_companies() {
    let app = spawn_app().await;
    let (_a, b, ids) = two_companies(&app).await;
    let ops = operations(&ids);
    assert_table_complete(&app, &ops).await;
    let before = stream_lengths(&app).await;

    for op in &ops {
        let name = format!("{} {}", op.method, op.template);
        // No credentials.
        let r = op.send(&app, None, &ids).await;
        assert_eq!(
            (r.status, code(&r)),
            (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            "{name}"
        );
        // Every scope but the one needed.
        let others: Vec<&str> = [
            "users:read",
            "users:write",
            "cards:write",
            "users:erase",
            "admin",
            "webhooks",
        ]
        .into_iter()
        .filter(|s| *s != op.scope)
        .collect();
        let limited = app.creds("globex", Some(&others)).await;
        let r = op.send(&app, Some(&limited), &ids).await;
        assert_eq!((r.status, code(&r)), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{name}");
        // Another company, with every scope: A's resources do not exist.
        if op.template.contains('{') {
            let r = op.send(&app, Some(&b), &ids).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{name}: {}", r.body);
            assert!(
                matches!(
                    code(&r),
                    "USER_NOT_FOUND" | "HOUSEHOLD_NOT_FOUND" | "WEBHOOK_ENDPOINT_NOT_FOUND" | "NOT_FOUND"
                ),
                "{name}: {}",
                r.body
            );
            assert!(!answered(&r).contains(&ids.user), "{name} leaks the id");
            assert!(!answered(&r).contains(&ids.webhook), "{name} leaks the id");
        }
    }
    // None of it changed company A's streams (B's own writes are new streams).
    let after = stream_lengths(&app).await;
    for (id, n) in &before {
        assert!(after.contains(&(id.clone(), *n)), "stream {id} changed");
    }
    app.cleanup().await;
}

/// A token with these claims, signed with `key`.
fn sign(claims: &Claims, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .expect("signed")
}

#[tokio::test]
async fn expired_forged_and_tampered_tokens_are_rejected() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let key: Vec<u8> = sqlx::query_scalar("SELECT secret FROM signing_keys WHERE id = 1")
        .fetch_one(&app.pool)
        .await
        .expect("key");
    let now = chrono::Utc::now().timestamp();
    let claims = |company: &str, iat: i64, exp: i64| Claims {
        sub: c.client_id.clone(),
        company: company.to_string(),
        scope: "users:read users:write cards:write users:erase admin".into(),
        iat,
        exp,
    };
    let with = |token: String| Creds { token, ..c.clone() };
    // The control: a token we sign with the service's key works.
    let good = with(sign(&claims("acme", now, now + 60), &key));
    assert_eq!(app.get(&good, "/v1/users").await.status, StatusCode::OK);

    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("globex", now, now + 60)).expect("json"));
    let real_parts: Vec<&str> = c.token.split('.').collect();
    let rejected = [
        ("expired a second ago", sign(&claims("acme", now - 120, now - 1), &key)),
        (
            "signed with another key",
            sign(&claims("acme", now, now + 60), b"not the key"),
        ),
        ("alg none", format!("{header}.{payload}.")),
        (
            "another company's claims under the real signature",
            format!("{}.{payload}.{}", real_parts[0], real_parts[2]),
        ),
        ("truncated", c.token[..c.token.len() - 2].to_string()),
        ("empty", String::new()),
    ];
    for (what, token) in rejected {
        let r = app.get(&with(token), "/v1/users").await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            "{what}"
        );
        assert_eq!(r.header("content-type"), Some("application/problem+json"), "{what}");
    }
    app.cleanup().await;
}

/// A consistency token names a write; sent by another company it names
/// nothing that company can see, and is answered exactly as a made-up one
/// (issue 24 §4): the answer must not reveal that the write exists.
#[tokio::test]
async fn another_companys_consistency_token_is_answered_as_an_unknown_one() {
    let app = spawn_app().await;
    let (a, b, _) = two_companies(&app).await;
    let user = app.enroll(&a, json!({"email": "tokens@example.com"})).await;
    let patched = app
        .call(
            &a,
            Method::PATCH,
            &format!("/v1/users/{user}"),
            Some(json!({"first_name": "Ann"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    let real = patched.header("roster-consistency-token").expect("token").to_string();
    let made_up = format!("user:{}:2", uuid::Uuid::now_v7());
    let answer = |token: String| {
        let (app, b) = (&app, &b);
        async move {
            let r = app.get_after(b, "/v1/users", &token).await;
            (r.status, r.body)
        }
    };
    let foreign = answer(real.clone()).await;
    let unknown = answer(made_up).await;
    assert_eq!(foreign, unknown, "a foreign token reveals nothing");
    assert_eq!(foreign.0, StatusCode::BAD_REQUEST);
    // Its own company still reads with it.
    let own = app.get_after(&a, "/v1/users", &real).await;
    assert_eq!(own.status, StatusCode::OK);
    app.cleanup().await;
}

/// Adding another company's user to one's household answers the same
/// whether that user lives, was erased or never existed (issue 24 §4): 422
/// `ACCOUNT_NOT_OWNED`, never 410 for a user the caller cannot see.
#[tokio::test]
async fn another_companys_users_look_alike_to_a_household_whether_live_erased_or_unknown() {
    let app = spawn_app().await;
    let (a, b, _) = two_companies(&app).await;
    let live = app
        .enroll(&a, json!({"email": "live@example.com", "account": account("ACC-LIVE")}))
        .await;
    let erased = app
        .enroll(&a, json!({"email": "gone@example.com", "account": account("ACC-GONE")}))
        .await;
    let r = app.call(&a, Method::DELETE, &format!("/v1/users/{erased}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let h = app.post(&b, "/v1/households", &json!({})).await;
    let members = format!("/v1/households/{}/members", h.body["id"].as_str().expect("id"));
    let unknown = uuid::Uuid::now_v7().to_string();
    let mut answers = Vec::new();
    for (user, account_id) in [(&live, "ACC-LIVE"), (&erased, "ACC-GONE"), (&unknown, "ACC-NONE")] {
        let r = app
            .post(&b, &members, &json!({"user_id": user, "account_id": account_id}))
            .await;
        answers.push((r.status, r.code().to_string()));
    }
    let expected = (StatusCode::UNPROCESSABLE_ENTITY, "ACCOUNT_NOT_OWNED".to_string());
    assert_eq!(answers, vec![expected.clone(), expected.clone(), expected]);
    app.cleanup().await;
}
