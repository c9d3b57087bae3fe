"""Every format `vrlhf export` writes trains and evaluates a reward model as it is, from the command line: the
labeler's database -> `vrlhf export --format F` -> `vrlhf train-reward` -> `vrlhf eval-reward` (issue 21, row 2)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "labeler"))
from labfix import fill  # noqa: E402

from labeler.export import EXPORT_FORMATS  # noqa: E402
from labeler.store import Store  # noqa: E402
from reward_model.data import load_export  # noqa: E402
from vrlhf.cli import main as vrlhf  # noqa: E402

CHOICES = ["a", "b", "a", "tie", "a", "b", "a", "a"]  # 8 comparisons: 7 strict pairs and a tie
CASES = [(task, fmt) for task in ("captioning", "colorization") for fmt in EXPORT_FORMATS
         if not (task == "colorization" and fmt == "trl")]  # trl is TRL's format for text outputs only


@pytest.fixture(scope="module")
def databases(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    for task in ("captioning", "colorization"):
        store = Store(root / f"{task}.sqlite")
        fill(store, len(CHOICES), k=2, task=task)
        for choice in CHOICES:
            view = store.next_comparison("ann")
            store.vote(view["token"], choice, annotator="ann")
        store.close()
    return root


def test_every_export_format_is_covered():
    assert {fmt for _, fmt in CASES} == set(EXPORT_FORMATS) and len(CASES) == 7


def _pairs(ds) -> list[tuple]:
    """(input pixels, chosen, rejected, label) of each pair: images compared by their pixels."""
    def value(v):
        from reward_model.data import to_image

        return v if isinstance(v, str) else np.asarray(to_image(v).convert("RGB")).tobytes()

    return sorted((value(r["image"]), value(r["chosen"]), value(r["rejected"]), float(r["label"])) for r in ds)


@pytest.mark.parametrize("task,fmt", CASES)
def test_export_trains_and_evaluates_a_reward_model(databases, tmp_path, capsys, task, fmt):
    db, out, model = databases / f"{task}.sqlite", tmp_path / "prefs", tmp_path / "rm"
    assert vrlhf(["export", "--db", str(db), "--out", str(out), "--format", fmt]) == 0
    reference = databases / f"{task}-hf-reference"
    if not reference.exists():
        assert vrlhf(["export", "--db", str(db), "--out", str(reference)]) == 0
    strict = 1 if fmt == "trl" else 0  # TRL's format leaves the tie out
    expected = [p for p in _pairs(load_export(reference)) if not strict or p[3] != 0.5]
    assert len(expected) == 8 - strict and _pairs(load_export(out)) == expected  # the same pairs, pixel for pixel

    capsys.readouterr()
    assert vrlhf(["train-reward", "--data", str(out), "--out", str(model), "--image_encoder", "", "--hidden_size", "16",
                  "--max_steps", "2", "--batch_size", "4", "--eval_fraction", "0", "--no_progress"]) == 0
    said = capsys.readouterr().out
    assert f"{task}: {8 - strict} training pairs, 0 held out" in said, said
    assert (model / "model.safetensors").is_file()
    assert vrlhf(["eval-reward", "--model", str(model), "--data", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["task"] == task and (metrics["pairs"], metrics["ties"]) == (8 - strict, 1 - strict)
    assert 0.0 <= metrics["accuracy"] <= 1.0
