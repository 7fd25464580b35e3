//! The deliverer: one more reader of the log, beside the Kafka publisher.
//! Two loops, each run by one leader at a time across processes (an
//! advisory lock, like every subscriber):
//!
//! - the **recorder** reads the events after its checkpoint (commit order,
//!   gap-free) and, in one transaction with the checkpoint, inserts a
//!   pending delivery per (endpoint, event) the endpoint subscribes to;
//! - the **sender** picks what is due: per enabled endpoint with room, the
//!   pending deliveries that head their aggregate's chain (no earlier
//!   pending one of the same aggregate: an event waits until the one before
//!   it is delivered or has failed for good), and sends each in a task of
//!   its own: the body built from the event at that moment (opened with its
//!   owner's key as stored now, under the shared erasure lock; `"data":
//!   null` once erased), signed, POSTed with a 15 s time-out and no
//!   redirects. It settles the answers in one statement: delivered, due
//!   again after the schedule's wait (or a longer `Retry-After`), failed
//!   after the last, or the endpoint disabled on 410. What is under way is
//!   known to the sender alone (a pending delivery stays due): a sender
//!   that dies leaves it due for the next.
//!
//! A crash anywhere leaves pending rows (recorded and not sent, or sent and
//! not settled), which are sent (again): every event at least once, none
//! skipped.

use super::{address, sign, WebhookConfig};
use crate::engine::{self, StoredEvent, Wake};
use chrono::{DateTime, Utc};
use rand::Rng;
use roster_vault::Vault;
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgExecutor, PgPool};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The recorder's name (checkpoint, lock).
pub const NAME: &str = "webhook_deliverer";
/// The sender's lock.
const SENDER: &str = "webhook_sender";
/// Attempts under way at once, per endpoint and in all.
pub const PER_ENDPOINT: i32 = 16;
pub const IN_FLIGHT: usize = 256;
/// An attempt's whole time-out: connect, send, answer.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// Events recorded per batch.
const RECORD_BATCH: i64 = 1_000;
/// When nothing wakes it, the sender looks for due work this often
/// (retries coming due; deliveries recorded, endpoints enabled and replays
/// in other processes).
const POLL: Duration = Duration::from_millis(250);
const RETRY: Duration = Duration::from_secs(1);
/// How long the sender gathers ended attempts to settle them together.
const GATHER: Duration = Duration::from_millis(2);
/// The longest `Retry-After` honoured.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(24 * 3600);

/// The CloudEvents type of an event stored as `event_type:event_version`.
pub fn cloud_type(aggregate_type: &str, kind: &str) -> String {
    let (event_type, version) = kind.split_once(':').unwrap_or((kind, "1.0"));
    let version = roster_events::upcast::current_version(aggregate_type, event_type, version);
    roster_events::cloud_event_type(aggregate_type, event_type, &version)
}

/// Deliveries to insert, as columns.
#[derive(Default)]
pub struct Rows {
    id: Vec<Uuid>,
    endpoint: Vec<Uuid>,
    position: Vec<i64>,
    event_id: Vec<Uuid>,
    event_type: Vec<String>,
    aggregate_type: Vec<String>,
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    recorded_at: Vec<DateTime<Utc>>,
}

/// What a delivery names of its event (no data).
#[derive(sqlx::FromRow)]
pub struct Light {
    pub position: i64,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// `event_type:event_version` as stored.
    pub kind: String,
    pub sequence: i64,
    pub recorded_at: DateTime<Utc>,
    pub company_id: Option<String>,
}

/// The columns of [`Light`], from `events`.
pub const LIGHT: &str = "position, event_id, aggregate_type, aggregate_id, event_type || ':' || event_version AS kind,
                         sequence, recorded_at, metadata ->> 'company_id' AS company_id";

impl Rows {
    /// A delivery of `e` (of CloudEvents type `event_type`) to `endpoint`.
    pub fn push(&mut self, endpoint: Uuid, e: &Light, event_type: String) {
        self.id.push(Uuid::now_v7());
        self.endpoint.push(endpoint);
        self.position.push(e.position);
        self.event_id.push(e.event_id);
        self.event_type.push(event_type);
        self.aggregate_type.push(e.aggregate_type.clone());
        self.aggregate_id.push(e.aggregate_id.clone());
        self.sequence.push(e.sequence);
        self.recorded_at.push(e.recorded_at);
    }

