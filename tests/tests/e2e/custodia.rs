//! The Custodia routes (CONTRACT §11): the seed's examples verbatim, the
//! shapes, Custodia's field names in errors, its one error code of its own,
//! tenancy, and one registry behind both doors.

use reqwest::{Method, StatusCode};
use roster_tests::{spawn_app_with, Creds, Res, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const SEED: &str = "/work/shared/seeds/custodia-users.md";

/// A card product of the company: virtual (no address needed), issued by
/// marqeta (the seed's terminate example names that issuer), the default.
async fn product(app: &TestApp, c: &Creds) -> String {
    let r = app
        .post(
            c,
            "/v1/card-products",
            &json!({"name": "Custodia", "card_type": "virtual", "issuer": "marqeta", "default": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().expect("id").to_string()
}

async fn create(app: &TestApp, c: &Creds, body: Value) -> Res {
    app.post(c, "/md/api/User", &body).await
}

/// Creates an active user through the Custodia door; its id.
async fn custodia_user(app: &TestApp, c: &Creds, email: &str, active: bool) -> String {
    let r = create(
        app,
        c,
        json!({"firstname": "Ann", "lastname": "Lee", "email": email, "companyId": c.company_id, "active": active}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["id"].as_str().expect("id").to_string()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const USER_FIELDS: [&str; 14] = [
    "id",
    "firstname",
    "lastname",
    "email",
    "companyId",
    "active",
    "reason",
    "emailVerified",
    "mobile",
    "employeeId",
    "office",
    "extension",
    "created",
    "modified",
];

fn error_fields(r: &Res) -> BTreeSet<String> {
    r.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field").to_string())
        .collect()
}

/// One `curl -X ...` example of the seed.
#[derive(Debug)]
struct Example {
    method: String,
    url: String,
    headers: Vec<String>,
    data: String,
}

/// Every `curl -X METHOD URL \` block of the seed: its method, URL,
/// `-H` headers and `-d '...'` body, as written.
fn examples(seed: &str) -> Vec<Example> {
    let lines: Vec<&str> = seed.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let Some(rest) = line.strip_prefix("curl -X ") else {
            i += 1;
            continue;
        };
        let mut words = rest.split_whitespace();
        let method = words.next().expect("method").to_string();
        let url = words.next().expect("url").to_string();
        let mut headers = Vec::new();
        let mut data = String::new();
        i += 1;
        while i < lines.len() {
            let l = lines[i].trim();
            if let Some(h) = l.strip_prefix("-H \"") {
                headers.push(h.trim_end_matches('\\').trim().trim_end_matches('"').to_string());
            } else if let Some(d) = l.strip_prefix("-d '") {
                let mut body = d.to_string();
                while !body.trim_end().ends_with('\'') {
                    i += 1;
                    body.push('\n');
                    body.push_str(lines[i]);
                }
                data = body.trim_end().trim_end_matches('\'').to_string();
                break;
            } else {
                break;
            }
            i += 1;
        }
        out.push(Example {
            method,
            url,
            headers,
            data,
        });
        i += 1;
    }
    out
}

/// Runs one example with the real `curl`: its status and body.
async fn curl(e: &Example, subst: &dyn Fn(&str) -> String) -> (u16, Value) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "-X", &e.method, &subst(&e.url)]);
    for h in &e.headers {
        cmd.args(["-H", &subst(h)]);
    }
    cmd.args(["-d", &subst(&e.data), "-w", "\n%{http_code}"]);
    let out = cmd.output().await.expect("curl runs");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (
        status.trim().parse().expect("status"),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
    )
}

#[tokio::test]
async fn the_seeds_curl_examples_work_verbatim() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let product_id = product(&app, &c).await;
    let seed = std::fs::read_to_string(SEED).expect("the Custodia seed");
    let examples = examples(&seed);
    let routes: Vec<(&str, &str)> = examples
        .iter()
        .map(|e| (e.method.as_str(), e.url.rsplit('/').next().unwrap_or_default()))
        .collect();
    assert_eq!(
        routes,
        vec![
            ("POST", "User"),
            ("PATCH", "550e8400-e29b-41d4-a716-446655440000"),
            ("POST", "order-card"),
            ("POST", "terminate-card"),
        ],
        "{examples:?}"
    );
    let base = |user: &str, last4: &str| {
        let (base, token, client, company, product) = (
            app.base.clone(),
            c.token.clone(),
            c.client_id.clone(),
            c.company_id.clone(),
            product_id.clone(),
        );
        let (user, last4) = (user.to_string(), last4.to_string());
        move |text: &str| {
            let mut t = text
                .replace("https://sandbox.custodia-tech.com", &base)
                .replace("YOUR_ACCESS_TOKEN", &token)
                .replace("YOUR_CLIENT_ID", &client)
                .replace("your-company-id", &company)
                .replace("card-product-id", &product);
            if !user.is_empty() {
                t = t.replace("550e8400-e29b-41d4-a716-446655440000", &user);
            }
            // The seed terminates the card whose last four digits are
            // "1234"; the card ordered above has its own, drawn at random:
            // the example names that card instead.
            if !last4.is_empty() {
                t = t.replace("\"pan\": \"1234\"", &format!("\"pan\": \"{last4}\""));
            }
            t
        }
    };

    // Create: the user every later example names.
    let (status, created) = curl(&examples[0], &base("", "")).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(keys(&created), set(&USER_FIELDS));
    assert_eq!(created["firstname"], "John");
    assert_eq!(created["companyId"], c.company_id.as_str());
    assert_eq!(created["active"], true);
    assert_eq!(created["reason"], "active");
    assert_eq!(created["emailVerified"], true);
    let user = created["id"].as_str().expect("id").to_string();

    let (status, patched) = curl(&examples[1], &base(&user, "")).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["firstname"], "Jane");
    assert_eq!(patched["lastname"], "Doe");
    assert_eq!(patched["mobile"], "+1234567890");

    let (status, card) = curl(&examples[2], &base(&user, "")).await;
    assert_eq!(status, 200, "{card}");
    assert_eq!(
        keys(&card),
        set(&[
            "id",
            "ownerId",
            "cardProductId",
            "cardNo",
            "state",
            "cardType",
            "created"
        ])
    );
    assert_eq!(card["ownerId"], user.as_str());
    assert_eq!(card["cardProductId"], product_id.as_str());
    assert_eq!(card["state"], "UNACTIVATED");
    let card_no = card["cardNo"].as_str().expect("cardNo");
    let last4 = card_no.strip_prefix("****").expect("masked").to_string();
    assert_eq!(last4.len(), 4);

    let (status, terminated) = curl(&examples[3], &base(&user, &last4)).await;
    assert_eq!(status, 200, "{terminated}");
    assert_eq!(
        keys(&terminated),
        set(&["id", "ownerId", "cardNo", "state", "cardType", "vendor", "terminatedOn"])
    );
    assert_eq!(terminated["id"], card["id"]);
    assert_eq!(terminated["cardNo"], card_no);
    assert_eq!(terminated["state"], "TERMINATED");
    assert_eq!(terminated["vendor"], "marqeta");
    assert!(terminated["terminatedOn"].is_string());
    app.cleanup().await;
}

#[tokio::test]
async fn custodia_users_are_the_registrys_users() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let r = create(
        &app,
        &c,
        json!({"firstname": "Ann", "lastname": "Lee", "email": "ann@example.com", "companyId": c.company_id,
               "mobile": "+971 50 123 4567", "employeeId": "E-1", "emailVerified": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(keys(&r.body), set(&USER_FIELDS));
    assert_eq!(r.body["active"], false, "not active unless asked");
    assert_eq!(r.header("etag"), Some("\"1\""));
    let token = r.header("roster-consistency-token").expect("token").to_string();
    let id = r.body["id"].as_str().expect("id").to_string();

    // The same user through /v1, once the write is visible.
    let v1 = app.get_after(&c, &format!("/v1/users/{id}"), &token).await;
    assert_eq!(v1.status, StatusCode::OK, "{}", v1.body);
    assert_eq!(v1.body["first_name"], "Ann");
    assert_eq!(v1.body["status"], "inactive");
    assert_eq!(v1.body["mobile"], "+971501234567");
    assert_eq!(v1.body["employee_id"], "E-1");
    assert_eq!(v1.body["created_at"], r.body["created"]);

    // Custodia's read of it.
    let g = app.get_after(&c, &format!("/md/api/User/{id}"), &token).await;
    assert_eq!(g.status, StatusCode::OK, "{}", g.body);
    assert_eq!(g.body, r.body);
    assert_eq!(g.header("etag"), Some("\"1\""));

    // A patch through Custodia, If-Match honoured; the office fields.
    let path = format!("/md/api/User/{id}");
    let stale = TestApp::send(
        app.request(Some(&c), Method::PATCH, &path)
            .header("if-match", "\"7\"")
            .json(&json!({"office": "+97141234567"})),
    )
    .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED, "{}", stale.body);
    let p = TestApp::send(
        app.request(Some(&c), Method::PATCH, &path)
            .header("if-match", "\"1\"")
            .json(&json!({"office": "+97141234567", "extension": "12", "lastname": "Li"})),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.header("etag"), Some("\"2\""));
    assert_eq!(p.body["office"], "+97141234567");
    assert_eq!(p.body["extension"], "12");
    assert_eq!(p.body["lastname"], "Li");
    let token = p.header("roster-consistency-token").expect("token").to_string();
    let v1 = app.get_after(&c, &format!("/v1/users/{id}"), &token).await;
    assert_eq!(v1.body["office_phone"], "+97141234567");
    assert_eq!(v1.body["office_extension"], "12");
    assert_eq!(v1.body["last_name"], "Li");
    assert_eq!(v1.body["updated_at"], p.body["modified"]);

    // One audit trail: both writes are the user's events.
    let events = app.get_after(&c, &format!("/v1/users/{id}/events"), &token).await;
    assert_eq!(events.status, StatusCode::OK, "{}", events.body);
    assert_eq!(
        events.body["data"].as_array().expect("data").len(),
        2,
        "{}",
        events.body
    );

    // A user enrolled through /v1 reads through Custodia.
    let r = app
        .post(
            &c,
            "/v1/users",
            &json!({"email": "v1@example.com", "status": "active", "status_reason": "ok"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let other = r.body["id"].as_str().expect("id");
    let token = r.header("roster-consistency-token").expect("token");
    let g = app.get_after(&c, &format!("/md/api/User/{other}"), token).await;
    assert_eq!(g.status, StatusCode::OK, "{}", g.body);
    assert_eq!(g.body["active"], true);
    assert_eq!(g.body["reason"], "ok");
    assert_eq!(g.body["email"], "v1@example.com");
    app.cleanup().await;
}

#[tokio::test]
async fn custodia_errors_name_custodias_fields() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    // Required fields.
    let r = create(&app, &c, json!({})).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    assert_eq!(
        error_fields(&r),
        set(&["firstname", "lastname", "email", "companyId"]),
        "{}",
        r.body
    );
    // Invalid values, under Custodia's names.
    let r = create(
        &app,
        &c,
        json!({"firstname": " ", "lastname": " ", "email": "nope", "companyId": c.company_id,
               "mobile": "12", "employeeId": "", "reason": ""}),
    )
    .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    assert_eq!(
        error_fields(&r),
        set(&["firstname", "lastname", "email", "mobile", "employeeId", "reason"]),
        "{}",
        r.body
    );
    // Unknown fields, as on /v1; /v1's own names are unknown here.
    let r = create(
        &app,
        &c,
        json!({"firstname": "A", "lastname": "B", "email": "a@example.com", "companyId": c.company_id,
               "first_name": "A", "nickname": "x"}),
    )
    .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    assert_eq!(error_fields(&r), set(&["first_name", "nickname"]), "{}", r.body);

    // Another company's id → 403; nothing enrolled.
    let r = create(
        &app,
        &c,
        json!({"firstname": "A", "lastname": "B", "email": "a@example.com", "companyId": "globex"}),
    )
    .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));

    // A duplicate email → 409 EMAIL_TAKEN, as on /v1.
    let id = custodia_user(&app, &c, "dup@example.com", false).await;
    let r = create(
        &app,
        &c,
        json!({"firstname": "A", "lastname": "B", "email": "dup@example.com", "companyId": c.company_id}),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "EMAIL_TAKEN"),
        "{}",
        r.body
    );

    // The patch: bad values and other fields under Custodia's names.
    let r = app
        .call(
            &c,
            Method::PATCH,
            &format!("/md/api/User/{id}"),
            Some(json!({"firstname": 5, "mobile": "12", "extension": "12345678901", "status": "active"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    assert_eq!(
        error_fields(&r),
        set(&["firstname", "mobile", "extension", "status"]),
        "{}",
        r.body
    );

    // Terminate: the required fields and the PAN's rule.
    let r = app
        .post(&c, &format!("/md/api/User/{id}/terminate-card"), &json!({}))
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    assert_eq!(error_fields(&r), set(&["pan", "reasonCode"]), "{}", r.body);
    let r = app
        .post(
            &c,
            &format!("/md/api/User/{id}/terminate-card"),
            &json!({"pan": "12", "reasonCode": " "}),
        )
        .await;
    assert_eq!(error_fields(&r), set(&["pan", "reasonCode"]), "{}", r.body);
    // Order: a product id that is not one.
    let r = app
        .post(
            &c,
            &format!("/md/api/User/{id}/order-card"),
            &json!({"cardProductId": "card-product-id"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    assert_eq!(error_fields(&r), set(&["cardProductId"]), "{}", r.body);
    app.cleanup().await;
}

#[tokio::test]
async fn custodia_cards_and_their_refusals() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let b = app.creds("globex", None).await;
    product(&app, &c).await;
    product(&app, &b).await;

    // An inactive user: INVALID-USER-STATE, the seed's spelling.
    let inactive = custodia_user(&app, &c, "idle@example.com", false).await;
    let r = app
        .post(&c, &format!("/md/api/User/{inactive}/order-card"), &json!({}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "INVALID-USER-STATE"),
        "{}",
        r.body
    );

    // The default product; the card seen through /v1.
    let user = custodia_user(&app, &c, "active@example.com", true).await;
    let r = app
        .post(
            &c,
            &format!("/md/api/User/{user}/order-card"),
            &json!({"instructions": {"address2use": "user"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["state"], "UNACTIVATED");
    assert_eq!(r.body["cardType"], "virtual");
    let token = r.header("roster-consistency-token").expect("token").to_string();
    let cards = app.get_after(&c, &format!("/v1/users/{user}/cards"), &token).await;
    assert_eq!(cards.body["data"][0]["id"], r.body["id"]);
    assert_eq!(cards.body["data"][0]["created_at"], r.body["created"]);
    let last4 = r.body["cardNo"].as_str().expect("cardNo")[4..].to_string();

    // A card of another issuer is not this one; no such card → 404.
    let terminate = format!("/md/api/User/{user}/terminate-card");
    let r = app
        .post(
            &c,
            &terminate,
            &json!({"pan": last4, "reasonCode": "01", "issuer": "icc"}),
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.body);
    let other = if last4 == "0000" { "0001" } else { "0000" };
    let r = app
        .post(&c, &terminate, &json!({"pan": other, "reasonCode": "01"}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "CARD_NOT_FOUND"),
        "{}",
        r.body
    );
    // Terminated with the default issuer, marqeta.
    let r = app
        .post(
            &c,
            &terminate,
            &json!({"pan": last4, "reasonCode": "01", "reason": "Lost"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["vendor"], "marqeta");
    assert_eq!(r.body["state"], "TERMINATED");

    // Unknown users: 404 USER_NOT_FOUND on every route.
    let unknown = uuid::Uuid::now_v7().to_string();
    for id in [unknown.as_str(), "not-a-uuid"] {
        for (method, path, body) in [
            (Method::GET, format!("/md/api/User/{id}"), None),
            (
                Method::PATCH,
                format!("/md/api/User/{id}"),
                Some(json!({"firstname": "X"})),
            ),
            (Method::POST, format!("/md/api/User/{id}/order-card"), Some(json!({}))),
            (
                Method::POST,
                format!("/md/api/User/{id}/terminate-card"),
                Some(json!({"pan": "1234", "reasonCode": "01"})),
            ),
        ] {
            let r = app.call(&c, method.clone(), &path, body.clone()).await;
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::NOT_FOUND, "USER_NOT_FOUND"),
                "{method} {path}: {}",
                r.body
            );
            // Tenancy: company A's user does not exist for company B.
            let theirs = path.replace(id, &user);
            let r = app.call(&b, method.clone(), &theirs, body).await;
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::NOT_FOUND, "USER_NOT_FOUND"),
                "{method} {theirs}: {}",
                r.body
            );
        }
    }
    app.cleanup().await;
}
