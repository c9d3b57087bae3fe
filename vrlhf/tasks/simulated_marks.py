"""Simulated annotators' marks: where a candidate is clearly wrong, as a person marks it (some missed, a few misplaced).

    colorization: every cell of the colour grid whose share of the oracle's score (`colorization_oracle.contributions`)
                  is clearly negative (a tinted background, a shape half in another hue), not a fixed count
                  (`colorization_oracle.mark_colorization`)
    captioning:   the words of the false attributes (`caption_oracle.false_spans`, `caption_oracle.mark_caption`)

Noise, per clearly wrong region (vrlhf/tasks/mark_noise.py): missed with probability `MISS`, else placed on a
neighbouring cell / word with probability `MISPLACE`. Each oracle's `mark` does the marking; this module measures it
(statistics measured with `python -m vrlhf.tasks.simulated_marks` are in docs/ORACLES.md) and names the marking
functions in one place. Marks are in the format of `vrlhf.marks`.
"""

from __future__ import annotations

import numpy as np

# the marking itself lives with each oracle (it reads the oracle's contributions) and in mark_noise (the person)
from vrlhf.tasks.caption_oracle import false_words, mark_caption
from vrlhf.tasks.colorization_oracle import BAD_CELL, bad_cells, cell_contributions, mark_colorization
from vrlhf.tasks.mark_noise import GRID, MISPLACE, MISS

__all__ = ["BAD_CELL", "GRID", "MISPLACE", "MISS", "bad_cells", "cell_contributions", "false_words", "mark",
           "mark_caption", "mark_colorization", "statistics"]

MARKERS = {"colorization": mark_colorization, "captioning": mark_caption}


def mark(task: str, row: dict, output, rng: np.random.Generator) -> dict:
    """A simulated annotator's marks on one candidate of `task` (the marks format of `vrlhf.marks`)."""
    return MARKERS[task](row, output, rng)


def statistics(rows: list[dict], outputs: list, task: str, seed: int = 0) -> dict[str, float]:
    """How simulated marks relate to the truth on these outputs: clearly wrong regions per output, the share of outputs
    with a mark, hit rate on the worst region (the most negative cell / a false word, where one is clearly wrong) and
    on the two worst cells, the share of clearly wrong regions missed, and of marks misplaced (on no wrong region)."""
    rng = np.random.default_rng(seed)
    wrong, marked_any, worst_hit, two_hit, missed, misplaced, n_marks = [], [], [], [], [], [], 0
    for row, output in zip(rows, outputs, strict=True):
        if task == "colorization":
            values = cell_contributions(row, output).reshape(-1)
            truth = (values * GRID * GRID < BAD_CELL)
            marked = np.zeros(GRID * GRID, bool)
            marked[[r * GRID + c for r, c in mark_colorization(row, output, rng).get("cells", [])]] = True
            order = np.argsort(values)
            if truth.any():
                worst_hit.append(marked[order[0]])
                two_hit.extend(marked[order[:2]][truth[order[:2]]])
        else:
            n = len(str(output).split())
            truth = np.zeros(n, bool)
            truth[false_words(row, output)] = True
            marked = np.zeros(n, bool)
            marked[mark_caption(row, output, rng).get("words", [])] = True
            if truth.any():
                worst_hit.append(marked[truth].any())
        wrong.append(truth.sum())
        marked_any.append(marked.any())
        missed.extend(~marked[truth])
        misplaced.extend(~truth[marked])
        n_marks += marked.sum()
    return {"outputs": len(rows), "wrong_regions_per_output": float(np.mean(wrong)),
            "marks_per_output": n_marks / len(rows), "outputs_with_marks": float(np.mean(marked_any)),
            "worst_region_hit": float(np.mean(worst_hit)), "two_worst_cells_hit": float(np.mean(two_hit or [np.nan])),
            "missed": float(np.mean(missed)), "misplaced": float(np.mean(misplaced))}


def main(argv: list[str] | None = None) -> None:
    """Print the statistics of docs/ORACLES.md: marks on model-like outputs (the oracles' `corrupt`) and on the demo
    colorizer's own samples at temperature 1.5 (what the demo's first round labels)."""
    from vrlhf.config import parse_no_arguments

    parse_no_arguments(argv, main.__doc__)  # before the imports below: a wrong flag answers at once
    import torch

    from vrlhf.shapes import make_shapes
    from vrlhf.tasks import caption_oracle, colorization_oracle, get_task

    rng = np.random.default_rng(0)
    rows = make_shapes(400, seed=1)
    task = get_task("colorization")
    policy = task.load_policy(task.DEMO_POLICY)
    with torch.no_grad():
        tokens = policy.sample(task.pixel_values(policy, [r["image"] for r in rows]), 1, temperature=1.5,
                               generator=torch.Generator().manual_seed(0)).tokens
    cases = {
        "colorization, model-like (corrupt)": ("colorization", [colorization_oracle.corrupt(r, rng) for r in rows]),
        "colorization, demo colorizer at T 1.5": ("colorization", task.decode(policy, rows, tokens)),
        "captioning, model-like (corrupt)": ("captioning", [caption_oracle.corrupt(r, rng) for r in rows]),
    }
    for name, (task_name, outputs) in cases.items():
        stats = statistics(rows, outputs, task_name)
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in stats.items()))


if __name__ == "__main__":
    import sys

    from vrlhf.errors import run_command

    sys.exit(run_command("python -m vrlhf.tasks.simulated_marks", main))
