"""The fast path (issue 23) loads exactly what the text path loads: the same hard-case field texts,
as csv, text and json messages, go through a consumer whose worker parses and converts them on its
reader thread into COPY BINARY rows (pipeline_ingest.fast_path on, the default) and through one
whose worker uses today's text COPY (fast_path off when it starts); both tables must hold the same
rows (compared as text in one session) and both consumers the same dead letters (offset, SQLSTATE,
error), under a non-default DateStyle, TimeZone and extra_float_digits on the owner's role in the
database. Type errors are dead letters before any COPY on the fast path: its worker isolates by
COPY only what it left to the text path, while the text path isolates every one by COPY. Avro and
Protobuf records decoded on the reader thread are held against the main thread's decoding the same
way.

Every wait is bounded (wait_until on the committed offset)."""
from __future__ import annotations

import json
import re

import pytest

from pihelpers import KAFKA_BOOTSTRAP, log_since, log_size, pg_connect, produce, query, scalar, server_setting, wait_until

COLUMNS = [
    ("c_int2", "smallint"), ("c_int4", "integer"), ("c_int8", "bigint"), ("c_f4", "real"),
    ("c_f8", "double precision"), ("c_num", "numeric"), ("c_num52", "numeric(5,2)"), ("c_bool", "boolean"),
    ("c_text", "text"), ("c_vc", "varchar(5)"), ("c_bp", "char(3)"), ("c_uuid", "uuid"), ("c_date", "date"),
    ("c_ts", "timestamp"), ("c_tstz", "timestamptz"), ("c_json", "json"), ("c_jsonb", "jsonb"),
    ("c_bytea", "bytea"),
]

