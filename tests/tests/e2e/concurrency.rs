//! Many commands on one stream at once: each acknowledged change is exactly
//! one append, and conflicts are retried inside the service a bounded
//! number of times, then reported as 409 `CONCURRENT_MODIFICATION`.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use roster_command::runner::MAX_ATTEMPTS;
use roster_tests::{spawn_app, TestApp};
use serde_json::json;

/// The event at `sequence` of `user`'s stream: type and payload text.
/// The type and (opened) data of the user's event `sequence`, from its
/// audit trail.
async fn event_at(app: &TestApp, creds: &roster_tests::Creds, user: &str, sequence: u64) -> (String, String) {
    let page = app
        .get(
            creds,
            &format!("/v1/users/{user}/events?limit=1&after={}", audit_cursor(sequence - 1)),
        )
        .await;
    let entry = &page.body["data"][0];
    assert_eq!(
        entry["sequence"], sequence,
        "no event {sequence} in {user}'s stream: {}",
        page.body
    );
    (
        entry["event_type"].as_str().unwrap_or_default().to_string(),
        entry["data"].to_string(),
    )
}

/// The audit trail's cursor after `sequence`.
fn audit_cursor(sequence: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode((sequence as i64).to_be_bytes())
}

#[tokio::test]
async fn concurrent_updates_status_changes_and_card_orders_on_one_user_all_land() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let user = app
        .enroll(&c, json!({"email": "busy@example.com", "status": "active"}))
        .await;
    let r = app
        .post(
            &c,
            "/v1/card-products",
            &json!({"name": "Web", "card_type": "virtual", "issuer": "dipocket", "default": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // 16 updates, 16 card orders and 8 status changes (each with its own
    // reason, so none is a no-op; card orders meeting `inactive` are refused).
    let mut requests = Vec::new();
    for i in 0..16 {
        requests.push((
            "update",
            i,
            Method::PATCH,
            format!("/v1/users/{user}"),
            json!({"last_name": format!("Name{i}")}),
        ));
        requests.push(("card", i, Method::POST, format!("/v1/users/{user}/cards"), json!({})));
    }
    for i in 0..8 {
        requests.push((
            "status",
            i,
            Method::POST,
            format!("/v1/users/{user}/status"),
            json!({"status": if i % 2 == 0 { "inactive" } else { "active" }, "reason": format!("Reason{i}")}),
        ));
    }
    let responses = join_all(
        requests
            .iter()
            .map(|(_, _, m, path, body)| app.call(&c, m.clone(), path, Some(body.clone()))),
    )
    .await;

    let mut acked = 0;
    let mut refused: std::collections::BTreeMap<&str, usize> = Default::default();
    for ((kind, i, _, _, _), r) in requests.iter().zip(&responses) {
        if !r.status.is_success() {
            // Conflicts past the bound, or a card order that met an
            // inactive user: both are refusals that appended nothing.
            assert!(
                matches!(r.code(), "CONCURRENT_MODIFICATION" | "INVALID_USER_STATE"),
                "{kind} {i}: {} {}",
                r.status,
                r.body
            );
            *refused.entry(r.code()).or_default() += 1;
            continue;
        }
        acked += 1;
        match *kind {
            "update" | "status" => {
                let version = r.body["version"].as_u64().expect("version");
                let (event_type, payload) = event_at(&app, &c, &user, version).await;
                let (want_type, want_text) = if *kind == "update" {
                    ("UserUpdated", format!("Name{i}"))
                } else {
                    ("StatusChanged", format!("Reason{i}"))
                };
                assert_eq!(event_type, want_type, "{kind} {i}");
                assert!(payload.contains(&want_text), "{kind} {i}: {payload}");
            }
            _ => {
                let card = r.body["id"].as_str().expect("card id");
                let found: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'CardOrdered'
                        AND payload::text LIKE '%' || $2 || '%'",
                )
                .bind(&user)
                .bind(card)
                .fetch_one(&app.pool)
                .await
                .expect("count");
                assert_eq!(found, 1, "card {card} ordered once");
            }
        }
    }
    // Every event after the enrollment is one acknowledged command: nothing
    // refused left a trace, nothing acknowledged is missing.
    let appended: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(&user)
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(
        appended as usize,
        1 + acked,
        "acknowledged {acked}, refused {refused:?}"
    );
    eprintln!("acknowledged {acked}, refused {refused:?}");
    for kind in ["update", "status"] {
        let landed = requests
            .iter()
            .zip(&responses)
            .filter(|((k, ..), r)| *k == kind && r.status.is_success())
            .count();
        assert!(landed > 0, "no {kind} landed");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_conflict_that_never_clears_is_retried_a_bounded_number_of_times_then_409() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let user = app.enroll(&c, json!({"email": "x@example.com"})).await;
    // Every append to this stream now fails as if another writer won the
    // race; a sequence (not rolled back) counts the attempts.
    for sql in [
        "CREATE SEQUENCE test_attempts".to_string(),
        "CREATE FUNCTION test_conflict() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM nextval('test_attempts'); RAISE unique_violation USING MESSAGE = 'injected conflict'; END $$"
            .to_string(),
        format!(
            "CREATE TRIGGER test_conflict BEFORE INSERT ON events FOR EACH ROW
             WHEN (NEW.aggregate_id = '{user}') EXECUTE FUNCTION test_conflict()"
        ),
    ] {
        sqlx::query(&sql).execute(&app.pool).await.expect("fault installed");
    }
    let path = format!("/v1/users/{user}");
    let r = app
        .call(&c, Method::PATCH, &path, Some(json!({"first_name": "Ann"})))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "CONCURRENT_MODIFICATION"),
        "{}",
        r.body
    );
    let attempts: i64 = sqlx::query_scalar("SELECT last_value FROM test_attempts")
        .fetch_one(&app.pool)
        .await
        .expect("attempts");
    assert_eq!(attempts as usize, MAX_ATTEMPTS);

    // Once the conflict clears, the same request succeeds.
    sqlx::query("DROP TRIGGER test_conflict ON events")
        .execute(&app.pool)
        .await
        .expect("fault removed");
    let r = app
        .call(&c, Method::PATCH, &path, Some(json!({"first_name": "Ann"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["version"], json!(2));
    app.cleanup().await;
}

/// Two users swap emails at the same time. The test holds both claim rows
/// until both appends wait on them, then lets go: taken in one order by
/// every writer, the rows cannot deadlock (before, each append held one row
/// and waited for the other's, and Postgres killed one with a 500). Each
/// answer is 200 or 409 `EMAIL_TAKEN`, and the claims still match the users.
#[tokio::test]
async fn swapping_emails_at_the_same_time_never_deadlocks() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let a = app.enroll(&c, json!({"email": "a@example.com"})).await;
    let b = app.enroll(&c, json!({"email": "b@example.com"})).await;

    let mut hold = app.pool.begin().await.expect("tx");
    sqlx::query("SELECT 1 FROM unique_claims WHERE kind = 'email' FOR UPDATE")
        .execute(&mut *hold)
        .await
        .expect("rows locked");
    let (path_a, path_b) = (format!("/v1/users/{a}"), format!("/v1/users/{b}"));
    let swap_a = app.call(&c, Method::PATCH, &path_a, Some(json!({"email": "b@example.com"})));
    let swap_b = app.call(&c, Method::PATCH, &path_b, Some(json!({"email": "a@example.com"})));
    let release = async {
        let database = app.database_url.rsplit('/').next().unwrap_or_default().to_string();
        for _ in 0..500 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            )
            .bind(&database)
            .fetch_one(&app.pool)
            .await
            .expect("activity");
            if waiting >= 2 {
                hold.commit().await.expect("released");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the two appends never waited on the claim rows");
    };
    let (ra, rb, ()) = tokio::join!(swap_a, swap_b, release);
    for r in [&ra, &rb] {
        assert!(
            r.status == StatusCode::OK || (r.status, r.code()) == (StatusCode::CONFLICT, "EMAIL_TAKEN"),
            "{} {}",
            r.status,
            r.body
        );
    }
    // Whatever won, every email is claimed by exactly the user that has it.
    let claims: Vec<(String, String)> =
        sqlx::query_as("SELECT value, owner_id::text FROM unique_claims WHERE kind = 'email' ORDER BY value")
            .fetch_all(&app.pool)
            .await
            .expect("claims");
    // Claims hold keyed hashes of the values.
    let key = roster_tests::test_vault()
        .claim_key(&app.pool, "acme")
        .await
        .expect("claim key");
    assert!(
        ra.status != StatusCode::OK || rb.status != StatusCode::OK,
        "one email cannot go to both"
    );
    let email_of = |won: bool, own: &str, other: &str| if won { other.to_string() } else { own.to_string() };
    let mut emails = vec![
        (
            key.hash(&email_of(ra.status == StatusCode::OK, "a@example.com", "b@example.com")),
            a.clone(),
        ),
        (
            key.hash(&email_of(rb.status == StatusCode::OK, "b@example.com", "a@example.com")),
            b.clone(),
        ),
    ];
    emails.sort();
    assert_eq!(claims, emails);
    app.cleanup().await;
}

/// Lock families never collide (issue 24 §7): a subscriber whose name
/// hashes like a company's parent lock (a collision found by search) holds
/// its leadership lock while that company links a child to a parent; the
/// link does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_lock_and_a_companys_parent_lock_never_collide() {
    let app = roster_tests::spawn_app().await;
    // Two names whose locks hashed alike: 300,000 of each kind, about 20
    // pairs expected (joined here: Postgres would plan a nested loop).
    let hashes = |prefix: &'static str| {
        sqlx::query_as::<_, (i32, i32)>("SELECT hashtext($1 || n), n FROM generate_series(1, 300000) n")
            .bind(prefix)
            .fetch_all(&app.pool)
    };
    let subscribers: std::collections::HashMap<i32, i32> = hashes("roster.subscriber.s")
        .await
        .expect("hashes")
        .into_iter()
        .collect();
    let (subscriber, company) = hashes("roster.parents.c")
        .await
        .expect("hashes")
        .into_iter()
        .find_map(|(h, n)| subscribers.get(&h).map(|s| (format!("s{s}"), format!("c{n}"))))
        .expect("two names that hash alike");
    let held = roster_projections::engine::lead(&app.pool, &subscriber)
        .await
        .expect("database")
        .expect("the subscriber leads");
    let c = app.creds(&company, None).await;
    let parent = app.enroll(&c, serde_json::json!({"email": "p@example.com"})).await;
    let child = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        app.post(
            &c,
            "/v1/users",
            &serde_json::json!({"email": "c@example.com", "parent_user_id": parent}),
        ),
    )
    .await
    .expect("the parent link does not wait for the subscriber's lock");
    assert_eq!(child.status, reqwest::StatusCode::CREATED, "{}", child.body);
    drop(held);
    app.cleanup().await;
}

