"""The store on SQLite and on a real PostgreSQL: leases, overlap under concurrency, votes, undo, schema."""

from __future__ import annotations

import threading
import time

import pytest
from labfix import fill
from sqlalchemy import text

from labeler.store import SCHEMA_VERSION, LabelError, Store


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "labels.sqlite")
    return request.getfixturevalue("pg_store_url")


def open_store(url, tmp_path, **kw) -> Store:
    return Store(url, media=tmp_path / "media", **kw)


def test_vote_lifecycle_and_undo(url, tmp_path):
    store = open_store(url, tmp_path)
    fill(store, 3, k=2)
    fill(store, 1, k=3, seed=1)
    v = store.next_comparison("alice")
    assert store.next_comparison("alice")["token"] == v["token"]  # idempotent until voted
    other = store.next_comparison("alice", exclude=[v["comparison_id"]])
    assert other["comparison_id"] != v["comparison_id"]
    assert store.vote(v["token"], "a", annotator="alice")["choice"] == "a"
    for bad, msg in [(dict(token=v["token"], choice="a"), "no longer open"),
                     (dict(token="nope-nope-nope", choice="a"), "unknown comparison"),
                     (dict(token=other["token"], choice="a", annotator="bob"), "not leased to you"),
                     (dict(token=other["token"], choice="rank", ranking="AB"), "takes one of"),
                     (dict(token=other["token"], choice="drop table"), "unknown choice"),
                     (dict(token="x" * 10_000, choice="a"), "malformed")]:
        with pytest.raises(LabelError, match=msg):
            store.vote(**bad)
    assert store.counts()["votes"] == 1  # refusals wrote nothing
    undone = store.retract("alice")
    assert undone["view"]["comparison_id"] == v["comparison_id"] and store.counts()["retractions"] == 1
    store.vote(undone["view"]["token"], "b", annotator="alice")
    votes = store.votes()
    assert [x["choice"] for x in votes] == ["a", "b"] and votes[0]["retracted_at"] and not votes[1]["retracted_at"]
    # a 3-way ranking is stored as candidate ids, best first
    while (w := store.next_comparison("bob")) and w["k"] == 2:
        store.vote(w["token"], "skip", annotator="bob")
    with pytest.raises(LabelError, match="ranking must list"):
        store.vote(w["token"], "rank", "AAB", annotator="bob")
    store.vote(w["token"], "rank", "CAB", annotator="bob")
    ids = [c["candidate_id"] for c in w["candidates"]]
    assert store.votes()[-1]["ranking"] == [ids[2], ids[0], ids[1]]
    assert store.progress("alice")["count"] == 1


def test_overlap_and_lease_expiry(url, tmp_path):
    store = open_store(url, tmp_path, overlap=2, lease_seconds=0.5)
    fill(store, 1, k=2)
    a, b = store.next_comparison("a1"), store.next_comparison("a2")
    assert a["comparison_id"] == b["comparison_id"]
    assert store.next_comparison("a3") is None  # two leases held: full
    store.vote(a["token"], "a", annotator="a1")
    assert store.next_comparison("a1") is None  # never twice to the same annotator
    time.sleep(0.6)  # a2's lease expires: the slot returns to the queue
    c = store.next_comparison("a3")
    assert c["comparison_id"] == a["comparison_id"]
    with pytest.raises(LabelError, match="expired"):
        store.vote(b["token"], "b", annotator="a2")
    store.vote(c["token"], "b", annotator="a3")
    assert store.next_comparison("a4") is None and len(store.votes()) == 2


def test_concurrent_leasing_never_exceeds_overlap(url, tmp_path):
    store = open_store(url, tmp_path, overlap=3, overlap_fraction=0.5)
    fill(store, 40, k=2)
    got: list[tuple[int, str]] = []
    errors: list[str] = []

    def work(name):
        try:
            while (v := store.next_comparison(name)) is not None:
                store.vote(v["token"], "a" if v["comparison_id"] % 2 else "tie", annotator=name)
                got.append((v["comparison_id"], name))
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(f"n{i}",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:2]
    assert len(got) == len(set(got))
    per = {}
    for cid, _ in got:
        per[cid] = per.get(cid, 0) + 1
    assert per == {cid: store.overlap_of(cid) for cid in range(1, 41)}  # every slot filled exactly
    assert 2 <= sum(n == 3 for n in per.values()) <= 38


