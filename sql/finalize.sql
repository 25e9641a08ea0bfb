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

-- Schema registries (issue 21): the server fetches from them with their credentials.
REVOKE EXECUTE ON FUNCTION pipeline_kafka.add_schema_registry(text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pipeline_kafka.remove_schema_registry(text) FROM PUBLIC;
COMMENT ON TABLE pipeline_kafka.schema_registries IS
'schema registries (Confluent-compatible API) that consumers of the formats avro, protobuf and debezium-avro read schemas from; config holds credentials and TLS settings: superusers only';
COMMENT ON FUNCTION pipeline_kafka.add_schema_registry(text, jsonb) IS
'add a schema registry (its Confluent-compatible API URL) with optional credentials and TLS settings in config (basic_auth or username/password, bearer_token, ca_file, insecure, timeout_ms); superusers only unless granted';
COMMENT ON FUNCTION pipeline_kafka.remove_schema_registry(text) IS
'remove a schema registry; refused while a consumer of this database uses it';

-- The views below read the consumers table as their owner, past its row-level security, and filter
-- the rows for the caller with pg_has_role: each is a security_barrier, so that no function in the
-- caller's WHERE (a cheap "leaky" one that prints its argument) sees a row before that filter.

-- One row per consumer and partition: where it is, how far behind, what it did, what went wrong.
-- high_watermark and lag come from the partition's running worker: NULL while it has not seen the
-- watermark yet, and when no worker runs (stopped, waiting: pipeline_kafka.consumer_lag asks the
-- brokers). Appended in 0.7.0 (queries of the earlier columns by position keep working):
-- warning (the partition's latest batches, at least 10 messages, were all or mostly dead
-- letters), rows_per_second (over the last minute), relation_name (also once it was dropped).
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
-- outside their shard's hash key range (config kpl_records_outside_shard). Appended in 0.7.0, as on
-- pipeline_kafka.consumer_status: warning, rows_per_second, relation_name; millis_behind_latest is
-- NULL until the shard's running worker knows it (and when none runs).
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
GRANT SELECT ON pipeline_kinesis.consumer_status TO PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Issue 24.11: every object of the extension describes itself (\dn+, \dT+, \df+, \d+, \ds+);
-- the README has the details. tests/e2e/test_catalog_docs.py fails on an object without a comment.
COMMENT ON SCHEMA pipeline_kafka IS 'pipeline_ingest: Kafka topics into tables exactly once, and rows out to Kafka through an outbox (README "SQL API")';
COMMENT ON SCHEMA pipeline_kinesis IS 'pipeline_ingest: Kinesis streams into tables exactly once (README "Kinesis")';

COMMENT ON TYPE pipeline_kafka.message IS 'one Kafka message as a transform function receives it in its batch (pipeline_kafka.message[]): topic, partition, offset, key, value, timestamp, headers';
COMMENT ON TYPE pipeline_kinesis.record IS 'one Kinesis (user) record as a transform function receives it in its batch (pipeline_kinesis.record[]): stream, shard_id, sequence_number, sub_sequence, partition_key, data, arrival_time';

COMMENT ON TABLE pipeline_kafka.brokers IS 'Kafka broker entries (host[:port] and librdkafka settings) every consumer and the producer of this database use; written by add_broker / remove_broker';
COMMENT ON TABLE pipeline_kafka.consumers IS 'one row per Kafka consumer (topic into relation, or stream-partitioned): its settings, owner, state and last_error; written by consume_begin / consume_end / consume_drop; visible to members of its owner';
COMMENT ON TABLE pipeline_kafka.offsets IS 'the next offset to read per consumer and partition, committed in the same transaction as the rows';
COMMENT ON TABLE pipeline_kafka.spread IS 'this node''s share of a consumer spread over the nodes of a Citus cluster: partition p is read here when p mod slots = slot; written once by consume_spread; readable by everyone, as offsets';
COMMENT ON TABLE pipeline_kafka.dead_letters IS 'Kafka messages that could not become rows, with their raw bytes, error and SQLSTATE; visible to (and deletable by) members of the consumer''s owner when written';
COMMENT ON TABLE pipeline_kafka.secrets IS 'secret client settings (passwords, keys) of broker entries and consumers, shown masked elsewhere; superusers only';
COMMENT ON TABLE pipeline_kafka.outbox IS 'messages produce_message and emit_tuple wrote, sent by the producer worker once their transaction committed and deleted once the broker acknowledged them; superusers only';
COMMENT ON TABLE pipeline_kafka.outbox_dead_letters IS 'outbox messages the broker refused as too large, moved aside so their topic goes on; visible to (and deletable by) members of the producing role';
COMMENT ON TABLE pipeline_kafka.producer_errors IS 'the last delivery error per topic, written by the producer worker and cleared by the next delivery (shown in outbox_status)';
COMMENT ON TABLE pipeline_kinesis.endpoints IS 'Kinesis endpoints: name, region, optional credentials file and URL; written by add_endpoint / remove_endpoint';
COMMENT ON TABLE pipeline_kinesis.consumers IS 'one row per Kinesis consumer (endpoint, stream into relation): its settings, owner, state and last_error; visible to members of its owner';
COMMENT ON TABLE pipeline_kinesis.seqnums IS 'the checkpoint per Kinesis consumer and shard (last sequence number, sub-sequence, finished), committed in the same transaction as the rows';
COMMENT ON TABLE pipeline_kinesis.dead_letters IS 'Kinesis user records that could not become rows, with their raw bytes, error and SQLSTATE; visible to (and deletable by) members of the consumer''s owner when written';

COMMENT ON SEQUENCE pipeline_kafka.dead_letters_id_seq IS 'ids of pipeline_kafka.dead_letters';
COMMENT ON SEQUENCE pipeline_kafka.outbox_id_seq IS 'ids of pipeline_kafka.outbox (the order messages are sent in); outbox_dead_letters keep theirs';
COMMENT ON SEQUENCE pipeline_kinesis.dead_letters_id_seq IS 'ids of pipeline_kinesis.dead_letters';

COMMENT ON VIEW pipeline_kafka.consumer_status IS 'one row per Kafka consumer and partition: state, worker, next offset, high watermark, lag, counters since the server started, last_error; the caller''s consumers only';
COMMENT ON VIEW pipeline_kafka.consumer_lag IS 'pipeline_kafka''s lag view: per consumer and partition, the next offset to read, the high watermark and the lag (NULL when unknown); the caller''s consumers only';
COMMENT ON VIEW pipeline_kafka.outbox_status IS 'per topic: messages pending in the outbox, the oldest, and the last delivery error';
COMMENT ON VIEW pipeline_kinesis.consumer_status IS 'one row per Kinesis consumer and shard: state, worker, shard state and lineage, last sequence number, millis behind latest, counters, last_error; the caller''s consumers only';

COMMENT ON FUNCTION pipeline_kafka.add_broker(text, jsonb) IS 'add a broker entry host[:port] with optional librdkafka settings; restarts the running consumers at commit';
COMMENT ON FUNCTION pipeline_kafka.remove_broker(text) IS 'remove a broker entry; restarts the running consumers at commit';
COMMENT ON FUNCTION pipeline_kafka.consume_begin() IS 'start every stopped Kafka consumer the caller may manage; returns how many';
COMMENT ON FUNCTION pipeline_kafka.consume_end(text, text) IS 'stop the consumer of a topic into a table; its offsets are kept';
COMMENT ON FUNCTION pipeline_kafka.consume_end() IS 'stop every running Kafka consumer the caller may manage; returns how many';
COMMENT ON FUNCTION pipeline_kafka.consume_drop(text, text) IS 'remove the consumer of a topic into a table with its offsets, secret settings and dead letters';
COMMENT ON FUNCTION pipeline_kafka.consume_spread(text, text) IS 'run on every node of a Citus cluster: this node''s consumer of a topic into a table reads only its share of the partitions (its slot among the nodes, stored once); returns the slot';
COMMENT ON FUNCTION pipeline_kafka.consume_end_stream_partitioned(text) IS 'stop the stream-partitioned consumer of a topic; its offsets are kept';
COMMENT ON FUNCTION pipeline_kafka.consume_drop_stream_partitioned(text) IS 'remove the stream-partitioned consumer of a topic with its offsets and dead letters';
COMMENT ON FUNCTION pipeline_kafka.seek(text, text, integer, bigint, timestamptz) IS 'move a consumer''s partitions (one or all) to an offset or a time; returns how many partitions moved';
COMMENT ON FUNCTION pipeline_kafka.preview(text, text, text, text, text, text, text[], jsonb, text, text, text[], text, integer, bigint, text) IS 'what the next messages of a topic would become in a table with these consume_begin options, written and rolled back: rows or errors, nothing stored; schema_registry: as consume_begin''s';
COMMENT ON FUNCTION pipeline_kafka.topic_watermarks(text, integer) IS 'the low and high watermark of every partition of a topic (or one), asked from the brokers';
COMMENT ON FUNCTION pipeline_kafka.consumer_watermarks() IS 'the high watermark per consumer and partition (from the running worker, else from the brokers), behind the consumer_lag view';
COMMENT ON FUNCTION pipeline_kafka.partition_status() IS 'what the workers publish per Kafka consumer and partition (worker pid, high watermark, counters, last batch), behind the consumer_status view; the caller''s consumers only';
COMMENT ON FUNCTION pipeline_kafka.produce_message(text, bytea, integer, bytea, jsonb, timestamptz) IS 'send a message to a topic when the calling transaction commits (through the outbox); returns its outbox id';
COMMENT ON FUNCTION pipeline_kafka.emit_tuple() IS 'row trigger: sends each new row as JSON, or as Avro through the schema registry (a tombstone on DELETE), to the topic named by its arguments (topic, partition, key column, format ''json'' or ''avro'') when the transaction commits';
COMMENT ON FUNCTION pipeline_kinesis.add_endpoint(text, text, text, text) IS 'name a Kinesis endpoint: region, optional credentials file and URL';
COMMENT ON FUNCTION pipeline_kinesis.remove_endpoint(text) IS 'remove a Kinesis endpoint no consumer uses';
COMMENT ON FUNCTION pipeline_kinesis.consume_begin() IS 'start every stopped Kinesis consumer the caller may manage; returns how many';
COMMENT ON FUNCTION pipeline_kinesis.consume_end(text, text, text) IS 'stop the consumer of a Kinesis stream into a table; its checkpoints are kept';
COMMENT ON FUNCTION pipeline_kinesis.consume_end() IS 'stop every running Kinesis consumer the caller may manage; returns how many';
COMMENT ON FUNCTION pipeline_kinesis.consume_drop(text, text, text) IS 'remove the consumer of a Kinesis stream into a table with its checkpoints and dead letters';
COMMENT ON FUNCTION pipeline_kinesis.preview(text, text, text, text, text, text, text, text[], jsonb, text, text, text[], text, integer, integer, timestamptz, text) IS 'what the next records of a Kinesis stream would become in a table with these consume_begin options, written and rolled back: rows or errors, nothing stored; schema_registry: as consume_begin''s';
COMMENT ON FUNCTION pipeline_kinesis.shard_status() IS 'what the workers publish per Kinesis consumer and shard (worker pid, millis behind latest, counters, last batch), behind the consumer_status view; the caller''s consumers only';

-- Issue 24.6: retrying a consumer's dead letters (executable by PUBLIC like the other consumer
-- functions: each checks that the caller may manage the consumer, 42501 otherwise).
COMMENT ON FUNCTION pipeline_kafka.retry_dead_letters(text, text, bigint) IS
    'Puts the dead letters of the consumer of topic into relation through its current settings again, oldest first (partition, offset; at most max, NULL = all), as the table''s owner, in the caller''s transaction: those that become rows leave the dead letters, the others stay with their new error. Returns how many became rows. For members of the consumer''s owner and superusers (42501 otherwise).';
