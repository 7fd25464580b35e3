//! Test helpers: [`spawn_app`] starts the real app (API, projector,
//! publisher) on a fresh database and its own Kafka topic, bound to port 0,
//! and gives a client that speaks to it.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use reqwest::{Method, StatusCode};
use roster::app::{App, Settings};
use roster::config::Role;
use roster_projections::publisher::KafkaConfig;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// Postgres server the tests create their databases on.
pub fn pg_server() -> String {
    std::env::var("ROSTER_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The master key of every app the tests start, in process or not: any of
/// them can read what another wrote.
pub const TEST_MASTER_KEY: &str = "cm9zdGVyLXRlc3RzLW1hc3Rlci1rZXktMzItYnl0ZXM=";

/// A vault with [`TEST_MASTER_KEY`].
pub fn test_vault() -> std::sync::Arc<roster_vault::Vault> {
    let master = roster_vault::MasterKey::from_base64(TEST_MASTER_KEY).expect("a valid key");
    std::sync::Arc::new(roster_vault::Vault::new(master, None))
}

/// Roster's encryption key in tests (PKCS#8 PEM; a test fixture, never a
/// deployment's key).
pub const TEST_ENCRYPTION_KEY: &str = include_str!("../keys/roster-test-encryption.pem");

/// Roster's side of signed and encrypted calls in tests: the test key, the
/// base URI from the Host header.
pub fn test_sealing() -> std::sync::Arc<roster::http::signed::Sealing> {
    static SEALING: std::sync::OnceLock<std::sync::Arc<roster::http::signed::Sealing>> = std::sync::OnceLock::new();
    SEALING
        .get_or_init(|| {
            let key = roster::jwe::PrivateKey::from_pem(TEST_ENCRYPTION_KEY.as_bytes()).expect("the test key");
            std::sync::Arc::new(roster::http::signed::Sealing::new(key, None).expect("sealing"))
        })
        .clone()
}

/// Webhooks in tests: receivers on this machine, retries after 200 ms and
/// 400 ms, then failed.
pub fn test_webhooks() -> roster_projections::webhooks::WebhookConfig {
    roster_projections::webhooks::WebhookConfig {
        schedule: vec![Duration::from_millis(200), Duration::from_millis(400)],
        allow_private: true,
    }
}

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub struct TestApp {
    pub base: String,
    pub pool: PgPool,
    pub database_url: String,
    pub topic: String,
    pub brokers: String,
    pub http: reqwest::Client,
    app: Option<App>,
}

/// A client's credentials and token.
#[derive(Debug, Clone)]
pub struct Creds {
    pub client_id: String,
    pub client_secret: String,
    pub token: String,
    pub company_id: String,
}

/// A response: status, headers and JSON body (`Null` if none).
#[derive(Debug)]
pub struct Res {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Res {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Some(brokers())).await
}

/// Starts an app publishing to `brokers` (`None`: no publisher).
pub async fn spawn_app_with(brokers: Option<String>) -> TestApp {
    spawn_app_on(&pg_server(), brokers).await
}

/// Starts an app on a database of its own on the Postgres server at
/// `server` (a URL without a database), publishing to `brokers`.
pub async fn spawn_app_on(server: &str, brokers: Option<String>) -> TestApp {
    spawn_app_configured(server, brokers, test_webhooks()).await
}

/// [`spawn_app_on`] with webhook settings of the test's own.
pub async fn spawn_app_configured(
    server: &str,
    brokers: Option<String>,
    webhooks: roster_projections::webhooks::WebhookConfig,
) -> TestApp {
    spawn_app_sealed(server, brokers, webhooks, test_sealing()).await
}

/// [`spawn_app_configured`] with Roster's side of signed and encrypted
/// calls (its key, its public URL) of the test's own.
pub async fn spawn_app_sealed(
    server: &str,
    brokers: Option<String>,
    webhooks: roster_projections::webhooks::WebhookConfig,
    sealing: std::sync::Arc<roster::http::signed::Sealing>,
) -> TestApp {
    if std::env::var_os("RUST_LOG").is_some() {
        roster::telemetry::init(roster::config::LogFormat::Pretty);
    }
    let database_url = format!("{server}/roster_test_{}", Uuid::new_v4().simple());
    let pool = roster::db::prepare(&database_url, 8).await.expect("database prepared");
    let topic = format!("roster.test.{}", Uuid::new_v4().simple());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let settings = Settings {
        roles: vec![Role::Api, Role::Projector, Role::Publisher],
        kafka: brokers.clone().map(|brokers| KafkaConfig {
            brokers,
            topic: topic.clone(),
        }),
        vault: test_vault(),
        webhooks,
        sealing,
    };
    let app = App::start(pool.clone(), settings, Some(listener))
        .await
        .expect("app starts");
    let base = format!("http://{}", app.addr.expect("api address"));
    TestApp {
        base,
        pool,
        database_url,
        topic,
        brokers: brokers.unwrap_or_default(),
        http: reqwest::Client::new(),
        app: Some(app),
    }
}

impl TestApp {
    /// A second process on this app's database: its own API, command
    /// runner and caches (no projector or publisher). Stop it with
    /// [`TestApp::stop`] before the first one's cleanup.
    pub async fn beside(&self) -> TestApp {
        self.beside_with(vec![Role::Api]).await
    }

    /// [`TestApp::beside`] running `roles`.
    pub async fn beside_with(&self, roles: Vec<Role>) -> TestApp {
        let pool = roster::db::connect(&self.database_url, 4)
            .await
            .expect("database reachable");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let settings = Settings {
            roles,
            kafka: None,
            vault: test_vault(),
            webhooks: test_webhooks(),
            sealing: test_sealing(),
        };
        let app = App::start(pool.clone(), settings, Some(listener))
            .await
            .expect("app starts");
        TestApp {
            base: format!("http://{}", app.addr.expect("api address")),
            pool,
            database_url: self.database_url.clone(),
            topic: self.topic.clone(),
            brokers: String::new(),
            http: reqwest::Client::new(),
            app: Some(app),
        }
    }

    /// Stops the app, leaving its database.
    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        self.pool.close().await;
    }

    /// Stops the app and drops its database.
    pub async fn cleanup(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        self.pool.close().await;
        let name = self.database_url.rsplit('/').next().unwrap_or_default().to_string();
        if let Ok(admin) = PgPool::connect(&format!("{}/postgres", pg_server())).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&admin)
                .await;
        }
    }

    /// Provisions a client of `company` with `scopes` (all when `None`) and
    /// gets it a token.
    pub async fn creds(&self, company: &str, scopes: Option<&[&str]>) -> Creds {
        let scopes: Option<Vec<String>> = scopes.map(|s| s.iter().map(|x| x.to_string()).collect());
        let c = roster::auth::create_client(&self.pool, company, None, scopes.as_deref(), &Default::default())
            .await
            .expect("client created");
        self.creds_of(&Creds {
            client_id: c.client_id.to_string(),
            client_secret: c.client_secret,
            token: String::new(),
            company_id: c.company_id,
        })
        .await
    }

    /// A fresh token for the client `c` names (one of a restored database,
    /// say).
    pub async fn creds_of(&self, c: &Creds) -> Creds {
        let res = self
            .http
            .post(format!("{}/v1/oauth/token", self.base))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &c.client_id),
                ("client_secret", &c.client_secret),
            ])
            .send()
            .await
            .expect("token request");
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.expect("token json");
        Creds {
            token: body["access_token"].as_str().expect("token").to_string(),
            ..c.clone()
        }
    }

    pub fn request(&self, creds: Option<&Creds>, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(c) = creds {
            r = r.bearer_auth(&c.token).header("x-appid", &c.client_id);
        }
        r
    }

    pub async fn send(r: reqwest::RequestBuilder) -> Res {
        let res = r.send().await.expect("request sent");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Res { status, headers, body }
    }

    /// Any request with a JSON body (or none).
    pub async fn call(&self, creds: &Creds, method: Method, path: &str, body: Option<Value>) -> Res {
        let mut r = self.request(Some(creds), method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        Self::send(r).await
    }

    pub async fn get(&self, creds: &Creds, path: &str) -> Res {
        Self::send(self.request(Some(creds), Method::GET, path)).await
    }

    pub async fn post(&self, creds: &Creds, path: &str, body: &Value) -> Res {
        Self::send(self.request(Some(creds), Method::POST, path).json(body)).await
    }

    /// Enrolls a user (asserting 201) and returns its id.
    pub async fn enroll(&self, creds: &Creds, body: Value) -> String {
        let r = self.post(creds, "/v1/users", &body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().expect("id").to_string()
    }

    /// GET that waits for the write behind `token` to be visible.
    pub async fn get_after(&self, creds: &Creds, path: &str, token: &str) -> Res {
        Self::send(
            self.request(Some(creds), Method::GET, path)
                .header("roster-consistency-token", token),
        )
        .await
    }

    /// Reads this app's topic until `expected` messages arrived or nothing
    /// new came for a while (tansu's high watermark can lag, so we do not
    /// trust it).
    pub async fn consume(&self, expected: usize, patience: Duration) -> Vec<Record> {
        consume(&self.brokers, &self.topic, expected, patience).await
    }
}

/// A Kafka message as the tests inspect it.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub value: Value,
    /// No value at all (a tombstone), not even `null`.
    pub tombstone: bool,
    pub headers: HashMap<String, String>,
    pub partition: i32,
    pub offset: i64,
}

