//! `GET /console`: the operator console (CONTRACT §7), a page of plain HTML,
//! CSS and JavaScript embedded in the binary. It is a client of the `/v1`
//! API like any other: it signs in with client credentials and keeps the
//! token in the tab's memory only.
//!
//! Every answer carries a strict Content-Security-Policy: the page may load
//! and call only its own origin, and runs no inline script or style.
//! With `ROSTER_CONSOLE_DIR` set, the files are read from that directory
//! on each request instead (for working on the console without rebuilding).

use super::AppState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const CSP: &str =
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The console's files: name, content type, embedded text.
const FILES: [(&str, &str, &str); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("console/app.js"),
    ),
    ("app.css", "text/css; charset=utf-8", include_str!("console/app.css")),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| file("index.html")))
        .route("/console/", get(|| file("index.html")))
        .route("/console/app.js", get(|| file("app.js")))
        .route("/console/app.css", get(|| file("app.css")))
}

async fn file(name: &'static str) -> Response {
    let Some((_, content_type, embedded)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = match std::env::var_os("ROSTER_CONSOLE_DIR") {
        Some(dir) => tokio::fs::read_to_string(std::path::Path::new(&dir).join(name))
            .await
            .unwrap_or_else(|_| embedded.to_string()),
        None => embedded.to_string(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
