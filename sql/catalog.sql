-- Catalog of pipeline_ingest: the desired state that the launcher and workers converge to.
-- Rows are kept by pg_dump (pg_extension_config_dump); functions write them, users read them.

CREATE SCHEMA IF NOT EXISTS pipeline_kafka;
CREATE SCHEMA IF NOT EXISTS pipeline_kinesis;
GRANT USAGE ON SCHEMA pipeline_kafka, pipeline_kinesis TO PUBLIC;

-- Kafka brokers every consumer and producer of this database connects to.
CREATE TABLE pipeline_kafka.brokers (
    host   text PRIMARY KEY CHECK (host <> ''),
    config jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object')
);

-- One row per (topic, relation) consumer. `generation` changes whenever the consumer is
-- (re)started or its settings change, so running workers know to restart.
CREATE TABLE pipeline_kafka.consumers (
    id           serial PRIMARY KEY,
    topic        text NOT NULL CHECK (topic <> ''),
    -- NULL (with relname) for a stream-partitioned consumer (consume_begin_stream_partitioned):
    -- each message's key names the relation its rows go to
    relation     regclass,
    -- the relation's qualified name (set by consume_begin, kept up to date by the supervisor when
    -- the table is renamed): if the table is dropped and created again, the consumer takes the new
    -- one and continues from its offsets
    relname      text,
    owner        regrole NOT NULL,
    group_id     text,
    format       text NOT NULL DEFAULT 'text' CHECK (format IN ('text', 'csv', 'json', 'raw', 'avro', 'protobuf', 'debezium', 'debezium-avro')),
    delimiter    text,
    quote        text,
    escape       text,
    -- text/csv: the columns the fields fill, in order (NULL = every column); others get defaults
    columns      text[],
    batchsize    integer NOT NULL DEFAULT 100000 CHECK (batchsize > 0),
    maxbytes     integer NOT NULL DEFAULT 32000000 CHECK (maxbytes > 0),
    parallelism  integer NOT NULL DEFAULT 1 CHECK (parallelism > 0),
    timeout      integer NOT NULL DEFAULT 250 CHECK (timeout > 0),
    config       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    on_error     text NOT NULL DEFAULT 'dead_letter' CHECK (on_error IN ('dead_letter', 'skip', 'stop')),
    max_dead_letters integer CHECK (max_dead_letters >= 0),
    enabled      boolean NOT NULL DEFAULT true,
    generation   bigint NOT NULL DEFAULT 1,
    last_error   text,
    last_error_at timestamptz,
    -- config was given by a superuser (it may hold settings only superusers may give); the worker
    -- otherwise checks config against the owner's rights
    config_by_superuser boolean NOT NULL DEFAULT false,
    -- 0.4.0 (appended, as the upgrade script adds them):
    -- metadata field -> target column, e.g. {"offset": "off", "key": "k"} (NULL = none)
    metadata     jsonb CHECK (metadata IS NULL OR jsonb_typeof(metadata) = 'object'),
    -- a function receiving each batch as pipeline_kafka.message[], as regprocedure text (not the
    -- regprocedure type: pg_upgrade refuses reg* columns whose oids it does not keep)
    transform    text,
    -- append: COPY; upsert: INSERT ... ON CONFLICT (key_columns) DO UPDATE, tombstones delete
    -- (format debezium: change events applied by key); replicate: debezium's upsert, truncates too
    mode         text NOT NULL DEFAULT 'append' CHECK (mode IN ('append', 'upsert', 'replicate')),
    key_columns  text[],
    key_format   text CHECK (key_format IN ('json', 'csv', 'text', 'avro', 'protobuf')),
    -- where a partition without a stored offset starts, by time (offsets_for_times); NULL = start_offset rules
    start_time   timestamptz,
    -- 0.6.0 (appended): the transform function as consume_begin found it, its oid (a plain oid:
    -- pg_upgrade does not keep pg_proc oids, the worker then adopts the function of the stored
    -- signature and owner) and its owner; the worker calls no function of another owner
    transform_oid   oid,
    transform_owner regrole,
    -- 0.8.0 (appended): formats avro, protobuf, debezium-avro: the URL of the schema registry
    -- (pipeline_kafka.schema_registries) the consumer reads schemas from; NULL for other formats
    schema_registry text,
    -- 0.8.0 (appended): formats avro, protobuf: a new field of a later schema becomes a new column
    auto_evolve boolean NOT NULL DEFAULT false,
    UNIQUE (topic, relation),
    CONSTRAINT consumers_by_key_check CHECK ((relation IS NULL) = (relname IS NULL))
);
-- at most one stream-partitioned consumer per topic
CREATE UNIQUE INDEX consumers_by_key_topic ON pipeline_kafka.consumers (topic) WHERE relation IS NULL;

