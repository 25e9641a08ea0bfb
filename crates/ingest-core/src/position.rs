//! Where a message is in its source, and the one notion of "which system" it came from.
//!
//! A `System` knows what differs between Kafka and Kinesis on the SQL side: the composite type a
//! transform gets an array of (`pipeline_kafka.message`, `pipeline_kinesis.record`) and which of
//! its columns can be metadata columns. A `Position` (a Kafka partition and offset, a Kinesis shard
//! and sequence number) names its system and gives the values of its own columns of that
//! composite, so code that writes messages (the sink) never asks which system it has.
//!
//! The positions live here, below the batch and the Kinesis reader, which both use them.

use crate::kinesis::seqnum::ShardPos;
use std::borrow::Cow;
use std::fmt::Debug;

/// Which system a consumer reads. Consumer ids are unique within a system, so Kafka consumer 1 and
/// Kinesis consumer 1 are told apart by this (the discriminant is what shared memory stores).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum System {
    Kafka = 1,
    Kinesis = 2,
}

/// What a column of a system's message composite holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The topic or stream.
    Source,
    /// The `i`-th value of the message's position (`PosValues::value`).
    Pos(usize),
    /// Kafka: the key; Kinesis: the partition key.
    Key,
    /// The message's bytes.
    Value,
    /// Kafka: the message timestamp; Kinesis: the approximate arrival time.
    Timestamp,
    /// Kafka headers (as jsonb).
    Headers,
}

/// A column of a system's message composite.
#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    pub part: Part,
    /// Its type as the composite declares it (pg_catalog type names).
    pub sql_type: &'static str,
    /// The column types a metadata column filled with it may have (empty: not a metadata field).
    pub metadata_types: &'static [&'static str],
}

/// A system's message composite: what a transform function gets an array of.
#[derive(Debug)]
pub struct Composite {
    /// Schema-qualified.
    pub type_name: &'static str,
    pub columns: &'static [Column],
}

const TEXT: &[&str] = &["text", "varchar", "bpchar"];
const KEY: &[&str] = &["text", "varchar", "bpchar", "bytea"];
const TIME: &[&str] = &["timestamptz"];

const fn col(name: &'static str, part: Part, sql_type: &'static str, metadata_types: &'static [&'static str]) -> Column {
    Column { name, part, sql_type, metadata_types }
}

static KAFKA_MESSAGE: Composite = Composite {
    type_name: "pipeline_kafka.message",
    columns: &[
        col("topic", Part::Source, "text", TEXT),
        // Kafka partitions are int32; offsets int64.
        col("partition", Part::Pos(0), "int4", &["int4", "int8", "numeric"]),
        col("offset", Part::Pos(1), "int8", &["int8", "numeric"]),
        col("key", Part::Key, "bytea", KEY),
        col("value", Part::Value, "bytea", &[]),
        col("timestamp", Part::Timestamp, "timestamptz", TIME),
        col("headers", Part::Headers, "jsonb", &["jsonb", "json"]),
    ],
};

static KINESIS_RECORD: Composite = Composite {
    type_name: "pipeline_kinesis.record",
    columns: &[
        col("stream", Part::Source, "text", TEXT),
        col("shard_id", Part::Pos(0), "text", TEXT),
        // Kinesis sequence numbers have up to 128 digits: no integer type holds them.
        col("sequence_number", Part::Pos(1), "text", &["text", "varchar", "bpchar", "numeric"]),
        col("sub_sequence", Part::Pos(2), "int8", &[]),
        col("partition_key", Part::Key, "text", KEY),
        col("data", Part::Value, "bytea", &[]),
        col("arrival_time", Part::Timestamp, "timestamptz", TIME),
    ],
};

