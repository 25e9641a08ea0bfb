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
FROM (VALUES ('pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, integer, text, jsonb, text, integer, text[], jsonb, text, text, text[], text, timestamptz, text)', 'pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, integer, text, jsonb, text, integer, text[], jsonb, text, text, text[], text, timestamptz)'),
    ('pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer, timestamptz, integer, integer, jsonb, text, integer, text[], jsonb, text, text, text[], text, text)', 'pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer, timestamptz, integer, integer, jsonb, text, integer, text[], jsonb, text, text, text[], text)')) f(name, old)
JOIN pg_catalog.pg_proc p ON p.oid = f.old::pg_catalog.regprocedure;

DROP FUNCTION pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, integer, text, jsonb, text, integer, text[], jsonb, text, text, text[], text, timestamptz);
DROP FUNCTION pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer, timestamptz, integer, integer, jsonb, text, integer, text[], jsonb, text, text, text[], text);

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
	"schema_registry" TEXT DEFAULT NULL /* Option < & str > */
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
	"schema_registry" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_consume_begin_v080_wrapper';

COMMENT ON FUNCTION pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, integer, text, jsonb, text, integer, text[], jsonb, text, text, text[], text, timestamptz, text) IS
'Starts (or updates and restarts) the consumer of topic into relation; returns its id. A new consumer gets these defaults for the arguments not given: format text, batchsize 100000, maxbytes 32000000, parallelism 1, timeout 250, on_error dead_letter, mode append, starting at the end of each partition. An existing consumer keeps its stored settings for every argument not given (NULL); a NOTICE names what changed. transform names a function with its argument types, e.g. ''f(pipeline_kafka.message[])''. schema_registry (formats avro, protobuf, debezium-avro): the URL of a registry added with add_schema_registry; NULL = the only one.';
COMMENT ON FUNCTION pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer, timestamptz, integer, integer, jsonb, text, integer, text[], jsonb, text, text, text[], text, text) IS
'Starts (or updates and restarts) the consumer of stream at endpoint into relation; returns its id. A new consumer gets these defaults for the arguments not given: format text, batchsize 10000, parallelism 1, timeout 250, poll_interval 200, on_error dead_letter, mode append, reading from now on (LATEST). An existing consumer keeps its stored settings for every argument not given (NULL); a NOTICE names what changed. transform names a function with its argument types, e.g. ''f(pipeline_kinesis.record[])''. schema_registry (formats avro, protobuf, debezium-avro): the URL of a registry added with add_schema_registry; NULL = the only one.';

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



-- ---------------------------------------------------------------------------------------------
-- Issue 21: emit_tuple Avro
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Issue 23: faster than COPY
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Issue 22: Citus
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Other
-- ---------------------------------------------------------------------------------------------
