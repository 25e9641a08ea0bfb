-- consume_begin's transform, mode, key_columns and key_format: every argument error with its
-- SQLSTATE (checked before any broker or endpoint is asked), then what a Kinesis consumer with a
-- transform or an upsert stores (consume_end in the same transaction: no worker starts).

CREATE TABLE w_target (id int PRIMARY KEY, v text);
CREATE TABLE w_other (x int);
CREATE TABLE w_nokey (id int, v text);
CREATE TABLE w_composite (a int, b text, v text, UNIQUE (b, a));
CREATE TABLE w_partial (id int, v text);
CREATE UNIQUE INDEX ON w_partial (id) WHERE id > 0;
CREATE TABLE w_deferred (id int UNIQUE DEFERRABLE, v text);
CREATE FUNCTION w_void(pipeline_kafka.message[]) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION w_rows(pipeline_kafka.message[]) RETURNS SETOF w_target LANGUAGE sql AS $$ SELECT 1, 'x' $$;
CREATE FUNCTION w_one_row(pipeline_kafka.message[]) RETURNS w_target LANGUAGE sql AS $$ SELECT 1, 'x' $$;
CREATE FUNCTION w_int(pipeline_kafka.message[]) RETURNS SETOF int LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION w_two(pipeline_kafka.message[], int) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION w_text(text) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION w_kinesis(pipeline_kinesis.record[]) RETURNS SETOF w_target LANGUAGE sql AS $$ SELECT 1, 'x' $$;
CREATE PROCEDURE w_proc(pipeline_kafka.message[]) LANGUAGE sql AS $$ SELECT $$;

-- transform: a function of exactly one pipeline_kafka.message[] (42883) ...
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'w_text(text)')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'w_two(pipeline_kafka.message[], int)')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'w_kinesis(pipeline_kinesis.record[])')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'w_proc(pipeline_kafka.message[])')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'no_such(pipeline_kafka.message[])')$$);
-- ... returning void or SETOF the relation's row type (42804)
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'w_int(pipeline_kafka.message[])')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'w_one_row(pipeline_kafka.message[])')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_other', transform := 'w_rows(pipeline_kafka.message[])')$$);
-- the value settings do not apply to a transform (22023)
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'w_void(pipeline_kafka.message[])', format := 'json')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'w_void(pipeline_kafka.message[])', delimiter := ';')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'w_void(pipeline_kafka.message[])', columns := ARRAY['id'])$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'w_void(pipeline_kafka.message[])', mode := 'upsert')$$);
-- the consumer's owner (the table's) must be allowed to EXECUTE it (42501)
CREATE ROLE regress_writer;
CREATE TABLE w_owned (id int PRIMARY KEY, v text);
ALTER TABLE w_owned OWNER TO regress_writer;
CREATE FUNCTION w_private(pipeline_kafka.message[]) RETURNS void LANGUAGE sql AS $$ SELECT $$;
REVOKE EXECUTE ON FUNCTION w_private(pipeline_kafka.message[]) FROM PUBLIC;
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_owned', transform := 'w_private(pipeline_kafka.message[])')$$);
-- a valid transform gets as far as the broker check
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'w_void(pipeline_kafka.message[])')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'w_rows(pipeline_kafka.message[])')$$);
-- a regprocedure names the argument types
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', transform := 'w_rows')$$);

-- mode and keys
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', mode := 'merge')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', mode := NULL)$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', key_columns := ARRAY['id'])$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', key_format := 'json')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', mode := 'upsert', key_format := 'xml')$$);
-- no primary key, no matching unique index, a partial or deferrable one (42P10)
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_nokey', mode := 'upsert')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_nokey', mode := 'upsert', key_columns := ARRAY['id'])$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', mode := 'upsert', key_columns := ARRAY['v'])$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_composite', mode := 'upsert', key_columns := ARRAY['a'], key_format := 'csv')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_partial', mode := 'upsert', key_columns := ARRAY['id'])$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_deferred', mode := 'upsert', key_columns := ARRAY['id'])$$);
-- unknown, repeated, NULL or no key columns
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', mode := 'upsert', key_columns := ARRAY['nope'])$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_composite', mode := 'upsert', key_columns := ARRAY['a', 'a'], key_format := 'csv')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', mode := 'upsert', key_columns := ARRAY[NULL])$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', mode := 'upsert', key_columns := '{}')$$);
-- several key columns need a key_format; text/csv values hold the keys
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_composite', mode := 'upsert', key_columns := ARRAY['a', 'b'])$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', mode := 'upsert', format := 'csv', columns := ARRAY['v'])$$);
-- valid upserts get as far as the broker check (55000)
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_target', mode := 'upsert')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'w_composite', mode := 'upsert', key_columns := ARRAY['a', 'b'], key_format := 'json', format := 'json')$$);

-- Kinesis: the same checks, with pipeline_kinesis.record[]
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('nowhere', 'pi_regress', 'w_target', transform := 'w_rows(pipeline_kafka.message[])')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('nowhere', 'pi_regress', 'w_nokey', mode := 'upsert')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('nowhere', 'pi_regress', 'w_target', transform := 'w_kinesis(pipeline_kinesis.record[])')$$);
DO $$ BEGIN
  PERFORM pipeline_kinesis.add_endpoint('writers', 'us-east-1', NULL, current_setting('regress.kinesis_url'));
END $$;
BEGIN;
SELECT pipeline_kinesis.consume_begin('writers', 'pi_regress', 'w_target', transform := 'w_kinesis(pipeline_kinesis.record[])') > 0 AS started;
SELECT pipeline_kinesis.consume_end('writers', 'pi_regress', 'w_target');
SELECT pipeline_kinesis.consume_begin('writers', 'pi_regress', 'w_composite', mode := 'upsert', key_columns := ARRAY['b', 'a'], key_format := 'text') > 0 AS started;
SELECT pipeline_kinesis.consume_end('writers', 'pi_regress', 'w_composite');
SELECT pipeline_kinesis.consume_begin('writers', 'pi_regress', 'w_owned', mode := 'upsert') > 0 AS started;
SELECT pipeline_kinesis.consume_end('writers', 'pi_regress', 'w_owned');
SELECT relation, transform, mode, key_columns, key_format FROM pipeline_kinesis.consumers
WHERE endpoint = 'writers' ORDER BY relation::text;
ROLLBACK;
SELECT pipeline_kinesis.remove_endpoint('writers');

DROP TABLE w_target, w_other, w_nokey, w_composite, w_partial, w_deferred, w_owned CASCADE;
DROP FUNCTION w_void, w_int, w_two, w_text, w_private;
DROP PROCEDURE w_proc;
DROP ROLE regress_writer;
