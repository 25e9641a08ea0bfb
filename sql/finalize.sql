-- Objects that depend on the extension's functions: views, grants, revocations. Runs after every
-- function is created (pgrx `finalize`). Tables are in catalog.sql; changes after a release also go
-- into that release's upgrade script (pipeline_ingest--OLD--NEW.sql).

-- Brokers and endpoints are managed by superusers (they hold credentials and decide where
-- data comes from); producing is granted per role.
REVOKE EXECUTE ON FUNCTION pipeline_kafka.add_broker(text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pipeline_kafka.remove_broker(text) FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION pipeline_kafka.produce_message(text, bytea, integer, bytea, jsonb, timestamptz) FROM PUBLIC;
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
