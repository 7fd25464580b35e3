use reqwest::{Method, StatusCode};
use roster_tests::{spawn_app, spawn_app_with, TestApp};
use serde_json::json;

#[tokio::test]
async fn health_readiness_metrics_and_openapi() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let r = app.post(&c, "/v1/users", &json!({"email": "a@example.com"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let token = r.header("roster-consistency-token").expect("token").to_string();
    app.get_after(&c, "/v1/users", &token).await;

    let r = TestApp::send(app.request(None, Method::GET, "/healthz")).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("ok")));

    let r = TestApp::send(app.request(None, Method::GET, "/readyz")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "ready");
    assert_eq!(r.body["projections"]["user_view"]["lag_events"], 0);
    assert!(r.body["publisher"]["lag_events"].is_number());

    let r = TestApp::send(app.request(None, Method::GET, "/metrics")).await;
    let text = r.body.as_str().expect("text").to_string();
    assert!(
        text.contains("roster_http_requests_total{method=\"POST\",route=\"/v1/users\",status=\"201\"}"),
        "{text}"
    );
    assert!(text.contains("roster_http_request_duration_seconds_bucket"));
    assert!(text.contains("roster_commands_total{command=\"EnrollUser\",outcome=\"ok\"}"));
    assert!(text.contains("roster_projection_lag_events{projection=\"user_view\"}"));

    let r = TestApp::send(app.request(None, Method::GET, "/openapi.json")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"].as_str().expect("version").starts_with("3.1"));
    for (path, method) in [
        ("/v1/users", "post"),
        ("/v1/users", "get"),
        ("/v1/users/{id}", "get"),
        ("/v1/oauth/token", "post"),
    ] {
        assert!(r.body["paths"][path][method].is_object(), "{method} {path} documented");
    }
    assert!(r.body["components"]["schemas"]["UserDoc"].is_object());
    // Signed calls (CONTRACT §10): the OAuth scheme, offered beside the
    // bearer token on every authenticated /v1 route but the token route.
    let scheme = &r.body["components"]["securitySchemes"]["oauth1"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert!(
        scheme["scheme"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("OAuth")),
        "{scheme}"
    );
    for (path, method) in [
        ("/v1/users", "post"),
        ("/v1/users/{id}", "get"),
        ("/v1/users/{id}/cards", "get"),
    ] {
        let security = r.body["paths"][path][method]["security"].as_array().expect("security");
        assert!(
            security.iter().any(|s| s.get("oauth1").is_some()),
            "{method} {path}: {security:?}"
        );
        assert!(
            security.iter().any(|s| s.get("bearer").is_some()),
            "{method} {path}: {security:?}"
        );
    }
    let token = &r.body["paths"]["/v1/oauth/token"]["post"]["security"];
    assert!(!token.to_string().contains("oauth1"), "{token}");
    assert!(r.body["paths"]["/md/api/User"]["post"]["tags"]
        .to_string()
        .contains("custodia"));
    assert!(r.body["paths"]["/v2/users"]["post"]["tags"]
        .to_string()
        .contains("cradl"));

    let r = TestApp::send(app.request(Some(&c), Method::GET, "/v1/nothing-here")).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let r = TestApp::send(app.request(Some(&c), Method::DELETE, "/v1/users")).await;
    assert_eq!(
        (r.status, r.code(), r.body["status"].as_u64()),
        (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", Some(405))
    );
    let allow = r.header("allow").unwrap_or_default();
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow}");
    app.cleanup().await;
}

/// Bodies over the limit are refused before parsing.
#[tokio::test]
async fn oversized_bodies_are_refused() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let big = "x".repeat(300 * 1024);
    let r = TestApp::send(
        app.request(Some(&c), Method::POST, "/v1/users")
            .header("content-type", "application/json")
            .body(format!("{{\"email\":\"{big}\"}}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "PAYLOAD_TOO_LARGE");
    app.cleanup().await;
}

/// `GET /openapi.json` passes Redocly CLI's `recommended` ruleset with no
/// error (npm `@redocly/cli`, pinned by tests/openapi/package-lock.json;
/// `scripts/infra.sh` installs it).
#[tokio::test]
async fn the_openapi_document_passes_redocly_recommended_lint() {
    let app = spawn_app_with(None).await;
    let doc = TestApp::send(app.request(None, Method::GET, "/openapi.json")).await;
    assert_eq!(doc.status, StatusCode::OK);
    let file = std::env::temp_dir().join(format!("roster-openapi-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, doc.body.to_string()).expect("document written");
    let out = tokio::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/openapi/node_modules/@redocly/cli/bin/cli.js"
        ))
        .args(["lint", "--extends", "recommended", "--format", "stylish"])
        .arg(&file)
        .env("REDOCLY_TELEMETRY", "off")
        .env("REDOCLY_SUPPRESS_NOTIFICATIONS", "true")
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("redocly runs (scripts/infra.sh installs it)");
    let _ = std::fs::remove_file(&file);
    let report = roster_tests::output(&out);
    assert!(out.status.success(), "{report}");
    app.cleanup().await;
}
