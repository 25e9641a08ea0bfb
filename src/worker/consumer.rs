//! The Kafka consumer worker: loads its consumer, checks its settings, connects to the brokers
//! and runs the source-independent pipeline (`super::pipeline`) with Kafka's source
//! (`sources::kafka::KafkaSource`) and catalog (`KafkaCatalog`: pipeline_kafka.consumers,
//! offsets and dead_letters).

use super::entry::ConsumerWorker;
use super::pipeline::{connect_with_retry, ConsumerCatalog, Target, TargetSettings, WorkerArgs};
use crate::catalog::{consumers, Features, RowSettings};
use crate::catalog::kafka::{self as cat, Consumer};
use crate::shmem::SourceKind;
use crate::sources::kafka::{client_config, KafkaSource};
use crate::xact::in_transaction;
use ingest_core::batch::{KafkaPos, Message};
use ingest_core::prepare::Rejected;
use pgrx::prelude::*;
use std::collections::BTreeMap;

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pipeline_kafka_worker_main(_arg: pg_sys::Datum) {
    super::entry::run::<KafkaWorker>();
}

/// What a Kafka consumer worker reads before it runs: its consumer, whether its owner is a
/// superuser, the broker entries and the stored offsets.
pub struct KafkaLoaded {
    consumer: Consumer,
    owner_is_superuser: bool,
    brokers: Vec<String>,
    broker_config: serde_json::Map<String, serde_json::Value>,
    stored: BTreeMap<i32, i64>,
    /// A spread consumer's place among the Citus nodes (consume_spread): (slot, slots).
    spread: Option<(i32, i32)>,
}

pub struct KafkaWorker;

impl ConsumerWorker for KafkaWorker {
    const NAME: &'static str = "pipeline_kafka consumer";
    type Loaded = KafkaLoaded;
    type Catalog = KafkaCatalog;
    type Source = KafkaSource;

    fn load(args: &WorkerArgs) -> Option<KafkaLoaded> {
        // brokers before consumers: the extension's tables are locked in the order they were
        // created, as DROP EXTENSION locks them (the other order deadlocked with it).
        let (brokers, broker_config) = cat::brokers();
        let consumer = cat::consumer(args.consumer)?;
        // SAFETY: syscache lookup of a role oid, inside a transaction.
        let owner_is_superuser = unsafe { pg_sys::superuser_arg(consumer.owner) };
        let stored = cat::stored_offsets(args.consumer);
        let spread = crate::citus::spread_of(crate::shmem::SourceKind::Kafka, args.consumer);
        Some(KafkaLoaded { consumer, owner_is_superuser, brokers, broker_config, stored, spread })
    }

    fn is_current(l: &KafkaLoaded, args: &WorkerArgs) -> bool {
        l.consumer.enabled && l.consumer.generation == args.generation
    }

    fn prepare<'a>(_args: &WorkerArgs, l: &'a KafkaLoaded) -> Option<(KafkaCatalog, TargetSettings<'a>)> {
        let consumer = &l.consumer;
        // consume_begin checked the settings already; checked again here in case the row was
        // written another way (e.g. by a release without the check): a consumer owned by a role
        // that is not a superuser, whose settings were not given by a superuser, gets no setting
        // that runs commands, loads code or reads files. It is stopped with the reason rather than
        // run with some of its settings left out.
        if let Err(e) = ingest_core::settings::check(&consumer.settings.config, l.owner_is_superuser || consumer.config_by_superuser) {
            let why = format!("refused its client settings: {}", e.with_hint());
            warning!("pipeline_kafka consumer {}: {why}", consumer.id);
            if let Err(err) = in_transaction(|| consumers::stop_with_error(SourceKind::Kafka, consumer.id, &why)) {
                warning!("pipeline_kafka consumer {}: could not record its error: {err}", consumer.id);
            }
            return None;
        }
        let catalog = KafkaCatalog { id: consumer.id, topic: consumer.topic.clone(), owner: consumer.owner, partitioned: consumer.partitioned };
        let settings = TargetSettings {
            maxbytes: consumer.maxbytes,
            partitioned: consumer.partitioned,
            ..target_settings(consumer.relid, consumer.owner, &consumer.settings, &consumer.topic, &consumer.features)
        };
        Some((catalog, settings))
    }

    fn connect(args: &WorkerArgs, l: &KafkaLoaded, catalog: &KafkaCatalog, target: &Target) -> Option<(KafkaSource, String)> {
        let max_bytes = target.limits_now().max_bytes;
        let source = connect(args, &l.consumer, catalog, &l.brokers, &l.broker_config, &l.stored, max_bytes, l.spread)?;
        let started = format!("topic \"{}\", partitions {:?}", l.consumer.topic, source.assigned());
        Some((source, started))
    }
}

