"""A simulated annotator that stops (a row it cannot judge, a connection lost) stops the round with one line: before,
its thread died quietly and the round went on with fewer votes than it asked for, so demo rows compared under
different labels."""

from __future__ import annotations

import pytest

from labeler.store import Store
from loop.simulated import label_all
from vrlhf.errors import LabelError
from vrlhf.shapes import make_shapes
from vrlhf.tasks import get_task


def test_a_stopped_annotator_stops_the_round(tmp_path):
    task = get_task("captioning")
    rows = make_shapes(4, seed=0)
    store = Store(str(tmp_path / "labels.sqlite"))
    rid = store.add_round(task.NAME, "/runs/mle", 2)
    for row in rows:
        store.add_comparison(rid, row["id"], row["image"], [row["captions"][0], row["captions"][1]], None)
    known = {row["id"]: row for row in rows[1:]}  # the annotators cannot find the first row: they cannot judge it
    with pytest.raises(LabelError, match=r"simulated annotators of captioning stopped \(KeyError"):
        label_all(store, task, known, annotators=2, seed=0, say=lambda *_: None)
    store.close()


def test_every_comparison_is_labelled_when_nothing_fails(tmp_path):
    task = get_task("captioning")
    rows = make_shapes(6, seed=1)
    store = Store(str(tmp_path / "labels.sqlite"))
    rid = store.add_round(task.NAME, "/runs/mle", 2)
    for row in rows:
        store.add_comparison(rid, row["id"], row["image"], [row["captions"][0], row["captions"][2]], None)
    done = label_all(store, task, {row["id"]: row for row in rows}, annotators=2, seed=0, say=lambda *_: None)
    assert done["votes"] == len(store.votes()) == 6
    store.close()
