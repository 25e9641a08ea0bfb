"""Upgrades: a database created at an earlier release (0.8.0, 0.7.0, 0.6.0, 0.5.0, 0.4.0, 0.3.0, 0.2.0, 0.1.0, each through the later ones) with a
consumer, a Kinesis endpoint and pending outbox rows is updated in place by ALTER EXTENSION
pipeline_ingest UPDATE. It keeps its consumers, offsets, endpoints and outbox, continues exactly
once, and ends with the same schema as a fresh install of the current version (so every catalog
change is in the upgrade scripts)."""
from __future__ import annotations

import pytest

from pihelpers import (KAFKA_BOOTSTRAP, KINESIS_ENDPOINT, consume_all, fresh_db, pg_connect, produce, query, scalar, unique_name,
                       wait_until)

PREVIOUS = "0.8.0"
# Releases a database may have been created at, each updated to the current version.
RELEASES = ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0"]

# Everything the extension's schema is made of, described by names (not oids) so that two
# databases can be compared.
SCHEMA_QUERIES = {
    "relations": """
        SELECT n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relacl::text, c.reloptions::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('pipeline_kafka', 'pipeline_kinesis') ORDER BY 1, 2""",
    "columns": """
        SELECT n.nspname, c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attacl::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname IN ('pipeline_kafka', 'pipeline_kinesis') AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2, 3""",
    "constraints": """
        SELECT n.nspname, c.relname, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('pipeline_kafka', 'pipeline_kinesis') ORDER BY 1, 2, 3""",
    "indexes": """
        SELECT schemaname, tablename, regexp_replace(indexdef, 'INDEX \\S+ ON', 'INDEX ON')
        FROM pg_indexes WHERE schemaname IN ('pipeline_kafka', 'pipeline_kinesis') ORDER BY 1, 2, 3""",
    "views": """
        SELECT schemaname, viewname, definition FROM pg_views
        WHERE schemaname IN ('pipeline_kafka', 'pipeline_kinesis') ORDER BY 1, 2""",
    "policies": """
        SELECT schemaname, tablename, policyname, cmd, roles::text, qual, with_check FROM pg_policies
        WHERE schemaname IN ('pipeline_kafka', 'pipeline_kinesis') ORDER BY 1, 2, 3""",
    "functions": """
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid),
               p.proacl::text
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('pipeline_kafka', 'pipeline_kinesis') ORDER BY 1, 2, 3""",
    "types": """
        SELECT n.nspname, t.typname, t.typtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname IN ('pipeline_kafka', 'pipeline_kinesis') AND t.typtype IN ('c', 'e', 'd')
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid AND c.relkind <> 'c')
        ORDER BY 1, 2""",
    "members": """
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d
        JOIN pg_extension e ON e.oid = d.refobjid AND d.refclassid = 'pg_extension'::regclass
        WHERE e.extname = 'pipeline_ingest' AND d.deptype = 'e' ORDER BY 1""",
    "comments": """
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid), c.description FROM pg_depend d
        JOIN pg_extension e ON e.oid = d.refobjid AND d.refclassid = 'pg_extension'::regclass
        LEFT JOIN pg_description c ON c.classoid = d.classid AND c.objoid = d.objid AND c.objsubid = 0
        WHERE e.extname = 'pipeline_ingest' AND d.deptype = 'e' ORDER BY 1""",
    "dumped": """
        SELECT c::regclass::text, coalesce(e.extcondition[array_position(e.extconfig, c)], '')
        FROM pg_extension e, unnest(e.extconfig) AS c WHERE e.extname = 'pipeline_ingest' ORDER BY 1""",
    "schema_acl": """
        SELECT nspname, nspacl::text FROM pg_namespace WHERE nspname IN ('pipeline_kafka', 'pipeline_kinesis')
        ORDER BY 1""",
}


