//! Erasure (CONTRACT §3 "Erasure"): a user taken through many commands,
//! then erased, leaves none of its personal values in the database, the
//! server's log, Kafka or a replay; its id answers 410; the users around it
//! are unlinked, released or untouched as the contract says.

use reqwest::{Method, StatusCode};
use roster_tests::{
    brokers, consume_until, fresh_database_url, fresh_topic, hold_at, waiting_for, Record, Server, TestApp,
    TEST_MASTER_KEY,
};
use serde_json::{json, Value};
use std::time::Duration;

/// Every personal field of the contract, each with a value found nowhere
/// else.
struct Person {
    tag: String,
    values: Vec<String>,
}

impl Person {
    fn new() -> Person {
        let n = uuid::Uuid::new_v4().as_u128() % 90_000_000 + 10_000_000;
        let tag = format!("zq{n}");
        let values = [
            format!("First{tag}"),
            format!("Last{tag}"),
            format!("{tag}@erase.example"),
            format!("+9715{n}"),
            format!("+9714{n}"),
            format!("x{n}"),
            format!("EMP{tag}"),
            format!("{tag} Erasure Street"),
            format!("City{tag}"),
            format!("PC{tag}"),
            format!("{tag} Billing Road"),
            format!("EXT{tag}"),
            format!("ACC{tag}"),
            format!("ACCB{tag}"),
            format!("KYC{tag}"),
            format!("KYCB{tag}"),
            format!("reason{tag}"),
            format!("why{tag}"),
            format!("Renamed{tag}"),
            format!("answer{tag}"),
            format!("secondanswer{tag}"),
            format!("password{tag}"),
            // The date of birth, in the forms it could be stored.
            "1931-07-29".to_string(),
        ];
        Person {
            tag,
            values: values.to_vec(),
        }
    }

    fn v(&self, i: usize) -> &str {
        &self.values[i]
    }

    /// The values found in `text`.
    fn found_in(&self, text: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|v| text.contains(v.as_str()))
            .cloned()
            .collect()
    }

    fn enrollment(&self, parent: &str) -> Value {
        json!({
            "first_name": self.v(0), "last_name": self.v(1), "email": self.v(2), "mobile": self.v(3),
            "office_phone": self.v(4), "office_extension": self.v(5), "employee_id": self.v(6),
            "date_of_birth": "1931-07-29", "gender": "f", "nationality": "AE", "locale": "en-US",
            "address": {"line1": self.v(7), "city": self.v(8), "postal_code": self.v(9), "country": "AE"},
            "billing_address": {"line1": self.v(10), "city": self.v(8), "country": "AE"},
            "external_ref": {"id": self.v(11), "type": "CUSTOMER_ID"},
            "account": {"account_id": self.v(12), "account_id_type": "CARD_NUMBER_TOKEN", "status": "GOOD_STANDING",
                        "product_code": "MC-REWARDS", "program_identifier": "PRG-1"},
            "kyc": {"kyc_id": self.v(14), "status": "pending"},
            "status": "active", "status_reason": self.v(16),
            "password": self.v(21),
            "verification_questions": [{"code": "PET", "answer": self.v(19)}],
            "parent_user_id": parent,
        })
    }
}

fn ok(r: &roster_tests::Res, status: StatusCode) {
    assert_eq!(r.status, status, "{}", r.body);
}

fn gone(r: &roster_tests::Res, what: &str) {
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::GONE, "USER_ERASED"),
        "{what}: {}",
        r.body
    );
}