/// What the pipeline needs of a stored consumer of either system (Kafka and Kinesis workers both
/// start from it): its relation and owner, and its row settings as stored.
pub fn target_settings<'a>(
    relid: pg_sys::Oid,
    owner: pg_sys::Oid,
    s: &'a RowSettings,
    source_name: &'a str,
    features: &'a Features,
) -> TargetSettings<'a> {
    TargetSettings {
        relid,
        owner,
        format: &s.format,
        delimiter: s.delimiter.clone(),
        quote: s.quote.clone(),
        escape: s.escape.clone(),
        columns: s.columns.clone(),
        on_error: &s.on_error,
        max_dead_letters: s.max_dead_letters,
        batchsize: s.batchsize,
        maxbytes: i32::MAX,
        timeout: s.timeout,
        source_name,
        features,
        partitioned: false,
    }
}

/// Connects to the brokers, retrying with backoff until it works or the worker is asked to stop.
fn connect(
    args: &WorkerArgs,
    consumer: &Consumer,
    catalog: &KafkaCatalog,
    brokers: &[String],
    broker_config: &serde_json::Map<String, serde_json::Value>,
    stored: &BTreeMap<i32, i64>,
    max_bytes: usize,
    spread: Option<(i32, i32)>,
) -> Option<KafkaSource> {
    let (parallelism, index) = crate::citus::spread_worker(consumer.parallelism, args.index, spread);
    connect_with_retry(catalog, || {
        let mut cfg = client_config(brokers, &[broker_config, &consumer.settings.config])?;
        if let Some(g) = &consumer.group_id {
            cfg.set("group.id", g);
        }
        let start_time_ms = consumer.start_time_us.map(crate::sources::kafka::time_ms_from_us);
        let headers = consumer.features.uses_headers();
        KafkaSource::new(&cfg, &consumer.topic, parallelism, index, stored, max_bytes, start_time_ms, headers)
    })
}

/// A Kafka consumer's rows: pipeline_kafka.consumers, offsets (the next offset to read per
/// partition) and dead_letters.
pub struct KafkaCatalog {
    id: i32,
    topic: String,
    /// The consumer's owner (its relation's owner when consume_begin ran).
    owner: pg_sys::Oid,
    /// Stream-partitioned: no relation of its own (sink::partitioned checks each message's).
    partitioned: bool,
}

impl ConsumerCatalog for KafkaCatalog {
    type Pos = KafkaPos;
    const SOURCE: crate::shmem::SourceKind = crate::shmem::SourceKind::Kafka;

    fn consumer_id(&self) -> i32 {
        self.id
    }

    fn owner(&self) -> pg_sys::Oid {
        self.owner
    }

    fn label(&self) -> String {
        format!("pipeline_kafka consumer {} ({})", self.id, self.topic)
    }

    fn lock_checkpoints(&self, partitions: &[i32]) -> BTreeMap<i32, i64> {
        cat::lock_offsets(self.id, partitions)
    }

    fn save_checkpoints(&self, next: &BTreeMap<i32, i64>) {
        cat::save_offsets(self.id, next)
    }

    fn insert_dead_letters(&self, letters: &[(&Message<KafkaPos>, &Rejected)]) {
        let rows: Vec<cat::DeadLetter> = letters
            .iter()
            .map(|(m, r)| cat::DeadLetter {
                partition: m.pos.partition,
                offset: m.pos.offset,
                key: m.key.as_deref(),
                value: m.payload.as_deref(),
                error: r.error.clone(),
                sqlstate: r.sqlstate.clone(),
            })
            .collect();
        cat::insert_dead_letters(self.id, &self.topic, &rows);
    }

    fn current_relation(&self, relid: pg_sys::Oid) -> Result<pg_sys::Oid, consumers::RelationProblem> {
        if self.partitioned {
            return Ok(relid);
        }
        consumers::current_relation(Self::SOURCE, self.id, relid, self.owner)
    }

    fn describe(pos: &KafkaPos) -> String {
        format!("partition {} offset {}", pos.partition, pos.offset)
    }
}
