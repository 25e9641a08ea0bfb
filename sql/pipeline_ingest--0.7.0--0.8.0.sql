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

-- avro (issue 21's Avro item): the formats and key formats a consumer row may hold (all of issue
-- 21's at once, so the Protobuf and Debezium items need no second change of the same checks).
ALTER TABLE pipeline_kafka.consumers
    DROP CONSTRAINT consumers_format_check,
    ADD CONSTRAINT consumers_format_check CHECK (format IN ('text', 'csv', 'json', 'raw', 'avro', 'protobuf', 'debezium', 'debezium-avro')),
    DROP CONSTRAINT consumers_key_format_check,
    ADD CONSTRAINT consumers_key_format_check CHECK (key_format IN ('json', 'csv', 'text', 'avro', 'protobuf'));
ALTER TABLE pipeline_kinesis.consumers
    DROP CONSTRAINT consumers_format_check,
    ADD CONSTRAINT consumers_format_check CHECK (format IN ('text', 'csv', 'json', 'raw', 'avro', 'protobuf', 'debezium', 'debezium-avro')),
    DROP CONSTRAINT consumers_key_format_check,
    ADD CONSTRAINT consumers_key_format_check CHECK (key_format IN ('json', 'csv', 'text', 'avro', 'protobuf'));



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
