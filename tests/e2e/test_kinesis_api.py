"""The pipeline_kinesis SQL API (issue 8, item 2): who may create, stop, drop and see Kinesis
consumers, and the catalog rows consume_begin writes for each start position.

Ownership attacks run as real LOGIN roles connecting by themselves (the cluster uses trust auth).
Start positions are checked in the catalog: a shard without a checkpoint starts at
AT_TIMESTAMP consumers.start_time (TRIM_HORIZON when NULL), so consume_begin implements a start by
writing start_time and forgetting the checkpoints. Those checks run with the consumer stopped in
the same transaction, so no worker ever writes checkpoints of its own meanwhile."""
from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from pihelpers import KINESIS_ENDPOINT, pg_connect, query, scalar, unique_name

ENDPOINT = "local"


def _sqlstate(conn: psycopg.Connection, sql: str, params=None) -> str:
    """The SQLSTATE `sql` fails with (the test fails if it succeeds)."""
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql, params)
    return e.value.sqlstate


@pytest.fixture
def kdb(fresh_db):
    """A fresh database with endpoint 'local' (kinesalite); its Kinesis consumers are dropped
    before it goes, so their workers stop first."""
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kinesis.add_endpoint(%s, 'us-east-1', NULL, %s)", (ENDPOINT, KINESIS_ENDPOINT))
    yield fresh_db
    with pg_connect(fresh_db) as conn:
        for c in conn.execute("SELECT endpoint, stream, relname FROM pipeline_kinesis.consumers").fetchall():
            conn.execute("SELECT pipeline_kinesis.consume_drop(%s, %s, %s)", c)


@pytest.fixture
def roles(kdb):
    """make(prefix) -> a new LOGIN role owning schema <role> with table <role>.t (id int, v text);
    all of them dropped (with what they own) afterwards."""
    made: list[str] = []

    def make(prefix: str = "pi_kin") -> str:
        name = unique_name(prefix)
        with pg_connect(kdb) as conn:
            conn.execute(f"CREATE ROLE {name} LOGIN")
            conn.execute(f"CREATE SCHEMA {name} AUTHORIZATION {name}")
        made.append(name)
        with pg_connect(kdb, user=name) as conn:
            conn.execute(f"CREATE TABLE {name}.t (id int, v text)")
        return name

    yield make
    with pg_connect(kdb) as conn:
        for c in conn.execute("SELECT endpoint, stream, relname FROM pipeline_kinesis.consumers").fetchall():
            conn.execute("SELECT pipeline_kinesis.consume_drop(%s, %s, %s)", c)
        for name in made:
            conn.execute(f"DROP OWNED BY {name} CASCADE")
            conn.execute(f"DROP ROLE {name}")


