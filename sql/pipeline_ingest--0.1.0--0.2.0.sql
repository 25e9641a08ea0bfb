-- pipeline_ingest 0.1.0 -> 0.2.0 (ALTER EXTENSION pipeline_ingest UPDATE).
-- Every schema change of 0.2.0 is here as well as in catalog.sql / finalize.sql / the generated
-- function definitions, so an upgraded database ends up with the same schema as a fresh one
-- (tests/e2e/test_upgrade.py compares them). A released script is never edited afterwards.

\echo Use "ALTER EXTENSION pipeline_ingest UPDATE" to load this file. \quit


-- Issue 11 items 2, 3, 7, 9 (consumer ownership, status visibility, consume_drop).
-- Consumers' rows and status are visible to their owner's members and superusers only.
ALTER TABLE pipeline_kafka.consumers ENABLE ROW LEVEL SECURITY;
CREATE POLICY consumers_of_own_roles ON pipeline_kafka.consumers FOR SELECT
    USING (pg_catalog.pg_has_role(owner, 'USAGE'));
-- Issue 11 items 4, 5, 14 (worker slots, outbox head-of-line blocking, shutdown).
-- consumer_status shows the caller only the consumers it may see (item 7), and a consumer that
-- gets no worker (per-database budget, no free slot) as 'waiting' with the reason in last_error,
-- instead of 'starting' (item 4).
CREATE OR REPLACE VIEW pipeline_kafka.consumer_status AS
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
-- Removes a consumer with its offsets, also when its relation was dropped.
CREATE  FUNCTION pipeline_kafka."consume_drop"(
	"topic" TEXT, /* Option < & str > */
	"relation" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'consume_drop_wrapper';

-- Issue 11, items 1, 8, 12, 13 (client settings, broker changes, broker waits, NULL arguments):
-- functions that were STRICT (NULL in, NULL out, nothing done) now raise 22004 on a NULL argument.
DROP FUNCTION pipeline_kafka.remove_broker(text);
CREATE  FUNCTION pipeline_kafka."remove_broker"(
	"hostname" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'remove_broker_wrapper';
REVOKE EXECUTE ON FUNCTION pipeline_kafka.remove_broker(text) FROM PUBLIC;

DROP FUNCTION pipeline_kafka.consume_end(text, text);
CREATE  FUNCTION pipeline_kafka."consume_end"(
	"topic" TEXT, /* Option < & str > */
	"relation" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'consume_end_wrapper';

DROP FUNCTION pipeline_kinesis.remove_endpoint(text);
CREATE  FUNCTION pipeline_kinesis."remove_endpoint"(
	"name" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'remove_endpoint_wrapper';
REVOKE EXECUTE ON FUNCTION pipeline_kinesis.remove_endpoint(text) FROM PUBLIC;

-- Whether a consumer's config was given by a superuser (the worker checks it against the owner's
-- rights otherwise); consumers stored by 0.1.0 are checked against their owner's.
ALTER TABLE pipeline_kafka.consumers ADD COLUMN config_by_superuser boolean NOT NULL DEFAULT false;
