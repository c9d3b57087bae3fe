"""Simulated preference exports over the shapes dataset, labelled by the tasks' oracle annotators.

Same columns as the labeler's export, so tests and benchmarks exercise the real training path:
both candidates of a pair are the oracle's own model-like corruptions of the ground truth (`corrupt`):
captions with wrong attributes, dropped or invented shapes; colorizations muted, tinted, hue-shifted, noisy
or coarse.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from vrlhf.marks import dumps
from vrlhf.tasks import get_oracle


def simulated_pairs(task: ModuleType, n_pairs: int, seed: int = 0, pairs_per_image: int = 2,
                    temperature: float | None = None, marks: bool = False) -> dict[str, list]:
    """Columns of a preference export of `task` (a task module) with `n_pairs` oracle-labelled pairs (winner first; ties
    kept), outputs as the task stores them (`to_stored`); with `marks`, also `chosen_marks` / `rejected_marks`: where
    a simulated annotator marked each candidate wrong (vrlhf.marks).

    Also returns the hidden `row` per pair (not an export column) so callers can ask the oracle again.
    """
    from vrlhf.shapes import make_shapes

    oracle = get_oracle(task)
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
        image = task.show_input(row["image"]).convert("RGB")  # what people (and the policy) see of the input
        for key, value in (("task", task.NAME), ("image", image), ("chosen", task.to_stored(a)),
                           ("rejected", task.to_stored(b)), ("label", label),
                           ("annotator", "oracle"), ("item_id", row["id"]), ("comparison_id", n),
                           ("created_at", "2026-01-01T00:00:00"), ("row", row)):
            cols[key].append(value)
        if marks:
            for key, output in (("chosen_marks", a), ("rejected_marks", b)):
                cols.setdefault(key, []).append(dumps(oracle.mark(row, output, rng)))
    return cols


def policy_rankings(task: ModuleType, n_images: int, seed: int = 0, k: int = 4, temperature: float = 1.5,
                    policy: str | None = None, marks: bool = False, batch_size: int = 50) -> dict[str, list]:
    """Columns of an export of `n_images` simulated rankings, as the demo's first round labels them: `k` samples of
    the task's demo policy (or `policy`) per shapes image at `temperature`, ranked by the oracle (Plackett–Luce), each
    ranking expanded to its k(k−1)/2 pairs (winner first). With `marks`, every candidate is marked by the simulated
    annotator once (the same marks in each of its pairs). Hidden per pair: `row`."""
    import torch

    from vrlhf.shapes import make_shapes

    the_task, oracle = task, get_oracle(task)
    pol = the_task.load_policy(policy or the_task.DEMO_POLICY)
    rows = make_shapes(n_images, seed=seed)
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    cols: dict[str, list] = {key: [] for key in ("task", "image", "chosen", "rejected", "label", "annotator",
                                                 "item_id", "comparison_id", "created_at", "row")}
    if marks:
        cols |= {"chosen_marks": [], "rejected_marks": []}
    for start in range(0, n_images, batch_size):
        batch = rows[start : start + batch_size]
        with torch.no_grad():
            tokens = pol.sample(the_task.pixel_values(pol, [r["image"] for r in batch]), k, temperature=temperature,
                                generator=generator).tokens
        outputs = the_task.decode(pol, batch, tokens, k=k)
        for i, row in enumerate(batch):
            candidates = outputs[i * k : (i + 1) * k]
            ranking = oracle.rank(row, candidates, rng)
            marked = [dumps(oracle.mark(row, o, rng)) if marks else "" for o in candidates]
            image = the_task.show_input(row["image"]).convert("RGB")  # what people (and the policy) see of the input
            stored = [the_task.to_stored(o) for o in candidates]
            for a, b in combinations(ranking, 2):
                values = {"task": the_task.NAME, "image": image, "chosen": stored[a], "rejected": stored[b],
                          "label": 1.0, "annotator": "oracle", "item_id": row["id"], "comparison_id": start + i,
                          "created_at": "2026-01-01T00:00:00", "row": row}
                if marks:
                    values |= {"chosen_marks": marked[a], "rejected_marks": marked[b]}
                for key, value in values.items():
                    cols[key].append(value)
    return cols


def oracle_self_agreement(task: ModuleType, cols: dict[str, list], seed: int = 1) -> float:
    """The oracle's self-agreement on these pairs, over strict pairs only (the ceiling of pair accuracy)."""
    strict = [i for i, y in enumerate(cols["label"]) if y != 0.5]
    rows = [cols["row"][i] for i in strict]
    back = lambda key: [task.from_stored(cols[key][i], row) for i, row in zip(strict, rows)]  # noqa: E731
    return get_oracle(task).self_agreement(rows, back("chosen"), back("rejected"), seed=seed)


def save_export(cols: dict[str, list], out: str | Path) -> Path:
    """Write the export columns (without the hidden rows) as a saved HF dataset with its manifest
    (`vrlhf.exports`), so simulated exports load exactly like the labeler's."""
    import datasets

    from vrlhf.exports import staged, write_manifest

    data = {k: v for k, v in cols.items() if k != "row"}
    feats = {"image": datasets.Image()}
    if cols["chosen"] and isinstance(cols["chosen"][0], Image.Image):  # a task that stores images
        feats.update(chosen=datasets.Image(), rejected=datasets.Image())
    ds = datasets.Dataset.from_dict(data)
    for k, f in feats.items():
        ds = ds.cast_column(k, f)
    with staged(out) as tmp:
        ds.save_to_disk(str(tmp))
        write_manifest(tmp, "hf", pairs=len(ds), tasks=dict(Counter(cols["task"])), writer="reward_model.simulate")
    return Path(out)
