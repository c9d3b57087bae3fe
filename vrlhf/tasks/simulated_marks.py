"""Simulated annotators' marks: where a candidate is clearly wrong, as a person marks it (some missed, a few misplaced).

    colorization: every cell of the colour grid whose share of the oracle's score (`colorization_oracle.contributions`)
                  is clearly negative (a tinted background, a shape half in another hue), not a fixed count
    captioning:   the words of the false attributes (`caption_oracle.false_spans`)

Noise, per clearly wrong region: missed with probability `MISS`, else placed on a neighbouring cell / word with
probability `MISPLACE`. Statistics measured with `python -m vrlhf.tasks.simulated_marks` are in docs/ORACLES.md.
Marks are in the format of `vrlhf.marks`.
"""

from __future__ import annotations

import numpy as np

from vrlhf.marks import cells_of

GRID = 8  # the colorizer's colour grid: one cell per token
# A cell is clearly bad when the image would lose this much score if every cell were like it (contribution × cells):
# a background tint of chroma ≈ 6 over the cell, or a shape cell whose colour strays far from the shape's own.
BAD_CELL = -0.15
MISS, MISPLACE = 0.2, 0.1  # per clearly wrong region: not marked / marked on a neighbour instead


def cell_contributions(row: dict, output, grid: int = GRID) -> np.ndarray:
    """(grid, grid) shares of the colorization oracle's score, one per cell of the output (they sum to the score)."""
    from vrlhf.tasks import colorization_oracle

    values = np.asarray(colorization_oracle.contributions(row, output, grid=grid), dtype=np.float64)
    return values.reshape(grid, grid)


def bad_cells(row: dict, output, grid: int = GRID, threshold: float = BAD_CELL) -> np.ndarray:
    """Bool (grid, grid): the cells a careful annotator would call clearly wrong (no noise)."""
    return cell_contributions(row, output, grid) * grid * grid < threshold


def _neighbour(cell: tuple[int, int], grid: int, rng: np.random.Generator) -> tuple[int, int]:
    moves = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)
             and 0 <= cell[0] + dr < grid and 0 <= cell[1] + dc < grid]
    dr, dc = moves[rng.integers(len(moves))]
    return cell[0] + dr, cell[1] + dc


def mark_colorization(row: dict, output, rng: np.random.Generator, grid: int = GRID, miss: float = MISS,
                      misplace: float = MISPLACE) -> dict:
    """One simulated annotator's marks on a colorization: its clearly bad cells, each missed with probability `miss`,
    else moved to a neighbouring cell with probability `misplace`. `{"grid", "cells"}` or {} (nothing marked)."""
    mask = np.zeros((grid, grid), dtype=bool)
    for cell in zip(*np.nonzero(bad_cells(row, output, grid))):
        if rng.random() < miss:
            continue
        mask[_neighbour(cell, grid, rng) if rng.random() < misplace else cell] = True
    return cells_of(mask)


def false_words(row: dict, output: str) -> list[int]:
    """Indices of the words of `output` (split on whitespace, as the marks count them) that state something false about
    the image: the caption oracle's `false_spans`, which count its own words (letter runs), mapped back."""
    from vrlhf.tasks import caption_oracle

    owner = [i for i, word in enumerate(str(output).split()) for _ in caption_oracle.words(word)]  # oracle word -> ours
    return sorted({owner[j] for start, end in caption_oracle.false_spans(row, output) for j in range(start, end)})


def mark_caption(row: dict, output: str, rng: np.random.Generator, miss: float = MISS,
                 misplace: float = MISPLACE) -> dict:
    """One simulated annotator's marks on a caption: its false words, each missed with probability `miss`, else moved
    to the word before or after with probability `misplace`. `{"words": [...]}` or {}."""
    n_words, words = len(str(output).split()), set()
    for i in false_words(row, output):
        if rng.random() < miss:
            continue
        if rng.random() < misplace and n_words > 1:
            i = min(max(i + (1 if rng.random() < 0.5 else -1), 0), n_words - 1)
        words.add(i)
    return {"words": sorted(words)} if words else {}


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
