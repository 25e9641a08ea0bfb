-- The extension creates its schemas and catalog tables; rows survive pg_dump; the catalog is
-- readable by everyone and writable by no one but the extension's functions.
CREATE EXTENSION pipeline_ingest;

-- Helpers for the following files: run a statement, return 'ok' or its SQLSTATE and message.
CREATE SCHEMA regress;
CREATE FUNCTION regress.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE FUNCTION regress.sqlstate_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE;
END $$;
GRANT USAGE ON SCHEMA regress TO PUBLIC;

SELECT n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('pipeline_kafka', 'pipeline_kinesis') AND c.relkind IN ('r', 'v')
ORDER BY 1, 2;

SELECT attrelid::regclass AS tbl, attname, format_type(atttypid, atttypmod) AS type, attnotnull
FROM pg_attribute
WHERE attrelid IN ('pipeline_kafka.consumers'::regclass, 'pipeline_kafka.offsets'::regclass,
                   'pipeline_kinesis.seqnums'::regclass)
  AND attnum > 0 AND NOT attisdropped
ORDER BY attrelid::regclass::text, attnum;

-- pg_dump keeps the catalog rows
SELECT c::regclass AS dumped FROM pg_extension, unnest(extconfig) AS c WHERE extname = 'pipeline_ingest' ORDER BY c::regclass::text;

-- every function is VOLATILE (they have side effects) and none is SECURITY DEFINER
SELECT p.oid::regprocedure AS function, p.provolatile, p.prosecdef
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname IN ('pipeline_kafka', 'pipeline_kinesis')
ORDER BY p.oid::regprocedure::text;

-- broker and endpoint management is for superusers (or roles granted EXECUTE)
SELECT p.oid::regprocedure AS function, has_function_privilege('public', p.oid, 'EXECUTE') AS public_may_execute
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname IN ('pipeline_kafka', 'pipeline_kinesis')
ORDER BY p.oid::regprocedure::text;

CREATE ROLE regress_reader;
SET ROLE regress_reader;
SELECT count(*) FROM pipeline_kafka.brokers;
INSERT INTO pipeline_kafka.brokers (host) VALUES ('sneaky:9092');
SELECT pipeline_kafka.add_broker('sneaky:9092');
RESET ROLE;
DROP ROLE regress_reader;
