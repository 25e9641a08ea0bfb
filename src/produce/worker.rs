//! The producer worker of a database: sends committed outbox rows with librdkafka's idempotent
//! producer and deletes each row only after the broker acknowledged it. A crash between the ack
//! and the delete sends that message again (at-least-once); nothing committed is lost, nothing
//! rolled back is ever read. Per partition, messages go out in outbox order.
//!
//! A pass reads the outbox in one snapshot (one cursor, see `outbox::oldest`), so a transaction
//! that commits meanwhile is wholly in the pass or wholly in a later one; before, each chunk was a
//! query with its own snapshot and `id > last id read`, and a transaction committing between two
//! chunks had its higher ids sent before its lower ones.
//!
//! Topics are independent: a topic's next messages are read only once its messages in flight are
//! all acknowledged (which keeps the order), and a topic whose delivery failed is left alone for a
//! backoff (1 s doubling to 30 s, its error in outbox_status) while other topics' messages keep
//! going out; so one failing topic never delays another.
//!
//! librdkafka never times a message out (message.timeout.ms = 0). Its idempotent producer keeps a
//! partition's order only among the messages it delivers: with a timeout, a broker outage or a slow
//! broker could fail a partition's first messages while later ones were still queued and then
//! delivered (librdkafka's INTRODUCTION.md, "Message timeout considerations": 1,2,3,4,5 written as
//! 1,4,5), and the failed ones, sent again, came after them. So a message stays with librdkafka
//! until it is delivered or fails for good (topic or partition unknown, after
//! topic.metadata.propagation.max.ms, 1 s here: delivery::UNKNOWN_TOPIC_AFTER_MS; too large; not
//! authorized), and the worker never sends again
//! a message librdkafka still holds, unless the client is dropped (a fatal error, or new broker
//! settings while messages waited SETTINGS_DRAIN): then what it held may be sent twice. A topic
//! with no delivery report for STALL_AFTER shows the wait (with the client's latest error event)
//! in outbox_status until its next delivery. A full librdkafka queue ends the pass instead of
//! blocking the worker.
//!
//! A message that is too large (librdkafka refuses it at once over its message.max.bytes, or the
//! broker refuses it, MESSAGE_TOO_LARGE, over the topic's max.message.bytes) is moved to the
//! `outbox_dead_letters` table (54000) instead of blocking its topic forever. The broker judges a
//! record batch, so when a batch of several of the topic's messages is refused, the topic goes
//! "one by one": its messages are sent alone (one in flight) until every message of the refused
//! batch is delivered or dead-lettered; only a message refused alone is dead-lettered. The
//! worker runs only while there is
//! work: it exits once the outbox stayed empty for `IDLE_EXIT`, and the supervisor starts it again
//! when rows are committed.

use crate::sources::error::SourceError;
use super::outbox::{self, Pending};
use crate::worker::{reload_config_if_requested, shutdown_requested, wait};
use crate::xact::in_transaction;
use ingest_core::backoff::Backoff;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Messages read by a pass's first query.
const FIRST_CHUNK: usize = 1000;
/// Messages and message bytes read (and sent) per pass at most: a pass's messages are all sent
/// before its delivery reports are awaited, so one round trip to the broker (and one DELETE)
/// covers many messages, while the worker's memory stays bounded for large messages. 50,000
/// delivers as fast as 100,000 did and halves the worker's private memory while it drains a
/// 1M-row outbox (55 MiB instead of 103; `make bench`, case outbox).
const PASS_MESSAGES: usize = 50_000;
const PASS_BYTES: usize = 64 << 20;
/// Messages in flight at most, all topics together.
const MAX_IN_FLIGHT: usize = 2 * PASS_MESSAGES;
/// How long one pass waits for delivery reports before reading other topics' rows.
const REPORT_WAIT: Duration = Duration::from_millis(100);
/// A topic whose messages in flight had no delivery report for this long shows the wait (and the
/// client's latest error, such as the broker being down) in outbox_status; its messages stay
/// with librdkafka, which never times them out (see the module comment).
const STALL_AFTER: Duration = Duration::from_secs(10);
/// After a change of the broker settings, how long the old client may keep its messages in
/// flight before it is dropped (a wrong broker address would hold them forever); the rows of the
/// messages it still held are sent again by the new client.
const SETTINGS_DRAIN: Duration = Duration::from_secs(10);
/// How long queuing waits for room in librdkafka's queue before it leaves the rest of the pass
/// for later passes (a full queue empties only as the broker acknowledges).
const QUEUE_WAIT: Duration = Duration::from_millis(100);
/// How long the worker stays once the outbox is empty.
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// A failed delivery: the error, and whether it says the message (or its batch) is too large.
type Failure = (String, bool);