    /// Inserts the rows as pending deliveries due now; `conflict` is the
    /// statement's `ON CONFLICT (endpoint_id, position)` action. Returns the rows written.
    pub async fn insert<'e>(&self, db: impl PgExecutor<'e>, conflict: &str) -> sqlx::Result<u64> {
        if self.id.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(&format!(
            "INSERT INTO webhook_deliveries
                 (id, endpoint_id, position, event_id, event_type, aggregate_type, aggregate_id, sequence,
                  recorded_at, next_attempt_at)
             SELECT *, now() FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::uuid[], $5::text[],
                                         $6::text[], $7::text[], $8::bigint[], $9::timestamptz[])
             ON CONFLICT (endpoint_id, position) {conflict}"
        ))
        .bind(&self.id)
        .bind(&self.endpoint)
        .bind(&self.position)
        .bind(&self.event_id)
        .bind(&self.event_type)
        .bind(&self.aggregate_type)
        .bind(&self.aggregate_id)
        .bind(&self.sequence)
        .bind(&self.recorded_at)
        .execute(db)
        .await?;
        Ok(done.rows_affected())
    }
}

#[derive(sqlx::FromRow)]
struct Subscriber {
    id: Uuid,
    company_id: String,
    event_types: Option<Vec<String>>,
    after_position: i64,
}

/// What one [`record`] batch went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Events the batch moved the checkpoint past.
    pub events: usize,
    /// Deliveries it recorded.
    pub deliveries: u64,
}

/// Records the deliveries of the next batch of events and moves the
/// checkpoint past it, in one transaction.
pub async fn record(conn: &mut PgConnection, limit: i64) -> anyhow::Result<Recorded> {
    let mut tx = conn.begin().await?;
    // Locked: an endpoint being created waits for this batch (its creation
    // locks the row too), and this batch sees every endpoint created before.
    let at = engine::checkpoint(&mut tx, NAME, true).await?;
    let endpoints: Vec<Subscriber> =
        sqlx::query_as("SELECT id, company_id, event_types, after_position FROM webhook_endpoints")
            .fetch_all(&mut *tx)
            .await?;
    if endpoints.is_empty() {
        // No endpoint: nothing to record, only the checkpoint to move, read
        // from the position index alone.
        let (last, events): (Option<i64>, i64) = sqlx::query_as(
            "SELECT max(position), count(*)
               FROM (SELECT position FROM events WHERE position > $1 ORDER BY position LIMIT $2) page",
        )
        .bind(at.0)
        .bind(limit)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(last) = last {
            engine::save_checkpoint(&mut tx, NAME, engine::Position(last)).await?;
        }
        tx.commit().await?;
        return Ok(Recorded {
            events: events as usize,
            deliveries: 0,
        });
    }
    let events: Vec<Light> = sqlx::query_as(&format!(
        "SELECT {LIGHT} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
    ))
    .bind(at.0)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let Some(last) = events.last().map(|e| e.position) else {
        return Ok(Recorded::default());
    };
    let mut rows = Rows::default();
    for event in &events {
        let mut ce_type = None;
        for e in &endpoints {
            if Some(&e.company_id) != event.company_id.as_ref() || event.position <= e.after_position {
                continue;
            }
            let t = ce_type.get_or_insert_with(|| cloud_type(&event.aggregate_type, &event.kind));
            if e.event_types.as_ref().is_some_and(|types| !types.contains(t)) {
                continue;
            }
            rows.push(e.id, event, t.clone());
        }
    }
    let deliveries = rows.insert(&mut *tx, "DO NOTHING").await?;
    engine::save_checkpoint(&mut tx, NAME, engine::Position(last)).await?;
    tx.commit().await?;
    Ok(Recorded {
        events: events.len(),
        deliveries,
    })
}

/// A claimed delivery, with what sending it needs.
#[derive(sqlx::FromRow, Debug)]
struct Claimed {
    id: Uuid,
    endpoint_id: Uuid,
    position: i64,
    event_id: Uuid,
    event_type: String,
    attempts: i32,
    recorded_at: DateTime<Utc>,
    url: String,
    secret: Vec<u8>,
    previous_secret: Option<Vec<u8>>,
    master_id: String,
}

