-- pipeline_ingest 0.1.0 -> 0.2.0 (ALTER EXTENSION pipeline_ingest UPDATE).
-- Every schema change of 0.2.0 is here as well as in catalog.sql / finalize.sql / the generated
-- function definitions, so an upgraded database ends up with the same schema as a fresh one
-- (tests/e2e/test_upgrade.py compares them). A released script is never edited afterwards.

\echo Use "ALTER EXTENSION pipeline_ingest UPDATE" to load this file. \quit


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
