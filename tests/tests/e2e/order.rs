//! The log's order (docs/guarantees.md, "The log's order"): every reader
//! (projections, the publisher, replay, consistency tokens) reads events in
//! commit order, each stream's in sequence order whatever path appended
//! them; nothing outside Roster's own appends holds a reader back; and the
//! positions survive a dump and restore into another cluster.

use reqwest::{Method, StatusCode};
use roster_projections::household_view::HouseholdView;
use roster_projections::{engine, user_view::UserView};
use roster_tests::{
    account, brokers, consume_until, hold_at, pg_server, test_vault, waiting_for, Creds, PrivatePostgres, Res, Server,
    TestApp,
};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ok(r: &Res, status: StatusCode) {
    assert_eq!(r.status, status, "{}", r.body);
}

fn token(r: &Res) -> String {
    r.header("roster-consistency-token").expect("token").to_string()
}

/// A transaction of the test's own holding every unique claim of `user`
/// (`FOR UPDATE`): an erasure of the user takes its first write (its
/// children's registry rows) and then waits here, to delete them.
async fn hold_claims_of(app: &TestApp, user: &str) -> PgConnection {
    let mut conn = PgConnection::connect(&app.database_url).await.expect("connection");
    sqlx::query("BEGIN").execute(&mut conn).await.expect("begin");
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM unique_claims WHERE owner_id = $1::uuid FOR UPDATE) c")
            .bind(user)
            .fetch_one(&mut conn)
            .await
            .expect("claims locked");
    assert!(held > 0);
    conn
}

/// Starts erasing `user` and returns once it is seen waiting for `held`.
async fn erase_waiting(app: &TestApp, c: &Creds, user: &str) -> tokio::task::JoinHandle<Res> {
    let erase = tokio::spawn(TestApp::send(app.request(
        Some(c),
        Method::DELETE,
        &format!("/v1/users/{user}"),
    )));
    assert!(waiting_for(app, 1).await >= 1, "the erasure waits for the claims");
    assert!(!erase.is_finished());
    erase
}

/// No stream's events are in another order by position than by sequence,
/// and no stream's instants go backwards.
async fn streams_in_order(app: &TestApp) {
    let disorder: Vec<String> = sqlx::query_scalar(
        "SELECT aggregate_id || ' ' || sequence FROM (
             SELECT aggregate_id, sequence,
                    position < lag(position) OVER w AS before,
                    (payload -> event_type ->> 'at') < lag(payload -> event_type ->> 'at') OVER w AS earlier
               FROM events
             WINDOW w AS (PARTITION BY aggregate_type, aggregate_id ORDER BY sequence)) e
          WHERE before OR earlier",
    )
    .fetch_all(&app.pool)
    .await
    .expect("events");
    assert!(disorder.is_empty(), "out of order: {disorder:?}");
}

/// The `ce_sequence` of `key`'s messages, as a consumer reads them.
async fn published_sequences(app: &TestApp, key: &str, count: usize) -> Vec<String> {
    let records = consume_until(&brokers(), &app.topic, Duration::from_secs(30), |rs| {
        rs.iter().filter(|r| r.key == key && !r.tombstone).count() >= count
    })
    .await;
    records
        .iter()
        .filter(|r| r.key == key && !r.tombstone)
        .map(|r| r.headers.get("ce_sequence").cloned().unwrap_or_default())
        .collect()
}

