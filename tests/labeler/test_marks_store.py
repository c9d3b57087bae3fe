"""Marks in the store: kept with the vote (schema v4), checked against the comparison's candidates, sent through the
vote API, exported on the right candidate, dropped by undo, counted in the stats, sent by simulated annotators."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from labfix import fill

from labeler import stats
from labeler.export import main as export_main
from labeler.store import SCHEMA_VERSION, LabelError, Store
from reward_model.data import load_export
from vrlhf.tasks import get_task


def lease(store: Store, name: str = "ann") -> tuple[dict, dict]:
    view = store.next_comparison(name)
    return view, {c["position"]: c for c in view["candidates"]}


def test_marks_are_checked_against_the_comparison_and_kept_with_the_vote(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    fill(store, 2, k=2)
    view, by = lease(store)
    a, b = by["A"], by["B"]
    words_b = len(b["text"].split())
    other = min({1, 2, 3, 4} - {a["candidate_id"], b["candidate_id"]})  # a candidate of the other comparison
    refused = {
        "which is not in comparison": {str(other): {"words": [0]}},
        f"marked word {words_b} is not a word of the caption": {str(b["candidate_id"]): {"words": [words_b]}},
        "marks on a caption are word indices": {str(a["candidate_id"]): {"grid": 8, "cells": [[0, 0]]}},
        "keyed by candidate id": {"left": {"words": [0]}},
        "not valid JSON": "{words: 1}",
    }
    for says, marks in refused.items():
        with pytest.raises(LabelError, match=says):
            store.vote(view["token"], "a", annotator="ann", marks=marks if isinstance(marks, str) else
                       json.dumps(marks))
    assert store.counts()["votes"] == 0  # nothing written by a refused vote
    marks = {str(b["candidate_id"]): {"words": [0, words_b - 1]}, str(a["candidate_id"]): {}}
    store.vote(view["token"], "a", annotator="ann", marks=json.dumps(marks))
    assert store.votes()[0]["marks"] == {str(b["candidate_id"]): {"words": [0, words_b - 1]}}  # the empty one left out
    with pytest.raises(LabelError, match="no longer open"):  # marks after the vote: the lease is closed
        store.vote(view["token"], "a", annotator="ann", marks=json.dumps(marks))
    view, _ = lease(store)
    store.vote(view["token"], "b", annotator="ann")
    assert store.votes()[1]["marks"] is None

    fill(store, 1, k=2, task="colorization", seed=3)
    view, by = lease(store)
    cid = str(by["A"]["candidate_id"])
    for bad, says in (({"grid": 8, "cells": [[8, 0]]}, "outside the 8x8 grid"), ({"words": [0]}, "not words")):
        with pytest.raises(LabelError, match=says):
            store.vote(view["token"], "b", annotator="ann", marks={cid: bad})
    store.vote(view["token"], "b", annotator="ann", marks={cid: {"grid": 8, "cells": [[7, 0]], "points": [[0.5, 1]]}})
    assert store.votes()[2]["marks"] == {cid: {"grid": 8, "cells": [[7, 0]], "points": [[0.5, 1]]}}
    s = stats.compute(store)["tasks"]
    assert (s["captioning"]["marks_share"], s["colorization"]["marks_share"]) == (0.5, 1.0)
    assert "| with marks |" in stats.summary_markdown(stats.compute(store))


def test_a_v3_database_opens_and_takes_votes_with_marks(tmp_path):
    db = tmp_path / "old.sqlite"
    store = Store(db)
    fill(store, 2, k=2)
    view, _ = lease(store)
    store.vote(view["token"], "a", annotator="ann", comment="old vote")
    with store.engine.begin() as c:  # back to the v3 layout: no marks column, version 3
        c.exec_driver_sql("ALTER TABLE votes DROP COLUMN marks")
        c.exec_driver_sql("DELETE FROM schema_version")
        c.exec_driver_sql("INSERT INTO schema_version (version) VALUES (3)")
        assert "marks" not in {row[1] for row in c.exec_driver_sql("PRAGMA table_info(votes)")}
    store.close()
    store = Store(db)
    assert store.schema_version() == SCHEMA_VERSION == 4
    assert [(v["comment"], v["marks"]) for v in store.votes()] == [("old vote", None)]
    view, by = lease(store)
    store.vote(view["token"], "b", annotator="ann", marks={by["B"]["candidate_id"]: {"words": [1]}})
    assert store.votes()[1]["marks"] == {str(by["B"]["candidate_id"]): {"words": [1]}}


def post_vote(c: httpx.Client, *data):
    return c.post("gradio_api/run/vote", json={"data": list(data)})


def test_marks_over_http_reach_every_export_on_their_candidate_and_undo_drops_them(tmp_path):
    from labeler.app import free_port, serve

    store = Store(tmp_path / "db.sqlite")
    fill(store, 3, k=2)
    app, url = serve(store, "127.0.0.1", free_port("127.0.0.1"), block=False, quiet=True)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            view = c.post("gradio_api/run/next", json={"data": ["ann"]}).json()["data"][0]["view"]
            by = {x["position"]: x for x in view["candidates"]}
            b_id, n_words = by["B"]["candidate_id"], len(by["B"]["text"].split())
            cid, token = view["comparison_id"], view["token"]
            for marks, status, says in ((json.dumps({str(b_id): {"words": [n_words]}}), 422, "not a word"),
                                        (json.dumps({"99999": {"words": [0]}}), 422, "not in comparison"),
                                        ({"x": 1}, 422, "marks must be a string"),  # the gate's type check
                                        ("x" * 9000, 422, "too long")):
                r = post_vote(c, cid, token, "a", "", "ann", marks)
                assert r.status_code == status and says in r.json()["error"], r.text
            assert store.counts()["votes"] == 0
            r = post_vote(c, cid, token, "a", "", "ann", json.dumps({str(b_id): {"words": [0]}}))  # B loses
            assert r.status_code == 200, r.text
            r = post_vote(c, cid, token, "a", "", "ann", json.dumps({str(b_id): {"words": [0]}}))
            assert r.status_code == 409 and "no longer open" in r.json()["error"]  # marks after the vote is closed
            second = store.next_comparison("ann")  # the lease the vote's answer handed out
            r = post_vote(c, second["comparison_id"], second["token"], "b", "", "ann")  # an older client: 5 arguments
            assert r.status_code == 200, r.text
            third = r.json()["data"][0]["view"]
            a3 = {x["position"]: x for x in third["candidates"]}["A"]["candidate_id"]
            r = post_vote(c, third["comparison_id"], third["token"], "b", "", "ann",
                          json.dumps({str(a3): {"words": [0]}}))
            assert r.status_code == 200
            r = c.post("gradio_api/run/undo", json={"data": ["ann"]})  # takes back the third vote and its marks
            assert r.status_code == 200 and r.json()["data"][0]["retracted"]
    finally:
        app.close()
    assert [v["marks"] is not None for v in store.votes()] == [True, False, True]
    texts = {x["text"]: x["candidate_id"] for v in (view, second, third) for x in v["candidates"]}
    for fmt in ("hf", "jsonl", "parquet"):  # the formats with marks columns (TRL's has prompt, chosen, rejected)
        assert export_main(["--db", str(tmp_path / "db.sqlite"), "--out", str(tmp_path / fmt), "--format", fmt]) == 0
        rows = list(load_export(tmp_path / fmt))
        assert len(rows) == 2, fmt  # the undone vote is not exported
        got = {(texts[r["chosen"]], texts[r["rejected"]]): (r["chosen_marks"], r["rejected_marks"]) for r in rows}
        assert got[(by["A"]["candidate_id"], b_id)] == ("", '{"words":[0]}'), fmt  # on B, the rejected one
        assert all(marks == ("", "") for pair, marks in got.items() if pair != (by["A"]["candidate_id"], b_id)), fmt


@pytest.mark.parametrize("marks", [True, False])
def test_simulated_annotators_send_the_oracles_marks_when_marks_are_on(tmp_path, marks):
    from loop.simulated import label_all
    from vrlhf.shapes import caption, make_shapes
    from vrlhf.tasks import caption_oracle

    rows = make_shapes(4, seed=2)
    store = Store(tmp_path / "s.sqlite")
    round_id = store.add_round("captioning", "/p", 2)
    outputs = {}
    for i, row in enumerate(rows):
        rng = np.random.default_rng(i)
        outputs[row["id"]] = [caption(row["attributes"]["shapes"], rng), caption_oracle.corrupt(row, rng)]
        store.add_comparison(round_id, row["id"], row["image"], outputs[row["id"]])
    store.finish_round(round_id)
    label_all(store, get_task("captioning"), {r["id"]: r for r in rows}, annotators=2, seed=5, say=lambda *_: None,
              marks=marks)
    votes = store.votes()
    assert len(votes) == 4
    if not marks:
        assert all(v["marks"] is None for v in votes)
        return
    by_id = {r["id"]: r for r in rows}
    cands = store.candidates([c for v in votes for c in v["candidate_ids"]])
    for v in votes:  # exactly what the oracle marks, drawn from (seed, comparison, 1), candidates in sampling order
        rng = np.random.default_rng([5, v["comparison_id"], 1])
        expected = {str(c): m for c in sorted(v["candidate_ids"])
                    if (m := caption_oracle.mark(by_id[v["item_id"]], cands[c]["text"], rng))}
        assert (v["marks"] or {}) == expected
    assert any(v["marks"] for v in votes)  # a corrupted caption has a false word the oracle marks