/// Collects delivery reports (by outbox id) and client errors; librdkafka calls it from `poll`
/// on this thread.
#[derive(Default)]
struct Reports {
    results: Mutex<Vec<(i64, Result<(), Failure>)>>,
    /// The client's latest error event (all brokers down, authentication failed, ...), until a
    /// message is delivered.
    client_error: Mutex<Option<String>>,
    /// A fatal error: the idempotent producer can deliver nothing more.
    fatal: AtomicBool,
}

fn too_large(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
}

impl ClientContext for Reports {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::Fatal)) {
            self.fatal.store(true, Ordering::Relaxed);
        }
        let what = error.rdkafka_error_code().map_or_else(|| error.to_string(), |c| c.to_string());
        if let Ok(mut e) = self.client_error.lock() {
            *e = Some(format!("{what}: {reason}"));
        }
    }
}

impl Reports {
    fn client_error(&self) -> Option<String> {
        self.client_error.lock().ok().and_then(|e| e.clone())
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let r = match result {
            Ok(_) => Ok(()),
            Err((e, m)) => Err((super::delivery::failure_text(e, m.topic()), too_large(e))),
        };
        if let Ok(mut v) = self.results.lock() {
            v.push((id as i64, r));
        }
    }
}

struct Client {
    settings: String,
    producer: BaseProducer<Reports>,
    /// Re-adds the bootstrap servers when librdkafka has dropped every broker after a metadata
    /// response listing none (a broker stopping; sources/kafka_brokers.rs), as for consumers.
    rescue: crate::sources::kafka_brokers::BrokerRescue,
}

/// `settings` identifies the broker list and settings the client is made from (a change makes a
/// new client).
fn make_client(brokers: &[String], config: &serde_json::Map<String, serde_json::Value>, settings: String) -> Result<Client, SourceError> {
    let mut cfg = crate::sources::kafka::producer_config(brokers, &[config])?;
    // Never time a message out: the idempotent producer keeps a partition's order only among the
    // messages it delivers, and one that timed out would be sent again after later ones.
    cfg.remove("delivery.timeout.ms");
    cfg.set("message.timeout.ms", "0");
    if cfg.get("topic.metadata.propagation.max.ms").is_none() {
        cfg.set("topic.metadata.propagation.max.ms", super::delivery::UNKNOWN_TOPIC_AFTER_MS);
    }
    let producer: BaseProducer<Reports> = cfg
        .create_with_context(Reports::default())
        .map_err(|e| crate::sources::kafka::config_error(&e, &cfg).context("could not create Kafka producer"))?;
    let rescue = crate::sources::kafka_brokers::BrokerRescue::new(cfg.get("bootstrap.servers"));
    Ok(Client { settings, producer, rescue })
}

/// A message sent and not yet reported on.
struct InFlight {
    /// Shared by the messages of a topic sent in one pass.
    topic: Rc<str>,
    /// The only message of its topic sent in its pass (so alone in its record batch).
    alone: bool,
}