/// GETs `path` until `done` holds for its body (the projections catch up
/// with an erasure), up to 10 s.
async fn get_until(app: &TestApp, c: &Creds, path: &str, done: impl Fn(&Value) -> bool) -> Res {
    for _ in 0..200 {
        let r = app.get(c, path).await;
        if r.status == StatusCode::OK && done(&r.body) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.get(c, path).await
}

/// PATCHes the user at `path` to `first_name` and reads it back with the
/// write's token, asserting the read answers within a second.
async fn write_and_read_within_a_second(app: &TestApp, c: &Creds, path: &str, first_name: &str) {
    let patched = app
        .call(c, Method::PATCH, path, Some(json!({"first_name": first_name})))
        .await;
    ok(&patched, StatusCode::OK);
    let started = Instant::now();
    let read = app.get_after(c, path, &token(&patched)).await;
    let took = started.elapsed();
    ok(&read, StatusCode::OK);
    assert_eq!(read.body["first_name"], json!(first_name));
    assert!(took < Duration::from_secs(1), "the read took {took:?}");
}

/// The erasure's cascade on a child (CONTRACT §3 "Erasure"): the child's
/// PATCH commits while the erasure, its first write made, waits for a row
/// lock; the erasure's `ParentUnlinked` then follows the PATCH everywhere:
/// in sequence and position, in the read model and a replay of it, on
/// Kafka, and in time (a point-in-time read at the PATCH shows the child
/// still linked).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_appends_after_what_a_child_committed_while_it_waited() {
    let app = roster_tests::spawn_app().await;
    let c = app.creds("acme", None).await;
    let parent = app.enroll(&c, json!({"email": "parent@example.com"})).await;
    let child = app
        .enroll(
            &c,
            json!({"email": "kid@example.com", "first_name": "Kid", "parent_user_id": parent}),
        )
        .await;

    let mut held = hold_claims_of(&app, &parent).await;
    let erase = erase_waiting(&app, &c, &parent).await;
    let patched = app
        .call(
            &c,
            Method::PATCH,
            &format!("/v1/users/{child}"),
            Some(json!({"first_name": "Kiddo"})),
        )
        .await;
    ok(&patched, StatusCode::OK);
    sqlx::query("COMMIT").execute(&mut held).await.expect("released");
    ok(&erase.await.expect("erase"), StatusCode::OK);

    let path = format!("/v1/users/{child}");
    let kid = app.get_after(&c, &path, &token(&patched)).await;
    ok(&kid, StatusCode::OK);
    assert_eq!(
        kid.body["first_name"], "Kiddo",
        "the acknowledged PATCH is in the read model"
    );
    let kid = get_until(&app, &c, &path, |d| d["parent_user_id"].is_null()).await;
    assert_eq!(
        (&kid.body["first_name"], &kid.body["parent_user_id"]),
        (&json!("Kiddo"), &Value::Null)
    );
    assert_eq!(kid.header("etag"), Some("\"3\""));

    engine::replay(&app.pool, &test_vault(), &Arc::new(UserView::default()), 2, |_| {})
        .await
        .expect("replayed");
    let replayed = app.get(&c, &path).await;
    assert_eq!(replayed.body, kid.body, "a replay builds the same");

    assert_eq!(published_sequences(&app, &child, 3).await, ["1", "2", "3"]);

    let at = patched.body["updated_at"].as_str().expect("updated_at");
    let then = app.get(&c, &format!("{path}?as_of={at}")).await;
    ok(&then, StatusCode::OK);
    assert_eq!(
        (&then.body["first_name"], &then.body["parent_user_id"]),
        (&json!("Kiddo"), &json!(parent)),
        "at the PATCH's instant the child was still linked"
    );
    streams_in_order(&app).await;
    app.cleanup().await;
}

/// The erasure's cascade on a household: another member joins while the
/// erasure waits; its `HouseholdMemberRemoved` follows the join in the
/// read model, a replay, on Kafka and in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_appends_after_what_a_household_committed_while_it_waited() {
    let app = roster_tests::spawn_app().await;
    let c = app.creds("acme", None).await;
    let leaving = app
        .enroll(&c, json!({"email": "leaving@example.com", "account": account("ACC-L")}))
        .await;
    let joining = app
        .enroll(&c, json!({"email": "joining@example.com", "account": account("ACC-J")}))
        .await;
    let h = app.post(&c, "/v1/households", &json!({})).await;
    let household = h.body["id"].as_str().expect("id").to_string();
    let members = format!("/v1/households/{household}/members");
    ok(
        &app.post(&c, &members, &json!({"user_id": leaving, "account_id": "ACC-L"}))
            .await,
        StatusCode::OK,
    );

    let mut held = hold_claims_of(&app, &leaving).await;
    let erase = erase_waiting(&app, &c, &leaving).await;
    let joined = app
        .post(&c, &members, &json!({"user_id": joining, "account_id": "ACC-J"}))
        .await;
    ok(&joined, StatusCode::OK);
    sqlx::query("COMMIT").execute(&mut held).await.expect("released");
    ok(&erase.await.expect("erase"), StatusCode::OK);

    let path = format!("/v1/households/{household}");
    let ids = |r: &Res| -> Vec<Value> {
        r.body["members"]
            .as_array()
            .map(|m| m.iter().map(|m| m["user_id"].clone()).collect())
            .unwrap_or_default()
    };
    let hh = app.get_after(&c, &path, &token(&joined)).await;
    ok(&hh, StatusCode::OK);
    assert!(
        ids(&hh).contains(&json!(joining)),
        "the join is in the read model: {}",
        hh.body
    );
    let hh = get_until(&app, &c, &path, |d| {
        d["members"].as_array().is_some_and(|m| m.len() == 1)
    })
    .await;
    assert_eq!(ids(&hh), [json!(joining)], "{}", hh.body);

    engine::replay(&app.pool, &test_vault(), &Arc::new(HouseholdView), 2, |_| {})
        .await
        .expect("replayed");
    assert_eq!(app.get(&c, &path).await.body, hh.body, "a replay builds the same");

    assert_eq!(published_sequences(&app, &household, 4).await, ["1", "2", "3", "4"]);

    // The joining member's accounts at the join's instant, from the log.
    let at: String = sqlx::query_scalar(
        "SELECT payload -> event_type ->> 'at' FROM events
          WHERE aggregate_id = $1 AND event_type = 'HouseholdMemberAdded' ORDER BY sequence DESC LIMIT 1",
    )
    .bind(&household)
    .fetch_one(&app.pool)
    .await
    .expect("the join's instant");
    let then = app.get(&c, &format!("/v1/users/{joining}?as_of={at}")).await;
    ok(&then, StatusCode::OK);
    assert_eq!(
        then.body["accounts"][0]["household_id"],
        json!(household),
        "{}",
        then.body
    );
    streams_in_order(&app).await;
    app.cleanup().await;
}

