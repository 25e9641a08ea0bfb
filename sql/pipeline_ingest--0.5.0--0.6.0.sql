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

