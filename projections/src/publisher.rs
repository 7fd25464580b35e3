//! The Kafka publisher: one more catch-up subscriber. It produces a batch
//! with an idempotent producer, waits for every delivery report, and only
//! then advances its checkpoint. A crash in between repeats messages
//! (consumers drop repeats by `ce_id`); nothing is lost or reordered within
//! an aggregate, since all its events share a key and so a partition.
//! While the broker is down it retries; commands never wait for it.
//!
//! Erasure: an erased user's events are published with the value `null`
//! (as the audit trail shows them), and its `UserErased` is followed by a
//! tombstone on its key. Owners' erasure marks are read (with the page)
//! and messages handed to the producer under a shared lock that erasure
//! takes exclusively ([`roster_vault::ERASURE_LOCK`]): no message holding
//! personal data is handed over once the erasure has committed.

use crate::engine::{self, StoredEvent, Wake};
use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use roster_vault::Vault;
use sqlx::{Connection, PgConnection, PgPool};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const NAME: &str = "kafka_publisher";

/// A batch handed to the producer: its last position, its event count, and
/// the deliveries to wait for.
type Handed = (engine::Position, usize, Vec<rdkafka::producer::DeliveryFuture>);
const PARTITIONS: i32 = 3;
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
}

fn producer(config: &KafkaConfig) -> anyhow::Result<FutureProducer> {
    producer_config(config)
        .create()
        .context("cannot create the Kafka producer")
}

/// The producer's settings. A failed delivery is answered by dropping the
/// producer and sending the batch again from the checkpoint, which keeps
/// each key's order only if a producer never writes a message after one
/// that failed before it: then what it wrote is a prefix of the batch, and
/// a consumer that drops repeats (by `ce_id`) sees every key in order. So
/// no message may time out inside librdkafka (`message.timeout.ms = 0`: a
/// timed-out message is skipped and the ones after it are written, "1 3
/// 2" once the batch is sent again), and an error that could leave a gap
/// stops the producer (`enable.gapless.guarantee`). The publisher bounds
/// a batch's deliveries itself ([`DELIVERY_DEADLINE`]), then purges and
/// drops the producer.
pub fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("enable.gapless.guarantee", "true")
        .set("acks", "all")
        // Fewer, fuller produce requests; Kafka p99 lag stays well within
        // its 250 ms (docs/benchmarks.md).
        .set("linger.ms", "20")
        .set("message.timeout.ms", "0")
        .set("topic.metadata.refresh.interval.ms", "5000");
    c
}

/// How long a batch's deliveries may take before the producer is purged
/// and dropped and the batch sent again by a new one.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(15);

pub struct Publisher {
    config: KafkaConfig,
    producer: FutureProducer,
    topic_ready: bool,
    vault: Arc<Vault>,
}

impl Publisher {
    pub fn new(config: KafkaConfig, vault: Arc<Vault>) -> anyhow::Result<Self> {
        Ok(Self {
            producer: producer(&config)?,
            config,
            topic_ready: false,
            vault,
        })
    }

    /// After a failed batch: a fresh producer (a restarted broker does not
    /// know the old producer id) and a fresh check that the topic exists (a
    /// memory broker forgets it on restart). The batch is then sent again.
    fn reset(&mut self) -> anyhow::Result<()> {
        self.producer = producer(&self.config)?;
        self.topic_ready = false;
        Ok(())
    }

    /// Creates the topic unless it exists (tansu does not create topics on
    /// produce, and a memory broker forgets them on restart).
    pub async fn ensure_topic(&mut self) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.config.brokers)
            .create()
            .context("cannot create the Kafka admin client")?;
        let topic = NewTopic::new(&self.config.topic, PARTITIONS, TopicReplication::Fixed(1));
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(10)));
        let results = admin.create_topics([&topic], &opts).await?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => anyhow::bail!("cannot create topic {t}: {code}"),
            }
        }
        self.topic_ready = true;
        Ok(())
    }

    /// Publishes the next batch after the checkpoint and advances it once
    /// every message is acknowledged. Returns the number published.
    pub async fn publish_batch(&mut self, conn: &mut PgConnection, limit: i64) -> anyhow::Result<usize> {
        if !self.topic_ready {
            self.ensure_topic().await?;
        }
        let at = engine::checkpoint(conn, NAME, false).await?;
        sqlx::query("SELECT pg_advisory_lock_shared($1)")
            .bind(roster_vault::ERASURE_LOCK)
            .execute(&mut *conn)
            .await?;
        let handed = self.hand_over(conn, at, limit).await;
        sqlx::query("SELECT pg_advisory_unlock_shared($1)")
            .bind(roster_vault::ERASURE_LOCK)
            .execute(&mut *conn)
            .await?;
        let Some((last, count, deliveries)) = handed? else {
            return Ok(0);
        };
        let confirmed = async {
            for delivery in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => continue,
                    Ok(Err((e, _))) => return Err(anyhow::Error::new(e).context("delivery failed")),
                    Err(_) => return Err(anyhow::anyhow!("producer dropped a delivery")),
                }
            }
            Ok(())
        };
        let failure = match tokio::time::timeout(DELIVERY_DEADLINE, confirmed).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(anyhow::anyhow!("deliveries not confirmed within {DELIVERY_DEADLINE:?}")),
        };
        if let Some(failure) = failure {
            // Nothing of this producer is written after what failed: its
            // queue is purged and it is dropped; a new one sends the batch
            // again from the checkpoint.
            self.producer.purge(PurgeConfig::default().queue().inflight());
            self.reset()?;
            return Err(failure);
        }
        engine::save_checkpoint(conn, NAME, last).await?;
        Ok(count)
    }

    /// Reads the next batch and hands every message to the producer: the
    /// position of the last event, the count, and the deliveries to await.
    async fn hand_over(
        &mut self,
        conn: &mut PgConnection,
        at: engine::Position,
        limit: i64,
    ) -> anyhow::Result<Option<Handed>> {
        let events = engine::read_after(conn, &self.vault, at, limit).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(None);
        };
        // Tests hold a batch here, read and not handed over, to race it.
        fail::fail_point!("publisher::handing_over");
        let mut deliveries = Vec::with_capacity(events.len() + 1);
        for event in &events {
            let message = Message::of(event);
            let record = FutureRecord::to(&self.config.topic)
                .key(&event.aggregate_id)
                .payload(&message.value)
                .headers(message.headers);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => return Err(e.into()),
            }
            if event.aggregate_type == "user" && event.event_type == "UserErased" {
                // The tombstone: compacted topics drop the user's messages.
                let record = FutureRecord::<String, [u8]>::to(&self.config.topic).key(&event.aggregate_id);
                match self.producer.send_result(record) {
                    Ok(delivery) => deliveries.push(delivery),
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        Ok(Some((last, events.len(), deliveries)))
    }

    /// Waits until every message handed to the producer is delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush incomplete");
        }
    }
}