/// Due deliveries not under way (`busy`: per endpoint, the ones under
/// way): per enabled endpoint up to its room, at most `room` in all; each
/// the head of its aggregate's chain.
async fn due(conn: &mut PgConnection, busy: &HashMap<Uuid, Vec<Uuid>>, room: usize) -> sqlx::Result<Vec<Claimed>> {
    let (mut endpoints, mut counts, mut under_way) = (Vec::new(), Vec::new(), Vec::new());
    for (endpoint, ids) in busy {
        endpoints.push(*endpoint);
        counts.push(ids.len() as i32);
        under_way.extend_from_slice(ids);
    }
    sqlx::query_as(
        "SELECT c.id, w.id AS endpoint_id, c.position, c.event_id, c.event_type, c.attempts, c.recorded_at,
                w.url, w.secret, w.master_id,
                CASE WHEN w.previous_until > now() THEN w.previous_secret END AS previous_secret
           FROM webhook_endpoints w
           LEFT JOIN unnest($1::uuid[], $2::int[]) AS b(endpoint_id, busy) ON b.endpoint_id = w.id
          CROSS JOIN LATERAL (
                SELECT d.id, d.position, d.event_id, d.event_type, d.attempts, d.recorded_at
                  FROM webhook_deliveries d
                 WHERE d.endpoint_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= now()
                   AND d.id <> ALL($3)
                   -- The head of its chain (one probe of the chain index).
                   AND d.position = (
                       SELECT min(p.position) FROM webhook_deliveries p
                        WHERE p.endpoint_id = d.endpoint_id AND p.status = 'pending'
                          AND p.aggregate_type = d.aggregate_type AND p.aggregate_id = d.aggregate_id)
                 ORDER BY d.next_attempt_at, d.position
                 LIMIT greatest($4 - coalesce(b.busy, 0), 0)) c
          WHERE NOT w.disabled
          LIMIT $5",
    )
    .bind(endpoints)
    .bind(counts)
    .bind(under_way)
    .bind(PER_ENDPOINT)
    .bind(room as i64)
    .fetch_all(conn)
    .await
}

/// What an attempt came to.
#[derive(Debug)]
struct Attempt {
    id: Uuid,
    endpoint_id: Uuid,
    position: i64,
    /// Attempts before this one.
    attempts: i32,
    started: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    /// The answer's status, if there was one.
    status: Option<u16>,
    error: Option<String>,
    /// A `Retry-After` of a 429 or 503.
    retry_after: Option<Duration>,
}

/// The body of a delivery (CONTRACT §9).
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: &'a str,
    subject: String,
    sequence: i64,
    company_id: &'a str,
    data: serde_json::Value,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    erased: bool,
}

fn body(event: &StoredEvent, event_type: &str) -> Vec<u8> {
    let data = if event.erased {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&event.payload)
            .map(roster_events::public_data)
            .unwrap_or_default()
    };
    let timestamp = event
        .metadata
        .occurred_at
        .clone()
        .unwrap_or_else(|| roster_events::Timestamp::from(event.recorded_at).to_string());
    let body = Body {
        kind: event_type,
        timestamp: &timestamp,
        subject: format!("{}s/{}", event.aggregate_type, event.aggregate_id),
        sequence: event.sequence,
        company_id: &event.metadata.company_id,
        data,
        erased: event.erased,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// One request, ready to send.
struct Request {
    url: String,
    event_id: String,
    secrets: Vec<zeroize::Zeroizing<[u8; roster_vault::cipher::KEY_LEN]>>,
    body: Vec<u8>,
}

/// The HTTP client of the deliverer: no redirects, the time-out, and (unless
/// private addresses are allowed) a resolver that yields only public ones.
pub fn client(config: &WebhookConfig) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .pool_max_idle_per_host(PER_ENDPOINT as usize)
        .user_agent("Roster-Webhooks/1");
    if config.allow_private {
        builder.build()
    } else {
        builder.dns_resolver(Arc::new(address::PublicOnly)).build()
    }
}

