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

-- A Kinesis consumer spread over the nodes of a Citus cluster (pipeline_kinesis.consume_spread).
CREATE TABLE pipeline_kinesis.spread (
    consumer_id integer PRIMARY KEY REFERENCES pipeline_kinesis.consumers (id) ON DELETE CASCADE,
    slot        integer NOT NULL,
    slots       integer NOT NULL,
    CHECK (slots > 0 AND slot >= 0 AND slot < slots)
);
SELECT pg_catalog.pg_extension_config_dump('pipeline_kinesis.spread', '');
GRANT SELECT ON pipeline_kinesis.spread TO PUBLIC;
COMMENT ON TABLE pipeline_kinesis.spread IS 'this node''s share of a Kinesis consumer spread over the nodes of a Citus cluster: shard s is read here when (the number ending its id) mod slots = slot; written once by consume_spread; readable by everyone, as seqnums';

CREATE FUNCTION pipeline_kinesis."consume_spread"(
	"endpoint" TEXT, /* Option < & str > */
	"stream" TEXT, /* Option < & str > */
	"relation" TEXT /* Option < & str > */
) RETURNS INT /* i32 */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_consume_spread_wrapper';
COMMENT ON FUNCTION pipeline_kinesis.consume_spread(text, text, text) IS 'run on every node of a Citus cluster: this node''s consumer of a Kinesis stream into a table reads only its share of the shards (its slot among the nodes, stored once; children of a parent read on another node wait until it is finished there); returns the slot';

-- 0.9.0 (issue 22): which node of a Citus cluster runs which partition or shard of a spread
-- consumer, from any node. Each node's consumer_status is asked through Citus
-- (run_command_on_all_nodes), which connects to every node as the calling role: each node applies
-- its own consumer_status rule (members of the consumer's owner and superusers only), so a role
-- sees through these functions exactly what it sees on each node. SECURITY INVOKER on purpose, and
-- without a search_path of its own: relation is resolved as the caller names it (the body is qualified).
-- A node that does not answer is one row with its error in last_error.
CREATE FUNCTION pipeline_kafka.spread_status(topic text, relation text)
RETURNS TABLE (node text, consumer_id integer, "partition" integer, next_offset bigint, lag bigint,
               "rows" bigint, state text, last_error text)
LANGUAGE plpgsql VOLATILE AS $f$
DECLARE
    qualified text;
BEGIN
    IF topic IS NULL OR relation IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN topic IS NULL THEN 'topic' ELSE 'relation' END
            USING ERRCODE = '22004';
    END IF;
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_node') IS NULL THEN
        RAISE EXCEPTION 'spread_status needs a Citus cluster: Citus is not installed in this database'
            USING ERRCODE = '0A000';
    END IF;
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) INTO qualified
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = pg_catalog.to_regclass(relation);
    IF qualified IS NULL THEN
        RAISE EXCEPTION 'relation "%" does not exist', relation USING ERRCODE = '42P01';
    END IF;
    RETURN QUERY EXECUTE $q$
        SELECT n.nodename || ':' || n.nodeport, s.consumer_id, s."partition", s.next_offset, s.lag, s."rows",
               s.state, s.last_error
        FROM pg_catalog.run_command_on_all_nodes(pg_catalog.format($c$SELECT COALESCE(pg_catalog.json_agg(x), '[]')
               FROM (SELECT s.consumer_id, s."partition", s.next_offset, s.lag, s."rows", s.state, s.last_error
                     FROM pipeline_kafka.consumer_status s
                     LEFT JOIN pipeline_kafka.spread sp ON sp.consumer_id = s.consumer_id
                     WHERE s.topic = %L AND s.relation = pg_catalog.to_regclass(%L) AND s."partition" IS NOT NULL
                       AND (sp.consumer_id IS NULL OR s."partition" %% sp.slots = sp.slot)) x$c$, $1, $2)) r
        JOIN pg_catalog.pg_dist_node n USING (nodeid)
        CROSS JOIN LATERAL pg_catalog.json_to_recordset(CASE WHEN r.success THEN r.result::json
                   ELSE pg_catalog.json_build_array(pg_catalog.json_build_object('last_error', 'node failed: ' || r.result)) END)
             AS s(consumer_id integer, "partition" integer, next_offset bigint, lag bigint, "rows" bigint,
                  state text, last_error text)
        ORDER BY s."partition", 1$q$ USING topic, qualified;
