-- pipeline_ingest 0.4.0 -> 0.5.0 (ALTER EXTENSION pipeline_ingest UPDATE).
-- Every schema change of 0.5.0 is here as well as in catalog.sql / finalize.sql / the generated
-- function definitions, so an upgraded database ends up with the same schema as a fresh one
-- (tests/e2e/test_upgrade.py compares them). A released script is never edited afterwards.

\echo Use "ALTER EXTENSION pipeline_ingest UPDATE" to load this file. \quit

-- Issue 10: larger default batches. A batch is committed as soon as the source has nothing more at
-- hand (pipeline_ingest.flush_when_caught_up), so batchsize only bounds how much of a backlog goes
-- into one transaction: Kafka 100,000 messages (maxbytes still bounds the bytes), Kinesis 10,000
-- records (GetRecords' limit). Existing consumers keep the batchsize they were created with.
ALTER TABLE pipeline_kafka.consumers ALTER COLUMN batchsize SET DEFAULT 100000;
ALTER TABLE pipeline_kinesis.consumers ALTER COLUMN batchsize SET DEFAULT 10000;

-- The same defaults for the functions' parameters (definitions as pgrx generates them).
CREATE OR REPLACE FUNCTION pipeline_kafka."consume_begin_stream_partitioned"(
	"topic" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT 'text', /* Option < & str > */
	"delimiter" TEXT DEFAULT NULL, /* Option < & str > */
	"quote" TEXT DEFAULT NULL, /* Option < & str > */
	"escape" TEXT DEFAULT NULL, /* Option < & str > */
	"batchsize" INT DEFAULT 100000, /* Option < i32 > */
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

CREATE OR REPLACE FUNCTION pipeline_kinesis."consume_begin"(
	"endpoint" TEXT, /* Option < & str > */
	"stream" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT 'text', /* Option < & str > */
	"delimiter" TEXT DEFAULT NULL, /* Option < & str > */
	"quote" TEXT DEFAULT NULL, /* Option < & str > */
	"escape" TEXT DEFAULT NULL, /* Option < & str > */
	"batchsize" INT DEFAULT 10000, /* Option < i32 > */
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

CREATE OR REPLACE FUNCTION pipeline_kafka."consume_begin"(
	"topic" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT 'text', /* Option < & str > */
	"delimiter" TEXT DEFAULT NULL, /* Option < & str > */
	"quote" TEXT DEFAULT NULL, /* Option < & str > */
	"escape" TEXT DEFAULT NULL, /* Option < & str > */
	"batchsize" INT DEFAULT 100000, /* Option < i32 > */
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