impl Composite {
    /// The columns passed as array parameters ($2, $3, ... in this order), each with the element
    /// type of its array: every column but the topic or stream ($1, one value for all).
    /// Timestamps go as milliseconds since the Unix epoch, headers as json text.
    pub fn array_parameters(&self) -> impl Iterator<Item = (&'static Column, &'static str)> {
        self.columns.iter().filter(|c| c.part != Part::Source).map(|c| {
            let element = match c.part {
                Part::Timestamp => "int8",
                Part::Headers => "text",
                _ => c.sql_type,
            };
            (c, element)
        })
    }

    /// SQL for an array of this composite built from parallel arrays of its columns' values
    /// (`array_parameters`; $1 the topic or stream), in the order of the arrays.
    pub fn array_sql(&self) -> String {
        let (mut fields, mut arrays, mut names) = (Vec::new(), Vec::new(), Vec::new());
        let mut params = self.array_parameters();
        for (j, c) in self.columns.iter().enumerate() {
            if c.part == Part::Source {
                fields.push("$1".to_string());
                continue;
            }
            let Some((_, element)) = params.next() else { break };
            fields.push(match c.part {
                Part::Timestamp => format!("'epoch'::pg_catalog.timestamptz + m.c{j} * interval '1 millisecond'"),
                Part::Headers => format!("m.c{j}::pg_catalog.jsonb"),
                _ => format!("m.c{j}"),
            });
            arrays.push(format!("pg_catalog.unnest(${}::{element}[])", arrays.len() + 2));
            names.push(format!("c{j}"));
        }
        format!(
            "(SELECT pg_catalog.array_agg(ROW({})::{} ORDER BY m.n) FROM ROWS FROM ({}) WITH ORDINALITY AS m({}, n))",
            fields.join(", "),
            self.type_name,
            arrays.join(", "),
            names.join(", ")
        )
    }
}

impl System {
    pub const ALL: [System; 2] = [System::Kafka, System::Kinesis];

    /// The composite a transform function gets an array of.
    pub fn composite(self) -> &'static Composite {
        match self {
            System::Kafka => &KAFKA_MESSAGE,
            System::Kinesis => &KINESIS_RECORD,
        }
    }

    /// The system's consumers table (a constant, never user input, in SQL text).
    pub fn consumers(self) -> &'static str {
        match self {
            System::Kafka => "pipeline_kafka.consumers",
            System::Kinesis => "pipeline_kinesis.consumers",
        }
    }

    /// The system's dead-letters table (a constant, never user input, in SQL text).
    pub fn dead_letters(self) -> &'static str {
        match self {
            System::Kafka => "pipeline_kafka.dead_letters",
            System::Kinesis => "pipeline_kinesis.dead_letters",
        }
    }

    /// The columns of the composite a metadata column may name, in the composite's order.
    pub fn metadata_fields(self) -> impl Iterator<Item = &'static Column> {
        self.composite().columns.iter().filter(|c| !c.metadata_types.is_empty())
    }
}

/// A value of a position's own column of the composite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue<'a> {
    Null,
    Int4(i32),
    Int8(i64),
    Text(Cow<'a, str>),
}

/// The values of a position's own columns (`Part::Pos(i)` of its system's composite).
pub trait PosValues {
    fn value(&self, i: usize) -> SqlValue<'_>;
}

/// The longest stream name a status slot holds: Kinesis shard ids have at most 128 characters
/// (Kafka partitions are numbers).
pub const STREAM_KEY_MAX: usize = 128;

/// A stream's name (a Kafka partition number as text, a Kinesis shard id) in a fixed-size value
/// that shared memory can hold: the key of a stream's status slot. No two streams of a consumer
/// share one.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamKey {
    len: u8,
    bytes: [u8; STREAM_KEY_MAX],
}