async fn send(
    http: reqwest::Client,
    allow_private: bool,
    r: Request,
) -> (Option<u16>, Option<String>, Option<Duration>) {
    let url = match reqwest::Url::parse(&r.url) {
        Ok(u) => u,
        Err(_) => return (None, Some("invalid URL".into()), None),
    };
    if !allow_private {
        if let Err(e) = address::check_literal(&url) {
            return (None, Some(e), None);
        }
    }
    let timestamp = Utc::now().timestamp();
    let secrets: Vec<&[u8]> = r.secrets.iter().map(|s| s.as_slice()).collect();
    let signature = sign::header(&secrets, &r.event_id, timestamp, &r.body);
    let sent = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &r.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(r.body)
        .send()
        .await;
    match sent {
        Ok(answer) => {
            let status = answer.status().as_u16();
            let retry_after = (status == 429 || status == 503)
                .then(|| {
                    answer
                        .headers()
                        .get("retry-after")?
                        .to_str()
                        .ok()?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .flatten()
                .map(|s| Duration::from_secs(s).min(RETRY_AFTER_MAX));
            // The body is not kept, nor read beyond what the connection needs.
            (Some(status), None, retry_after)
        }
        Err(e) => (None, Some(describe(&e)), None),
    }
}

/// A short, stable description of a failed request (no receiver text).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        let mut source: Option<&dyn std::error::Error> = Some(e);
        while let Some(s) = source {
            if s.to_string().contains("not public") {
                return "refused: the address is not public".into();
            }
            source = s.source();
        }
        "connection failed".into()
    } else if e.is_request() {
        "request failed".into()
    } else {
        "failed".into()
    }
}

