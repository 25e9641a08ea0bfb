-- pipeline_kinesis.consume_begin / consume_end / consume_drop: every argument error with its
-- SQLSTATE, then a consumer of stream pi_regress (2 shards, created by scripts/regress.sh in
-- kinesalite at current_setting('regress.kinesis_url')). Every successful call that enables a
-- consumer is followed by consume_end in the same transaction, so no worker ever starts and the
-- catalog rows stay as the functions wrote them.

CREATE TABLE kin_target (id int, v text);
CREATE VIEW kin_view AS SELECT * FROM kin_target;
DO $$ BEGIN
  PERFORM pipeline_kinesis.add_endpoint('local', 'us-east-1', NULL, current_setting('regress.kinesis_url'));
END $$;
-- nothing listens on port 1: connection refused
SELECT pipeline_kinesis.add_endpoint('down', 'us-east-1', NULL, 'http://127.0.0.1:1');

-- required arguments (22004)
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin(NULL, 'pi_regress', 'kin_target')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', NULL, 'kin_target')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', NULL)$$);
-- (0.7.0: a NULL setting is no longer 22004: it means the default of a new consumer, or the
-- stored value of an existing one; tests/e2e/test_consume_begin_keeps_settings.py)
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', columns := ARRAY['id', NULL])$$);

-- the stream name
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', '', 'kin_target')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'a/b', 'kin_target')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', repeat('s', 129), 'kin_target')$$);

-- the relation (as on the Kafka side)
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'no_such_table')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_view')$$);
CREATE TEMP TABLE kin_temp (id int);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_temp')$$);
DROP TABLE kin_temp;
CREATE ROLE regress_kin_user;
GRANT USAGE ON SCHEMA public TO regress_kin_user;
GRANT SELECT, INSERT ON kin_target TO regress_kin_user;
SET ROLE regress_kin_user;
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target')$$);
RESET ROLE;
CREATE TABLE kin_owned (id int);
ALTER TABLE kin_owned OWNER TO regress_kin_user;
REVOKE INSERT ON kin_owned FROM regress_kin_user;
SET ROLE regress_kin_user;
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_owned')$$);
RESET ROLE;
GRANT INSERT ON kin_owned TO regress_kin_user;
ALTER TABLE kin_owned ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
SET ROLE regress_kin_user;
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_owned')$$);
RESET ROLE;
DROP TABLE kin_owned;

-- formats, numbers, start positions, settings
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', format := 'xml')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', format := 'text', quote := '"')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', format := 'csv', delimiter := ';;')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', format := 'json', delimiter := ',')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', batchsize := 0)$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', batchsize := 10001)$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', parallelism := 0)$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', timeout := -1)$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', poll_interval := 0)$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', start_offset := 0)$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', start_offset := -3)$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', start_offset := -1, start_time := '2026-01-01 00:00+00')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', config := '[1]')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', config := '{"retry_max_ms": 999}')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', config := '{"retry_max_ms": 600001}')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', config := '{"retry_max_ms": "5000"}')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', config := '{"retry_max_ms": 1e400}')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', config := '{"aws_secret_access_key": "x"}')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', on_error := 'ignore')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', max_dead_letters := -1)$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', columns := ARRAY['id', 'nope'])$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', columns := ARRAY['id', 'id'])$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', columns := ARRAY[]::text[])$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', format := 'json', columns := ARRAY['id'])$$);

-- the endpoint and the stream
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('nowhere', 'pi_regress', 'kin_target')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('local', 'no_such_stream', 'kin_target')$$);
SET pipeline_ingest.broker_timeout = 1000;
SELECT regress.sqlstate_of($$SELECT pipeline_kinesis.consume_begin('down', 'pi_regress', 'kin_target')$$);
RESET pipeline_ingest.broker_timeout;
-- credentials that cannot be loaded (28000): a readable credentials file without the default
-- profile (a missing file is refused by add_endpoint itself: 03_endpoints)
COPY (SELECT '[someone_else]') TO '/tmp/pipeline_ingest_regress_nocreds';
DO $$ BEGIN
  PERFORM pipeline_kinesis.add_endpoint('badcred', 'us-east-1', '/tmp/pipeline_ingest_regress_nocreds', current_setting('regress.kinesis_url'));
END $$;
SELECT regress.sqlstate_of($$SELECT pipeline_kinesis.consume_begin('badcred', 'pi_regress', 'kin_target')$$);
SELECT pipeline_kinesis.remove_endpoint('badcred');

-- nothing was stored by the failed calls
SELECT count(*) AS consumers FROM pipeline_kinesis.consumers;

-- no such consumer (42704), NULL arguments (22004)
SELECT regress.try($$SELECT pipeline_kinesis.consume_end('local', 'pi_regress', 'kin_target')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_drop('local', 'pi_regress', 'kin_target')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_end('local', NULL, 'kin_target')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_drop(NULL, 'pi_regress', 'kin_target')$$);

-- a new consumer starts at LATEST as of the call: start_time = now(), no checkpoints
BEGIN;
SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', format := 'csv', batchsize := 500,
                                      columns := ARRAY['v', 'id'], config := '{"retry_max_ms": 5000}') > 0 AS created;
SELECT endpoint, stream, relation, relname, owner, format, columns, batchsize, parallelism, timeout, poll_interval,
       config, on_error, max_dead_letters, enabled, generation, start_time = now() AS start_is_now
FROM pipeline_kinesis.consumers;
SELECT pipeline_kinesis.consume_end('local', 'pi_regress', 'kin_target');
COMMIT;
SELECT stream, relation, state, worker_pid, shard_id, shard_state, records, rows, last_error FROM pipeline_kinesis.consumer_status;

