-- pipeline_ingest 0.8.0 -> 0.9.0 (ALTER EXTENSION pipeline_ingest UPDATE).
-- Every schema change of 0.9.0 is here as well as in catalog.sql / finalize.sql / the generated
-- function definitions, so an upgraded database ends up with the same schema as a fresh one
-- (tests/e2e/test_upgrade.py compares them). A released script is never edited afterwards.
-- 0.9.0: Citus spread mode for Kinesis and cluster status (issue 22), faster than COPY (issue 23);
-- each section names the item it answers.

\echo Use "ALTER EXTENSION pipeline_ingest UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- Issue 22: Citus
-- ---------------------------------------------------------------------------------------------

-- ---------------------------------------------------------------------------------------------
-- Issue 23: faster than COPY
-- ---------------------------------------------------------------------------------------------

-- ---------------------------------------------------------------------------------------------
-- Other
-- ---------------------------------------------------------------------------------------------