CASES = {
    "c_int2": ["32767", "-32768", "32768", " 12 ", "+5", "-0", "1e3", "0x10", "1_000", "", "abc", "12 3"],
    "c_int4": ["2147483647", "2147483648", "-2147483648", " -7", "00012", "+", "1.0"],
    "c_int8": ["9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809"],
    "c_f4": ["NaN", "Infinity", "-inf", "1e39", "1e-46", "3.4028235e38", "-0", " 1.5 ", "0x1p3", ".5", "5.", "1e"],
    "c_f8": ["1e308", "1e309", "4.9e-324", "1e-400", "nan", "-Infinity", "inf", "+1.5e+3", "0.1", "1.7976931348623157e308"],
    "c_num": ["NaN", "Infinity", "-Infinity", "-0", "0.000", "1.23e5", "  12.5  ", "1_000", "+.5", "abc",
              "123456789012345678901234567890.123456789", "1e-20", "-1.5E+3", "1e131072"],
    "c_num52": ["123.456", "999.995", "999.994", "-0.005", "1e2", "NaN", "Infinity", "0.001", "-999.99"],
    "c_bool": ["t", "TRUE", "yes", "on", "1", "0", "off", "of", " true ", "tru", "n", "x"],
    "c_text": ["  spaces  ", "é漢字", "a\\b", "tab\there", 'quote"s'],
    "c_vc": ["abcde", "abcdef", "abc  ", "abcde   ", "ééééé", "éééééé"],
    "c_bp": ["a", "abcd", "abc ", "ab", ""],
    "c_uuid": ["{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "A0EEBC999C0B4EF8BB6D6BB9BD380A11",
               "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11", "bad", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1"],
    "c_date": ["2024-02-29", "2023-02-29", "0001-01-01 BC", "infinity", "-infinity", "01/02/2024",
               "2024-13-01", "5874897-12-31", "epoch", " 2024-01-02 "],
    "c_ts": ["2024-01-02 03:04:05.1234567", "2024-01-02T03:04:05", "2024-01-02 03:04:05+02", "infinity",
             "2024-01-02 03:04:05 BC", "01/02/2024 03:04", "2024-01-02 03:04:05 PST", "2024-01-02 24:00:00",
             "294277-01-01 00:00:00"],
    "c_tstz": ["2024-01-02 03:04:05+05:30", "2024-01-02 03:04:05Z", "2024-01-02 03:04:05",
               "2024-06-01 12:00 Europe/Paris", "2024-01-02 03:04:05.9999995+00", "2024-01-02 03:04:05 EST",
               "-infinity", "2024-02-30 00:00+00"],
    "c_json": ['{"a": 1}', "[1, 2", '"\\u0000"', " 1 ", '{"a":1,"a":2}', '"\\ud83d\\ude00"'],
    "c_jsonb": ['{"b": 1, "a": [1.0, -0]}', '{"a": "\\ud800"}', "nul", '{"a":1,"a":2}', "1e1000"],
    "c_bytea": ["\\x0102", "\\xzz", "abc\\\\", "\\x0", "plain", "\\X0A"],
}


def _table(name: str) -> str:
    cols = ", ".join(f"{c} {t}" for c, t in COLUMNS)
    return f"CREATE TABLE {name} (id int, {cols})"


def _csv_quote(v: str) -> str:
    return '"' + v.replace('"', '""') + '"'


def _text_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _messages(fmt: str) -> list[bytes]:
    names = [c for c, _ in COLUMNS]
    out: list[bytes] = []
    n = 0
    for col, values in CASES.items():
        for v in values:
            n += 1
            if fmt == "json":
                out.append(json.dumps({"id": n, col: v}).encode())
                continue
            fields = [""] * len(names) if fmt == "csv" else ["\\N"] * len(names)
            fields[names.index(col)] = _csv_quote(v) if fmt == "csv" else _text_escape(v)
            sep = "," if fmt == "csv" else "\t"
            out.append((str(n) + sep + sep.join(fields)).encode())
    width = len(names) + 1
    if fmt == "csv":
        out += [b"900," + b"," * (width - 2) + b",extra", b"901,1", b"902,\xff\xfe" + b"," * (width - 2),
                b"903,1" + b"," * (width - 2) + b"\n904,x" + b"," * (width - 2), b"",
                b'905,,,,,,,,,"multi\nline"' + b"," * (width - 10), b"906,1" + b"," * (width - 2) + b"\r\n"]
    elif fmt == "text":
        nulls = b"\t\\N" * (width - 2)
        out += [b"910\t\\101\\x41" + nulls, b"911\t\\351" + nulls, b"912\t1\t2" + b"\t\\N" * (width - 1),
                b"913" + b"\t\\N" * (width - 1) + b"\n914\tbad" + nulls, b"915\t\\N"]
    else:
        out += [
            b'{"id": 920, "c_int4": 1.0}', b'{"id": 921, "c_int8": 12345678901234567890}', b'{"id": 922, "c_f8": 1e400}',
            b'{"id": 923, "c_bool": true, "c_text": {"x": [1, 2.50]}, "c_jsonb": {"a": [1, 2]}, "c_json": [1, {"b": null}]}',
            b'{"id": 924, "c_num": -0.0, "c_f4": 1.5e3, "c_int2": null}', b'[{"id": 925, "c_date": 20240101}, {"id": 926}]',
            b'[{"id": 927, "c_int2": 1}, {"id": 928, "c_int2": "big", "c_text": "x"}]', b'{"none": 1}', b"{bad",
            b'[{"id": 929, "c_text": "a"}, {"id": 930, "c_int4": 5}, {"id": 931, "c_text": "b", "c_int4": 6}]',
        ]
    return out


def _consume(db: str, topic: str, table: str, fmt: str, n: int, msgs=None) -> int:
    """A consumer of `topic` into `table` from its beginning; with `msgs`, they are produced only
    once its worker runs (its fast path's plan is set before it publishes its pid: a backlog read
    before the plan reaches the reader thread goes the text path, as is right, but proves nothing)."""
    with pg_connect(db) as conn:
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := %s, start_offset := -2)",
                           (topic, table, fmt)).fetchone()[0]
    if msgs is not None:
        wait_until(lambda: scalar(db, "SELECT bool_and(worker_pid IS NOT NULL) FROM pipeline_kafka.consumer_status "
                                      "WHERE consumer_id = %s", [cid]), timeout=60, what=f"consumer {cid} running")
        produce(topic, msgs)
    wait_until(lambda: scalar(db, 'SELECT "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s', [cid]) == n,
               timeout=90, what=f"consumer {cid} to commit {n} messages")
    return cid


def _non_default_settings(conn, db: str) -> None:
    """A non-default DateStyle, TimeZone and extra_float_digits (and DEBUG1 logging, for the
    workers' counts) on the owner's role in the database and on the database: the workers'
    sessions read them."""
    for setting, value in [("DateStyle", "SQL, DMY"), ("TimeZone", "America/Sao_Paulo"), ("extra_float_digits", "-2"),
                           ("log_min_messages", "debug1")]:
        conn.execute(f'ALTER ROLE CURRENT_USER IN DATABASE "{db}" SET {setting} = \'{value}\'')
        conn.execute(f'ALTER DATABASE "{db}" SET {setting} = \'{value}\'')


