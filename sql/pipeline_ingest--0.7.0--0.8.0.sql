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

