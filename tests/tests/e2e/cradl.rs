//! The Cradl routes (CONTRACT §11): the shapes, one registry behind both
//! doors, Cradl's error body (validation, not found, conflict, 401), and the
//! seed's three endpoints as it writes them, run with the real `curl`.

use reqwest::{Method, StatusCode};
use roster_tests::{spawn_app_with, Creds, Res, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const SEED: &str = "/work/shared/seeds/cradl-users.md";

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const USER_FIELDS: [&str; 8] = [
    "id",
    "kyc_id",
    "login",
    "phone_number",
    "first_name",
    "last_name",
    "account_ids",
    "error_codes",
];

async fn create(app: &TestApp, c: &Creds, email: &str) -> Res {
    app.post(
        c,
        "/v2/users",
        &json!({"login": {"email": email, "password": "correct horse battery"},
                "phone_number": "+971 50 123 4567", "first_name": "Ann", "last_name": "Lee"}),
    )
    .await
}

fn error_fields(r: &Res) -> BTreeSet<String> {
    r.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field").to_string())
        .collect()
}

/// Cradl's error body: exactly `user_id` and `error_codes` (and `errors`
/// with validation), as `application/json`.
fn assert_cradl_error(r: &Res, status: StatusCode, user_id: Value, codes: &[&str]) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"), "{}", r.body);
    assert_eq!(r.body["user_id"], user_id, "{}", r.body);
    assert_eq!(r.body["error_codes"], json!(codes), "{}", r.body);
    let mut expected = set(&["user_id", "error_codes"]);
    if codes.contains(&"VALIDATION_FAILED") {
        expected.insert("errors".into());
    }
    assert_eq!(keys(&r.body), expected, "{}", r.body);
}