-- Secret client settings (passwords, keys) of broker entries and consumers, kept apart so that the
-- readable `config` columns show them masked. Superusers only.
CREATE TABLE pipeline_kafka.secrets (
    broker      text REFERENCES pipeline_kafka.brokers (host) ON DELETE CASCADE,
    consumer_id integer REFERENCES pipeline_kafka.consumers (id) ON DELETE CASCADE,
    key         text NOT NULL,
    value       text NOT NULL,
    CHECK ((broker IS NULL) <> (consumer_id IS NULL))
);
CREATE UNIQUE INDEX ON pipeline_kafka.secrets (broker, key) WHERE broker IS NOT NULL;
CREATE UNIQUE INDEX ON pipeline_kafka.secrets (consumer_id, key) WHERE consumer_id IS NOT NULL;

-- Schema registries (add_schema_registry) that consumers of the formats avro, protobuf and
-- debezium-avro read schemas from (both systems). config holds credentials and TLS settings:
-- superusers only, like pipeline_kafka.secrets.
CREATE TABLE pipeline_kafka.schema_registries (
    url    text PRIMARY KEY CHECK (url ~ '^https?://'),
    config jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object')
);

-- Next offset to read, per consumer and partition. Written in the same transaction as the rows.
CREATE TABLE pipeline_kafka.offsets (
    consumer_id integer NOT NULL REFERENCES pipeline_kafka.consumers (id) ON DELETE CASCADE,
    "partition" integer NOT NULL CHECK ("partition" >= 0),
    "offset"    bigint NOT NULL CHECK ("offset" >= 0),
    PRIMARY KEY (consumer_id, "partition")
);

-- 0.8.0 (issue 22): a consumer spread over the nodes of a Citus cluster (consume_spread, run on
-- every node): this node's place, kept once stored, so a partition's offsets live on one node.
-- Written by consume_spread only; readable by everyone, as offsets.
CREATE TABLE pipeline_kafka.spread (
    consumer_id integer PRIMARY KEY REFERENCES pipeline_kafka.consumers (id) ON DELETE CASCADE,
    slot        integer NOT NULL,
    slots       integer NOT NULL,
    CHECK (slots > 0 AND slot >= 0 AND slot < slots)
);

-- Messages that could not become rows (bad format, a value of the wrong type, a constraint or a
-- trigger error), with their raw bytes. Written in the same transaction as the batch's good rows
-- and its offsets. A dead letter belongs to the consumer's owner when it was written (`owner`):
-- that role's members see (and may delete) it, superusers all; a role that takes the consumer
-- over later (its table created again by that role) does not.
CREATE TABLE pipeline_kafka.dead_letters (
    id          bigserial PRIMARY KEY,
    consumer_id integer NOT NULL REFERENCES pipeline_kafka.consumers (id) ON DELETE CASCADE,
    topic       text NOT NULL,
    "partition" integer NOT NULL,
    "offset"    bigint NOT NULL,
    key         bytea,
    value       bytea,
    error       text NOT NULL,
    sqlstate    text NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    -- 0.6.0 (appended)
    owner       regrole NOT NULL
);
CREATE INDEX ON pipeline_kafka.dead_letters (consumer_id, "partition", "offset");