/// A topic whose last delivery failed: not read again before `until`.
struct Failing {
    backoff: Backoff,
    until: Instant,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pipeline_kafka_producer_main(_arg: pg_sys::Datum) {
    crate::worker::setup_signals();
    let dboid: u32 = BackgroundWorker::get_extra().parse().expect("producer extra holds a database oid");
    let dboid = pg_sys::Oid::from(dboid);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), None);
    crate::shmem::set_producer(dboid, crate::worker::my_pid());
    // The outbox reads and deletes of thousands of rows cost enough to be JIT-compiled, which
    // takes longer (hundreds of ms of LLVM per statement) than running them.
    // SAFETY: the worker's main thread, after connecting; "jit" is a user-settable boolean.
    unsafe {
        pg_sys::SetConfigOption(c"jit".as_ptr(), c"off".as_ptr(), pg_sys::GucContext::PGC_USERSET, pg_sys::GucSource::PGC_S_OVERRIDE);
    }

    let mut client: Option<Client> = None;
    // For problems of the whole producer (no broker, bad settings, catalog errors).
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut in_flight: HashMap<i64, InFlight> = HashMap::new();
    let mut failing: BTreeMap<String, Failing> = BTreeMap::new();
    // Topics sent one message at a time, up to this outbox id (see the module comment).
    let mut one_by_one: BTreeMap<String, i64> = BTreeMap::new();
    // Per topic with messages in flight: when it last sent a pass or had a delivery report.
    let mut progress: HashMap<String, Instant> = HashMap::new();
    // Topics shown as waiting for the broker (see STALL_AFTER), with the error recorded.
    let mut waiting: BTreeMap<String, String> = BTreeMap::new();
    // librdkafka's queue was full: nothing more is read until a delivery report makes room.
    let mut queue_full = false;
    // When the broker settings were seen to change while the client had messages in flight.
    let mut settings_changed: Option<Instant> = None;
    let mut idle_since = Instant::now();
    while !shutdown_requested() {
        reload_config_if_requested();
        if let Some(c) = client.as_mut() {
            c.rescue.look(c.producer.client().native_ptr());
        }
        let now = Instant::now();
        queue_full &= !in_flight.is_empty();
        // Topics not to read now: in backoff, or with messages in flight.
        let mut skip: BTreeSet<String> = failing.iter().filter(|(_, f)| f.until > now).map(|(t, _)| t.clone()).collect();
        let in_flight_topics: BTreeSet<&str> = in_flight.values().map(|m| &*m.topic).collect();
        skip.extend(in_flight_topics.into_iter().map(str::to_string));
        let room = if queue_full { 0 } else { MAX_IN_FLIGHT.saturating_sub(in_flight.len()).min(PASS_MESSAGES) };
        // Topics going one by one are read apart: their oldest message only.
        let alone: Vec<String> =
            one_by_one.keys().filter(|t| !queue_full && !skip.contains(*t)).cloned().collect();
        skip.extend(one_by_one.keys().cloned());
        let skip: Vec<String> = skip.into_iter().collect();
        let loaded = in_transaction(|| {
            if !crate::catalog::extension_exists() {
                return None;
            }
            let (brokers, config) = crate::catalog::kafka::brokers();
            let mut batch = read_pass(room, &skip);
            batch.extend(alone.iter().filter_map(|t| outbox::first_of(t)));
            Some((brokers, config, batch))
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
        // New broker settings: a new client once the old one has nothing in flight, or after
        // SETTINGS_DRAIN (a wrong broker address would never take its messages). The messages it
        // still held go with it, and their rows are read and sent again by the new client.
        let settings = format!("{}|{}", brokers.join(","), serde_json::Value::Object(config.clone()));
        if client.as_ref().is_some_and(|c| c.settings != settings) {
            let since = *settings_changed.get_or_insert(now);
            if in_flight.is_empty() || now.duration_since(since) >= SETTINGS_DRAIN {
                client = None;
                in_flight.clear();
                queue_full = false;
                settings_changed = None;
            }
        } else {
            settings_changed = None;
        }
        if batch.is_empty() && in_flight.is_empty() {
            if !failing.is_empty() {
                // Rows of failing topics wait out their backoff.
                let next = failing.values().map(|f| f.until).min().unwrap_or(now);
                wait(next.saturating_duration_since(now).clamp(Duration::from_millis(50), Duration::from_secs(1)), None);
                idle_since = Instant::now();
            } else if idle_since.elapsed() >= IDLE_EXIT {
                // Nothing to do: give the slot back (the supervisor starts a producer again when
                // rows are committed, or when it sees rows at its next pass).
                break;
            } else {
                wait(Duration::from_secs(1), None);
            }
            continue;
        }
        idle_since = Instant::now();

        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        // Messages too large for good: (id, error, SQLSTATE), and their topics.
        let mut dead: Vec<(i64, String, &str)> = Vec::new();
        let mut resolved: Vec<(String, i64)> = Vec::new();
        if !batch.is_empty() {
            let problem = if brokers.is_empty() {
                Some("no Kafka broker is configured (pipeline_kafka.add_broker)".to_string())
            } else if client.is_none() {
                match make_client(&brokers, &config, settings) {
                    Ok(c) => {
                        client = Some(c);
                        None
                    }
                    Err(e) => Some(e.to_string()),
                }
            } else {
                None
            };
            if let Some(p) = problem {
                let topics: BTreeSet<&str> = batch.iter().map(|m| m.topic.as_str()).collect();
                record(&[], &[], &topics.iter().map(|t| (t.to_string(), p.clone())).collect::<Vec<_>>(), &[]);
                warning!("pipeline_kafka producer: {p}");
                wait(backoff.next_delay(), None);
                continue;
            }
            backoff.reset();
            let c = client.as_ref().expect("client was made above");
            let Sent { queued, refused, oversized, full } = send(&c.producer, &batch);
            queue_full = full;
            for (topic, e) in refused {
                failed.entry(topic).or_insert(e);
            }
            for (i, e) in oversized {
                let m = &batch[i];
                dead.push((m.id, format!("the producer refused the message as larger than its message.max.bytes: {e}"), "54000"));
                resolved.push((m.topic.clone(), m.id));
            }
            let sent_at = Instant::now();
            let mut names: HashMap<&str, Rc<str>> = HashMap::new();
            let mut per_topic: HashMap<&str, usize> = HashMap::new();
            for &i in &queued {
                *per_topic.entry(batch[i].topic.as_str()).or_default() += 1;
            }
            for i in queued {
                let topic = names.entry(batch[i].topic.as_str()).or_insert_with(|| Rc::from(batch[i].topic.as_str())).clone();
                let alone = per_topic[batch[i].topic.as_str()] == 1;
                in_flight.insert(batch[i].id, InFlight { topic, alone });
            }
            for t in per_topic.keys() {
                progress.insert(t.to_string(), sent_at);
            }
        }

        // Delivery reports: wait a little for them (they usually come within milliseconds), then
        // go on reading other topics' rows while slow ones are still in flight.
        let mut delivered: Vec<i64> = Vec::new();
        let mut delivered_topics: BTreeSet<String> = BTreeSet::new();
        if let Some(c) = client.as_ref() {
            // rdkafka's poll(t) serves events until t has passed (not until the first one), so
            // it is called with short timeouts until every message in flight is reported on.
            let deadline = Instant::now() + REPORT_WAIT;
            while !in_flight.is_empty() {
                c.producer.poll(Duration::from_millis(1));
                pgrx::check_for_interrupts!();
                crate::worker::exit_if_postmaster_died();
                let reported = c.producer.context().results.lock().map(|r| r.len()).unwrap_or(0);
                if reported >= in_flight.len() || Instant::now() >= deadline || shutdown_requested() {
                    break;
                }
            }
            let reports = std::mem::take(&mut *c.producer.context().results.lock().expect("delivery report lock"));
            if !reports.is_empty() {
                queue_full = false;
            }
            let reported_at = Instant::now();
            for (id, r) in reports {
                let Some(m) = in_flight.remove(&id) else { continue };
                if let Some(p) = progress.get_mut(&*m.topic) {
                    *p = reported_at;
                }
                match r {
                    Ok(()) => {
                        delivered.push(id);
                        resolved.push((m.topic.to_string(), id));
                        if !delivered_topics.contains(&*m.topic) {
                            delivered_topics.insert(m.topic.to_string());
                        }
                    }
                    Err((e, true)) if m.alone => {
                        warning!("pipeline_kafka producer: the broker refused message {id} of topic \"{}\" as too large: moved to outbox_dead_letters", m.topic);
                        dead.push((id, format!("the broker refused the message as too large for the topic (its max.message.bytes): {e}"), "54000"));
                        resolved.push((m.topic.to_string(), id));
                    }
                    Err((_, true)) => {
                        // Refused with other messages of its batch: which one is too large shows
                        // when they go one by one (at once, no backoff).
                        let until = one_by_one.entry(m.topic.to_string()).or_insert(id);
                        *until = (*until).max(id);
                    }
                    Err((e, false)) => {
                        failed.entry(m.topic.to_string()).or_insert(e);
                    }
                }
            }
        }
        if let Some(c) = client.as_ref() {
            if !delivered.is_empty() {
                // The broker takes messages again: an older client error no longer explains a wait.
                if let Ok(mut e) = c.producer.context().client_error.lock() {
                    *e = None;
                }
            }
            if c.producer.context().fatal.load(Ordering::Relaxed) {
                // The idempotent producer stopped for good (librdkafka fails what it held): a new
                // client sends the rows still in the outbox.
                let e = c.producer.context().client_error().unwrap_or_else(|| "fatal producer error".into());
                warning!("pipeline_kafka producer: {e}: making a new Kafka client");
                for m in in_flight.values() {
                    failed.entry(m.topic.to_string()).or_insert_with(|| e.clone());
                }
                client = None;
                in_flight.clear();
                queue_full = false;
            }
        }
        // Topics whose messages in flight had no report for STALL_AFTER: the wait shows in
        // outbox_status (recorded again only when its text changes).
        let in_flight_topics: BTreeSet<&str> = in_flight.values().map(|m| &*m.topic).collect();
        progress.retain(|t, _| in_flight_topics.contains(t.as_str()));
        let now = Instant::now();
        let mut stalled: Vec<(String, String)> = Vec::new();
        if progress.values().any(|p| now.duration_since(*p) >= STALL_AFTER) {
            let why = client.as_ref().and_then(|c| c.producer.context().client_error());
            for (t, p) in &progress {
                if now.duration_since(*p) < STALL_AFTER || failed.contains_key(t) {
                    continue;
                }
                let e = format!(
                    "no delivery report from Kafka for {} s{}; the messages stay queued in the producer and are delivered, in order, once the broker takes them",
                    STALL_AFTER.as_secs(),
                    why.as_deref().map(|w| format!(" (last client error: {w})")).unwrap_or_default()
                );
                if waiting.get(t) != Some(&e) {
                    if !waiting.contains_key(t) {
                        warning!("pipeline_kafka producer: topic \"{t}\": {e}");
                    }
                    waiting.insert(t.clone(), e.clone());
                    stalled.push((t.clone(), e));
                }
            }
        }

        let mut cleared: Vec<String> = Vec::new();
        for t in delivered_topics {
            let was_waiting = waiting.remove(&t).is_some();
            if !failed.contains_key(&t) && (failing.remove(&t).is_some() || was_waiting) {
                cleared.push(t);
            }
        }
        for t in failed.keys() {
            waiting.remove(t);
        }
        let failed: Vec<(String, String)> = failed.into_iter().collect();
        if !delivered.is_empty() || !failed.is_empty() || !stalled.is_empty() || !cleared.is_empty() || !dead.is_empty() {
            let errors: Vec<(String, String)> = failed.iter().chain(&stalled).cloned().collect();
            record(&delivered, &dead, &errors, &cleared);
        }
        // A topic going one by one is done once the last message of its refused batch is resolved.
        for (t, id) in resolved {
            if one_by_one.get(&t).is_some_and(|until| id >= *until) {
                one_by_one.remove(&t);
            }
        }
        for (t, e) in &failed {
            let f = failing.entry(t.clone()).or_insert_with(|| {
                warning!("pipeline_kafka producer: delivery to topic \"{t}\" failed: {e}");
                Failing { backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)), until: Instant::now() }
            });
            f.until = Instant::now() + f.backoff.next_delay();
        }
        if batch.is_empty() && !in_flight.is_empty() {
            // Only waiting for reports: also listen to the latch (new rows) between polls.
            wait(Duration::from_millis(10), None);
        }
    }
    crate::shmem::set_producer(dboid, 0);
}