/// The attempts' outcomes, settled in one statement; 410s disable their
/// endpoints. A delivery replayed while its attempt was under way (its
/// attempt count reset) is left as the replay made it. (No `status`
/// condition: it would steer the planner to a partial index, a scan of
/// every pending delivery of the endpoint, instead of the key.)
async fn settle(conn: &mut PgConnection, config: &WebhookConfig, done: Vec<Attempt>) -> sqlx::Result<()> {
    let n = done.len();
    let (mut endpoints, mut positions, mut attempts, mut started, mut statuses, mut codes, mut errors, mut waits) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut gone = Vec::new();
    let now = Utc::now();
    for a in done {
        let (status, wait, outcome) = match a.status {
            Some(200..=299) => {
                let latency = (now - a.recorded_at).to_std().unwrap_or_default();
                metrics::histogram!("roster_webhook_delivery_seconds").record(latency.as_secs_f64());
                ("delivered", None, "delivered")
            }
            Some(410) => {
                gone.push(a.endpoint_id);
                // Sent again once the endpoint is enabled.
                ("pending", Some(0.0), "gone")
            }
            _ => match config.schedule.get(a.attempts as usize) {
                Some(wait) => {
                    // ±10 % so that retries of many deliveries spread out.
                    let jitter = rand::thread_rng().gen_range(0.9..1.1);
                    let wait = wait.mul_f64(jitter).max(a.retry_after.unwrap_or_default());
                    ("pending", Some(wait.as_secs_f64()), "retry")
                }
                None => ("failed", None, "failed"),
            },
        };
        metrics::counter!("roster_webhook_attempts_total", "outcome" => outcome).increment(1);
        endpoints.push(a.endpoint_id);
        positions.push(a.position);
        attempts.push(a.attempts);
        started.push(a.started);
        statuses.push(status);
        codes.push(a.status.map(i32::from));
        errors.push(a.error);
        waits.push(wait);
    }
    let mut tx = conn.begin().await?;
    sqlx::query(
        "UPDATE webhook_deliveries d
            SET status = o.status, attempts = o.attempts + 1, last_attempt_at = o.started,
                last_status_code = o.code, last_error = o.error,
                next_attempt_at = now() + make_interval(secs => o.wait),
                delivered_at = CASE WHEN o.status = 'delivered' THEN now() END
           FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::timestamptz[], $5::text[], $6::int[], $7::text[],
                       $8::float8[])
                AS o(endpoint_id, position, attempts, started, status, code, error, wait)
          WHERE d.endpoint_id = o.endpoint_id AND d.position = o.position AND d.attempts = o.attempts",
    )
    .bind(endpoints)
    .bind(positions)
    .bind(attempts)
    .bind(started)
    .bind(statuses)
    .bind(codes)
    .bind(errors)
    .bind(waits)
    .execute(&mut *tx)
    .await?;
    if !gone.is_empty() {
        sqlx::query(
            "UPDATE webhook_endpoints SET disabled = true, disabled_reason = 'gone', updated_at = now()
              WHERE id = ANY($1) AND NOT disabled",
        )
        .bind(gone)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// The sender's state.
struct Sender {
    pool: PgPool,
    vault: Arc<Vault>,
    config: WebhookConfig,
    http: reqwest::Client,
    /// Per endpoint, the deliveries under way.
    busy: HashMap<Uuid, Vec<Uuid>>,
    tasks: JoinSet<Attempt>,
}

impl Sender {
    /// Starts sending what is due; returns how many.
    async fn start_due(&mut self, conn: &mut PgConnection) -> anyhow::Result<usize> {
        let room = IN_FLIGHT.saturating_sub(self.tasks.len());
        if room == 0 {
            return Ok(0);
        }
        let claimed = due(conn, &self.busy, room).await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        // Bodies are built from the events as they are now, with erasure
        // held off until they are: none is built with a key an erasure has
        // destroyed.
        let positions: Vec<i64> = claimed.iter().map(|c| c.position).collect();
        sqlx::query("SELECT pg_advisory_lock_shared($1)")
            .bind(roster_vault::ERASURE_LOCK)
            .execute(&mut *conn)
            .await?;
        let events = engine::read_positions(conn, &self.vault, &positions).await;
        sqlx::query("SELECT pg_advisory_unlock_shared($1)")
            .bind(roster_vault::ERASURE_LOCK)
            .execute(&mut *conn)
            .await?;
        let events: HashMap<i64, StoredEvent> = events?.into_iter().map(|e| (e.position.0, e)).collect();
        let n = claimed.len();
        for c in claimed {
            self.busy.entry(c.endpoint_id).or_default().push(c.id);
            let mut attempt = Attempt {
                id: c.id,
                endpoint_id: c.endpoint_id,
                position: c.position,
                attempts: c.attempts,
                started: Utc::now(),
                recorded_at: c.recorded_at,
                status: None,
                error: None,
                retry_after: None,
            };
            let request = match (events.get(&c.position), self.secrets(&c)) {
                (Some(event), Ok(secrets)) => Request {
                    url: c.url,
                    event_id: c.event_id.to_string(),
                    secrets,
                    body: body(event, &c.event_type),
                },
                (None, _) => {
                    attempt.error = Some("the event is not in the store".into());
                    self.tasks.spawn(async move { attempt });
                    continue;
                }
                (_, Err(e)) => {
                    tracing::error!(endpoint = %c.endpoint_id, error = %e, "cannot open a webhook secret");
                    attempt.error = Some("the secret cannot be opened".into());
                    self.tasks.spawn(async move { attempt });
                    continue;
                }
            };
            let (http, allow_private) = (self.http.clone(), self.config.allow_private);
            self.tasks.spawn(async move {
                let (status, error, retry_after) = send(http, allow_private, request).await;
                attempt.status = status;
                attempt.error = error;
                attempt.retry_after = retry_after;
                attempt
            });
        }
        Ok(n)
    }

    fn secrets(
        &self,
        c: &Claimed,
    ) -> Result<Vec<zeroize::Zeroizing<[u8; roster_vault::cipher::KEY_LEN]>>, roster_vault::VaultError> {
        let aad = c.endpoint_id.as_bytes();
        let mut secrets = vec![self.vault.unwrap_secret(aad, &c.secret, &c.master_id)?];
        if let Some(previous) = &c.previous_secret {
            secrets.push(self.vault.unwrap_secret(aad, previous, &c.master_id)?);
        }
        Ok(secrets)
    }

    /// Settles `first` and every attempt that ends within [`GATHER`].
    async fn settle_ended(&mut self, conn: &mut PgConnection, first: Attempt) -> anyhow::Result<()> {
        if !self.tasks.is_empty() {
            // Others end about now: one statement for all of them.
            tokio::time::sleep(GATHER).await;
        }
        let mut done = vec![first];
        while let Some(next) = self.tasks.try_join_next() {
            done.extend(next.ok());
        }
        for a in &done {
            if let Some(ids) = self.busy.get_mut(&a.endpoint_id) {
                ids.retain(|id| *id != a.id);
            }
        }
        self.busy.retain(|_, ids| !ids.is_empty());
        settle(conn, &self.config, done).await?;
        Ok(())
    }
}

/// Runs the deliverer (recorder and sender) until shutdown. On shutdown,
/// attempts under way get up to [`TIMEOUT`] to end and are settled.
pub async fn run(pool: PgPool, vault: Arc<Vault>, config: WebhookConfig, wake: Wake, shutdown: CancellationToken) {
    let http = match client(&config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook deliverer disabled: no HTTP client");
            return;
        }
    };
    // The recorder tells this process's sender when it recorded something.
    let (recorded, recorded_rx) = tokio::sync::watch::channel(0u64);
    let sender = Sender {
        pool: pool.clone(),
        vault,
        config,
        http,
        busy: HashMap::new(),
        tasks: JoinSet::new(),
    };
    tokio::join!(
        run_recorder(pool, wake, recorded, shutdown.clone()),
        run_sender(sender, recorded_rx, shutdown)
    );
}

