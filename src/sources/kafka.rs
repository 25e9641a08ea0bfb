//! Apache Kafka through librdkafka (the rdkafka crate, bundled library): client settings, topic
//! checks for SQL functions, and the consumer `Source` used by workers (manual partition
//! assignment from stored offsets, bounded prefetch; with a group_id, committed offsets are also
//! committed to the group coordinator for Kafka's lag tools).
//!
//! librdkafka runs its own threads; everything here is called from the worker's main thread
//! (the worker's reader thread, kafka_reader.rs, only polls the consumer queue) and never calls
//! back into PostgreSQL.

use super::kafka_reader::{blank_message, copy_message, Delivery};
use super::Source;
use ingest_core::batch::{partitions_for_worker, Batch, KafkaPos, Limits, Message as BatchMessage};
use ingest_core::settings::{is_secret, scrub};
use rdkafka::config::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use std::sync::{Arc, Mutex};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

/// A setting value from jsonb: strings as they are, numbers and booleans spelled out.
fn setting_value(v: &serde_json::Value) -> Result<String, String> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("setting values must be strings, numbers or booleans, not {other}")),
    }
}

/// Adds user settings (in order: later maps win), refusing the ones the extension manages under
/// any of their librdkafka names (or exactly-once would break). Who may give which setting is
/// checked before this, by `ingest_core::settings::check`.
fn apply_settings(cfg: &mut ClientConfig, extra: &[&serde_json::Map<String, serde_json::Value>]) -> Result<(), String> {
    for map in extra {
        for (k, v) in map.iter() {
            if ingest_core::settings::is_reserved(k) {
                return Err(ingest_core::settings::SettingError::Reserved(k.clone()).with_hint());
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
) -> Result<ClientConfig, String> {
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
) -> Result<ClientConfig, String> {
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

type Client = BaseConsumer<Context>;

/// Adds librdkafka's logged reason to an error. Log lines reach the context only while the client
/// is polled, so a client with nothing assigned (no message can be taken by mistake) is polled
/// briefly first.
fn explain(consumer: &Client, error: String) -> String {
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
fn create_consumer(cfg: &ClientConfig) -> Result<Client, String> {
    cfg.create_with_context(Context::default()).map_err(|e| config_error(&e, cfg))
}

/// A configuration error as text, secrets masked. The rdkafka crate's own message appends the
/// offending value whatever the key (a mistyped secret key would show its value), so only
/// librdkafka's description is used.
pub fn config_error(e: &rdkafka::error::KafkaError, cfg: &ClientConfig) -> String {
    let text = match e {
        rdkafka::error::KafkaError::ClientConfig(_, desc, _, _) => desc.clone(),
        other => other.to_string(),
    };
    scrub(&text, &secrets_in(cfg))
}

/// Checks every setting with librdkafka without creating a client (no threads, no network).
pub fn check_settings(cfg: &ClientConfig) -> Result<(), String> {
    cfg.create_native_config().map(|_| ()).map_err(|e| config_error(&e, cfg))
}

/// A short-lived client for SQL functions: metadata and watermarks with a time limit. Its waits
/// honour query cancel and statement_timeout (see `interruptible`).
pub struct Probe {
    consumer: Arc<Client>,
    timeout: Duration,
}

/// How often a SQL function waiting for a broker checks for interrupts.
const INTERRUPT_CHECK: Duration = Duration::from_millis(100);

/// Runs a blocking librdkafka request on a helper thread while this backend waits for its answer
/// in short slices, handling interrupts between them: librdkafka's blocking calls cannot be
/// interrupted, and a backend stuck in one ignores pg_cancel_backend and statement_timeout. When
/// the statement is cancelled, the helper finishes on its own (within the request's time limit)
/// and drops its reference to the client. The helper never calls into PostgreSQL.
fn interruptible<T: Send + 'static>(
    consumer: &Arc<Client>,
    request: impl FnOnce(&Client) -> Result<T, ProbeError> + Send + 'static,
) -> Result<T, ProbeError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let client = Arc::clone(consumer);
    std::thread::Builder::new()
        .name("pipeline_ingest probe".into())
        .spawn(move || {
            // The receiver is gone when the statement was cancelled: nobody wants the answer.
            let _ = tx.send(request(&client));
        })
        .map_err(|e| ProbeError::Unreachable(format!("could not start a thread for the broker request: {e}")))?;
    loop {
        match rx.recv_timeout(INTERRUPT_CHECK) {
            Ok(answer) => return answer,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                pgrx::check_for_interrupts!();
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(ProbeError::Unreachable("the broker request failed unexpectedly".into()))
            }
        }
    }
}

#[derive(Debug)]
pub enum ProbeError {
    /// The settings were refused by librdkafka.
    Config(String),
    /// The brokers did not answer in time, or answered with an error.
    Unreachable(String),
    /// The topic does not exist.
    NoTopic,
}

impl Probe {
    pub fn new(cfg: &ClientConfig, timeout: Duration) -> Result<Probe, ProbeError> {
        let mut cfg = cfg.clone();
        cfg.set("group.id", "pipeline_ingest_probe");
        // `fetch` stops when every partition is read to its end.
        cfg.set("enable.partition.eof", "true");
        let consumer = Arc::new(create_consumer(&cfg).map_err(ProbeError::Config)?);
        Ok(Probe { consumer, timeout })
    }

    /// The partition ids of a topic.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>, ProbeError> {
        let (topic, timeout) = (topic.to_string(), self.timeout);
        interruptible(&self.consumer, move |c| topic_partitions(c, &topic, timeout))
    }

    /// (low, high) watermarks of one partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), ProbeError> {
        let (topic, timeout) = (topic.to_string(), self.timeout);
        interruptible(&self.consumer, move |c| {
            c.fetch_watermarks(&topic, partition, timeout).map_err(|e| ProbeError::Unreachable(explain(c, e.to_string())))
        })
    }

    /// consume_begin's `start_offset` for each partition: -1 its end (high watermark), -2 its
    /// beginning (low watermark), n >= 0 offset n.
    pub fn start_offsets(&self, topic: &str, partitions: &[i32], start_offset: i64) -> Result<BTreeMap<i32, i64>, ProbeError> {
        let mut next = BTreeMap::new();
        for p in partitions {
            let off = match start_offset {
                -1 => self.watermarks(topic, *p)?.1,
                -2 => self.watermarks(topic, *p)?.0,
                n => n,
            };
            next.insert(*p, off);
        }
        Ok(next)
    }

    /// The first offset of each partition whose message timestamp is at or after `time_ms`
    /// (milliseconds since the Unix epoch); the partition's end offset (high watermark) when no
    /// message is that recent.
    pub fn offsets_for_time(&self, topic: &str, partitions: &[i32], time_ms: i64) -> Result<BTreeMap<i32, i64>, ProbeError> {
        let (topic, partitions, timeout) = (topic.to_string(), partitions.to_vec(), self.timeout);
        interruptible(&self.consumer, move |c| {
            let found = offsets_at_time(c, &topic, &partitions, time_ms, timeout).map_err(ProbeError::Unreachable)?;
            let mut out = BTreeMap::new();
            for (p, off) in found {
                let off = match off {
                    Some(o) => o,
                    None => c.fetch_watermarks(&topic, p, timeout).map_err(|e| ProbeError::Unreachable(explain(c, e.to_string())))?.1,
                };
                out.insert(p, off);
            }
            Ok(out)
        })
    }

    /// Reads up to `limit` messages of `topic` from the given start of each partition (-2: its
    /// beginning, -1: its end, n >= 0: offset n) without committing anything anywhere. It stops at
    /// `limit`, when every partition is read to its end (unless `wait_for_new`: starting at the
    /// end means waiting for new messages), or when nothing arrived for the probe's time limit.
    /// Messages come in the order the client receives them (per partition in offset order); their
    /// headers only when `headers` (see `copy_message`).
    pub fn fetch(
        &self,
        topic: &str,
        starts: &BTreeMap<i32, i64>,
        limit: usize,
        wait_for_new: bool,
        headers: bool,
    ) -> Result<Vec<BatchMessage<KafkaPos>>, ProbeError> {
        let (topic, starts, idle) = (topic.to_string(), starts.clone(), self.timeout);
        interruptible(&self.consumer, move |c| {
            let mut tpl = TopicPartitionList::new();
            for (p, s) in &starts {
                let off = match *s {
                    -2 => Offset::Beginning,
                    -1 => Offset::End,
                    n => Offset::Offset(n),
                };
                tpl.add_partition_offset(&topic, *p, off).map_err(|e| ProbeError::Unreachable(e.to_string()))?;
            }
            c.assign(&tpl).map_err(|e| ProbeError::Unreachable(format!("could not assign partitions: {e}")))?;
            let mut out = Vec::new();
            let mut at_end = std::collections::BTreeSet::new();
            let mut last = std::time::Instant::now();
            let result = loop {
                if out.len() >= limit || (!wait_for_new && at_end.len() >= starts.len()) || last.elapsed() >= idle {
                    break Ok(out);
                }
                match c.poll(INTERRUPT_CHECK) {
                    None => {}
                    Some(Ok(m)) => {
                        last = std::time::Instant::now();
                        at_end.remove(&m.partition());
                        let mut msg = blank_message();
                        // SAFETY: `m` is a live message without an error (errors come as Err).
                        unsafe { copy_message(&*m.ptr(), &mut msg, headers) };
                        out.push(msg);
                    }
                    Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                        at_end.insert(p);
                    }
                    Some(Err(e)) => break Err(ProbeError::Unreachable(c.context().explain(e.to_string()))),
                }
            };
            // The client is the probe's own; unassigning stops its prefetching.
            let _ = c.unassign();
            result
        })
    }
}

