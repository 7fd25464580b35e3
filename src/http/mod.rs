//! The HTTP API: state, router, and the layers every request goes through
//! (request id, tracing, metrics, body limit, panic guard).

pub mod cards;
pub mod consistency;
pub mod console;
pub mod cradl;
pub mod custodia;
pub mod error;
pub mod extract;
#[cfg(test)]
mod fuzz;
pub mod households;
pub mod idempotency;
pub mod oauth;
pub mod openapi;
pub mod ops;
pub mod parse;
pub mod signed;
pub mod users;
pub mod webhooks;

use crate::auth::Tokens;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use error::ApiError;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use roster_command::Commands;
use sqlx::PgPool;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 256 * 1024;

/// What every handler shares. A request clones it several times on its way
/// through the layers, so it is one `Arc`: one reference count per clone,
/// not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub pool: PgPool,
    pub commands: Commands,
    pub tokens: Arc<Tokens>,
    pub metrics: PrometheusHandle,
    pub publisher_enabled: bool,
    /// Personal data keys and webhook secrets.
    pub vault: std::sync::Arc<roster_vault::Vault>,
    pub webhooks: roster_projections::webhooks::WebhookConfig,
    /// Roster's encryption key and public URL (signed and encrypted calls).
    pub sealing: Arc<signed::Sealing>,
}

/// The process-wide Prometheus recorder (installed once, shared by every
/// app a test process starts).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
            PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("static buckets are valid")
                .install_recorder()
                .expect("the metrics recorder is installed once")
        })
        .clone()
}

pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    // Every layer in one, outermost first, added to the routes once: each
    // `Router::layer` wraps every route in a boxed service of its own, and a
    // request clones the boxes below each one it passes (docs/benchmarks.md).
    let layers = tower::ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
                let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("request", method = %req.method(), route = route.as_deref().unwrap_or(""), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(CatchPanicLayer::custom(|_| ApiError::internal("handler panicked").into_response()))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(record_metrics))
        .layer(middleware::from_fn(cradl::errors))
        .layer(middleware::from_fn_with_state(state.clone(), signed::layer))
        .layer(middleware::from_fn_with_state(state.clone(), idempotency::layer))
        .layer(middleware::from_fn(consistency::stamp));
    Router::new()
        .merge(oauth::router())
        .merge(users::router())
        .merge(households::router())
        .merge(cards::router())
        .merge(custodia::router())
        .merge(cradl::router())
        .merge(webhooks::router())
        .merge(ops::router())
        .merge(console::router())
        .fallback(|| async { ApiError::NotFound("NOT_FOUND", "No such route.") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(layers)
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("roster_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("roster_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}