/// The oldest committed messages except those of the topics in `skip`, at most `limit` of them
/// and about PASS_BYTES, in id order, in one snapshot: FIRST_CHUNK first, then chunks as large as
/// the first messages' sizes let fit in what is left of PASS_BYTES (so small messages take two
/// fetches, and a pass of large ones stays within its byte budget).
fn read_pass(limit: usize, skip: &[String]) -> Vec<Pending> {
    if limit == 0 {
        return Vec::new();
    }
    let mut bytes = 0usize;
    let mut counted = 0usize;
    outbox::oldest(limit as i64, skip, |batch| {
        for m in &batch[counted..] {
            // (64: about what a message costs besides its key and value)
            bytes += 64 + m.value.as_ref().map_or(0, Vec::len) + m.key.as_ref().map_or(0, Vec::len);
        }
        counted = batch.len();
        if batch.len() >= limit || bytes >= PASS_BYTES {
            return 0;
        }
        let fit = match batch.len() {
            0 => FIRST_CHUNK,
            n => (PASS_BYTES - bytes) / (bytes / n).max(1),
        };
        (limit - batch.len()).min(fit.max(1))
    })
}

/// What `send` did with a round of messages.
struct Sent {
    /// The indexes queued.
    queued: Vec<usize>,
    /// The (topic, error) of messages librdkafka refused at once (after a refusal the topic's
    /// later messages are not queued: they would overtake it).
    refused: Vec<(String, String)>,
    /// The (index, error) of messages it refused as larger than its message.max.bytes (those
    /// never go out: the topic's later messages are queued).
    oversized: Vec<(usize, String)>,
    /// librdkafka's queue stayed full for QUEUE_WAIT: the rest of the round was not queued (its
    /// rows are read again once the topic's messages in flight are reported on).
    full: bool,
}

