-- add_broker / remove_broker: validation and SQLSTATEs.

SELECT regress.try($$SELECT pipeline_kafka.add_broker('127.0.0.1:29092')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('kafka-1.example.com')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('[::1]:9093')$$);
SELECT host, config FROM pipeline_kafka.brokers ORDER BY host;

-- duplicates, malformed addresses, unknown brokers
SELECT regress.try($$SELECT pipeline_kafka.add_broker('127.0.0.1:29092')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('host:0')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('host:99999')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('host:port')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker(':9092')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('a:1,b:2')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('two words')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker(NULL)$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('127.0.0.1:9', '{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password": "hunter2"}')$$);
SELECT host, config FROM pipeline_kafka.brokers WHERE host = '127.0.0.1:9';
SELECT broker, key FROM pipeline_kafka.secrets;
SELECT regress.try($$SELECT pipeline_kafka.add_broker('127.0.0.1:10', '{"security.protocol": "NONSENSE"}')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('127.0.0.1:10', '{"enable.auto.commit": true}')$$);
SELECT regress.try($$SELECT pipeline_kafka.add_broker('127.0.0.1:10', '"x"')$$);
SELECT regress.try($$SELECT pipeline_kafka.remove_broker('127.0.0.1:9')$$);
SELECT count(*) AS secrets_left FROM pipeline_kafka.secrets;
SELECT regress.try($$SELECT pipeline_kafka.remove_broker('nope:9092')$$);

SELECT regress.try($$SELECT pipeline_kafka.remove_broker('kafka-1.example.com')$$);
SELECT regress.try($$SELECT pipeline_kafka.remove_broker('[::1]:9093')$$);
SELECT host FROM pipeline_kafka.brokers ORDER BY host;

-- a rolled-back add_broker leaves nothing
BEGIN;
SELECT pipeline_kafka.add_broker('rolled.back:9092');
ROLLBACK;
SELECT count(*) AS rolled_back_brokers FROM pipeline_kafka.brokers WHERE host = 'rolled.back:9092';

SELECT regress.try($$SELECT pipeline_kafka.remove_broker('127.0.0.1:29092')$$);
SELECT count(*) AS brokers_left FROM pipeline_kafka.brokers;
