"""`vrlhf eval-reward`: accuracy, mean margin and calibration (ECE) of a reward model on any export.

    vrlhf eval-reward --model DIR --data EXPORT [--json]
"""

from __future__ import annotations

import json
from functools import partial

import torch

from reward_model.config import EvalRewardConfig
from reward_model.data import PairDataset, collate_pairs, load_export, validate
from reward_model.models import load_reward_model
from vrlhf.errors import ConfigError


def evaluate_reward(model, data, batch_size: int = 64) -> dict[str, float]:
    """Metrics of a loaded reward model (or a model directory) on every pair of its task in `data`."""
    from reward_model.train import evaluate_pairs

    model = load_reward_model(model) if not isinstance(model, torch.nn.Module) else model
    ds = load_export(data)
    _, keep, _ = validate(ds, data, model.task_module)
    loader = torch.utils.data.DataLoader(PairDataset(ds, keep, model.task_module), batch_size=batch_size,
                                         collate_fn=partial(collate_pairs, model))
    return {"task": model.task, **evaluate_pairs(model, loader)}


def main(argv: list[str] | None = None) -> int:
    from vrlhf.config import parse_config

    cfg = parse_config(EvalRewardConfig, argv, prog="vrlhf eval-reward")
    if not cfg.model or not cfg.data:
        raise ConfigError("eval-reward needs --model DIR and --data EXPORT")
    metrics = evaluate_reward(cfg.model, cfg.data, cfg.batch_size)
    if cfg.json:
        print(json.dumps(metrics))
    else:
        print("| metric | value |\n| --- | --- |")
        for k, v in metrics.items():
            print(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return 0