#[tokio::test]
async fn cradl_users_are_the_registrys_users() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let r = create(&app, &c, "Ann@Example.com").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(keys(&r.body), set(&["user_id", "error_codes"]));
    assert_eq!(r.body["error_codes"], json!([]));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("etag"), Some("\"1\""));
    let id = r.body["user_id"].as_str().expect("user_id").to_string();
    assert_eq!(r.header("location"), Some(format!("/v2/users/{id}").as_str()));
    let token = r.header("roster-consistency-token").expect("token").to_string();
    assert!(!r.body.to_string().contains("correct horse"));

    // The same user through /v1: login set, no password anywhere.
    let v1 = app.get_after(&c, &format!("/v1/users/{id}"), &token).await;
    assert_eq!(v1.status, StatusCode::OK, "{}", v1.body);
    assert_eq!(v1.body["first_name"], "Ann");
    assert_eq!(v1.body["last_name"], "Lee");
    assert_eq!(v1.body["mobile"], "+971501234567");
    let email = v1.body["email"].as_str().expect("email").to_string();
    assert_eq!(v1.body["login"]["email"], email.as_str());
    assert!(!v1.body.to_string().contains("correct horse"));
    assert!(!v1.body.to_string().contains("password"), "{}", v1.body);

    // Cradl's read of it.
    let g = app.get_after(&c, &format!("/v2/users/{id}"), &token).await;
    assert_eq!(g.status, StatusCode::OK, "{}", g.body);
    assert_eq!(keys(&g.body), set(&USER_FIELDS));
    assert_eq!(g.header("etag"), Some("\"1\""));
    assert_eq!(g.body["id"], id.as_str());
    assert_eq!(g.body["login"], json!({"email": email}));
    assert_eq!(g.body["phone_number"], "+971501234567");
    assert_eq!(g.body["kyc_id"], Value::Null);
    assert_eq!(g.body["account_ids"], json!([]));
    assert_eq!(g.body["error_codes"], json!([]));
    assert!(!g.body.to_string().contains("password"), "{}", g.body);

    // The KYC reference through Cradl, If-Match honoured; /v1 sees it.
    let path = format!("/v2/users/{id}");
    let stale = TestApp::send(
        app.request(Some(&c), Method::PATCH, &path)
            .header("if-match", "\"7\"")
            .json(&json!({"kyc_id": "KYC-1"})),
    )
    .await;
    assert_cradl_error(
        &stale,
        StatusCode::PRECONDITION_FAILED,
        json!(id),
        &["PRECONDITION_FAILED"],
    );
    let p = TestApp::send(
        app.request(Some(&c), Method::PATCH, &path)
            .header("if-match", "\"1\"")
            .json(&json!({"kyc_id": "KYC-1"})),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body, json!({"user_id": id, "error_codes": []}));
    assert_eq!(p.header("etag"), Some("\"2\""));
    let token = p.header("roster-consistency-token").expect("token").to_string();
    let v1 = app.get_after(&c, &format!("/v1/users/{id}"), &token).await;
    assert_eq!(v1.body["kyc"]["kyc_id"], "KYC-1");
    let g = app.get_after(&c, &path, &token).await;
    assert_eq!(g.body["kyc_id"], "KYC-1");

    // The KYC status set through /v1 is kept by Cradl's kyc_id update.
    let k = app
        .call(
            &c,
            Method::PATCH,
            &format!("/v1/users/{id}/kyc"),
            Some(json!({"status": "approved"})),
        )
        .await;
    assert_eq!(k.status, StatusCode::OK, "{}", k.body);
    let p = app
        .call(&c, Method::PATCH, &path, Some(json!({"kyc_id": "KYC-2"})))
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let token = p.header("roster-consistency-token").expect("token").to_string();
    let v1 = app.get_after(&c, &format!("/v1/users/{id}"), &token).await;
    assert_eq!(v1.body["kyc"], json!({"kyc_id": "KYC-2", "status": "approved"}));

    // Accounts added on /v1 are Cradl's account_ids.
    let a = app
        .post(
            &c,
            &format!("/v1/users/{id}/accounts"),
            &json!({"account_id": "ACC-9", "account_id_type": "iban", "status": "open",
                    "product_code": "P", "program_identifier": "X"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let token = a.header("roster-consistency-token").expect("token").to_string();
    let g = app.get_after(&c, &path, &token).await;
    assert_eq!(g.body["account_ids"], json!(["ACC-9"]));
    app.cleanup().await;
}

#[tokio::test]
async fn cradl_errors_are_cradls_shape() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let b = app.creds("globex", None).await;

    // Validation: one VALIDATION_FAILED per bad field, under Cradl's names.
    let r = app
        .post(
            &c,
            "/v2/users",
            &json!({"login": {"email": "not-an-email", "password": ""}, "phone_number": "x",
                    "first_name": "", "last_name": "x".repeat(51)}),
        )
        .await;
    let fields = set(&[
        "login.email",
        "login.password",
        "phone_number",
        "first_name",
        "last_name",
    ]);
    assert_eq!(error_fields(&r), fields, "{}", r.body);
    assert_cradl_error(&r, StatusCode::BAD_REQUEST, Value::Null, &["VALIDATION_FAILED"; 5]);
    for e in r.body["errors"].as_array().expect("errors") {
        assert!(e["message"].is_string(), "{e}");
    }
    // Missing fields are named too.
    let r = app.post(&c, "/v2/users", &json!({"login": {}})).await;
    assert_eq!(
        error_fields(&r),
        set(&["login.email", "login.password", "first_name", "last_name"]),
        "{}",
        r.body
    );
    assert_cradl_error(&r, StatusCode::BAD_REQUEST, Value::Null, &["VALIDATION_FAILED"; 4]);

    // Duplicate email → 409 EMAIL_TAKEN.
    let first = create(&app, &c, "dup@example.com").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let id = first.body["user_id"].as_str().expect("id").to_string();
    let again = create(&app, &c, "dup@example.com").await;
    assert_cradl_error(&again, StatusCode::CONFLICT, Value::Null, &["EMAIL_TAKEN"]);

    // The PATCH: a bad kyc_id, a missing one.
    let path = format!("/v2/users/{id}");
    let r = app.call(&c, Method::PATCH, &path, Some(json!({"kyc_id": ""}))).await;
    assert_eq!(error_fields(&r), set(&["kyc_id"]), "{}", r.body);
    assert_cradl_error(&r, StatusCode::BAD_REQUEST, json!(id), &["VALIDATION_FAILED"]);
    let r = app.call(&c, Method::PATCH, &path, Some(json!({}))).await;
    assert_eq!(error_fields(&r), set(&["kyc_id"]), "{}", r.body);

    // Unknown and foreign users: 404 USER_NOT_FOUND, on both routes.
    let unknown = uuid::Uuid::new_v4().to_string();
    for (who, user) in [(&c, unknown.as_str()), (&b, id.as_str()), (&c, "not-a-uuid")] {
        let path = format!("/v2/users/{user}");
        let g = app.get(who, &path).await;
        assert_cradl_error(&g, StatusCode::NOT_FOUND, json!(user), &["USER_NOT_FOUND"]);
        let p = app.call(who, Method::PATCH, &path, Some(json!({"kyc_id": "K"}))).await;
        assert_cradl_error(&p, StatusCode::NOT_FOUND, json!(user), &["USER_NOT_FOUND"]);
    }

    // No credentials: 401 in Cradl's shape, WWW-Authenticate kept.
    let r = TestApp::send(app.request(None, Method::GET, &path)).await;
    assert_cradl_error(&r, StatusCode::UNAUTHORIZED, json!(id), &["UNAUTHENTICATED"]);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = TestApp::send(app.request(None, Method::POST, "/v2/users").json(&json!({}))).await;
    assert_cradl_error(&r, StatusCode::UNAUTHORIZED, Value::Null, &["UNAUTHENTICATED"]);
    // A missing scope: 403 FORBIDDEN.
    let read_only = app.creds("acme", Some(&["users:read"])).await;
    let r = create(&app, &read_only, "ro@example.com").await;
    assert_cradl_error(&r, StatusCode::FORBIDDEN, Value::Null, &["FORBIDDEN"]);
    // The router's and the idempotency layer's refusals too.
    let r = app.call(&c, Method::DELETE, &path, None).await;
    assert_cradl_error(&r, StatusCode::METHOD_NOT_ALLOWED, json!(id), &["METHOD_NOT_ALLOWED"]);
    assert!(r.header("allow").is_some());
    let keyed = |kyc: &str| {
        app.request(Some(&c), Method::PATCH, &path)
            .header("idempotency-key", "cradl-key-1")
            .json(&json!({"kyc_id": kyc}))
    };
    let first = TestApp::send(keyed("KYC-A")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let replay = TestApp::send(keyed("KYC-A")).await;
    assert_eq!((replay.status, &replay.body), (first.status, &first.body));
    let reused = TestApp::send(keyed("KYC-B")).await;
    assert_cradl_error(
        &reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        json!(id),
        &["IDEMPOTENCY_KEY_REUSED"],
    );
    // Not JSON: MALFORMED_REQUEST.
    let r = TestApp::send(
        app.request(Some(&c), Method::POST, "/v2/users")
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_cradl_error(&r, StatusCode::BAD_REQUEST, Value::Null, &["MALFORMED_REQUEST"]);
    app.cleanup().await;
}

/// The seed's endpoints: each `Get`/`Post`/`Patch` label and the URL in
/// backticks after it.
fn endpoints(seed: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut method: Option<String> = None;
    for line in seed.lines().map(str::trim) {
        if matches!(line, "Get" | "Post" | "Patch") {
            method = Some(line.to_uppercase());
        } else if let (Some(m), Some(url)) = (&method, line.strip_prefix('`').and_then(|l| l.strip_suffix('`'))) {
            out.push((m.clone(), url.to_string()));
            method = None;
        }
    }
    out
}

/// One request with the real `curl`: its status and body.
async fn curl(method: &str, url: &str, c: &Creds, data: Option<&Value>) -> (u16, Value) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "-X", method, url]);
    cmd.args(["-H", &format!("Authorization: Bearer {}", c.token)]);
    cmd.args(["-H", &format!("x-appid: {}", c.client_id)]);
    if let Some(d) = data {
        cmd.args(["-H", "Content-Type: application/json", "-d", &d.to_string()]);
    }
    cmd.args(["-w", "\n%{http_code}"]);
    let out = cmd.output().await.expect("curl runs");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (
        status.trim().parse().expect("status"),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
    )
}

