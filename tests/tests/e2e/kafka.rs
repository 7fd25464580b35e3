use reqwest::StatusCode;
use roster_tests::{spawn_app, spawn_app_with, Broker, Creds, TestApp};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

async fn enroll(app: &TestApp, c: &Creds, i: usize) -> String {
    let r = app
        .post(
            c,
            "/v1/users",
            &json!({"email": format!("u{i}@example.com"), "password": "secret-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn every_event_reaches_the_topic_with_cloudevents_headers() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(enroll(&app, &c, i).await);
    }
    let records = app.consume(5, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 5);
    let events: Vec<(String, uuid::Uuid)> =
        sqlx::query_as("SELECT aggregate_id, event_id FROM events ORDER BY position")
            .fetch_all(&app.pool)
            .await
            .expect("events");
    let by_key: HashMap<&str, &roster_tests::Record> = records.iter().map(|r| (r.key.as_str(), r)).collect();
    for (id, event_id) in &events {
        let r = by_key.get(id.as_str()).expect("one message per user, keyed by its id");
        let h = &r.headers;
        assert_eq!(h["ce_specversion"], "1.0");
        assert_eq!(h["ce_id"], event_id.to_string());
        assert_eq!(h["ce_source"], "roster/acme");
        assert_eq!(h["ce_type"], "roster.user.enrolled.v1");
        assert_eq!(h["ce_subject"], format!("users/{id}"));
        assert_eq!(h["ce_sequence"], "1");
        assert_eq!(h["content-type"], "application/json");
        assert!(h["ce_time"].ends_with('Z'));
        assert_eq!(r.value["user_id"], id.as_str());
        let text = r.value.to_string();
        assert!(!text.contains("argon2") && !text.contains("password_hash"), "{text}");
    }
    app.cleanup().await;
}

/// The API does not need the broker; once it is up, everything written
/// meanwhile arrives, in order.
#[tokio::test]
async fn enrollments_succeed_while_the_broker_is_down_and_arrive_later_in_order() {
    let addr = Broker::free_addr();
    let app = spawn_app_with(Some(addr.clone())).await;
    let c = app.creds("acme", None).await;
    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(enroll(&app, &c, i).await);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "writes did not wait for the broker"
    );
    let _broker = Broker::start(&addr).await;
    let records = app.consume(10, Duration::from_secs(60)).await;
    let mut keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
    keys.dedup();
    // Order per partition follows the store's order.
    let mut per_partition: HashMap<i32, Vec<&str>> = HashMap::new();
    for r in &records {
        per_partition.entry(r.partition).or_default().push(r.key.as_str());
    }
    for keys in per_partition.values() {
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| ids.iter().position(|id| id == k).expect("known user"))
            .collect();
        let mut sorted = positions.clone();
        sorted.sort();
        assert_eq!(positions, sorted, "messages of one partition are in store order");
    }
    let mut got: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
    got.sort();
    got.dedup();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "every enrollment delivered");
    app.cleanup().await;
}

/// The broker goes away while the service runs (a memory broker even
/// forgets the topic), writes keep succeeding, and once it is back every
/// event written meanwhile arrives, each user's events in order.
#[tokio::test]
async fn a_broker_restart_loses_nothing_written_meanwhile() {
    let addr = Broker::free_addr();
    let broker = Broker::start(&addr).await;
    let app = spawn_app_with(Some(addr.clone())).await;
    let c = app.creds("acme", None).await;
    let before = enroll(&app, &c, 0).await;
    let first = app.consume(1, Duration::from_secs(30)).await;
    assert_eq!(
        first.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        vec![before.as_str()]
    );

    drop(broker);
    let mut during = Vec::new();
    for i in 1..=5 {
        during.push(enroll(&app, &c, i).await);
    }
    let _broker = Broker::start(&addr).await;
    let records = app.consume(5, Duration::from_secs(60)).await;
    let mut got: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
    got.sort();
    got.dedup();
    let mut want = during.clone();
    want.sort();
    assert_eq!(got, want, "everything written while the broker was down is delivered");
    app.cleanup().await;
}
