"""Marks travel with a vote into every export format: `chosen_marks` / `rejected_marks` per pair (vrlhf/marks.py)."""

from __future__ import annotations

import json

import datasets
import pytest
from labfix import fill

from labeler.export import candidate_marks, export, pairs
from labeler.store import Store
from vrlhf.errors import DataError


@pytest.mark.parametrize("format", ["hf", "jsonl", "parquet"])
def test_every_export_format_has_the_marks_columns(tmp_path, format):
    store = Store(tmp_path / "db.sqlite")
    fill(store, 2, k=2)
    for _ in range(2):
        view = store.next_comparison("ann")
        store.vote(view["token"], "a", annotator="ann")
    export(store, tmp_path / "out", format)
    if format == "hf":
        rows = list(datasets.load_from_disk(str(tmp_path / "out")))
    elif format == "parquet":
        rows = list(datasets.Dataset.from_parquet(str(tmp_path / "out" / "pairs.parquet")))
    else:
        rows = [json.loads(line) for line in open(tmp_path / "out" / "pairs.jsonl")]
    assert len(rows) == 2 and all(r["chosen_marks"] == r["rejected_marks"] == "" for r in rows)  # no marks: empty


def test_a_votes_marks_go_to_the_candidate_they_were_made_on(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    fill(store, 1, k=3)
    view = store.next_comparison("ann")
    store.vote(view["token"], "rank", "BCA", annotator="ann")
    vote = store.votes()[0]
    a, b, c = (cand["candidate_id"] for cand in view["candidates"])
    # what the store will keep with a vote: {candidate id: marks} (JSON keys are strings)
    vote["marks"] = json.dumps({str(c): {"words": [1]}, str(a): {"words": [0, 2]}})
    got = {(r["chosen"], r["rejected"]): (r["chosen_marks"], r["rejected_marks"]) for r in pairs(store, [vote])}
    text = {cand["candidate_id"]: cand["text"] for cand in view["candidates"]}
    assert got[(text[b], text[c])] == ("", '{"words":[1]}')  # B unmarked, C marked on word 1
    assert got[(text[c], text[a])] == ('{"words":[1]}', '{"words":[0,2]}')
    with pytest.raises(DataError, match="outside the 8x8 grid"):
        candidate_marks({"marks": {str(a): {"grid": 8, "cells": [[8, 8]]}}}, a)
