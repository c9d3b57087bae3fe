"""How a simulated annotator's marks stray from the truth: each clearly wrong region is missed with probability
`MISS`, else placed on a neighbouring cell / word with probability `MISPLACE` (docs/ORACLES.md). The oracles' `mark`
(caption_oracle, colorization_oracle) find the clearly wrong regions; this adds the person."""

from __future__ import annotations

import numpy as np

from vrlhf.marks import cells_of

GRID = 8  # an image's marking grid: the colorizer's colour grid, one cell per token (labeler/marking.py's default)
MISS, MISPLACE = 0.2, 0.1  # per clearly wrong region: not marked / marked on a neighbour instead


def _neighbour(cell: tuple[int, int], grid: int, rng: np.random.Generator) -> tuple[int, int]:
    moves = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)
             and 0 <= cell[0] + dr < grid and 0 <= cell[1] + dc < grid]
    dr, dc = moves[rng.integers(len(moves))]
    return cell[0] + dr, cell[1] + dc


def noisy_cells(bad: np.ndarray, rng: np.random.Generator, miss: float = MISS, misplace: float = MISPLACE) -> dict:
    """Marks on the bool (grid, grid) `bad` cells: each missed with probability `miss`, else moved to a neighbouring
    cell with probability `misplace`. `{"grid", "cells"}` or {} (nothing marked)."""
    grid = bad.shape[0]
    mask = np.zeros((grid, grid), dtype=bool)
    for cell in zip(*np.nonzero(bad)):
        if rng.random() < miss:
            continue
        mask[_neighbour(cell, grid, rng) if rng.random() < misplace else cell] = True
    return cells_of(mask)


def noisy_words(false: list[int], n_words: int, rng: np.random.Generator, miss: float = MISS,
                misplace: float = MISPLACE) -> dict:
    """Marks on the `false` word indices of an `n_words` text: each missed with probability `miss`, else moved to the
    word before or after with probability `misplace`. `{"words": [...]}` or {}."""
    words = set()
    for i in false:
        if rng.random() < miss:
            continue
        if rng.random() < misplace and n_words > 1:
            i = min(max(i + (1 if rng.random() < 0.5 else -1), 0), n_words - 1)
        words.add(i)
    return {"words": sorted(words)} if words else {}
