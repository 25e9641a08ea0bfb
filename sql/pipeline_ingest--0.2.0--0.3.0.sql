-- pipeline_ingest 0.2.0 -> 0.3.0 (ALTER EXTENSION pipeline_ingest UPDATE).
-- Every schema change of 0.3.0 is here as well as in catalog.sql / finalize.sql / the generated
-- function definitions, so an upgraded database ends up with the same schema as a fresh one
-- (tests/e2e/test_upgrade.py compares them). A released script is never edited afterwards.

\echo Use "ALTER EXTENSION pipeline_ingest UPDATE" to load this file. \quit

-- Issue 8: Kinesis consumers on the generic pipeline.
ALTER TABLE pipeline_kinesis.consumers
    ADD COLUMN relname text,
    ADD COLUMN columns text[],
    ADD COLUMN timeout integer NOT NULL DEFAULT 250 CHECK (timeout > 0),
    ADD COLUMN poll_interval integer NOT NULL DEFAULT 200 CHECK (poll_interval > 0),
    ADD COLUMN on_error text NOT NULL DEFAULT 'dead_letter' CHECK (on_error IN ('dead_letter', 'skip', 'stop')),
    ADD COLUMN max_dead_letters integer CHECK (max_dead_letters >= 0),
    ADD COLUMN start_time timestamptz;

ALTER TABLE pipeline_kinesis.seqnums
    ALTER COLUMN seqnum DROP NOT NULL,
    ADD COLUMN sub_sequence bigint CHECK (sub_sequence >= 0),
    ADD COLUMN finished boolean NOT NULL DEFAULT false,
    ADD COLUMN parents text[],
    ADD COLUMN closed boolean NOT NULL DEFAULT false;

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
    failed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON pipeline_kinesis.dead_letters (consumer_id, shard_id);
REVOKE ALL ON pipeline_kinesis.dead_letters FROM PUBLIC;
GRANT SELECT, DELETE ON pipeline_kinesis.dead_letters TO PUBLIC;
ALTER TABLE pipeline_kinesis.dead_letters ENABLE ROW LEVEL SECURITY;
CREATE POLICY dead_letters_of_owned_consumers ON pipeline_kinesis.dead_letters
    USING (EXISTS (SELECT 1 FROM pipeline_kinesis.consumers c
                   WHERE c.id = consumer_id AND pg_catalog.pg_has_role(c.owner, 'USAGE')));
ALTER TABLE pipeline_kinesis.consumers ENABLE ROW LEVEL SECURITY;
CREATE POLICY consumers_of_own_roles ON pipeline_kinesis.consumers FOR SELECT
    USING (pg_catalog.pg_has_role(owner, 'USAGE'));
SELECT pg_catalog.pg_extension_config_dump('pipeline_kinesis.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kinesis.dead_letters_id_seq', '');