-- Transactional outbox: produce_message and emit_tuple write here in the caller's transaction;
-- the database's producer worker sends committed rows and deletes them once the broker acked.
CREATE TABLE pipeline_kafka.outbox (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL CHECK (topic <> ''),
    "partition" integer CHECK ("partition" >= 0),
    key         bytea,
    -- the message's value (named `message` before 0.7.0; `value` as in dead_letters and Kafka)
    value       bytea,
    headers     jsonb CHECK (headers IS NULL OR jsonb_typeof(headers) = 'object'),
    "timestamp" timestamptz,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- 0.6.0 (appended, as the upgrade script adds it): who a dead letter of the message is shown
    -- to: produce_message's caller (current_user), emit_tuple's table owner (NULL: before 0.6.0)
    produced_by regrole
);

-- 0.6.0 (issue 19.9): messages the broker never takes (too large for the producer's
-- message.max.bytes or the topic's max.message.bytes), moved out of the outbox by the producer so
-- they do not hold their topic's later messages. Members of the producing role see (and may
-- delete) theirs; superusers all.
CREATE TABLE pipeline_kafka.outbox_dead_letters (
    id          bigint PRIMARY KEY,     -- the message's outbox id
    topic       text NOT NULL,
    "partition" integer,
    key         bytea,
    value       bytea,                  -- named `message` before 0.7.0
    headers     jsonb,
    "timestamp" timestamptz,
    produced_by regrole,
    created_at  timestamptz NOT NULL,
    error       text NOT NULL,
    sqlstate    text NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now()
);