impl StreamKey {
    /// A name longer than `STREAM_KEY_MAX` bytes is cut at a character boundary (no system makes
    /// such names).
    pub fn new(name: &str) -> StreamKey {
        let mut end = name.len().min(STREAM_KEY_MAX);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; STREAM_KEY_MAX];
        bytes[..end].copy_from_slice(&name.as_bytes()[..end]);
        StreamKey { len: end as u8, bytes }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

impl Default for StreamKey {
    fn default() -> Self {
        StreamKey { len: 0, bytes: [0; STREAM_KEY_MAX] }
    }
}

impl Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Where a message is in its source: a stream (partition, shard) and a place in it. A source
/// delivers each stream's messages in order.
pub trait Position: PosValues + Clone + Debug {
    /// The system whose messages have this position.
    const SYSTEM: System;
    type Stream: Ord + Clone + Debug;
    /// What a checkpoint stores for a stream once this message is consumed (Kafka: the next
    /// offset to read; Kinesis: this record's sequence and sub-sequence numbers).
    type Checkpoint: Clone + PartialEq + Debug;
    fn stream(&self) -> Self::Stream;
    fn checkpoint(&self) -> Self::Checkpoint;
    /// The key of a stream's status slot in shared memory.
    fn stream_key(stream: &Self::Stream) -> StreamKey;
    /// The number a stream is shown under in the status views (Kafka: the partition; Kinesis: the
    /// number at the end of the shard id, -1 when there is none or it does not fit an int, as the
    /// status view computes in SQL). Not a key: two shards may show the same number.
    fn stream_number(stream: &Self::Stream) -> i32;
}

/// A Kafka message's position: its partition and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KafkaPos {
    pub partition: i32,
    pub offset: i64,
}

impl PosValues for KafkaPos {
    fn value(&self, i: usize) -> SqlValue<'_> {
        match i {
            0 => SqlValue::Int4(self.partition),
            1 => SqlValue::Int8(self.offset),
            _ => SqlValue::Null,
        }
    }
}

impl Position for KafkaPos {
    const SYSTEM: System = System::Kafka;
    type Stream = i32;
    type Checkpoint = i64;
    fn stream(&self) -> i32 {
        self.partition
    }
    fn checkpoint(&self) -> i64 {
        self.offset + 1
    }
    fn stream_key(stream: &i32) -> StreamKey {
        StreamKey::new(&stream.to_string())
    }
    fn stream_number(stream: &i32) -> i32 {
        *stream
    }
}

/// What a shard's checkpoint holds: the last user record consumed (None: nothing yet) and whether
/// the shard was read to SHARD_END (committed with its last rows: its children may be read).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardCheckpoint {
    pub last: Option<ShardPos>,
    pub finished: bool,
}

/// A Kinesis user record's position: its shard, the record's sequence number and, for a record of
/// a KPL aggregate, its index in the aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisPos {
    pub shard: String,
    pub at: ShardPos,
}

impl PosValues for KinesisPos {
    fn value(&self, i: usize) -> SqlValue<'_> {
        match (i, self.at.sub) {
            (0, _) => SqlValue::Text(Cow::Borrowed(&self.shard)),
            (1, _) => SqlValue::Text(Cow::Borrowed(self.at.seq.as_str())),
            (2, Some(sub)) => SqlValue::Int8(sub as i64),
            _ => SqlValue::Null,
        }
    }
}