COMMENT ON FUNCTION pipeline_kafka.retry_dead_letters_stream_partitioned(text, bigint) IS
    'retry_dead_letters for the stream-partitioned consumer of topic: each message goes to the table its key names now, as that table''s owner, under the consumer''s rules. Returns how many became rows.';
COMMENT ON FUNCTION pipeline_kinesis.retry_dead_letters(text, text, text, bigint) IS
    'Puts the dead letters of the consumer of stream at endpoint into relation through its current settings again, oldest first (at most max, NULL = all), as the table''s owner, in the caller''s transaction: those that become rows leave the dead letters, the others stay with their new error. Returns how many became rows. For members of the consumer''s owner and superusers (42501 otherwise).';

-- 0.7.0 (issue 24.12): pipeline_kinesis's lag view, as pipeline_kafka.consumer_lag: per consumer
-- and shard its workers know, the checkpoint (the last record consumed) and how far behind the
-- shard's newest record its worker reads. Kinesis tells the distance as time only
-- (MillisBehindLatest of the worker's last GetRecords, as shard_status() publishes it; NULL while
-- no worker reads the shard); the lag in records is known only for a shard read to its end (0).
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
-- Event triggers run their function whatever its EXECUTE privilege: nobody needs to call it.
REVOKE EXECUTE ON FUNCTION pipeline_kafka.emit_tuple_check() FROM PUBLIC;
COMMENT ON FUNCTION pipeline_kafka.emit_tuple_check() IS
    'Event trigger function: refuses a CREATE TRIGGER of pipeline_kafka.emit_tuple whose arguments or timing the trigger would refuse when it fires (09000, 42703; 22023 for a column name Avro cannot carry with the avro format).';
