//! Webhooks (CONTRACT §9) against a real HTTP receiver in the test process;
//! every delivery it gets is checked by the Standard Webhooks reference
//! verifier (`standardwebhooks` from npm, `tests/webhooks/verify.mjs`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::response::IntoResponse;
use reqwest::{Method, StatusCode};
use roster::config::Role;
use roster_tests::{pg_server, spawn_app, spawn_app_configured, spawn_app_with, Creds, Server, TestApp};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    headers: HashMap<String, String>,
    body: String,
    json: Value,
    /// What the receiver answered (0: held, never answered).
    status: u16,
    at: Instant,
}

impl Got {
    fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }
    fn subject(&self) -> &str {
        self.json["subject"].as_str().unwrap_or_default()
    }
    fn sequence(&self) -> i64 {
        self.json["sequence"].as_i64().unwrap_or_default()
    }
}

/// What the receiver answers a request (given its body and how many
/// requests for the same event it has seen before, this one excluded).
type Rule = Box<dyn Fn(&Value, usize) -> Answer + Send>;

#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// The status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Never answers (until the connection drops).
    Hold,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    rule: Arc<Mutex<Rule>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let r = Receiver {
            url,
            got: Arc::default(),
            rule: Arc::new(Mutex::new(Box::new(|_, _| Answer::Status(204)))),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    fn answer(&self, rule: impl Fn(&Value, usize) -> Answer + Send + 'static) {
        *self.rule.lock().expect("rule") = Box::new(rule);
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().expect("got").clone()
    }

    /// Waits until `done` holds of what was received (panics after 30 s).
    async fn until(&self, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.got();
            if done(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "{what}: not within 30 s; got {got:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> axum::response::Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let id = headers.get("webhook-id").cloned().unwrap_or_default();
    let answer = {
        let seen = r.got.lock().expect("got").iter().filter(|g| g.id() == id).count();
        (r.rule.lock().expect("rule"))(&json, seen)
    };
    let status = match answer {
        Answer::Status(s) | Answer::RetryAfter(s, _) => s,
        Answer::Hold => 0,
    };
    r.got.lock().expect("got").push(Got {
        headers,
        body,
        json,
        status,
        at: Instant::now(),
    });
    match answer {
        Answer::Status(s) => AxStatus::from_u16(s).expect("status").into_response(),
        Answer::RetryAfter(s, secs) => (
            AxStatus::from_u16(s).expect("status"),
            [("retry-after", secs.to_string())],
        )
            .into_response(),
        Answer::Hold => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

/// Verifies `got` with the reference verifier and each of `secrets`:
/// for each delivery, the index of the secret that verified it.
async fn verify(secrets: &[&str], got: &[Got]) -> Vec<Option<usize>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("webhooks");
    let input = json!({
        "secrets": secrets,
        "deliveries": got.iter().map(|g| json!({"headers": g.headers, "body": g.body})).collect::<Vec<_>>(),
    });
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("verify.mjs"))
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node runs tests/webhooks/verify.mjs (scripts/infra.sh installs it)");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.to_string().as_bytes()).await.expect("write");
    }
    let out = child.wait_with_output().await.expect("verifier output");
    assert!(
        out.status.success(),
        "verifier: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("verifier line"))
        .collect();
    assert_eq!(lines.len(), got.len());
    lines
        .iter()
        .map(|l| {
            l["ok"]
                .as_bool()
                .unwrap_or(false)
                .then(|| l["by"].as_u64().unwrap_or(0) as usize)
        })
        .collect()
}

async fn create(app: &TestApp, c: &Creds, body: Value) -> Value {
    let r = app.post(c, "/v1/webhook-endpoints", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

fn person(email: &str) -> Value {
    json!({"email": email, "first_name": "Ada", "last_name": "Lovelace"})
}

async fn deliveries(app: &TestApp, c: &Creds, endpoint: &str, query: &str) -> Vec<Value> {
    let r = app
        .get(
            c,
            &format!("/v1/webhook-endpoints/{endpoint}/deliveries?limit=100{query}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"].as_array().cloned().unwrap_or_default()
}

/// Polls the deliveries list until `done` holds (panics after 30 s).
async fn deliveries_until(
    app: &TestApp,
    c: &Creds,
    endpoint: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = deliveries(app, c, endpoint, "").await;
        if done(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "{what}: not within 30 s; deliveries {d:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn deliveries_are_signed_to_the_standard_and_carry_the_event() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let rx = Receiver::start().await;
    let before = app.enroll(&c, person("before@example.com")).await;
    let endpoint = create(&app, &c, json!({"url": rx.url, "description": "CRM"})).await;
    let id = endpoint["id"].as_str().expect("id");
    let secret = endpoint["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_") && secret.len() == 6 + 44, "{secret}");
    assert_eq!(endpoint["event_types"], Value::Null);
    assert_eq!(endpoint["disabled"], false);
    // The secret is shown at creation and on its own route, nowhere else.
    let shown = app.get(&c, &format!("/v1/webhook-endpoints/{id}")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert!(shown.body.get("secret").is_none(), "{}", shown.body);
    let listed = app.get(&c, "/v1/webhook-endpoints").await;
    assert_eq!(listed.body["data"][0]["id"], id);
    assert!(!listed.body.to_string().contains(&secret));
    let read = app.get(&c, &format!("/v1/webhook-endpoints/{id}/secret")).await;
    assert_eq!(read.body["secret"], secret.as_str());

    let user = app.enroll(&c, person("ada@example.com")).await;
    let r = app
        .call(
            &c,
            Method::PATCH,
            &format!("/v1/users/{user}"),
            Some(json!({"first_name": "Augusta"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let got = rx.until("two deliveries", |g| g.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = if rx.got().len() > got.len() { rx.got() } else { got };
    // Only events appended after the endpoint was created.
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got.iter().all(|g| !g.body.contains(&before)));
    assert_eq!(verify(&[&secret], &got).await, vec![Some(0), Some(0)]);
    // A wrong secret does not verify.
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert_eq!(verify(&[other], &got).await, vec![None, None]);

    let audit = app.get(&c, &format!("/v1/users/{user}/events")).await;
    let events = audit.body["data"].as_array().expect("audit").clone();
    let (enrolled, updated) = (&got[0], &got[1]);
    assert_eq!(enrolled.json["type"], "roster.user.enrolled.v1");
    assert_eq!(enrolled.json["subject"], format!("users/{user}"));
    assert_eq!(enrolled.json["sequence"], 1);
    assert_eq!(enrolled.json["company_id"], "acme");
    assert_eq!(enrolled.json["data"]["email"], "ada@example.com");
    assert!(enrolled.json.get("erased").is_none());
    assert!(enrolled.json["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(updated.json["type"], "roster.user.updated.v1");
    assert_eq!(updated.json["sequence"], 2);
    assert_eq!(enrolled.headers["content-type"], "application/json");
    let ts: i64 = enrolled.headers["webhook-timestamp"].parse().expect("unix seconds");
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    // webhook-id is the event id; the data is the audit trail's.
    for g in [enrolled, updated] {
        let e = events
            .iter()
            .find(|e| e["event_id"] == g.id() || e["id"] == g.id())
            .unwrap_or_else(|| panic!("no audit entry {} in {events:#?}", g.id()));
        assert_eq!(e["data"], g.json["data"]);
    }
    // Recorded and listed.
    let d = deliveries_until(&app, &c, id, "both delivered", |d| {
        d.len() == 2 && d.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    assert_eq!(d[0]["event_type"], "roster.user.updated.v1", "newest first");
    assert_eq!(d[0]["event_id"], updated.id());
    assert_eq!(d[0]["attempts"], 1);
    assert_eq!(d[0]["last_status_code"], 204);
    assert_eq!(d[1]["subject"], format!("users/{user}"));
    assert_eq!(deliveries(&app, &c, id, "&status=failed").await.len(), 0);
    assert_eq!(deliveries(&app, &c, id, "&status=delivered").await.len(), 2);
    let page = app
        .get(&c, &format!("/v1/webhook-endpoints/{id}/deliveries?limit=1"))
        .await;
    let next = page.body["next_cursor"].as_str().expect("cursor");
    let rest = app
        .get(
            &c,
            &format!("/v1/webhook-endpoints/{id}/deliveries?limit=1&after={next}"),
        )
        .await;
    assert_eq!(rest.body["data"][0]["event_id"], enrolled.id());
    let bad = app
        .get(&c, &format!("/v1/webhook-endpoints/{id}/deliveries?status=lost"))
        .await;
    assert_eq!((bad.status, bad.code()), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));

    // Operations: readiness and metrics.
    let ready: Value = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["webhooks"]["pending"], 0, "{ready}");
    assert!(ready["webhooks"]["oldest_pending_s"].is_number(), "{ready}");
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("roster_webhook_attempts_total{outcome=\"delivered\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("roster_webhook_delivery_seconds_bucket"), "{metrics}");
    app.cleanup().await;
}

#[tokio::test]
async fn endpoints_are_validated_and_managed() {
    // Private addresses refused, as in production.
    let strict = roster_projections::webhooks::WebhookConfig {
        allow_private: false,
        ..roster_tests::test_webhooks()
    };
    let app = spawn_app_configured(&pg_server(), None, strict).await;
    let c = app.creds("acme", None).await;
    for (body, field) in [
        (json!({"url": "http://93.184.216.34/hook"}), "url"),
        (json!({"url": "https://127.0.0.1/hook"}), "url"),
        (json!({"url": "https://localhost:8443/hook"}), "url"),
        (json!({"url": "https://10.1.2.3/hook"}), "url"),
        (json!({"url": "https://169.254.169.254/latest/meta-data"}), "url"),
        (json!({"url": "https://[::1]/hook"}), "url"),
        (json!({"url": "/hook"}), "url"),
        (
            json!({"url": format!("https://93.184.216.34/{}", "a".repeat(2048))}),
            "url",
        ),
        (
            json!({"url": "https://93.184.216.34/", "event_types": ["roster.user.nope.v1"]}),
            "event_types",
        ),
        (
            json!({"url": "https://93.184.216.34/", "event_types": []}),
            "event_types",
        ),
        (
            json!({"url": "https://93.184.216.34/", "description": "x".repeat(501)}),
            "description",
        ),
    ] {
        let r = app.post(&c, "/v1/webhook-endpoints", &body).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
            "{body}"
        );
        assert_eq!(r.body["errors"][0]["field"], field, "{}", r.body);
    }
    let r = app
        .post(
            &c,
            "/v1/webhook-endpoints",
            &json!({"url": "https://93.184.216.34/", "secret": "mine"}),
        )
        .await;
    assert_eq!(r.code(), "VALIDATION_FAILED");
    let r = app.post(&c, "/v1/webhook-endpoints", &json!({"url": 7})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let e = create(
        &app,
        &c,
        json!({"url": "https://93.184.216.34/hook", "description": "CRM",
               "event_types": ["roster.user.updated.v1", "roster.user.updated.v1"], "disabled": true}),
    )
    .await;
    let id = e["id"].as_str().expect("id").to_string();
    assert_eq!(e["event_types"], json!(["roster.user.updated.v1"]));
    assert_eq!(
        (e["disabled"].clone(), e["disabled_reason"].clone()),
        (json!(true), json!("manual"))
    );
    let path = format!("/v1/webhook-endpoints/{id}");
    let r = app
        .call(
            &c,
            Method::PATCH,
            &path,
            Some(json!({"description": null, "event_types": null, "disabled": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["description"], Value::Null);
    assert_eq!(r.body["event_types"], Value::Null);
    assert_eq!(
        (r.body["disabled"].clone(), r.body["disabled_reason"].clone()),
        (json!(false), Value::Null)
    );
    assert_eq!(r.body["url"], "https://93.184.216.34/hook");
    let r = app
        .call(&c, Method::PATCH, &path, Some(json!({"url": "https://192.168.0.10/"})))
        .await;
    assert_eq!(r.code(), "VALIDATION_FAILED");
    // Rotation: a new secret, and the route shows it.
    let old = app.get(&c, &format!("{path}/secret")).await.body["secret"].clone();
    let rotated = app.post(&c, &format!("{path}/secret/rotate"), &json!({})).await;
    assert_eq!(rotated.status, StatusCode::OK);
    assert_ne!(rotated.body["secret"], old);
    assert_eq!(
        app.get(&c, &format!("{path}/secret")).await.body["secret"],
        rotated.body["secret"]
    );
    // An idempotent create: the repeat answers the endpoint, not its secret
    // (which is kept in no idempotency record).
    let once = |app: &TestApp| {
        app.request(Some(&c), Method::POST, "/v1/webhook-endpoints")
            .header("idempotency-key", "create-1")
            .json(&json!({"url": "https://93.184.216.34/other"}))
    };
    let first = TestApp::send(once(&app)).await;
    let again = TestApp::send(once(&app)).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["id"], first.body["id"]);
    assert!(first.body["secret"].is_string());
    assert!(again.body.get("secret").is_none(), "{}", again.body);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE body::text LIKE '%whsec_%'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(stored, 0);
    // Secrets are stored wrapped, not as text.
    let plain: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_endpoints WHERE position(convert_to($1, 'UTF8') IN secret) > 0",
    )
    .bind(
        first.body["secret"]
            .as_str()
            .expect("secret")
            .trim_start_matches("whsec_"),
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(plain, 0);

    // Tenancy: another company's endpoint does not exist.
    let other = app.creds("globex", None).await;
    for (method, p) in [
        (Method::GET, path.clone()),
        (Method::PATCH, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::GET, format!("{path}/secret")),
        (Method::POST, format!("{path}/secret/rotate")),
        (Method::GET, format!("{path}/deliveries")),
        (Method::POST, format!("{path}/replay")),
    ] {
        let body = match method {
            Method::PATCH => Some(json!({"disabled": true})),
            Method::POST if p.ends_with("replay") => Some(json!({"since": "2020-01-01T00:00:00Z"})),
            Method::POST => Some(json!({})),
            _ => None,
        };
        let r = app.call(&other, method.clone(), &p, body).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "WEBHOOK_ENDPOINT_NOT_FOUND"),
            "{method} {p}"
        );
    }
    let theirs = app.get(&other, "/v1/webhook-endpoints").await;
    assert_eq!(theirs.body["data"], json!([]));
    let r = app.get(&c, "/v1/webhook-endpoints/not-an-id").await;
    assert_eq!(r.code(), "WEBHOOK_ENDPOINT_NOT_FOUND");
    // The scope.
    let reader = app.creds("acme", Some(&["users:read", "users:write"])).await;
    let r = app.get(&reader, "/v1/webhook-endpoints").await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    // Deleted: gone.
    let r = app.call(&c, Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&c, &path).await.status, StatusCode::NOT_FOUND);
    app.cleanup().await;
}

#[tokio::test]
async fn an_address_that_turns_private_is_refused_at_send() {
    let strict = roster_projections::webhooks::WebhookConfig {
        allow_private: false,
        ..roster_tests::test_webhooks()
    };
    let app = spawn_app_configured(&pg_server(), None, strict).await;
    let c = app.creds("acme", None).await;
    let rx = Receiver::start().await;
    let port = rx
        .url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .expect("port");
    let literal = create(&app, &c, json!({"url": "https://93.184.216.34/hook"})).await;
    let named = create(&app, &c, json!({"url": "https://93.184.216.34/hook"})).await;
    // DNS (or the row) changes after the check at creation.
    for (e, url) in [
        (&literal, format!("http://127.0.0.1:{port}/hook")),
        (&named, format!("http://localhost:{port}/hook")),
    ] {
        sqlx::query("UPDATE webhook_endpoints SET url = $2 WHERE id = $1::uuid")
            .bind(e["id"].as_str())
            .bind(url)
            .execute(&app.pool)
            .await
            .expect("update");
    }
    app.enroll(&c, person("ssrf@example.com")).await;
    for e in [&literal, &named] {
        let d = deliveries_until(&app, &c, e["id"].as_str().expect("id"), "attempted", |d| {
            d.len() == 1 && d[0]["attempts"].as_i64() >= Some(1) && !d[0]["last_error"].is_null()
        })
        .await;
        assert_eq!(d[0]["last_status_code"], Value::Null);
        assert!(
            d[0]["last_error"].as_str().is_some_and(|e| e.contains("not public")),
            "{:#}",
            d[0]
        );
    }
    assert!(rx.got().is_empty(), "the private receiver was called");
    app.cleanup().await;
}

#[tokio::test]
async fn a_failing_event_holds_back_its_users_later_events_but_no_other_user() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let rx = Receiver::start().await;
    // The enrolment of A fails twice, then succeeds.
    rx.answer(|body, seen| {
        if body["data"]["email"] == "a@example.com" && seen < 2 {
            Answer::Status(500)
        } else {
            Answer::Status(200)
        }
    });
    create(&app, &c, json!({"url": rx.url})).await;
    let user_a = app.enroll(&c, person("a@example.com")).await;
    let path = format!("/v1/users/{user_a}");
    for name in ["B1", "B2"] {
        let r = app
            .call(&c, Method::PATCH, &path, Some(json!({"first_name": name})))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let user_b = app.enroll(&c, person("b@example.com")).await;
    let got = rx
        .until("every event delivered", |g| {
            g.iter().filter(|g| g.status == 200).count() >= 4
        })
        .await;
    let a_subject = format!("users/{user_a}");
    let b_subject = format!("users/{user_b}");
    let of = |s: &str| got.iter().filter(|g| g.subject() == s).cloned().collect::<Vec<_>>();
    let a_got = of(&a_subject);
    // Fails twice, then A's events in order, each once: nothing of A is
    // sent while the one before it is still failing.
    let seqs: Vec<(i64, u16)> = a_got.iter().map(|g| (g.sequence(), g.status)).collect();
    assert_eq!(seqs, vec![(1, 500), (1, 500), (1, 200), (2, 200), (3, 200)]);
    // B was not held back by A: it went while A's enrolment was failing
    // (the schedule's waits are 200 and 400 ms).
    let b_got = of(&b_subject);
    assert_eq!(b_got.len(), 1);
    let a_first_ok = a_got.iter().find(|g| g.status == 200).expect("A delivered").at;
    assert!(b_got[0].at < a_first_ok, "B waited for A");
    let secret = app
        .get(
            &c,
            &format!(
                "/v1/webhook-endpoints/{}/secret",
                app.get(&c, "/v1/webhook-endpoints").await.body["data"][0]["id"]
                    .as_str()
                    .expect("id")
            ),
        )
        .await
        .body["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    assert!(verify(&[&secret], &got).await.iter().all(Option::is_some));
    app.cleanup().await;
}

#[tokio::test]
async fn retries_end_in_failed_and_replay_delivers_again_in_order() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let rx = Receiver::start().await;
    let start = chrono::Utc::now();
    let e = create(&app, &c, json!({"url": rx.url})).await;
    let id = e["id"].as_str().expect("id").to_string();
    // Every attempt at the enrolment fails, with a Retry-After too short to
    // matter; the schedule (200 ms, 400 ms) then gives up.
    rx.answer(|body, _| {
        if body["sequence"] == 1 {
            Answer::Status(503)
        } else {
            Answer::Status(200)
        }
    });
    let user = app.enroll(&c, person("f@example.com")).await;
    let r = app
        .call(
            &c,
            Method::PATCH,
            &format!("/v1/users/{user}"),
            Some(json!({"first_name": "Z"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let d = deliveries_until(&app, &c, &id, "failed, then the next one delivered", |d| {
        d.len() == 2 && d[1]["status"] == "failed" && d[0]["status"] == "delivered"
    })
    .await;
    assert_eq!(d[1]["attempts"], 3, "1 + the schedule's 2 retries");
    assert_eq!(d[1]["last_status_code"], 503);
    assert_eq!(d[1]["next_attempt_at"], Value::Null);
    let got = rx.got();
    assert_eq!(
        got.iter().map(|g| (g.sequence(), g.status)).collect::<Vec<_>>(),
        vec![(1, 503), (1, 503), (1, 503), (2, 200)],
        "the update waits until the enrolment failed for good"
    );
    // The retries waited as scheduled (±10 %).
    let waits: Vec<Duration> = got.windows(2).take(2).map(|w| w[1].at - w[0].at).collect();
    assert!(waits[0] >= Duration::from_millis(170), "{waits:?}");
    assert!(waits[1] >= Duration::from_millis(350), "{waits:?}");
    let failed = deliveries(&app, &c, &id, "&status=failed").await;
    assert_eq!(failed.len(), 1);

    // Only the failed one, now that the receiver is well.
    rx.answer(|_, _| Answer::Status(200));
    let since = json!({"since": start.to_rfc3339(), "only_failed": true});
    let r = app
        .post(&c, &format!("/v1/webhook-endpoints/{id}/replay"), &since)
        .await;
    assert_eq!(
        (r.status, r.body.clone()),
        (StatusCode::ACCEPTED, json!({"replayed": 1}))
    );
    rx.until("the failed one again", |g| g.len() == 5).await;
    assert_eq!(rx.got()[4].sequence(), 1);
    let d = deliveries_until(&app, &c, &id, "all delivered", |d| {
        d.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    assert_eq!(d[1]["attempts"], 1, "a replay starts over");

    // Everything since the start: both again, in order, same ids.
    let r = app
        .post(
            &c,
            &format!("/v1/webhook-endpoints/{id}/replay"),
            &json!({"since": start.to_rfc3339()}),
        )
        .await;
    assert_eq!(r.body, json!({"replayed": 2}));
    let got = rx.until("both again", |g| g.len() == 7).await;
    assert_eq!((got[5].sequence(), got[6].sequence()), (1, 2));
    assert_eq!(got[5].id(), got[4].id());
    assert_eq!(got[6].id(), got[3].id());
    // A future instant replays nothing; a bad one is refused.
    let r = app
        .post(
            &c,
            &format!("/v1/webhook-endpoints/{id}/replay"),
            &json!({"since": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.body, json!({"replayed": 0}));
    let r = app
        .post(
            &c,
            &format!("/v1/webhook-endpoints/{id}/replay"),
            &json!({"since": "yesterday"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    app.cleanup().await;
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_enabling_it_delivers_what_it_missed() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let rx = Receiver::start().await;
    rx.answer(|_, _| Answer::Status(410));
    let e = create(
        &app,
        &c,
        json!({"url": rx.url, "event_types": ["roster.user.enrolled.v1"]}),
    )
    .await;
    let id = e["id"].as_str().expect("id").to_string();
    let first = app.enroll(&c, person("g1@example.com")).await;
    let path = format!("/v1/webhook-endpoints/{id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = app.get(&c, &path).await.body;
        if e["disabled"] == true {
            assert_eq!(e["disabled_reason"], "gone");
            break;
        }
        assert!(Instant::now() < deadline, "not disabled: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rx.got().len(), 1);
    // Nothing is sent while disabled; it is recorded.
    let second = app.enroll(&c, person("g2@example.com")).await;
    deliveries_until(&app, &c, &id, "recorded", |d| d.len() == 2).await;
    // Updates are not subscribed to.
    let r = app
        .call(
            &c,
            Method::PATCH,
            &format!("/v1/users/{first}"),
            Some(json!({"first_name": "Q"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.got().len(), 1, "nothing goes to a disabled endpoint");
    rx.answer(|_, _| Answer::Status(200));
    let r = app
        .call(&c, Method::PATCH, &path, Some(json!({"disabled": false})))
        .await;
    assert_eq!(r.body["disabled_reason"], Value::Null);
    let got = rx
        .until("what it missed", |g| g.iter().filter(|g| g.status == 200).count() == 2)
        .await;
    let subjects: Vec<&str> = got.iter().filter(|g| g.status == 200).map(Got::subject).collect();
    assert_eq!(subjects, vec![format!("users/{first}"), format!("users/{second}")]);
    assert!(got.iter().all(|g| g.json["type"] == "roster.user.enrolled.v1"));
    app.cleanup().await;
}

#[tokio::test]
async fn after_a_rotation_both_secrets_sign_for_a_day() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let rx = Receiver::start().await;
    let e = create(&app, &c, json!({"url": rx.url})).await;
    let id = e["id"].as_str().expect("id");
    let old = e["secret"].as_str().expect("secret").to_string();
    let new = app
        .post(&c, &format!("/v1/webhook-endpoints/{id}/secret/rotate"), &json!({}))
        .await
        .body["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    app.enroll(&c, person("r@example.com")).await;
    let got = rx.until("one delivery", |g| g.len() == 1).await;
    assert_eq!(got[0].headers["webhook-signature"].split(' ').count(), 2);
    // A receiver with either secret accepts it.
    assert_eq!(verify(&[&old], &got).await, vec![Some(0)]);
    assert_eq!(verify(&[&new], &got).await, vec![Some(0)]);
    // A day later only the new one signs.
    sqlx::query("UPDATE webhook_endpoints SET previous_until = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .expect("age the rotation");
    app.enroll(&c, person("s@example.com")).await;
    let got = rx.until("two deliveries", |g| g.len() == 2).await;
    assert_eq!(got[1].headers["webhook-signature"].split(' ').count(), 1);
    assert_eq!(verify(&[&old], &got[1..]).await, vec![None]);
    assert_eq!(verify(&[&new], &got[1..]).await, vec![Some(0)]);
    app.cleanup().await;
}

#[tokio::test]
async fn an_erased_users_earlier_events_are_sent_without_data() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let rx = Receiver::start().await;
    // Disabled: deliveries are recorded, not sent.
    let e = create(&app, &c, json!({"url": rx.url, "disabled": true})).await;
    let id = e["id"].as_str().expect("id").to_string();
    let user = app.enroll(&c, person("erase-me@example.com")).await;
    deliveries_until(&app, &c, &id, "recorded", |d| d.len() == 1).await;
    let r = app.call(&c, Method::DELETE, &format!("/v1/users/{user}"), None).await;
    assert!(r.status.is_success(), "{}", r.body);
    let r = app
        .call(
            &c,
            Method::PATCH,
            &format!("/v1/webhook-endpoints/{id}"),
            Some(json!({"disabled": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let got = rx.until("the enrolment and the erasure", |g| g.len() >= 2).await;
    let enrolled = got.iter().find(|g| g.sequence() == 1).expect("enrolment");
    assert_eq!(enrolled.json["data"], Value::Null);
    assert_eq!(enrolled.json["erased"], true);
    assert_eq!(enrolled.json["type"], "roster.user.enrolled.v1");
    assert!(!enrolled.body.contains("erase-me"));
    let erased = got
        .iter()
        .find(|g| g.json["type"] == "roster.user.erased.v1")
        .expect("erased event");
    assert!(erased.sequence() > 1);
    let secret = app.get(&c, &format!("/v1/webhook-endpoints/{id}/secret")).await.body["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    assert!(verify(&[&secret], &got).await.iter().all(Option::is_some));
    // Nothing stored for webhooks holds the person.
    let stored: String =
        sqlx::query_scalar("SELECT coalesce(string_agg(row_to_json(d)::text, ''), '') FROM webhook_deliveries d")
            .fetch_one(&app.pool)
            .await
            .expect("rows");
    assert!(!stored.contains("erase-me") && !stored.contains("Lovelace"), "{stored}");
    app.cleanup().await;
}

#[tokio::test]
async fn endpoints_get_their_own_companys_events_only_and_once_across_processes() {
    let app = spawn_app().await;
    // A second process with the deliverer too: one leads, the other waits.
    let second = app.beside_with(vec![Role::Api, Role::Publisher]).await;
    let a = app.creds("acme", None).await;
    let b = app.creds("globex", None).await;
    let (rx_a, rx_b) = (Receiver::start().await, Receiver::start().await);
    create(&app, &a, json!({"url": rx_a.url})).await;
    create(&second, &b, json!({"url": rx_b.url})).await;
    for i in 0..20 {
        let (app, c) = if i % 2 == 0 { (&app, &a) } else { (&second, &a) };
        app.enroll(c, person(&format!("t{i}@example.com"))).await;
    }
    app.enroll(&b, person("only-b@example.com")).await;
    rx_a.until("acme's 20", |g| g.len() >= 20).await;
    rx_b.until("globex's 1", |g| !g.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_a = rx_a.got();
    assert_eq!(got_a.len(), 20, "each event once");
    assert!(got_a.iter().all(|g| g.json["company_id"] == "acme"));
    let got_b = rx_b.got();
    assert_eq!(got_b.len(), 1);
    assert_eq!(got_b[0].json["data"]["email"], "only-b@example.com");
    second.stop().await;
    app.cleanup().await;
}

/// `kill -9` with attempts under way (sent, the answer not yet recorded)
/// and deliveries recorded but not yet sent: after a restart every event
/// reaches the receiver, the interrupted ones again.
#[tokio::test]
async fn a_crash_around_sending_loses_no_delivery() {
    let database_url = roster_tests::fresh_database_url();
    let mut server = Server::start(&database_url, "", &roster_tests::fresh_topic(), "webhook-crash").await;
    let app = TestApp::attach(&server, &database_url, "", "").await;
    let c = app.creds("acme", None).await;
    let rx = Receiver::start().await;
    // Every attempt is held: the per-endpoint bound fills up, and what
    // comes after is recorded and waits.
    rx.answer(|_, _| Answer::Hold);
    let e = create(&app, &c, json!({"url": rx.url})).await;
    let id = e["id"].as_str().expect("id").to_string();
    let bound = roster_projections::webhooks::deliver::PER_ENDPOINT as usize;
    let n = bound + 4;
    let mut users = Vec::new();
    for i in 0..n {
        users.push(app.enroll(&c, person(&format!("k{i}@example.com"))).await);
    }
    rx.until("the bound's worth held", |g| g.len() == bound).await;
    let d = deliveries_until(&app, &c, &id, "all recorded", |d| d.len() == n).await;
    // None settled: `bound` sent and unanswered, the rest recorded only.
    assert!(
        d.iter().all(|d| d["status"] == "pending" && d["attempts"] == 0),
        "{d:#?}"
    );
    assert_eq!(rx.got().len(), bound);
    server.kill9();
    rx.answer(|_, _| Answer::Status(200));
    server.restart().await;
    let got = rx
        .until("every event delivered", |g| {
            let ok: std::collections::HashSet<&str> = g.iter().filter(|g| g.status == 200).map(Got::id).collect();
            ok.len() == n
        })
        .await;
    // Nothing skipped; the ones under way at the crash were sent again.
    let held: std::collections::HashSet<&str> = got.iter().filter(|g| g.status == 0).map(Got::id).collect();
    let delivered: std::collections::HashSet<&str> = got.iter().filter(|g| g.status == 200).map(Got::id).collect();
    assert_eq!(held.len(), bound);
    assert!(held.is_subset(&delivered));
    let subjects: std::collections::HashSet<String> = got
        .iter()
        .filter(|g| g.status == 200)
        .map(|g| g.subject().to_string())
        .collect();
    for u in &users {
        assert!(subjects.contains(&format!("users/{u}")), "{u} never delivered");
    }
    deliveries_until(&app, &c, &id, "all settled", |d| {
        d.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    drop(server);
    app.cleanup().await;
}

#[tokio::test]
async fn a_longer_retry_after_is_honoured() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let rx = Receiver::start().await;
    // The schedule says 200 ms; the receiver asks for 1 s, then accepts.
    rx.answer(|_, seen| {
        if seen == 0 {
            Answer::RetryAfter(429, 1)
        } else {
            Answer::Status(200)
        }
    });
    create(&app, &c, json!({"url": rx.url})).await;
    app.enroll(&c, person("later@example.com")).await;
    let got = rx.until("the retry", |g| g.len() == 2).await;
    let wait = got[1].at - got[0].at;
    assert!(wait >= Duration::from_millis(950), "retried after {wait:?}");
    assert_eq!((got[0].status, got[1].status), (429, 200));
    app.cleanup().await;
}

#[tokio::test]
async fn a_deleted_endpoint_gets_nothing_more() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let (gone, kept) = (Receiver::start().await, Receiver::start().await);
    let e = create(&app, &c, json!({"url": gone.url})).await;
    create(&app, &c, json!({"url": kept.url})).await;
    app.enroll(&c, person("one@example.com")).await;
    gone.until("the first event", |g| g.len() == 1).await;
    let r = app
        .call(
            &c,
            Method::DELETE,
            &format!("/v1/webhook-endpoints/{}", e["id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    app.enroll(&c, person("two@example.com")).await;
    // The other endpoint got the second event: the deliverer has been
    // past it, and sent the deleted one nothing.
    kept.until("the second event", |g| g.len() == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gone.got().len(), 1);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1::uuid")
        .bind(e["id"].as_str())
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0, "its deliveries went with it");
    app.cleanup().await;
}

/// An endpoint whose creation has read the log's head but not committed
/// when an event is appended gets that event: the recorder's batch waits
/// for the creation (both lock the recorder's checkpoint row) and then sees
/// the endpoint. Without that lock the batch passes the event before the
/// endpoint exists for it, and it is never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_appended_while_an_endpoint_is_created_reaches_it() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    let rx = Receiver::start().await;
    let (release, mut reached) = roster_tests::hold_at("webhooks::creating");
    let creating = tokio::spawn(TestApp::send(
        app.request(Some(&c), Method::POST, "/v1/webhook-endpoints")
            .json(&json!({"url": rx.url})),
    ));
    reached.recv().await.expect("the creation is held");
    let user = app.enroll(&c, person("race@example.com")).await;
    let position: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("head");
    // Until the recorder has either passed the event or is waiting for the
    // creation's lock.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (passed, waiting): (bool, bool) = sqlx::query_as(
            "SELECT (SELECT position >= $1 FROM subscriber_checkpoints WHERE name = 'webhook_deliverer'),
                    EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                             WHERE NOT l.granted AND c.relname = 'subscriber_checkpoints')
                    OR EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted AND locktype = 'transactionid')",
        )
        .bind(position)
        .fetch_one(&app.pool)
        .await
        .expect("state");
        if passed || waiting {
            break;
        }
        assert!(Instant::now() < deadline, "the recorder neither passed nor waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release.send(()).expect("release");
    let created = creating.await.expect("creation");
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let got = rx
        .until("the event appended during the creation", |g| !g.is_empty())
        .await;
    assert_eq!(got[0].subject(), format!("users/{user}"));
    app.cleanup().await;
}