async fn pg_dump(database_url: &str) -> String {
    let out = tokio::process::Command::new("pg_dump")
        .args(["--data-only", database_url])
        .output()
        .await
        .expect("pg_dump runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("text")
}

/// The user's messages as their data shows them.
fn text_of(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| r.value.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn an_erased_user_leaves_no_personal_value_anywhere() {
    let (db, topic) = (fresh_database_url(), fresh_topic());
    let mut server = Server::start_logging(&db, &brokers(), &topic, "erasure", "info").await;
    let app = TestApp::attach(&server, &db, &brokers(), &topic).await;
    let c = app.creds("acme", None).await;
    let writer = app
        .creds("acme", Some(&["users:read", "users:write", "cards:write"]))
        .await;
    let globex = app.creds("globex", None).await;
    let p = Person::new();

    // Around the user: a parent, a child, a bystander, a household, a card product.
    let parent = app
        .enroll(&c, json!({"email": format!("parent-{}@example.com", p.tag)}))
        .await;
    let bystander = app
        .enroll(
            &c,
            json!({"email": format!("bystander-{}@example.com", p.tag), "first_name": "Bystander"}),
        )
        .await;
    let r = app
        .post(
            &c,
            "/v1/card-products",
            &json!({"name": "V", "card_type": "virtual", "issuer": "marqeta", "default": true}),
        )
        .await;
    ok(&r, StatusCode::CREATED);

    // The user, through many commands.
    let id = app.enroll(&c, p.enrollment(&parent)).await;
    let user = format!("/v1/users/{id}");
    let child = app
        .enroll(
            &c,
            json!({"email": format!("child-{}@example.com", p.tag), "parent_user_id": id}),
        )
        .await;
    ok(
        &app.call(&c, Method::PATCH, &user, Some(json!({"first_name": p.v(18)})))
            .await,
        StatusCode::OK,
    );
    ok(
        &app.call(
            &c,
            Method::PATCH,
            &user,
            Some(json!({"first_name": p.v(0), "mobile": null})),
        )
        .await,
        StatusCode::OK,
    );
    ok(
        &app.call(&c, Method::PATCH, &user, Some(json!({"mobile": p.v(3)})))
            .await,
        StatusCode::OK,
    );
    let account = json!({"account_id": p.v(13), "account_id_type": "T", "status": "S", "product_code": "P",
                         "program_identifier": "G"});
    ok(
        &app.post(&c, &format!("{user}/accounts"), &account).await,
        StatusCode::CREATED,
    );
    ok(
        &app.post(
            &c,
            &format!("{user}/status"),
            &json!({"status": "blocked", "reason": p.v(17)}),
        )
        .await,
        StatusCode::OK,
    );
    ok(
        &app.post(&c, &format!("{user}/status"), &json!({"status": "active"}))
            .await,
        StatusCode::OK,
    );
    ok(
        &app.call(
            &c,
            Method::PATCH,
            &format!("{user}/kyc"),
            Some(json!({"kyc_id": p.v(15), "status": "approved"})),
        )
        .await,
        StatusCode::OK,
    );
    let wrong = app
        .post(
            &c,
            &format!("{user}/verifications"),
            &json!({"code": "PET", "answer": "nope"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    ok(
        &app.post(
            &c,
            &format!("{user}/verifications"),
            &json!({"code": "PET", "answer": p.v(19)}),
        )
        .await,
        StatusCode::OK,
    );
    let questions = json!({"questions": [{"code": "CITY", "answer": p.v(20)}]});
    ok(
        &app.call(
            &c,
            Method::PUT,
            &format!("{user}/verification-questions"),
            Some(questions),
        )
        .await,
        StatusCode::OK,
    );
    let h = app.post(&c, "/v1/households", &json!({"name": "Family"})).await;
    ok(&h, StatusCode::CREATED);
    let household = format!("/v1/households/{}", h.body["id"].as_str().expect("id"));
    for (who, account) in [(&id, p.v(12)), (&id, p.v(13))] {
        let r = app
            .post(
                &c,
                &format!("{household}/members"),
                &json!({"user_id": who, "account_id": account}),
            )
            .await;
        ok(&r, StatusCode::OK);
    }
    let card = app.post(&c, &format!("{user}/cards"), &json!({})).await;
    ok(&card, StatusCode::CREATED);
    let idem = app
        .request(Some(&c), Method::PATCH, &user)
        .header("idempotency-key", format!("k-{}", p.tag))
        .json(&json!({"last_name": p.v(1)}));
    ok(&TestApp::send(idem).await, StatusCode::OK);

    // Erasure needs its scope, and every card terminated.
    let r = app.call(&writer, Method::DELETE, &user, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let r = app.call(&c, Method::DELETE, &user, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "CARDS_NOT_TERMINATED"),
        "{}",
        r.body
    );
    let last4 = card.body["last4"].as_str().expect("last4");
    let r = app
        .post(
            &c,
            &format!("{user}/cards/terminate"),
            &json!({"pan": last4, "reason_code": "LOST"}),
        )
        .await;
    ok(&r, StatusCode::OK);
    let trail_before = app.get(&c, &format!("{user}/events?limit=100")).await;
    let events_before = trail_before.body["data"].as_array().expect("entries").len();

    // The erasure.
    let r = app.call(&globex, Method::DELETE, &user, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "USER_NOT_FOUND"));
    let erased = app.call(&c, Method::DELETE, &user, None).await;
    ok(&erased, StatusCode::OK);
    assert_eq!(erased.body["id"], id.as_str());
    assert!(erased.body["erased_at"].is_string(), "{}", erased.body);
    assert_eq!(erased.body.as_object().expect("object").len(), 2, "{}", erased.body);
    let token = erased.headers["roster-consistency-token"]
        .to_str()
        .expect("token")
        .to_string();

    // Its id is gone for its company, unknown to the others.
    gone(&app.get(&c, &user).await, "GET");
    gone(&app.get_after(&c, &user, &token).await, "GET after");
    gone(&app.get(&c, &format!("{user}?version=1")).await, "GET ?version");
    gone(
        &app.get(&c, &format!("{user}?as_of=2099-01-01T00:00:00Z")).await,
        "GET ?as_of",
    );
    gone(&app.get(&c, &format!("{user}/relationships")).await, "relationships");
    gone(
        &app.get(&c, &format!("{user}:getLinkedRelationships")).await,
        "relationships alias",
    );
    gone(&app.get(&c, &format!("{user}/cards")).await, "cards");
    gone(
        &app.call(&c, Method::PATCH, &user, Some(json!({"first_name": "X"})))
            .await,
        "PATCH",
    );
    gone(
        &app.post(&c, &format!("{user}/status"), &json!({"status": "active"}))
            .await,
        "status",
    );
    gone(&app.post(&c, &format!("{user}/accounts"), &account).await, "accounts");
    gone(&app.post(&c, &format!("{user}/cards"), &json!({})).await, "order card");
    gone(
        &app.call(
            &c,
            Method::PUT,
            &format!("{user}/parent"),
            Some(json!({"parent_user_id": parent})),
        )
        .await,
        "link",
    );
    gone(&app.call(&c, Method::DELETE, &user, None).await, "second DELETE");
    let r = app.get(&globex, &user).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "USER_NOT_FOUND"));

    // In no list, search or relationship; its child unlinked, its household
    // without it, its parent without it as a child.
    let list = app.get_after(&c, "/v1/users?limit=100", &token).await;
    let ids: Vec<&str> = list.body["data"]
        .as_array()
        .expect("page")
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert!(
        !ids.contains(&id.as_str()) && ids.contains(&bystander.as_str()),
        "{ids:?}"
    );
    for search in [
        json!({"name": p.v(0)}),
        json!({"email": p.v(2)}),
        json!({"mobile": p.v(3)}),
    ] {
        let r = app.post(&c, "/v1/users:search", &search).await;
        assert_eq!(r.body["data"], json!([]), "{search}");
    }
    let kid = app.get_after(&c, &format!("/v1/users/{child}"), &token).await;
    assert_eq!(kid.body["parent_user_id"], Value::Null, "{}", kid.body);
    let kid_trail = app.get(&c, &format!("/v1/users/{child}/events?limit=100")).await;
    let last = kid_trail.body["data"]
        .as_array()
        .expect("entries")
        .last()
        .cloned()
        .expect("an entry");
    assert_eq!(last["event_type"], "ParentUnlinked");
    let up = app
        .get_after(&c, &format!("/v1/users/{parent}/relationships"), &token)
        .await;
    assert_eq!(up.body["children"], json!([]), "{}", up.body);
    let hh = app.get(&c, &household).await;
    assert_eq!(hh.body["members"], json!([]), "{}", hh.body);

    // The audit trail keeps every entry, without its data.
    let trail = app.get(&c, &format!("{user}/events?limit=100")).await;
    ok(&trail, StatusCode::OK);
    let entries = trail.body["data"].as_array().expect("entries");
    assert_eq!(entries.len(), events_before + 1);
    let (last, earlier) = entries.split_last().expect("entries");
    for e in earlier {
        assert_eq!((&e["data"], &e["erased"]), (&Value::Null, &json!(true)), "{e}");
        for field in [
            "sequence",
            "event_id",
            "event_type",
            "event_version",
            "occurred_at",
            "actor",
            "request_id",
        ] {
            assert!(!e[field].is_null(), "{field} kept: {e}");
        }
    }
    assert_eq!(last["event_type"], "UserErased");
    assert_eq!(
        last["data"],
        json!({"user_id": id, "company_id": "acme", "erased_at": erased.body["erased_at"]})
    );

    // Kafka: the erasure, then a tombstone, on the user's key.
    app.settle(Duration::from_secs(30)).await;
    let records = consume_until(&brokers(), &topic, Duration::from_secs(30), |rs| {
        rs.iter().any(|r| r.key == id && r.tombstone)
    })
    .await;
    let mine: Vec<&Record> = records.iter().filter(|r| r.key == id).collect();
    let (tombstone, rest) = mine.split_last().expect("messages of the user");
    assert!(tombstone.tombstone, "the last message of the user is a tombstone");
    let erased_event = rest.last().expect("the erasure");
    assert_eq!(erased_event.headers["ce_type"], "roster.user.erased.v1");
    assert_eq!(erased_event.value, last["data"]);

    // Nothing of it in the database, nor in what the server logged.
    let dump = pg_dump(&db).await;
    assert!(
        dump.contains(&format!("parent-{}@example.com", p.tag)),
        "the dump holds the read models"
    );
    assert_eq!(p.found_in(&dump), Vec::<String>::new(), "in pg_dump --data-only");
    assert_eq!(p.found_in(&server.logs()), Vec::<String>::new(), "in the server log");

    // Published again from the start, after the erasure: nothing of it.
    server.terminate();
    assert!(server.exited_within(Duration::from_secs(20)).await.is_some());
    sqlx::query("DELETE FROM subscriber_checkpoints WHERE name = 'kafka_publisher'")
        .execute(&app.pool)
        .await
        .expect("checkpoint reset");
    let again = fresh_topic();
    let server = Server::start_logging(&db, &brokers(), &again, "erasure-again", "info").await;
    let app = TestApp::attach(&server, &db, &brokers(), &again).await;
    app.settle(Duration::from_secs(60)).await;
    let republished = consume_until(&brokers(), &again, Duration::from_secs(30), |rs| {
        rs.iter().any(|r| r.key == id && r.tombstone)
    })
    .await;
    assert!(republished
        .iter()
        .any(|r| r.key == id && !r.tombstone && r.value.is_null()));
    assert_eq!(
        p.found_in(&text_of(&republished)),
        Vec::<String>::new(),
        "in Kafka after the erasure"
    );

    // A replay rebuilds every read model with the user still erased.
    let replay = tokio::process::Command::new(roster_tests::roster_bin())
        .arg("replay")
        .env("DATABASE_URL", &db)
        .env("ROSTER_MASTER_KEY", TEST_MASTER_KEY)
        .output()
        .await
        .expect("replay runs");
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    assert_eq!(
        p.found_in(&pg_dump(&db).await),
        Vec::<String>::new(),
        "in pg_dump after replay"
    );
    gone(&app.get(&c, &user).await, "GET after replay");
    let hh = app.get(&c, &household).await;
    assert_eq!(hh.body["members"], json!([]), "{}", hh.body);
    let by = app.get(&c, &format!("/v1/users/{bystander}")).await;
    assert_eq!(
        (by.status, &by.body["first_name"]),
        (StatusCode::OK, &json!("Bystander"))
    );
    assert!(!server.logs().is_empty());
    assert_eq!(
        p.found_in(&server.logs()),
        Vec::<String>::new(),
        "in the log of the second server"
    );

    // Its email, external reference and account ids are free again.
    let again = app
        .post(
            &c,
            "/v1/users",
            &json!({"email": p.v(2), "external_ref": {"id": p.v(11), "type": "CUSTOMER_ID"},
                    "account": {"account_id": p.v(12), "account_id_type": "T", "status": "S",
                                "product_code": "P", "program_identifier": "G"}}),
        )
        .await;
    ok(&again, StatusCode::CREATED);
    let r = app
        .post(
            &c,
            &format!("/v1/users/{}/accounts", again.body["id"].as_str().expect("id")),
            &account,
        )
        .await;
    ok(&r, StatusCode::CREATED);
    drop(server);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_and_a_membership_racing_an_erasure_wait_for_it_and_are_refused() {
    let app = roster_tests::spawn_app().await;
    let c = app.creds("acme", None).await;
    let account = json!({"account_id": "ACC-RACE", "account_id_type": "T", "status": "S", "product_code": "P",
                         "program_identifier": "G"});
    let user = app
        .enroll(&c, json!({"email": "racer@example.com", "account": account}))
        .await;
    let child = app.enroll(&c, json!({"email": "child@example.com"})).await;
    let h = app.post(&c, "/v1/households", &json!({})).await;
    let household = h.body["id"].as_str().expect("id").to_string();

    let (release, mut reached) = hold_at("store::erasing");
    let erase = tokio::spawn(TestApp::send(app.request(
        Some(&c),
        Method::DELETE,
        &format!("/v1/users/{user}"),
    )));
    reached.recv().await.expect("the erasure is held");
    // Both start while the erasure holds its locks, and must wait for it.
    let link = tokio::spawn(TestApp::send(
        app.request(Some(&c), Method::PUT, &format!("/v1/users/{child}/parent"))
            .json(&json!({"parent_user_id": user})),
    ));
    let join = tokio::spawn(TestApp::send(
        app.request(Some(&c), Method::POST, &format!("/v1/households/{household}/members"))
            .json(&json!({"user_id": user, "account_id": "ACC-RACE"})),
    ));
    let blocked = waiting_for(&app, 2).await;
    assert!(
        blocked >= 2,
        "the link and the membership wait for the erasure ({blocked} waiting)"
    );
    assert!(!link.is_finished() && !join.is_finished());
    release.send(()).expect("released");
    fail::remove("store::erasing");

    let erased = erase.await.expect("erase");
    ok(&erased, StatusCode::OK);
    let link = link.await.expect("link");
    assert_eq!(
        (link.status, link.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "PARENT_NOT_FOUND"),
        "{}",
        link.body
    );
    // Refused as any process answers a membership of an erased user.
    let join = join.await.expect("join");
    assert_eq!(
        (join.status, join.code()),
        (StatusCode::GONE, "USER_ERASED"),
        "{}",
        join.body
    );
    let kid = app.get(&c, &format!("/v1/users/{child}")).await;
    assert_eq!(kid.body["parent_user_id"], Value::Null);
    // Read with the creation's token: nothing else waits for the view.
    let created = h.header("roster-consistency-token").expect("token").to_string();
    let hh = app
        .get_after(&c, &format!("/v1/households/{household}"), &created)
        .await;
    assert_eq!(hh.body["members"], json!([]), "{}", hh.body);
    app.cleanup().await;
}

/// The erasure's other appends share its transaction.
#[tokio::test]
async fn the_erasure_and_its_unlinks_and_removals_are_one_transaction() {
    let app = roster_tests::spawn_app().await;
    let c = app.creds("acme", None).await;
    let account = json!({"account_id": "ACC-TX", "account_id_type": "T", "status": "S", "product_code": "P",
                         "program_identifier": "G"});
    let user = app
        .enroll(&c, json!({"email": "tx@example.com", "account": account}))
        .await;
    for i in 0..3 {
        app.enroll(
            &c,
            json!({"email": format!("kid{i}@example.com"), "parent_user_id": user}),
        )
        .await;
    }
    let h = app.post(&c, "/v1/households", &json!({})).await;
    let household = h.body["id"].as_str().expect("id").to_string();
    let r = app
        .post(
            &c,
            &format!("/v1/households/{household}/members"),
            &json!({"user_id": user, "account_id": "ACC-TX"}),
        )
        .await;
    ok(&r, StatusCode::OK);
    ok(
        &app.call(&c, Method::DELETE, &format!("/v1/users/{user}"), None).await,
        StatusCode::OK,
    );
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, xmin::text FROM events
          WHERE event_type IN ('UserErased', 'ParentUnlinked', 'HouseholdMemberRemoved') ORDER BY position",
    )
    .fetch_all(&app.pool)
    .await
    .expect("events");
    let types: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        types,
        [
            "ParentUnlinked",
            "ParentUnlinked",
            "ParentUnlinked",
            "HouseholdMemberRemoved",
            "UserErased"
        ]
    );
    assert!(rows.iter().all(|r| r.1 == rows[0].1), "one transaction: {rows:?}");
    app.cleanup().await;
}

/// The publisher's side of erasure's order (CONTRACT §3 "Erasure"): an
/// erasure waits for a batch being handed over (read with the user's values
/// opened, not yet given to the producer), so that once the erasure has
/// committed nothing opened before it is handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_waits_for_a_publisher_batch_being_handed_over() {
    let app = roster_tests::spawn_app().await;
    let c = app.creds("acme", None).await;
    let user = app
        .enroll(&c, json!({"email": "pub@example.com", "first_name": "Publio"}))
        .await;
    // The publisher has caught up: the next batch it reads is the PATCH's.
    for _ in 0..400 {
        let behind: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events e, subscriber_checkpoints c
                             WHERE c.name = 'kafka_publisher'
                               AND e.position > c.position)
                 OR NOT EXISTS (SELECT 1 FROM subscriber_checkpoints WHERE name = 'kafka_publisher')",
        )
        .fetch_one(&app.pool)
        .await
        .expect("checkpoint");
        if !behind {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (release, mut reached) = hold_at("publisher::handing_over");
    ok(
        &app.call(
            &c,
            Method::PATCH,
            &format!("/v1/users/{user}"),
            Some(json!({"first_name": "Publius"})),
        )
        .await,
        StatusCode::OK,
    );
    reached.recv().await.expect("the publisher holds the PATCH's batch");
    let erase = tokio::spawn(TestApp::send(app.request(
        Some(&c),
        Method::DELETE,
        &format!("/v1/users/{user}"),
    )));
    let blocked = waiting_for(&app, 1).await;
    assert!(blocked >= 1, "the erasure waits for the hand-over");
    assert!(!erase.is_finished());
    release.send(()).expect("released");
    fail::remove("publisher::handing_over");
    // A batch that reached the point meanwhile goes on too.
    drop(release);
    ok(&erase.await.expect("erase"), StatusCode::OK);

    let records = consume_until(&brokers(), &app.topic, Duration::from_secs(30), |rs| {
        rs.iter().any(|r| r.tombstone && r.key == user)
    })
    .await;
    let mine: Vec<(&str, &Value)> = records
        .iter()
        .filter(|r| r.key == user && !r.tombstone)
        .map(|r| {
            (
                r.headers.get("ce_type").map(String::as_str).unwrap_or_default(),
                &r.value,
            )
        })
        .collect();
    let types: Vec<&str> = mine.iter().map(|m| m.0).collect();
    assert_eq!(
        types,
        [
            "roster.user.enrolled.v1",
            "roster.user.updated.v1",
            "roster.user.erased.v1"
        ]
    );
    // The update was opened before the erasure and handed over before it
    // committed: published as read.
    assert!(mine[1].1.to_string().contains("Publius"), "{}", mine[1].1);
    assert!(records.last().is_some_and(|r| r.tombstone && r.key == user));
    app.cleanup().await;
}

