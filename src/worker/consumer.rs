//! The Kafka consumer worker: loads its consumer, checks its settings, connects to the brokers
//! and runs the source-independent pipeline (`super::pipeline`) with Kafka's source
//! (`sources::kafka::KafkaSource`) and catalog (`KafkaCatalog`: pipeline_kafka.consumers,
//! offsets and dead_letters).

use super::pipeline::{connect_with_retry, target_of, ConsumerCatalog, Pipeline, TargetSettings, WorkerArgs};
use crate::catalog::{consumers, Features, RowSettings};
use crate::catalog::kafka::{self as cat, Consumer};
use crate::shmem::SourceKind;
use crate::sources::kafka::{client_config, KafkaSource};
use crate::xact::in_transaction;
use ingest_core::batch::{KafkaPos, Message};
use ingest_core::prepare::Rejected;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::collections::BTreeMap;

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pipeline_kafka_worker_main(_arg: pg_sys::Datum) {
    super::setup_signals();
    let args = WorkerArgs::parse(BackgroundWorker::get_extra()).expect("worker extra: dboid consumer index generation");
    // Connected as the bootstrap superuser for catalog access; rows are written as the owner.
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(args.dboid), None);

    let loaded = in_transaction(|| {
        if !crate::catalog::extension_exists() {
            return None;
        }
        // brokers before consumers: the extension's tables are locked in the order they were
        // created, as DROP EXTENSION locks them (the other order deadlocked with it).
        let (brokers, broker_config) = cat::brokers();
        let c = cat::consumer(args.consumer)?;
        // SAFETY: syscache lookup of a role oid, inside a transaction.
        let owner_is_superuser = unsafe { pg_sys::superuser_arg(c.owner) };
        let stored = cat::stored_offsets(args.consumer);
        Some((c, owner_is_superuser, brokers, broker_config, stored))
    });
    let (consumer, owner_is_superuser, brokers, broker_config, stored) = match loaded {
        Ok(Some(v)) => v,
        Ok(None) => return,
        Err(e) => {
            warning!("pipeline_kafka consumer {}: could not load its settings: {e}", args.consumer);
            return;
        }
    };
    if !consumer.enabled || consumer.generation != args.generation {
        return;
    }
    // consume_begin checked the settings already; checked again here in case the row was written
    // another way (e.g. by a release without the check): a consumer owned by a role that is not a
    // superuser, whose settings were not given by a superuser, gets no setting that runs commands,
    // loads code or reads files. It is stopped with the reason rather than run with some of its
    // settings left out.
    if let Err(e) = ingest_core::settings::check(&consumer.settings.config, owner_is_superuser || consumer.config_by_superuser) {
        let why = format!("refused its client settings: {}", e.with_hint());
        warning!("pipeline_kafka consumer {}: {why}", consumer.id);
        if let Err(err) = in_transaction(|| consumers::stop_with_error(SourceKind::Kafka, consumer.id, &why)) {
            warning!("pipeline_kafka consumer {}: could not record its error: {err}", consumer.id);
        }
        return;
    }
    let catalog = KafkaCatalog { id: consumer.id, topic: consumer.topic.clone(), owner: consumer.owner, partitioned: consumer.partitioned };
    let settings = TargetSettings {
        maxbytes: consumer.maxbytes,
        partitioned: consumer.partitioned,
        ..target_settings(consumer.relid, consumer.owner, &consumer.settings, &consumer.topic, &consumer.features)
    };
    let Some(target) = target_of(&catalog, &args, settings) else { return };
    let Some(source) = connect(&args, &consumer, &catalog, &brokers, &broker_config, &stored, target.limits_now().max_bytes) else {
        return;
    };
    log!(
        "pipeline_kafka consumer {} worker {} started: topic \"{}\", partitions {:?}",
        consumer.id,
        args.index,
        consumer.topic,
        source.assigned()
    );
    Pipeline::new(target, source, catalog).run();
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
) -> Option<KafkaSource> {
    connect_with_retry(catalog, || {
        let mut cfg = client_config(brokers, &[broker_config, &consumer.settings.config])?;
        if let Some(g) = &consumer.group_id {
            cfg.set("group.id", g);
        }
        let start_time_ms = consumer.start_time_us.map(crate::sources::kafka::time_ms_from_us);
        let headers = consumer.features.uses_headers();
        KafkaSource::new(&cfg, &consumer.topic, consumer.parallelism, args.index, stored, max_bytes, start_time_ms, headers)
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