CREATE EVENT TRIGGER pipeline_kafka_emit_tuple_check ON ddl_command_end
    WHEN TAG IN ('CREATE TRIGGER')
    EXECUTE FUNCTION pipeline_kafka.emit_tuple_check();
COMMENT ON EVENT TRIGGER pipeline_kafka_emit_tuple_check IS
    'Checks the arguments of pipeline_kafka.emit_tuple triggers when they are created.';

-- 0.7.0: the columns consumer_status gained (issue 24.1, 24.11).
COMMENT ON COLUMN pipeline_kafka.consumer_status.warning IS
  'Set while the partition''s latest batches, at least 10 messages in a row, were all or mostly (>= 90 %) dead letters: how many, and the latest dead letter''s SQLSTATE and error; NULL again once a batch''s rows succeed.';
COMMENT ON COLUMN pipeline_kafka.consumer_status.rows_per_second IS
  'Rows written per second over the last minute (since the first batch, when that is more recent); counted since the server started.';
COMMENT ON COLUMN pipeline_kafka.consumer_status.relation_name IS
  'The target relation''s name; once it was dropped, the name it last had (relation then shows only an oid).';
COMMENT ON COLUMN pipeline_kinesis.consumer_status.warning IS
  'Set while the shard''s latest batches, at least 10 records in a row, were all or mostly (>= 90 %) dead letters: how many, and the latest dead letter''s SQLSTATE and error; NULL again once a batch''s rows succeed.';