/// The user view lags (its row of the user is locked, so the projector
/// waits): the erased user is already in no list, search or relationship
/// answer (CONTRACT §3), the registry deciding.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_view_lists_searches_and_relates_no_erased_user() {
    let app = roster_tests::spawn_app().await;
    let c = app.creds("acme", None).await;
    let parent = app.enroll(&c, json!({"email": "lag-parent@example.com"})).await;
    let r = app
        .post(
            &c,
            "/v1/users",
            &json!({"email": "lag-child@example.com", "first_name": "Lagrange", "parent_user_id": parent}),
        )
        .await;
    ok(&r, StatusCode::CREATED);
    let child = r.body["id"].as_str().expect("id").to_string();
    let g = app
        .post(
            &c,
            "/v1/users",
            &json!({"email": "lag-grandchild@example.com", "parent_user_id": child}),
        )
        .await;
    ok(&g, StatusCode::CREATED);
    let grandchild = g.body["id"].as_str().expect("id").to_string();
    // The last write: once it is in the view, so are the others.
    let token = g.header("roster-consistency-token").expect("token").to_string();
    let listed = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .expect("page")
            .iter()
            .filter_map(|u| u["id"].as_str().map(String::from))
            .collect()
    };
    let children = |rel: &Value| -> Vec<String> {
        rel["children"]
            .as_array()
            .expect("children")
            .iter()
            .filter_map(|u| u["id"].as_str().map(String::from))
            .collect()
    };
    let before = app.get_after(&c, "/v1/users?limit=100", &token).await;
    assert!(listed(&before.body).contains(&child));

    let mut holder = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM user_view WHERE id = $1::uuid FOR UPDATE")
        .bind(&child)
        .execute(&mut *holder)
        .await
        .expect("lock the view's row");
    ok(
        &app.call(&c, Method::DELETE, &format!("/v1/users/{child}"), None).await,
        StatusCode::OK,
    );
    let blocked = waiting_for(&app, 1).await;
    assert!(blocked >= 1, "the projector waits for the view's row");
    let in_view: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM user_view WHERE id = $1::uuid)")
        .bind(&child)
        .fetch_one(&app.pool)
        .await
        .expect("view");
    assert!(in_view, "the view still holds the erased user");

    let list = app.get(&c, "/v1/users?limit=100").await;
    ok(&list, StatusCode::OK);
    assert!(!listed(&list.body).contains(&child), "{}", list.body);
    let listed_children = app.get(&c, &format!("/v1/users?parent_user_id={parent}")).await;
    assert!(
        !listed(&listed_children.body).contains(&child),
        "{}",
        listed_children.body
    );
    for search in [json!({"email": "lag-child@example.com"}), json!({"name": "Lagrange"})] {
        let r = app.post(&c, "/v1/users:search", &search).await;
        assert_eq!(r.body["data"], json!([]), "{search}: {}", r.body);
    }
    let up = app.get(&c, &format!("/v1/users/{parent}/relationships")).await;
    ok(&up, StatusCode::OK);
    assert_eq!(children(&up.body), Vec::<String>::new(), "{}", up.body);
    assert_eq!(up.body["descendants"], json!([]), "{}", up.body);
    let down = app.get(&c, &format!("/v1/users/{grandchild}/relationships")).await;
    ok(&down, StatusCode::OK);
    assert_eq!(down.body["parent"], Value::Null, "{}", down.body);
    assert_eq!(down.body["ancestors"], json!([]), "{}", down.body);
    holder.rollback().await.expect("release");
    app.cleanup().await;
}

