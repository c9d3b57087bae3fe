"""A reward model reads what people see (`--reads render`, the default, and every model saved before views existed),
or with `--reads view` its task's `model_view` (detection: the boxes at the input's resolution)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reward_model import build_reward_model, load_reward_model
from reward_model.base import CONFIG_NAME
from vrlhf.errors import ConfigError
from vrlhf.shapes import make_shapes
from vrlhf.tasks import get_task
from vrlhf.tasks.detection_boxes import true_boxes

DETECTION = get_task("detection")
ROWS = make_shapes(2, seed=5)


def outputs():
    return [true_boxes(r) for r in ROWS]


def test_a_view_model_reads_the_view_and_scores_what_it_reads():
    model = build_reward_model(DETECTION, reads="view")
    shown = model.shown(ROWS, outputs())
    assert model.cfg.reads == "view"
    for row, output, image in zip(ROWS, outputs(), shown, strict=True):
        assert np.array_equal(np.asarray(image), np.asarray(DETECTION.model_view(row, output)))
    # the score is of the view: a changed label changes it (it is invisible at 48 px in the 384 px drawing's blur)
    relabelled = [[{**b, "label": "yellow triangle" if b["label"] != "yellow triangle" else "red circle"} for b in o]
                  for o in outputs()]
    assert not np.allclose(model.score(ROWS, outputs()).numpy(), model.score(ROWS, relabelled).numpy())


def test_by_default_and_saved_before_views_a_model_reads_what_people_see(tmp_path):
    model = build_reward_model(DETECTION)
    assert [im.size for im in model.shown(ROWS, outputs())] == [(384, 384)] * 2
    saved = model.save_pretrained(tmp_path / "rm")
    config = json.loads((saved / CONFIG_NAME).read_text())
    assert config["reads"] == "render"
    config.pop("reads")  # as a model saved before the field existed
    (saved / CONFIG_NAME).write_text(json.dumps(config))
    loaded = load_reward_model(saved)
    assert loaded.cfg.reads == "render"
    assert np.allclose(loaded.score(ROWS, outputs()).numpy(), model.score(ROWS, outputs()).numpy())


def test_a_view_model_scores_the_same_after_a_reload(tmp_path):
    model = build_reward_model(DETECTION, reads="view")
    loaded = load_reward_model(model.save_pretrained(tmp_path / "rm"))
    assert loaded.cfg.reads == "view"
    assert np.allclose(loaded.score(ROWS, outputs()).numpy(), model.score(ROWS, outputs()).numpy(), atol=1e-6)


def test_tasks_without_a_view_read_what_people_see_and_a_bad_reads_is_refused():
    colorization = get_task("colorization")
    model = build_reward_model(colorization, reads="view")
    images = [r["image"].convert("RGB") for r in ROWS]
    assert all(np.array_equal(np.asarray(a), np.asarray(colorization.render(r, b)))
               for a, r, b in zip(model.shown(ROWS, images), ROWS, images, strict=True))
    with pytest.raises(ConfigError, match="--reads .drawn.: choose one of view, render, boxes"):
        build_reward_model(DETECTION, reads="drawn")