def test_low_privilege_role_cannot_touch_or_see_another_roles_consumer(kdb, roles, stream_factory):
    stream, shards = stream_factory(1)
    alice, mallory, carol = roles("pi_alice"), roles("pi_mallory"), roles("pi_carol")
    with pg_connect(kdb) as conn:
        conn.execute(f"GRANT {alice} TO {carol}")
    with pg_connect(kdb, user=alice) as conn:
        # INSERT on the table is not enough: consumers write as the table's owner
        conn.execute(f"GRANT USAGE ON SCHEMA {alice} TO {mallory}")
        conn.execute(f"GRANT INSERT, SELECT ON {alice}.t TO {mallory}")
        alice_id = conn.execute("SELECT pipeline_kinesis.consume_begin(%s, %s, %s)",
                                (ENDPOINT, stream, f"{alice}.t")).fetchone()[0]
    with pg_connect(kdb) as conn:
        conn.execute("INSERT INTO pipeline_kinesis.dead_letters (consumer_id, stream, shard_id, sequence_number, "
                     "partition_key, data, error, sqlstate, owner) VALUES (%s, %s, %s, '1', 'k', '\\xdead', 'bad', '22P02', %s)",
                     (alice_id, stream, shards[0], alice))

    with pg_connect(kdb, user=mallory) as conn:
        # creating or changing a consumer into alice's table
        assert _sqlstate(conn, "SELECT pipeline_kinesis.consume_begin(%s, %s, %s)",
                         (ENDPOINT, stream, f"{alice}.t")) == "42501"
        assert _sqlstate(conn, "SELECT pipeline_kinesis.consume_begin(%s, %s, %s, start_offset := -2)",
                         (ENDPOINT, stream, f"{alice}.t")) == "42501"
        # stopping or dropping alice's consumer
        assert _sqlstate(conn, "SELECT pipeline_kinesis.consume_end(%s, %s, %s)",
                         (ENDPOINT, stream, f"{alice}.t")) == "42501"
        assert _sqlstate(conn, "SELECT pipeline_kinesis.consume_drop(%s, %s, %s)",
                         (ENDPOINT, stream, f"{alice}.t")) == "42501"
        # the all-consumers forms pass over it
        assert conn.execute("SELECT pipeline_kinesis.consume_end()").fetchone()[0] == 0
        # writing the catalog directly
        assert _sqlstate(conn, "UPDATE pipeline_kinesis.consumers SET enabled = false") == "42501"
        assert _sqlstate(conn, "DELETE FROM pipeline_kinesis.seqnums") == "42501"
        # mallory's own consumer is fine (the positive marker for the empty reads below)
        conn.execute("SELECT pipeline_kinesis.consume_begin(%s, %s, %s)", (ENDPOINT, stream, f"{mallory}.t"))
        assert conn.execute("SELECT relname FROM pipeline_kinesis.consumers").fetchall() == [(f"{mallory}.t",)]
        assert conn.execute("SELECT relation = %s::regclass FROM pipeline_kinesis.consumer_status",
                            (f"{mallory}.t",)).fetchall() == [(True,)]
        # alice's dead letters: invisible, and deleting them deletes nothing
        assert conn.execute("SELECT count(*) FROM pipeline_kinesis.dead_letters").fetchone()[0] == 0
        assert conn.execute("DELETE FROM pipeline_kinesis.dead_letters").rowcount == 0

    assert query(kdb, "SELECT enabled FROM pipeline_kinesis.consumers WHERE id = %s", (alice_id,)) == [(True,)]
    assert scalar(kdb, "SELECT count(*) FROM pipeline_kinesis.dead_letters") == 1
    with pg_connect(kdb, user=alice) as conn:
        assert conn.execute("SELECT relname FROM pipeline_kinesis.consumers").fetchall() == [(f"{alice}.t",)]
        assert conn.execute("SELECT count(*) FROM pipeline_kinesis.dead_letters").fetchone()[0] == 1
    # a member of the owner role manages the consumer
    with pg_connect(kdb, user=carol) as conn:
        conn.execute("SELECT pipeline_kinesis.consume_end(%s, %s, %s)", (ENDPOINT, stream, f"{alice}.t"))
        assert conn.execute("SELECT count(*) FROM pipeline_kinesis.dead_letters").fetchone()[0] == 1
        conn.execute("SELECT pipeline_kinesis.consume_drop(%s, %s, %s)", (ENDPOINT, stream, f"{alice}.t"))
    assert query(kdb, "SELECT relname FROM pipeline_kinesis.consumers") == [(f"{mallory}.t",)]
    assert scalar(kdb, "SELECT count(*) FROM pipeline_kinesis.dead_letters") == 0


def test_errors_carry_sqlstates(kdb, stream_factory):
    stream, _ = stream_factory(1)
    with pg_connect(kdb) as conn:
        conn.execute("CREATE TABLE t (id int, v text)")
        assert _sqlstate(conn, "SELECT pipeline_kinesis.consume_begin('nowhere', %s, 't')", (stream,)) == "42704"
        assert _sqlstate(conn, "SELECT pipeline_kinesis.consume_begin(%s, %s, 't')",
                         (ENDPOINT, unique_name("pi_nostream"))) == "42704"
        assert _sqlstate(conn, "SELECT pipeline_kinesis.consume_begin(%s, %s, 'no_table')", (ENDPOINT, stream)) == "42P01"
        conn.execute("SELECT pipeline_kinesis.add_endpoint('down', 'us-east-1', NULL, 'http://127.0.0.1:1')")
        conn.execute("SET pipeline_ingest.broker_timeout = 1000")
        assert _sqlstate(conn, "SELECT pipeline_kinesis.consume_begin('down', %s, 't')", (stream,)) == "08001"
        assert conn.execute("SELECT count(*) FROM pipeline_kinesis.consumers").fetchone()[0] == 0