-- Last delivery error per topic, written by the producer worker, cleared on the next success.
CREATE TABLE pipeline_kafka.producer_errors (
    topic         text PRIMARY KEY,
    last_error    text NOT NULL,
    last_error_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pipeline_kinesis.endpoints (
    name     text PRIMARY KEY CHECK (name <> ''),
    region   text NOT NULL CHECK (region <> ''),
    credfile text,
    url      text,
    config   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object')
);

CREATE TABLE pipeline_kinesis.consumers (
    -- 0.7.0: one id sequence for every consumer of both systems (Kafka's), so that an id names one
    -- consumer (a database updated from 0.6.0 may keep older Kafka and Kinesis consumers of one id)
    id           integer PRIMARY KEY DEFAULT nextval('pipeline_kafka.consumers_id_seq'::regclass),
    endpoint     text NOT NULL REFERENCES pipeline_kinesis.endpoints (name) ON UPDATE CASCADE,
    stream       text NOT NULL CHECK (stream <> ''),
    relation     regclass NOT NULL,
    owner        regrole NOT NULL,
    format       text NOT NULL DEFAULT 'text' CHECK (format IN ('text', 'csv', 'json', 'raw', 'avro', 'protobuf', 'debezium', 'debezium-avro')),
    delimiter    text,
    quote        text,
    escape       text,
    batchsize    integer NOT NULL DEFAULT 10000 CHECK (batchsize > 0),
    parallelism  integer NOT NULL DEFAULT 1 CHECK (parallelism > 0),
    config       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    enabled      boolean NOT NULL DEFAULT true,
    generation   bigint NOT NULL DEFAULT 1,
    last_error   text,
    last_error_at timestamptz,
    -- 0.3.0 (appended, as the upgrade script adds them):
    -- the relation's qualified name, kept up to date on renames (a table created again is adopted)
    relname      text,
    -- text/csv: the columns the fields fill, in order (NULL = every column)
    columns      text[],
    timeout      integer NOT NULL DEFAULT 250 CHECK (timeout > 0),
    -- milliseconds between GetRecords calls on a shard that returned nothing new (each shard
    -- stays within the service's 5 calls per second)
    poll_interval integer NOT NULL DEFAULT 200 CHECK (poll_interval > 0),
    on_error     text NOT NULL DEFAULT 'dead_letter' CHECK (on_error IN ('dead_letter', 'skip', 'stop')),
    max_dead_letters integer CHECK (max_dead_letters >= 0),
    -- where a shard without a checkpoint starts: AT_TIMESTAMP start_time, or TRIM_HORIZON when NULL
    -- (consume_begin stores its own start time for LATEST, so a restart never skips records)
    start_time   timestamptz,
    -- 0.4.0 (appended): as on pipeline_kafka.consumers
    metadata     jsonb CHECK (metadata IS NULL OR jsonb_typeof(metadata) = 'object'),
    transform    text,
    mode         text NOT NULL DEFAULT 'append' CHECK (mode IN ('append', 'upsert', 'replicate')),
    key_columns  text[],
    key_format   text CHECK (key_format IN ('json', 'csv', 'text', 'avro', 'protobuf')),
    -- 0.6.0 (appended): as on pipeline_kafka.consumers
    transform_oid   oid,
    transform_owner regrole,
    -- 0.8.0 (appended): as on pipeline_kafka.consumers
    schema_registry text,
    auto_evolve boolean NOT NULL DEFAULT false,
    UNIQUE (endpoint, stream, relation)
);

-- One row per consumer and shard its workers know. The checkpoint (seqnum, sub_sequence, finished)
-- is written in the same transaction as the rows it stands for. Sequence numbers are decimal text
-- of up to 128 digits, compared as numbers.
CREATE TABLE pipeline_kinesis.seqnums (
    consumer_id integer NOT NULL REFERENCES pipeline_kinesis.consumers (id) ON DELETE CASCADE,
    shard_id    text NOT NULL,
    -- the last record consumed (NULL: none yet)
    seqnum      text CHECK (seqnum ~ '^[0-9]+$'),
    -- 0.3.0: of a KPL aggregate record, the index of the last user record consumed (NULL: whole)
    sub_sequence bigint CHECK (sub_sequence >= 0),
    -- read to SHARD_END and committed: its children may be read
    finished    boolean NOT NULL DEFAULT false,
    -- lineage as ListShards gave it: parent and adjacent parent
    parents     text[],
    -- ListShards shows an ending sequence number (split or merged away)
    closed      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (consumer_id, shard_id)
);

-- 0.9.0 (issue 22): a Kinesis consumer spread over the nodes of a Citus cluster (consume_spread,
-- run on every node): this node's place, kept once stored. Shard s is read on the node of slot
-- (the number ending its id, or its FNV-1a hash) mod slots; a parent read on another node is
-- waited for until that node's seqnums say it is finished. Written by consume_spread only.
CREATE TABLE pipeline_kinesis.spread (
    consumer_id integer PRIMARY KEY REFERENCES pipeline_kinesis.consumers (id) ON DELETE CASCADE,
    slot        integer NOT NULL,
    slots       integer NOT NULL,
    CHECK (slots > 0 AND slot >= 0 AND slot < slots)
);

-- 0.7.0: where pipeline_kinesis.seek moved a shard. The seek clears the shard's checkpoint in
-- seqnums; while it has none (seqnum NULL, not finished) the shard is read from this record on
-- (AT_SEQUENCE_NUMBER) or from the first record that arrived at or after start_time
-- (AT_TIMESTAMP). Forgotten with the seqnums row (consume_begin with a start, consume_drop).
CREATE TABLE pipeline_kinesis.seeks (
    consumer_id     integer NOT NULL,
    shard_id        text NOT NULL,
    sequence_number text CHECK (sequence_number ~ '^[0-9]+$'),
    start_time      timestamptz,
    CHECK ((sequence_number IS NULL) <> (start_time IS NULL)),
    PRIMARY KEY (consumer_id, shard_id),
    FOREIGN KEY (consumer_id, shard_id) REFERENCES pipeline_kinesis.seqnums (consumer_id, shard_id) ON DELETE CASCADE
);

-- Kinesis user records that could not become rows, with their raw bytes; as pipeline_kafka's.
CREATE TABLE pipeline_kinesis.dead_letters (
    id              bigserial PRIMARY KEY,
    consumer_id     integer NOT NULL REFERENCES pipeline_kinesis.consumers (id) ON DELETE CASCADE,
    stream          text NOT NULL,
    shard_id        text NOT NULL,
    sequence_number text NOT NULL,
    sub_sequence    bigint,
    partition_key   text,
    data            bytea,
    error           text NOT NULL,
    sqlstate        text NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    -- 0.6.0 (appended): as on pipeline_kafka.dead_letters
    owner           regrole NOT NULL
);
CREATE INDEX ON pipeline_kinesis.dead_letters (consumer_id, shard_id);

-- Pending messages per topic: how many, the oldest, and the last delivery error. 0.7.0: only
-- topics with messages pending (a topic whose messages were all delivered or discarded is gone,
-- whatever error was recorded for it).
CREATE VIEW pipeline_kafka.outbox_status AS
SELECT o.topic,
       o.pending,
       o.oldest,
       clock_timestamp() - o.oldest AS oldest_age,
       e.last_error,
       e.last_error_at
FROM (SELECT topic, count(*) AS pending, min(created_at) AS oldest
      FROM pipeline_kafka.outbox GROUP BY topic) AS o
LEFT JOIN pipeline_kafka.producer_errors AS e USING (topic);

-- Catalog rows are written only through the extension's functions; everyone may read them,
-- except the outbox, whose message contents are for superusers (its status view is public).
REVOKE ALL ON ALL TABLES IN SCHEMA pipeline_kafka, pipeline_kinesis FROM PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA pipeline_kafka, pipeline_kinesis TO PUBLIC;
REVOKE SELECT ON pipeline_kafka.outbox FROM PUBLIC;
REVOKE SELECT ON pipeline_kafka.secrets FROM PUBLIC;
REVOKE SELECT ON pipeline_kafka.schema_registries FROM PUBLIC;
GRANT DELETE ON pipeline_kafka.dead_letters TO PUBLIC;
ALTER TABLE pipeline_kafka.dead_letters ENABLE ROW LEVEL SECURITY;
CREATE POLICY dead_letters_of_own_roles ON pipeline_kafka.dead_letters
    USING (pg_catalog.pg_has_role(owner, 'USAGE'));
-- A consumer's row (its settings and last_error, which can quote message contents) is visible to
-- its owner's members and superusers only, like its dead letters.
ALTER TABLE pipeline_kafka.consumers ENABLE ROW LEVEL SECURITY;
CREATE POLICY consumers_of_own_roles ON pipeline_kafka.consumers FOR SELECT
    USING (pg_catalog.pg_has_role(owner, 'USAGE'));
GRANT DELETE ON pipeline_kinesis.dead_letters TO PUBLIC;
ALTER TABLE pipeline_kinesis.dead_letters ENABLE ROW LEVEL SECURITY;
CREATE POLICY dead_letters_of_own_roles ON pipeline_kinesis.dead_letters
    USING (pg_catalog.pg_has_role(owner, 'USAGE'));
GRANT DELETE ON pipeline_kafka.outbox_dead_letters TO PUBLIC;
ALTER TABLE pipeline_kafka.outbox_dead_letters ENABLE ROW LEVEL SECURITY;
CREATE POLICY outbox_dead_letters_of_own_roles ON pipeline_kafka.outbox_dead_letters
    USING (pg_catalog.pg_has_role(produced_by, 'USAGE'));
ALTER TABLE pipeline_kinesis.consumers ENABLE ROW LEVEL SECURITY;
CREATE POLICY consumers_of_own_roles ON pipeline_kinesis.consumers FOR SELECT
    USING (pg_catalog.pg_has_role(owner, 'USAGE'));

SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.brokers', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.consumers', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.consumers_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.offsets', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.spread', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.secrets', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.schema_registries', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.dead_letters_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.outbox_dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kinesis.endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kinesis.consumers', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kinesis.seqnums', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kinesis.seeks', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kinesis.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kinesis.dead_letters_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kinesis.spread', '');

-- 0.4.0: a batch as a transform function receives it (pipeline_kafka.message[] /
-- pipeline_kinesis.record[]), one element per message in the order read.
CREATE TYPE pipeline_kafka.message AS (
    topic       text,
    "partition" integer,
    "offset"    bigint,
    key         bytea,
    value       bytea,
    "timestamp" timestamptz,
    headers     jsonb
);
CREATE TYPE pipeline_kinesis.record AS (
    stream          text,
    shard_id        text,
    sequence_number text,
    sub_sequence    bigint,
    partition_key   text,
    data            bytea,
    arrival_time    timestamptz
);