/// Waits for leadership of `name`; `None` on shutdown.
async fn leadership(pool: &PgPool, name: &str, shutdown: &CancellationToken) -> Option<PgConnection> {
    loop {
        match engine::lead(pool, name).await {
            Ok(Some(conn)) => return Some(conn),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "webhook {name} cannot reach the database"),
        }
        tokio::select! { _ = shutdown.cancelled() => return None, _ = tokio::time::sleep(RETRY) => {} }
    }
}

async fn run_recorder(
    pool: PgPool,
    mut wake: Wake,
    recorded: tokio::sync::watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    while let Some(mut conn) = leadership(&pool, NAME, &shutdown).await {
        tracing::info!("webhook recorder active");
        loop {
            let started = tokio::time::Instant::now();
            let r = tokio::select! {
                r = record(&mut conn, RECORD_BATCH) => r,
                _ = shutdown.cancelled() => return,
            };
            match r {
                Ok(batch) => {
                    // The sender looks for due work when told that some
                    // was recorded, else every `POLL`.
                    if batch.deliveries > 0 {
                        recorded.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    if (batch.events as i64) < RECORD_BATCH && !engine::idle(&mut wake, &shutdown, started).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "recording webhook deliveries failed; retrying"
                    );
                    tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(RETRY) => {} }
                    if conn.ping().await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

async fn run_sender(mut s: Sender, mut recorded: tokio::sync::watch::Receiver<u64>, shutdown: CancellationToken) {
    while let Some(mut conn) = leadership(&s.pool.clone(), SENDER, &shutdown).await {
        tracing::info!("webhook sender active");
        if let Err(e) = send_while_leading(&mut s, &mut conn, &mut recorded, &shutdown).await {
            tracing::warn!(error = format!("{e:#}"), "sending webhooks failed; retrying");
            // What is under way is dropped; it is still due, and sent again.
            s.tasks.abort_all();
            s.busy.clear();
            tokio::select! { _ = shutdown.cancelled() => {}, _ = tokio::time::sleep(RETRY) => {} }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// One leadership of the sender: start what is due, settle what ended,
/// until shutdown or an error of the database.
async fn send_while_leading(
    s: &mut Sender,
    conn: &mut PgConnection,
    recorded: &mut tokio::sync::watch::Receiver<u64>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        if shutdown.is_cancelled() {
            let drain = async {
                while let Some(a) = s.tasks.join_next().await {
                    if let Ok(a) = a {
                        s.settle_ended(conn, a).await?;
                    }
                }
                anyhow::Ok(())
            };
            return tokio::time::timeout(TIMEOUT, drain).await.unwrap_or(Ok(()));
        }
        s.start_due(conn).await?;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            Some(ended) = s.tasks.join_next(), if !s.tasks.is_empty() => {
                if let Ok(a) = ended {
                    s.settle_ended(conn, a).await?;
                }
            }
            changed = recorded.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(POLL).await;
                }
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// What `/readyz` shows: deliveries pending (to enabled endpoints or not),
/// the age of the oldest one's event, and the events still to record.
pub async fn status(pool: &PgPool) -> sqlx::Result<(i64, f64, i64)> {
    let (pending, oldest): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM now() - min(recorded_at))::float8
           FROM webhook_deliveries WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await?;
    let lag = engine::lag(pool, NAME, 10_000).await?;
    Ok((pending, oldest.unwrap_or(0.0), lag))
}
