//! The operator console in a real browser: Debian's chromium driven by
//! Playwright (`tests/browser/console.mjs`, installed by `scripts/infra.sh`)
//! against the real app with the demo data of `scripts/demo-seed.py`.

use roster_tests::spawn_app_with;
use std::path::PathBuf;
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

    let mut browser = tokio::process::Command::new("node");
    browser
        .arg(repo().join("tests/browser/console.mjs"))
        .env("ROSTER_BASE", &app.base)
        .env("ROSTER_CLIENT_ID", &c.client_id)
        .env("ROSTER_CLIENT_SECRET", &c.client_secret)
        .env("ROSTER_USER", &user)
        .env("ROSTER_SEARCH", "Omar");
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
