-- consume_begin's metadata columns, format raw and json into one json column: the argument checks
-- that need no broker. A check that passes shows as the next error (mode 'bogus': 22023 from the
-- write settings, checked after metadata; Kinesis: the unknown endpoint, 42704).

CREATE TABLE meta_t (id int, v text, part int, off bigint, k bytea, kt text, ts timestamptz, h jsonb,
                     src text, small smallint, gen int GENERATED ALWAYS AS (id + 1) STORED);

-- Kafka: every field into a column that can hold it
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', mode := 'bogus',
    metadata := '{"topic": "src", "partition": "part", "offset": "off", "key": "k", "timestamp": "ts", "headers": "h"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', mode := 'bogus', metadata := '{"key": "kt"}')$$);
-- not an object of column names, unknown fields (a Kinesis field on the Kafka side too): 22023
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', metadata := '["offset"]')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', metadata := '{"offset": 1}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', metadata := '{"ofset": "off"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', metadata := '{"shard_id": "src"}')$$);
-- unknown or generated column: 42703
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', metadata := '{"offset": "nope"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', metadata := '{"partition": "gen"}')$$);
-- a type that cannot hold the field: 42804
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', metadata := '{"offset": "part"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', metadata := '{"partition": "small"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', metadata := '{"timestamp": "v"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', metadata := '{"headers": "v"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', metadata := '{"key": "part"}')$$);
-- the same column twice (two fields, or a field and columns): 42701
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', metadata := '{"offset": "off", "partition": "off"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_t', columns := ARRAY['id', 'off'], metadata := '{"offset": "off"}')$$);
-- no column left for the data: 42P10
CREATE TABLE meta_only (off bigint, k text);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_only', format := 'csv', metadata := '{"offset": "off", "key": "k"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'meta_only', format := 'json', metadata := '{"offset": "off", "key": "k"}')$$);
DROP TABLE meta_only;

-- format raw: no delimiter, quote, escape or column list (22023); exactly one data column (42P10)
CREATE TABLE raw_one (v bytea);
CREATE TABLE raw_meta (v text, off bigint, k text);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'raw_one', format := 'raw', mode := 'bogus')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'raw_meta', format := 'raw', mode := 'bogus',
    metadata := '{"offset": "off", "key": "k"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'raw_meta', format := 'raw')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'raw_meta', format := 'raw', metadata := '{"offset": "off"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'raw_meta', format := 'raw', metadata := '{"offset": "off", "key": "k", "topic": "v"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'raw_one', format := 'raw', delimiter := ',')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'raw_one', format := 'raw', quote := '"')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'raw_one', format := 'raw', escape := '\')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'raw_one', format := 'raw', columns := ARRAY['v'])$$);

-- Kinesis: its own fields; Kafka's are unknown there
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('nope', 'stream', 'meta_t',
    metadata := '{"stream": "src", "shard_id": "v", "sequence_number": "kt", "partition_key": "k", "arrival_time": "ts"}')$$);
CREATE TABLE kin_seq (seq numeric, pk text);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('nope', 'stream', 'kin_seq', format := 'raw',
    metadata := '{"sequence_number": "seq"}')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('nope', 'stream', 'meta_t', metadata := '{"offset": "off"}')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('nope', 'stream', 'meta_t', metadata := '{"sequence_number": "off"}')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('nope', 'stream', 'meta_t', metadata := '{"arrival_time": "nope"}')$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('nope', 'stream', 'raw_one', format := 'raw', columns := ARRAY['v'])$$);
SELECT regress.try($$SELECT pipeline_kinesis.consume_begin('nope', 'stream', 'raw_meta', format := 'raw')$$);

DROP TABLE meta_t, raw_one, raw_meta, kin_seq;
