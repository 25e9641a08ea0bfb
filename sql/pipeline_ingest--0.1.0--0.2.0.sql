-- pipeline_ingest 0.1.0 -> 0.2.0 (ALTER EXTENSION pipeline_ingest UPDATE).
-- Every schema change of 0.2.0 is here as well as in catalog.sql / finalize.sql / the generated
-- function definitions, so an upgraded database ends up with the same schema as a fresh one
-- (tests/e2e/test_upgrade.py compares them). A released script is never edited afterwards.

\echo Use "ALTER EXTENSION pipeline_ingest UPDATE" to load this file. \quit

