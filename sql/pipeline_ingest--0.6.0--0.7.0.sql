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

-- A role's EXECUTE privileges on the dropped functions (README "Restricting consumers to chosen
-- roles") pass to the new ones: remembered here (in a setting of this transaction: a table made
-- here would become part of the extension), granted again below.
SELECT pg_catalog.set_config('pi_upgrade_070.acl', coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
           'name', f.name, 'acl', p.proacl::text[]))::text, '[]'), true)
FROM (VALUES ('pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, integer, text, jsonb, text, integer, text[], jsonb, text, text, text[], text, timestamptz)', 'pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, integer, text, jsonb, text, integer, text[], jsonb, regprocedure, text, text[], text, timestamptz)'),
    ('pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer, timestamptz, integer, integer, jsonb, text, integer, text[], jsonb, text, text, text[], text)', 'pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer, timestamptz, integer, integer, jsonb, text, integer, text[], jsonb, regprocedure, text, text[], text)'),
    ('pipeline_kafka.preview(text, text, text, text, text, text, text[], jsonb, text, text, text[], text, integer, bigint)', 'pipeline_kafka.preview(text, text, text, text, text, text, text[], jsonb, regprocedure, text, text[], text, integer, bigint)'),
    ('pipeline_kinesis.preview(text, text, text, text, text, text, text, text[], jsonb, text, text, text[], text, integer, integer, timestamptz)', 'pipeline_kinesis.preview(text, text, text, text, text, text, text, text[], jsonb, regprocedure, text, text[], text, integer, integer, timestamptz)')) f(name, old)
JOIN pg_catalog.pg_proc p ON p.oid = f.old::pg_catalog.regprocedure;
-- 24.2: consume_begin keeps an existing consumer's settings but for the arguments given: every
-- setting's default is NULL (the defaults of a new consumer are applied by the function and named
-- in its COMMENT). 24.8: transform is text, resolved by the function (a name without argument
-- types is a clear 22023). 24.10: previews say what each message became (action) and preview a
-- consumer by its id. Old signatures (transform regprocedure) are dropped first.
DROP FUNCTION pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, integer, text, jsonb, text, integer, text[], jsonb, regprocedure, text, text[], text, timestamptz);
DROP FUNCTION pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer, timestamptz, integer, integer, jsonb, text, integer, text[], jsonb, regprocedure, text, text[], text);
DROP FUNCTION pipeline_kafka.preview(text, text, text, text, text, text, text[], jsonb, regprocedure, text, text[], text, integer, bigint);
DROP FUNCTION pipeline_kinesis.preview(text, text, text, text, text, text, text, text[], jsonb, regprocedure, text, text[], text, integer, integer, timestamptz);

