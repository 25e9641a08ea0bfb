//! What the producer worker says about a failed delivery, and the client setting that makes a
//! missing topic known at once.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// librdkafka's `topic.metadata.propagation.max.ms` for the producer unless a broker entry sets it
/// (its default is 30 s): how long the brokers may say a topic does not exist before librdkafka
/// fails its messages with UnknownTopic. The rows stay in the outbox and are retried with the
/// topic's backoff, so a topic still being created only costs that retry; meanwhile
/// `outbox_status.last_error` says within about a second that the topic does not exist, where
/// it said nothing for 10 s and failed after 30.
pub const UNKNOWN_TOPIC_AFTER_MS: &str = "1000";

/// The text recorded in `outbox_status.last_error` for a message of `topic` that failed with `e`:
/// librdkafka's error, and for a topic the brokers do not know, what to do about it.
pub fn failure_text(e: &KafkaError, topic: &str) -> String {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition) => format!(
            "UnknownTopic: topic \"{topic}\" does not exist on the brokers ({e}); its messages wait in the outbox and \
             are retried (1 s doubling to 30 s): create the topic, or drop them with pipeline_kafka.outbox_discard('{topic}')"
        ),
        _ => e.to_string(),
    }
}
