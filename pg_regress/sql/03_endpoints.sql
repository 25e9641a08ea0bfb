-- add_endpoint / remove_endpoint: validation and SQLSTATEs.

SELECT regress.try($$SELECT pipeline_kinesis.add_endpoint('local', 'us-east-1', NULL, 'http://127.0.0.1:24567')$$);
SELECT regress.try($$SELECT pipeline_kinesis.add_endpoint('aws', 'eu-west-1')$$);
-- credfile is checked at the call, as the server process that will read it: a missing file is
-- 58P01, a relative path or a directory 22023 (an unreadable one is 42501: test_kinesis_api.py).
SELECT regress.try($$SELECT pipeline_kinesis.add_endpoint(name := 'creds', region := 'us-west-2', credfile := '/nonexistent/aws/credentials')$$);
SELECT regress.try($$SELECT pipeline_kinesis.add_endpoint(name := 'creds', region := 'us-west-2', credfile := 'credentials')$$);
SELECT regress.try($$SELECT pipeline_kinesis.add_endpoint(name := 'creds', region := 'us-west-2', credfile := '/tmp')$$);
COPY (SELECT '[default]') TO '/tmp/pipeline_ingest_regress_credentials';
SELECT regress.try($$SELECT pipeline_kinesis.add_endpoint(name := 'creds', region := 'us-west-2', credfile := '/tmp/pipeline_ingest_regress_credentials')$$);
SELECT name, region, credfile, url FROM pipeline_kinesis.endpoints ORDER BY name;

SELECT regress.try($$SELECT pipeline_kinesis.add_endpoint('local', 'us-east-1')$$);
SELECT regress.try($$SELECT pipeline_kinesis.add_endpoint('', 'us-east-1')$$);
SELECT regress.try($$SELECT pipeline_kinesis.add_endpoint(NULL, 'us-east-1')$$);
SELECT regress.try($$SELECT pipeline_kinesis.add_endpoint('x', '')$$);
SELECT regress.try($$SELECT pipeline_kinesis.add_endpoint('x', ' ')$$);
SELECT regress.try($$SELECT pipeline_kinesis.add_endpoint('x', 'us-east-1', NULL, 'ftp://somewhere')$$);
SELECT regress.try($$SELECT pipeline_kinesis.add_endpoint('x', 'us-east-1', '')$$);
SELECT regress.try($$SELECT pipeline_kinesis.remove_endpoint('nope')$$);

-- an endpoint in use by a consumer cannot be removed
CREATE TABLE kinesis_target (v text);
INSERT INTO pipeline_kinesis.consumers (endpoint, stream, relation, owner) VALUES ('local', 's', 'kinesis_target', current_user::regrole);
SELECT regress.try($$SELECT pipeline_kinesis.remove_endpoint('local')$$);
DELETE FROM pipeline_kinesis.consumers;
SELECT regress.try($$SELECT pipeline_kinesis.remove_endpoint('local')$$);
SELECT regress.try($$SELECT pipeline_kinesis.remove_endpoint('aws')$$);
SELECT regress.try($$SELECT pipeline_kinesis.remove_endpoint('creds')$$);
SELECT count(*) AS endpoints_left FROM pipeline_kinesis.endpoints;
DROP TABLE kinesis_target;
