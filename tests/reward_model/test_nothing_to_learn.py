"""Preference data with nothing to learn is said plainly: the simulated annotators tie identical outputs, the export
leaves out (and counts) pairs whose chosen and rejected are identical, and `vrlhf train-reward` refuses a held-out
split of only ties instead of printing `accuracy nan` beside a "best" model (issue 21, row 13)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "labeler"))
from labfix import image  # noqa: E402

from labeler.export import export  # noqa: E402
from labeler.store import LabelError, Store  # noqa: E402
from reward_model.data import load_export, split_by_item  # noqa: E402
from vrlhf.cli import main as vrlhf  # noqa: E402
from vrlhf.exports import write_manifest  # noqa: E402
from vrlhf.shapes import make_shapes  # noqa: E402
from vrlhf.tasks import caption_oracle, colorization_oracle  # noqa: E402
from vrlhf.tasks.bradley_terry import plackett_luce  # noqa: E402


@pytest.mark.parametrize("oracle", [caption_oracle, colorization_oracle], ids=["captions", "colorizations"])
def test_simulated_annotators_tie_identical_outputs(oracle):
    row = make_shapes(1, seed=2)[0]
    rng = np.random.default_rng(0)
    a, b = oracle.corrupt(row, rng), oracle.corrupt(row, rng)
    same = a if isinstance(a, str) else a.copy()  # equal, not the same object
    assert [oracle.judge(row, a, same, rng) for _ in range(50)] == [0.5] * 50
    for _ in range(50):  # a ranking cannot say "equal": the twin follows its first, never drawn apart by chance
        order = oracle.rank(row, [a, b, same], rng)
        assert sorted(order) == [0, 1, 2] and order.index(2) == order.index(0) + 1
    scores = [oracle.score(row, o) for o in (a, b)]  # distinct outputs: exactly the Plackett–Luce draw as before
    first, second = np.random.default_rng(5), np.random.default_rng(5)
    assert [oracle.rank(row, [a, b], first) for _ in range(20)] == [
        plackett_luce(scores, second, oracle.DEFAULT_TEMPERATURE) for _ in range(20)]


def test_export_leaves_out_identical_pairs_and_says_so(tmp_path, capsys):
    db = tmp_path / "db.sqlite"
    store = Store(db)
    rid = store.add_round("captioning", "/runs/p", 2)
    for i, outputs in enumerate([["", ""], ["a red circle", "a red circle"], ["a red circle", "a blue square"]]):
        store.add_comparison(rid, f"row-{i}", image(i), outputs)
    for choice in ("a", "b"):
        store.vote(store.next_comparison("ann")["token"], choice, annotator="ann")
    with pytest.raises(LabelError, match=r"nothing to learn: all 2 pairs of .* have chosen == rejected"):
        export(store, tmp_path / "none")
    assert not (tmp_path / "none").exists()
    store.vote(store.next_comparison("ann")["token"], "a", annotator="ann")
    capsys.readouterr()
    assert vrlhf(["export", "--db", str(db), "--out", str(tmp_path / "prefs")]) == 0
    said = capsys.readouterr()
    assert said.err.splitlines(keepends=True)[-1] == (
        "note: left out 2 pairs whose chosen and rejected are identical (nothing to learn from them; their votes stay "
        "in audit.jsonl)\n")
    assert said.out.startswith("wrote 1 pairs from 3 votes")
    ds = load_export(tmp_path / "prefs")
    assert len(ds) == 1 and ds[0]["chosen"] != ds[0]["rejected"]
    assert len((tmp_path / "prefs" / "audit.jsonl").read_text().splitlines()) == 3


def _export(path: Path, labels_by_item: dict[int, list[float]]) -> Path:
    """An export with the given labels per input image (captions differ in every pair)."""
    rows = [{"task": "captioning", "image": Image.new("RGB", (8, 8), (item * 20, 0, 0)), "label": label,
             "chosen": f"caption {item} {j}", "rejected": f"other {item} {j}", "item_id": f"item-{item}",
             "comparison_id": 10 * item + j}
            for item, labels in labels_by_item.items() for j, label in enumerate(labels)]
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    write_manifest(path, "hf", len(rows), dict(Counter(r["task"] for r in rows)), writer="test")
    return path


def test_a_held_out_split_of_only_ties_is_refused_before_training(tmp_path, capsys):
    labels = {item: [1.0, 1.0] for item in range(9)} | {9: [0.5, 0.5]}
    data = _export(tmp_path / "prefs", labels)
    ds = load_export(data)
    seed = next(s for s in range(100) if split_by_item(ds, list(range(len(ds))), 0.1, s)[1] == [18, 19])
    out = tmp_path / "rm"
    common = ["train-reward", "--data", str(data), "--out", str(out), "--image_encoder", "", "--hidden_size", "16",
              "--max_steps", "2", "--batch_size", "4", "--no_progress"]
    capsys.readouterr()
    assert vrlhf([*common, "--seed", str(seed), "--eval_fraction", "0.1"]) == 2
    said = capsys.readouterr()
    assert said.err == (f"vrlhf train-reward: export {data}: the 2 held-out pairs (--eval_fraction 0.1, --seed {seed}) "
                        "are all ties, so nothing measures which model is best: choose another --seed or "
                        "--eval_fraction (0: keep the last model)\n")
    assert said.out == "" and not out.exists()  # no "best" model saved
    assert vrlhf([*common, "--seed", str(seed), "--eval_fraction", "0"]) == 0
    said = capsys.readouterr().out
    assert "nan" not in said and f"no held-out pairs (--eval_fraction 0.0): saved the model of step 2 to {out}" in said
    assert (out / "model.safetensors").is_file()