impl Position for KinesisPos {
    const SYSTEM: System = System::Kinesis;
    type Stream = String;
    type Checkpoint = ShardCheckpoint;
    fn stream(&self) -> String {
        self.shard.clone()
    }
    fn checkpoint(&self) -> ShardCheckpoint {
        ShardCheckpoint { last: Some(self.at.clone()), finished: false }
    }
    fn stream_key(stream: &String) -> StreamKey {
        StreamKey::new(stream)
    }
    fn stream_number(stream: &String) -> i32 {
        let digits: String = stream.chars().rev().take_while(char::is_ascii_digit).collect();
        let digits: String = digits.chars().rev().collect();
        digits.parse::<u64>().ok().and_then(|n| i32::try_from(n).ok()).unwrap_or(-1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinesis::seqnum::SeqNum;

    #[test]
    fn positions_fill_their_own_columns_of_their_composite() {
        let k = KafkaPos { partition: 3, offset: 42 };
        let pos_columns = |s: System| s.composite().columns.iter().filter(|c| matches!(c.part, Part::Pos(_))).count();
        assert_eq!(pos_columns(System::Kafka), 2);
        assert_eq!((k.value(0), k.value(1), k.value(2)), (SqlValue::Int4(3), SqlValue::Int8(42), SqlValue::Null));
        let at = |sub| ShardPos { seq: SeqNum::parse("0049").unwrap(), sub };
        let r = KinesisPos { shard: "shardId-000000000001".into(), at: at(Some(7)) };
        assert_eq!(pos_columns(System::Kinesis), 3);
        assert_eq!(r.value(0), SqlValue::Text("shardId-000000000001".into()));
        assert_eq!(r.value(1), SqlValue::Text("49".into()));
        assert_eq!(r.value(2), SqlValue::Int8(7));
        assert_eq!(KinesisPos { at: at(None), ..r }.value(2), SqlValue::Null);
        assert_eq!((KafkaPos::SYSTEM, KinesisPos::SYSTEM), (System::Kafka, System::Kinesis));
    }

    #[test]
    fn a_composite_array_is_built_from_one_array_per_column() {
        assert_eq!(
            System::Kafka.composite().array_sql(),
            "(SELECT pg_catalog.array_agg(ROW($1, m.c1, m.c2, m.c3, m.c4, \
             'epoch'::pg_catalog.timestamptz + m.c5 * interval '1 millisecond', m.c6::pg_catalog.jsonb)::pipeline_kafka.message \
             ORDER BY m.n) FROM ROWS FROM (pg_catalog.unnest($2::int4[]), pg_catalog.unnest($3::int8[]), \
             pg_catalog.unnest($4::bytea[]), pg_catalog.unnest($5::bytea[]), pg_catalog.unnest($6::int8[]), \
             pg_catalog.unnest($7::text[])) WITH ORDINALITY AS m(c1, c2, c3, c4, c5, c6, n))"
        );
        let kinesis: Vec<(&str, &str)> = System::Kinesis.composite().array_parameters().map(|(c, t)| (c.name, t)).collect();
        assert_eq!(
            kinesis,
            [("shard_id", "text"), ("sequence_number", "text"), ("sub_sequence", "int8"), ("partition_key", "text"), ("data", "bytea"), ("arrival_time", "int8")]
        );
        assert!(System::Kinesis.composite().array_sql().contains("m.c6 * interval '1 millisecond')::pipeline_kinesis.record ORDER BY m.n"));
    }

    #[test]
    fn metadata_fields_are_the_composites_columns_but_the_value() {
        let names = |s: System| s.metadata_fields().map(|c| c.name).collect::<Vec<_>>().join(", ");
        assert_eq!(names(System::Kafka), "topic, partition, offset, key, timestamp, headers");
        assert_eq!(names(System::Kinesis), "stream, shard_id, sequence_number, partition_key, arrival_time");
    }

    #[test]
    fn streams_are_keyed_by_their_whole_name_and_shown_by_their_number() {
        assert_eq!(KinesisPos::stream_number(&"shardId-000000000012".to_string()), 12);
        assert_eq!(KinesisPos::stream_number(&"shardId-999999999999".to_string()), -1);
        assert_eq!(KinesisPos::stream_number(&"custom".to_string()), -1);
        // two shards without a number (or with the same one) have their own keys
        let key = |s: &str| KinesisPos::stream_key(&s.to_string());
        assert_ne!(key("custom-a"), key("custom-b"));
        assert_ne!(key("a-12"), key("b-12"));
        assert_eq!(key("shardId-000000000012").as_str(), "shardId-000000000012");
        assert_eq!(KafkaPos::stream_key(&7).as_str(), "7");
        assert_eq!(StreamKey::new(&"é".repeat(100)).as_str(), "é".repeat(64));
    }
}
