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



-- ---------------------------------------------------------------------------------------------
-- Issue 21: emit_tuple Avro
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Issue 23: faster than COPY
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Issue 22: Citus
-- ---------------------------------------------------------------------------------------------

CREATE TABLE pipeline_kafka.spread (
    consumer_id integer PRIMARY KEY REFERENCES pipeline_kafka.consumers (id) ON DELETE CASCADE,
    slot        integer NOT NULL,
    slots       integer NOT NULL,
    CHECK (slots > 0 AND slot >= 0 AND slot < slots)
);
SELECT pg_catalog.pg_extension_config_dump('pipeline_kafka.spread', '');
GRANT SELECT ON pipeline_kafka.spread TO PUBLIC;
COMMENT ON TABLE pipeline_kafka.spread IS 'this node''s share of a consumer spread over the nodes of a Citus cluster: partition p is read here when p mod slots = slot; written once by consume_spread; readable by everyone, as offsets';

CREATE FUNCTION pipeline_kafka."consume_spread"(
	"topic" TEXT, /* Option < & str > */
	"relation" TEXT /* Option < & str > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'consume_spread_wrapper';
COMMENT ON FUNCTION pipeline_kafka.consume_spread(text, text) IS 'run on every node of a Citus cluster: this node''s consumer of a topic into a table reads only its share of the partitions (its slot among the nodes, stored once); returns the slot';


-- ---------------------------------------------------------------------------------------------
-- Other
-- ---------------------------------------------------------------------------------------------