COMMENT ON COLUMN pipeline_kinesis.consumer_status.rows_per_second IS
  'Rows written per second over the last minute (since the first batch, when that is more recent); counted since the server started.';
COMMENT ON COLUMN pipeline_kinesis.consumer_status.relation_name IS
  'The target relation''s name; once it was dropped, the name it last had (relation then shows only an oid).';

-- consume_begin (issue 24.2): the defaults of a new consumer, which \df shows as NULL (an existing
-- consumer keeps its stored settings for every argument not given).
COMMENT ON FUNCTION pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, integer, text, jsonb, text, integer, text[], jsonb, text, text, text[], text, timestamptz, text, boolean) IS
'Starts (or updates and restarts) the consumer of topic into relation; returns its id. A new consumer gets these defaults for the arguments not given: format text, batchsize 100000, maxbytes 32000000, parallelism 1, timeout 250, on_error dead_letter, mode append, starting at the end of each partition. An existing consumer keeps its stored settings for every argument not given (NULL); a NOTICE names what changed. transform names a function with its argument types, e.g. ''f(pipeline_kafka.message[])''. schema_registry (formats avro, protobuf, debezium-avro): the URL of a registry added with add_schema_registry; NULL = the only one. auto_evolve (formats avro, protobuf): a field a later schema adds that the table lacks becomes a new nullable column (added as the table''s owner); NULL = keep the stored setting (false for a new consumer).';
COMMENT ON FUNCTION pipeline_kinesis.consume_begin(text, text, text, text, text, text, text, integer, integer, integer, timestamptz, integer, integer, jsonb, text, integer, text[], jsonb, text, text, text[], text, text, boolean) IS
'Starts (or updates and restarts) the consumer of stream at endpoint into relation; returns its id. A new consumer gets these defaults for the arguments not given: format text, batchsize 10000, parallelism 1, timeout 250, poll_interval 200, on_error dead_letter, mode append, reading from now on (LATEST). An existing consumer keeps its stored settings for every argument not given (NULL); a NOTICE names what changed. transform names a function with its argument types, e.g. ''f(pipeline_kinesis.record[])''. schema_registry (formats avro, protobuf, debezium-avro): the URL of a registry added with add_schema_registry; NULL = the only one. auto_evolve (formats avro, protobuf): a field a later schema adds that the table lacks becomes a new nullable column (added as the table''s owner); NULL = keep the stored setting (false for a new consumer).';
COMMENT ON FUNCTION pipeline_kafka.consume_begin_stream_partitioned(text, text, text, text, text, integer, integer, integer, integer, bigint, text, text, integer, text) IS
'Starts (or updates and restarts) the consumer of topic whose message keys name their target relations; returns its id. A new consumer gets these defaults for the arguments not given: format text, batchsize 100000, maxbytes 32000000, parallelism 1, timeout 250, on_error dead_letter, starting at the end of each partition. An existing consumer keeps its stored settings for every argument not given (NULL); a NOTICE names what changed. schema_registry (formats avro, protobuf, debezium-avro): the URL of a registry added with add_schema_registry; NULL = the only one.';
COMMENT ON FUNCTION pipeline_kafka.preview(integer, integer, bigint) IS
'What the next messages of consumer consumer_id would become in its relation with its stored settings, without writing anything: from its stored offsets (start_offset NULL) or start_offset (-2 beginning, -1 end, n). One row per row a message became; action says what happened (inserted, replaced, deleted, skipped, error).';
COMMENT ON FUNCTION pipeline_kinesis.preview(integer, integer, integer, timestamptz) IS
'What the next records of consumer consumer_id would become in its relation with its stored settings, without writing anything: from TRIM_HORIZON (start_offset NULL or -2), LATEST (-1) or start_time. One row per row a record became; action says what happened (inserted, replaced, deleted, skipped, error).';