/// A response computed before an erasure and stored after it (held at the
/// failpoint `idempotency::storing` while the erasure commits) keeps
/// nothing of the person, and its key does not replay it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_response_stored_after_an_erasure_keeps_nothing_of_the_person() {
    let app = roster_tests::spawn_app().await;
    let c = app.creds("acme", None).await;
    let r = app
        .post(
            &c,
            "/v1/users",
            &json!({"email": "stored-late@example.com", "first_name": "Latimer"}),
        )
        .await;
    ok(&r, StatusCode::CREATED);
    let user = r.body["id"].as_str().expect("id").to_string();
    let token = r.header("roster-consistency-token").expect("token").to_string();
    app.get_after(&c, &format!("/v1/users/{user}"), &token).await;

    let search = || {
        app.request(Some(&c), Method::POST, "/v1/users:search")
            .header("idempotency-key", "late-search")
            .json(&json!({"email": "stored-late@example.com"}))
    };
    let (release, mut reached) = hold_at("idempotency::storing");
    let first = tokio::spawn(TestApp::send(search()));
    reached.recv().await.expect("the search's response is held");
    fail::remove("idempotency::storing");
    ok(
        &app.call(&c, Method::DELETE, &format!("/v1/users/{user}"), None).await,
        StatusCode::OK,
    );
    release.send(()).expect("released");
    let first = first.await.expect("search");
    ok(&first, StatusCode::OK);
    assert!(
        first.body.to_string().contains("Latimer"),
        "computed before: {}",
        first.body
    );

    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM idempotency_keys
          WHERE position(convert_to('Latimer', 'UTF8') IN coalesce(body, ''::bytea)) > 0
             OR position(convert_to($1, 'UTF8') IN coalesce(body, ''::bytea)) > 0",
    )
    .bind(&user)
    .fetch_one(&app.pool)
    .await
    .expect("stored responses");
    assert_eq!(kept, 0, "no stored response names the erased user");
    let again = TestApp::send(search()).await;
    ok(&again, StatusCode::OK);
    assert_eq!(again.body["data"], json!([]), "{}", again.body);
    app.cleanup().await;
}

