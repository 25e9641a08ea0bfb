-- Client settings, NULL arguments and size limits (issue 11, items 1, 12, 13): all refused
-- before any broker is contacted.

CREATE TABLE settings_target (id int, v text);

-- NULL required arguments are 22004 everywhere (no function is STRICT)
SELECT regress.try($$SELECT pipeline_kafka.remove_broker(NULL)$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_end(NULL, 'settings_target')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_end('topic', NULL)$$);
SELECT regress.try($$SELECT pipeline_kinesis.remove_endpoint(NULL)$$);
SELECT regress.try($$SELECT pipeline_kafka.topic_watermarks(NULL)$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', columns := ARRAY[NULL])$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', columns := ARRAY['id', NULL])$$);
SELECT proname FROM pg_catalog.pg_proc
WHERE pronamespace IN ('pipeline_kafka'::regnamespace, 'pipeline_kinesis'::regnamespace) AND proisstrict AND pronargs > 0
ORDER BY 1;

-- numbers out of a double's range are a bad value (22023), not a crash (the message depends on
-- how serde_json is built)
SELECT regress.sqlstate_of($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', config := '{"fetch.wait.max.ms": 1e400}')$$);
SELECT regress.sqlstate_of($$SELECT pipeline_kafka.add_broker('127.0.0.1:9', '{"x": 1e400}')$$);
SELECT regress.sqlstate_of($$SELECT pipeline_kafka.produce_message('topic', 'm', headers := '{"h": 1e400}')$$);

-- lengths and syntax
SELECT regress.try($$SELECT pipeline_kafka.add_broker(repeat('a', 100000))$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker(repeat('a', 256) || ':9092')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('a;b:9092')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin(repeat('t', 250), 'settings_target')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('two words', 'settings_target')$$);
SELECT regress.try($$SELECT pipeline_kafka.topic_watermarks(repeat('t', 250))$$);
SELECT regress.try($$SELECT pipeline_kafka.produce_message(repeat('t', 250), 'm')$$);
SELECT regress.try(format($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', config := '{"%s": 1}')$$, repeat('k', 256)));
SELECT regress.try(format($$SELECT pipeline_kafka.add_broker('127.0.0.1:9', '{"ssl.ca.pem": "%s"}')$$, repeat('p', 1048577)));
SELECT count(*) AS brokers FROM pipeline_kafka.brokers;

-- settings the extension manages: refused under every name, for everyone
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', config := '{"topic.enable.auto.commit": true}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', config := '{"auto.commit.enable": true}')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('127.0.0.1:9', '{"bootstrap.servers": "x:1"}')$$);
-- where a consumer starts is the extension's (start_offset, start_time): auto.offset.reset too
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', config := '{"auto.offset.reset": "earliest"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', config := '{"topic.auto.offset.reset": "latest"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('127.0.0.1:9', '{"auto.offset.reset": "smallest"}')$$);

-- a role that is not a superuser: only the allow-listed tuning settings
CREATE ROLE regress_settings_user;
ALTER TABLE settings_target OWNER TO regress_settings_user;
SET ROLE regress_settings_user;
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', config := '{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "GSSAPI", "sasl.kerberos.kinit.cmd": "id > /tmp/x"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', config := '{"plugin.library.paths": "/tmp/x.so"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', config := '{"ssl.ca.location": "/etc/passwd"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', config := '{"sasl.mechanism": "PLAIN"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', config := '{"FETCH.WAIT.MAX.MS": 1}')$$);
-- allowed (then refused for want of a broker: the settings passed)
SELECT regress.try($$SELECT pipeline_kafka.consume_begin('topic', 'settings_target', config := '{"fetch.wait.max.ms": 50, "max.partition.fetch.bytes": 65536, "socket.keepalive.enable": true}')$$);
-- pipeline_ingest.broker_timeout is superuser-only
SELECT regress.try($$SET pipeline_ingest.broker_timeout = '600s'$$);
SELECT regress.try($$SET pipeline_ingest.broker_timeout = '1s'$$);
RESET ROLE;
SELECT regress.try($$SET pipeline_ingest.broker_timeout = '61s'$$);
SELECT regress.try($$SET pipeline_ingest.broker_timeout = '60s'$$);
RESET pipeline_ingest.broker_timeout;
SELECT count(*) AS consumers FROM pipeline_kafka.consumers;

DROP TABLE settings_target;
DROP ROLE regress_settings_user;
