"""Does a colorization reward model credit cells as the oracle does? The quantity own-cell credit feeds the tuner.

    .venv/bin/python bench/bench_cell_credit.py RM_DIR [--images 100] [--k 8]

For k temperature-1 samples of the demo colorizer on held-out shapes images (seed 99), each sample's per-token
rewards are computed from the reward model's regions (a dense model's score map, a scalar one's attribution) and
from the oracle's pixel contributions, both through the task's `token_rewards` (what `vrlhf tune --token_credit own`
uses). Printed:
  * within-image Spearman of the samples' sums (the reward's ranking of an image's samples);
  * per cell, the Spearman across an image's samples of the model's and the oracle's value (cells that vary);
  * the Pearson correlation of leave-one-out advantages per token with the oracle's own-cell advantages: for the
    model's own-cell credit, for its sequence credit (the sum's advantage spread evenly over the cells), and for the
    oracle's own sequence credit (what sequence credit keeps of a perfect reward's signal).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from reward_model import load_reward_model  # noqa: E402
from vrlhf.shapes import make_shapes  # noqa: E402
from vrlhf.tasks import get_oracle, get_task  # noqa: E402

TEST_SEED = 99


def leave_one_out(values: np.ndarray) -> np.ndarray:
    """(k, ...) -> each sample minus the mean of the others (the tuner's baseline), per position."""
    k = len(values)
    return values - (values.sum(0, keepdims=True) - values) / (k - 1)


def evenly(totals: np.ndarray, cells: int) -> np.ndarray:
    """Sequence credit: each sample's leave-one-out advantage of its total, the same share on each of its cells."""
    return np.repeat(leave_one_out(totals)[:, None], cells, axis=1) / cells


def measure(model_dir: str, images: int, k: int, seed: int = 0) -> dict[str, float]:
    task = get_task("colorization")
    oracle, policy = get_oracle(task), task.load_policy(task.DEMO_POLICY).eval()
    model = load_reward_model(model_dir, task=task)
    if model.regions is None:
        raise SystemExit(f"{model_dir}: this reward model has no per-cell form (a colorization model has one)")
    rows, generator = make_shapes(images, seed=TEST_SEED), torch.Generator().manual_seed(seed)
    sums, cells, ours, ideal, spread, oracle_spread = [], [], [], [], [], []
    for start in range(0, images, 25):
        batch = rows[start : start + 25]
        with torch.no_grad():
            pixels = task.pixel_values(policy, [r["image"] for r in batch])
            tokens = policy.sample(pixels, k, generator=generator).tokens
        outputs = task.decode(policy, batch, tokens, k=k)
        learned = task.token_rewards(policy, tokens, outputs, model.regions(batch, outputs)).numpy()
        truth = task.token_rewards(policy, tokens, outputs, [oracle.regions(batch[i // k], o)
                                                             for i, o in enumerate(outputs)]).numpy()
        for i in range(len(batch)):
            m, o = learned[i * k : (i + 1) * k], truth[i * k : (i + 1) * k]  # (k, cells)
            if np.ptp(m.sum(1)) > 0 and np.ptp(o.sum(1)) > 0:
                sums.append(spearmanr(m.sum(1), o.sum(1)).statistic)
            cells += [spearmanr(m[:, c], o[:, c]).statistic for c in range(m.shape[1])
                      if np.ptp(m[:, c]) > 1e-9 and np.ptp(o[:, c]) > 1e-9]
            ours.append(leave_one_out(m).ravel())
            ideal.append(leave_one_out(o).ravel())
            spread.append(evenly(m.sum(1), m.shape[1]).ravel())
            oracle_spread.append(evenly(o.sum(1), m.shape[1]).ravel())
    ideal_all = np.concatenate(ideal)
    corr = lambda a: float(np.corrcoef(np.concatenate(a), ideal_all)[0, 1])  # noqa: E731
    return {"sum_spearman": float(np.mean(sums)), "cell_spearman": float(np.mean(cells)), "cells": len(cells),
            "own_cell_vs_oracle": corr(ours), "sequence_vs_oracle": corr(spread),
            "oracle_sequence_vs_oracle": corr(oracle_spread)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a colorization reward model: dense (its map) or scalar (its attribution)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args(argv)
    r = measure(args.model, args.images, args.k)
    print(f"within-image Spearman of the sums: {r['sum_spearman']:.3f}")
    print(f"per cell, across an image's samples: Spearman {r['cell_spearman']:.3f} ({r['cells']} cells that vary)")
    print(f"advantages per token against the oracle's own-cell ones (Pearson): the model's own-cell credit "
          f"{r['own_cell_vs_oracle']:.3f}, its sequence credit {r['sequence_vs_oracle']:.3f}, the oracle's own "
          f"sequence credit {r['oracle_sequence_vs_oracle']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
