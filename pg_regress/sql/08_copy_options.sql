-- Format options are judged by PostgreSQL's own COPY option code at consume_begin (issue 11,
-- item 10): what COPY FROM would refuse is refused here, with COPY's message and SQLSTATE,
-- instead of a consumer whose every message fails. No broker is configured, so options that
-- pass stop at the broker check (55000): that error is the sign they were accepted.

CREATE TABLE copy_opts (id int, v text);
SELECT count(*) AS brokers FROM pipeline_kafka.brokers;

-- text format: COPY refuses a delimiter that its escapes or \N / \. could mean
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', delimiter := '.')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', delimiter := 'N')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', delimiter := 'a')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', delimiter := '7')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', delimiter := E'\\')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', delimiter := E'\n')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', delimiter := E'\r')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', delimiter := '')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', delimiter := '||')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', delimiter := 'é')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', quote := '''')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', escape := E'\\')$$);
-- accepted
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', delimiter := '|')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', delimiter := ',')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', format := 'TEXT')$$);

-- csv: quote and escape are single bytes, the delimiter differs from the quote
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', format := 'csv', delimiter := '"')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', format := 'csv', delimiter := ';', quote := ';')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', format := 'csv', delimiter := E'\r')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', format := 'csv', quote := '')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', format := 'csv', quote := '''''')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', format := 'csv', escape := 'ab')$$);
-- accepted (in csv, letters and periods may delimit: fields can be quoted)
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', format := 'csv', delimiter := '.')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', format := 'csv', delimiter := ';', quote := '''', escape := E'\\')$$);

-- json: no delimiter, quote or escape; unknown formats
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', format := 'json', delimiter := '|')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', format := 'json', quote := '"')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', format := 'binary')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('t', 'copy_opts', format := 'json')$$);

-- nothing was stored
SELECT count(*) AS consumers FROM pipeline_kafka.consumers WHERE relation = 'copy_opts'::regclass;
DROP TABLE copy_opts;