/// Time never runs backwards in a stream (issue 24 §6): a command decided
/// on the version it kept is held before its append (failpoint
/// `bus::decided`, the first command to get there only) while a later
/// request commits on the same stream; it then conflicts and is decided
/// again, after that commit: its event follows in sequence and in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_command_never_goes_back_in_time() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let user = app.enroll(&c, json!({"email": "time@example.com"})).await;
    let path = format!("/v1/users/{user}");
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = std::sync::Mutex::new(held);
    let first = std::sync::atomic::AtomicBool::new(true);
    let (arrived, mut reached) = tokio::sync::mpsc::unbounded_channel();
    fail::cfg_callback("bus::decided", move || {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let _ = arrived.send(());
            roster_tests::wait_for_release(&held);
        }
    })
    .expect("failpoint");
    let early = tokio::spawn(TestApp::send(
        app.request(Some(&c), Method::PATCH, &path)
            .json(&json!({"first_name": "Early"})),
    ));
    reached.recv().await.expect("the first PATCH is held");
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let late = app
        .call(&c, Method::PATCH, &path, Some(json!({"last_name": "Late"})))
        .await;
    assert_eq!(late.status, StatusCode::OK, "{}", late.body);
    release.send(()).expect("released");
    fail::remove("bus::decided");
    let early = early.await.expect("early");
    assert_eq!(early.status, StatusCode::OK, "{}", early.body);

    let stream: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT sequence, payload -> event_type ->> 'at', metadata ->> 'occurred_at' FROM events
          WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&user)
    .fetch_all(&app.pool)
    .await
    .expect("events");
    assert_eq!(stream.len(), 3, "{stream:?}");
    for pair in stream.windows(2) {
        assert!(
            pair[0].1 <= pair[1].1 && pair[0].2 <= pair[1].2,
            "time runs backwards: {stream:?}"
        );
    }
    assert!(
        early.body["updated_at"].as_str() >= late.body["updated_at"].as_str(),
        "{} < {}",
        early.body["updated_at"],
        late.body["updated_at"]
    );
    app.cleanup().await;
}