END
$f$;
COMMENT ON FUNCTION pipeline_kafka.spread_status(text, text) IS
'which node of a Citus cluster reads which partition of the consumer of a topic into a table (spread with consume_spread, or on one node): node (name:port), partition, next offset, lag, rows, state, last_error, from each node''s consumer_status as the calling role (the same visibility); a node that does not answer is a row with its error';

CREATE FUNCTION pipeline_kinesis.spread_status(endpoint text, stream text, relation text)
RETURNS TABLE (node text, consumer_id integer, shard_id text, shard_state text, last_sequence_number text,
               millis_behind_latest bigint, "rows" bigint, state text, last_error text)
LANGUAGE plpgsql VOLATILE AS $f$
DECLARE
    qualified text;
BEGIN
    IF endpoint IS NULL OR stream IS NULL OR relation IS NULL THEN
        RAISE EXCEPTION '% must not be NULL',
            CASE WHEN endpoint IS NULL THEN 'endpoint' WHEN stream IS NULL THEN 'stream' ELSE 'relation' END
            USING ERRCODE = '22004';
    END IF;
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_node') IS NULL THEN
        RAISE EXCEPTION 'spread_status needs a Citus cluster: Citus is not installed in this database'
            USING ERRCODE = '0A000';
    END IF;
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) INTO qualified
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = pg_catalog.to_regclass(relation);
    IF qualified IS NULL THEN
        RAISE EXCEPTION 'relation "%" does not exist', relation USING ERRCODE = '42P01';
    END IF;
    RETURN QUERY EXECUTE $q$
        SELECT n.nodename || ':' || n.nodeport, s.consumer_id, s.shard_id, s.shard_state, s.last_sequence_number,
               s.millis_behind_latest, s."rows", s.state, s.last_error
        FROM pg_catalog.run_command_on_all_nodes(pg_catalog.format($c$SELECT COALESCE(pg_catalog.json_agg(x), '[]')
               FROM (SELECT s.consumer_id, s.shard_id, s.shard_state, s.last_sequence_number, s.millis_behind_latest,
                            s."rows", s.state, s.last_error
                     FROM pipeline_kinesis.consumer_status s
                     WHERE s.endpoint = %L AND s.stream = %L AND s.relation = pg_catalog.to_regclass(%L)
                       AND s.shard_id IS NOT NULL) x$c$, $1, $2, $3)) r
        JOIN pg_catalog.pg_dist_node n USING (nodeid)
        CROSS JOIN LATERAL pg_catalog.json_to_recordset(CASE WHEN r.success THEN r.result::json
                   ELSE pg_catalog.json_build_array(pg_catalog.json_build_object('last_error', 'node failed: ' || r.result)) END)
             AS s(consumer_id integer, shard_id text, shard_state text, last_sequence_number text,
                  millis_behind_latest bigint, "rows" bigint, state text, last_error text)
        ORDER BY s.shard_id, 1$q$ USING endpoint, stream, qualified;
END
$f$;
COMMENT ON FUNCTION pipeline_kinesis.spread_status(text, text, text) IS
'which node of a Citus cluster reads which shard of the consumer of a Kinesis stream into a table (spread with consume_spread, or on one node): node (name:port), shard, its state, last sequence number, millis behind latest, rows, state, last_error, from each node''s consumer_status as the calling role (the same visibility); a node that does not answer is a row with its error';


-- ---------------------------------------------------------------------------------------------
-- Issue 23: faster than COPY
-- ---------------------------------------------------------------------------------------------

-- ---------------------------------------------------------------------------------------------
-- Other
-- ---------------------------------------------------------------------------------------------
