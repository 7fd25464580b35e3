//! CONTRACT §5 through HTTP: card products, ordering, terminating.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use roster_command::pan::luhn_valid;
use roster_tests::{spawn_app, Creds, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

async fn active_user(app: &TestApp, c: &Creds, email: &str, address: bool) -> String {
    let mut body = json!({"email": email, "status": "active"});
    if address {
        body["address"] = json!({"line1": "1 Palm St", "city": "Dubai", "country": "AE"});
    }
    let r = app.post(c, "/v1/users", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().expect("id").to_string()
}

/// Every number of 13 to 19 digits in `text` that begins with `bin` and
/// passes the Luhn check: a card number of that product. (Any long digit
/// run holds a Luhn-valid stretch one time in ten, so the BIN is what tells
/// a card number from, say, a timestamp in nanoseconds in a debug log.) The
/// fractional part of a decimal number (the debug logs carry durations such
/// as `elapsed_secs=0.0691980388665231`) is not a card number.
fn pans_in(text: &str, bin: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut run = String::new();
    let mut fraction = false;
    let mut previous = ' ';
    for ch in text.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_digit() {
            if run.is_empty() {
                fraction = previous == '.';
            }
            run.push(ch);
            previous = ch;
            continue;
        }
        previous = ch;
        if run.len() >= 13 && !fraction {
            for start in run.match_indices(bin).map(|(i, _)| i) {
                for len in 13..=19.min(run.len() - start) {
                    if luhn_valid(&run[start..start + len]) {
                        found.push(run[start..start + len].to_string());
                    }
                }
            }
        }
        run.clear();
    }
    found
}

/// Up to 60 characters either side of each place `needle` occurs.
fn contexts<'a>(haystack: &'a str, needle: &str) -> Vec<&'a str> {
    haystack
        .match_indices(needle)
        .map(|(at, _)| {
            let from = (0..=at.saturating_sub(60))
                .rev()
                .find(|i| haystack.is_char_boundary(*i));
            let to = (at + needle.len() + 60).min(haystack.len());
            let to = (to..=haystack.len()).find(|i| haystack.is_char_boundary(*i));
            &haystack[from.unwrap_or(0)..to.unwrap_or(haystack.len())]
        })
        .collect()
}