def _isolated(since: int) -> int:
    """The bad messages COPY failed on (the worker's DEBUG1 "isolated K bad of N messages ...")."""
    return sum(int(k) for k in re.findall(r"isolated (\d+) bad of \d+ messages", log_since(since)))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", ["csv", "text", "json"])
def test_fast_path_loads_what_the_text_path_loads(fresh_db, topic_factory, fmt):
    db = fresh_db
    topic = topic_factory(1)
    msgs = _messages(fmt)
    with pg_connect(db) as conn:
        conn.execute(_table("fast"))
        conn.execute(_table("slow"))
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        _non_default_settings(conn, db)
    since = log_size()
    fast = _consume(db, topic, "fast", fmt, len(msgs), msgs)
    fast_isolated = _isolated(since)
    with server_setting("pipeline_ingest.fast_path", "off", "off"):
        since = log_size()
        slow = _consume(db, topic, "slow", fmt, len(msgs))
        slow_isolated = _isolated(since)
    cols = ", ".join(f"{c}::text" for c, _ in COLUMNS)
    with pg_connect(db) as conn:
        fast_rows = conn.execute(f"SELECT id, {cols} FROM fast ORDER BY id, {cols}").fetchall()
        slow_rows = conn.execute(f"SELECT id, {cols} FROM slow ORDER BY id, {cols}").fetchall()
    letters = 'SELECT "offset", sqlstate, error FROM pipeline_kafka.dead_letters WHERE consumer_id = %s ORDER BY 1'
    fast_letters, slow_letters = query(db, letters, [fast]), query(db, letters, [slow])
    assert len(slow_rows) > 50 and len(slow_letters) > 30
    assert fast_rows == slow_rows
    assert fast_letters == slow_letters
    # the text path found its bad values by failing COPYs; the fast path before any COPY (COPY
    # still judges what it leaves to the text path: invalid UTF-8, say)
    assert slow_isolated >= 20
    assert fast_isolated < slow_isolated / 4, (fast_isolated, slow_isolated)



SALE = {"type": "record", "name": "Sale", "namespace": "pi.test", "fields": [
    {"name": "id", "type": "long"}, {"name": "qty", "type": "long"}, {"name": "price", "type": "double"},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 4}},
    {"name": "code", "type": "string"}, {"name": "ok", "type": "boolean"},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "note", "type": ["null", "string"], "default": None}, {"name": "doc", "type": "string"},
    {"name": "ignored", "type": "int"},
]}
SALE_PROTO = """
syntax = "proto3";
package pi.test;
message Sale {
  int64 id = 1; int64 qty = 2; double price = 3; string code = 4; bool ok = 5;
  optional string note = 6; string doc = 7; int32 ignored = 8;
}
"""
# (the table's columns, the columns compared as text)
SALES = {
    "avro": ("(id bigint, qty integer, price real, amount numeric(10,2), code varchar(5), ok boolean, at timestamptz, "
             "ref uuid, note text, doc jsonb, absent text DEFAULT 'dflt')",
             "id, qty, price::text, amount::text, code, ok, at::text, ref::text, note, doc::text, absent"),
    "protobuf": ("(id bigint, qty integer, price real, code varchar(5), ok boolean, note text, doc jsonb, "
                 "absent text DEFAULT 'dflt')", "id, qty, price::text, code, ok, note, doc::text, absent"),
}


def _sale(i: int) -> dict:
    """Sale i; some values do not fit their columns (every 29th to 43rd: the input function's error)."""
    import datetime as dt
    import uuid
    from decimal import Decimal
    return {
        "id": i, "qty": 3_000_000_000 if i % 37 == 0 else i * 1000 - 7,
        "price": 1e300 if i % 41 == 0 else i / 7, "ok": i % 2 == 0,
        "amount": Decimal("123456789.1234") if i % 43 == 0 else (Decimal(i) / 7).quantize(Decimal("0.0001")),
        "code": "toolong" if i % 31 == 0 else ("é" * (i % 6)),
        "at": dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=i * 3601, microseconds=i),
        "ref": uuid.UUID(int=i * 2**64 + i), "note": None if i % 3 else f"n\t{i}",
        "doc": "{bad" if i % 29 == 0 else json.dumps({"i": i, "s": "é\\"}), "ignored": i,
    }


