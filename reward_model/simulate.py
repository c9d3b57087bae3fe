"""Simulated preference exports over the shapes dataset, labelled by the tasks' oracle annotators.

Same columns as the labeler's export, so tests and benchmarks exercise the real training path:
both candidates of a pair are the oracle's own model-like corruptions of the ground truth (`corrupt`):
captions with wrong attributes, dropped or invented shapes; colorizations muted, tinted, hue-shifted, noisy
or coarse.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np


def simulated_pairs(task: str, n_pairs: int, seed: int = 0, pairs_per_image: int = 2,
                    temperature: float | None = None) -> dict[str, list]:
    """Columns of a preference export with `n_pairs` oracle-labelled pairs (winner first; ties kept).

    Also returns the hidden `row` per pair (not an export column) so callers can ask the oracle again.
    """
    from vrlhf.shapes import make_shapes

    oracle = _oracle(task)
    kwargs = {} if temperature is None else {"temperature": temperature}
    rows = make_shapes((n_pairs + pairs_per_image - 1) // pairs_per_image, seed=seed)
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("task", "image", "chosen", "rejected", "label", "annotator",
                                             "item_id", "comparison_id", "created_at", "row")}
    for n in range(n_pairs):
        row = rows[n // pairs_per_image]
        a, b = oracle.corrupt(row, rng), oracle.corrupt(row, rng)
        label = oracle.judge(row, a, b, rng, **kwargs)
        if label == 0.0:
            a, b, label = b, a, 1.0
        image = row["image"].convert("L").convert("RGB") if task == "colorization" else row["image"]
        for key, value in (("task", task), ("image", image), ("chosen", a), ("rejected", b), ("label", label),
                           ("annotator", "oracle"), ("item_id", row["id"]), ("comparison_id", n),
                           ("created_at", "2026-01-01T00:00:00"), ("row", row)):
            cols[key].append(value)
    return cols


def _oracle(task: str):
    from vrlhf.tasks import get_oracle

    return get_oracle(task)


def oracle_self_agreement(task: str, cols: dict[str, list], seed: int = 1) -> float:
    """The oracle's self-agreement on these pairs, over strict pairs only (the ceiling of pair accuracy)."""
    oracle = _oracle(task)
    strict = [i for i, y in enumerate(cols["label"]) if y != 0.5]
    pick = lambda key: [cols[key][i] for i in strict]  # noqa: E731
    return oracle.self_agreement(pick("row"), pick("chosen"), pick("rejected"), seed=seed)


def save_export(cols: dict[str, list], out: str | Path) -> Path:
    """Write the export columns (without the hidden rows) as a saved HF dataset with its manifest
    (`vrlhf.exports`), so simulated exports load exactly like the labeler's."""
    import datasets

    from vrlhf.exports import staged, write_manifest

    data = {k: v for k, v in cols.items() if k != "row"}
    feats = {"image": datasets.Image()}
    if cols["task"] and cols["task"][0] == "colorization":
        feats.update(chosen=datasets.Image(), rejected=datasets.Image())
    ds = datasets.Dataset.from_dict(data)
    for k, f in feats.items():
        ds = ds.cast_column(k, f)
    with staged(out) as tmp:
        ds.save_to_disk(str(tmp))
        write_manifest(tmp, "hf", pairs=len(ds), tasks=dict(Counter(cols["task"])), writer="reward_model.simulate")
    return Path(out)