#[tokio::test]
async fn card_products_have_at_most_one_default() {
    let app = spawn_app().await;
    let admin = app.creds("acme", None).await;
    let writer = app
        .creds("acme", Some(&["users:read", "users:write", "cards:write"]))
        .await;
    let r = app
        .post(
            &writer,
            "/v1/card-products",
            &json!({"name": "X", "card_type": "virtual", "issuer": "marqeta"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let a = app
        .post(
            &admin,
            "/v1/card-products",
            &json!({"name": "Gold", "card_type": "physical", "issuer": "marqeta", "bin": "52345678", "default": true}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["default"], true);
    assert_eq!(a.body["bin"], "52345678");
    for bad in [
        json!({"name": "X", "card_type": "plastic", "issuer": "marqeta"}),
        json!({"name": "X", "card_type": "virtual", "issuer": "visa"}),
        json!({"name": "X", "card_type": "virtual", "issuer": "icc", "bin": "12ab56"}),
        json!({"name": "", "card_type": "virtual", "issuer": "icc"}),
    ] {
        let r = app.post(&admin, "/v1/card-products", &bad).await;
        assert_eq!(r.code(), "VALIDATION_FAILED", "{bad}");
    }
    // Racing defaults: the last one wins, only one stays default.
    let bodies: Vec<Value> = (0..8)
        .map(|i| json!({"name": format!("P{i}"), "card_type": "virtual", "issuer": "dipocket", "default": true}))
        .collect();
    let created = join_all(bodies.iter().map(|b| app.post(&admin, "/v1/card-products", b))).await;
    // One stream: racing writers retry inside the service, and past the
    // bound are told to retry (409).
    let ok = created.iter().filter(|r| r.status == StatusCode::CREATED).count();
    assert!(ok >= 1);
    assert!(created
        .iter()
        .all(|r| r.status == StatusCode::CREATED || r.code() == "CONCURRENT_MODIFICATION"));
    let page = app.get(&admin, "/v1/card-products?limit=100").await;
    let products = page.body["data"].as_array().expect("data");
    assert_eq!(products.len(), 1 + ok);
    assert_eq!(products.iter().filter(|p| p["default"] == true).count(), 1);
    // Another company sees none of them.
    let other = app.creds("globex", None).await;
    assert_eq!(app.get(&other, "/v1/card-products").await.body["data"], json!([]));
    app.cleanup().await;
}

#[tokio::test]
async fn ordering_and_terminating_cards() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let other = app.creds("globex", None).await;
    let u = active_user(&app, &c, "a@example.com", true).await;
    let cards = format!("/v1/users/{u}/cards");

    let r = app.call(&c, Method::POST, &cards, Some(json!({}))).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "NO_DEFAULT_CARD_PRODUCT")
    );
    let physical = app
        .post(
            &c,
            "/v1/card-products",
            &json!({"name": "Gold", "card_type": "physical", "issuer": "marqeta", "default": true}),
        )
        .await;
    let virtual_ = app
        .post(
            &c,
            "/v1/card-products",
            &json!({"name": "Web", "card_type": "virtual", "issuer": "dipocket"}),
        )
        .await;
    let foreign = app
        .post(
            &other,
            "/v1/card-products",
            &json!({"name": "F", "card_type": "virtual", "issuer": "icc"}),
        )
        .await;

    // The seed's example, in the contract's fields: default product, shipped to the user.
    let r = app
        .call(
            &c,
            Method::POST,
            &cards,
            Some(json!({"instructions": {"address2use": "user", "expedite": false}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let card = r.body.clone();
    assert_eq!(card["owner_id"], u.as_str());
    assert_eq!(card["card_product_id"], physical.body["id"]);
    assert_eq!(card["state"], "UNACTIVATED");
    assert_eq!(card["card_type"], "physical");
    assert_eq!(card["issuer"], "marqeta");
    let last4 = card["last4"].as_str().expect("last4").to_string();
    assert_eq!(card["card_no"], format!("****{last4}"));
    assert_eq!(card["shipping"]["address"]["city"], "Dubai");
    assert_eq!(card["shipping"]["expedite"], false);
    assert_eq!(
        (card["terminated_at"].clone(), card["termination"].clone()),
        (Value::Null, Value::Null)
    );
    let token = r.header("roster-consistency-token").expect("token").to_string();
    let listed = app.get_after(&c, &cards, &token).await;
    assert_eq!(listed.body["data"], json!([card]));

    // Explicit virtual product, expedite recorded nowhere (no shipping).
    let r = app
        .call(
            &c,
            Method::POST,
            &cards,
            Some(json!({"card_product_id": virtual_.body["id"]})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["shipping"].clone(), r.body["issuer"].clone()),
        (StatusCode::CREATED, Value::Null, json!("dipocket"))
    );
    let mut used = vec![last4.clone(), r.body["last4"].as_str().expect("last4").to_string()];
    let r = app.call(&c, Method::POST, &cards, Some(json!({"card_product_id": physical.body["id"], "instructions": {"address2use": "business", "expedite": true}}))).await;
    assert_eq!(
        r.body["shipping"],
        json!({"address2use": "business", "expedite": true, "address": null})
    );
    used.push(r.body["last4"].as_str().expect("last4").to_string());

    // Errors.
    let r = app
        .call(
            &c,
            Method::POST,
            &cards,
            Some(json!({"card_product_id": foreign.body["id"]})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "CARD_PRODUCT_NOT_FOUND"));
    let no_address = active_user(&app, &c, "b@example.com", false).await;
    let r = app
        .call(
            &c,
            Method::POST,
            &format!("/v1/users/{no_address}/cards"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "ADDRESS_REQUIRED")
    );
    let inactive = app.post(&c, "/v1/users", &json!({"email": "c@example.com"})).await;
    let r = app
        .call(
            &c,
            Method::POST,
            &format!("/v1/users/{}/cards", inactive.body["id"].as_str().expect("id")),
            Some(json!({})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "INVALID_USER_STATE"));
    let r = app.call(&other, Method::POST, &cards, Some(json!({}))).await;
    assert_eq!(r.code(), "USER_NOT_FOUND");
    let r = app
        .call(
            &c,
            Method::POST,
            &cards,
            Some(json!({"instructions": {"address2use": "moon"}})),
        )
        .await;
    assert_eq!(r.code(), "VALIDATION_FAILED");

    // Terminate: the seed's example in the contract's fields.
    let terminate = format!("/v1/users/{u}/cards/terminate");
    for bad in [
        json!({"pan": "123", "reason_code": "LOST"}),
        json!({"pan": "12345", "reason_code": "LOST"}),
        json!({"pan": "abcd", "reason_code": "LOST"}),
        json!({"pan": last4}),
    ] {
        let r = app.call(&c, Method::POST, &terminate, Some(bad.clone())).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
            "{bad}"
        );
    }
    let unknown = (0..10)
        .map(|d| format!("{d}{d}{d}{d}"))
        .find(|x| !used.contains(x))
        .expect("free digits");
    let r = app
        .call(
            &c,
            Method::POST,
            &terminate,
            Some(json!({"pan": unknown, "reason_code": "LOST"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "CARD_NOT_FOUND"));
    let r = app
        .call(
            &c,
            Method::POST,
            &terminate,
            Some(json!({"pan": last4, "reason_code": "LOST", "issuer": "icc"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "CARD_NOT_FOUND"));
    let r = app
        .call(
            &c,
            Method::POST,
            &terminate,
            Some(json!({"pan": last4, "reason_code": "STOLEN", "reason": "reported by phone"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["state"], "TERMINATED");
    assert_eq!(r.body["id"], card["id"]);
    assert_eq!(
        r.body["termination"],
        json!({"reason_code": "STOLEN", "reason": "reported by phone", "issuer": "marqeta"})
    );
    assert!(r.body["terminated_at"].is_string());
    let r = app
        .call(
            &c,
            Method::POST,
            &terminate,
            Some(json!({"pan": last4, "reason_code": "STOLEN"})),
        )
        .await;
    if used[1..].contains(&last4) {
        // Another live card shares the last four digits (1 in 5,000): it is the one found.
        assert_eq!(r.status, StatusCode::OK);
    } else {
        assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "CARD_ALREADY_TERMINATED"));
    }
    app.cleanup().await;
}

/// No full PAN anywhere: responses, read models, the audit data on Kafka.
#[tokio::test]
async fn no_full_card_number_leaves_the_service() {
    let logs = roster_tests::capture_logs();
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let u = active_user(&app, &c, "p@example.com", true).await;
    app.post(
        &c,
        "/v1/card-products",
        &json!({"name": "V", "card_type": "virtual", "issuer": "marqeta", "bin": "411111", "default": true}),
    )
    .await;
    let mut haystack = String::new();
    for _ in 0..20 {
        let r = app
            .call(&c, Method::POST, &format!("/v1/users/{u}/cards"), Some(json!({})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        haystack.push_str(&r.body.to_string());
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    for r in app.consume(events as usize, Duration::from_secs(30)).await {
        haystack.push_str(&r.value.to_string());
    }
    let stored: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(payload::text, ''), '') || (SELECT coalesce(string_agg(doc::text, ''), '') FROM card_view) FROM events",
    )
    .fetch_one(&app.pool)
    .await
    .expect("store");
    haystack.push_str(&stored);
    haystack.push_str(&String::from_utf8_lossy(&logs.lock().expect("logs")));
    assert!(haystack.contains("\"last4\""), "the scan saw the cards");
    let found = pans_in(&haystack, "411111");
    let seen: Vec<Vec<&str>> = found.iter().map(|pan| contexts(&haystack, pan)).collect();
    assert!(found.is_empty(), "card numbers {found:?} in: {seen:#?}");
    // The scanner itself finds a PAN when there is one, and only then.
    assert_eq!(
        pans_in("x 4111111111111111 y", "411111"),
        vec!["4111111111111111".to_string()]
    );
    assert_eq!(pans_in("ts=17646494259562503748703", "411111"), Vec::<String>::new());
    assert_eq!(
        pans_in("elapsed_secs=0.4111111111111111", "411111"),
        Vec::<String>::new()
    );
    app.cleanup().await;
}
