-- pipeline_ingest 0.3.0 -> 0.4.0 (ALTER EXTENSION pipeline_ingest UPDATE).
-- Every schema change of 0.4.0 is here as well as in catalog.sql / finalize.sql / the generated
-- function definitions, so an upgraded database ends up with the same schema as a fresh one
-- (tests/e2e/test_upgrade.py compares them). A released script is never edited afterwards.

\echo Use "ALTER EXTENSION pipeline_ingest UPDATE" to load this file. \quit

-- Issue 9: metadata columns, raw format, transforms, upserts, start_time (consumers settings).
ALTER TABLE pipeline_kafka.consumers
    DROP CONSTRAINT consumers_format_check,
    ADD CONSTRAINT consumers_format_check CHECK (format IN ('text', 'csv', 'json', 'raw')),
    ADD COLUMN metadata jsonb CHECK (metadata IS NULL OR jsonb_typeof(metadata) = 'object'),
    ADD COLUMN transform text,
    ADD COLUMN mode text NOT NULL DEFAULT 'append' CHECK (mode IN ('append', 'upsert')),
    ADD COLUMN key_columns text[],
    ADD COLUMN key_format text CHECK (key_format IN ('json', 'csv', 'text')),
    ADD COLUMN start_time timestamptz;

ALTER TABLE pipeline_kinesis.consumers
    DROP CONSTRAINT consumers_format_check,
    ADD CONSTRAINT consumers_format_check CHECK (format IN ('text', 'csv', 'json', 'raw')),
    ADD COLUMN metadata jsonb CHECK (metadata IS NULL OR jsonb_typeof(metadata) = 'object'),
    ADD COLUMN transform text,
    ADD COLUMN mode text NOT NULL DEFAULT 'append' CHECK (mode IN ('append', 'upsert')),
    ADD COLUMN key_columns text[],
    ADD COLUMN key_format text CHECK (key_format IN ('json', 'csv', 'text'));

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

-- consume_begin of both systems gains named parameters after the existing ones (the 0.3.0
-- functions go; their C symbols stay in the library for databases not updated yet).
DROP FUNCTION pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint,
    integer, text, jsonb, text, integer, text[]);
DROP FUNCTION pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer,
    timestamptz, integer, integer, jsonb, text, integer, text[]);