def test_schema_version_created_and_checked(url, tmp_path):
    store = open_store(url, tmp_path)
    assert store.schema_version() == SCHEMA_VERSION
    assert open_store(url, tmp_path).schema_version() == SCHEMA_VERSION  # reopening is a no-op
    with store.engine.begin() as c:
        c.execute(text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": SCHEMA_VERSION + 1})
    with pytest.raises(LabelError, match="newer than this labeler"):
        open_store(url, tmp_path)


def test_sqlite_settings_and_media(tmp_path):
    store = Store(tmp_path / "x.sqlite")
    with store.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    fill(store, 1, k=2, task="colorization")
    v = store.next_comparison("a")
    path = store.media_path(v["candidates"][0]["image"])
    assert path.parent.parent.parent == tmp_path / "x_media" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(LabelError):
        Store(":memory:")


def test_v1_database_is_migrated_to_the_current_schema(url, tmp_path):
    """A store written at schema v1 (SQLite: a dump of one; PostgreSQL: a new one with the v2 and v3 columns dropped)
    opens at v3 with its rounds, comparisons and votes intact, its rounds complete, its votes without comment or
    flag, and the same columns as a new store."""
    import sqlite3
    from pathlib import Path

    from sqlalchemy import inspect

    from labeler.store import Round, Vote

    if url.startswith("postgresql"):
        store = open_store(url, tmp_path)
        fill(store, 3, k=2)
        fill(store, 1, k=3, seed=1, policy="policy-b")
        for choice in ("a", "skip"):
            v = store.next_comparison("ann")
            store.vote(v["token"], choice, annotator="ann")
        with store.engine.begin() as c:
            for column in ("recipe", "expected", "complete", "part_of"):
                c.exec_driver_sql(f"ALTER TABLE rounds DROP COLUMN {column}")
            for column in ("comment", "flagged", "marks"):
                c.exec_driver_sql(f"ALTER TABLE votes DROP COLUMN {column}")
            c.exec_driver_sql("DELETE FROM schema_version")
            c.exec_driver_sql("INSERT INTO schema_version (version) VALUES (1)")
        store.close()
    else:
        with sqlite3.connect(url) as con:
            con.executescript((Path(__file__).parent / "data" / "store_v1.sql").read_text())
    open_store(url, tmp_path).close()  # opening it migrates it; opening it again is a no-op
    store = open_store(url, tmp_path)
    assert store.schema_version() == SCHEMA_VERSION == 4
    for table in (Round, Vote):
        columns = {c["name"] for c in inspect(store.engine).get_columns(table.__tablename__)}
        assert columns == set(table.__table__.columns.keys())
    rounds = store.rounds()
    assert [(r["k"], r["complete"], r["comparisons"], r["part_of"]) for r in rounds] == [(2, True, 3, None),
                                                                                         (3, True, 1, None)]
    assert [(v["comparison_id"], v["annotator"], v["choice"], v["comment"], v["flagged"]) for v in store.votes()] == [
        (1, "ann", "a", None, False), (2, "ann", "skip", None, False)]
    v = store.next_comparison("bob")  # the migrated store works on: lease, vote with a comment, a resumable round
    store.vote(v["token"], "b", annotator="bob", comment="the left one is blurred", flagged=True)
    assert (store.votes()[-1]["comment"], store.votes()[-1]["flagged"]) == ("the left one is blurred", True)
    recipe = {"task": "captioning", "policy": "/p", "data": "/d", "seed": 0, "k": 2, "n": 1, "temperature": 1.0,
              "against": None}
    rid = store.add_round("captioning", "/p", 2, recipe=recipe, expected=1, complete=False)
    assert store.open_round(recipe) == {"id": rid, "partner": None, "rows": set()}
    with pytest.raises(LabelError, match="holds 0 of its 1 comparisons"):
        store.finish_round(rid)
