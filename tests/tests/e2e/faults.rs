//! Fault injection with real processes (docs/guarantees.md): `roster serve`
//! killed with SIGKILL, stopped with SIGTERM, run twice on one database; the
//! broker and Postgres stopped under load. After each, every acknowledged
//! write must be in the store, the read models and on Kafka, in order.

use reqwest::StatusCode;
use roster_tests::{
    brokers, consume_until, fresh_database_url, fresh_topic, Broker, Creds, PrivatePostgres, Record, Server, TestApp,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the load saw.
#[derive(Debug, Default)]
struct Seen {
    /// Per user, the highest version a 2xx acknowledged.
    acked: HashMap<String, u64>,
    /// Responses by status.
    statuses: HashMap<u16, usize>,
    /// Codes of the 5xx responses.
    server_errors: Vec<String>,
    /// Requests that got no HTTP response (connection refused or cut).
    transport_errors: usize,
    /// The slowest response.
    slowest: Duration,
}

impl Seen {
    fn acks(&self) -> usize {
        self.statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }
}

/// `clients` writers, each enrolling a user and then updating it until
/// stopped. A failed enrollment is retried with a new email (the first may
/// have committed before the failure: that user is never acknowledged).
struct Load {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    seen: Arc<Mutex<Seen>>,
}

impl Load {
    fn start(base: &str, c: &Creds, clients: usize) -> Load {
        let stop = CancellationToken::new();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let http = reqwest::Client::new();
        let tasks = (0..clients)
            .map(|i| {
                let (http, base, c, stop, seen) =
                    (http.clone(), base.to_string(), c.clone(), stop.clone(), seen.clone());
                tokio::spawn(async move { writer(http, base, c, i, stop, seen).await })
            })
            .collect();
        Load { stop, tasks, seen }
    }

    fn acks(&self) -> usize {
        self.seen.lock().expect("lock").acks()
    }

    /// Waits until `more` further writes are acknowledged (panics after 60 s).
    async fn progress(&self, more: usize) {
        let target = self.acks() + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acks() < target {
            assert!(
                Instant::now() < deadline,
                "no progress: {:?}",
                self.seen.lock().expect("lock")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> Seen {
        self.finish_after(|| {}).await
    }
}

async fn writer(
    http: reqwest::Client,
    base: String,
    c: Creds,
    i: usize,
    stop: CancellationToken,
    seen: Arc<Mutex<Seen>>,
) {
    let mut user: Option<String> = None;
    let mut n = 0u64;
    while !stop.is_cancelled() {
        n += 1;
        let request = match &user {
            None => http
                .post(format!("{base}/v1/users"))
                .json(&json!({"email": format!("w{i}-{n}@example.com"), "first_name": format!("Writer {i}")})),
            Some(id) => http
                .patch(format!("{base}/v1/users/{id}"))
                .json(&json!({"last_name": format!("Update {n}")})),
        };
        let started = Instant::now();
        let response = request
            .bearer_auth(&c.token)
            .header("x-appid", &c.client_id)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        let elapsed = started.elapsed();
        let (status, body) = match response {
            Ok(r) => {
                let status = r.status();
                match r.json::<Value>().await {
                    Ok(body) => (status, body),
                    Err(_) => (status, Value::Null),
                }
            }
            Err(_) => {
                seen.lock().expect("lock").transport_errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        {
            let mut s = seen.lock().expect("lock");
            s.slowest = s.slowest.max(elapsed);
            *s.statuses.entry(status.as_u16()).or_default() += 1;
            if status.is_server_error() {
                s.server_errors.push(format!("{status} {}", body["code"]));
            }
            if let (true, Some(id), Some(version)) =
                (status.is_success(), body["id"].as_str(), body["version"].as_u64())
            {
                let v = s.acked.entry(id.to_string()).or_default();
                *v = (*v).max(version);
                user = Some(id.to_string());
            }
        }
        if !status.is_success() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Each user stream in the store: id → last sequence.
async fn user_streams(app: &TestApp) -> HashMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT aggregate_id, max(sequence) FROM events WHERE aggregate_type = 'user' GROUP BY aggregate_id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("streams")
    .into_iter()
    .collect()
}

/// Per key, the sequences in arrival order, as a consumer that drops
/// repeats sees them; panics on a gap or a reordering.
fn first_occurrences(records: &[Record]) -> HashMap<String, i64> {
    let mut next: HashMap<String, i64> = HashMap::new();
    for r in records {
        let seq: i64 = r.headers["ce_sequence"].parse().expect("ce_sequence");
        let expected = next.entry(r.key.clone()).or_insert(1);
        assert!(
            seq <= *expected,
            "key {} got sequence {seq} while waiting for {expected}: a gap or a reordering",
            r.key
        );
        if seq == *expected {
            *expected += 1;
        }
    }
    next.into_iter().map(|(k, n)| (k, n - 1)).collect()
}

/// The guarantees after any fault: every acknowledged write is in the
/// store; the user view equals the store; every event is on Kafka, each
/// key's events in sequence order (repeats allowed, gaps not).
async fn assert_nothing_lost(app: &TestApp, seen: &Seen) {
    assert!(
        seen.acked.len() >= 4 && seen.acks() >= 20,
        "too little load to prove anything: {seen:?}"
    );
    app.settle(Duration::from_secs(120)).await;
    let streams = user_streams(app).await;
    for (user, version) in &seen.acked {
        let stored = streams.get(user).copied().unwrap_or(0);
        assert!(
            stored >= *version as i64,
            "user {user}: acknowledged v{version}, stored v{stored}"
        );
    }
    let diverged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT aggregate_id::uuid AS id, max(sequence) AS v
                                 FROM events WHERE aggregate_type = 'user' GROUP BY 1) e
           LEFT JOIN user_view u USING (id)
          WHERE u.version IS DISTINCT FROM e.v",
    )
    .fetch_one(&app.pool)
    .await
    .expect("compare");
    assert_eq!(diverged, 0, "the user view differs from the store");

    let complete = |records: &[Record]| {
        let got = first_occurrences(records);
        streams.iter().all(|(k, n)| got.get(k) == Some(n))
    };
    let records = consume_until(&app.brokers, &app.topic, Duration::from_secs(120), complete).await;
    let got = first_occurrences(&records);
    for (user, n) in &streams {
        assert_eq!(got.get(user), Some(n), "user {user}: Kafka has not every event");
    }
}

async fn setup(brokers: &str) -> (Server, TestApp, Creds) {
    let (database, topic) = (fresh_database_url(), fresh_topic());
    let server = Server::start(&database, brokers, &topic, "roster_a").await;
    let app = TestApp::attach(&server, &database, brokers, &topic).await;
    let c = app.creds("acme", None).await;
    (server, app, c)
}

#[tokio::test]
async fn sigkill_during_writes_loses_no_acknowledged_write() {
    let (mut server, app, c) = setup(&brokers()).await;
    let load = Load::start(&server.base(), &c, 16);
    load.progress(150).await;
    server.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().await;
    load.progress(100).await;
    let seen = load.finish().await;
    assert!(seen.transport_errors > 0, "the kill was not seen by any client");
    assert!(seen.server_errors.is_empty(), "{:?}", seen.server_errors);
    assert_nothing_lost(&app, &seen).await;
    drop(server);
    app.cleanup().await;
}

#[tokio::test]
async fn a_broker_stopped_under_load_gets_everything_in_order_afterwards() {
    let broker = Broker::start(&Broker::free_addr()).await;
    let (server, app, c) = setup(&broker.addr).await;
    let load = Load::start(&server.base(), &c, 8);
    load.progress(50).await;
    broker.pause();
    // Writes go on while the broker is stopped.
    load.progress(200).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    broker.resume();
    load.progress(50).await;
    let seen = load.finish().await;
    assert!(seen.server_errors.is_empty(), "{:?}", seen.server_errors);
    assert_eq!(seen.transport_errors, 0);
    assert_nothing_lost(&app, &seen).await;
    drop(server);
    app.cleanup().await;
}

#[tokio::test]
async fn a_postgres_restart_is_503_meanwhile_and_everything_recovers() {
    let pg = PrivatePostgres::start();
    let (database, topic, brokers) = (pg.url("roster"), fresh_topic(), brokers());
    let server = Server::start(&database, &brokers, &topic, "roster_a").await;
    let app = TestApp::attach(&server, &database, &brokers, &topic).await;
    let c = app.creds("acme", None).await;
    let load = Load::start(&server.base(), &c, 8);
    load.progress(100).await;

    pg.down();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A read fails fast too, with the stable code.
    let r = app.get(&c, "/v1/users").await;
    assert_eq!((r.status, r.code()), (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"));
    assert!(r.header("retry-after").is_some());
    let r = TestApp::send(app.http.get(format!("{}/readyz", app.base))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    pg.up();

    load.progress(100).await;
    let seen = load.finish().await;
    let unavailable = seen.statuses.get(&503).copied().unwrap_or(0);
    assert!(unavailable > 0, "no 503 while Postgres was down: {seen:?}");
    assert!(
        seen.server_errors
            .iter()
            .all(|e| e == "503 Service Unavailable \"UNAVAILABLE\""),
        "{:?}",
        seen.server_errors
    );
    assert_eq!(seen.transport_errors, 0, "requests must be answered, not dropped");
    assert!(
        seen.slowest < Duration::from_secs(10),
        "a request hung for {:?}",
        seen.slowest
    );
    assert!(!server.logs().contains("a component stopped"), "the process gave up");
    // The pool of the test itself reconnects too.
    assert_nothing_lost(&app, &seen).await;
    drop(server);
}

/// Which process (its `application_name`) holds each runner's lock.
async fn runners(app: &TestApp) -> HashMap<String, Option<String>> {
    sqlx::query_as::<_, (String, Option<String>)>(
        "SELECT n, a.application_name
           FROM unnest(ARRAY['user_view', 'household_view', 'card_view', 'kafka_publisher']) AS n
           LEFT JOIN pg_locks l
             ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = 2
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND l.objid::text::bigint = (hashtext('roster.subscriber.' || n)::bigint & 4294967295)
           LEFT JOIN pg_stat_activity a ON a.pid = l.pid",
    )
    .fetch_all(&app.pool)
    .await
    .expect("locks")
    .into_iter()
    .collect()
}

#[tokio::test]
async fn two_processes_run_each_runner_once_and_fail_over() {
    let (database, topic, brokers) = (fresh_database_url(), fresh_topic(), brokers());
    let a = Server::start(&database, &brokers, &topic, "roster_a").await;
    let b = Server::start(&database, &brokers, &topic, "roster_b").await;
    let app = TestApp::attach(&a, &database, &brokers, &topic).await;
    let c = app.creds("acme", None).await;
    let via_a = Load::start(&a.base(), &c, 4);
    let via_b = Load::start(&b.base(), &c, 4);
    via_a.progress(40).await;
    via_b.progress(40).await;

    let held = runners(&app).await;
    assert_eq!(held.len(), 4);
    for (runner, holder) in &held {
        assert!(
            matches!(holder.as_deref(), Some("roster_a" | "roster_b")),
            "{runner} has no runner: {held:?}"
        );
    }
    // A lock has one holder by construction; the runner that does not hold
    // it waits. Kill the process that leads the user view.
    let leader = held["user_view"].clone().expect("leader");
    let (mut dead, survivor, survivor_name, dead_load, survivor_load) = if leader == "roster_a" {
        (a, b, "roster_b", via_a, via_b)
    } else {
        (b, a, "roster_a", via_b, via_a)
    };
    dead.kill9();
    let mut seen = dead_load.finish().await;
    survivor_load.progress(40).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = runners(&app).await;
        if held.values().all(|h| h.as_deref() == Some(survivor_name)) {
            break;
        }
        assert!(Instant::now() < deadline, "no failover: {held:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    survivor_load.progress(40).await;
    let survivor_seen = survivor_load.finish().await;
    for (user, v) in survivor_seen.acked.iter() {
        seen.acked.insert(user.clone(), *v);
    }
    for (status, n) in survivor_seen.statuses {
        *seen.statuses.entry(status).or_default() += n;
    }
    assert!(
        survivor_seen.server_errors.is_empty(),
        "{:?}",
        survivor_seen.server_errors
    );
    let app = TestApp::attach(&survivor, &database, &brokers, &topic).await;
    assert_nothing_lost(&app, &seen).await;
    drop((dead, survivor));
    app.cleanup().await;
}

#[tokio::test]
async fn sigterm_drains_requests_publishes_everything_and_exits_0() {
    let (mut server, app, c) = setup(&brokers()).await;
    let load = Load::start(&server.base(), &c, 8);
    load.progress(100).await;
    // A request in flight across the signal: its body arrives in two parts,
    // the second 1.5 s after the first, well after SIGTERM.
    let body = json!({"email": "slow@example.com"}).to_string();
    let head = format!(
        "POST /v1/users HTTP/1.1\r\nhost: roster\r\nauthorization: Bearer {}\r\nx-appid: {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        c.token,
        c.client_id,
        body.len()
    );
    let (sent, first_part_sent) = std::sync::mpsc::channel();
    let addr = server.addr.clone();
    let slow = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect(addr).expect("connect");
        socket.write_all(head.as_bytes()).expect("head");
        socket.write_all(&body.as_bytes()[..5]).expect("first part");
        sent.send(()).expect("signal");
        std::thread::sleep(Duration::from_millis(1500));
        socket.write_all(&body.as_bytes()[5..]).expect("second part");
        let mut response = String::new();
        socket.read_to_string(&mut response).expect("response");
        response
    });
    first_part_sent.recv().expect("first part sent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The clients stop sending new requests; those in flight must complete.
    let seen = load.finish_after(|| server.terminate()).await;
    let slow = tokio::task::spawn_blocking(move || slow.join().expect("slow client"))
        .await
        .expect("join");
    assert!(
        slow.starts_with("HTTP/1.1 201"),
        "the in-flight request was not served: {slow}"
    );
    let slow_user = slow
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
        .and_then(|b| b["id"].as_str().map(str::to_string))
        .expect("the enrolled user");
    let status = server
        .exited_within(Duration::from_secs(20))
        .await
        .expect("exits within 20 s of SIGTERM");
    assert!(status.success(), "exit status {status}:\n{}", server.logs());
    assert!(seen.server_errors.is_empty(), "{:?}", seen.server_errors);
    // Every request the server began, it answered. (A client may still see
    // its request fail: one sent on a keep-alive connection the server was
    // closing as idle never reached it; HTTP/1.1 clients retry those, with
    // an Idempotency-Key for writes.)
    let logs = server.logs();
    let started = logs.matches("started processing request").count();
    let finished = logs.matches("finished processing request").count();
    assert!(started > 100, "request logs missing: {started}");
    assert_eq!(started, finished, "a request in flight at SIGTERM was dropped");

    // Before exiting, the publisher delivered everything the API wrote.
    let lag = roster_projections::engine::lag(&app.pool, roster_projections::publisher::NAME, 1_000_000)
        .await
        .expect("lag");
    assert_eq!(lag, 0, "events left unpublished at exit");
    let streams = user_streams(&app).await;
    let records = consume_until(&app.brokers, &app.topic, Duration::from_secs(60), |r| {
        let got = first_occurrences(r);
        streams.iter().all(|(k, n)| got.get(k) == Some(n))
    })
    .await;
    let got = first_occurrences(&records);
    for (user, version) in &seen.acked {
        assert!(
            got.get(user).copied().unwrap_or(0) >= *version as i64,
            "user {user} not on Kafka"
        );
    }
    assert_eq!(
        got.get(&slow_user),
        Some(&1),
        "the last request's event was published before exit"
    );
    drop(server);
    app.cleanup().await;
}

impl Load {
    /// Stops sending new requests, runs `then` at once (with requests still
    /// in flight), and waits for the writers.
    async fn finish_after(self, then: impl FnOnce()) -> Seen {
        self.stop.cancel();
        then();
        for t in self.tasks {
            t.await.expect("writer");
        }
        Arc::try_unwrap(self.seen)
            .expect("writers done")
            .into_inner()
            .expect("lock")
    }
}