CREATE  FUNCTION pipeline_kafka."consume_begin"(
	"topic" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT 'text', /* Option < & str > */
	"delimiter" TEXT DEFAULT NULL, /* Option < & str > */
	"quote" TEXT DEFAULT NULL, /* Option < & str > */
	"escape" TEXT DEFAULT NULL, /* Option < & str > */
	"batchsize" INT DEFAULT 1000, /* Option < i32 > */
	"maxbytes" INT DEFAULT 32000000, /* Option < i32 > */
	"parallelism" INT DEFAULT 1, /* Option < i32 > */
	"start_offset" bigint DEFAULT NULL, /* Option < i64 > */
	"timeout" INT DEFAULT 250, /* Option < i32 > */
	"group_id" TEXT DEFAULT NULL, /* Option < & str > */
	"config" jsonb DEFAULT NULL, /* Option < JsonbArg > */
	"on_error" TEXT DEFAULT 'dead_letter', /* Option < & str > */
	"max_dead_letters" INT DEFAULT NULL, /* Option < i32 > */
	"columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"metadata" jsonb DEFAULT NULL, /* Option < JsonbArg > */
	"transform" regprocedure DEFAULT NULL, /* Option < RegProcArg > */
	"mode" TEXT DEFAULT 'append', /* Option < & str > */
	"key_columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"key_format" TEXT DEFAULT NULL, /* Option < & str > */
	"start_time" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kafka_consume_begin_wrapper';
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
	"columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"metadata" jsonb DEFAULT NULL, /* Option < JsonbArg > */
	"transform" regprocedure DEFAULT NULL, /* Option < RegProcArg > */
	"mode" TEXT DEFAULT 'append', /* Option < & str > */
	"key_columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"key_format" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_consume_begin_with_options_wrapper';

-- ==== block: formats (metadata columns, raw format, json into one column) ====
-- No schema change of its own: format 'raw' and the metadata column are in the consumers changes
-- above; consume_begin's signature is the contract's.

-- ==== end block: formats ====



-- ==== block: writers (transforms, upserts, previews) ====
-- Transforms and upserts need no schema change of their own: consumers.transform / mode /
-- key_columns / key_format and the message / record types are above (contract). The upsert staging
-- table is a temporary table of each worker session, not part of the schema.

-- ==== end block: writers ====



-- ==== block: dropin (stream partitioned consumers, consumer_lag, group commits) ====
-- A stream-partitioned consumer has no relation of its own (each message's key names one).
ALTER TABLE pipeline_kafka.consumers
    ALTER COLUMN relation DROP NOT NULL,
    ALTER COLUMN relname DROP NOT NULL,
    ADD CONSTRAINT consumers_by_key_check CHECK ((relation IS NULL) = (relname IS NULL));
-- at most one stream-partitioned consumer per topic
CREATE UNIQUE INDEX consumers_by_key_topic ON pipeline_kafka.consumers (topic) WHERE relation IS NULL;

CREATE  FUNCTION pipeline_kafka."consume_begin_stream_partitioned"(
	"topic" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT 'text', /* Option < & str > */
	"delimiter" TEXT DEFAULT NULL, /* Option < & str > */
	"quote" TEXT DEFAULT NULL, /* Option < & str > */
	"escape" TEXT DEFAULT NULL, /* Option < & str > */
	"batchsize" INT DEFAULT 1000, /* Option < i32 > */
	"maxbytes" INT DEFAULT 32000000, /* Option < i32 > */
	"parallelism" INT DEFAULT 1, /* Option < i32 > */
	"timeout" INT DEFAULT 250, /* Option < i32 > */
	"start_offset" bigint DEFAULT NULL, /* Option < i64 > */
	"group_id" TEXT DEFAULT NULL, /* Option < & str > */
	"on_error" TEXT DEFAULT 'dead_letter', /* Option < & str > */
	"max_dead_letters" INT DEFAULT NULL /* Option < i32 > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'consume_begin_stream_partitioned_wrapper';

CREATE  FUNCTION pipeline_kafka."consume_end_stream_partitioned"(
	"topic" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'consume_end_stream_partitioned_wrapper';

CREATE  FUNCTION pipeline_kafka."consume_drop_stream_partitioned"(
	"topic" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'consume_drop_stream_partitioned_wrapper';

CREATE  FUNCTION pipeline_kafka."consumer_watermarks"() RETURNS TABLE (
	"consumer_id" INT,  /* i32 */
	"partition" INT,  /* i32 */
	"high_watermark" bigint  /* Option < i64 > */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'consumer_watermarks_wrapper';

-- pipeline_kafka's lag view, same columns: per consumer and partition, "offset" is the next offset
-- to read (as stored with the rows), high_watermark the partition's end (from the running worker,
-- else asked from the brokers for about a second at most: NULL when they do not answer).
CREATE VIEW pipeline_kafka.consumer_lag AS
SELECT c.id AS consumer_id,
       c.group_id,
       c.topic,
       o."partition",
       o."offset",
       w.high_watermark,
       -- (greatest() would turn an unknown watermark into no lag)
       CASE WHEN w.high_watermark IS NOT NULL THEN greatest(w.high_watermark - o."offset", 0) END AS lag
FROM pipeline_kafka.consumers c
JOIN pipeline_kafka.offsets o ON o.consumer_id = c.id
LEFT JOIN pipeline_kafka.consumer_watermarks() w ON w.consumer_id = o.consumer_id AND w."partition" = o."partition"
-- the view reads the table as its owner, past row-level security: the same rule, for the caller
WHERE pg_catalog.pg_has_role(c.owner, 'USAGE');
GRANT SELECT ON pipeline_kafka.consumer_lag TO PUBLIC;

-- ==== end block: dropin ====



-- ==== block: lead (seek, start_time) ====
-- pipeline_kafka.preview, pipeline_kinesis.preview (Kafka/Kinesis previews) and pipeline_kafka.seek.
CREATE  FUNCTION pipeline_kafka."preview"(
	"topic" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT 'text', /* Option < & str > */
	"delimiter" TEXT DEFAULT NULL, /* Option < & str > */
	"quote" TEXT DEFAULT NULL, /* Option < & str > */
	"escape" TEXT DEFAULT NULL, /* Option < & str > */
	"columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"metadata" jsonb DEFAULT NULL, /* Option < JsonbArg > */
	"transform" regprocedure DEFAULT NULL, /* Option < RegProcArg > */
	"mode" TEXT DEFAULT 'append', /* Option < & str > */
	"key_columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"key_format" TEXT DEFAULT NULL, /* Option < & str > */
	"limit" INT DEFAULT 10, /* Option < i32 > */
	"start_offset" bigint DEFAULT -2 /* Option < i64 > */
) RETURNS TABLE (
	"partition" INT,  /* i32 */
	"offset" bigint,  /* i64 */
	"row" jsonb,  /* Option < JsonbText > */
	"error" TEXT,  /* Option < String > */
	"sqlstate" TEXT  /* Option < String > */
)
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kafka_preview_wrapper';
CREATE  FUNCTION pipeline_kafka."seek"(
	"topic" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"partition" INT DEFAULT NULL, /* Option < i32 > */
	"offset" bigint DEFAULT NULL, /* Option < i64 > */
	"start_time" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kafka_seek_wrapper';
CREATE  FUNCTION pipeline_kinesis."preview"(
	"endpoint" TEXT, /* Option < & str > */
	"stream" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT 'text', /* Option < & str > */
	"delimiter" TEXT DEFAULT NULL, /* Option < & str > */
	"quote" TEXT DEFAULT NULL, /* Option < & str > */
	"escape" TEXT DEFAULT NULL, /* Option < & str > */
	"columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"metadata" jsonb DEFAULT NULL, /* Option < JsonbArg > */
	"transform" regprocedure DEFAULT NULL, /* Option < RegProcArg > */
	"mode" TEXT DEFAULT 'append', /* Option < & str > */
	"key_columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"key_format" TEXT DEFAULT NULL, /* Option < & str > */
	"limit" INT DEFAULT 10, /* Option < i32 > */
	"start_offset" INT DEFAULT NULL, /* Option < i32 > */
	"start_time" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS TABLE (
	"shard_id" TEXT,  /* String */
	"sequence_number" TEXT,  /* String */
	"sub_sequence" bigint,  /* Option < i64 > */
	"row" jsonb,  /* Option < JsonbText > */
	"error" TEXT,  /* Option < String > */
	"sqlstate" TEXT  /* Option < String > */
)
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_preview_wrapper';

-- ==== end block: lead ====