-- 0.9.0 (issue 22): which node of a Citus cluster runs which partition or shard of a spread
-- consumer, from any node. Each node's consumer_status is asked through Citus
-- (run_command_on_all_nodes), which connects to every node as the calling role: each node applies
-- its own consumer_status rule (members of the consumer's owner and superusers only), so a role
-- sees through these functions exactly what it sees on each node. SECURITY INVOKER on purpose, and
-- without a search_path of its own: relation is resolved as the caller names it (the body is qualified).
-- A node that does not answer is one row with its error in last_error.
CREATE FUNCTION pipeline_kafka.spread_status(topic text, relation text)
RETURNS TABLE (node text, consumer_id integer, "partition" integer, next_offset bigint, lag bigint,
               "rows" bigint, state text, last_error text)
LANGUAGE plpgsql VOLATILE AS $f$
DECLARE
    qualified text;
BEGIN
    IF topic IS NULL OR relation IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN topic IS NULL THEN 'topic' ELSE 'relation' END
            USING ERRCODE = '22004';
    END IF;
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_node') IS NULL THEN
        RAISE EXCEPTION 'spread_status needs a Citus cluster: Citus is not installed in this database'
            USING ERRCODE = '0A000';
    END IF;
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) INTO qualified
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = pg_catalog.to_regclass(relation);
    IF qualified IS NULL THEN
        RAISE EXCEPTION 'relation "%" does not exist', relation USING ERRCODE = '42P01';
    END IF;
    RETURN QUERY EXECUTE $q$
        SELECT n.nodename || ':' || n.nodeport, s.consumer_id, s."partition", s.next_offset, s.lag, s."rows",
               s.state, s.last_error
        FROM pg_catalog.run_command_on_all_nodes(pg_catalog.format($c$SELECT COALESCE(pg_catalog.json_agg(x), '[]')
               FROM (SELECT s.consumer_id, s."partition", s.next_offset, s.lag, s."rows", s.state, s.last_error
                     FROM pipeline_kafka.consumer_status s
                     LEFT JOIN pipeline_kafka.spread sp ON sp.consumer_id = s.consumer_id
                     WHERE s.topic = %L AND s.relation = pg_catalog.to_regclass(%L) AND s."partition" IS NOT NULL
                       AND (sp.consumer_id IS NULL OR s."partition" %% sp.slots = sp.slot)) x$c$, $1, $2)) r
        JOIN pg_catalog.pg_dist_node n USING (nodeid)
        CROSS JOIN LATERAL pg_catalog.json_to_recordset(CASE WHEN r.success THEN r.result::json
                   ELSE pg_catalog.json_build_array(pg_catalog.json_build_object('last_error', 'node failed: ' || r.result)) END)
             AS s(consumer_id integer, "partition" integer, next_offset bigint, lag bigint, "rows" bigint,
                  state text, last_error text)
        ORDER BY s."partition", 1$q$ USING topic, qualified;
