-- pipeline_ingest 0.2.0 -> 0.3.0 (ALTER EXTENSION pipeline_ingest UPDATE).
-- Every schema change of 0.3.0 is here as well as in catalog.sql / finalize.sql / the generated
-- function definitions, so an upgraded database ends up with the same schema as a fresh one
-- (tests/e2e/test_upgrade.py compares them). A released script is never edited afterwards.

\echo Use "ALTER EXTENSION pipeline_ingest UPDATE" to load this file. \quit

-- Issue 8: Kinesis consumers on the generic pipeline.
ALTER TABLE pipeline_kinesis.consumers
    ADD COLUMN relname text,
    ADD COLUMN columns text[],
    ADD COLUMN timeout integer NOT NULL DEFAULT 250 CHECK (timeout > 0),
    ADD COLUMN poll_interval integer NOT NULL DEFAULT 200 CHECK (poll_interval > 0),
    ADD COLUMN on_error text NOT NULL DEFAULT 'dead_letter' CHECK (on_error IN ('dead_letter', 'skip', 'stop')),
    ADD COLUMN max_dead_letters integer CHECK (max_dead_letters >= 0),
    ADD COLUMN start_time timestamptz;

ALTER TABLE pipeline_kinesis.seqnums
    ALTER COLUMN seqnum DROP NOT NULL,
    ADD COLUMN sub_sequence bigint CHECK (sub_sequence >= 0),
    ADD COLUMN finished boolean NOT NULL DEFAULT false,
    ADD COLUMN parents text[],
    ADD COLUMN closed boolean NOT NULL DEFAULT false;

CREATE TABLE pipeline_kinesis.dead_letters (
    id              bigserial PRIMARY KEY,
    consumer_id     integer NOT NULL REFERENCES pipeline_kinesis.consumers (id) ON DELETE CASCADE,
    stream          text NOT NULL,
    shard_id        text NOT NULL,
    sequence_number text NOT NULL,
    sub_sequence    bigint,
    partition_key   text,
    data            bytea,
    error           text NOT NULL,
    sqlstate        text NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON pipeline_kinesis.dead_letters (consumer_id, shard_id);
REVOKE ALL ON pipeline_kinesis.dead_letters FROM PUBLIC;
GRANT SELECT, DELETE ON pipeline_kinesis.dead_letters TO PUBLIC;
ALTER TABLE pipeline_kinesis.dead_letters ENABLE ROW LEVEL SECURITY;
CREATE POLICY dead_letters_of_owned_consumers ON pipeline_kinesis.dead_letters
    USING (EXISTS (SELECT 1 FROM pipeline_kinesis.consumers c
                   WHERE c.id = consumer_id AND pg_catalog.pg_has_role(c.owner, 'USAGE')));
ALTER TABLE pipeline_kinesis.consumers ENABLE ROW LEVEL SECURITY;
CREATE POLICY consumers_of_own_roles ON pipeline_kinesis.consumers FOR SELECT
    USING (pg_catalog.pg_has_role(owner, 'USAGE'));
SELECT pg_catalog.pg_extension_config_dump('pipeline_kinesis.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('pipeline_kinesis.dead_letters_id_seq', '');