-- checkpoints a worker would have written: NULL keeps them (and start_time) and restarts
INSERT INTO pipeline_kinesis.seqnums (consumer_id, shard_id, seqnum, finished, parents, closed)
SELECT id, 'shardId-000000000000', '49590338271490256608559692538361571095921575989136588898', true, NULL, true
FROM pipeline_kinesis.consumers;
INSERT INTO pipeline_kinesis.seqnums (consumer_id, shard_id, seqnum, sub_sequence, parents)
SELECT id, 'shardId-000000000002', '49590338271490256608559692538361571095921575989136588899', 3, ARRAY['shardId-000000000000']
FROM pipeline_kinesis.consumers;
UPDATE pipeline_kinesis.consumers SET start_time = '2026-01-01 00:00+00';
SELECT stream, state, shard_id, shard_state, parents, last_sequence_number, sub_sequence, millis_behind_latest, records
FROM pipeline_kinesis.consumer_status ORDER BY shard_id;
BEGIN;
SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', format := 'json') > 0 AS updated;
SELECT format, columns, batchsize, config, enabled, generation, start_time FROM pipeline_kinesis.consumers;
SELECT count(*) AS checkpoints FROM pipeline_kinesis.seqnums;
SELECT pipeline_kinesis.consume_end('local', 'pi_regress', 'kin_target');
COMMIT;

-- -2: TRIM_HORIZON (start_time NULL), checkpoints gone
BEGIN;
SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', start_offset := -2) > 0 AS restarted;
SELECT generation, start_time, (SELECT count(*) FROM pipeline_kinesis.seqnums) AS checkpoints FROM pipeline_kinesis.consumers;
SELECT pipeline_kinesis.consume_end('local', 'pi_regress', 'kin_target');
COMMIT;
-- a start_time: AT_TIMESTAMP
INSERT INTO pipeline_kinesis.seqnums (consumer_id, shard_id, seqnum) SELECT id, 'shardId-000000000001', '1' FROM pipeline_kinesis.consumers;
BEGIN;
SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', start_time := '2026-06-01 12:00+00') > 0 AS restarted;
SELECT generation, start_time, (SELECT count(*) FROM pipeline_kinesis.seqnums) AS checkpoints FROM pipeline_kinesis.consumers;
SELECT pipeline_kinesis.consume_end('local', 'pi_regress', 'kin_target');
COMMIT;
-- -1: LATEST as of now
INSERT INTO pipeline_kinesis.seqnums (consumer_id, shard_id, seqnum) SELECT id, 'shardId-000000000001', '1' FROM pipeline_kinesis.consumers;
BEGIN;
SELECT pipeline_kinesis.consume_begin('local', 'pi_regress', 'kin_target', start_offset := -1) > 0 AS restarted;
SELECT generation, start_time = now() AS start_is_now, (SELECT count(*) FROM pipeline_kinesis.seqnums) AS checkpoints FROM pipeline_kinesis.consumers;
SELECT pipeline_kinesis.consume_end('local', 'pi_regress', 'kin_target');
COMMIT;

-- consume_end of a stopped consumer is fine; consume_begin() / consume_end() count what they change
SELECT pipeline_kinesis.consume_end('local', 'pi_regress', 'kin_target');
BEGIN;
SELECT pipeline_kinesis.consume_begin() AS started;
SELECT pipeline_kinesis.consume_begin() AS started_again;
SELECT enabled, generation FROM pipeline_kinesis.consumers;
SELECT pipeline_kinesis.consume_end() AS stopped;
SELECT pipeline_kinesis.consume_end() AS stopped_again;
COMMIT;

-- a role that is not a member of the owner neither sees nor manages the consumer
SET ROLE regress_kin_user;
SELECT count(*) AS visible_consumers FROM pipeline_kinesis.consumers;
SELECT count(*) AS visible_status FROM pipeline_kinesis.consumer_status;
SELECT regress.try($$SELECT pipeline_kinesis.consume_end('local', 'pi_regress', 'kin_target')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_drop('local', 'pi_regress', 'kin_target')$$);
SELECT pipeline_kinesis.consume_begin() AS started_by_other_role;
RESET ROLE;

-- an endpoint in use cannot be removed
SELECT regress.try($$SELECT pipeline_kinesis.remove_endpoint('local')$$);

-- the relation is dropped: the consumer is still named by it, and dropped with its checkpoints
-- and dead letters
INSERT INTO pipeline_kinesis.dead_letters (consumer_id, stream, shard_id, sequence_number, data, error, sqlstate, owner)
SELECT id, stream, 'shardId-000000000001', '1', '\x00', 'bad', '22P02', owner FROM pipeline_kinesis.consumers;
DROP TABLE kin_target CASCADE;
SELECT regress.try($$SELECT pipeline_kinesis.consume_drop('local', 'pi_regress', 'kin_target')$$);
SELECT (SELECT count(*) FROM pipeline_kinesis.consumers) AS consumers,
       (SELECT count(*) FROM pipeline_kinesis.seqnums) AS checkpoints,
       (SELECT count(*) FROM pipeline_kinesis.dead_letters) AS dead_letters;
SELECT regress.try($$SELECT pipeline_kinesis.consume_drop('local', 'pi_regress', 'kin_target')$$);

SELECT pipeline_kinesis.remove_endpoint('local');
SELECT pipeline_kinesis.remove_endpoint('down');
DROP OWNED BY regress_kin_user;
DROP ROLE regress_kin_user;