def _schema(db: str) -> dict[str, list[tuple]]:
    return {name: query(db, sql) for name, sql in SCHEMA_QUERIES.items()}


def test_previous_version_is_installable_and_current_is_default():
    assert scalar("postgres", "SELECT default_version FROM pg_available_extensions WHERE name = 'pipeline_ingest'") \
        != PREVIOUS
    versions = {r[0] for r in query("postgres", "SELECT version FROM pg_available_extension_versions "
                                                "WHERE name = 'pipeline_ingest'")}
    assert set(RELEASES) <= versions and len(versions) >= 9
    current = scalar("postgres", "SELECT default_version FROM pg_available_extensions WHERE name = 'pipeline_ingest'")
    # 0.1.0 is updated through every later release, with the scripts of each step.
    assert scalar("postgres", "SELECT path FROM pg_extension_update_paths('pipeline_ingest') "
                              "WHERE source = '0.1.0' AND target = %s", (current,)) == f"0.1.0--0.2.0--0.3.0--0.4.0--0.5.0--0.6.0--0.7.0--0.8.0--{current}"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("release", RELEASES)
def test_update_keeps_consumers_offsets_and_outbox_and_matches_a_fresh_install(topic_factory, release):
    topic = topic_factory(1)
    out_topic = topic_factory(1)
    produce(topic, [f"{i},old" for i in range(100)])
    current = scalar("postgres", "SELECT default_version FROM pg_available_extensions WHERE name = 'pipeline_ingest'")
    marker = unique_name("upgraded")
    with fresh_db(extension=False) as old, fresh_db() as fresh:
        with pg_connect(old) as conn:
            conn.execute(f"CREATE EXTENSION pipeline_ingest VERSION '{release}'")
            conn.execute("CREATE TABLE t (id int, v text)")
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
            conn.execute("SELECT pipeline_kinesis.add_endpoint('local', 'us-east-1', NULL, %s)", (KINESIS_ENDPOINT,))
            # A consumer that (as if the previous release had ingested the first half) stands at offset 50.
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := 50)", (topic,))
            conn.execute("SELECT pipeline_kafka.produce_message(%s, %s::bytea)", (out_topic, marker.encode()))
        assert scalar(old, "SELECT extversion FROM pg_extension WHERE extname = 'pipeline_ingest'") == release
        assert query(old, "SELECT \"partition\", \"offset\" FROM pipeline_kafka.offsets") == [(0, 50)]

        with pg_connect(old) as conn:
            conn.execute("ALTER EXTENSION pipeline_ingest UPDATE")
        assert scalar(old, "SELECT extversion FROM pg_extension WHERE extname = 'pipeline_ingest'") == current
        assert query(old, "SELECT name, region, url FROM pipeline_kinesis.endpoints") == [
            ("local", "us-east-1", KINESIS_ENDPOINT)]

        # The consumer resumes from its stored offset: exactly messages 50..99, then new ones.
        wait_until(lambda: scalar(old, "SELECT count(*) FROM t") == 50, timeout=60, what="50 rows after the update")
        produce(topic, [f"{i},new" for i in range(100, 120)])
        wait_until(lambda: scalar(old, "SELECT count(*) FROM t") == 70, timeout=60, what="70 rows")
        assert query(old, "SELECT min(id), max(id), count(DISTINCT id) FROM t") == [(50, 119, 70)]
        # The outbox row written before the update is delivered once.
        msgs = consume_all(out_topic, timeout=30, min_messages=1)
        assert [m["value"] for m in msgs] == [marker.encode()]
        wait_until(lambda: scalar(old, "SELECT count(*) FROM pipeline_kafka.outbox") == 0, timeout=30,
                   what="the outbox to drain")

        # Same schema as a fresh install of the current version.
        upgraded, installed = _schema(old), _schema(fresh)
        for part in SCHEMA_QUERIES:
            assert upgraded[part] == installed[part], f"{part} differ between an upgraded and a fresh install"