/// The seed has no curl examples; its three endpoints, read from it at run
/// time with their URLs as written (base URL and `user_id` substituted),
/// carry the request keys its tables list.
#[tokio::test]
async fn the_seeds_endpoints_work_as_written() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let seed = std::fs::read_to_string(SEED).expect("the Cradl seed");
    assert!(
        !seed.contains("curl "),
        "the seed grew curl examples: run them verbatim"
    );
    let eps = endpoints(&seed);
    let methods: Vec<&str> = eps.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(methods, vec!["GET", "POST", "PATCH"], "{eps:?}");
    let url = |u: &str, user: &str| u.replace("https://api.cradl.com", &app.base).replace("user_id", user);

    let (status, created) = curl(
        "POST",
        &url(&eps[1].1, ""),
        &c,
        Some(
            &json!({"login": {"email": "seed@example.com", "password": "s3cret-pass-word"},
                     "phone_number": "+15551234567", "first_name": "Sam", "last_name": "Seed"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["error_codes"], json!([]));
    let id = created["user_id"].as_str().expect("user_id").to_string();

    let (status, patched) = curl("PATCH", &url(&eps[2].1, &id), &c, Some(&json!({"kyc_id": "kyc_123"}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched, json!({"user_id": id, "error_codes": []}));

    // The read model catches up after the writes' commits: until it has
    // the user (404 without a consistency token, as the seed's client
    // sends none) and then the patch, the test waits.
    let mut got = Value::Null;
    for _ in 0..50 {
        let (status, body) = curl("GET", &url(&eps[0].1, &id), &c, None).await;
        assert!(status == 200 || status == 404, "{status} {body}");
        got = body;
        if status == 200 && got["kyc_id"] == "kyc_123" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(keys(&got), set(&USER_FIELDS), "{got}");
    assert_eq!(got["kyc_id"], "kyc_123");
    assert_eq!(got["login"], json!({"email": "seed@example.com"}));
    assert_eq!(got["first_name"], "Sam");
    assert!(!got.to_string().contains("s3cret"));
    app.cleanup().await;
}