pub async fn consume(brokers: &str, topic: &str, expected: usize, patience: Duration) -> Vec<Record> {
    consume_until(brokers, topic, patience, |records| records.len() >= expected).await
}

/// Reads `topic` from the start until `done` holds for what arrived, or
/// `patience` runs out.
pub async fn consume_until(
    brokers: &str,
    topic: &str,
    patience: Duration,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("roster-test-{}", Uuid::new_v4().simple()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // Notice a topic created after we subscribed.
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + patience;
    while !done(&out) && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            Ok(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_string(),
                                    String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Record {
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    value: serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or(Value::Null),
                    tombstone: m.payload().is_none(),
                    headers,
                    partition: m.partition(),
                    offset: m.offset(),
                });
            }
            Ok(Err(e)) => eprintln!("consumer error: {e}"),
            Err(_) => {}
        }
    }
    out
}

/// A running tansu broker of the test's own, on a free port.
pub struct Broker {
    pub addr: String,
    child: std::process::Child,
}

impl Broker {
    pub fn free_addr() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    }

    /// Starts tansu with in-memory storage on `addr` and waits until it
    /// accepts connections.
    pub async fn start(addr: &str) -> Broker {
        let url = format!("tcp://{addr}");
        let child = std::process::Command::new("tansu")
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tansu starts (is it on PATH? scripts/infra.sh installs it)");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Broker {
            addr: addr.to_string(),
            child,
        }
    }
}

