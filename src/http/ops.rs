//! Operations: liveness, readiness with lags, Prometheus metrics.

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use roster_projections::webhooks::deliver;
use roster_projections::{card_view, engine, household_view, publisher, user_view};
use serde_json::{json, Value};

/// Lags are counted up to this many events.
const LAG_CAP: i64 = 1_000_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

async fn lags(state: &AppState) -> Result<(Value, Value, Value), sqlx::Error> {
    let mut projections = serde_json::Map::new();
    for name in [user_view::NAME, household_view::NAME, card_view::NAME] {
        let lag = engine::lag(&state.pool, name, LAG_CAP).await?;
        metrics::gauge!("roster_projection_lag_events", "projection" => name).set(lag as f64);
        projections.insert(name.into(), json!({"lag_events": lag}));
    }
    let publisher = if state.publisher_enabled {
        let lag = engine::lag(&state.pool, publisher::NAME, LAG_CAP).await?;
        metrics::gauge!("roster_publisher_lag_events").set(lag as f64);
        json!({"enabled": true, "lag_events": lag})
    } else {
        json!({"enabled": false, "lag_events": null})
    };
    let (pending, oldest, lag) = deliver::status(&state.pool).await?;
    metrics::gauge!("roster_webhook_pending").set(pending as f64);
    metrics::gauge!("roster_webhook_oldest_pending_seconds").set(oldest);
    let webhooks = json!({"pending": pending, "oldest_pending_s": oldest, "lag_events": lag});
    Ok((Value::Object(projections), publisher, webhooks))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let applied: Result<i64, sqlx::Error> = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&state.pool)
        .await;
    let expected = crate::db::MIGRATOR.iter().count() as i64;
    match (applied, lags(&state).await) {
        (Ok(n), Ok((projections, publisher, webhooks))) if n >= expected => Json(json!({
            "status": "ready", "projections": projections, "publisher": publisher, "webhooks": webhooks,
        }))
        .into_response(),
        (Ok(n), _) if n < expected => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "migrations pending", "applied": n, "expected": expected})),
        )
            .into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "database unreachable"})),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let _ = lags(&state).await;
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOC.get_or_init(super::openapi::json).clone(),
    )
        .into_response()
}
