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
