//! Load benchmark (not a test): Roster against the machine's limit, both
//! measured in one run.
//!
//!     scripts/bench.sh [clients=32] [seconds=20] [--no-pgbench] [--processes=N] [--enroll-only]
//!
//! (builds `roster` and this binary in release mode and runs it).
//!
//! 1. `pgbench` with the equivalent raw SQL (one INSERT of an event row per
//!    transaction) at the same concurrency, against the same Postgres.
//! 2. `roster serve` (API, projectors, publisher) as its own process on a
//!    fresh database, driven over HTTP by N keep-alive clients that enroll a user
//!    and then update it, for a fixed time; meanwhile a prober measures
//!    projection lag (write answered → visible in the read model) and a
//!    consumer measures Kafka lag (command time → message received).
//!
//! 3. With `ROSTER_PEER_BIN` (set by `scripts/bench.sh`, which builds
//!    `../shared/peers/cqrs-es-default`): the textbook cqrs-es wiring as its
//!    own process on the same Postgres and broker, the same clients doing
//!    the same enroll-then-update for the same time (it has no auth).
//!
//! With `--wrk` (and `--enroll-only`) `wrk` makes the enrollments, Roster's
//! and the peer's, as the issue that asked for this benchmark measured
//! them: 2 threads, the clients as connections, a Lua script making each
//! email distinct; the probes still measure the lags.
//! With `--enroll-only` the clients (Roster's and the peer's) only enroll
//! distinct users: the heaviest command alone.
//!
//! With `--webhooks=N`: N webhook endpoints of the bench's company, all on
//! one receiver in this process that answers each delivery after 1 ms; it
//! measures deliveries per second and the time from each event's command
//! to its receipt, and after the run waits (up to 60 s) until every event
//! has reached every endpoint.
//!
//! Each phase (pgbench, Roster, the peer) starts after a `CHECKPOINT`, so
//! that none pays for the dirty pages of the one before it.
//!
//! Prints one Markdown table, and the ratios Roster ÷ pgbench and Roster ÷
//! the peer.

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use roster_tests::Server;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

struct BenchArgs {
    /// Postgres server (`$ROSTER_TEST_PG`); the bench uses its own database.
    server: String,
    /// Concurrent HTTP clients (and pgbench clients).
    clients: usize,
    /// Seconds each phase runs.
    seconds: u64,
    /// `$KAFKA_BROKERS`; empty: no publisher, no Kafka lag.
    kafka_brokers: String,
    no_pgbench: bool,
    /// `roster serve` processes on the one database (`--processes=N`); the
    /// clients are split between them.
    processes: usize,
    /// Enrollments only, no update after each (`--enroll-only`).
    enroll_only: bool,
    /// Webhook endpoints on a local receiver (`--webhooks=N`).
    webhooks: usize,
    /// `wrk` makes the enrollments (Roster's and the peer's) instead of the
    /// bench's own clients (`--wrk`, with `--enroll-only`).
    wrk: bool,
}

/// What a `wrk` run measured.
struct WrkRun {
    /// Successful (2xx) requests per second.
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
}

/// Each request enrolls a distinct user: the thread's number, a run id
/// and a counter make the email.
const WRK_ENROLL: &str = r#"
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  thread:set("run", tostring(os.time()) .. tostring(math.random(1000000)))
  threads = threads + 1
end
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"email":"wrk-%s-%d-%d@example.com","first_name":"Load","last_name":"Bench"}', run, tid, counter)
  return wrk.format("POST", "/v1/users", nil, body)
end
"#;

/// Enrolls for `seconds` with `wrk` (2 threads, `clients` connections)
/// against `base`, with `headers`.
async fn wrk(base: &str, clients: usize, seconds: u64, headers: &[String]) -> anyhow::Result<WrkRun> {
    let script = std::env::temp_dir().join(format!("roster-wrk-{}.lua", uuid::Uuid::new_v4().simple()));
    std::fs::write(&script, WRK_ENROLL)?;
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{clients}"),
        &format!("-d{seconds}s"),
        "--latency",
        "-s",
    ])
    .arg(&script)
    .args(["-H", "content-type: application/json"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(base).output().await.context("wrk runs (apt-get install wrk)")?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ms = |v: &str| -> f64 {
        let n: f64 = v
            .trim_end_matches(|c: char| c.is_alphabetic())
            .parse()
            .unwrap_or(f64::NAN);
        match v.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.') {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => f64::NAN,
        }
    };
    let words = |prefix: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let total: f64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let non_2xx: u64 = words("Non-2xx").last().and_then(|n| n.parse().ok()).unwrap_or(0);
    let socket: u64 = text
        .lines()
        .find(|l| l.contains("Socket errors"))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Ok(WrkRun {
        rate: (total - non_2xx as f64) / seconds as f64,
        p50_ms: words("50%").get(1).map_or(f64::NAN, |v| ms(v)),
        p99_ms: words("99%").get(1).map_or(f64::NAN, |v| ms(v)),
        max_ms: words("Latency").get(3).map_or(f64::NAN, |v| ms(v)),
        errors: non_2xx + socket,
    })
}