-- Issue 8, the SQL API: Kinesis consumers, their live per-shard status and the status view.
CREATE  FUNCTION pipeline_kinesis."consume_begin"(
	"endpoint" TEXT, /* Option < & str > */
	"stream" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT 'text', /* Option < & str > */
	"delimiter" TEXT DEFAULT NULL, /* Option < & str > */
	"quote" TEXT DEFAULT NULL, /* Option < & str > */
	"escape" TEXT DEFAULT NULL, /* Option < & str > */
	"batchsize" INT DEFAULT 1000, /* Option < i32 > */
	"parallelism" INT DEFAULT 1, /* Option < i32 > */
	"start_offset" INT DEFAULT NULL, /* Option < i32 > */
	"start_time" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"timeout" INT DEFAULT 250, /* Option < i32 > */
	"poll_interval" INT DEFAULT 200, /* Option < i32 > */
	"config" jsonb DEFAULT NULL, /* Option < JsonbArg > */
	"on_error" TEXT DEFAULT 'dead_letter', /* Option < & str > */
	"max_dead_letters" INT DEFAULT NULL, /* Option < i32 > */
	"columns" TEXT[] DEFAULT NULL /* :: std :: option :: Option < Vec < Option < String > > > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_consume_begin_wrapper';
CREATE  FUNCTION pipeline_kinesis."consume_begin"() RETURNS INT /* i32 */
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_consume_begin_all_wrapper';
CREATE  FUNCTION pipeline_kinesis."consume_end"(
	"endpoint" TEXT, /* Option < & str > */
	"stream" TEXT, /* Option < & str > */
	"relation" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_consume_end_wrapper';
CREATE  FUNCTION pipeline_kinesis."consume_end"() RETURNS INT /* i32 */
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_consume_end_all_wrapper';
CREATE  FUNCTION pipeline_kinesis."consume_drop"(
	"endpoint" TEXT, /* Option < & str > */
	"stream" TEXT, /* Option < & str > */
	"relation" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_consume_drop_wrapper';
CREATE  FUNCTION pipeline_kinesis."shard_status"() RETURNS TABLE (
	"consumer_id" INT,  /* i32 */
	"shard" INT,  /* i32 */
	"worker_pid" INT,  /* Option < i32 > */
	"millis_behind_latest" bigint,  /* Option < i64 > */
	"records" bigint,  /* i64 */
	"rows" bigint,  /* i64 */
	"dead_letters" bigint,  /* i64 */
	"batches" bigint,  /* i64 */
	"last_batch_at" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'shard_status_wrapper';
-- One row per Kinesis consumer and shard its workers know (seqnums); a consumer with no shard yet
-- has one row with NULL shard columns. shard_status() publishes a shard under the number that
-- ends its id (shardId-000000000003: 3) when that fits an int.
CREATE VIEW pipeline_kinesis.consumer_status AS
WITH s AS (SELECT * FROM pipeline_kinesis.shard_status()),
     q AS (SELECT n.*,
                  CASE WHEN substring(n.shard_id FROM '[0-9]+$')::numeric <= 2147483647
                       THEN substring(n.shard_id FROM '[0-9]+$')::integer END AS status_key
           FROM pipeline_kinesis.seqnums n)
SELECT c.id AS consumer_id,
       c.endpoint,
       c.stream,
       c.relation,
       CASE WHEN NOT c.enabled THEN 'stopped'
            WHEN a.pid IS NULL AND starts_with(c.last_error, 'waiting for a worker') THEN 'waiting'
            WHEN a.pid IS NULL THEN 'starting'
            WHEN c.last_error IS NOT NULL AND NOT starts_with(c.last_error, 'waiting for a worker') THEN 'error'
            ELSE 'running' END AS state,
       a.pid AS worker_pid,
       q.shard_id,
       CASE WHEN q.shard_id IS NULL THEN NULL
            WHEN q.finished THEN 'finished'
            WHEN q.closed THEN 'closed'
            ELSE 'open' END AS shard_state,
       q.parents,
       q.seqnum AS last_sequence_number,
       q.sub_sequence,
       s.millis_behind_latest,
       coalesce(s.records, 0) AS records,
       coalesce(s.rows, 0) AS rows,
       coalesce(s.dead_letters, 0) AS dead_letters,
       coalesce(s.batches, 0) AS batches,
       s.last_batch_at,
       c.last_error,
       c.last_error_at
FROM pipeline_kinesis.consumers c
LEFT JOIN q ON q.consumer_id = c.id
LEFT JOIN s ON s.consumer_id = q.consumer_id AND s.shard = q.status_key
LEFT JOIN pg_catalog.pg_stat_activity a
       ON a.pid = s.worker_pid AND a.backend_type = 'pipeline_kinesis consumer' AND c.enabled
-- the view reads the table as its owner, past row-level security: the same rule, for the caller
WHERE pg_catalog.pg_has_role(c.owner, 'USAGE');
GRANT SELECT ON pipeline_kinesis.consumer_status TO PUBLIC;
