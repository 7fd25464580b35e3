//! Wiring: start the parts of `roster serve` (API, projectors, publisher
//! and webhook deliverer)
//! on one pool, and stop them cleanly.

use crate::auth::Tokens;
use crate::config::Role;
use crate::http::{self, AppState};
use anyhow::Context;
use roster_command::Commands;
use roster_projections::publisher::{self, KafkaConfig};
use roster_projections::webhooks::{deliver, WebhookConfig};
use roster_projections::{card_view::CardView, engine, household_view::HouseholdView, user_view::UserView};
use roster_vault::Vault;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// Events per projector batch.
pub const PROJECTION_BATCH: i64 = 500;
/// Events per publisher batch.
pub const PUBLISH_BATCH: i64 = 500;

#[derive(Debug, Clone)]
pub struct Settings {
    pub roles: Vec<Role>,
    /// `None` disables publishing.
    pub kafka: Option<KafkaConfig>,
    /// The keys of personal data (every process of one database needs the
    /// same master key).
    pub vault: Arc<Vault>,
    /// Webhook delivery: the retry schedule, whether private URLs are allowed.
    pub webhooks: WebhookConfig,
    /// Roster's encryption key and public URL (signed and encrypted calls).
    pub sealing: Arc<http::signed::Sealing>,
}

/// Tells every subscriber (in this and other processes) that events were
/// appended: one `NOTIFY` per burst of commits (at most one per
/// `engine::PACE`), sent outside them (a NOTIFY inside the appending
/// transaction would serialise all commits).
async fn notify_appends(pool: PgPool, mut appended: tokio::sync::watch::Receiver<u64>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = appended.changed() => if changed.is_err() { return },
        }
        let sent = tokio::time::Instant::now();
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(engine::CHANNEL)
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "cannot notify; subscribers will poll");
        }
        // Runners take a batch at most every `engine::PACE`: a burst of
        // commits within it needs one notification, not one each.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(sent + engine::PACE) => {}
        }
    }
}

/// How long in-flight requests get to finish on shutdown.
pub const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// Deletes expired idempotency keys and signed requests' nonces now and then.
async fn purge_idempotency_keys(pool: PgPool, shutdown: CancellationToken) {
    loop {
        match http::idempotency::purge(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "expired idempotency keys deleted"),
            Err(e) => tracing::debug!(error = %e, "cannot purge idempotency keys; later"),
        }
        if let Err(e) = http::signed::purge_nonces(&pool).await {
            tracing::debug!(error = %e, "cannot purge nonces; later");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(http::idempotency::PURGE_EVERY) => {}
        }
    }
}

/// A running Roster.
pub struct App {
    /// Where the API listens, when it runs.
    pub addr: Option<SocketAddr>,
    /// Stops the background parts (projectors, publisher, notifier).
    pub shutdown: CancellationToken,
    /// Stops the HTTP server (first, so the publisher drains after it).
    http_stop: CancellationToken,
    http: Option<JoinHandle<()>>,
    tasks: JoinSet<()>,
}

impl App {
    /// Starts every role of `settings` on `pool`; the API on `listener`.
    pub async fn start(pool: PgPool, settings: Settings, listener: Option<TcpListener>) -> anyhow::Result<App> {
        let shutdown = CancellationToken::new();
        let http_stop = CancellationToken::new();
        let mut http = None;
        let mut tasks = JoinSet::new();
        let has = |r: Role| settings.roles.contains(&r);
        let wake = engine::listen(pool.clone(), shutdown.clone());
        if has(Role::Projector) {
            tasks.spawn(engine::run(
                pool.clone(),
                settings.vault.clone(),
                Arc::new(UserView::default()),
                wake.clone(),
                PROJECTION_BATCH,
                shutdown.clone(),
            ));
            tasks.spawn(engine::run(
                pool.clone(),
                settings.vault.clone(),
                Arc::new(CardView),
                wake.clone(),
                PROJECTION_BATCH,
                shutdown.clone(),
            ));
            tasks.spawn(engine::run(
                pool.clone(),
                settings.vault.clone(),
                Arc::new(HouseholdView),
                wake.clone(),
                PROJECTION_BATCH,
                shutdown.clone(),
            ));
        }
        if let (true, Some(kafka)) = (has(Role::Publisher), settings.kafka.clone()) {
            tasks.spawn(publisher::run(
                pool.clone(),
                settings.vault.clone(),
                kafka,
                wake.clone(),
                PUBLISH_BATCH,
                shutdown.clone(),
            ));
        }
        if has(Role::Publisher) {
            tasks.spawn(deliver::run(
                pool.clone(),
                settings.vault.clone(),
                settings.webhooks.clone(),
                wake.clone(),
                shutdown.clone(),
            ));
        }
        let mut addr = None;
        if let (true, Some(listener)) = (has(Role::Api), listener) {
            addr = Some(listener.local_addr()?);
            let commands = Commands::new(pool.clone(), settings.vault.clone());
            tasks.spawn(notify_appends(pool.clone(), commands.appended(), shutdown.clone()));
            tasks.spawn(purge_idempotency_keys(pool.clone(), shutdown.clone()));
            let state = AppState::new(http::Shared {
                commands,
                tokens: Arc::new(Tokens::load(&pool).await.context("cannot load the token signing key")?),
                metrics: http::metrics_handle(),
                publisher_enabled: settings.kafka.is_some(),
                vault: settings.vault.clone(),
                webhooks: settings.webhooks.clone(),
                sealing: settings.sealing.clone(),
                pool,
            });
            let router = http::router(state);
            let (stop, failed) = (http_stop.clone(), shutdown.clone());
            http = Some(tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "HTTP server failed");
                    failed.cancel();
                }
            }));
        }
        Ok(App {
            addr,
            shutdown,
            http_stop,
            http,
            tasks,
        })
    }

    /// Stops accepting requests and lets in-flight ones finish (up to
    /// [`HTTP_DRAIN`]); then stops the projectors and lets the publisher
    /// drain what was written and flush (up to its own bound); waits for
    /// every part to end.
    pub async fn stop(mut self) {
        self.http_stop.cancel();
        if let Some(http) = self.http.take() {
            if tokio::time::timeout(HTTP_DRAIN, http).await.is_err() {
                tracing::warn!("in-flight requests did not finish in time");
            }
        }
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits until a part stops by itself (e.g. the server failed).
    pub async fn wait(&mut self) {
        if self.tasks.is_empty() {
            self.shutdown.cancelled().await;
        } else {
            self.tasks.join_next().await;
        }
    }
}
