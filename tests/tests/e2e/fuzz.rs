//! Schemathesis against the running API, driven by its own OpenAPI
//! document: no 5xx, and every rejection a problem+json with a stable code
//! (the `problem_json` check in tests/fuzz/hooks.py).

use roster_tests::spawn_app;
use serde_json::json;

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_only_problem_json_rejections() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let user = app
        .enroll(&c, json!({"email": "fuzz@example.com", "status": "active"}))
        .await;
    let out = tokio::process::Command::new("python3")
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!("{}/openapi.json", app.base))
        .args(["--checks", "not_a_server_error,problem_json"])
        .args(["-H", &format!("Authorization: Bearer {}", c.token)])
        .args(["-H", &format!("x-appid: {}", c.client_id)])
        .args(["--max-examples", "30", "--seed", "20261123", "--workers", "1"])
        .args([
            "--no-color",
            "--generation-database",
            "none",
            "--suppress-health-check",
            "all",
        ])
        .env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz"))
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("ROSTER_FUZZ_USER", &user)
        // It keeps a cache of its runs in the working directory.
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("schemathesis runs (scripts/infra.sh installs it)");
    let report = roster_tests::output(&out);
    assert!(out.status.success(), "{report}");
    app.cleanup().await;
}
