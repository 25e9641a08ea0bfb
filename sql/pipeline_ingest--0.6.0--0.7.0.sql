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

-- 24.7: one word for a Kafka message's value: the outbox tables' `message` column is `value`, as in
-- pipeline_kafka.dead_letters, the pipeline_kafka.message type and Kafka itself (Kinesis keeps
-- `data`, its own name). The producer reads and writes the column by its new name.
ALTER TABLE pipeline_kafka.outbox RENAME COLUMN message TO value;
ALTER TABLE pipeline_kafka.outbox_dead_letters RENAME COLUMN message TO value;

-- 24.7: outbox_status lists only topics with messages pending.
CREATE OR REPLACE VIEW pipeline_kafka.outbox_status AS
SELECT o.topic,
       o.pending,
       o.oldest,
       clock_timestamp() - o.oldest AS oldest_age,
       e.last_error,
       e.last_error_at
FROM (SELECT topic, count(*) AS pending, min(created_at) AS oldest
      FROM pipeline_kafka.outbox GROUP BY topic) AS o
LEFT JOIN pipeline_kafka.producer_errors AS e USING (topic);

-- 24.7: outbox_discard (as pgrx generates it), superusers only unless granted.
CREATE  FUNCTION pipeline_kafka."outbox_discard"(
	"topic" TEXT /* Option < & str > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'outbox_discard_wrapper';
REVOKE EXECUTE ON FUNCTION pipeline_kafka.outbox_discard(text) FROM PUBLIC;
COMMENT ON FUNCTION pipeline_kafka.outbox_discard(text) IS
    'Deletes the messages of a topic waiting in the outbox (not moved to outbox_dead_letters) and clears its delivery error; returns how many. Superusers only unless granted; logged with the role, topic and count.';

-- 24.9: emit_tuple's arguments are checked when its trigger is created (CREATE [OR REPLACE] TRIGGER),
-- with the errors and SQLSTATEs the trigger raises when it fires (09000, 42703); the trigger
-- still checks them when it fires (a key column dropped or renamed later, event triggers off).
CREATE FUNCTION pipeline_kafka.emit_tuple_check() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    args text[];
    rest bytea;
    cut integer;
    part text;
    keycol text;
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
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple needs a topic: emit_tuple(''topic'' [, ''partition'' [, ''key_column'']])'
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
        IF t.tgnargs > 3 THEN
            RAISE EXCEPTION 'pipeline_kafka.emit_tuple takes at most three arguments: topic, partition, key column'
                USING ERRCODE = '09000', DETAIL = what;
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
-- Event triggers run their function whatever its EXECUTE privilege: nobody needs to call it.
REVOKE EXECUTE ON FUNCTION pipeline_kafka.emit_tuple_check() FROM PUBLIC;
COMMENT ON FUNCTION pipeline_kafka.emit_tuple_check() IS
    'Event trigger function: refuses a CREATE TRIGGER of pipeline_kafka.emit_tuple whose arguments or timing the trigger would refuse when it fires (09000, 42703).';
CREATE EVENT TRIGGER pipeline_kafka_emit_tuple_check ON ddl_command_end
    WHEN TAG IN ('CREATE TRIGGER')
    EXECUTE FUNCTION pipeline_kafka.emit_tuple_check();
COMMENT ON EVENT TRIGGER pipeline_kafka_emit_tuple_check IS
    'Checks the arguments of pipeline_kafka.emit_tuple triggers when they are created.';

-- 24.8: produce_message for a text message and key, sent as their UTF-8 bytes (as pgrx generates it).
CREATE  FUNCTION pipeline_kafka."produce_message"(
	"topic" TEXT, /* Option < & str > */
	"message" TEXT, /* Option < & str > */
	"partition" INT DEFAULT NULL, /* Option < i32 > */
	"key" TEXT DEFAULT NULL, /* Option < & str > */
	"headers" jsonb DEFAULT NULL, /* Option < JsonbArg > */
	"timestamp" timestamp with time zone DEFAULT NULL /* Option < pgrx :: datum :: TimestampWithTimeZone > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'produce_message_text_wrapper';
REVOKE EXECUTE ON FUNCTION pipeline_kafka.produce_message(text, text, integer, text, jsonb, timestamptz) FROM PUBLIC;
-- An untyped literal (produce_message('t', 'x')) now resolves to the text version: the roles
-- granted the bytea version get this one too, so their calls keep working after the update.
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT a.grantee::pg_catalog.regrole::text AS grantee, a.is_grantable
        FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
        WHERE p.oid = 'pipeline_kafka.produce_message(text, bytea, integer, bytea, jsonb, timestamptz)'::pg_catalog.regprocedure
          AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION pipeline_kafka.produce_message(text, text, integer, text, jsonb, timestamptz) TO %s%s',
                                  g.grantee, CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;
COMMENT ON FUNCTION pipeline_kafka.produce_message(text, text, integer, text, jsonb, timestamptz) IS
    'Produces a text message (and text key), sent as their UTF-8 bytes, to the topic if and only if the transaction commits; returns its outbox id. An untyped literal resolves to this version: write ''\x41''::bytea to send bytes.';



-- ---------------------------------------------------------------------------------------------
-- Issue 24.6: retry_dead_letters
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Issue 24.11 / 24.12 / 24.13: comments, Kafka and Kinesis alike, credentials
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Other
-- ---------------------------------------------------------------------------------------------
