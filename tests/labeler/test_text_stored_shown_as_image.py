"""Outputs stored as text but shown as images (the task contract's STORED "text", SHOWN "image": a box set kept as
JSON, drawn over the input): the store keeps both, the page shows the drawing, marks are cells of it, the export's
chosen / rejected are the text, and the simulated annotator gets the output back from that text."""

from __future__ import annotations

import json
import sys
import types

import pytest
from PIL import Image, ImageDraw

from labeler.export import export
from labeler.page import candidate_body
from labeler.sampling import all_different, stored_view
from labeler.store import LabelError, Store
from loop.simulated import candidate_output
from reward_model.data import load_export, validate
from vrlhf.tasks import get_task

NAME = "boxes_tests.boxes"  # a task module outside vrlhf/tasks, named by its import path


@pytest.fixture
def boxes_task(monkeypatch) -> types.ModuleType:
    """A task whose outputs are lists of boxes [x0, y0, x1, y1], stored as JSON and shown drawn over the input (the
    rest of the contract borrowed from colorization), importable as NAME."""
    task = types.ModuleType(NAME)
    task.__dict__.update({k: v for k, v in vars(get_task("colorization")).items() if not k.startswith("__")})
    task.NAME, task.STORED, task.SHOWN = NAME, "text", "image"
    task.to_stored = lambda output: json.dumps(output)
    task.from_stored = lambda value, row: [list(box) for box in json.loads(value)]

    def render(row: dict, output: list) -> Image.Image:
        drawn = row["image"].copy()
        for box in output:
            ImageDraw.Draw(drawn).rectangle(box, outline=(255, 0, 0))
        return drawn

    task.render = render
    monkeypatch.setitem(sys.modules, "boxes_tests", types.ModuleType("boxes_tests"))
    monkeypatch.setitem(sys.modules, NAME, task)
    assert get_task(NAME) is task
    return task


def test_a_text_stored_output_people_see_drawn_is_kept_as_both_and_read_back_from_its_text(boxes_task, tmp_path):
    task, row = boxes_task, {"id": "r0", "image": Image.new("RGB", (24, 24), "gray")}
    outputs = [[[2, 2, 10, 10]], [[4, 4, 20, 20], [1, 1, 5, 5]]]
    views = [stored_view(task, row, o) for o in outputs]
    assert [text for text, _ in views] == ['[[2, 2, 10, 10]]', '[[4, 4, 20, 20], [1, 1, 5, 5]]']
    assert all(image.getpixel(tuple(o[0][:2])) == (255, 0, 0) for o, (_, image) in zip(outputs, views))  # drawn
    assert all_different(views) and not all_different([views[0], stored_view(task, row, outputs[0])])

    store = Store(tmp_path / "db.sqlite")
    round_id = store.add_round(task.NAME, "/p", 2)
    store.add_comparison(round_id, row["id"], row["image"], views)
    store.finish_round(round_id)
    view = store.next_comparison("ann")
    by = {c["position"]: c for c in view["candidates"]}
    assert all(c["text"] and c["image"] for c in by.values())
    assert "<img" in candidate_body(store, by["A"]) and "[[" not in candidate_body(store, by["A"])  # the drawing
    back = {c["position"]: candidate_output(store, c, task, row) for c in by.values()}
    assert sorted(back.values()) == sorted(outputs)  # the annotator's oracle reads the boxes, not the picture

    a = str(by["A"]["candidate_id"])
    with pytest.raises(LabelError, match="not words"):  # marks are on what people saw: cells of the drawing
        store.vote(view["token"], "a", annotator="ann", marks={a: {"words": [0]}})
    store.vote(view["token"], "a", annotator="ann", marks={a: {"grid": 8, "cells": [[0, 0]]}})

    export(store, tmp_path / "export", "hf", task=task.NAME)  # the store names the task: resolved from NAME
    pairs = load_export(tmp_path / "export")
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == (task.to_stored(back["A"]), task.to_stored(back["B"]))
    assert pairs.features["chosen"].dtype == "string" and "prompt" not in pairs.column_names  # not TRL text pairs
    assert validate(pairs, tmp_path / "export", task)[1] == [0]
