-- pipeline_ingest 0.5.0 -> 0.6.0 (ALTER EXTENSION pipeline_ingest UPDATE).
-- Every schema change of 0.6.0 is here as well as in catalog.sql / finalize.sql / the generated
-- function definitions, so an upgraded database ends up with the same schema as a fresh one
-- (tests/e2e/test_upgrade.py compares them). A released script is never edited afterwards.
-- 0.6.0 is the third security review (issue 19): each section names the item it answers.

\echo Use "ALTER EXTENSION pipeline_ingest UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- Issue 19.3: every view that filters rows for its caller is a security barrier.
-- ---------------------------------------------------------------------------------------------
-- (section 19.3)
-- The status views read the consumers table as their owner (past its row-level security) and
-- filter rows with pg_has_role: without the barrier, a leaky function in a caller's WHERE saw
-- other roles' rows (last_error with message contents, topics, group ids) first.
ALTER VIEW pipeline_kafka.consumer_status SET (security_barrier = true);
ALTER VIEW pipeline_kafka.consumer_lag SET (security_barrier = true);
ALTER VIEW pipeline_kinesis.consumer_status SET (security_barrier = true);
-- partition_status() / shard_status() return only the consumers the caller may see; they read the
-- catalog as the superuser inside, which a parallel worker may not (parallel restricted).
ALTER FUNCTION pipeline_kafka.partition_status() PARALLEL RESTRICTED;
ALTER FUNCTION pipeline_kinesis.shard_status() PARALLEL RESTRICTED;



-- ---------------------------------------------------------------------------------------------
-- Issue 19.2: transform functions are pinned (oid and owner).
-- ---------------------------------------------------------------------------------------------
-- (section 19.2)
-- The transform function's oid (plain oid: pg_upgrade keeps no pg_proc oids) and owner, pinned
-- by consume_begin; existing consumers get the function their stored signature names now.
ALTER TABLE pipeline_kafka.consumers ADD COLUMN transform_oid oid, ADD COLUMN transform_owner regrole;
ALTER TABLE pipeline_kinesis.consumers ADD COLUMN transform_oid oid, ADD COLUMN transform_owner regrole;
UPDATE pipeline_kafka.consumers k SET transform_oid = p.oid, transform_owner = p.proowner::pg_catalog.regrole
FROM pg_catalog.pg_proc p WHERE k.transform IS NOT NULL AND p.oid = pg_catalog.to_regprocedure(k.transform);
UPDATE pipeline_kinesis.consumers k SET transform_oid = p.oid, transform_owner = p.proowner::pg_catalog.regrole
FROM pg_catalog.pg_proc p WHERE k.transform IS NOT NULL AND p.oid = pg_catalog.to_regprocedure(k.transform);



-- ---------------------------------------------------------------------------------------------
-- Issue 19.9: messages the broker refuses as too large leave the outbox for a dead-letter table.
-- ---------------------------------------------------------------------------------------------
-- (section 19.9)
ALTER TABLE pipeline_kafka.outbox ADD COLUMN produced_by regrole;
CREATE TABLE pipeline_kafka.outbox_dead_letters (
    id          bigint PRIMARY KEY,     -- the message's outbox id
    topic       text NOT NULL,
    "partition" integer,
    key         bytea,
    message     bytea,
    headers     jsonb,
    "timestamp" timestamptz,
    produced_by regrole,
    created_at  timestamptz NOT NULL,
    error       text NOT NULL,
    sqlstate    text NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON pipeline_kafka.outbox_dead_letters FROM PUBLIC;
GRANT SELECT, DELETE ON pipeline_kafka.outbox_dead_letters TO PUBLIC;
ALTER TABLE pipeline_kafka.outbox_dead_letters ENABLE ROW LEVEL SECURITY;
CREATE POLICY outbox_dead_letters_of_own_roles ON pipeline_kafka.outbox_dead_letters
    USING (pg_catalog.pg_has_role(produced_by, 'USAGE'));
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.outbox_dead_letters', '');



-- ---------------------------------------------------------------------------------------------
-- Issue 19.10: dead letters and last_error of a taken-over consumer stay with their owner.
-- ---------------------------------------------------------------------------------------------
-- (section 19.10)
-- A dead letter belongs to the consumer's owner when it was written, and is visible to that
-- role's members only (not to a role that takes the consumer over later).
ALTER TABLE pipeline_kafka.dead_letters ADD COLUMN owner regrole;
UPDATE pipeline_kafka.dead_letters d SET owner = c.owner FROM pipeline_kafka.consumers c WHERE c.id = d.consumer_id;
ALTER TABLE pipeline_kafka.dead_letters ALTER COLUMN owner SET NOT NULL;
DROP POLICY dead_letters_of_owned_consumers ON pipeline_kafka.dead_letters;
CREATE POLICY dead_letters_of_own_roles ON pipeline_kafka.dead_letters
    USING (pg_catalog.pg_has_role(owner, 'USAGE'));
ALTER TABLE pipeline_kinesis.dead_letters ADD COLUMN owner regrole;
UPDATE pipeline_kinesis.dead_letters d SET owner = c.owner FROM pipeline_kinesis.consumers c WHERE c.id = d.consumer_id;
ALTER TABLE pipeline_kinesis.dead_letters ALTER COLUMN owner SET NOT NULL;
DROP POLICY dead_letters_of_owned_consumers ON pipeline_kinesis.dead_letters;
CREATE POLICY dead_letters_of_own_roles ON pipeline_kinesis.dead_letters
    USING (pg_catalog.pg_has_role(owner, 'USAGE'));



-- ---------------------------------------------------------------------------------------------
-- Other changes (issue 19: range checks, upserts with identity columns).
-- ---------------------------------------------------------------------------------------------
-- (section other)
-- Issue 20.4 (KPL user records outside their shard): shard_status() and consumer_status have a
-- new last column, skipped_records (see finalize.sql); a function's result columns and a view's
-- columns cannot be changed in place, so both are made again as a fresh install makes them.
DROP VIEW pipeline_kinesis.consumer_status;
DROP FUNCTION pipeline_kinesis.shard_status();
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
	"skipped_records" bigint  /* i64 */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'shard_status_wrapper';
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
