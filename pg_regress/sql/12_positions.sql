-- pipeline_kafka.preview / seek, pipeline_kinesis.preview and consume_begin's start_time: the
-- argument errors with their SQLSTATEs that need no Kafka broker (the e2e tests cover the rest),
-- and a Kinesis preview at LATEST of stream pi_regress (kinesalite), which finds nothing new.

CREATE TABLE pos_target (id int PRIMARY KEY, v text);
CREATE VIEW pos_view AS SELECT * FROM pos_target;

-- seek: required arguments, exactly one of offset and start_time, offsets, times
SELECT regress.try($$SELECT pipeline_kafka.seek(NULL, 'pos_target', "offset" := 0)$$);
SELECT regress.try($$SELECT pipeline_kafka.seek('t', NULL, "offset" := 0)$$);
SELECT regress.try($$SELECT pipeline_kafka.seek('t', 'pos_target')$$);
SELECT regress.try($$SELECT pipeline_kafka.seek('t', 'pos_target', "offset" := 0, start_time := now())$$);
SELECT regress.try($$SELECT pipeline_kafka.seek('t', 'pos_target', "offset" := -3)$$);
SELECT regress.try($$SELECT pipeline_kafka.seek('t', 'pos_target', start_time := 'infinity')$$);
-- no consumer of that topic into that table (or into a table of that name)
SELECT regress.try($$SELECT pipeline_kafka.seek('t', 'pos_target', "offset" := 0)$$);
SELECT regress.try($$SELECT pipeline_kafka.seek('t', 'no_such_table', "offset" := -2)$$);

-- consume_begin: start_time with start_offset
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'pos_target', start_offset := -2, start_time := now())$$);

-- Kafka preview: required arguments, limit, start_offset, topic name, relation, options
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview(NULL, 'pos_target')$$);
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t', NULL)$$);
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t', 'pos_target', "limit" := NULL)$$);
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t', 'pos_target', "limit" := 0)$$);
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t', 'pos_target', "limit" := 1001)$$);
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t', 'pos_target', start_offset := -3)$$);
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t/x', 'pos_target')$$);
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t', 'no_such_table')$$);
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t', 'pos_view')$$);
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t', 'pos_target', format := 'xml')$$);
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t', 'pos_target', format := 'json', columns := ARRAY['id'])$$);
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t', 'pos_target', columns := ARRAY['nope'])$$);
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t', 'pos_target', mode := 'merge')$$);
-- the caller must be able to SET ROLE to the table's owner
CREATE ROLE regress_pos_user;
GRANT USAGE ON SCHEMA public TO regress_pos_user;
GRANT SELECT, INSERT ON pos_target TO regress_pos_user;
SET ROLE regress_pos_user;
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t', 'pos_target')$$);
RESET ROLE;
-- no broker: 55000 (the brokers of earlier files removed in a transaction rolled back)
BEGIN;
SELECT count(*) >= 0 AS removed FROM (SELECT pipeline_kafka.remove_broker(host) FROM pipeline_kafka.brokers) b;
SELECT regress.try($$SELECT * FROM pipeline_kafka.preview('t', 'pos_target')$$);
ROLLBACK;

-- Kinesis preview: required arguments, start positions, stream name, endpoint, relation
DO $$ BEGIN
  PERFORM pipeline_kinesis.add_endpoint('pos_local', 'us-east-1', NULL, current_setting('regress.kinesis_url'));
END $$;
SELECT regress.try($$SELECT * FROM pipeline_kinesis.preview(NULL, 'pi_regress', 'pos_target')$$);
SELECT regress.try($$SELECT * FROM pipeline_kinesis.preview('pos_local', NULL, 'pos_target')$$);
SELECT regress.try($$SELECT * FROM pipeline_kinesis.preview('pos_local', 'pi_regress', NULL)$$);
SELECT regress.try($$SELECT * FROM pipeline_kinesis.preview('pos_local', 'pi_regress', 'pos_target', start_offset := 0)$$);
SELECT regress.try($$SELECT * FROM pipeline_kinesis.preview('pos_local', 'pi_regress', 'pos_target', start_offset := -2, start_time := now())$$);
SELECT regress.try($$SELECT * FROM pipeline_kinesis.preview('pos_local', 'pi_regress', 'pos_target', start_time := '-infinity')$$);
SELECT regress.try($$SELECT * FROM pipeline_kinesis.preview('pos_local', 'a/b', 'pos_target')$$);
SELECT regress.try($$SELECT * FROM pipeline_kinesis.preview('pos_local', 'pi_regress', 'pos_target', "limit" := 0)$$);
SELECT regress.try($$SELECT * FROM pipeline_kinesis.preview('no_endpoint', 'pi_regress', 'pos_target')$$);
SELECT regress.try($$SELECT * FROM pipeline_kinesis.preview('pos_local', 'pi_regress', 'pos_view')$$);
SET ROLE regress_pos_user;
SELECT regress.try($$SELECT * FROM pipeline_kinesis.preview('pos_local', 'pi_regress', 'pos_target')$$);
RESET ROLE;
-- LATEST: only records put from now on, none within broker_timeout
SET pipeline_ingest.broker_timeout = 500;
SELECT * FROM pipeline_kinesis.preview('pos_local', 'pi_regress', 'pos_target', start_offset := -1);
RESET pipeline_ingest.broker_timeout;
SELECT count(*) AS rows_written FROM pos_target;

SELECT pipeline_kinesis.remove_endpoint('pos_local');
DROP VIEW pos_view;
DROP TABLE pos_target;
REVOKE ALL ON SCHEMA public FROM regress_pos_user;
DROP ROLE regress_pos_user;