/// A start time in microseconds since the Unix epoch as Kafka's milliseconds, rounded up: a
/// message stamped 10 ms is before a start time of 10.5 ms. Times before 1970 become 0: Kafka
/// reads the negative timestamps -1 and -2 as "latest" and "earliest".
pub fn time_ms_from_us(us: i64) -> i64 {
    (us.div_euclid(1000) + i64::from(us.rem_euclid(1000) != 0)).max(0)
}

/// For each partition, the first offset whose message timestamp is at or after `time_ms`, or
/// None when no message is that recent (blocking, up to `timeout`).
fn offsets_at_time(
    consumer: &Client,
    topic: &str,
    partitions: &[i32],
    time_ms: i64,
    timeout: Duration,
) -> Result<BTreeMap<i32, Option<i64>>, String> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Offset(time_ms)).map_err(|e| e.to_string())?;
    }
    let found = consumer
        .offsets_for_times(tpl, timeout)
        .map_err(|e| explain(consumer, format!("could not look up offsets by time: {e}")))?;
    let mut out = BTreeMap::new();
    for e in found.elements() {
        if let Err(err) = e.error() {
            return Err(format!("could not look up the offset by time of partition {}: {err}", e.partition()));
        }
        let off = match e.offset() {
            Offset::Offset(o) => Some(o),
            // -1: no message at or after that time
            _ => None,
        };
        out.insert(e.partition(), off);
    }
    Ok(out)
}

