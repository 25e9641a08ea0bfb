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

-- consumers may store every format of 0.8.0 (the same list for the avro/protobuf section: the
-- constraint is dropped and added again, so running both is harmless) and mode 'replicate'
-- (format debezium with truncate events applied)
ALTER TABLE pipeline_kafka.consumers DROP CONSTRAINT consumers_format_check,
    ADD CONSTRAINT consumers_format_check CHECK (format IN ('text', 'csv', 'json', 'raw', 'avro', 'protobuf', 'debezium', 'debezium-avro'));
ALTER TABLE pipeline_kinesis.consumers DROP CONSTRAINT consumers_format_check,
    ADD CONSTRAINT consumers_format_check CHECK (format IN ('text', 'csv', 'json', 'raw', 'avro', 'protobuf', 'debezium', 'debezium-avro'));
ALTER TABLE pipeline_kafka.consumers DROP CONSTRAINT consumers_mode_check,
    ADD CONSTRAINT consumers_mode_check CHECK (mode IN ('append', 'upsert', 'replicate'));
ALTER TABLE pipeline_kinesis.consumers DROP CONSTRAINT consumers_mode_check,
    ADD CONSTRAINT consumers_mode_check CHECK (mode IN ('append', 'upsert', 'replicate'));



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
