//! Every user command of CONTRACT §3 through HTTP.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use roster_tests::{spawn_app, Creds, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

async fn user(app: &TestApp, c: &Creds, body: Value) -> Value {
    let r = app.post(c, "/v1/users", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

fn id(u: &Value) -> String {
    u["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn patch_and_put_merge_clear_and_keep_versions() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let u = user(
        &app,
        &c,
        json!({"email": "ann@example.com", "first_name": "Ann", "last_name": "Lee",
               "address": {"line1": "1 Main St", "city": "Dubai", "country": "AE"}}),
    )
    .await;
    let path = format!("/v1/users/{}", id(&u));

    let r = app
        .call(
            &c,
            Method::PATCH,
            &path,
            Some(json!({"last_name": null, "address": {"city": "Abu Dhabi"}, "mobile": "+971 50 000 0000"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["last_name"], Value::Null);
    assert_eq!(r.body["first_name"], "Ann");
    assert_eq!(r.body["address"]["line1"], "1 Main St");
    assert_eq!(r.body["address"]["city"], "Abu Dhabi");
    assert_eq!(r.body["mobile"], "+971500000000");
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.header("etag"), Some("\"2\""));
    assert_ne!(r.body["updated_at"], r.body["created_at"]);
    let token = r.header("roster-consistency-token").expect("token").to_string();
    let got = app.get_after(&c, &path, &token).await;
    assert_eq!(got.body, r.body, "a write's response equals a later read");

    // A no-op appends nothing and keeps the version.
    let r = app
        .call(&c, Method::PUT, &path, Some(json!({"first_name": "Ann"})))
        .await;
    assert_eq!((r.status, r.body["version"].as_u64()), (StatusCode::OK, Some(2)));
    // PUT is a partial update too.
    let r = app
        .call(&c, Method::PUT, &path, Some(json!({"first_name": "Anna"})))
        .await;
    assert_eq!(
        (r.body["first_name"].as_str(), r.body["last_name"].as_str()),
        (Some("Anna"), None)
    );

    // If-Match.
    let stale = TestApp::send(
        app.request(Some(&c), Method::PATCH, &path)
            .header("if-match", "\"2\"")
            .json(&json!({"gender": "f"})),
    )
    .await;
    assert_eq!(
        (stale.status, stale.code()),
        (StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED")
    );
    let fresh = TestApp::send(
        app.request(Some(&c), Method::PATCH, &path)
            .header("if-match", "\"3\"")
            .json(&json!({"gender": "f"})),
    )
    .await;
    assert_eq!(fresh.status, StatusCode::OK);

    // Validation as at enrollment; unknown and non-profile fields.
    for (body, field) in [
        (json!({"email": "nope"}), "email"),
        (json!({"email": null}), "email"),
        (json!({"address": {"country": "ZZ"}}), "address.country"),
        (json!({"shoe_size": 1}), "shoe_size"),
        (json!({"status": "active"}), "status"),
        (json!({"first_name": 5}), "first_name"),
        (json!({"password": "short"}), "password"),
    ] {
        let r = app.call(&c, Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
            "{body}"
        );
        assert_eq!(r.body["errors"][0]["field"], field, "{body}");
    }
    let r = app
        .call(
            &c,
            Method::PATCH,
            "/v1/users/01a20872-2cb1-7360-af8f-f3e9ddbe766d",
            Some(json!({"gender": "x"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "USER_NOT_FOUND"));
    app.cleanup().await;
}

#[tokio::test]
async fn emails_and_external_refs_stay_unique_through_updates() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let a = user(
        &app,
        &c,
        json!({"email": "a@example.com", "external_ref": {"id": "1", "type": "T"}}),
    )
    .await;
    let b = user(&app, &c, json!({"email": "b@example.com"})).await;
    let pb = format!("/v1/users/{}", id(&b));
    let r = app
        .call(&c, Method::PATCH, &pb, Some(json!({"email": "A@example.com"})))
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "EMAIL_TAKEN"));
    let r = app
        .call(
            &c,
            Method::PATCH,
            &pb,
            Some(json!({"external_ref": {"id": "1", "type": "T"}})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "EXTERNAL_ID_TAKEN"));
    // A moves to a new email: the old one is free again.
    let pa = format!("/v1/users/{}", id(&a));
    let r = app
        .call(&c, Method::PATCH, &pa, Some(json!({"email": "a2@example.com"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .call(&c, Method::PATCH, &pb, Some(json!({"email": "a@example.com"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Two users racing for one email: exactly one wins.
    let users: Vec<Value> =
        join_all((0..10).map(|i| user(&app, &c, json!({"email": format!("r{i}@example.com")})))).await;
    let paths: Vec<String> = users.iter().map(|u| format!("/v1/users/{}", id(u))).collect();
    let results = join_all(
        paths
            .iter()
            .map(|p| app.call(&c, Method::PATCH, p, Some(json!({"email": "race@example.com"})))),
    )
    .await;
    let ok = results.iter().filter(|r| r.status == StatusCode::OK).count();
    let taken = results.iter().filter(|r| r.code() == "EMAIL_TAKEN").count();
    assert_eq!((ok, taken), (1, 9));
    app.cleanup().await;
}

#[tokio::test]
async fn parents_link_unlink_and_never_form_a_cycle() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let other = app.creds("globex", None).await;
    let a = id(&user(&app, &c, json!({"email": "a@example.com"})).await);
    let b = id(&user(&app, &c, json!({"email": "b@example.com", "parent_user_id": a})).await);
    let cc = id(&user(&app, &c, json!({"email": "c@example.com"})).await);
    let foreign = id(&user(&app, &other, json!({"email": "f@example.com"})).await);

    // c under b through PATCH, then a under c would close a → b → c → a.
    let r = app
        .call(
            &c,
            Method::PATCH,
            &format!("/v1/users/{cc}"),
            Some(json!({"parent_user_id": b})),
        )
        .await;
    assert_eq!(r.body["parent_user_id"], b.as_str());
    let r = app
        .call(
            &c,
            Method::PUT,
            &format!("/v1/users/{a}/parent"),
            Some(json!({"parent_user_id": cc})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "RELATIONSHIP_CYCLE")
    );
    let r = app
        .call(
            &c,
            Method::PUT,
            &format!("/v1/users/{a}/parent"),
            Some(json!({"parent_user_id": a})),
        )
        .await;
    assert_eq!(r.code(), "RELATIONSHIP_CYCLE");
    let r = app
        .call(
            &c,
            Method::PUT,
            &format!("/v1/users/{a}/parent"),
            Some(json!({"parent_user_id": foreign})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "PARENT_NOT_FOUND")
    );
    let r = app
        .call(&c, Method::DELETE, &format!("/v1/users/{b}/parent"), None)
        .await;
    assert_eq!(
        (r.status, r.body["parent_user_id"].clone()),
        (StatusCode::OK, Value::Null)
    );
    // With b detached, a may now go under c (c → b, b is a root).
    let r = app
        .call(
            &c,
            Method::PUT,
            &format!("/v1/users/{a}/parent"),
            Some(json!({"parent_user_id": cc})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .call(
            &c,
            Method::PUT,
            &format!("/v1/users/{a}/parent"),
            Some(json!({"parent_user_id": "x"})),
        )
        .await;
    assert_eq!(r.code(), "VALIDATION_FAILED");
    app.cleanup().await;
}

#[tokio::test]
async fn opposite_links_raced_never_make_a_cycle() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    for round in 0..50 {
        let x = id(&user(&app, &c, json!({"email": format!("x{round}@example.com")})).await);
        let y = id(&user(&app, &c, json!({"email": format!("y{round}@example.com")})).await);
        let (px, py) = (format!("/v1/users/{x}/parent"), format!("/v1/users/{y}/parent"));
        let (r1, r2) = tokio::join!(
            app.call(&c, Method::PUT, &px, Some(json!({"parent_user_id": y}))),
            app.call(&c, Method::PUT, &py, Some(json!({"parent_user_id": x}))),
        );
        let ok = [&r1, &r2].iter().filter(|r| r.status == StatusCode::OK).count();
        assert_eq!(ok, 1, "round {round}: {} / {}", r1.body, r2.body);
        let loser = if r1.status == StatusCode::OK { &r2 } else { &r1 };
        assert_eq!(loser.code(), "RELATIONSHIP_CYCLE");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn verification_counts_failures_locks_and_resets() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let u = id(&user(&app, &c, json!({"email": "v@example.com"})).await);
    let questions = format!("/v1/users/{u}/verification-questions");
    let verify = format!("/v1/users/{u}/verifications");
    let set = json!({"questions": [{"code": "PET", "answer": "  Rex  the Dog "}, {"code": "CITY", "answer": "Paris"}]});
    let r = app.call(&c, Method::PUT, &questions, Some(set.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["verification"],
        json!({"question_codes": ["PET", "CITY"], "locked": false})
    );
    for bad in [
        json!({"questions": []}),
        json!({"questions": [{"code": "A", "answer": "x"}, {"code": "A", "answer": "y"}]}),
    ] {
        let r = app.call(&c, Method::PUT, &questions, Some(bad)).await;
        assert_eq!(r.code(), "VALIDATION_FAILED");
    }

    let r = app
        .call(
            &c,
            Method::POST,
            &verify,
            Some(json!({"code": "PET", "answer": "rex THE dog"})),
        )
        .await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({"verified": true})));
    let r = app
        .call(&c, Method::POST, &verify, Some(json!({"code": "SHOE", "answer": "42"})))
        .await;
    assert_eq!(
        (r.status, r.code(), r.body["attempts_remaining"].as_u64()),
        (StatusCode::UNPROCESSABLE_ENTITY, "UNKNOWN_QUESTION", Some(4))
    );
    for left in [3, 2, 1, 0] {
        let r = app
            .call(&c, Method::POST, &verify, Some(json!({"code": "PET", "answer": "tom"})))
            .await;
        assert_eq!(
            (r.code(), r.body["attempts_remaining"].as_u64()),
            ("VERIFICATION_FAILED", Some(left))
        );
    }
    let r = app
        .call(
            &c,
            Method::POST,
            &verify,
            Some(json!({"code": "PET", "answer": "rex the dog"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::LOCKED, "VERIFICATION_LOCKED"));
    let r = app.call(&c, Method::PUT, &questions, Some(set)).await;
    assert_eq!(r.body["verification"]["locked"], false);
    let r = app
        .call(
            &c,
            Method::POST,
            &verify,
            Some(json!({"code": "CITY", "answer": "paris"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_id = $1 AND event_type LIKE 'Verification%' ORDER BY sequence",
    )
    .bind(&u)
    .fetch_all(&app.pool)
    .await
    .expect("events");
    assert!(types.contains(&"VerificationSucceeded".to_string()));
    assert!(types.contains(&"VerificationFailed".to_string()));
    assert!(types.contains(&"VerificationLocked".to_string()));
    app.cleanup().await;
}

#[tokio::test]
async fn racing_attempts_cannot_bypass_the_lockout() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let u = id(&user(
        &app,
        &c,
        json!({"email": "v@example.com", "verification_questions": [{"code": "PET", "answer": "rex"}]}),
    )
    .await);
    let verify = format!("/v1/users/{u}/verifications");
    let results =
        join_all((0..12).map(|_| app.call(&c, Method::POST, &verify, Some(json!({"code": "PET", "answer": "tom"})))))
            .await;
    for r in &results {
        assert!(
            matches!(
                r.code(),
                "VERIFICATION_FAILED" | "VERIFICATION_LOCKED" | "CONCURRENT_MODIFICATION"
            ),
            "{}",
            r.body
        );
    }
    let failures: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'VerificationFailed'")
            .bind(&u)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert!(failures <= 5, "{failures} failures recorded");
    // Whatever the interleaving, five wrong answers in a row lock.
    for _ in failures..5 {
        app.call(&c, Method::POST, &verify, Some(json!({"code": "PET", "answer": "tom"})))
            .await;
    }
    let r = app
        .call(&c, Method::POST, &verify, Some(json!({"code": "PET", "answer": "rex"})))
        .await;
    assert_eq!(r.code(), "VERIFICATION_LOCKED");
    app.cleanup().await;
}

#[tokio::test]
async fn status_kyc_and_accounts() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let u = id(&user(&app, &c, json!({"email": "s@example.com"})).await);
    let status = format!("/v1/users/{u}/status");
    let r = app
        .call(
            &c,
            Method::POST,
            &status,
            Some(json!({"status": "blocked", "reason": "fraud review"})),
        )
        .await;
    assert_eq!(
        (r.body["status"].as_str(), r.body["status_reason"].as_str()),
        (Some("blocked"), Some("fraud review"))
    );
    let r = app
        .call(&c, Method::POST, &status, Some(json!({"status": "active"})))
        .await;
    assert_eq!(
        (r.body["status"].as_str(), r.body["status_reason"].clone()),
        (Some("active"), Value::Null)
    );
    let r = app
        .call(&c, Method::POST, &status, Some(json!({"status": "gone"})))
        .await;
    assert_eq!(r.code(), "VALIDATION_FAILED");
    let r = app
        .call(
            &c,
            Method::POST,
            &status,
            Some(json!({"status": "closed", "reason": "customer request"})),
        )
        .await;
    assert_eq!(r.body["status"], "closed");
    let r = app
        .call(&c, Method::POST, &status, Some(json!({"status": "active"})))
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "INVALID_USER_STATE"));

    let v = id(&user(&app, &c, json!({"email": "k@example.com"})).await);
    let kyc = format!("/v1/users/{v}/kyc");
    let r = app
        .call(
            &c,
            Method::PATCH,
            &kyc,
            Some(json!({"kyc_id": "kyc_1", "status": "pending"})),
        )
        .await;
    assert_eq!(r.body["kyc"], json!({"kyc_id": "kyc_1", "status": "pending"}));
    let r = app
        .call(&c, Method::PATCH, &kyc, Some(json!({"status": "approved"})))
        .await;
    assert_eq!(r.body["kyc"], json!({"kyc_id": "kyc_1", "status": "approved"}));
    let r = app
        .call(&c, Method::PATCH, &kyc, Some(json!({"status": "maybe"})))
        .await;
    assert_eq!(r.code(), "VALIDATION_FAILED");

    let account = json!({"account_id": "ACC-7", "account_id_type": "CARD_NUMBER_TOKEN", "status": "GOOD_STANDING",
                         "product_code": "P", "program_identifier": "G"});
    let r = app
        .call(
            &c,
            Method::POST,
            &format!("/v1/users/{v}/accounts"),
            Some(account.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["accounts"][0]["account_id"], "ACC-7");
    assert_eq!(r.body["accounts"][0]["household_id"], Value::Null);
    let w = id(&user(&app, &c, json!({"email": "w@example.com"})).await);
    let r = app
        .call(&c, Method::POST, &format!("/v1/users/{w}/accounts"), Some(account))
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "ACCOUNT_TAKEN"));
    let r = app
        .call(
            &c,
            Method::POST,
            &format!("/v1/users/{w}/accounts"),
            Some(json!({"account_id": "X"})),
        )
        .await;
    assert_eq!(r.code(), "VALIDATION_FAILED");
    app.cleanup().await;
}

/// Set every secret, then look everywhere a secret could leak: responses,
/// the read model, the event store's public data on Kafka.
#[tokio::test]
async fn no_secret_leaves_the_aggregate() {
    let logs = roster_tests::capture_logs();
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let password = "Sup3r-Secret-Passw0rd";
    let answer = "Maiden Name Answer";
    let mut responses = Vec::new();
    let u = user(
        &app,
        &c,
        json!({"email": "s@example.com", "password": password,
        "verification_questions": [{"code": "Q1", "answer": answer}]}),
    )
    .await;
    responses.push(u.clone());
    let uid = id(&u);
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/v1/users/{uid}"),
            json!({"password": "An0ther-Secret-Pass"}),
        ),
        (
            Method::PUT,
            format!("/v1/users/{uid}/verification-questions"),
            json!({"questions": [{"code": "Q2", "answer": "Second Answer Here"}]}),
        ),
        (
            Method::POST,
            format!("/v1/users/{uid}/verifications"),
            json!({"code": "Q2", "answer": "wrong answer given"}),
        ),
        (
            Method::POST,
            format!("/v1/users/{uid}/verifications"),
            json!({"code": "Q2", "answer": "second answer here"}),
        ),
    ] {
        responses.push(app.call(&c, method, &path, Some(body)).await.body);
    }
    assert_eq!(responses[1]["login"]["email"], "s@example.com");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    let records = app.consume(events as usize, Duration::from_secs(30)).await;
    assert_eq!(records.len() as i64, events);
    let view: String = sqlx::query_scalar("SELECT string_agg(doc::text, '') FROM user_view")
        .fetch_one(&app.pool)
        .await
        .expect("view");
    let mut haystack = view;
    for r in &responses {
        haystack.push_str(&r.to_string());
    }
    for r in &records {
        haystack.push_str(&r.value.to_string());
        haystack.push_str(&format!("{:?}", r.headers));
    }
    let logged = String::from_utf8_lossy(&logs.lock().expect("logs")).into_owned();
    assert!(logged.contains("/v1/users"), "logs were captured");
    let secrets = [
        password,
        "An0ther-Secret-Pass",
        answer,
        "Second Answer Here",
        "wrong answer given",
        "$argon2",
    ];
    // Field names of hashes may show in logs (migration SQL); values never.
    for (place, text, forbidden) in [
        (
            "responses, read model or Kafka",
            &haystack,
            &[&secrets[..], &["_hash"]].concat(),
        ),
        ("logs", &logged, &secrets.to_vec()),
    ] {
        let lower = text.to_lowercase();
        for secret in forbidden {
            if let Some(at) = lower.find(&secret.to_lowercase()) {
                let start = at.saturating_sub(200);
                panic!(
                    "{secret} leaked into {place}: ...{}...",
                    &lower[start..(at + 100).min(lower.len())]
                );
            }
        }
    }

    // Kafka keeps each user's events in sequence order.
    let sequences: Vec<i64> = records
        .iter()
        .filter(|r| r.key == uid)
        .map(|r| r.headers["ce_sequence"].parse().expect("sequence"))
        .collect();
    assert_eq!(sequences, (1..=events).collect::<Vec<_>>());
    let types: Vec<&str> = records.iter().map(|r| r.headers["ce_type"].as_str()).collect();
    assert!(types.contains(&"roster.user.password_changed.v1"), "{types:?}");
    assert!(types.contains(&"roster.user.verification_failed.v1"));
    app.cleanup().await;
}

/// Every answer of a command that appended events names its write with
/// `Roster-Consistency-Token`, whatever its status: a failed verification
/// (422, it appended `VerificationFailed`) and a failure after the commit
/// (500: the command runner panics right after it, failpoint
/// `command::committed`). Reading with either token sees the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_a_write_that_appended_names_it() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let u = id(&user(&app, &c, json!({"email": "token@example.com"})).await);
    let set = json!({"questions": [{"code": "PET", "answer": "rex"}]});
    let r = app
        .call(
            &c,
            Method::PUT,
            &format!("/v1/users/{u}/verification-questions"),
            Some(set),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let before: u64 = r.body["version"].as_u64().expect("version");

    let r = app
        .call(
            &c,
            Method::POST,
            &format!("/v1/users/{u}/verifications"),
            Some(json!({"code": "PET", "answer": "tom"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "VERIFICATION_FAILED")
    );
    let token = r
        .header("roster-consistency-token")
        .expect("a token on the 422")
        .to_string();
    assert_eq!(token, format!("user:{u}:{}", before + 1));
    let trail = app.get(&c, &format!("/v1/users/{u}/events?limit=100")).await;
    let last = trail.body["data"]
        .as_array()
        .and_then(|d| d.last())
        .cloned()
        .expect("entries");
    assert_eq!(last["event_type"], "VerificationFailed");

    fail::cfg("command::committed", "panic").expect("failpoint");
    let r = app
        .call(
            &c,
            Method::PATCH,
            &format!("/v1/users/{u}"),
            Some(json!({"first_name": "Afterwards"})),
        )
        .await;
    fail::remove("command::committed");
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    let token = r
        .header("roster-consistency-token")
        .expect("a token on the 500")
        .to_string();
    assert_eq!(token, format!("user:{u}:{}", before + 2));
    let read = app.get_after(&c, &format!("/v1/users/{u}"), &token).await;
    assert_eq!(read.body["first_name"], "Afterwards", "{}", read.body);
    app.cleanup().await;
}
