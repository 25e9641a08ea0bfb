-- pipeline_ingest 0.7.0 -> 0.8.0 (ALTER EXTENSION pipeline_ingest UPDATE).
-- Every schema change of 0.8.0 is here as well as in catalog.sql / finalize.sql / the generated
-- function definitions, so an upgraded database ends up with the same schema as a fresh one
-- (tests/e2e/test_upgrade.py compares them). A released script is never edited afterwards.
-- 0.8.0: what real Kafka estates send (issue 21), faster than COPY (issue 23), Citus (issue 22);
-- each section names the item it answers.

\echo Use "ALTER EXTENSION pipeline_ingest UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- Issue 21: schema registries, formats avro / protobuf (consume_begin parameters)
-- ---------------------------------------------------------------------------------------------

-- A role's EXECUTE privileges on the 0.7.0 consume_begin functions (README "Restricting consumers
-- to chosen roles") pass to the new ones (with schema_registry), as 0.7.0's script did.
SELECT pg_catalog.set_config('pi_upgrade_080.acl', coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
           'name', f.name, 'acl', p.proacl::text[]))::text, '[]'), true)
FROM (VALUES ('pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, integer, text, jsonb, text, integer, text[], jsonb, text, text, text[], text, timestamptz, text, boolean)', 'pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, integer, text, jsonb, text, integer, text[], jsonb, text, text, text[], text, timestamptz)'),
    ('pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer, timestamptz, integer, integer, jsonb, text, integer, text[], jsonb, text, text, text[], text, text, boolean)', 'pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer, timestamptz, integer, integer, jsonb, text, integer, text[], jsonb, text, text, text[], text)'),
    ('pipeline_kafka.consume_begin_stream_partitioned(text, text, text, text, text, integer, integer, integer, integer, bigint, text, text, integer, text)', 'pipeline_kafka.consume_begin_stream_partitioned(text, text, text, text, text, integer, integer, integer, integer, bigint, text, text, integer)'),
    ('pipeline_kafka.preview(text, text, text, text, text, text, text[], jsonb, text, text, text[], text, integer, bigint, text)', 'pipeline_kafka.preview(text, text, text, text, text, text, text[], jsonb, text, text, text[], text, integer, bigint)'),
    ('pipeline_kinesis.preview(text, text, text, text, text, text, text, text[], jsonb, text, text, text[], text, integer, integer, timestamptz, text)', 'pipeline_kinesis.preview(text, text, text, text, text, text, text, text[], jsonb, text, text, text[], text, integer, integer, timestamptz)')) f(name, old)
JOIN pg_catalog.pg_proc p ON p.oid = f.old::pg_catalog.regprocedure;

DROP FUNCTION pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, integer, text, jsonb, text, integer, text[], jsonb, text, text, text[], text, timestamptz);
DROP FUNCTION pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer, timestamptz, integer, integer, jsonb, text, integer, text[], jsonb, text, text, text[], text);
DROP FUNCTION pipeline_kafka.consume_begin_stream_partitioned(text, text, text, text, text, integer, integer, integer, integer, bigint, text, text, integer);
DROP FUNCTION pipeline_kafka.preview(text, text, text, text, text, text, text[], jsonb, text, text, text[], text, integer, bigint);
DROP FUNCTION pipeline_kinesis.preview(text, text, text, text, text, text, text, text[], jsonb, text, text, text[], text, integer, integer, timestamptz);

CREATE TABLE pipeline_kafka.schema_registries (
    url    text PRIMARY KEY CHECK (url ~ '^https?://'),
    config jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object')
);
REVOKE ALL ON pipeline_kafka.schema_registries FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.schema_registries', '');
COMMENT ON TABLE pipeline_kafka.schema_registries IS
'schema registries (Confluent-compatible API) that consumers of the formats avro, protobuf and debezium-avro read schemas from; config holds credentials and TLS settings: superusers only';

