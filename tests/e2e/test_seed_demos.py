"""The four seed scenarios (demos/seeds.py, `make demo-<name>`), run end to end with assertions on
what each one leaves behind: memgraph (transform into two tables, preview writing nothing),
moviefriends (upsert: one row per user, a second wave updates), kstreams (upsert with tombstones,
append, a left-join view), pathway (transform keeping a running sum, each sum sent back to Kafka once,
only for committed transactions)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pihelpers import KAFKA_BOOTSTRAP, delete_topic, fresh_db, pg_connect, unique_name

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "demos"))
import seeds  # noqa: E402

seeds.BOOTSTRAP = KAFKA_BOOTSTRAP


def _db_with_broker(db: str) -> None:
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))


def _quiet(_msg: str) -> None:
    pass


@pytest.mark.timeout(180)
def test_memgraph_transform_preview_then_stream():
    topic = unique_name("mg")
    with fresh_db() as db:
        _db_with_broker(db)
        try:
            out = seeds.memgraph(db, topic, log=_quiet)
        finally:
            delete_topic(topic)
    # preview wrote nothing and named no error
    assert out["rows_after_preview"] == 0
    assert len(out["preview"]) >= 1 and all(r[3] is None for r in out["preview"]), out["preview"]
    assert out["nodes"] == ["1", "2"]
    assert out["edges"] == [("1", "2")]
    assert out["status"][0][2] == "running" and out["status"][0][3] == 3
    assert out["state_after_stop"] == "stopped"


@pytest.mark.timeout(300)
def test_moviefriends_upsert_keeps_one_row_per_user():
    topic = unique_name("mf")
    with fresh_db() as db:
        _db_with_broker(db)
        try:
            out = seeds.moviefriends(db, topic, users=20000, log=_quiet)
        finally:
            delete_topic(topic)
    for wave in out["waves"]:
        assert wave["rows"] == 20000, wave
        # every user's row holds the amount of the latest wave: updated, not duplicated
        assert wave["rows_with_this_waves_amount"] == 20000, wave


@pytest.mark.timeout(180)
def test_kstreams_table_from_compacted_topic_and_order_counts():
    customer, order = unique_name("customer"), unique_name("order")
    with fresh_db() as db:
        _db_with_broker(db)
        try:
            out = seeds.kstreams(db, customer, order, log=_quiet)
        finally:
            delete_topic(customer)
            delete_topic(order)
    assert out["before"] == [("1", "john", 1), ("2", "adam", 2), (None, None, 1)]
    # 2 renamed; 1 deleted (its order stays, without a customer); 8 is new and has no orders
    assert out["after"] == [("1", None, 1), ("2", "adam smith", 2), (None, None, 1)]
    assert ("1", "john") not in out["customers"]
    assert out["customers"] == [("2", "adam smith"), ("3", "daniel"), ("4", "james"), ("5", "jack"), ("6", "mathew"),
                                ("7", "will"), ("8", "olivia")]


@pytest.mark.timeout(180)
def test_pathway_running_sum_sent_once_per_commit():
    in_topic, out_topic = unique_name("pw_in"), unique_name("pw_sum")
    with fresh_db() as db:
        _db_with_broker(db)
        try:
            out = seeds.pathway(db, in_topic, out_topic, log=_quiet)
        finally:
            delete_topic(in_topic)
            delete_topic(out_topic)
    assert out["total"] == sum(range(10))
    sums = out["sums"]
    assert sums == sorted(set(sums)) and sums[-1] == 45, sums
    # the reader sees each committed sum exactly once, in order
    assert [m["total"] for m in out["sent"]] == sums
