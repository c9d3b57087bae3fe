"""Judging policies against the MLE policy with the simulated annotators: outputs, win rates, the metric columns.

A win rate is the share of oracle judgments (one Bradley–Terry draw per held-out image; a tie counts half) that
prefer a policy's output to the MLE policy's, for greedy decodes (the headline) and for temperature-1 samples.
Rows that are not policies (best-of-n, the ideal output) compare the same output with both.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def policy_outputs(task, policy, rows: list[dict], seed: int, batch_size: int = 50) -> dict[str, list]:
    """{"greedy": greedy decodes, "sample": one temperature-1 sample} per row, on `default_device()` (the policy,
    loaded for this, is moved there: a GPU when there is one)."""
    from vrlhf.device import on_default_device

    on_default_device(policy).eval()
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    greedy, sampled = [], []
    for i in range(0, len(rows), batch_size):
        batch = rows[i : i + batch_size]
        pixels = task.pixel_values(policy, [r["image"] for r in batch])
        greedy += task.decode(policy, batch, policy.greedy(pixels).tokens)
        sampled += task.decode(policy, batch, policy.sample(pixels, 1, generator=generator).tokens)
    return {"greedy": greedy, "sample": sampled}


def judgments(oracle, rows: list[dict], ours: list, theirs: list, seed: int) -> np.ndarray:
    """One oracle judgment per row: 1 (ours wins), 0 (theirs wins) or 0.5 (no difference: a tie).
    Row i's draw depends on (seed, i) only, so every policy is judged with the same coins."""
    return np.array([oracle.judge(r, a, b, np.random.default_rng([seed, i]))
                     for i, (r, a, b) in enumerate(zip(rows, ours, theirs, strict=True))])


def versus_mle(task, oracle, rows: list[dict], outputs: dict[str, list], mle: dict[str, list] | None,
               seed: int) -> dict[str, float]:
    """The task's metrics of the greedy outputs, the oracle's mean score, and win rates against MLE."""
    metrics = task.eval_metrics(rows, outputs["greedy"])
    metrics["oracle_score_sampled"] = float(np.mean([oracle.score(r, o) for r, o in zip(rows, outputs["sample"])]))
    if mle is not None:
        greedy = judgments(oracle, rows, outputs["greedy"], mle["greedy"], seed)
        sampled = judgments(oracle, rows, outputs["sample"], mle["sample"], seed + 1)
        metrics |= {"win_rate_vs_mle_greedy": float(greedy.mean()), "win_rate_vs_mle_sampled": float(sampled.mean()),
                    "ties_vs_mle_greedy": float(np.mean(greedy == 0.5)),
                    "ties_vs_mle_sampled": float(np.mean(sampled == 0.5))}
    return metrics