/// A stored event as a Kafka message: value = public data, CloudEvents
/// binary-mode headers.
pub struct Message {
    pub value: Vec<u8>,
    pub headers: OwnedHeaders,
}

impl Message {
    pub fn of(e: &StoredEvent) -> Self {
        let value = if e.erased {
            b"null".to_vec()
        } else {
            roster_events::public_json(&e.payload)
        };
        let company = &e.metadata.company_id;
        let time = e
            .metadata
            .occurred_at
            .clone()
            .unwrap_or_else(|| roster_events::Timestamp::from(e.recorded_at).to_string());
        let headers = [
            ("ce_specversion", "1.0".to_string()),
            ("ce_id", e.event_id.to_string()),
            ("ce_source", format!("roster/{company}")),
            (
                "ce_type",
                roster_events::cloud_event_type(&e.aggregate_type, &e.event_type, &e.event_version),
            ),
            ("ce_subject", format!("{}s/{}", e.aggregate_type, e.aggregate_id)),
            ("ce_time", time),
            ("ce_sequence", e.sequence.to_string()),
            ("content-type", "application/json".to_string()),
        ]
        .into_iter()
        .fold(OwnedHeaders::new_with_capacity(8), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        });
        Self { value, headers }
    }
}

/// How long the publisher keeps draining after shutdown is requested.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Runs the publisher until shutdown, as the single leader across processes.
/// On shutdown the leader publishes what is left (the API has stopped
/// writing by then) for up to [`DRAIN`], then flushes the producer.
pub async fn run(
    pool: PgPool,
    vault: Arc<Vault>,
    config: KafkaConfig,
    mut wake: Wake,
    batch: i64,
    shutdown: CancellationToken,
) {
    let mut publisher = match Publisher::new(config, vault) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "publisher disabled");
            return;
        }
    };
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::pin!(deadline);
    'lead: while !shutdown.is_cancelled() {
        let mut conn = match engine::lead(&pool, NAME).await {
            Ok(Some(conn)) => conn,
            Ok(None) => {
                tokio::select! { _ = shutdown.cancelled() => break, _ = tokio::time::sleep(RETRY) => continue }
            }
            Err(e) => {
                tracing::warn!(error = %e, "publisher cannot reach the database");
                tokio::select! { _ = shutdown.cancelled() => break, _ = tokio::time::sleep(RETRY) => continue }
            }
        };
        tracing::info!("kafka publisher active");
        loop {
            let started = tokio::time::Instant::now();
            // Giving up mid-batch is safe: nothing is checkpointed until
            // every delivery is confirmed, and the next leader resends.
            let published = tokio::select! {
                r = publisher.publish_batch(&mut conn, batch) => r,
                _ = &mut deadline => break 'lead,
            };
            match published {
                Ok(n) if n as i64 >= batch => continue,
                // Draining: done once nothing is left after the checkpoint
                // (appends that committed after the last read are
                // published too, up to the deadline).
                Ok(_) if shutdown.is_cancelled() => match engine::lag(&pool, NAME, 1).await {
                    Ok(0) | Err(_) => break 'lead,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                },
                // Cancelled while idle: one more pass picks up the last writes.
                Ok(_) => {
                    engine::idle(&mut wake, &shutdown, started).await;
                }
                Err(e) if shutdown.is_cancelled() => {
                    tracing::warn!(error = format!("{e:#}"), "publishing failed while shutting down");
                    break 'lead;
                }
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "publishing failed; retrying");
                    tokio::select! { _ = shutdown.cancelled() => {}, _ = tokio::time::sleep(RETRY) => {} }
                    if conn.ping().await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    publisher.flush(Duration::from_secs(2));
}
