//! The Kinesis consumer worker: loads its consumer and checkpoints, connects to the endpoint and
//! runs the source-independent pipeline (`super::pipeline`) with Kinesis's source
//! (`sources::kinesis::KinesisSource`) and catalog (`KinesisCatalog`: pipeline_kinesis.consumers,
//! seqnums and dead_letters).

use super::consumer::target_settings;
use super::entry::ConsumerWorker;
use super::pipeline::{connect_with_retry, ConsumerCatalog, Target, TargetSettings, WorkerArgs};
use crate::catalog::kinesis::{self as cat, Consumer};
use crate::catalog::seqnums;
use crate::shmem::SourceKind;
use crate::sources::error::SourceError;
use crate::sources::kinesis::{KinesisSource, ReadSettings};
use ingest_core::batch::{KinesisPos, Message};
use ingest_core::kinesis::read::{OutsideShard, ShardCheckpoint, StartAt};
use ingest_core::prepare::Rejected;
use pgrx::prelude::*;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Kinesis records have no size limit of their own besides the service's 1 MiB; a batch is cut by
/// count (batchsize) and by this many bytes.
const MAX_BATCH_BYTES: i32 = 32_000_000;

/// The cap of the exponential backoff on throttling and outages, unless config says otherwise.
const DEFAULT_RETRY_MAX_MS: i64 = 30_000;

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pipeline_kinesis_worker_main(_arg: pg_sys::Datum) {
    super::entry::run::<KinesisWorker>();
}

/// What a Kinesis consumer worker reads before it runs: its consumer (with its endpoint), the
/// stored checkpoints and the positions seek left.
pub struct KinesisLoaded {
    consumer: Consumer,
    stored: BTreeMap<String, ShardCheckpoint>,
    sought: BTreeMap<String, StartAt>,
    /// A spread consumer's place among the Citus nodes (consume_spread): (slot, slots).
    spread: Option<(i32, i32)>,
}

pub struct KinesisWorker;

impl ConsumerWorker for KinesisWorker {
    const NAME: &'static str = "pipeline_kinesis consumer";
    type Loaded = KinesisLoaded;
    type Catalog = KinesisCatalog;
    type Source = KinesisSource;

    fn load(args: &WorkerArgs) -> Option<KinesisLoaded> {
        let consumer = cat::consumer(args.consumer)?;
        let stored = seqnums::stored(args.consumer);
        let sought = crate::catalog::kinesis_seek::sought(args.consumer);
        let spread = crate::citus::spread_of(SourceKind::Kinesis, args.consumer);
        Some(KinesisLoaded { consumer, stored, sought, spread })
    }

    fn is_current(l: &KinesisLoaded, args: &WorkerArgs) -> bool {
        l.consumer.enabled && l.consumer.generation == args.generation
    }

    fn prepare<'a>(_args: &WorkerArgs, l: &'a KinesisLoaded) -> Option<(KinesisCatalog, TargetSettings<'a>)> {
        let consumer = &l.consumer;
        let catalog = KinesisCatalog { id: consumer.id, stream: consumer.stream.clone(), owner: consumer.owner };
        let settings = TargetSettings {
            maxbytes: MAX_BATCH_BYTES,
            ..target_settings(consumer.relid, consumer.owner, &consumer.settings, &consumer.stream, &consumer.features)
        };
        Some((catalog, settings))
    }

    fn connect(args: &WorkerArgs, l: &KinesisLoaded, catalog: &KinesisCatalog, _target: &Target) -> Option<(KinesisSource, String)> {
        // Spread: this node's worker i reads as worker slot + slots × i of slots × parallelism
        // (citus::spread_worker), so a shard is read on one node whatever the parallelism.
        let (parallelism, index) = crate::citus::spread_worker(l.consumer.parallelism, args.index, l.spread);
        let read = ReadSettings { sought: l.sought.clone(), parallelism, index, ..read_settings(&l.consumer, args.index) };
        let source = connect_with_retry(catalog, || connect(&l.consumer, &read, &l.stored, l.spread.is_some()))?;
        let started = format!("stream \"{}\", reading shards {:?}", l.consumer.stream, source.reading());
        Some((source, started))
    }
}