def _sale_proto(schema_id: int, i: int) -> bytes:
    from test_protobuf import f_bytes, f_double, f_int, framed
    v = _sale(i)
    body = (f_int(1, v["id"]) + f_int(2, v["qty"]) + f_double(3, v["price"]) + f_bytes(4, v["code"])
            + (f_int(5, 1) if v["ok"] else b"") + (f_bytes(6, v["note"]) if v["note"] is not None else b"")
            + f_bytes(7, v["doc"]) + f_int(8, v["ignored"]))
    return framed(schema_id, [0], body)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", ["avro", "protobuf"])
def test_typed_records_the_reader_decodes_load_what_the_main_thread_loads(fresh_db, topic_factory, schema_registry, fmt):
    """Avro and Protobuf records decoded into COPY BINARY rows on the reader thread (its decoder
    holds the schema once the first batch fetched it) give the rows and dead letters the main
    thread's decoding gives with fast_path off: values that do not fit (int4 overflow, a real out
    of range, numeric(10,2) rounding and overflow, varchar(5), invalid jsonb), a corrupt body, and
    an unknown schema id (left to the main thread, which asks the registry)."""
    from pihelpers import confluent_frame, register_schema
    from test_avro import avro
    db = fresh_db
    topic = topic_factory(1)
    if fmt == "avro":
        sid = register_schema(f"{topic}-value", SALE)
        encode = lambda i: avro(sid, SALE, _sale(i))  # noqa: E731
        corrupt = lambda m: m[:-2]  # noqa: E731 - the record ends early
    else:
        sid = register_schema(f"{topic}-value", SALE_PROTO, schema_type="PROTOBUF")
        encode = lambda i: _sale_proto(sid, i)  # noqa: E731
        corrupt = lambda m: m + b"\x4a\x0aab"  # noqa: E731 - field 9: 10 bytes said, 2 given
    table, cols = SALES[fmt]
    first = encode(1)
    rest = [encode(i) for i in range(2, 302)]
    rest[50] = corrupt(rest[50])  # 22P03
    rest[120] = confluent_frame(2_000_000_000, rest[120][5:])  # no such schema: 22P02
    with pg_connect(db) as conn:
        conn.execute(f"CREATE TABLE fast {table}")
        conn.execute(f"CREATE TABLE slow {table}")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("SELECT pipeline_kafka.add_schema_registry(%s)", (schema_registry,))
        _non_default_settings(conn, db)
    fast = _consume(db, topic, "fast", fmt, 1, [first])
    since = log_size()
    produce(topic, rest)
    wait_until(lambda: scalar(db, 'SELECT "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s', [fast]) == 301,
               timeout=90, what="the fast consumer to commit 301 messages")
    ready = sum(int(k) for k in re.findall(r"fast path: (\d+) of \d+ messages made ready by the reader", log_since(since)))
    with server_setting("pipeline_ingest.fast_path", "off", "off"):
        slow = _consume(db, topic, "slow", fmt, 301)
    with pg_connect(db) as conn:
        conn.execute("SET TimeZone = 'Asia/Kolkata'")
        fast_rows = conn.execute(f"SELECT {cols} FROM fast ORDER BY id").fetchall()
        slow_rows = conn.execute(f"SELECT {cols} FROM slow ORDER BY id").fetchall()
    letters = 'SELECT "offset", sqlstate, error FROM pipeline_kafka.dead_letters WHERE consumer_id = %s ORDER BY 1'
    fast_letters, slow_letters = query(db, letters, [fast]), query(db, letters, [slow])
    assert len(slow_rows) > 250 and {s for _, s, _ in slow_letters} == {"22003", "22001", "22P02", "22P03"}
    assert fast_rows == slow_rows
    assert fast_letters == slow_letters
    # the reader left to the main thread the unknown schema's message and the invalid jsonb
    # documents (the model does not write jsonb's own error texts: COPY raises them)
    bad_docs = sum(1 for i in range(2, 302) if i % 29 == 0)
    assert ready == len(rest) - 1 - bad_docs, f"{ready} of {len(rest)} made ready by the reader"
