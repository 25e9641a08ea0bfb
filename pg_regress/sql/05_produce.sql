-- produce_message and emit_tuple: validation, trigger misuse, and that only committed work
-- reaches the outbox. Everything here rolls back, so nothing is ever sent.

-- no broker: an error rather than a message that can never leave
SELECT regress.try($$SELECT pipeline_kafka.produce_message('t', 'm')$$);
SELECT pipeline_kafka.add_broker('127.0.0.1:1');

SELECT regress.try($$SELECT pipeline_kafka.produce_message('', 'm')$$);
SELECT regress.try($$SELECT pipeline_kafka.produce_message(NULL, 'm')$$);
SELECT regress.try($$SELECT pipeline_kafka.produce_message('t', 'm', partition := -2)$$);
SELECT regress.try($$SELECT pipeline_kafka.produce_message('t', 'm', headers := '["a"]')$$);
SELECT regress.try($$SELECT pipeline_kafka.produce_message('t', 'm', headers := '{"a": 1}')$$);
-- a topic name Kafka cannot accept, a message over message.max.bytes (default 1000000): refused
SELECT regress.try($$SELECT pipeline_kafka.produce_message('bad topic name!', 'm')$$);
SELECT regress.try($$SELECT pipeline_kafka.produce_message('..', 'm')$$);
SELECT regress.try($$SELECT pipeline_kafka.produce_message(repeat('a', 250), 'm')$$);
SELECT regress.try($$SELECT pipeline_kafka.produce_message('t', convert_to(repeat('x', 1000001), 'UTF8'))$$);

-- a rolled-back transaction leaves nothing; a rolled-back savepoint only drops its own messages
BEGIN;
SELECT pipeline_kafka.produce_message('t', 'kept', partition := -1, key := 'k',
       headers := '{"source": "regress", "empty": null}', "timestamp" := '2026-01-01 00:00:00+00') > 0 AS queued;
SAVEPOINT s;
SELECT pipeline_kafka.produce_message('t', 'dropped') > 0 AS queued;
ROLLBACK TO SAVEPOINT s;
SELECT topic, "partition", convert_from(key, 'UTF8') AS key, convert_from(value, 'UTF8') AS value, headers, "timestamp"
FROM pipeline_kafka.outbox ORDER BY id;
SELECT topic, pending FROM pipeline_kafka.outbox_status;
ROLLBACK;
SELECT count(*) AS after_rollback FROM pipeline_kafka.outbox;

-- emit_tuple: the row as JSON, key from a column, DELETE as a keyed tombstone
CREATE TABLE ev (id int PRIMARY KEY, name text, tags text[], doc jsonb);
CREATE TRIGGER ev_emit AFTER INSERT OR UPDATE OR DELETE ON ev
  FOR EACH ROW EXECUTE FUNCTION pipeline_kafka.emit_tuple('events', '-1', 'id');
BEGIN;
INSERT INTO ev VALUES (1, 'a', '{x,y}', '{"n": 1}'), (2, NULL, NULL, NULL);
UPDATE ev SET name = 'b' WHERE id = 1;
DELETE FROM ev WHERE id = 2;
SELECT topic, "partition", convert_from(key, 'UTF8') AS key, convert_from(value, 'UTF8') AS value
FROM pipeline_kafka.outbox ORDER BY id;
ROLLBACK;
DROP TRIGGER ev_emit ON ev;

-- misuse is refused when the trigger is created (0.7.0), with the SQLSTATE it raises when it fires
SELECT regress.try($$CREATE TRIGGER ev_before BEFORE INSERT ON ev FOR EACH ROW EXECUTE FUNCTION pipeline_kafka.emit_tuple('events')$$);
SELECT regress.try($$CREATE TRIGGER ev_stmt AFTER INSERT ON ev FOR EACH STATEMENT EXECUTE FUNCTION pipeline_kafka.emit_tuple('events')$$);
SELECT regress.try($$CREATE TRIGGER ev_trunc AFTER TRUNCATE ON ev FOR EACH STATEMENT EXECUTE FUNCTION pipeline_kafka.emit_tuple('events')$$);
SELECT regress.try($$CREATE TRIGGER ev_nokey AFTER INSERT ON ev FOR EACH ROW EXECUTE FUNCTION pipeline_kafka.emit_tuple('events', '-1', 'no_such_column')$$);
SELECT regress.try($$CREATE TRIGGER ev_badpart AFTER INSERT ON ev FOR EACH ROW EXECUTE FUNCTION pipeline_kafka.emit_tuple('events', 'first')$$);
SELECT regress.try($$CREATE TRIGGER ev_notopic AFTER INSERT ON ev FOR EACH ROW EXECUTE FUNCTION pipeline_kafka.emit_tuple()$$);
SELECT regress.try($$CREATE TRIGGER ev_badtopic AFTER INSERT ON ev FOR EACH ROW EXECUTE FUNCTION pipeline_kafka.emit_tuple('bad topic')$$);
SELECT regress.try($$CREATE TRIGGER ev_delnokey AFTER DELETE ON ev FOR EACH ROW EXECUTE FUNCTION pipeline_kafka.emit_tuple('events')$$);
SELECT count(*) AS emit_triggers FROM pg_trigger WHERE tgrelid = 'ev'::regclass;
-- and still when it fires: a key column dropped after the trigger was created
CREATE TABLE ev_drop (id int, k text);
CREATE TRIGGER ev_drop_emit AFTER INSERT ON ev_drop FOR EACH ROW EXECUTE FUNCTION pipeline_kafka.emit_tuple('events', '-1', 'k');
ALTER TABLE ev_drop DROP COLUMN k;
SELECT regress.try($$INSERT INTO ev_drop VALUES (1)$$);
DROP TABLE ev_drop;
SELECT count(*) AS outbox_rows FROM pipeline_kafka.outbox;

-- producing is granted, not public
CREATE ROLE regress_producer;
SET ROLE regress_producer;
SELECT regress.try($$SELECT pipeline_kafka.produce_message('t', 'm')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION pipeline_kafka.produce_message(text, bytea, integer, bytea, jsonb, timestamptz) TO regress_producer;
SET ROLE regress_producer;
BEGIN;
SELECT pipeline_kafka.produce_message('t', 'm'::bytea) > 0 AS queued;
SELECT regress.try($$SELECT count(*) FROM pipeline_kafka.outbox$$);
ROLLBACK;
-- an untyped literal message resolves to the text version, granted on its own
SELECT regress.try($$SELECT pipeline_kafka.produce_message('t', 'm')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION pipeline_kafka.produce_message(text, text, integer, text, jsonb, timestamptz) TO regress_producer;
SET ROLE regress_producer;
BEGIN;
SELECT pipeline_kafka.produce_message('t', 'm') > 0 AS queued;
SELECT pipeline_kafka.produce_message('t', 'm'::text, key := 'k'::text) > 0 AS queued;
ROLLBACK;
RESET ROLE;
DROP OWNED BY regress_producer;
DROP ROLE regress_producer;

DROP TABLE ev;
SELECT pipeline_kafka.remove_broker('127.0.0.1:1');