CREATE FUNCTION pipeline_kafka."consume_begin"(
	"topic" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT NULL, /* Option < & str > */
	"delimiter" TEXT DEFAULT NULL, /* Option < & str > */
	"quote" TEXT DEFAULT NULL, /* Option < & str > */
	"escape" TEXT DEFAULT NULL, /* Option < & str > */
	"batchsize" INT DEFAULT NULL, /* Option < i32 > */
	"maxbytes" INT DEFAULT NULL, /* Option < i32 > */
	"parallelism" INT DEFAULT NULL, /* Option < i32 > */
	"start_offset" bigint DEFAULT NULL, /* Option < i64 > */
	"timeout" INT DEFAULT NULL, /* Option < i32 > */
	"group_id" TEXT DEFAULT NULL, /* Option < & str > */
	"config" jsonb DEFAULT NULL, /* Option < JsonbArg > */
	"on_error" TEXT DEFAULT NULL, /* Option < & str > */
	"max_dead_letters" INT DEFAULT NULL, /* Option < i32 > */
	"columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"metadata" jsonb DEFAULT NULL, /* Option < JsonbArg > */
	"transform" TEXT DEFAULT NULL, /* Option < & str > */
	"mode" TEXT DEFAULT NULL, /* Option < & str > */
	"key_columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"key_format" TEXT DEFAULT NULL, /* Option < & str > */
	"start_time" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kafka_consume_begin_v070_wrapper';

CREATE FUNCTION pipeline_kinesis."consume_begin"(
	"endpoint" TEXT, /* Option < & str > */
	"stream" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT NULL, /* Option < & str > */
	"delimiter" TEXT DEFAULT NULL, /* Option < & str > */
	"quote" TEXT DEFAULT NULL, /* Option < & str > */
	"escape" TEXT DEFAULT NULL, /* Option < & str > */
	"batchsize" INT DEFAULT NULL, /* Option < i32 > */
	"parallelism" INT DEFAULT NULL, /* Option < i32 > */
	"start_offset" INT DEFAULT NULL, /* Option < i32 > */
	"start_time" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"timeout" INT DEFAULT NULL, /* Option < i32 > */
	"poll_interval" INT DEFAULT NULL, /* Option < i32 > */
	"config" jsonb DEFAULT NULL, /* Option < JsonbArg > */
	"on_error" TEXT DEFAULT NULL, /* Option < & str > */
	"max_dead_letters" INT DEFAULT NULL, /* Option < i32 > */
	"columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"metadata" jsonb DEFAULT NULL, /* Option < JsonbArg > */
	"transform" TEXT DEFAULT NULL, /* Option < & str > */
	"mode" TEXT DEFAULT NULL, /* Option < & str > */
	"key_columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"key_format" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_consume_begin_v070_wrapper';

CREATE OR REPLACE FUNCTION pipeline_kafka."consume_begin_stream_partitioned"(
	"topic" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT NULL, /* Option < & str > */
	"delimiter" TEXT DEFAULT NULL, /* Option < & str > */
	"quote" TEXT DEFAULT NULL, /* Option < & str > */
	"escape" TEXT DEFAULT NULL, /* Option < & str > */
	"batchsize" INT DEFAULT NULL, /* Option < i32 > */
	"maxbytes" INT DEFAULT NULL, /* Option < i32 > */
	"parallelism" INT DEFAULT NULL, /* Option < i32 > */
	"timeout" INT DEFAULT NULL, /* Option < i32 > */
	"start_offset" bigint DEFAULT NULL, /* Option < i64 > */
	"group_id" TEXT DEFAULT NULL, /* Option < & str > */
	"on_error" TEXT DEFAULT NULL, /* Option < & str > */
	"max_dead_letters" INT DEFAULT NULL /* Option < i32 > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'consume_begin_stream_partitioned_wrapper';

CREATE FUNCTION pipeline_kafka."preview"(
	"consumer_id" INT, /* Option < i32 > */
	"limit" INT DEFAULT 10, /* Option < i32 > */
	"start_offset" bigint DEFAULT NULL /* Option < i64 > */
) RETURNS TABLE (
	"partition" INT,  /* i32 */
	"offset" bigint,  /* i64 */
	"action" TEXT,  /* String */
	"row" jsonb,  /* Option < JsonbText > */
	"error" TEXT,  /* Option < String > */
	"sqlstate" TEXT  /* Option < String > */
)
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kafka_preview_consumer_wrapper';

CREATE FUNCTION pipeline_kafka."preview"(
	"topic" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT 'text', /* Option < & str > */
	"delimiter" TEXT DEFAULT NULL, /* Option < & str > */
	"quote" TEXT DEFAULT NULL, /* Option < & str > */
	"escape" TEXT DEFAULT NULL, /* Option < & str > */
	"columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"metadata" jsonb DEFAULT NULL, /* Option < JsonbArg > */
	"transform" TEXT DEFAULT NULL, /* Option < & str > */
	"mode" TEXT DEFAULT 'append', /* Option < & str > */
	"key_columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"key_format" TEXT DEFAULT NULL, /* Option < & str > */
	"limit" INT DEFAULT 10, /* Option < i32 > */
	"start_offset" bigint DEFAULT -2 /* Option < i64 > */
) RETURNS TABLE (
	"partition" INT,  /* i32 */
	"offset" bigint,  /* i64 */
	"action" TEXT,  /* String */
	"row" jsonb,  /* Option < JsonbText > */
	"error" TEXT,  /* Option < String > */
	"sqlstate" TEXT  /* Option < String > */
)
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kafka_preview_v070_wrapper';

CREATE FUNCTION pipeline_kinesis."preview"(
	"endpoint" TEXT, /* Option < & str > */
	"stream" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT 'text', /* Option < & str > */
	"delimiter" TEXT DEFAULT NULL, /* Option < & str > */
	"quote" TEXT DEFAULT NULL, /* Option < & str > */
	"escape" TEXT DEFAULT NULL, /* Option < & str > */
	"columns" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"metadata" jsonb DEFAULT NULL, /* Option < JsonbArg > */
	"transform" TEXT DEFAULT NULL, /* Option < & str > */
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
	"action" TEXT,  /* String */
	"row" jsonb,  /* Option < JsonbText > */
	"error" TEXT,  /* Option < String > */
	"sqlstate" TEXT  /* Option < String > */
)
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_preview_v070_wrapper';

CREATE FUNCTION pipeline_kinesis."preview"(
	"consumer_id" INT, /* Option < i32 > */
	"limit" INT DEFAULT 10, /* Option < i32 > */
	"start_offset" INT DEFAULT NULL, /* Option < i32 > */
	"start_time" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS TABLE (
	"shard_id" TEXT,  /* String */
	"sequence_number" TEXT,  /* String */
	"sub_sequence" bigint,  /* Option < i64 > */
	"action" TEXT,  /* String */
	"row" jsonb,  /* Option < JsonbText > */
	"error" TEXT,  /* Option < String > */
	"sqlstate" TEXT  /* Option < String > */
)
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_preview_consumer_wrapper';

-- The privileges of the old functions, on the new ones (NULL: the defaults, nothing to do).
DO $$
DECLARE
    r record;
    g record;
BEGIN
    FOR r IN SELECT j ->> 'name' AS name, ARRAY(SELECT pg_catalog.json_array_elements_text(j -> 'acl'))::aclitem[] AS acl
             FROM pg_catalog.json_array_elements(pg_catalog.current_setting('pi_upgrade_070.acl')::json) j
             WHERE pg_catalog.json_typeof(j -> 'acl') = 'array' LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', r.name);
        FOR g IN SELECT a.grantee, a.is_grantable FROM pg_catalog.aclexplode(r.acl) a WHERE a.privilege_type = 'EXECUTE' LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s', r.name,
                CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END,
                CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END LOOP;
END $$;

-- consume_begin (issue 24.2): the defaults of a new consumer, which \df shows as NULL (an existing
-- consumer keeps its stored settings for every argument not given).
COMMENT ON FUNCTION pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, integer, text, jsonb, text, integer, text[], jsonb, text, text, text[], text, timestamptz) IS
'Starts (or updates and restarts) the consumer of topic into relation; returns its id. A new consumer gets these defaults for the arguments not given: format text, batchsize 100000, maxbytes 32000000, parallelism 1, timeout 250, on_error dead_letter, mode append, starting at the end of each partition. An existing consumer keeps its stored settings for every argument not given (NULL); a NOTICE names what changed. transform names a function with its argument types, e.g. ''f(pipeline_kafka.message[])''.';
COMMENT ON FUNCTION pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer, timestamptz, integer, integer, jsonb, text, integer, text[], jsonb, text, text, text[], text) IS
'Starts (or updates and restarts) the consumer of stream at endpoint into relation; returns its id. A new consumer gets these defaults for the arguments not given: format text, batchsize 10000, parallelism 1, timeout 250, poll_interval 200, on_error dead_letter, mode append, reading from now on (LATEST). An existing consumer keeps its stored settings for every argument not given (NULL); a NOTICE names what changed. transform names a function with its argument types, e.g. ''f(pipeline_kinesis.record[])''.';
COMMENT ON FUNCTION pipeline_kafka.consume_begin_stream_partitioned(text, text, text, text, text, integer, integer, integer, integer, bigint, text, text, integer) IS
'Starts (or updates and restarts) the consumer of topic whose message keys name their target relations; returns its id. A new consumer gets these defaults for the arguments not given: format text, batchsize 100000, maxbytes 32000000, parallelism 1, timeout 250, on_error dead_letter, starting at the end of each partition. An existing consumer keeps its stored settings for every argument not given (NULL); a NOTICE names what changed.';
COMMENT ON FUNCTION pipeline_kafka.preview(integer, integer, bigint) IS
'What the next messages of consumer consumer_id would become in its relation with its stored settings, without writing anything: from its stored offsets (start_offset NULL) or start_offset (-2 beginning, -1 end, n). One row per row a message became; action says what happened (inserted, replaced, deleted, skipped, error).';
COMMENT ON FUNCTION pipeline_kinesis.preview(integer, integer, integer, timestamptz) IS
'What the next records of consumer consumer_id would become in its relation with its stored settings, without writing anything: from TRIM_HORIZON (start_offset NULL or -2), LATEST (-1) or start_time. One row per row a record became; action says what happened (inserted, replaced, deleted, skipped, error).';

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



-- ---------------------------------------------------------------------------------------------
-- Other
-- ---------------------------------------------------------------------------------------------