ALTER TABLE pipeline_kafka.consumers ADD COLUMN schema_registry text;
ALTER TABLE pipeline_kinesis.consumers ADD COLUMN schema_registry text;
-- schema evolution (issue 21): a new field of a later schema becomes a new column
ALTER TABLE pipeline_kafka.consumers ADD COLUMN auto_evolve boolean NOT NULL DEFAULT false;
ALTER TABLE pipeline_kinesis.consumers ADD COLUMN auto_evolve boolean NOT NULL DEFAULT false;
-- avro (issue 21's Avro item): the formats and key formats a consumer row may hold (all of issue
-- 21's at once, so the Protobuf and Debezium items need no second change of the same checks).
ALTER TABLE pipeline_kafka.consumers
    DROP CONSTRAINT consumers_format_check,
    ADD CONSTRAINT consumers_format_check CHECK (format IN ('text', 'csv', 'json', 'raw', 'avro', 'protobuf', 'debezium', 'debezium-avro')),
    DROP CONSTRAINT consumers_key_format_check,
    ADD CONSTRAINT consumers_key_format_check CHECK (key_format IN ('json', 'csv', 'text', 'avro', 'protobuf'));
ALTER TABLE pipeline_kinesis.consumers
    DROP CONSTRAINT consumers_format_check,
    ADD CONSTRAINT consumers_format_check CHECK (format IN ('text', 'csv', 'json', 'raw', 'avro', 'protobuf', 'debezium', 'debezium-avro')),
    DROP CONSTRAINT consumers_key_format_check,
    ADD CONSTRAINT consumers_key_format_check CHECK (key_format IN ('json', 'csv', 'text', 'avro', 'protobuf'));

CREATE FUNCTION pipeline_kafka."add_schema_registry"(
	"url" TEXT, /* Option < & str > */
	"config" jsonb DEFAULT NULL /* Option < JsonbArg > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'add_schema_registry_wrapper';

CREATE FUNCTION pipeline_kafka."remove_schema_registry"(
	"url" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'remove_schema_registry_wrapper';

REVOKE EXECUTE ON FUNCTION pipeline_kafka.add_schema_registry(text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pipeline_kafka.remove_schema_registry(text) FROM PUBLIC;
COMMENT ON FUNCTION pipeline_kafka.add_schema_registry(text, jsonb) IS
'add a schema registry (its Confluent-compatible API URL) with optional credentials and TLS settings in config (basic_auth or username/password, bearer_token, ca_file, insecure, timeout_ms); superusers only unless granted';
COMMENT ON FUNCTION pipeline_kafka.remove_schema_registry(text) IS
'remove a schema registry; refused while a consumer of this database uses it';

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
	"start_time" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"schema_registry" TEXT DEFAULT NULL, /* Option < & str > */
	"auto_evolve" bool DEFAULT NULL /* Option < bool > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kafka_consume_begin_v080_wrapper';

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
	"key_format" TEXT DEFAULT NULL, /* Option < & str > */
	"schema_registry" TEXT DEFAULT NULL, /* Option < & str > */
	"auto_evolve" bool DEFAULT NULL /* Option < bool > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_consume_begin_v080_wrapper';

COMMENT ON FUNCTION pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, integer, text, jsonb, text, integer, text[], jsonb, text, text, text[], text, timestamptz, text, boolean) IS
'Starts (or updates and restarts) the consumer of topic into relation; returns its id. A new consumer gets these defaults for the arguments not given: format text, batchsize 100000, maxbytes 32000000, parallelism 1, timeout 250, on_error dead_letter, mode append, starting at the end of each partition. An existing consumer keeps its stored settings for every argument not given (NULL); a NOTICE names what changed. transform names a function with its argument types, e.g. ''f(pipeline_kafka.message[])''. schema_registry (formats avro, protobuf, debezium-avro): the URL of a registry added with add_schema_registry; NULL = the only one. auto_evolve (formats avro, protobuf): a field a later schema adds that the table lacks becomes a new nullable column (added as the table''s owner); NULL = keep the stored setting (false for a new consumer).';
COMMENT ON FUNCTION pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer, timestamptz, integer, integer, jsonb, text, integer, text[], jsonb, text, text, text[], text, text, boolean) IS
'Starts (or updates and restarts) the consumer of stream at endpoint into relation; returns its id. A new consumer gets these defaults for the arguments not given: format text, batchsize 10000, parallelism 1, timeout 250, poll_interval 200, on_error dead_letter, mode append, reading from now on (LATEST). An existing consumer keeps its stored settings for every argument not given (NULL); a NOTICE names what changed. transform names a function with its argument types, e.g. ''f(pipeline_kinesis.record[])''. schema_registry (formats avro, protobuf, debezium-avro): the URL of a registry added with add_schema_registry; NULL = the only one. auto_evolve (formats avro, protobuf): a field a later schema adds that the table lacks becomes a new nullable column (added as the table''s owner); NULL = keep the stored setting (false for a new consumer).';

CREATE FUNCTION pipeline_kafka."consume_begin_stream_partitioned"(
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
	"max_dead_letters" INT DEFAULT NULL, /* Option < i32 > */
	"schema_registry" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'consume_begin_stream_partitioned_v080_wrapper';
COMMENT ON FUNCTION pipeline_kafka.consume_begin_stream_partitioned(text, text, text, text, text, integer, integer, integer, integer, bigint, text, text, integer, text) IS
'Starts (or updates and restarts) the consumer of topic whose message keys name their target relations; returns its id. A new consumer gets these defaults for the arguments not given: format text, batchsize 100000, maxbytes 32000000, parallelism 1, timeout 250, on_error dead_letter, starting at the end of each partition. An existing consumer keeps its stored settings for every argument not given (NULL); a NOTICE names what changed. schema_registry (formats avro, protobuf, debezium-avro): the URL of a registry added with add_schema_registry; NULL = the only one.';

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
	"start_offset" bigint DEFAULT -2, /* Option < i64 > */
	"schema_registry" TEXT DEFAULT NULL /* Option < & str > */
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
AS 'MODULE_PATHNAME', 'kafka_preview_v080_wrapper';
COMMENT ON FUNCTION pipeline_kafka.preview(text, text, text, text, text, text, text[], jsonb, text, text, text[], text, integer, bigint, text) IS 'what the next messages of a topic would become in a table with these consume_begin options, written and rolled back: rows or errors, nothing stored; schema_registry: as consume_begin''s';

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
	"start_time" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"schema_registry" TEXT DEFAULT NULL /* Option < & str > */
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
AS 'MODULE_PATHNAME', 'kinesis_preview_v080_wrapper';
COMMENT ON FUNCTION pipeline_kinesis.preview(text, text, text, text, text, text, text, text[], jsonb, text, text, text[], text, integer, integer, timestamptz, text) IS 'what the next records of a Kinesis stream would become in a table with these consume_begin options, written and rolled back: rows or errors, nothing stored; schema_registry: as consume_begin''s';

-- The privileges of the old functions, on the new ones (NULL: the defaults, nothing to do).
DO $$
DECLARE
    r record;
    g record;
BEGIN
    FOR r IN SELECT j ->> 'name' AS name, ARRAY(SELECT pg_catalog.json_array_elements_text(j -> 'acl'))::aclitem[] AS acl
             FROM pg_catalog.json_array_elements(pg_catalog.current_setting('pi_upgrade_080.acl')::json) j
             WHERE pg_catalog.json_typeof(j -> 'acl') = 'array' LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', r.name);
        FOR g IN SELECT a.grantee, a.is_grantable FROM pg_catalog.aclexplode(r.acl) a WHERE a.privilege_type = 'EXECUTE' LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s', r.name,
                CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END,
                CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END LOOP;
END $$;



-- ---------------------------------------------------------------------------------------------
-- Issue 21: Debezium change events
-- ---------------------------------------------------------------------------------------------

-- consumers may store every format of 0.8.0 (the same list for the avro/protobuf section: the
-- constraint is dropped and added again, so running both is harmless) and mode 'replicate'
-- (format debezium with truncate events applied)
ALTER TABLE pipeline_kafka.consumers DROP CONSTRAINT consumers_format_check,
    ADD CONSTRAINT consumers_format_check CHECK (format IN ('text', 'csv', 'json', 'raw', 'avro', 'protobuf', 'debezium', 'debezium-avro'));
ALTER TABLE pipeline_kinesis.consumers DROP CONSTRAINT consumers_format_check,
    ADD CONSTRAINT consumers_format_check CHECK (format IN ('text', 'csv', 'json', 'raw', 'avro', 'protobuf', 'debezium', 'debezium-avro'));
ALTER TABLE pipeline_kafka.consumers DROP CONSTRAINT consumers_mode_check,
    ADD CONSTRAINT consumers_mode_check CHECK (mode IN ('append', 'upsert', 'replicate'));
ALTER TABLE pipeline_kinesis.consumers DROP CONSTRAINT consumers_mode_check,
    ADD CONSTRAINT consumers_mode_check CHECK (mode IN ('append', 'upsert', 'replicate'));



-- ---------------------------------------------------------------------------------------------
-- Issue 21: emit_tuple Avro
-- ---------------------------------------------------------------------------------------------
-- emit_tuple's fourth argument, the format ('json' or 'avro'): checked at CREATE TRIGGER.
CREATE OR REPLACE FUNCTION pipeline_kafka.emit_tuple_check() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    args text[];
    rest bytea;
    cut integer;
    part text;
    keycol text;
    badcol text;
    nul constant bytea := decode('00', 'hex');
    what text;
BEGIN
    FOR t IN
        SELECT tg.tgname, tg.tgrelid, tg.tgtype::integer AS tgtype, tg.tgnargs, tg.tgargs
        FROM pg_event_trigger_ddl_commands() AS c
        JOIN pg_trigger AS tg ON tg.oid = c.objid
        WHERE c.classid = 'pg_catalog.pg_trigger'::regclass
          AND tg.tgfoid = 'pipeline_kafka.emit_tuple()'::regprocedure
    LOOP
        what := format('trigger "%s" on %s', t.tgname, t.tgrelid::regclass);
        args := '{}';
        rest := t.tgargs;
        FOR i IN 1 .. t.tgnargs LOOP
            cut := position(nul IN rest);
            args := args || convert_from(substring(rest FROM 1 FOR cut - 1), current_setting('server_encoding'));
            rest := substring(rest FROM cut + 1);
        END LOOP;
        IF t.tgtype & (2 | 64) <> 0 THEN
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple must be used in an AFTER trigger'
                USING ERRCODE = '09000', DETAIL = what;
        END IF;
        IF t.tgtype & 32 <> 0 THEN
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple cannot be used in a TRUNCATE trigger'
                USING ERRCODE = '09000', DETAIL = what;
        END IF;
        IF t.tgtype & 1 = 0 THEN
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple must be used in a FOR EACH ROW trigger'
                USING ERRCODE = '09000', DETAIL = what;
        END IF;
        IF coalesce(args[1], '') = '' THEN
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple needs a topic: emit_tuple(''topic'' [, ''partition'' [, ''key_column'' [, ''json'' | ''avro'']]])'
                USING ERRCODE = '09000', DETAIL = what;
        END IF;
        -- as ingest_core::broker::check_topic
        IF octet_length(args[1]) > 249 THEN
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple: topic name is longer than 249 bytes'
                USING ERRCODE = '09000', DETAIL = what;
        END IF;
        IF args[1] !~ '^[A-Za-z0-9._-]+$' THEN
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple: topic name "%" is not valid: Kafka allows letters, digits, ''.'', ''_'' and ''-''', args[1]
                USING ERRCODE = '09000', DETAIL = what;
        END IF;
        IF args[1] IN ('.', '..') THEN
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple: "%" is not a legal Kafka topic name', args[1]
                USING ERRCODE = '09000', DETAIL = what;
        END IF;
        IF t.tgnargs > 4 THEN
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple takes at most four arguments: topic, partition, key column, format'
                USING ERRCODE = '09000', DETAIL = what;
        END IF;
        -- 0.8.0: the format, json (the default) or avro (through the only schema registry)
        IF coalesce(args[4], '') NOT IN ('', 'json', 'avro') THEN
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple: format must be ''json'' or ''avro'', got "%"', args[4]
                USING ERRCODE = '09000', DETAIL = what;
        END IF;
        IF args[4] = 'avro' THEN
            SELECT attname INTO badcol FROM pg_attribute
            WHERE attrelid = t.tgrelid AND attnum > 0 AND NOT attisdropped
              AND attname !~ '^[A-Za-z_][A-Za-z0-9_]*$'
            ORDER BY attnum LIMIT 1;
            IF badcol IS NOT NULL THEN
                RAISE EXCEPTION 'pipeline_kafka.emit_tuple: column "%" of "%" is not a legal Avro field name', badcol, t.tgrelid::regclass
                    USING ERRCODE = '22023', DETAIL = what,
                          HINT = 'Avro field names are letters, digits and ''_'', not starting with a digit; rename the column or use the json format.';
            END IF;
        END IF;
        part := btrim(args[2], E' \t\n\r');
        IF part IS NOT NULL AND part NOT IN ('', '-1')
           AND NOT (part ~ '^\+?[0-9]{1,10}$' AND part::numeric <= 2147483647) THEN
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple: partition must be an integer >= 0 or -1, got "%"', part
                USING ERRCODE = '09000', DETAIL = what;
        END IF;
        keycol := nullif(args[3], '');
        IF keycol IS NOT NULL AND NOT EXISTS (
            SELECT FROM pg_attribute
            WHERE attrelid = t.tgrelid AND attname = keycol AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple: key column "%" does not exist', keycol
                USING ERRCODE = '42703', DETAIL = what;
        END IF;
        IF t.tgtype & 8 <> 0 AND keycol IS NULL THEN
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple on DELETE sends a tombstone and needs a key column'
                USING ERRCODE = '09000', DETAIL = what;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION pipeline_kafka.emit_tuple_check() IS
    'Event trigger function: refuses a CREATE TRIGGER of pipeline_kafka.emit_tuple whose arguments or timing the trigger would refuse when it fires (09000, 42703; 22023 for a column name Avro cannot carry with the avro format).';
COMMENT ON FUNCTION pipeline_kafka.emit_tuple() IS 'row trigger: sends each new row as JSON, or as Avro through the schema registry (a tombstone on DELETE), to the topic named by its arguments (topic, partition, key column, format ''json'' or ''avro'') when the transaction commits';



-- ---------------------------------------------------------------------------------------------
-- Issue 23: faster than COPY
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Issue 22: Citus
-- ---------------------------------------------------------------------------------------------

CREATE TABLE pipeline_kafka.spread (
    consumer_id integer PRIMARY KEY REFERENCES pipeline_kafka.consumers (id) ON DELETE CASCADE,
    slot        integer NOT NULL,
    slots       integer NOT NULL,
    CHECK (slots > 0 AND slot >= 0 AND slot < slots)
);
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.spread', '');
GRANT SELECT ON pipeline_kafka.spread TO PUBLIC;
COMMENT ON TABLE pipeline_kafka.spread IS 'this node''s share of a consumer spread over the nodes of a Citus cluster: partition p is read here when p mod slots = slot; written once by consume_spread; readable by everyone, as offsets';

CREATE FUNCTION pipeline_kafka."consume_spread"(
	"topic" TEXT, /* Option < & str > */
	"relation" TEXT /* Option < & str > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'consume_spread_wrapper';
COMMENT ON FUNCTION pipeline_kafka.consume_spread(text, text) IS 'run on every node of a Citus cluster: this node''s consumer of a topic into a table reads only its share of the partitions (its slot among the nodes, stored once); returns the slot';


-- ---------------------------------------------------------------------------------------------
-- Other
-- ---------------------------------------------------------------------------------------------

-- consumer_status (both systems): a plain owner's running consumer showed 'starting' and no
-- worker_pid (the join on pg_stat_activity.backend_type, which is NULL to such callers).
CREATE OR REPLACE VIEW pipeline_kafka.consumer_status WITH (security_barrier) AS
WITH s AS (SELECT * FROM pipeline_kafka.partition_status()),
     parts AS (SELECT consumer_id, "partition" FROM pipeline_kafka.offsets
               UNION SELECT consumer_id, "partition" FROM s)
SELECT c.id AS consumer_id,
       c.topic,
       c.relation,
       CASE WHEN NOT c.enabled THEN 'stopped'
            WHEN a.pid IS NULL AND starts_with(c.last_error, 'waiting for a worker') THEN 'waiting'
            WHEN a.pid IS NULL THEN 'starting'
            WHEN c.last_error IS NOT NULL AND NOT starts_with(c.last_error, 'waiting for a worker') THEN 'error'
            ELSE 'running' END AS state,
       a.pid AS worker_pid,
       p."partition",
       o."offset" AS next_offset,
       CASE WHEN a.pid IS NOT NULL THEN s.high_watermark END AS high_watermark,
       -- (greatest() alone would turn an unknown watermark into no lag)
       CASE WHEN a.pid IS NOT NULL AND s.high_watermark IS NOT NULL
            THEN greatest(s.high_watermark - o."offset", 0) END AS lag,
       coalesce(s.messages, 0) AS messages,
       coalesce(s.rows, 0) AS rows,
       coalesce(s.dead_letters, 0) AS dead_letters,
       coalesce(s.batches, 0) AS batches,
       s.last_batch_at,
       c.last_error,
       c.last_error_at,
       CASE WHEN s.dead_letter_run IS NOT NULL
            THEN s.dead_letter_run || coalesce(': ' || (SELECT d.sqlstate || ' ' || d.error FROM pipeline_kafka.dead_letters d
                                                        WHERE d.consumer_id = c.id AND d."partition" = p."partition"
                                                        ORDER BY d."offset" DESC LIMIT 1), '') END AS warning,
       coalesce(s.rows_per_second, 0) AS rows_per_second,
       CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_class r WHERE r.oid = c.relation) THEN c.relation::text
            ELSE c.relname END AS relation_name
FROM pipeline_kafka.consumers c
LEFT JOIN parts p ON p.consumer_id = c.id
LEFT JOIN pipeline_kafka.offsets o ON o.consumer_id = p.consumer_id AND o."partition" = p."partition"
LEFT JOIN s ON s.consumer_id = p.consumer_id AND s."partition" = p."partition"
-- the worker still runs (pg_stat_activity shows every pid; its backend_type only to callers with
-- the privileges of the worker's role, the bootstrap superuser: a plain owner sees NULL there)
LEFT JOIN pg_catalog.pg_stat_activity a
       ON a.pid = s.worker_pid AND c.enabled
      AND coalesce(a.backend_type, 'pipeline_kafka consumer') = 'pipeline_kafka consumer'
-- the view reads the table as its owner, past row-level security: the same rule, for the caller
WHERE pg_catalog.pg_has_role(c.owner, 'USAGE');

CREATE OR REPLACE VIEW pipeline_kinesis.consumer_status WITH (security_barrier) AS
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
       CASE WHEN a.pid IS NOT NULL THEN s.millis_behind_latest END AS millis_behind_latest,
       coalesce(s.records, 0) AS records,
       coalesce(s.rows, 0) AS rows,
       coalesce(s.dead_letters, 0) AS dead_letters,
       coalesce(s.batches, 0) AS batches,
       s.last_batch_at,
       c.last_error,
       c.last_error_at,
       coalesce(s.skipped_records, 0) AS skipped_records,
       CASE WHEN s.dead_letter_run IS NOT NULL
            THEN s.dead_letter_run || coalesce(': ' || (SELECT d.sqlstate || ' ' || d.error FROM pipeline_kinesis.dead_letters d
                                                        WHERE d.consumer_id = c.id AND d.shard_id = q.shard_id
                                                        ORDER BY d.id DESC LIMIT 1), '') END AS warning,
       coalesce(s.rows_per_second, 0) AS rows_per_second,
       CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_class r WHERE r.oid = c.relation) THEN c.relation::text
            ELSE c.relname END AS relation_name
FROM pipeline_kinesis.consumers c
LEFT JOIN q ON q.consumer_id = c.id
LEFT JOIN s ON s.consumer_id = q.consumer_id AND s.shard = q.status_key
-- the worker still runs (pg_stat_activity shows every pid; its backend_type only to callers with
-- the privileges of the worker's role, the bootstrap superuser: a plain owner sees NULL there)
LEFT JOIN pg_catalog.pg_stat_activity a
       ON a.pid = s.worker_pid AND c.enabled
      AND coalesce(a.backend_type, 'pipeline_kinesis consumer') = 'pipeline_kinesis consumer'
-- the view reads the table as its owner, past row-level security: the same rule, for the caller
WHERE pg_catalog.pg_has_role(c.owner, 'USAGE');

