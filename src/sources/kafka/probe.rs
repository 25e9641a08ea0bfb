//! The SQL side's Kafka client (`Probe`): topic metadata, watermarks, offsets by time and a
//! preview fetch, each with a time limit, waiting in slices that honour query cancel and
//! statement_timeout. The metadata and offset-by-time queries are shared with the workers' source.

use super::copy::{blank_message, copy_message, KafkaMessage};
use super::settings::{create_consumer, explain, Client};
use crate::sources::error::SourceError;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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

/// What a broker request of a SQL function fails with; `api::raise_probe_error` words it for the
/// topic and request at hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The settings were refused by librdkafka.
    #[error("{0}")]
    Config(String),
    /// The brokers did not answer in time, or answered with an error.
    #[error("{0}")]
    Unreachable(String),
    /// The topic does not exist.
    #[error("the topic does not exist")]
    NoTopic,
}

impl ProbeError {
    /// The SQLSTATE this error is raised with (as `SourceError`'s of the same cause).
    pub fn sqlstate(&self) -> pgrx::PgSqlErrorCode {
        SourceError::from(self.clone()).sqlstate()
    }
}

impl From<ProbeError> for SourceError {
    fn from(e: ProbeError) -> SourceError {
        let text = e.to_string();
        match e {
            ProbeError::Config(_) => SourceError::Setting(text),
            ProbeError::Unreachable(_) => SourceError::Unreachable(text),
            ProbeError::NoTopic => SourceError::NotFound(text),
        }
    }
}

impl Probe {
    pub fn new(cfg: &ClientConfig, timeout: Duration) -> Result<Probe, ProbeError> {
        let mut cfg = cfg.clone();
        cfg.set("group.id", "pipeline_ingest_probe");
        // `fetch` stops when every partition is read to its end.
        cfg.set("enable.partition.eof", "true");
        let consumer = Arc::new(create_consumer(&cfg).map_err(|e| ProbeError::Config(e.to_string()))?);
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
    /// beginning (low watermark), n >= 0 offset n. One ListOffsets request (per partition
    /// leader) for all the partitions, not two per partition as fetching their watermarks.
    pub fn start_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        start_offset: i64,
    ) -> Result<BTreeMap<i32, i64>, ProbeError> {
        if !matches!(start_offset, -1 | -2) || partitions.is_empty() {
            return Ok(partitions.iter().map(|p| (*p, start_offset)).collect());
        }
        let (topic, partitions, timeout) = (topic.to_string(), partitions.to_vec(), self.timeout);
        interruptible(&self.consumer, move |c| logical_offsets(c, &topic, &partitions, start_offset, timeout))
    }

    /// The first offset of each partition whose message timestamp is at or after `time_ms`
    /// (milliseconds since the Unix epoch); the partition's end offset (high watermark) when no
    /// message is that recent. Two ListOffsets requests at most, whatever the partitions.
    pub fn offsets_for_time(
        &self,
        topic: &str,
        partitions: &[i32],
        time_ms: i64,
    ) -> Result<BTreeMap<i32, i64>, ProbeError> {
        let (topic, partitions, timeout) = (topic.to_string(), partitions.to_vec(), self.timeout);
        interruptible(&self.consumer, move |c| {
            let found = offsets_at_time(c, &topic, &partitions, time_ms, timeout)?;
            let missing: Vec<i32> = found.iter().filter(|(_, o)| o.is_none()).map(|(p, _)| *p).collect();
            let ends = if missing.is_empty() { BTreeMap::new() } else { logical_offsets(c, &topic, &missing, -1, timeout)? };
            Ok(found.into_iter().map(|(p, off)| (p, off.or_else(|| ends.get(&p).copied()).unwrap_or(0))).collect())
        })
    }