/// Queues a round of messages, in order.
fn send(producer: &BaseProducer<Reports>, batch: &[Pending]) -> Sent {
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let mut oversized = Vec::new();
    let mut queued = Vec::with_capacity(batch.len());
    let mut full_since: Option<Instant> = None;
    let mut full = false;
    'messages: for (i, m) in batch.iter().enumerate() {
        if failed.contains_key(&m.topic) {
            continue;
        }
        let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
        for (k, v) in &m.headers {
            headers = headers.insert(Header { key: k, value: v.as_deref() });
        }
        let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(&m.topic, m.id as usize).headers(headers);
        if let Some(k) = &m.key {
            record = record.key(k.as_slice());
        }
        if let Some(p) = &m.value {
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
                    queued.push(i);
                    full_since = None;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // The queue empties only as the broker acknowledges: waiting longer would
                    // hold the worker (and its shutdown) for as long as the broker is away.
                    if full_since.get_or_insert_with(Instant::now).elapsed() >= QUEUE_WAIT || shutdown_requested() {
                        full = true;
                        break 'messages;
                    }
                    record = r;
                    // Serves delivery reports (poll blocks for the whole timeout), making room.
                    producer.poll(Duration::from_millis(5));
                    pgrx::check_for_interrupts!();
                }
                Err((e, _)) if too_large(&e) => {
                    oversized.push((i, e.to_string()));
                    break;
                }
                Err((e, _)) => {
                    failed.insert(m.topic.clone(), super::delivery::failure_text(&e, &m.topic));
                    break;
                }
            }
        }
    }
    Sent { queued, refused: failed.into_iter().collect(), oversized, full }
}

/// In one transaction: delete delivered rows, move dead letters, record failures, clear recovered
/// topics.
fn record(delivered: &[i64], dead: &[(i64, String, &str)], failed: &[(String, String)], cleared: &[String]) {
    let r = in_transaction(|| {
        outbox::delete(delivered);
        outbox::dead_letter(dead);
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