fn read_settings(c: &Consumer, index: i32) -> ReadSettings {
    let retry_max_ms = c.settings.config.get("retry_max_ms").and_then(serde_json::Value::as_i64).unwrap_or(DEFAULT_RETRY_MAX_MS);
    ReadSettings {
        stream: c.stream.clone(),
        parallelism: c.parallelism,
        index,
        // Kinesis stamps records in whole milliseconds: a record that arrived in the same
        // millisecond as start_time but after it carries a stamp before it. Rounded down, the
        // start takes that millisecond whole (it may take a record from just before start_time,
        // never skip one after it).
        start_time: c.start_time_us.map(|us| {
            let ms = us.div_euclid(1000);
            if ms >= 0 {
                SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64)
            } else {
                SystemTime::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
            }
        }),
        sought: BTreeMap::new(),
        batchsize: c.settings.batchsize,
        poll_interval: Duration::from_millis(c.poll_interval.max(1) as u64),
        retry_max: Duration::from_millis(retry_max_ms.clamp(1_000, 600_000) as u64),
        // (validated when stored: anything else than "keep" is the default, "skip")
        outside: c
            .settings
            .config
            .get(OutsideShard::SETTING)
            .and_then(serde_json::Value::as_str)
            .and_then(OutsideShard::parse)
            .unwrap_or_default(),
    }
}

fn connect(c: &Consumer, read: &ReadSettings, stored: &BTreeMap<String, ShardCheckpoint>, spread: bool) -> Result<KinesisSource, SourceError> {
    let endpoint = ingest_kinesis::Endpoint { region: c.region.clone(), url: c.url.clone(), credfile: c.credfile.clone() };
    let timeout = Duration::from_millis(crate::guc::BROKER_TIMEOUT_MS.get().max(100) as u64);
    let client = ingest_kinesis::Kinesis::connect(&endpoint, timeout)
        .map_err(|e| SourceError::from(e).context(format_args!("endpoint \"{}\"", c.endpoint)))?
        .interruptible(super::interrupt_pending);
    // A spread consumer's parents may be read on other nodes: their ends are asked of every node.
    let nodes = spread.then(|| super::kinesis_host::Nodes { endpoint: c.endpoint.clone(), stream: c.stream.clone(), relid: c.relid });
    let host = super::kinesis_host::Seqnums { consumer_id: c.id, nodes };
    KinesisSource::new(client, Box::new(host), c.id, read, stored.clone())
}

/// A Kinesis consumer's rows: pipeline_kinesis.consumers, seqnums and dead_letters.
pub struct KinesisCatalog {
    id: i32,
    stream: String,
    /// The consumer's owner (its relation's owner when consume_begin ran).
    owner: pg_sys::Oid,
}

impl ConsumerCatalog for KinesisCatalog {
    type Pos = KinesisPos;
    const SOURCE: SourceKind = SourceKind::Kinesis;

    fn consumer_id(&self) -> i32 {
        self.id
    }

    fn owner(&self) -> pg_sys::Oid {
        self.owner
    }

    fn label(&self) -> String {
        format!("pipeline_kinesis consumer {} ({})", self.id, self.stream)
    }

    fn lock_checkpoints(&self, shards: &[String]) -> BTreeMap<String, ShardCheckpoint> {
        seqnums::lock(self.id, shards)
    }

    fn save_checkpoints(&self, checkpoints: &BTreeMap<String, ShardCheckpoint>) {
        seqnums::save(self.id, checkpoints)
    }

    fn insert_dead_letters(&self, letters: &[(&Message<KinesisPos>, &Rejected)]) {
        let rows: Vec<seqnums::DeadLetter> = letters
            .iter()
            .map(|(m, r)| seqnums::DeadLetter {
                shard_id: &m.pos.shard,
                pos: &m.pos.at,
                partition_key: m.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()),
                data: m.payload.as_deref(),
                error: &r.error,
                sqlstate: &r.sqlstate,
            })
            .collect();
        seqnums::insert_dead_letters(self.id, &self.stream, &rows);
    }

    fn describe(pos: &KinesisPos) -> String {
        match pos.at.sub {
            None => format!("shard {} sequence number {}", pos.shard, pos.at.seq),
            Some(i) => format!("shard {} sequence number {} (user record {i} of the aggregate)", pos.shard, pos.at.seq),
        }
    }
}