/// One write waiting on a row another transaction holds (here every claim:
/// `unique_claims` is locked in SHARE mode from a second connection) holds
/// no other write up: an update without claims, queued behind it, commits
/// at once; the waiting one ends within its bound with 503 `UNAVAILABLE`
/// and `Retry-After`, having written nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_that_waits_for_a_row_holds_no_other_write_up_and_ends_in_bounded_time() {
    let app = roster_tests::spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let other = app
        .enroll(
            &c,
            json!({"first_name": "Other", "external_ref": {"id": "X-1", "type": "T"}}),
        )
        .await;

    let mut holder = app.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE unique_claims IN SHARE MODE")
        .execute(&mut *holder)
        .await
        .expect("lock the claims");
    let started = std::time::Instant::now();
    let blocked = tokio::spawn(TestApp::send(
        app.request(Some(&c), Method::POST, "/v1/users")
            .json(&json!({"email": "waits@example.com"})),
    ));
    let waiting = roster_tests::waiting_for(&app, 1).await;
    assert!(waiting >= 1, "the enrollment waits for the claims");

    let patch = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        app.call(
            &c,
            Method::PATCH,
            &format!("/v1/users/{other}"),
            Some(json!({"first_name": "Free"})),
        ),
    )
    .await
    .expect("an update of another stream is not held up by the waiting one");
    assert_eq!(patch.status, StatusCode::OK, "{}", patch.body);

    let blocked = tokio::time::timeout(std::time::Duration::from_secs(20), blocked)
        .await
        .expect("the waiting write ends in a bounded time")
        .expect("enrollment");
    assert_eq!(
        (blocked.status, blocked.code(), blocked.header("retry-after")),
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", Some("1")),
        "{}",
        blocked.body
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    holder.rollback().await.expect("release");
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'UserEnrolled'")
        .fetch_one(&app.pool)
        .await
        .expect("events");
    assert_eq!(written, 1, "the refused enrollment wrote nothing");
    app.cleanup().await;
}