/// A transaction holding an id in another database of the same server (an
/// idle `BEGIN` in psql, another application's batch job) for 60 s: writes
/// and reads with their consistency tokens go on, each read answering
/// within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_open_in_another_database_holds_no_reader_back() {
    let app = roster_tests::spawn_app().await;
    let c = app.creds("acme", None).await;
    let user = app.enroll(&c, json!({"email": "steady@example.com"})).await;
    let path = format!("/v1/users/{user}");

    let mut elsewhere = PgConnection::connect(&format!("{}/postgres", pg_server()))
        .await
        .expect("connection");
    sqlx::query("BEGIN").execute(&mut elsewhere).await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut elsewhere)
        .await
        .expect("an xid");
    let until = Instant::now() + Duration::from_secs(60);
    let mut reads = 0;
    while Instant::now() < until {
        write_and_read_within_a_second(&app, &c, &path, &format!("Steady{reads}")).await;
        reads += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The transaction was open all along.
    let open: bool = sqlx::query_scalar("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")
        .fetch_one(&mut elsewhere)
        .await
        .expect("still open");
    assert!(open && reads > 20, "{reads} reads");
    sqlx::query("ROLLBACK").execute(&mut elsewhere).await.expect("rollback");
    app.cleanup().await;
}

/// `roster replay` holds no live reader back: with one of its lanes held
/// mid-batch (its transaction open and written to), writes are read with
/// their tokens within a second; the replay then swaps in tables that
/// include them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_writes_are_read_while_a_replay_runs() {
    let app = roster_tests::spawn_app().await;
    let c = app.creds("acme", None).await;
    let mut users = Vec::new();
    for i in 0..5 {
        users.push(app.enroll(&c, json!({"email": format!("r{i}@example.com")})).await);
    }
    let (release, mut reached) = hold_at("engine::rebuilding");
    let path = format!("/v1/users/{}", users[0]);
    // The replay on a runtime of its own: the held lane blocks one of its
    // threads, none of the app's.
    let url = app.database_url.clone();
    let replay = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let pool = roster::db::connect(&url, 4).await?;
            engine::replay(&pool, &test_vault(), &Arc::new(UserView::default()), 2, |_| {}).await
        })
    });
    reached.recv().await.expect("a lane is held");
    for i in 0..3 {
        write_and_read_within_a_second(&app, &c, &path, &format!("Live{i}")).await;
    }
    assert!(!replay.is_finished(), "the replay was held all along");
    drop(release);
    fail::remove("engine::rebuilding");
    let replayed = tokio::task::spawn_blocking(move || replay.join())
        .await
        .expect("joined")
        .expect("the replay's thread");
    replayed.expect("replayed");
    assert_eq!(app.get(&c, &path).await.body["first_name"], "Live2");
    app.cleanup().await;
}

