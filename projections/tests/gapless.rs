//! The publisher's producer never writes a message of a key after one that
//! failed before it: what it wrote of a batch is always a prefix, so the
//! publisher's answer to a failure (a new producer sends the batch again
//! from the checkpoint) keeps every key in order for a consumer that drops
//! repeats. librdkafka's mock cluster forces the failures.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use roster_projections::publisher::{producer_config, KafkaConfig};
use std::time::Duration;

/// The mock cluster, its one-partition topic `t`, and the publisher's
/// producer for it with one message per produce request and one request at
/// a time (so that the messages after a failing one are still queued).
fn cluster() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    FutureProducer,
) {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("t", 1, 1).expect("topic");
    let config = KafkaConfig {
        brokers: mock.bootstrap_servers(),
        topic: "t".into(),
    };
    let mut settings = producer_config(&config);
    settings
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .set("max.in.flight.requests.per.connection", "1");
    let producer = settings.create().expect("producer");
    (mock, producer)
}

fn send(producer: &FutureProducer, n: u32) -> DeliveryFuture {
    producer
        .send_result(FutureRecord::to("t").key("user-1").payload(&n.to_string()))
        .expect("queued")
}

/// Which of `deliveries` (numbered from `first`) were written.
async fn outcomes(first: u32, deliveries: Vec<DeliveryFuture>) -> (Vec<u32>, Vec<u32>) {
    let (mut written, mut failed) = (Vec::new(), Vec::new());
    for (n, d) in (first..).zip(deliveries) {
        match tokio::time::timeout(Duration::from_secs(60), d).await {
            Ok(Ok(Ok(_))) => written.push(n),
            _ => failed.push(n),
        }
    }
    (written, failed)
}

/// A message that fails for good stops the producer: no message produced
/// after it is written. (Messages already queued behind it are purged by
/// librdkafka with the fatal error; one already in flight is refused by a
/// real broker for its sequence, which the mock cluster does not check, so
/// the test produces the next message once the failure is known.)
#[tokio::test]
async fn a_permanent_error_stops_the_producer_before_any_later_message() {
    let (mock, producer) = cluster();
    assert!(send(&producer, 1).await.expect("report").is_ok());
    // The next produce request (message 2's) fails for good.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let (_, failed) = outcomes(2, vec![send(&producer, 2)]).await;
    assert_eq!(failed, [2], "the injected error fails message 2");
    let (written, _) = match producer.send_result(FutureRecord::to("t").key("user-1").payload("3")) {
        Ok(d) => outcomes(3, vec![d]).await,
        Err(_) => (vec![], vec![3]),
    };
    assert!(written.is_empty(), "message 3 written after message 2 failed");
    let fatal = rdkafka::producer::Producer::client(&producer).fatal_error();
    assert!(fatal.is_some(), "the producer stopped");
}

#[tokio::test]
async fn a_message_waiting_out_an_outage_is_never_timed_out_and_skipped() {
    let (mock, producer) = cluster();
    assert!(send(&producer, 1).await.expect("report").is_ok());
    mock.broker_down(1).expect("broker down");
    let waiting = send(&producer, 2);
    // Longer than any timeout the producer had (15 s): a message timed out
    // in the queue is skipped, and the ones produced after it are written.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let after = send(&producer, 3);
    mock.broker_up(1).expect("broker up");
    let (written, failed) = outcomes(2, vec![waiting, after]).await;
    assert_eq!((written, failed), (vec![2, 3], vec![]));
}