def _begin_stopped(conn: psycopg.Connection, stream: str, **kw) -> dict:
    """consume_begin with `kw` in one transaction, returning the consumer's start_time, whether it
    equals now(), its generation and checkpoints as that transaction sees them; the consumer is
    stopped again before COMMIT."""
    named = "".join(f", {k} := %({k})s" for k in kw)
    with conn.transaction():
        cid = conn.execute(f"SELECT pipeline_kinesis.consume_begin(%(e)s, %(s)s, 't'{named})",
                           dict(e=ENDPOINT, s=stream, **kw)).fetchone()[0]
        start_time, is_now, generation, enabled, last_error = conn.execute(
            "SELECT start_time, start_time = now(), generation, enabled, last_error "
            "FROM pipeline_kinesis.consumers WHERE id = %s", (cid,)).fetchone()
        seqnums = conn.execute("SELECT shard_id, seqnum FROM pipeline_kinesis.seqnums WHERE consumer_id = %s "
                               "ORDER BY shard_id", (cid,)).fetchall()
        conn.execute("SELECT pipeline_kinesis.consume_end(%s, %s, 't')", (ENDPOINT, stream))
    return dict(id=cid, start_time=start_time, is_now=is_now, generation=generation, enabled=enabled,
                last_error=last_error, seqnums=seqnums)


def _checkpoint(conn: psycopg.Connection, cid: int) -> None:
    conn.execute("INSERT INTO pipeline_kinesis.seqnums (consumer_id, shard_id, seqnum) "
                 "VALUES (%s, 'shardId-000000000000', '4959033827149025660855969253836157109592157598913658')", (cid,))


def test_start_positions_write_start_time_and_forget_checkpoints(kdb, stream_factory):
    stream, _ = stream_factory(2)
    checkpoint = [("shardId-000000000000", "4959033827149025660855969253836157109592157598913658")]
    with pg_connect(kdb) as conn:
        conn.execute("CREATE TABLE t (id int, v text)")

        # a new consumer without a start: LATEST as of the call, kept as start_time = now()
        new = _begin_stopped(conn, stream)
        cid = new["id"]
        assert (new["is_now"], new["enabled"], new["seqnums"]) == (True, True, [])
        first_start = new["start_time"]

        # again without a start: the checkpoints and start_time stay; settings, generation and
        # the error are those of a restart
        _checkpoint(conn, cid)
        conn.execute("UPDATE pipeline_kinesis.consumers SET last_error = 'boom', last_error_at = now() WHERE id = %s",
                     (cid,))
        kept = _begin_stopped(conn, stream, batchsize=50)
        assert kept["id"] == cid
        assert (kept["start_time"], kept["seqnums"], kept["last_error"]) == (first_start, checkpoint, None)
        assert kept["generation"] == new["generation"] + 1
        assert scalar(kdb, "SELECT batchsize FROM pipeline_kinesis.consumers WHERE id = %s", (cid,)) == 50

        # -2: TRIM_HORIZON
        trim = _begin_stopped(conn, stream, start_offset=-2)
        assert (trim["start_time"], trim["seqnums"]) == (None, [])

        # a start_time: AT_TIMESTAMP
        _checkpoint(conn, cid)
        at = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
        timed = _begin_stopped(conn, stream, start_time=at)
        assert (timed["start_time"], timed["seqnums"]) == (at, [])

        # -1: LATEST as of this call
        _checkpoint(conn, cid)
        latest = _begin_stopped(conn, stream, start_offset=-1)
        assert (latest["is_now"], latest["seqnums"]) == (True, [])
        assert latest["start_time"] > first_start

        # refused starts change nothing
        _checkpoint(conn, cid)
        assert _sqlstate(conn, "SELECT pipeline_kinesis.consume_begin(%s, %s, 't', start_offset := 5)",
                         (ENDPOINT, stream)) == "22023"
        assert _sqlstate(conn, "SELECT pipeline_kinesis.consume_begin(%s, %s, 't', start_offset := -1, "
                               "start_time := now())", (ENDPOINT, stream)) == "22023"
        assert conn.execute("SELECT start_time = %s, enabled FROM pipeline_kinesis.consumers",
                            (latest["start_time"],)).fetchone() == (True, False)
        assert conn.execute("SELECT shard_id, seqnum FROM pipeline_kinesis.seqnums").fetchall() == checkpoint

        # the status view shows the stopped consumer's shard
        assert conn.execute("SELECT state, shard_id, shard_state, last_sequence_number, records "
                            "FROM pipeline_kinesis.consumer_status").fetchall() == \
            [("stopped", checkpoint[0][0], "open", checkpoint[0][1], 0)]

        # the table dropped and created again under its name: the same consumer takes it, with
        # its checkpoints
        conn.execute("DROP TABLE t")
        conn.execute("CREATE TABLE t (id int, v text)")
        again = _begin_stopped(conn, stream)
        assert (again["id"], again["seqnums"]) == (cid, checkpoint)
        assert conn.execute("SELECT relation = 't'::regclass FROM pipeline_kinesis.consumers").fetchall() == [(True,)]

        # consume_drop takes the checkpoints with it
        conn.execute("SELECT pipeline_kinesis.consume_drop(%s, %s, 't')", (ENDPOINT, stream))
        assert conn.execute("SELECT (SELECT count(*) FROM pipeline_kinesis.consumers), "
                            "(SELECT count(*) FROM pipeline_kinesis.seqnums)").fetchone() == (0, 0)


