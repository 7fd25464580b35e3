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
    if std::env::var_os("RUST_LOG").is_some() {
        roster::telemetry::init(roster::config::LogFormat::Pretty);
    }
    let database_url = format!("{}/roster_test_{}", pg_server(), Uuid::new_v4().simple());
    let pool = roster::db::prepare(&database_url, 8).await.expect("database prepared");
    let topic = format!("roster.test.{}", Uuid::new_v4().simple());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let settings = Settings {
        roles: vec![Role::Api, Role::Projector, Role::Publisher],
        kafka: brokers.clone().map(|brokers| KafkaConfig {
            brokers,
            topic: topic.clone(),
        }),
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
        let c = roster::auth::create_client(&self.pool, company, None, scopes.as_deref())
            .await
            .expect("client created");
        let res = self
            .http
            .post(format!("{}/v1/oauth/token", self.base))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &c.client_id.to_string()),
                ("client_secret", &c.client_secret),
            ])
            .send()
            .await
            .expect("token request");
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.expect("token json");
        Creds {
            client_id: c.client_id.to_string(),
            client_secret: c.client_secret,
            token: body["access_token"].as_str().expect("token").to_string(),
            company_id: c.company_id,
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
    pub headers: HashMap<String, String>,
    pub partition: i32,
    pub offset: i64,
}

pub async fn consume(brokers: &str, topic: &str, expected: usize, patience: Duration) -> Vec<Record> {
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
    while out.len() < expected && tokio::time::Instant::now() < deadline {
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