/// A store copied with `pg_dump`/`pg_restore` into a fresh database of
/// another cluster (a new major version, say): the projections and the
/// publisher go on from their checkpoints, skipping and repeating nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_restored_into_another_cluster_goes_on_from_its_checkpoints() {
    let app = roster_tests::spawn_app().await;
    let c = app.creds("acme", None).await;
    let mut users = Vec::new();
    for i in 0..5 {
        users.push(app.enroll(&c, json!({"email": format!("d{i}@example.com")})).await);
    }
    app.settle(Duration::from_secs(30)).await;
    let dump = std::env::temp_dir().join(format!("roster-dump-{}", uuid::Uuid::new_v4().simple()));
    let out = std::process::Command::new("pg_dump")
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg(&app.database_url)
        .output()
        .expect("pg_dump runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let topic = app.topic.clone();
    let before = consume_until(&brokers(), &topic, Duration::from_secs(30), |rs| rs.len() >= 5).await;
    assert_eq!(before.len(), 5);
    app.cleanup().await;

    // A new cluster: its transaction ids start low again.
    let pg = PrivatePostgres::start();
    let url = pg.url("restored");
    roster::db::ensure_database(&url).await.expect("database created");
    let restored = std::process::Command::new("pg_restore")
        .args(["--no-owner", "-d", &url])
        .arg(&dump)
        .output()
        .expect("pg_restore runs");
    let _ = std::fs::remove_file(&dump);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let server = Server::start(&url, &brokers(), &topic, "restored").await;
    let app = TestApp::attach(&server, &url, &brokers(), &topic).await;
    let c = app.creds_of(&c).await;

    let patched = app
        .call(
            &c,
            Method::PATCH,
            &format!("/v1/users/{}", users[0]),
            Some(json!({"first_name": "Restored"})),
        )
        .await;
    ok(&patched, StatusCode::OK);
    let read = app
        .get_after(&c, &format!("/v1/users/{}", users[0]), &token(&patched))
        .await;
    ok(&read, StatusCode::OK);
    assert_eq!(read.body["first_name"], "Restored");
    let user = app.enroll(&c, json!({"email": "after@example.com"})).await;
    app.settle(Duration::from_secs(30)).await;
    // Everything, and time for a repeat to show up.
    let all = consume_until(&brokers(), &topic, Duration::from_secs(10), |rs| rs.len() > 7).await;
    let mut ids: Vec<&str> = all.iter().map(|r| r.headers["ce_id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((all.len(), ids.len()), (7, 7), "each event once: {all:?}");
    let stored: Vec<String> = sqlx::query_scalar("SELECT event_id::text FROM events ORDER BY position")
        .fetch_all(&app.pool)
        .await
        .expect("events");
    let mut stored_ids: Vec<&str> = stored.iter().map(String::as_str).collect();
    stored_ids.sort_unstable();
    assert_eq!(ids, stored_ids);
    assert!(all.iter().any(|r| r.key == user));
    drop(server);
    app.pool.close().await;
}

/// A page for a subscriber that reads few kinds of events carries only
/// those, yet ends where the log's page ends and counts every event it went
/// through: the checkpoint moves past the others, and a full page of them
/// still means "read on".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_carries_only_what_its_subscriber_reads_and_ends_where_the_log_does() {
    let app = roster_tests::spawn_app().await;
    let c = app.creds("acme", None).await;
    for n in 0..3 {
        app.enroll(&c, json!({"email": format!("before-{n}@example.com")}))
            .await;
    }
    let h = app.post(&c, "/v1/households", &json!({})).await;
    ok(&h, StatusCode::CREATED);
    let household = h.body["id"].as_str().expect("id").to_string();
    for n in 0..3 {
        app.enroll(&c, json!({"email": format!("after-{n}@example.com")})).await;
    }
    let mut conn = app.pool.acquire().await.expect("connection");
    let positions: Vec<(i64, String)> = sqlx::query_as("SELECT position, aggregate_type FROM events ORDER BY position")
        .fetch_all(&mut *conn)
        .await
        .expect("positions");
    let reads = engine::Projector::reads(&HouseholdView);
    let vault = test_vault();
    let mut page = async |after: i64, limit: i64| {
        engine::read_page(
            &mut conn,
            &vault,
            engine::Keys::Kept,
            engine::Position(after),
            limit,
            reads,
        )
        .await
        .expect("page")
    };

    // The whole log in one page: the household's event alone, the end at
    // the last event, every event counted.
    let whole = page(0, 10_000).await;
    let wanted: Vec<i64> = positions
        .iter()
        .filter(|(_, t)| t == "household")
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(wanted.len(), 1, "{positions:?}");
    assert_eq!(whole.events.iter().map(|e| e.position.0).collect::<Vec<_>>(), wanted);
    assert_eq!(whole.events[0].aggregate_id, household);
    assert_eq!(whole.end, Some(engine::Position(positions.last().expect("events").0)));
    assert_eq!(whole.scanned, positions.len());

    // A page that ends before the household: nothing to read, but it ends
    // at its own last event and is full.
    let before = positions.iter().position(|(_, t)| t == "household").expect("household");
    let short = page(0, before as i64).await;
    assert!(short.events.is_empty(), "{:?}", short.events);
    assert_eq!(short.end, Some(engine::Position(positions[before - 1].0)));
    assert_eq!(short.scanned, before);

    // Past the last event: an empty page that ends nowhere.
    let past = page(positions.last().expect("events").0, 10).await;
    assert!(past.events.is_empty() && past.end.is_none() && past.scanned == 0);
}
