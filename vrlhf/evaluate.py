"""Greedy evaluation of a policy on a dataset: a metrics table, or one JSON object with `--json`.

    vrlhf eval --task captioning --policy data/demo/captioner --data data/shapes/test
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from vrlhf.config import parse_config
from vrlhf.data import load_rows
from vrlhf.errors import ConfigError
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


@dataclass
class EvalConfig:
    task: str = field(default="", metadata={"help": "the policy's task (a vrlhf.tasks module: captioning, "
                                                    "colorization)"})
    policy: str = field(default="", metadata={"help": "policy model directory"})
    data: str = field(default="", metadata={"help": "evaluation dataset (image folder, COCO JSON or saved HF dataset)"})
    limit: int = field(default=0, metadata={"help": "evaluate on the first N rows only (0: all)"})
    json: bool = field(default=False, metadata={"help": "print one JSON object instead of a table"})
    strict: bool = field(default=False, metadata={"help": "fail on a missing or unreadable image (default: skip "
                                                          "and count)"})


def evaluate_policy(task_name: str, policy_dir: str, data: str, limit: int | None = None, progress: bool = False,
                    strict: bool = False):
    task = get_task(task_name)
    rows = load_rows(data, strict=strict, limit=limit or None, check=task.row_problem)  # bad rows: before the model
    policy = task.load_policy(policy_dir)
    return task.eval_metrics(rows, greedy_outputs(task, policy, rows, progress=progress))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(EvalConfig, argv, prog="vrlhf eval")
    if not (cfg.task and cfg.policy and cfg.data):
        raise ConfigError("eval needs --task, --policy and --data")
    metrics = evaluate_policy(cfg.task, cfg.policy, cfg.data, cfg.limit, progress=not cfg.json, strict=cfg.strict)
    if cfg.json:
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