END
$f$;
COMMENT ON FUNCTION pipeline_kafka.spread_status(text, text) IS
'which node of a Citus cluster reads which partition of the consumer of a topic into a table (spread with consume_spread, or on one node): node (name:port), partition, next offset, lag, rows, state, last_error, from each node''s consumer_status as the calling role (the same visibility); a node that does not answer is a row with its error';

CREATE FUNCTION pipeline_kinesis.spread_status(endpoint text, stream text, relation text)
RETURNS TABLE (node text, consumer_id integer, shard_id text, shard_state text, last_sequence_number text,
               millis_behind_latest bigint, "rows" bigint, state text, last_error text)
LANGUAGE plpgsql VOLATILE AS $f$
DECLARE
    qualified text;
BEGIN
    IF endpoint IS NULL OR stream IS NULL OR relation IS NULL THEN
        RAISE EXCEPTION '% must not be NULL',
            CASE WHEN endpoint IS NULL THEN 'endpoint' WHEN stream IS NULL THEN 'stream' ELSE 'relation' END
            USING ERRCODE = '22004';
    END IF;
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_node') IS NULL THEN
        RAISE EXCEPTION 'spread_status needs a Citus cluster: Citus is not installed in this database'
            USING ERRCODE = '0A000';
    END IF;
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) INTO qualified
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = pg_catalog.to_regclass(relation);
    IF qualified IS NULL THEN
        RAISE EXCEPTION 'relation "%" does not exist', relation USING ERRCODE = '42P01';
    END IF;
    RETURN QUERY EXECUTE $q$
        SELECT n.nodename || ':' || n.nodeport, s.consumer_id, s.shard_id, s.shard_state, s.last_sequence_number,
               s.millis_behind_latest, s."rows", s.state, s.last_error
        FROM pg_catalog.run_command_on_all_nodes(pg_catalog.format($c$SELECT COALESCE(pg_catalog.json_agg(x), '[]')
               FROM (SELECT s.consumer_id, s.shard_id, s.shard_state, s.last_sequence_number, s.millis_behind_latest,
                            s."rows", s.state, s.last_error
                     FROM pipeline_kinesis.consumer_status s
                     WHERE s.endpoint = %L AND s.stream = %L AND s.relation = pg_catalog.to_regclass(%L)
                       AND s.shard_id IS NOT NULL) x$c$, $1, $2, $3)) r
        JOIN pg_catalog.pg_dist_node n USING (nodeid)
        CROSS JOIN LATERAL pg_catalog.json_to_recordset(CASE WHEN r.success THEN r.result::json
                   ELSE pg_catalog.json_build_array(pg_catalog.json_build_object('last_error', 'node failed: ' || r.result)) END)
             AS s(consumer_id integer, shard_id text, shard_state text, last_sequence_number text,
                  millis_behind_latest bigint, "rows" bigint, state text, last_error text)
        ORDER BY s.shard_id, 1$q$ USING endpoint, stream, qualified;
END
$f$;
COMMENT ON FUNCTION pipeline_kinesis.spread_status(text, text, text) IS
'which node of a Citus cluster reads which shard of the consumer of a Kinesis stream into a table (spread with consume_spread, or on one node): node (name:port), shard, its state, last sequence number, millis behind latest, rows, state, last_error, from each node''s consumer_status as the calling role (the same visibility); a node that does not answer is a row with its error';
COMMENT ON TABLE pipeline_kinesis.spread IS 'this node''s share of a Kinesis consumer spread over the nodes of a Citus cluster: shard s is read here when (the number ending its id) mod slots = slot; written once by consume_spread; readable by everyone, as seqnums';
COMMENT ON FUNCTION pipeline_kinesis.consume_spread(text, text, text) IS 'run on every node of a Citus cluster: this node''s consumer of a Kinesis stream into a table reads only its share of the shards (its slot among the nodes, stored once; children of a parent read on another node wait until it is finished there); returns the slot';
