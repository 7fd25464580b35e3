//! The operator console in a real browser: Debian's chromium driven by
//! Playwright (`tests/browser/console.mjs`, installed by `scripts/infra.sh`)
//! against the real app with the demo data of `scripts/demo-seed.py`, plus
//! two webhook endpoints, one of them delivered to a receiver in this test.

use reqwest::StatusCode;
use roster_tests::{spawn_app_with, Creds, TestApp};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test]
async fn the_console_signs_in_finds_a_user_and_walks_its_tree_and_history() {
    let app = spawn_app_with(None).await;
    let c = app.creds("acme", None).await;
    // The page and its files are served with a strict policy.
    for path in ["/console", "/console/app.js", "/console/app.css"] {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("console file");
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .expect("csp")
            .to_string();
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
    }
    let seeded = tokio::process::Command::new("python3")
        .arg(repo().join("scripts/demo-seed.py"))
        .args([&app.base, &c.client_id, &c.client_secret])
        .output()
        .await
        .expect("python3 runs the seed");
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    let seeded: serde_json::Value = serde_json::from_slice(&seeded.stdout).expect("seed prints JSON");
    let user = seeded["tree_user"].as_str().expect("tree user").to_string();
    // Search reads the user view.
    app.settle(Duration::from_secs(30)).await;

    // The webhooks page: an enabled endpoint that has delivered, and a
    // disabled one whose description is markup. An endpoint gets only the
    // events appended after it was created (CONTRACT §9), so one user is
    // enrolled after both exist: its event is what the first one delivers.
    let (port, received) = receiver().await;
    let hook = format!("http://127.0.0.1:{port}/hook");
    let r = app
        .post(&c, "/v1/webhook-endpoints", &json!({"url": hook, "description": "CRM"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let endpoint = r.body["id"].as_str().expect("endpoint id").to_string();
    let r = app
        .post(
            &c,
            "/v1/webhook-endpoints",
            &json!({"url": format!("http://127.0.0.1:{port}/markup"), "description": "<img src=x onerror=alert(1)>",
                    "event_types": ["roster.user.updated.v1"], "disabled": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    app.enroll(
        &c,
        json!({"first_name": "Webhook", "last_name": "Probe", "email": "webhook.probe@example.com", "status": "active"}),
    )
    .await;
    let sent = delivered(&app, &c, &endpoint, Duration::from_secs(30)).await;
    assert_eq!(
        (sent["attempts"].as_i64(), sent["last_status_code"].as_i64()),
        (Some(1), Some(204)),
        "{sent}"
    );
    assert!(received.load(Ordering::SeqCst) >= 1, "the receiver got nothing");

    let mut browser = tokio::process::Command::new("node");
    browser
        .arg(repo().join("tests/browser/console.mjs"))
        .env("ROSTER_BASE", &app.base)
        .env("ROSTER_CLIENT_ID", &c.client_id)
        .env("ROSTER_CLIENT_SECRET", &c.client_secret)
        .env("ROSTER_USER", &user)
        .env("ROSTER_SEARCH", "Omar")
        .env("ROSTER_WEBHOOK_URL", &hook);
    if let Some(dir) = std::env::var_os("ROSTER_SCREENSHOTS") {
        browser.env("ROSTER_SCREENSHOTS", dir);
    }
    let run = tokio::time::timeout(Duration::from_secs(180), browser.output())
        .await
        .expect("the browser test finishes within 3 minutes")
        .expect("node runs tests/browser/console.mjs");
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "browser test failed:\n{out}\n{err}");
    println!("{out}");
    app.cleanup().await;
}

/// Polls `endpoint`'s deliveries until one is `delivered` and returns it
/// (panics after `patience`).
async fn delivered(app: &TestApp, c: &Creds, endpoint: &str, patience: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + patience;
    let path = format!("/v1/webhook-endpoints/{endpoint}/deliveries?limit=20");
    loop {
        let r = app.get(c, &path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let done = r.body["data"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["status"] == "delivered"));
        if let Some(d) = done {
            return d.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing delivered after {patience:?}: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A webhook receiver on a free port of 127.0.0.1 that answers every
/// request `204 No Content`; returns its port and how many requests it got.
async fn receiver() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { axum::http::StatusCode::NO_CONTENT }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}
