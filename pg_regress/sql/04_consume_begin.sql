-- consume_begin / consume_end argument checks that need no running broker.

CREATE TABLE target (id int, v text);
CREATE VIEW target_view AS SELECT * FROM target;

-- no broker configured yet
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target')$$);

-- the relation
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'no_such_table')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target_view')$$);
CREATE SEQUENCE target_seq;
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target_seq')$$);
DROP SEQUENCE target_seq;
-- workers are other sessions: a temporary table is refused
CREATE TEMP TABLE target_temp (id int);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target_temp')$$);
DROP TABLE target_temp;
-- rows are written as the table's owner: the caller must be able to SET ROLE to it; INSERT is
-- not enough
CREATE ROLE regress_no_insert;
GRANT USAGE ON SCHEMA public TO regress_no_insert;
GRANT SELECT ON target TO regress_no_insert;
SET ROLE regress_no_insert;
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target')$$);
RESET ROLE;
GRANT INSERT ON target TO regress_no_insert;
SET ROLE regress_no_insert;
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target')$$);
RESET ROLE;
-- the owner's own INSERT privilege and row-level security as it applies to the owner
CREATE TABLE owned (id int);
ALTER TABLE owned OWNER TO regress_no_insert;
REVOKE INSERT ON owned FROM regress_no_insert;
SET ROLE regress_no_insert;
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'owned')$$);
RESET ROLE;
GRANT INSERT ON owned TO regress_no_insert;
ALTER TABLE owned ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
SET ROLE regress_no_insert;
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'owned')$$);
RESET ROLE;
DROP TABLE owned;

-- formats and numbers
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', format := 'xml')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', format := 'text', quote := '"')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', format := 'csv', delimiter := ';;')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', format := 'csv', delimiter := '"')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', format := 'json', delimiter := ',')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', batchsize := 0)$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', maxbytes := -1)$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', parallelism := 0)$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', timeout := 0)$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', start_offset := -3)$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', config := '[1]')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('', 'target')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin(NULL, 'target')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', NULL)$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', batchsize := NULL)$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', columns := ARRAY['id', 'nope'])$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', columns := ARRAY['id', 'id'])$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', columns := ARRAY[]::text[])$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', format := 'json', columns := ARRAY['id'])$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', on_error := 'ignore')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', max_dead_letters := -1)$$);

-- settings are checked by librdkafka before anything is stored
SELECT pipeline_kafka.add_broker('127.0.0.1:1');
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', config := '{"no.such.setting": "1"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', config := '{"bootstrap.servers": "elsewhere:9092"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'target', config := '{"fetch.wait.max.ms": {"nested": 1}}')$$);

-- an unreachable broker is an error within pipeline_ingest.broker_timeout, not a hang
SET pipeline_ingest.broker_timeout = 300;
SELECT regress.sqlstate_of($$SELECT pipeline_kafka.consume_begin('topic', 'target')$$);
RESET pipeline_ingest.broker_timeout;

-- nothing was stored by the failed calls
SELECT count(*) AS consumers FROM pipeline_kafka.consumers;

-- consume_end of something that does not exist
SELECT regress.try($$SELECT pipeline_kafka.consume_end('topic', 'target')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_end('topic', 'no_such_table')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_drop('topic', 'target')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_drop('topic', NULL)$$);
SELECT pipeline_kafka.consume_end() AS stopped, pipeline_kafka.consume_begin() AS started;

SELECT pipeline_kafka.remove_broker('127.0.0.1:1');
DROP VIEW target_view;
DROP TABLE target;
DROP OWNED BY regress_no_insert;
DROP ROLE regress_no_insert;
