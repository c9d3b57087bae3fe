"""Greedy evaluation of a policy on a dataset: a metrics table, or one JSON object with `--json`.

    vrlhf eval --task captioning --policy data/demo/captioner --data data/shapes/test
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from tqdm.auto import tqdm

from vrlhf.data import load_rows
from vrlhf.tasks import get_task


@torch.no_grad()
def greedy_outputs(task, policy, rows: list[dict], batch_size: int = 64, progress: bool = False) -> list:
    policy.eval()
    outputs = []
    for i in tqdm(range(0, len(rows), batch_size), desc="eval", disable=not progress):
        batch = rows[i : i + batch_size]
        pixels = task.pixel_values(policy, [r["image"] for r in batch])
        outputs += task.decode(policy, batch, policy.greedy(pixels).tokens)
    return outputs


def evaluate_policy(task_name: str, policy_dir: str, data: str, limit: int | None = None, progress: bool = False,
                    strict: bool = False):
    task = get_task(task_name)
    rows = load_rows(data, strict=strict, limit=limit, check=task.row_problem)  # bad rows fail before the model loads
    policy = task.load_policy(policy_dir)
    return task.eval_metrics(rows, greedy_outputs(task, policy, rows, progress=progress))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vrlhf eval", description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=["captioning", "colorization"], help="the policy's task")
    parser.add_argument("--policy", required=True, help="policy model directory")
    parser.add_argument("--data", required=True, help="evaluation dataset (image folder, COCO JSON or saved HF dataset)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N rows only")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--strict", action="store_true", help="fail on a missing or unreadable image (default: skip and count)")
    args = parser.parse_args(argv)
    metrics = evaluate_policy(args.task, args.policy, args.data, args.limit, progress=not args.json, strict=args.strict)
    if args.json:
        print(json.dumps(metrics))
    else:
        width = max(map(len, metrics))
        print(f"{'metric':<{width}}  value\n{'-' * width}  -------")
        for name, value in metrics.items():
            print(f"{name:<{width}}  {value:.4f}")
    return 0


if __name__ == "__main__":
    from vrlhf.errors import run_command

    sys.exit(run_command("vrlhf eval", main))
