"""Marks on the labeling page: the grid an image candidate is marked on, read from what the server knows of the
policy that drew it (its policy.json), so the page's overlay has the cells the reward model learns on.

The marks themselves are vrlhf/marks.py's format; the store checks them with the vote (labeler/leases.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from labeler.schema import Comparison, Round
from vrlhf.marks import MAX_GRID
from vrlhf.tasks.mark_noise import GRID

POLICY_FILE = "policy.json"  # vrlhf.policy.POLICY_FILE (not imported: that module loads torch)


def grid_of_policy(policy_path: str) -> int:
    """The colour grid of the policy saved at `policy_path` (policy.json's meta "grid": one cell per token); GRID
    (the colorizer's, 8) when the path holds no such file (a hub id, a policy saved elsewhere) or no usable grid."""
    try:
        meta = json.loads((Path(policy_path) / POLICY_FILE).read_text()).get("meta") or {}
        grid = meta.get("grid")
    except (OSError, ValueError, AttributeError):
        return GRID
    return grid if isinstance(grid, int) and not isinstance(grid, bool) and 1 <= grid <= MAX_GRID else GRID


class Grids:
    """The marking grid of each comparison's image candidates (that of the round's policy), read once per round."""

    def __init__(self, store):
        self.store = store
        self.by_comparison: dict[int, int] = {}
        self.by_policy: dict[str, int] = {}

    def __call__(self, comparison_id: int) -> int:
        grid = self.by_comparison.get(comparison_id)
        if grid is None:
            with self.store.ReadSession() as s:
                path = s.scalar(select(Round.policy_path).join(Comparison, Comparison.round_id == Round.id)
                                .where(Comparison.id == comparison_id))
            if path not in self.by_policy:
                self.by_policy[path] = GRID if path is None else grid_of_policy(path)
            grid = self.by_comparison[comparison_id] = self.by_policy[path]
            if len(self.by_comparison) > 100_000:  # a long-running server: forget the oldest comparisons
                self.by_comparison.clear()
        return grid