/// What the webhook receiver got: for each delivery, command → receipt.
#[derive(Default)]
struct Receipts {
    lags: std::sync::Mutex<Vec<Duration>>,
    /// (endpoint, webhook-id) pairs seen.
    seen: std::sync::Mutex<std::collections::HashSet<(u16, String)>>,
}

/// Starts the receiver: `POST /hook/{n}` answers 204 after 1 ms.
async fn webhook_receiver() -> anyhow::Result<(String, Arc<Receipts>)> {
    use axum::extract::{Path, State};
    let receipts = Arc::new(Receipts::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/hook", listener.local_addr()?);
    async fn receive(
        State(r): State<Arc<Receipts>>,
        Path(n): Path<u16>,
        headers: axum::http::HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::http::StatusCode {
        let at = chrono::Utc::now();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let id = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let time = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|b| chrono::DateTime::parse_from_rfc3339(b["timestamp"].as_str()?).ok());
        if let Some(t) = time {
            let lag = at.signed_duration_since(t).to_std().unwrap_or_default();
            r.lags.lock().expect("lags").push(lag);
        }
        r.seen.lock().expect("seen").insert((n, id));
        axum::http::StatusCode::NO_CONTENT
    }
    let app = axum::Router::new()
        .route("/hook/{n}", axum::routing::post(receive))
        .with_state(receipts.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, receipts))
}

/// Writes every dirty page out before a phase, so that no phase pays for
/// the one before it (a checkpoint the previous phase's writes set off).
async fn checkpoint(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::query("CHECKPOINT").execute(pool).await?;
    Ok(())
}