impl Broker {
    /// SIGSTOP: the broker stops answering but keeps its connections and data.
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }
}

/// Sends `kill -<sig>` to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Captures every log line of this test process (debug level and up), for
/// tests that scan logs. Each nextest test is its own process, so the global
/// subscriber is the test's own.
pub fn capture_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    #[derive(Clone)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Sink(buffer.clone());
    let _ = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .try_init();
    buffer
}

/// A fresh database URL on the test server (created on first use).
pub fn fresh_database_url() -> String {
    format!("{}/roster_test_{}", pg_server(), Uuid::new_v4().simple())
}

pub fn fresh_topic() -> String {
    format!("roster.test.{}", Uuid::new_v4().simple())
}

/// The `roster` binary built beside the tests (`ROSTER_BIN` overrides).
/// `scripts/test.sh` builds it before running the suite.
pub fn roster_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("ROSTER_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable");
    // A test: target/<profile>/deps/<test>-<hash>; a bench binary:
    // target/<profile>/<bench>. Either way, target/<profile>/roster.
    let dir = exe.parent().expect("target directory");
    let bin = if dir.ends_with("deps") {
        dir.parent().expect("target directory").join("roster")
    } else {
        dir.join("roster")
    };
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin roster` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A `roster serve` process of the test's own: a real process that can be
/// killed, signalled and restarted on the same address.
pub struct Server {
    pub addr: String,
    pub name: String,
    pub log: std::path::PathBuf,
    env: Vec<(&'static str, String)>,
    child: Option<std::process::Child>,
}

impl Server {
    /// Starts `roster serve` (every role) on a free port; `name` becomes
    /// the Postgres `application_name` of its connections, so tests can tell
    /// which process holds which lock.
    pub async fn start(database_url: &str, brokers: &str, topic: &str, name: &str) -> Server {
        let filter = "debug,hyper=info,h2=info,reqwest=info,rdkafka=info";
        Server::start_logging(database_url, brokers, topic, name, filter).await
    }

    /// [`Server::start`] with `RUST_LOG` = `filter`.
    pub async fn start_logging(database_url: &str, brokers: &str, topic: &str, name: &str, filter: &str) -> Server {
        let separator = if database_url.contains('?') { '&' } else { '?' };
        let env = vec![
            (
                "DATABASE_URL",
                format!("{database_url}{separator}application_name={name}"),
            ),
            ("ROSTER_LISTEN", Broker::free_addr()),
            ("KAFKA_BROKERS", brokers.to_string()),
            ("KAFKA_TOPIC", topic.to_string()),
            ("ROSTER_LOG_FORMAT", "json".to_string()),
            ("RUST_LOG", filter.to_string()),
            ("ROSTER_MASTER_KEY", TEST_MASTER_KEY.to_string()),
            ("ROSTER_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY.to_string()),
            ("ROSTER_WEBHOOK_ALLOW_PRIVATE", "true".to_string()),
            ("ROSTER_WEBHOOK_RETRY_SCHEDULE", "200ms,400ms".to_string()),
        ];
        let mut server = Server {
            addr: env[1].1.clone(),
            name: name.to_string(),
            log: std::env::temp_dir().join(format!("roster-{name}-{}.log", Uuid::new_v4().simple())),
            env,
            child: None,
        };
        server.restart().await;
        server
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Starts the process again (same address, same settings; the log is
    /// appended to) and waits until it answers `/healthz`.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = std::process::Command::new(roster_bin())
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("roster starts");
        self.child = Some(child);
        let health = format!("{}/healthz", self.base());
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{} exited at start ({status}):\n{}", self.name, self.logs());
            }
            if http.get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} did not become healthy:\n{}", self.name, self.logs());
    }

    /// SIGKILL: no cleanup of any kind.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: asks for a graceful shutdown.
    pub fn terminate(&self) {
        signal(self.pid(), "TERM");
    }

    /// Waits up to `bound` for the process to exit; its status if it did.
    pub async fn exited_within(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + bound;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl TestApp {
    /// A client for a [`Server`] process on `database_url` (which the server
    /// created and migrated).
    pub async fn attach(server: &Server, database_url: &str, brokers: &str, topic: &str) -> TestApp {
        let pool = roster::db::connect(database_url, 4).await.expect("database reachable");
        TestApp {
            base: server.base(),
            pool,
            database_url: database_url.to_string(),
            topic: topic.to_string(),
            brokers: brokers.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            app: None,
        }
    }

    /// Waits until `/readyz` shows every projection and the publisher caught
    /// up with the store (panics after `patience`).
    pub async fn settle(&self, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        let mut last = Value::Null;
        while tokio::time::Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await {
                last = r.json().await.unwrap_or(Value::Null);
                let projections_done = last["projections"]
                    .as_object()
                    .is_some_and(|p| p.values().all(|v| v["lag_events"] == 0));
                let publisher_done = last["publisher"]["lag_events"] == 0 || last["publisher"]["enabled"] == false;
                if projections_done && publisher_done {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("not caught up after {patience:?}: {last}");
    }
}

/// A Postgres server of the test's own (initdb in a temporary directory, on
/// a free port), so a test can stop and start it without disturbing the
/// others. Runs as the `postgres` user when the tests run as root.
pub struct PrivatePostgres {
    pub port: u16,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    /// Whether the tests run as root (the server then runs as `postgres`).
    root: bool,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let bin = std::env::var_os("ROSTER_PG_BIN").map(Into::into).unwrap_or_else(|| {
            let mut versions: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .expect("PostgreSQL server binaries under /usr/lib/postgresql")
                .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|b| b.join("initdb").exists())
                .collect();
            versions.sort();
            versions.pop().expect("an initdb under /usr/lib/postgresql/*/bin")
        });
        let dir = std::env::temp_dir().join(format!("roster-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("data directory");
        let port = Broker::free_addr()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let pg = PrivatePostgres { port, dir, bin, root };
        if pg.root {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.dir)
                .status()
                .expect("chown runs");
            assert!(status.success());
        }
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.up();
        pg
    }

    /// A server tool, run as the `postgres` user when we are root.
    fn command(&self, tool: &str) -> std::process::Command {
        let exe = self.bin.join(tool);
        if self.root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().expect("postgres tool runs");
        assert!(out.status.success(), "{tool} {args:?} failed: {}", output(&out));
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let mut all = vec!["-D", &data, "-w"];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        self.pg_ctl(&["-l", &log, "-o", &opts, "start"]);
    }

    /// Fast shutdown: open sessions are terminated, as in a restart.
    pub fn down(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Holds whatever reaches the failpoint `name` (`store::erasing`: an
/// erasure with its locks taken, its claims deleted, not committed) until
/// the returned sender is dropped or sent to; `reached` hears when one gets
/// there.
pub fn hold_at(name: &str) -> (std::sync::mpsc::Sender<()>, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = std::sync::Mutex::new(held);
    let (arrived, reached) = tokio::sync::mpsc::unbounded_channel();
    fail::cfg_callback(name, move || {
        let _ = arrived.send(());
        wait_for_release(&held);
    })
    .expect("failpoint");
    (release, reached)
}

/// Blocks the calling thread until `held` hears from its sender (or the
/// sender is dropped). On a worker of a multi-threaded runtime it blocks
/// through `block_in_place`, which hands the worker's other tasks to another
/// thread first: a plain blocking wait keeps the task in the worker's LIFO
/// slot, which no other worker can steal, stuck until the release, and if
/// the test waits on that task to release, both wait forever.
pub fn wait_for_release(held: &std::sync::Mutex<std::sync::mpsc::Receiver<()>>) {
    let wait = || {
        if let Ok(held) = held.lock() {
            let _ = held.recv();
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}

/// A finished tool's standard output, then its standard error.
pub fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Backends of this database waiting for a lock, once `n` wait (or after
/// 5 s, however many wait then).
pub async fn waiting_for(app: &TestApp, n: i64) -> i64 {
    let mut blocked = 0;
    for _ in 0..200 {
        blocked = waiting(app).await;
        if blocked >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    blocked
}

/// Backends of this database waiting for a lock.
pub async fn waiting(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
          WHERE NOT l.granted AND a.datname = current_database()",
    )
    .fetch_one(&app.pool)
    .await
    .expect("locks")
}

/// An account as enrollment and `POST …/accounts` take it.
pub fn account(id: &str) -> Value {
    serde_json::json!({"account_id": id, "account_id_type": "T", "status": "GOOD_STANDING", "product_code": "P",
                       "program_identifier": "G"})
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A task spawned just before a hold sits in the holding worker's LIFO
    /// slot; held through `wait_for_release`, it still runs on another
    /// worker (held with a plain blocking wait, it waits for the release).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hold_leaves_the_task_it_just_spawned_to_other_workers() {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = std::sync::Mutex::new(held);
        let (ran, done) = tokio::sync::oneshot::channel();
        let holder = tokio::spawn(async move {
            tokio::spawn(async move {
                let _ = ran.send(());
            });
            super::wait_for_release(&held);
        });
        tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("the spawned task runs while its spawner is held")
            .expect("sent");
        release.send(()).expect("released");
        holder.await.expect("holder");
    }
}
