"""Greedy evaluation of a policy on a dataset (the `vrlhf eval` command, with best-of-n, is tuner/evaluate.py)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from vrlhf.data import load_rows
from vrlhf.device import on_default_device


@torch.no_grad()
def greedy_outputs(task, policy, rows: list[dict], batch_size: int = 64, progress: bool = False) -> list:
    policy.eval()
    outputs = []
    for i in tqdm(range(0, len(rows), batch_size), desc="eval", disable=not progress):
        batch = rows[i : i + batch_size]
        pixels = task.pixel_values(policy, [r["image"] for r in batch])
        outputs += task.decode(policy, batch, policy.greedy(pixels).tokens)
    return outputs


def evaluate_policy(task, policy_dir: str, data: str, limit: int | None = None, progress: bool = False,
                    strict: bool = False):
    """Held-out metrics of the greedy outputs of the policy in `policy_dir` for `task` (a task module) on `data`."""
    rows = load_rows(data, strict=strict, limit=limit or None, check=task.row_problem)  # bad rows: before the model
    policy = on_default_device(task.load_policy(policy_dir))
    return task.eval_metrics(rows, greedy_outputs(task, policy, rows, progress=progress))
