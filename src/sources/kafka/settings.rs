//! librdkafka client settings: what every consumer and producer of ours sets, the user's settings
//! on top (reserved ones refused), the client context that keeps librdkafka's logged reasons, and
//! configuration errors with secrets masked.

use crate::sources::error::SourceError;
use ingest_core::settings::{is_secret, scrub};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use std::sync::Mutex;
use std::time::Duration;

/// A setting value from jsonb: strings as they are, numbers and booleans spelled out.
fn setting_value(v: &serde_json::Value) -> Result<String, SourceError> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        other => Err(SourceError::Setting(format!("setting values must be strings, numbers or booleans, not {other}"))),
    }
}

/// Adds user settings (in order: later maps win), refusing the ones the extension manages under
/// any of their librdkafka names (or exactly-once would break). Who may give which setting is
/// checked before this, by `ingest_core::settings::check`.
fn apply_settings(cfg: &mut ClientConfig, extra: &[&serde_json::Map<String, serde_json::Value>]) -> Result<(), SourceError> {
    for map in extra {
        for (k, v) in map.iter() {
            if ingest_core::settings::is_reserved(k) {
                return Err(SourceError::Setting(ingest_core::settings::SettingError::Reserved(k.clone()).with_hint()));
            }
            cfg.set(k, setting_value(v)?);
        }
    }
    Ok(())
}

/// What every client of ours sets: the brokers, our client id, errors-only logging.
fn base_config(brokers: &[String]) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers.join(","));
    cfg.set("client.id", "pipeline_ingest");
    cfg.set("log_level", "3");
    cfg
}

/// librdkafka client settings for the given brokers plus extra settings (broker entries first,
/// then the consumer's own, which win).
pub fn client_config(
    brokers: &[String],
    extra: &[&serde_json::Map<String, serde_json::Value>],
) -> Result<ClientConfig, SourceError> {
    let mut cfg = base_config(brokers);
    cfg.set("enable.auto.commit", "false");
    cfg.set("enable.auto.offset.store", "false");
    cfg.set("enable.partition.eof", "false");
    cfg.set("auto.offset.reset", "earliest");
    // librdkafka postpones the next fetch by this much (default 1 s) once its prefetch queue is
    // full; a worker drains the queue far sooner, and would then sit idle waiting for data.
    cfg.set("fetch.queue.backoff.ms", "10");
    apply_settings(&mut cfg, extra)?;
    Ok(cfg)
}

/// librdkafka producer settings: the brokers, idempotence (no duplicates from retries, order
/// kept per partition), then the broker entries' extra settings.
pub fn producer_config(
    brokers: &[String],
    extra: &[&serde_json::Map<String, serde_json::Value>],
) -> Result<ClientConfig, SourceError> {
    let mut cfg = base_config(brokers);
    cfg.set("enable.idempotence", "true");
    cfg.set("linger.ms", "5");
    // The producer worker queues up to 200k messages before it awaits their reports (librdkafka's
    // default queue holds 100k); what is queued is also bounded by its bytes (1 GiB default).
    cfg.set("queue.buffering.max.messages", "500000");
    apply_settings(&mut cfg, extra)?;
    Ok(cfg)
}

/// Keeps librdkafka's latest error-level log line: error events reach us as bare codes ("broker
/// transport failure"), the log line says why ("SASL authentication error: ..."). librdkafka calls
/// `log` from its own threads, so it only stores the text.
#[derive(Default)]
pub struct Context {
    last_error: Mutex<Option<String>>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, _facility: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Error as i32) {
            if let Ok(mut last) = self.last_error.lock() {
                *last = Some(message.to_string());
            }
        }
    }
}

impl ConsumerContext for Context {}

impl Context {
    /// `error`, with librdkafka's latest logged reason appended when there is one (taken once).
    pub fn explain(&self, error: String) -> String {
        match self.last_error.lock().ok().and_then(|mut l| l.take()) {
            Some(reason) => format!("{error} ({reason})"),
            None => error,
        }
    }
}

/// A consumer of ours.
pub type Client = BaseConsumer<Context>;

/// Adds librdkafka's logged reason to an error. Log lines reach the context only while the client
/// is polled, so a client with nothing assigned (no message can be taken by mistake) is polled
/// briefly first.
pub fn explain(consumer: &Client, error: String) -> String {
    if consumer.assignment().map(|a| a.count() == 0).unwrap_or(false) {
        for _ in 0..100 {
            if consumer.poll(Duration::ZERO).is_none() {
                break;
            }
        }
    }
    consumer.context().explain(error)
}

/// The secret settings of a client configuration (to keep them out of error messages).
pub fn secrets_in(cfg: &ClientConfig) -> Vec<(String, String)> {
    cfg.config_map().into_iter().filter(|(k, _)| is_secret(k)).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Creates a librdkafka consumer; errors (which quote offending values) have secrets masked.
pub fn create_consumer(cfg: &ClientConfig) -> Result<Client, SourceError> {
    cfg.create_with_context(Context::default()).map_err(|e| config_error(&e, cfg))
}

/// A configuration (or client creation) error, secrets masked. The rdkafka crate's own message
/// appends the offending value whatever the key (a mistyped secret key would show its value), so
/// only librdkafka's description is used.
pub fn config_error(e: &rdkafka::error::KafkaError, cfg: &ClientConfig) -> SourceError {
    let text = match e {
        rdkafka::error::KafkaError::ClientConfig(_, desc, _, _) => desc.clone(),
        other => other.to_string(),
    };
    SourceError::Setting(scrub(&text, &secrets_in(cfg)))
}

/// Checks every setting with librdkafka without creating a client (no threads, no network).
pub fn check_settings(cfg: &ClientConfig) -> Result<(), SourceError> {
    cfg.create_native_config().map(|_| ()).map_err(|e| config_error(&e, cfg))
}
