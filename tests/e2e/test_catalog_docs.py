"""The extension describes itself (issue 24.11): every object it owns has a COMMENT (so `\\df+`,
`\\d+`, `\\dT+`, `\\dn+` explain it), and README.md documents every function and every column of
its tables and views. New objects that miss either fail here."""
from __future__ import annotations

import re
from pathlib import Path

from pihelpers import query

README = Path(__file__).resolve().parents[2] / "README.md"

# Every object the extension owns (pg_depend deptype 'e'): schemas, types, functions, tables,
# views, sequences, and whatever kind is added later; its comment is in pg_description.
MEMBERS_WITHOUT_COMMENT = """
    SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
    FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'pipeline_ingest'
      AND NOT EXISTS (SELECT 1 FROM pg_description c
                      WHERE c.classoid = d.classid AND c.objoid = d.objid AND c.objsubid = 0
                        AND c.description <> '')
      -- PostgreSQL 18 records the types a table, view or composite type implies (its row type and
      -- their array types) as members of the extension too: they are described by their relation
      AND NOT EXISTS (SELECT 1 FROM pg_type t LEFT JOIN pg_class r ON r.oid = t.typrelid
                      WHERE d.classid = 'pg_type'::regclass AND t.oid = d.objid
                        AND (t.typcategory = 'A' OR r.relkind IN ('r', 'p', 'v', 'm')))
    ORDER BY 1"""

MEMBERS = """
    SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
    FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'pipeline_ingest'"""

RELATION_COLUMNS = """
    SELECT n.nspname, c.relname, c.relkind, array_agg(a.attname::text ORDER BY a.attnum)
    FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'pipeline_ingest'
      AND c.relkind IN ('r', 'p', 'v')
    GROUP BY 1, 2, 3 ORDER BY 1, 2"""

FUNCTIONS = """
    SELECT DISTINCT n.nspname, p.proname
    FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
    JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'pipeline_ingest'
    ORDER BY 1, 2"""


def _code_words(text: str) -> set[str]:
    """Every identifier that appears inside `code` spans or ``` blocks of the README."""
    spans = re.findall(r"```.*?```", text, re.S) + re.findall(r"`[^`\n]+`", re.sub(r"```.*?```", "", text, flags=re.S))
    return {w for s in spans for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", s)}


def test_every_object_of_the_extension_has_a_comment(fresh_db):
    assert len(query(fresh_db, MEMBERS)) > 40, "the member query finds the extension's objects"
    missing = [r[0] for r in query(fresh_db, MEMBERS_WITHOUT_COMMENT)]
    assert not missing, ("objects of the extension without a COMMENT (add one in sql/finalize.sql and the "
                         f"upgrade script): {missing}")


def test_every_table_column_is_in_the_readme_catalog_and_every_view_column_in_the_readme(fresh_db):
    """A table's columns are listed in its row of README "Catalog" (`schema.table(col, col, ...)`);
    a view's columns each appear in the README's code (its "Columns: ..." list)."""
    text = README.read_text()
    words = _code_words(text)
    problems = []
    for schema, rel, kind, columns in query(fresh_db, RELATION_COLUMNS):
        name = f"{schema}.{rel}"
        if kind == "v":
            missing = [c for c in columns if c not in words]
            if missing:
                problems.append(f"view {name}: columns {missing} appear nowhere in the README's code")
            continue
        rows = re.findall(rf"`{re.escape(name)}\(([^`]*)\)`", text)
        if not rows:
            problems.append(f"table {name}: no `{name}(col, ...)` entry in README \"Catalog\"")
            continue
        listed = {w for r in rows for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", r)}
        missing = [c for c in columns if c not in listed]
        if missing:
            problems.append(f"table {name}: README \"Catalog\" lacks columns {missing}")
    assert not problems, "\n".join(problems)


def test_every_function_is_in_the_readme(fresh_db):
    """Every function of `\\dx+ pipeline_ingest` is named in the README as a call, `name(`."""
    text = README.read_text()
    missing = [f"{s}.{f}" for s, f in query(fresh_db, FUNCTIONS) if not re.search(rf"\b{re.escape(f)}\(", text)]
    assert not missing, f"functions the README never names: {missing}"
