-- pipeline_ingest 0.6.0 -> 0.7.0 (ALTER EXTENSION pipeline_ingest UPDATE).
-- Every schema change of 0.7.0 is here as well as in catalog.sql / finalize.sql / the generated
-- function definitions, so an upgraded database ends up with the same schema as a fresh one
-- (tests/e2e/test_upgrade.py compares them). A released script is never edited afterwards.
-- 0.7.0: the structure (issue 20) and what a new user tripped over (issue 24); each section names
-- the item it answers.

\echo Use "ALTER EXTENSION pipeline_ingest UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- Issue 20.2 / 24.2 / 24.10: one consumer spec
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Issue 24.1 / 24.3 / 24.4: status (dead-letter warnings, unknown lag)
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Issue 24.7 / 24.8 / 24.9: the outbox, produce_message, emit_tuple
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Issue 24.6: retry_dead_letters
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Issue 24.11 / 24.12 / 24.13: comments, Kafka and Kinesis alike, credentials
-- ---------------------------------------------------------------------------------------------

-- 24.12: one id sequence for every consumer. Kinesis consumers take their ids from Kafka's
-- sequence (stream-partitioned consumers already did), started past every id either system used,
-- so no new consumer shares an id with another. Consumers created before this update keep their
-- ids: a Kafka and a Kinesis consumer of one id may remain (renumbering is not safe here: ids are
-- in seqnums, offsets, dead letters, the running workers' arguments and shared memory).
SELECT pg_catalog.setval('pipeline_kafka.consumers_id_seq', greatest(n, 1), n > 0)
FROM (SELECT greatest(
          (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM pipeline_kafka.consumers_id_seq),
          (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM pipeline_kinesis.consumers_id_seq),
          (SELECT max(id) FROM pipeline_kafka.consumers),
          (SELECT max(id) FROM pipeline_kinesis.consumers),
          0) AS n) AS m;
ALTER TABLE pipeline_kinesis.consumers
    ALTER COLUMN id SET DEFAULT nextval('pipeline_kafka.consumers_id_seq'::regclass);
ALTER EXTENSION pipeline_ingest DROP SEQUENCE pipeline_kinesis.consumers_id_seq;
DROP SEQUENCE pipeline_kinesis.consumers_id_seq;

-- 24.12: pipeline_kinesis.seek moves a shard to a record or a time (held while it has no checkpoint).
CREATE TABLE pipeline_kinesis.seeks (
    consumer_id     integer NOT NULL,
    shard_id        text NOT NULL,
    sequence_number text CHECK (sequence_number ~ '^[0-9]+$'),
    start_time      timestamptz,
    CHECK ((sequence_number IS NULL) <> (start_time IS NULL)),
    PRIMARY KEY (consumer_id, shard_id),
    FOREIGN KEY (consumer_id, shard_id) REFERENCES pipeline_kinesis.seqnums (consumer_id, shard_id) ON DELETE CASCADE
);
REVOKE ALL ON pipeline_kinesis.seeks FROM PUBLIC;
GRANT SELECT ON pipeline_kinesis.seeks TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('pipeline_kinesis.seeks', '');
-- src/api/kinesis_seek.rs
CREATE FUNCTION pipeline_kinesis."seek"(
	"endpoint" TEXT, /* Option < & str > */
	"stream" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"shard_id" TEXT DEFAULT NULL, /* Option < & str > */
	"sequence_number" TEXT DEFAULT NULL, /* Option < & str > */
	"start_time" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_seek_wrapper';

-- 24.12: pipeline_kinesis.consumer_lag (as in finalize.sql)
CREATE VIEW pipeline_kinesis.consumer_lag WITH (security_barrier) AS
WITH s AS (SELECT * FROM pipeline_kinesis.shard_status())
SELECT c.id AS consumer_id,
       c.endpoint,
       c.stream,
       q.shard_id,
       q.seqnum AS sequence_number,
       q.sub_sequence,
       CASE WHEN a.pid IS NOT NULL AND NOT q.finished THEN s.millis_behind_latest END AS millis_behind_latest,
       CASE WHEN q.finished THEN 0::bigint END AS lag
FROM pipeline_kinesis.consumers c
JOIN pipeline_kinesis.seqnums q ON q.consumer_id = c.id
LEFT JOIN s ON s.consumer_id = q.consumer_id
           AND s.shard = CASE WHEN substring(q.shard_id FROM '[0-9]+$')::numeric <= 2147483647
                              THEN substring(q.shard_id FROM '[0-9]+$')::integer END
-- the worker still runs (pg_stat_activity shows every pid; its backend_type only to callers with
-- the privileges of the worker's role, the bootstrap superuser)
LEFT JOIN pg_catalog.pg_stat_activity a
       ON a.pid = s.worker_pid AND c.enabled
      AND coalesce(a.backend_type, 'pipeline_kinesis consumer') = 'pipeline_kinesis consumer'
-- the view reads the table as its owner, past row-level security: the same rule, for the caller
WHERE pg_catalog.pg_has_role(c.owner, 'USAGE');
GRANT SELECT ON pipeline_kinesis.consumer_lag TO PUBLIC;

COMMENT ON VIEW pipeline_kinesis.consumer_lag IS
    'Per Kinesis consumer and shard: the last record consumed, millis_behind_latest (MillisBehindLatest of the worker''s last GetRecords; NULL while no worker reads the shard) and lag in records where known (0 for a shard read to its end, else NULL: Kinesis does not count records). Consumers of the caller''s roles only.';
COMMENT ON FUNCTION pipeline_kinesis.seek(text, text, text, text, text, timestamptz) IS
    'Moves a Kinesis consumer: shard_id to the record sequence_number (read next: AT_SEQUENCE_NUMBER), or one shard or all (shard_id NULL) to the first record that arrived at or after start_time (AT_TIMESTAMP); its workers restart there at commit. Owner''s members and superusers only. Returns how many shards moved.';
COMMENT ON TABLE pipeline_kinesis.seeks IS
    'Where pipeline_kinesis.seek moved a shard: used while the shard has no checkpoint in seqnums (seqnum NULL, not finished); forgotten with its seqnums row.';
COMMENT ON COLUMN pipeline_kinesis.seeks.consumer_id IS
    'The Kinesis consumer (pipeline_kinesis.consumers.id) whose shard was moved.';
COMMENT ON COLUMN pipeline_kinesis.seeks.shard_id IS
    'The shard moved; its row in pipeline_kinesis.seqnums has no checkpoint while the position holds.';
COMMENT ON COLUMN pipeline_kinesis.seeks.sequence_number IS
    'The shard is read from this record on (AT_SEQUENCE_NUMBER), the record included.';
COMMENT ON COLUMN pipeline_kinesis.seeks.start_time IS
    'The shard is read from the first record that arrived at or after this time (AT_TIMESTAMP, to the millisecond).';
COMMENT ON SEQUENCE pipeline_kafka.consumers_id_seq IS
    'The ids of every consumer, Kafka (pipeline_kafka.consumers, stream-partitioned ones included) and Kinesis (pipeline_kinesis.consumers), since 0.7.0.';



-- ---------------------------------------------------------------------------------------------
-- Other
-- ---------------------------------------------------------------------------------------------