fn topic_partitions(consumer: &Client, topic: &str, timeout: Duration) -> Result<Vec<i32>, ProbeError> {
    let md = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| ProbeError::Unreachable(explain(consumer, e.to_string())))?;
    let t = md.topics().iter().find(|t| t.name() == topic).ok_or(ProbeError::NoTopic)?;
    if let Some(err) = t.error() {
        let code = rdkafka::types::RDKafkaErrorCode::from(err);
        return match code {
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition | rdkafka::types::RDKafkaErrorCode::UnknownTopic => {
                Err(ProbeError::NoTopic)
            }
            other => Err(ProbeError::Unreachable(other.to_string())),
        };
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    if ids.is_empty() {
        return Err(ProbeError::NoTopic);
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The consumer side of a worker: owns partitions p with p mod parallelism == index.
pub struct KafkaSource {
    consumer: Client,
    topic: String,
    parallelism: i32,
    index: i32,
    /// Next offset to read per owned partition; None = no stored offset (read from the start).
    positions: BTreeMap<i32, Option<i64>>,
    /// The reader thread wakes the main thread through this pipe.
    wake_fds: [i32; 2],
    /// Our reference to the consumer queue (the reader thread polls it).
    queue: *mut rdkafka_sys::rd_kafka_queue_t,
    /// Takes messages off the queue in a thread of its own (None only while starting).
    reader: Option<super::kafka_reader::Reader>,
    /// Messages the reader handed over (in the current epoch) that did not fit in the last batch.
    pending: std::collections::VecDeque<BatchMessage<KafkaPos>>,
    error: Option<String>,
    /// The last `fill` took everything the reader had: nothing more is available right now.
    drained: bool,
    metadata_timeout: Duration,
    /// Every partition of the topic, as last seen (for the supervisor, see `Source::all_streams`).
    all: Vec<i32>,
    /// consume_begin's start_time (ms since the Unix epoch): where partitions without a stored
    /// offset start (None: at their beginning).
    start_time_ms: Option<i64>,
    /// A group.id was given (consume_begin's group_id): offsets committed to PostgreSQL are also
    /// committed to the group coordinator.
    group_commits: bool,
    /// Re-adds the bootstrap servers when librdkafka has dropped every broker (kafka_brokers.rs).
    rescue: super::kafka_brokers::BrokerRescue,
}

impl KafkaSource {
    /// A worker's client: its partitions at their `stored` offsets; partitions without one start
    /// at the first message stamped at or after `start_time_ms` (None: at their beginning).
    /// Messages keep their headers only when `headers` (the consumer uses them).
    pub fn new(
        cfg: &ClientConfig,
        topic: &str,
        parallelism: i32,
        index: i32,
        stored: &BTreeMap<i32, i64>,
        max_bytes: usize,
        start_time_ms: Option<i64>,
        headers: bool,
    ) -> Result<KafkaSource, String> {
        let mut cfg = cfg.clone();
        // Prefetch bounded by the batch size in bytes (librdkafka's default is 64 MB per partition).
        let kbytes = (max_bytes / 1024).clamp(1024, 2_097_151);
        cfg.set("queued.max.messages.kbytes", kbytes.to_string());
        // librdkafka prefetches up to 100,000 messages per partition by default, each with a few
        // hundred bytes of bookkeeping: for small messages that, not maxbytes, bounds the worker's
        // memory. The reader thread keeps the queue drained, so a smaller prefetch costs nothing.
        if cfg.get("queued.min.messages").is_none() {
            cfg.set("queued.min.messages", "20000");
        }
        let group_commits = cfg.get("group.id").is_some();
        if !group_commits {
            cfg.set("group.id", "pipeline_ingest");
        }
        let consumer = create_consumer(&cfg).map_err(|e| format!("could not create Kafka consumer: {e}"))?;
        let mut fds = [-1i32; 2];
        // SAFETY: pipe2 fills the two-element array on success.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(format!("could not create a wakeup pipe: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: the client pointer is valid while `consumer` lives; the queue reference is kept in
        // the struct and released in Drop (before the consumer).
        let queue = unsafe {
            let rk = consumer.client().native_ptr();
            let q = rdkafka_sys::rd_kafka_queue_get_consumer(rk);
            if q.is_null() {
                return Err("librdkafka has no consumer queue".to_string());
            }
            q
        };
        let mut src = KafkaSource {
            consumer,
            topic: topic.to_string(),
            parallelism,
            index,
            positions: BTreeMap::new(),
            wake_fds: fds,
            queue,
            reader: None,
            pending: std::collections::VecDeque::new(),
            error: None,
            drained: false,
            metadata_timeout: Duration::from_secs(5),
            all: Vec::new(),
            start_time_ms,
            group_commits,
            rescue: super::kafka_brokers::BrokerRescue::new(cfg.get("bootstrap.servers")),
        };
        src.positions = stored.iter().map(|(p, o)| (*p, Some(*o))).collect();
        src.positions.retain(|p, _| p.rem_euclid(parallelism.max(1)) == index);
        src.reassign(None)?;
        let reader = super::kafka_reader::Reader::start(queue, src.consumer.client().native_ptr(), fds[1], headers)
            .map_err(|e| format!("could not start the Kafka reader thread: {e}"))?;
        src.reader = Some(reader);
        Ok(src)
    }

    /// Assigns the owned partitions at their positions. With `known`, the partition list is taken
    /// from there instead of asking the broker.
    fn reassign(&mut self, known: Option<Vec<i32>>) -> Result<(), String> {
        let all = match known {
            Some(k) => k,
            None => match topic_partitions(&self.consumer, &self.topic, self.metadata_timeout) {
                Ok(p) => p,
                Err(ProbeError::NoTopic) => return Err(format!("topic \"{}\" does not exist", self.topic)),
                Err(ProbeError::Unreachable(e)) | Err(ProbeError::Config(e)) => {
                    return Err(format!("could not get metadata of topic \"{}\": {e}", self.topic))
                }
            },
        };
        let mine = partitions_for_worker(&all, self.parallelism, self.index);
        self.all = all;
        for p in &mine {
            self.positions.entry(*p).or_insert(None);
        }
        // Partitions without a stored offset start at start_time when there is one, looked up
        // again at every assignment until a batch stores their offset (a message written since
        // with a timestamp >= start_time is then still read).
        let unstored: Vec<i32> = mine.iter().copied().filter(|p| self.positions[p].is_none()).collect();
        let by_time = match self.start_time_ms {
            Some(t) if !unstored.is_empty() => offsets_at_time(&self.consumer, &self.topic, &unstored, t, self.metadata_timeout)?,
            _ => BTreeMap::new(),
        };
        let mut tpl = TopicPartitionList::new();
        for p in &mine {
            let off = match (self.positions[p], self.start_time_ms) {
                (Some(o), _) => Offset::Offset(o),
                (None, None) => Offset::Beginning,
                (None, Some(_)) => match by_time.get(p) {
                    Some(Some(o)) => Offset::Offset(*o),
                    // No message that recent yet: from the end as it is now (every message from
                    // there on is newer); a concrete offset, so none written meanwhile is missed.
                    _ => match self.consumer.fetch_watermarks(&self.topic, *p, self.metadata_timeout) {
                        Ok((_, high)) => Offset::Offset(high),
                        Err(e) => return Err(format!("could not get the end offset of partition {p}: {e}")),
                    },
                },
            };
            tpl.add_partition_offset(&self.topic, *p, off).map_err(|e| e.to_string())?;
        }
        // Whatever the reader took before this assignment is read again from the assigned offsets
        // (the batch is empty when partitions are reassigned): its epoch ends here.
        let _paused = self.reader.as_ref().map(|r| r.pause());
        if let Some(r) = &self.reader {
            r.recycle(self.pending.drain(..).collect());
        }
        self.consumer.assign(&tpl).map_err(|e| format!("could not assign partitions: {e}"))?;
        Ok(())
    }

    /// The high watermark librdkafka last saw for a partition (from fetch responses: no request).
    pub fn cached_high_watermark(&self, partition: i32) -> Option<i64> {
        let topic = std::ffi::CString::new(self.topic.as_str()).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: valid client pointer and C string; librdkafka writes the two integers.
        let err = unsafe {
            rdkafka_sys::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (err == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
    }

    pub fn assigned(&self) -> Vec<i32> {
        self.positions.keys().copied().collect()
    }

    /// Commits offsets PostgreSQL has committed (the next offset to read, as Kafka's committed
    /// offsets mean too) to the consumer group's coordinator, so that kafka-consumer-groups or
    /// Burrow show the lag. Asynchronous: the batch never waits for it, and the result is only for
    /// those tools. The offsets in PostgreSQL stay the truth: a worker starts from them, never from
    /// the group's.
    fn commit_to_group(&self, saved: &BTreeMap<i32, i64>) {
        let mut tpl = TopicPartitionList::new();
        for (p, next) in saved {
            if tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*next)).is_err() {
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            // A lost group commit only makes external lag tools lag; the next batch commits again.
            pgrx::debug1!("pipeline_kafka: could not commit offsets of \"{}\" to its consumer group: {e}", self.topic);
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // The reader thread polls the queue: it ends (joined) first.
        self.reader = None;
        // SAFETY: the reference taken in `new`, released once, no longer used by any thread.
        unsafe { rdkafka_sys::rd_kafka_queue_destroy(self.queue) };
        for fd in self.wake_fds {
            if fd >= 0 {
                // SAFETY: closing descriptors this struct created and owns.
                unsafe { libc::close(fd) };
            }
        }
    }
}

impl Source for KafkaSource {
    type Pos = KafkaPos;

    fn fill(&mut self, batch: &mut Batch<KafkaPos>, limits: &Limits) -> usize {
        let Some(reader) = &self.reader else { return 0 };
        reader.recycle(batch.take_spare());
        let epoch = reader.epoch();
        let mut added = 0;
        self.drained = false;
        while !batch.is_full(limits) {
            if let Some(m) = self.pending.pop_front() {
                batch.push(m);
                added += 1;
                continue;
            }
            match reader.try_next() {
                Ok(Some(Delivery::Messages(e, messages))) if e == epoch => self.pending = messages.into(),
                // Read before the last reassignment: librdkafka delivers these again.
                Ok(Some(Delivery::Messages(_, messages))) => reader.recycle(messages),
                Ok(Some(Delivery::Error(e, text))) => {
                    if e == epoch {
                        self.error = Some(self.consumer.context().explain(text));
                    }
                }
                Ok(None) => {
                    self.drained = true;
                    break;
                }
                // Only a bug ends the reader early: exit, and the supervisor starts a new worker.
                Err(e) => pgrx::error!("pipeline_kafka: {e}"),
            }
        }
        added
    }

    fn drained(&self) -> bool {
        self.drained
    }

    fn wait_fd(&self) -> Option<i32> {
        Some(self.wake_fds[0])
    }

    fn drain_wakeups(&mut self) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a local buffer from the non-blocking pipe this struct owns.
        while unsafe { libc::read(self.wake_fds[0], buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }

    fn take_error(&mut self) -> Option<String> {
        self.rescue.look(self.consumer.client().native_ptr());
        self.error.take()
    }

    fn maintain(&mut self) -> Result<(), String> {
        let all = match topic_partitions(&self.consumer, &self.topic, self.metadata_timeout) {
            Ok(p) => p,
            Err(ProbeError::NoTopic) => return Err(format!("topic \"{}\" does not exist", self.topic)),
            Err(ProbeError::Unreachable(e)) | Err(ProbeError::Config(e)) => {
                return Err(format!("could not get metadata of topic \"{}\": {e}", self.topic))
            }
        };
        let mine = partitions_for_worker(&all, self.parallelism, self.index);
        self.all.clone_from(&all);
        if mine.iter().any(|p| !self.positions.contains_key(p)) {
            pgrx::log!("pipeline_kafka: topic \"{}\" has new partitions, now reading {:?}", self.topic, mine);
            self.reassign(Some(all))?;
        }
        Ok(())
    }

    fn checkpoints(&self) -> BTreeMap<i32, Option<i64>> {
        self.positions.clone()
    }

    fn owned(&self) -> Vec<(i32, Option<i64>)> {
        self.positions.keys().map(|p| (*p, self.cached_high_watermark(*p))).collect()
    }

    fn all_streams(&self) -> Vec<i32> {
        self.all.clone()
    }

    fn committed(&mut self, saved: &BTreeMap<i32, i64>) {
        for (p, next) in saved {
            self.positions.insert(*p, Some(*next));
        }
        if self.group_commits && !saved.is_empty() {
            self.commit_to_group(saved);
        }
    }
}