/// The erasure finds the stored responses that name its user through an
/// index, not by reading every body.
#[tokio::test]
async fn the_erasure_finds_stored_responses_through_an_index() {
    let app = roster_tests::spawn_app_with(None).await;
    sqlx::query(
        "INSERT INTO idempotency_keys (client_id, key, fingerprint, status, body, subjects)
         SELECT 'c', 'k' || n, '\\x00', 200, convert_to(json_build_object('id', id)::text, 'UTF8'), ARRAY[id]
           FROM (SELECT n, gen_random_uuid() AS id FROM generate_series(1, 50000) n) s",
    )
    .execute(&app.pool)
    .await
    .expect("stored responses");
    sqlx::query("ANALYZE idempotency_keys")
        .execute(&app.pool)
        .await
        .expect("analyze");
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {}", roster_command::store::FORGET_RESPONSES))
        .bind(uuid::Uuid::now_v7())
        .bind("c")
        .bind("k1")
        .fetch_all(&app.pool)
        .await
        .expect("plan");
    let plan = plan.join("\n");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(plan.contains("idempotency_keys_subjects"), "{plan}");
    app.cleanup().await;
}

/// Two processes give the same answer for the same stored state: after B
/// erases a user, A (which still keeps the user's aggregate and data key
/// from its own commands) answers a membership of the user's account and a
/// change of the user as B does, 410, where it used to decide on what it
/// kept (a membership: 422 `ACCOUNT_NOT_OWNED`; a taken email: 409).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_answer_alike_after_an_erasure() {
    let a = roster_tests::spawn_app().await;
    let b = a.beside().await;
    let c = a.creds("acme", None).await;
    let user = a
        .enroll(
            &c,
            json!({"email": "both@example.com", "account": roster_tests::account("ACC-BOTH")}),
        )
        .await;
    a.enroll(&c, json!({"email": "taken@example.com"})).await;
    let h = a.post(&c, "/v1/households", &json!({})).await;
    let household = h.body["id"].as_str().expect("id").to_string();
    // A keeps the user as it committed it.
    ok(
        &a.call(
            &c,
            Method::PATCH,
            &format!("/v1/users/{user}"),
            Some(json!({"first_name": "Kept"})),
        )
        .await,
        StatusCode::OK,
    );

    ok(
        &b.call(&c, Method::DELETE, &format!("/v1/users/{user}"), None).await,
        StatusCode::OK,
    );
    // The change first: through A it is decided on the kept aggregate and
    // sealed under the kept key; then the membership, through a process that
    // (before the fix) kept the key.
    for (name, app) in [("B", &b), ("A", &a)] {
        let change = app
            .call(
                &c,
                Method::PATCH,
                &format!("/v1/users/{user}"),
                Some(json!({"email": "taken@example.com"})),
            )
            .await;
        assert_eq!(
            (change.status, change.code()),
            (StatusCode::GONE, "USER_ERASED"),
            "change through {name}: {}",
            change.body
        );
        let join = app
            .post(
                &c,
                &format!("/v1/households/{household}/members"),
                &json!({"user_id": user, "account_id": "ACC-BOTH"}),
            )
            .await;
        assert_eq!(
            (join.status, join.code()),
            (StatusCode::GONE, "USER_ERASED"),
            "membership through {name}: {}",
            join.body
        );
    }
    b.stop().await;
    a.cleanup().await;
}
