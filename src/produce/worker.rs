//! The producer worker of a database: sends committed outbox rows with librdkafka's idempotent
//! producer and deletes each row only after the broker acknowledged it. A crash between the ack
//! and the delete sends that message again (at-least-once); nothing committed is lost, nothing
//! rolled back is ever read. Per partition, messages go out in outbox order.

use super::outbox::{self, Pending};
use crate::worker::{reload_config_if_requested, shutdown_requested, wait};
use crate::xact::in_transaction;
use ingest_core::backoff::Backoff;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// Messages read from the outbox per round.
const ROUND: i64 = 5000;
/// How long librdkafka keeps trying one message before reporting it failed.
const MESSAGE_TIMEOUT_MS: u64 = 10_000;

/// Collects delivery reports; librdkafka calls it from `poll`/`flush` on this thread.
#[derive(Default)]
struct Reports {
    results: Mutex<Vec<(usize, Result<(), String>)>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let r = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.to_string()),
        };
        if let Ok(mut v) = self.results.lock() {
            v.push((index, r));
        }
    }
}

struct Client {
    settings: String,
    producer: BaseProducer<Reports>,
}

fn make_client(brokers: &[String], config: &serde_json::Map<String, serde_json::Value>) -> Result<Client, String> {
    let settings = format!("{}|{}", brokers.join(","), serde_json::Value::Object(config.clone()));
    let mut cfg = crate::sources::kafka::producer_config(brokers, &[config])?;
    cfg.set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string());
    let producer: BaseProducer<Reports> = cfg.create_with_context(Reports::default()).map_err(|e| {
        format!("could not create Kafka producer: {}", crate::sources::kafka::config_error(&e, &cfg))
    })?;
    Ok(Client { settings, producer })
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pipeline_kafka_producer_main(_arg: pg_sys::Datum) {
    crate::worker::setup_signals();
    let dboid: u32 = BackgroundWorker::get_extra().parse().expect("producer extra holds a database oid");
    let dboid = pg_sys::Oid::from(dboid);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), None);
    crate::shmem::set_producer(dboid, crate::worker::my_pid());

    let mut client: Option<Client> = None;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut failing_topics: Vec<String> = Vec::new();
    while !shutdown_requested() {
        reload_config_if_requested();
        let loaded = in_transaction(|| {
            if !crate::catalog::extension_exists() {
                return None;
            }
            let (brokers, config) = crate::catalog::kafka::brokers();
            Some((brokers, config, outbox::oldest(ROUND)))
        });
        let (brokers, config, batch) = match loaded {
            Ok(Some(v)) => v,
            Ok(None) => break,
            Err(e) => {
                warning!("pipeline_kafka producer: could not read the outbox: {e}");
                wait(backoff.next_delay(), None);
                continue;
            }
        };
        if batch.is_empty() {
            wait(Duration::from_secs(5), None);
            continue;
        }
        let problem = if brokers.is_empty() {
            Some("no Kafka broker is configured (pipeline_kafka.add_broker)".to_string())
        } else {
            let settings = format!("{}|{}", brokers.join(","), serde_json::Value::Object(config.clone()));
            if client.as_ref().is_none_or(|c| c.settings != settings) {
                client = None;
                match make_client(&brokers, &config) {
                    Ok(c) => {
                        client = Some(c);
                        None
                    }
                    Err(e) => Some(e),
                }
            } else {
                None
            }
        };
        if let Some(p) = problem {
            let topics: Vec<&str> = batch.iter().map(|m| m.topic.as_str()).collect();
            record(&[], &topics.iter().map(|t| (t.to_string(), p.clone())).collect::<Vec<_>>(), &[]);
            warning!("pipeline_kafka producer: {p}");
            wait(backoff.next_delay(), None);
            continue;
        }
        let c = client.as_ref().expect("client was made above");
        let (delivered, failed) = send_round(&c.producer, &batch);
        let delivered_topics: Vec<String> = {
            let mut t: Vec<String> = delivered.iter().map(|i| batch[*i].topic.clone()).collect();
            t.sort();
            t.dedup();
            t.retain(|t| !failed.iter().any(|(ft, _)| ft == t));
            t
        };
        let ids: Vec<i64> = delivered.iter().map(|i| batch[*i].id).collect();
        let cleared: Vec<String> = delivered_topics.into_iter().filter(|t| failing_topics.contains(t)).collect();
        record(&ids, &failed, &cleared);
        failing_topics.retain(|t| !cleared.contains(t));
        for (t, e) in &failed {
            if !failing_topics.contains(t) {
                warning!("pipeline_kafka producer: delivery to topic \"{t}\" failed: {e}");
                failing_topics.push(t.clone());
            }
        }
        if failed.is_empty() {
            backoff.reset();
        } else {
            wait(backoff.next_delay(), None);
        }
    }
    crate::shmem::set_producer(dboid, 0);
}

/// Sends a round and waits for every delivery report. Returns the indexes delivered and the
/// (topic, error) of failures.
fn send_round(producer: &BaseProducer<Reports>, batch: &[Pending]) -> (Vec<usize>, Vec<(String, String)>) {
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let mut queued = 0usize;
    for (i, m) in batch.iter().enumerate() {
        let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
        for (k, v) in &m.headers {
            headers = headers.insert(Header { key: k, value: v.as_deref() });
        }
        let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(&m.topic, i).headers(headers);
        if let Some(k) = &m.key {
            record = record.key(k.as_slice());
        }
        if let Some(p) = &m.message {
            record = record.payload(p.as_slice());
        }
        if let Some(p) = m.partition {
            record = record.partition(p);
        }
        if let Some(ts) = m.timestamp_ms {
            record = record.timestamp(ts);
        }
        loop {
            match producer.send(record) {
                Ok(()) => {
                    queued += 1;
                    break;
                }
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    failed.entry(m.topic.clone()).or_insert_with(|| e.to_string());
                    break;
                }
            }
        }
    }
    // Every queued message gets a report within message.timeout.ms; wait a little longer.
    let deadline = std::time::Instant::now() + Duration::from_millis(MESSAGE_TIMEOUT_MS + 5000);
    while producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
        // flush() serves delivery callbacks on this thread; bounded slices keep SIGTERM handled.
        let _ = producer.flush(Duration::from_millis(200)); // a timeout here only means "not yet"
        pgrx::check_for_interrupts!();
        crate::worker::exit_if_postmaster_died();
    }
    producer.poll(Duration::ZERO);
    let reports = std::mem::take(&mut *producer.context().results.lock().expect("delivery report lock"));
    let mut delivered = Vec::with_capacity(queued);
    let mut by_index: HashMap<usize, Result<(), String>> = reports.into_iter().collect();
    for (i, m) in batch.iter().enumerate() {
        match by_index.remove(&i) {
            Some(Ok(())) => delivered.push(i),
            Some(Err(e)) => {
                failed.entry(m.topic.clone()).or_insert(e);
            }
            None => {}
        }
    }
    (delivered, failed.into_iter().collect())
}

/// In one transaction: delete delivered rows, record failures, clear recovered topics.
fn record(delivered: &[i64], failed: &[(String, String)], cleared: &[String]) {
    let r = in_transaction(|| {
        outbox::delete(delivered);
        for (t, e) in failed {
            outbox::set_topic_error(t, Some(e));
        }
        for t in cleared {
            outbox::set_topic_error(t, None);
        }
    });
    if let Err(e) = r {
        warning!("pipeline_kafka producer: could not update the outbox: {e}");
    }
}