    /// Reads up to `limit` messages of `topic` from the given start of each partition (-2: its
    /// beginning, -1: its end, n >= 0: offset n) without committing anything anywhere. It stops at
    /// `limit`, when every partition is read to its end (unless `wait_for_new`: starting at the
    /// end means waiting for new messages), or when nothing arrived for the probe's time limit.
    /// Messages come in the order the client receives them (per partition in offset order); their
    /// headers only when `headers` (see `copy_message`). It also stops before the message that
    /// would bring the messages' bytes (key, value, headers) past `max_bytes` (the first one is
    /// taken whatever its size): the bool is true then.
    pub fn fetch(
        &self,
        topic: &str,
        starts: &BTreeMap<i32, i64>,
        limit: usize,
        max_bytes: usize,
        wait_for_new: bool,
        headers: bool,
    ) -> Result<(Vec<KafkaMessage>, bool), ProbeError> {
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
            let (mut bytes, mut capped) = (0usize, false);
            let mut at_end = std::collections::BTreeSet::new();
            let mut last = std::time::Instant::now();
            let result = loop {
                if capped || out.len() >= limit || (!wait_for_new && at_end.len() >= starts.len()) || last.elapsed() >= idle {
                    break Ok((out, capped));
                }
                match c.poll(INTERRUPT_CHECK) {
                    None => {}
                    Some(Ok(m)) => {
                        last = std::time::Instant::now();
                        at_end.remove(&m.partition());
                        let mut msg = blank_message();
                        // SAFETY: `m` is a live message without an error (errors come as Err).
                        unsafe { copy_message(&*m.ptr(), &mut msg, headers) };
                        // At most `max_bytes` of messages (the first one whatever its size).
                        if !out.is_empty() && bytes.saturating_add(msg.size()) > max_bytes {
                            capped = true;
                            continue;
                        }
                        bytes += msg.size();
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
pub fn offsets_at_time(
    consumer: &Client,
    topic: &str,
    partitions: &[i32],
    time_ms: i64,
    timeout: Duration,
) -> Result<BTreeMap<i32, Option<i64>>, ProbeError> {
    let mut tpl = TopicPartitionList::new();
    // ListOffsets' logical timestamps: -1 the end of a partition, -2 its beginning.
    let at = match time_ms {
        -1 => Offset::End,
        -2 => Offset::Beginning,
        t => Offset::Offset(t),
    };
    for p in partitions {
        tpl.add_partition_offset(topic, *p, at).map_err(|e| ProbeError::Unreachable(e.to_string()))?;
    }
    let found = consumer
        .offsets_for_times(tpl, timeout)
        .map_err(|e| ProbeError::Unreachable(explain(consumer, format!("could not look up offsets by time: {e}"))))?;
    let mut out = BTreeMap::new();
    for e in found.elements() {
        if let Err(err) = e.error() {
            return Err(ProbeError::Unreachable(format!("could not look up the offset by time of partition {}: {err}", e.partition())));
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

/// The end (`which` -1, the high watermark) or beginning (-2, the low watermark) of each
/// partition, in one ListOffsets request per leader (the logical timestamps -1 and -2 of
/// ListOffsets); a partition the answer leaves out is asked for its watermarks.
fn logical_offsets(consumer: &Client, topic: &str, partitions: &[i32], which: i64, timeout: Duration) -> Result<BTreeMap<i32, i64>, ProbeError> {
    // A broker that does not answer the logical timestamps: the watermarks, as before.
    let found = offsets_at_time(consumer, topic, partitions, which, timeout).unwrap_or_default();
    let mut out = BTreeMap::new();
    for p in partitions {
        let off = match found.get(p).copied().flatten() {
            Some(o) if o >= 0 => o,
            _ => {
                let (low, high) = consumer
                    .fetch_watermarks(topic, *p, timeout)
                    .map_err(|e| ProbeError::Unreachable(explain(consumer, e.to_string())))?;
                if which == -2 { low } else { high }
            }
        };
        out.insert(*p, off);
    }
    Ok(out)
}

/// The partition ids of a topic, sorted (blocking, up to `timeout`).
pub fn topic_partitions(consumer: &Client, topic: &str, timeout: Duration) -> Result<Vec<i32>, ProbeError> {
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
