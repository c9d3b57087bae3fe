"""`vrlhf eval`: a policy's held-out metrics from greedy decoding, and best-of-n under any reward beside them.

    vrlhf eval --task captioning --policy data/demo/captioner --data work/demo/shapes/test
    vrlhf eval --task captioning --policy data/demo/captioner --data work/demo/shapes/test \
        --best_of 8 --reward learned:work/rm      # 8 samples per image, the reward model keeps its favourite

Best-of-n shows what a reward model knows before any tuning, and it is a strong, cheap baseline. It lives in the
tuner stage because it scores with the tuner's rewards (`--reward` takes the same specs as `vrlhf tune`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from vrlhf.config import parse_config
from vrlhf.errors import ConfigError


@dataclass
class EvalConfig:
    task: str = field(default="", metadata={"help": "the policy's task (a vrlhf.tasks module: captioning, "
                                                    "colorization)"})
    policy: str = field(default="", metadata={"help": "policy: a model directory (ours, or any supported Hugging "
                                                      "Face captioner / VLM) or a hub id"})
    data: str = field(default="", metadata={"help": "evaluation dataset: image folder, COCO JSON, saved HF dataset or "
                                                    "a hub dataset id (ID or ID:SPLIT)"})
    image_column: str = field(default="image", metadata={"help": "image column of a Hugging Face --data"})
    caption_column: str = field(default="", metadata={"help": "caption column of a Hugging Face --data; empty: "
                                                              "captions, caption or text"})
    limit: int = field(default=0, metadata={"help": "evaluate on the first N rows only (0: all)"})
    best_of: int = field(default=0, metadata={"help": "also draw N samples per input and keep the one --reward "
                                                      "scores highest (0: greedy decoding only)"})
    reward: list[str] = field(default_factory=list, metadata={
        "help": "what best-of-n maximises, as `vrlhf tune --reward`: learned:DIR, cider_d, oracle, ... (NAME=WEIGHT, "
                "repeatable; metric document frequencies come from --data itself)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the best-of-n samples"})
    seed: int = field(default=0, metadata={"help": "seed of the best-of-n samples"})
    json: bool = field(default=False, metadata={"help": "print one JSON object instead of a table"})
    strict: bool = field(default=False, metadata={"help": "fail on a missing or unreadable image (default: skip "
                                                          "and count)"})


def evaluate(cfg: EvalConfig) -> dict[str, dict[str, float]]:
    """{"greedy": metrics} and, with best_of, {"best_of_N": metrics of the chosen samples}."""
    from tuner.best_of_n import best_of_n
    from tuner.rewards import build_reward, parse_reward_specs
    from vrlhf.data import load_rows
    from vrlhf.device import default_device, on_default_device
    from vrlhf.evaluate import greedy_outputs
    from vrlhf.tasks import get_task

    if not (cfg.task and cfg.policy and cfg.data):
        raise ConfigError("eval needs --task, --policy and --data")
    if cfg.best_of < 0 or (cfg.best_of and not cfg.reward):
        raise ConfigError("--best_of N needs N >= 1 and a --reward to choose with (e.g. --reward learned:DIR)")
    task = get_task(cfg.task)
    specs = parse_reward_specs(cfg.reward) if cfg.best_of else []  # bad specs fail before any loading
    rows = load_rows(cfg.data, strict=cfg.strict, limit=cfg.limit or None, check=task.row_problem,
                     image_column=cfg.image_column, caption_column=cfg.caption_column)
    reward = build_reward(task, specs, rows, device=default_device()) if specs else None
    policy = on_default_device(task.load_policy(cfg.policy))  # a GPU when there is one (VRLHF_DEVICE overrides)
    results = {"greedy": task.eval_metrics(rows, greedy_outputs(task, policy, rows, progress=not cfg.json))}
    if reward is not None:
        chosen, scores = best_of_n(task, policy, rows, reward, cfg.best_of, cfg.seed, cfg.temperature,
                                   progress=not cfg.json)
        results[f"best_of_{cfg.best_of}"] = task.eval_metrics(rows, chosen) | {
            "reward_of_chosen": float(scores.max(dim=1).values.mean()), "reward_of_a_sample": float(scores.mean())}
    return results


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(EvalConfig, argv, prog="vrlhf eval")
    results = evaluate(cfg)
    if cfg.json:
        print(json.dumps(results if cfg.best_of else results["greedy"]))
        return 0
    names = list(dict.fromkeys(m for metrics in results.values() for m in metrics))
    width = max(map(len, names))
    print(f"{'metric':<{width}}  " + "  ".join(f"{c:>12}" for c in results))
    for name in names:
        print(f"{name:<{width}}  " + "  ".join(
            f"{results[c][name]:>12.4f}" if name in results[c] else f"{'–':>12}" for c in results))
    return 0