/// Throughput of the peer (`../shared/peers/cqrs-es-default`): commands
/// per second, their p99, and the errors.
async fn peer(
    bin: &str,
    server: &str,
    brokers: &str,
    clients: usize,
    seconds: u64,
    enroll_only: bool,
    with_wrk: bool,
) -> anyhow::Result<(f64, f64, u64)> {
    let admin = roster::db::connect(&format!("{server}/postgres"), 1).await?;
    sqlx::query("DROP DATABASE IF EXISTS peer_loadbench WITH (FORCE)")
        .execute(&admin)
        .await?;
    let topic = format!("peer.bench.{}", uuid::Uuid::new_v4().simple());
    if !brokers.is_empty() {
        // tansu does not create topics on produce.
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", brokers).create()?;
        admin
            .create_topics(
                &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await?;
    }
    let listen = roster_tests::Broker::free_addr();
    let mut child = tokio::process::Command::new(bin)
        .env("DATABASE_URL", format!("{server}/peer_loadbench"))
        .env("KAFKA_BROKERS", brokers)
        .env("KAFKA_TOPIC", &topic)
        .env("LISTEN", &listen)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the peer {bin}"))?;
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http
        .get(format!("{base}/v1/users/00000000-0000-0000-0000-000000000000"))
        .send()
        .await
        .is_err()
    {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "the peer did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    checkpoint(&admin).await?;
    eprintln!("peer: {clients} clients, {seconds} s ...");
    if with_wrk {
        let run = wrk(&base, clients, seconds, &[]).await;
        let _ = child.kill().await;
        let run = run?;
        return Ok((run.rate, run.p99_ms, run.errors));
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for w in 0..clients {
        let (http, base) = (reqwest::Client::new(), base.clone());
        workers.push(tokio::spawn(async move {
            let (mut done, mut errors) = (Vec::new(), 0u64);
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let body =
                    json!({"email": format!("w{w}-{i}@example.com"), "first_name": "Load", "last_name": "Bench"});
                let t = Instant::now();
                let r = http.post(format!("{base}/v1/users")).json(&body).send().await;
                let Ok(r) = r.map_err(|_| errors += 1) else { continue };
                if r.status() != reqwest::StatusCode::CREATED {
                    errors += 1;
                    continue;
                }
                let user: serde_json::Value = r.json().await.unwrap_or_default();
                done.push(t.elapsed());
                if enroll_only {
                    continue;
                }
                let id = user["id"].as_str().unwrap_or_default();
                let t = Instant::now();
                let r = http
                    .patch(format!("{base}/v1/users/{id}"))
                    .json(&json!({"last_name": format!("Bench {i}")}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        done.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (done, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for w in workers {
        let (done, e) = w.await?;
        all.extend(done);
        errors += e;
    }
    let _ = child.kill().await;
    all.sort();
    Ok((all.len() as f64 / seconds as f64, q(&all, 0.99), errors))
}

/// CPU seconds (user + system) a process used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // After the command name (which may hold spaces): utime is the 12th
    // field, stime the 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// CPU seconds the whole machine was busy so far (every core, from
/// `/proc/stat`: all but idle and I/O wait). Beside the processes' own
/// figures because they miss work the kernel does for them in soft
/// interrupts (the loopback network's), which this load has plenty of.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or_default() + ticks.get(4).copied().unwrap_or_default();
    (total - idle) / 100.0
}

/// CPU seconds so far of: the service's processes, the bench itself (HTTP
/// clients and Kafka consumer), every Postgres process, the broker, and the
/// whole machine.
fn cpu_split(service: &[u32]) -> Vec<(&'static str, f64)> {
    let (mut postgres, mut broker) = (0.0, 0.0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        match std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
        {
            "postgres" => postgres += cpu_seconds(pid),
            "tansu" => broker += cpu_seconds(pid),
            _ => {}
        }
    }
    vec![
        ("roster", service.iter().map(|pid| cpu_seconds(*pid)).sum()),
        ("bench clients", cpu_seconds(std::process::id())),
        ("postgres", postgres),
        ("tansu", broker),
        ("whole machine busy", machine_busy_seconds()),
    ]
}

/// Milliseconds at the given quantile of sorted samples.
fn q(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

const EVENT_PAYLOAD: &str = r#"{"UserEnrolled":{"user_id":"00000000-0000-7000-8000-000000000000","company_id":"bench","external_ref":null,"first_name":"Load","last_name":"Bench","email":"load@example.com","email_verified":false,"mobile":null,"office_phone":null,"office_extension":null,"employee_id":null,"date_of_birth":null,"gender":null,"nationality":null,"locale":null,"address":null,"billing_address":null,"communication_preferences":{"email":false,"sms":false,"post":false},"status":"inactive","status_reason":null,"parent_user_id":null,"kyc":null,"account":null,"password_hash":null,"verification_questions":[],"at":"2026-11-23T12:00:00.000000Z"}}"#;

async fn pgbench(url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let pool = roster::db::connect(url, 2).await?;
    // The events table's columns and indexes, its `position` from a plain
    // sequence: the limit of inserting event rows, without the log's lock
    // (taking positions in commit order is part of what Roster's figure
    // pays for).
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS pgbench_events; DROP SEQUENCE IF EXISTS pgbench_positions;
         CREATE SEQUENCE pgbench_positions;
         CREATE TABLE pgbench_events (LIKE events INCLUDING ALL);
         ALTER TABLE pgbench_events ALTER COLUMN position SET DEFAULT nextval('pgbench_positions')",
    )
    .execute(&pool)
    .await?;
    let script = std::env::temp_dir().join("roster-pgbench.sql");
    std::fs::write(
        &script,
        format!(
            "INSERT INTO pgbench_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ('user', gen_random_uuid()::text, 1, 'UserEnrolled', '1.0', '{EVENT_PAYLOAD}', \
             '{{\"company_id\":\"bench\",\"client_id\":\"bench\",\"request_id\":\"r\"}}');\n"
        ),
    )?;
    let out = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .await
        .context("cannot run pgbench (Debian: postgresql-contrib / postgresql-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .with_context(|| format!("pgbench said: {text}{}", String::from_utf8_lossy(&out.stderr)))?;
    sqlx::raw_sql("DROP TABLE pgbench_events; DROP SEQUENCE pgbench_positions")
        .execute(&pool)
        .await?;
    Ok(tps)
}

#[derive(Default)]
struct Samples {
    enroll: Vec<Duration>,
    update: Vec<Duration>,
    errors: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let args = BenchArgs {
        server: roster_tests::pg_server(),
        clients: argv.get(1).and_then(|a| a.parse().ok()).unwrap_or(32),
        seconds: argv.get(2).and_then(|a| a.parse().ok()).unwrap_or(20),
        kafka_brokers: std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        no_pgbench: argv.iter().any(|a| a == "--no-pgbench"),
        processes: argv
            .iter()
            .find_map(|a| a.strip_prefix("--processes="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1),
        enroll_only: argv.iter().any(|a| a == "--enroll-only"),
        webhooks: argv
            .iter()
            .find_map(|a| a.strip_prefix("--webhooks="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        wrk: argv.iter().any(|a| a == "--wrk"),
    };
    anyhow::ensure!(
        !args.wrk || args.enroll_only,
        "--wrk makes enrollments only: add --enroll-only"
    );
    let url = format!("{}/roster_loadbench", args.server);
    let admin = roster::db::connect(&format!("{}/postgres", args.server), 1).await?;
    sqlx::query("DROP DATABASE IF EXISTS roster_loadbench WITH (FORCE)")
        .execute(&admin)
        .await?;
    // The binary under test migrates its database (`ROSTER_BIN` may name
    // another build than this one, to compare two versions in one session).
    let migrated = std::process::Command::new(roster_tests::roster_bin())
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .status()?;
    anyhow::ensure!(migrated.success(), "roster migrate failed");
    let pool = roster::db::connect(&url, 48).await?;

    let pg_tps = if args.no_pgbench {
        None
    } else {
        checkpoint(&pool).await?;
        eprintln!("pgbench: {} clients, {} s ...", args.clients, args.seconds);
        Some(pgbench(&url, args.clients, args.seconds).await?)
    };

    let topic = format!("roster.bench.{}", uuid::Uuid::new_v4().simple());
    // The service as its users run it: its own process (the release build
    // beside this binary), logging at the default level.
    let mut servers = Vec::new();
    for n in 0..args.processes.max(1) {
        let name = format!("roster_bench_{n}");
        servers.push(Server::start_logging(&url, &args.kafka_brokers, &topic, &name, "info").await);
    }
    let bases: Vec<String> = servers.iter().map(Server::base).collect();
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    let base = bases[0].clone();
    let client = roster::auth::create_client(&pool, "bench", None, None, &Default::default()).await?;
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("{base}/v1/oauth/token"))
        .json(
            &json!({"grant_type": "client_credentials", "client_id": client.client_id.to_string(),
                      "client_secret": client.client_secret}),
        )
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"].as_str().context("token")?.to_string();
    let app_id = client.client_id.to_string();
    let receipts = if args.webhooks > 0 {
        let (hooks, receipts) = webhook_receiver().await?;
        for n in 0..args.webhooks {
            let r = http
                .post(format!("{base}/v1/webhook-endpoints"))
                .bearer_auth(&token)
                .header("x-appid", &app_id)
                .json(&json!({"url": format!("{hooks}/{n}")}))
                .send()
                .await?;
            anyhow::ensure!(
                r.status() == reqwest::StatusCode::CREATED,
                "endpoint: {}",
                r.text().await?
            );
        }
        Some(receipts)
    } else {
        None
    };

    // Kafka lag: command time (ce_time) → received here.
    let kafka_lags = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    if !args.kafka_brokers.is_empty() {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &args.kafka_brokers)
            .set("group.id", format!("roster-bench-{}", uuid::Uuid::new_v4().simple()))
            .set("auto.offset.reset", "earliest")
            .set("topic.metadata.refresh.interval.ms", "500")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        consumer.subscribe(&[&topic])?;
        let lags = kafka_lags.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let m = tokio::select! { _ = stop.cancelled() => break, m = consumer.recv() => m };
                let Ok(m) = m else { continue };
                let time = m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == "ce_time")
                        .and_then(|x| x.value)
                        .and_then(|v| std::str::from_utf8(v).ok().map(str::to_string))
                });
                if let Some(t) = time.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok()) {
                    let lag = chrono::Utc::now().signed_duration_since(t).to_std().unwrap_or_default();
                    lags.lock().await.push(lag);
                }
            }
        });
    }

    checkpoint(&pool).await?;
    eprintln!(
        "roster: {} clients, {} s, {} process(es) ...",
        args.clients,
        args.seconds,
        servers.len()
    );
    let cpu_before = cpu_split(&pids);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let samples = Arc::new(Mutex::new(Samples::default()));
    let mut workers = Vec::new();
    let wrk_run = args.wrk.then(|| {
        let headers = [format!("authorization: Bearer {token}"), format!("x-appid: {app_id}")];
        let (base, clients, seconds) = (base.clone(), args.clients, args.seconds);
        tokio::spawn(async move { wrk(&base, clients, seconds, &headers).await })
    });
    for w in 0..args.clients * usize::from(!args.wrk) {
        let (http, base, token, app_id, samples) = (
            reqwest::Client::new(),
            bases[w % bases.len()].clone(),
            token.clone(),
            app_id.clone(),
            samples.clone(),
        );
        let enroll_only = args.enroll_only;
        workers.push(tokio::spawn(async move {
            let mut mine = Samples::default();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let body =
                    json!({"email": format!("w{w}-{i}@example.com"), "first_name": "Load", "last_name": "Bench"});
                let t = Instant::now();
                let r = http
                    .post(format!("{base}/v1/users"))
                    .bearer_auth(&token)
                    .header("x-appid", &app_id)
                    .json(&body)
                    .send()
                    .await;
                let Ok(r) = r.map_err(|_| mine.errors += 1) else {
                    continue;
                };
                if r.status() != reqwest::StatusCode::CREATED {
                    mine.errors += 1;
                    continue;
                }
                let user: serde_json::Value = r.json().await.unwrap_or_default();
                mine.enroll.push(t.elapsed());
                if enroll_only {
                    continue;
                }
                let id = user["id"].as_str().unwrap_or_default();
                let t = Instant::now();
                let r = http
                    .patch(format!("{base}/v1/users/{id}"))
                    .bearer_auth(&token)
                    .header("x-appid", &app_id)
                    .json(&json!({"last_name": format!("Bench {i}")}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        mine.update.push(t.elapsed());
                    }
                    _ => mine.errors += 1,
                }
            }
            let mut all = samples.lock().await;
            all.enroll.extend(mine.enroll);
            all.update.extend(mine.update);
            all.errors += mine.errors;
        }));
    }
    // Projection lag: a write answered → its user visible through the read model.
    let prober = {
        let (http, base, token, app_id) = (http.clone(), base.clone(), token.clone(), app_id.clone());
        tokio::spawn(async move {
            let mut lags = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                n += 1;
                let r = http
                    .post(format!("{base}/v1/users"))
                    .bearer_auth(&token)
                    .header("x-appid", &app_id)
                    .json(&json!({"email": format!("probe-{n}@example.com")}))
                    .send()
                    .await;
                let Ok(r) = r else { continue };
                let answered = Instant::now();
                let user: serde_json::Value = r.json().await.unwrap_or_default();
                let id = user["id"].as_str().unwrap_or_default().to_string();
                loop {
                    let r = http
                        .get(format!("{base}/v1/users/{id}"))
                        .bearer_auth(&token)
                        .header("x-appid", &app_id)
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        lags.push(answered.elapsed());
                        break;
                    }
                    if answered.elapsed() > Duration::from_secs(10) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            lags
        })
    };
    for w in workers {
        w.await?;
    }
    let wrk_run = match wrk_run {
        Some(run) => Some(run.await??),
        None => None,
    };
    let mut projection = prober.await?;
    let cpu_after = cpu_split(&pids);
    let delivered_in_run = receipts.as_ref().map(|r| r.seen.lock().expect("seen").len());
    // Every event to every endpoint: wait for the deliverer to finish.
    let mut webhook_drain = None;
    if let Some(r) = &receipts {
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await?;
        let expected = events as usize * args.webhooks;
        let started = Instant::now();
        while r.seen.lock().expect("seen").len() < expected && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        webhook_drain = Some((expected, started.elapsed()));
    }
    // Let the publisher drain, then stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    for server in &mut servers {
        server.terminate();
        server.exited_within(Duration::from_secs(30)).await;
    }

    let elapsed = args.seconds as f64;
    let s = samples.lock().await;
    let mut enroll = s.enroll.clone();
    let mut update = s.update.clone();
    let mut commands: Vec<Duration> = enroll.iter().chain(update.iter()).copied().collect();
    enroll.sort();
    update.sort();
    commands.sort();
    projection.sort();
    let mut kafka = kafka_lags.lock().await.clone();
    kafka.sort();
    let mut enroll_rate = enroll.len() as f64 / elapsed;
    let mut commands_rate = commands.len() as f64 / elapsed;
    let mut errors = s.errors as u64;
    // (p50, p99, max) of the commands, and of the enrollments.
    let mut latency = (q(&commands, 0.5), q(&commands, 0.99), q(&commands, 1.0));
    if let Some(run) = &wrk_run {
        (enroll_rate, commands_rate, errors) = (run.rate, run.rate, run.errors);
        latency = (run.p50_ms, run.p99_ms, run.max_ms);
    }
    println!("| measurement | value |");
    println!("|---|---|");
    if let Some(tps) = pg_tps {
        println!(
            "| pgbench: INSERT of one event row per transaction, {} clients | {tps:.0} tx/s |",
            args.clients
        );
    }
    println!(
        "| roster: enrollments ({} clients{}, {}, {} process(es)) | {enroll_rate:.0} /s |",
        args.clients,
        if args.wrk { " of wrk" } else { "" },
        if args.enroll_only {
            "enroll only"
        } else {
            "enroll then update"
        },
        servers.len()
    );
    println!("| roster: updates | {:.0} /s |", update.len() as f64 / elapsed);
    println!("| roster: commands (enroll + update) | {commands_rate:.0} /s |");
    println!("| roster: errors | {errors} |");
    println!(
        "| command latency p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        latency.0, latency.1, latency.2
    );
    let enroll_latency = match &wrk_run {
        Some(run) => (run.p50_ms, run.p99_ms),
        None => (q(&enroll, 0.5), q(&enroll, 0.99)),
    };
    println!(
        "| enroll latency p50 / p99 | {:.1} / {:.1} ms |",
        enroll_latency.0, enroll_latency.1
    );
    if !args.enroll_only {
        println!(
            "| update latency p50 / p99 | {:.1} / {:.1} ms |",
            q(&update, 0.5),
            q(&update, 0.99)
        );
    }
    println!(
        "| projection lag p50 / p99 ({} probes) | {:.1} / {:.1} ms |",
        projection.len(),
        q(&projection, 0.5),
        q(&projection, 0.99)
    );
    println!(
        "| Kafka end-to-end lag p50 / p99 ({} messages) | {:.1} / {:.1} ms |",
        kafka.len(),
        q(&kafka, 0.5),
        q(&kafka, 0.99)
    );
    if let Some(tps) = pg_tps {
        println!("| ratio enrollments ÷ pgbench | {:.2} |", enroll_rate / tps);
        println!(
            "| ratio commands ÷ pgbench (each one transaction appending an event) | {:.2} |",
            commands_rate / tps
        );
    }
    if let Ok(bin) = std::env::var("ROSTER_PEER_BIN") {
        let (rate, p99, errors) = peer(
            &bin,
            &args.server,
            &args.kafka_brokers,
            args.clients,
            args.seconds,
            args.enroll_only,
            args.wrk,
        )
        .await?;
        println!(
            "| peer (cqrs-es-default): commands ({}), {} clients | {rate:.0} /s, p99 {p99:.1} ms, {errors} errors |",
            if args.enroll_only {
                "enroll only"
            } else {
                "enroll + update"
            },
            args.clients
        );
        println!(
            "| ratio roster commands ÷ peer commands | {:.2} |",
            commands_rate / rate
        );
    }
    if let (Some(r), Some((expected, drain)), Some(in_run)) = (&receipts, webhook_drain, delivered_in_run) {
        let mut lags = r.lags.lock().expect("lags").clone();
        lags.sort();
        let seen = r.seen.lock().expect("seen").len();
        println!(
            "| webhooks: {} endpoints, deliveries during the run | {:.0} /s |",
            args.webhooks,
            in_run as f64 / elapsed
        );
        println!(
            "| webhooks: delivered / expected (events × endpoints), after {:.1} s more | {seen} / {expected} |",
            drain.as_secs_f64()
        );
        println!(
            "| webhooks: command → receipt p50 / p99 / max ({} receipts) | {:.1} / {:.1} / {:.1} ms |",
            lags.len(),
            q(&lags, 0.5),
            q(&lags, 0.99),
            q(&lags, 1.0)
        );
    }
    let cores: Vec<String> = cpu_after
        .iter()
        .zip(&cpu_before)
        .map(|((name, after), (_, before))| format!("{name} {:.2}", (after - before) / elapsed))
        .collect();
    println!("| CPU during the run, cores (of 2) | {} |", cores.join(", "));
    Ok(())
}