def test_credfile_is_checked_at_add_endpoint_as_the_server_reads_it(fresh_db):
    """add_endpoint(credfile := path) opens the file as the PostgreSQL server process: a file it
    cannot read is 42501 and a missing one 58P01 at the call (before 0.7.0 both were accepted and
    failed with 28000 at the first consume_begin); a readable one is stored."""
    import os
    import pathlib
    import pwd
    import shutil
    import tempfile
    server_uid = pwd.getpwnam("postgres").pw_uid
    if os.geteuid() == server_uid:
        pytest.skip("the tests run as the server's OS user: no file is unreadable to it")
    folder = pathlib.Path(tempfile.mkdtemp(prefix="pi-creds-", dir="/tmp"))  # pytest's own tmp dirs are 0700
    os.chmod(folder, 0o755)
    try:
        _check_credfiles(fresh_db, folder)
    finally:
        shutil.rmtree(folder)


def _check_credfiles(fresh_db, folder):
    import os
    secret = folder / "unreadable"
    secret.write_text("[default]\naws_access_key_id = x\naws_secret_access_key = y\n")
    os.chmod(secret, 0o600)  # owned by the test's user, not the server's
    readable = folder / "readable"
    readable.write_text("[default]\naws_access_key_id = x\naws_secret_access_key = y\n")
    os.chmod(readable, 0o644)
    with pg_connect(fresh_db) as conn:
        assert _sqlstate(conn, "SELECT pipeline_kinesis.add_endpoint('a', 'us-east-1', %s)", (str(secret),)) == "42501"
        assert _sqlstate(conn, "SELECT pipeline_kinesis.add_endpoint('a', 'us-east-1', %s)", (str(folder / "missing"),)) == "58P01"
        assert _sqlstate(conn, "SELECT pipeline_kinesis.add_endpoint('a', 'us-east-1', %s)", ("relative/credentials",)) == "22023"
        conn.execute("SELECT pipeline_kinesis.add_endpoint('a', 'us-east-1', %s)", (str(readable),))
        assert scalar(fresh_db, "SELECT credfile FROM pipeline_kinesis.endpoints WHERE name = 'a'") == str(readable)
