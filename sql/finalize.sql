-- Objects that depend on the extension's functions: views, grants, revocations. Runs after every
-- function is created (pgrx `finalize`). Tables are in catalog.sql; changes after a release also go
-- into that release's upgrade script (pipeline_ingest--OLD--NEW.sql).

-- Brokers and endpoints are managed by superusers (they hold credentials and decide where
-- data comes from); producing is granted per role.
REVOKE EXECUTE ON FUNCTION pipeline_kafka.add_broker(text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pipeline_kafka.remove_broker(text) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION pipeline_kafka.produce_message(text, bytea, integer, bytea, jsonb, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pipeline_kafka.produce_message(text, text, integer, text, jsonb, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pipeline_kafka.emit_tuple() FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION pipeline_kinesis.add_endpoint(text, text, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pipeline_kinesis.remove_endpoint(text) FROM PUBLIC;

-- The views below read the consumers table as their owner, past its row-level security, and filter
-- the rows for the caller with pg_has_role: each is a security_barrier, so that no function in the
-- caller's WHERE (a cheap "leaky" one that prints its argument) sees a row before that filter.

-- One row per consumer and partition: where it is, how far behind, what it did, what went wrong.
CREATE VIEW pipeline_kafka.consumer_status WITH (security_barrier) AS
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
       s.high_watermark,
       greatest(s.high_watermark - o."offset", 0) AS lag,
       coalesce(s.messages, 0) AS messages,
       coalesce(s.rows, 0) AS rows,
       coalesce(s.dead_letters, 0) AS dead_letters,
       coalesce(s.batches, 0) AS batches,
       s.last_batch_at,
       c.last_error,
       c.last_error_at
FROM pipeline_kafka.consumers c
LEFT JOIN parts p ON p.consumer_id = c.id
LEFT JOIN pipeline_kafka.offsets o ON o.consumer_id = p.consumer_id AND o."partition" = p."partition"
LEFT JOIN s ON s.consumer_id = p.consumer_id AND s."partition" = p."partition"
LEFT JOIN pg_catalog.pg_stat_activity a
       ON a.pid = s.worker_pid AND a.backend_type = 'pipeline_kafka consumer' AND c.enabled
-- the view reads the table as its owner, past row-level security: the same rule, for the caller
WHERE pg_catalog.pg_has_role(c.owner, 'USAGE');
GRANT SELECT ON pipeline_kafka.consumer_status TO PUBLIC;

-- pipeline_kafka's lag view, same columns: per consumer and partition, "offset" is the next offset
-- to read (as stored with the rows), high_watermark the partition's end (from the running worker,
-- else asked from the brokers for about a second at most: NULL when they do not answer).
CREATE VIEW pipeline_kafka.consumer_lag WITH (security_barrier) AS
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


-- One row per Kinesis consumer and shard its workers know (seqnums); a consumer with no shard yet
-- has one row with NULL shard columns. shard_status() publishes a shard under the number that
-- ends its id (shardId-000000000003: 3) when that fits an int. skipped_records (last, so that
-- queries of the earlier columns by position keep working): KPL user records skipped for lying
-- outside their shard's hash key range (config kpl_records_outside_shard).
CREATE VIEW pipeline_kinesis.consumer_status WITH (security_barrier) AS
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
       c.last_error_at,
       coalesce(s.skipped_records, 0) AS skipped_records
FROM pipeline_kinesis.consumers c
LEFT JOIN q ON q.consumer_id = c.id
LEFT JOIN s ON s.consumer_id = q.consumer_id AND s.shard = q.status_key
LEFT JOIN pg_catalog.pg_stat_activity a
       ON a.pid = s.worker_pid AND a.backend_type = 'pipeline_kinesis consumer' AND c.enabled
-- the view reads the table as its owner, past row-level security: the same rule, for the caller
WHERE pg_catalog.pg_has_role(c.owner, 'USAGE');
GRANT SELECT ON pipeline_kinesis.consumer_status TO PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- 0.7.0 (issue 24.7 / 24.8 / 24.9): the outbox, produce_message, emit_tuple
-- ---------------------------------------------------------------------------------------------
COMMENT ON FUNCTION pipeline_kafka.produce_message(text, text, integer, text, jsonb, timestamptz) IS
    'Produces a text message (and text key), sent as their UTF-8 bytes, to the topic if and only if the transaction commits; returns its outbox id. An untyped literal resolves to this version: write ''\x41''::bytea to send bytes.';

-- Drops the pending messages of a topic (one that will never exist, say): superusers only unless
-- granted; logged.
REVOKE EXECUTE ON FUNCTION pipeline_kafka.outbox_discard(text) FROM PUBLIC;
COMMENT ON FUNCTION pipeline_kafka.outbox_discard(text) IS
    'Deletes the messages of a topic waiting in the outbox (not moved to outbox_dead_letters) and clears its delivery error; returns how many. Superusers only unless granted; logged with the role, topic and count.';

-- emit_tuple's arguments are checked when its trigger is created (CREATE [OR REPLACE] TRIGGER),
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
