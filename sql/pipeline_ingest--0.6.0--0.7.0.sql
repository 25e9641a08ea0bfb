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
-- partition_status() and shard_status() gained rows_per_second and dead_letter_run; both
-- consumer_status views gained warning, rows_per_second and relation_name (last), and show
-- high_watermark / lag / millis_behind_latest only from a running worker that knows them (NULL,
-- not 0, when unknown). A function's result columns cannot change in place: the views and the
-- functions are made again as a fresh install makes them (see finalize.sql).
DROP VIEW pipeline_kafka.consumer_status;
DROP VIEW pipeline_kinesis.consumer_status;
DROP FUNCTION pipeline_kafka.partition_status();
DROP FUNCTION pipeline_kinesis.shard_status();
CREATE  FUNCTION pipeline_kafka."partition_status"() RETURNS TABLE (
	"consumer_id" INT,  /* i32 */
	"partition" INT,  /* i32 */
	"worker_pid" INT,  /* Option < i32 > */
	"high_watermark" bigint,  /* Option < i64 > */
	"messages" bigint,  /* i64 */
	"rows" bigint,  /* i64 */
	"dead_letters" bigint,  /* i64 */
	"batches" bigint,  /* i64 */
	"last_batch_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"rows_per_second" double precision,  /* Option < f64 > */
	"dead_letter_run" TEXT  /* Option < String > */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'partition_status_wrapper';
CREATE  FUNCTION pipeline_kinesis."shard_status"() RETURNS TABLE (
	"consumer_id" INT,  /* i32 */
	"shard" INT,  /* i32 */
	"worker_pid" INT,  /* Option < i32 > */
	"millis_behind_latest" bigint,  /* Option < i64 > */
	"records" bigint,  /* i64 */
	"rows" bigint,  /* i64 */
	"dead_letters" bigint,  /* i64 */
	"batches" bigint,  /* i64 */
	"last_batch_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"skipped_records" bigint,  /* i64 */
	"rows_per_second" double precision,  /* Option < f64 > */
	"dead_letter_run" TEXT  /* Option < String > */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'shard_status_wrapper';
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
LEFT JOIN pg_catalog.pg_stat_activity a
       ON a.pid = s.worker_pid AND a.backend_type = 'pipeline_kafka consumer' AND c.enabled
-- the view reads the table as its owner, past row-level security: the same rule, for the caller
WHERE pg_catalog.pg_has_role(c.owner, 'USAGE');
GRANT SELECT ON pipeline_kafka.consumer_status TO PUBLIC;
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
LEFT JOIN pg_catalog.pg_stat_activity a
       ON a.pid = s.worker_pid AND a.backend_type = 'pipeline_kinesis consumer' AND c.enabled
-- the view reads the table as its owner, past row-level security: the same rule, for the caller
WHERE pg_catalog.pg_has_role(c.owner, 'USAGE');
GRANT SELECT ON pipeline_kinesis.consumer_status TO PUBLIC;
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
