"""Tuning the demo detector with the paper's reward (issue 20): held-out mAP / AR before and after, and the oracle's
win rate of the tuned detector against MLE.

    .venv/bin/python bench/bench_detection_tuning.py                          # detection_reward, the demo's budget
    .venv/bin/python bench/bench_detection_tuning.py --rewards detection_reward,map,detection_reward_conf --seeds 0,1
    .venv/bin/python bench/bench_detection_tuning.py --rewards ""              # MLE only: the room for RLHF

MLE first: the demo detector's greedy boxes on `--eval-images` test rows (COCO mAP, AP50, AR@100, oracle score) and
how often the ideal output (the true boxes) wins against them in the oracle's judgment (one Bradley–Terry draw per
image, ties half: loop/compare.py's rule). Then each reward: `vrlhf tune` from the demo detector at the demo's budget
(`loop.demo.demo_tune`: 40 steps x 8 images x k 4, lr 1e-4, KL 0.2) with `--reward NAME=1`, judged the same way.
The target (issue 20): mAP +20% relative with `detection_reward` (the paper: +38% on COCO), AR with it.
Every finished run is appended to OUT/results.jsonl (a rerun skips it); a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # a 2-core machine shared with other jobs: no oversubscription

from bench.bench_tuner import ensure_shapes  # noqa: E402
from loop.compare import judgments, policy_outputs  # noqa: E402
from vrlhf.data import load_rows  # noqa: E402
from vrlhf.tasks import get_oracle, get_task  # noqa: E402


def measure(task, oracle, rows: list[dict], greedy: list, mle_greedy: list | None) -> dict:
    """COCO metrics and oracle score of greedy outputs, and their win rate against MLE's (ties half)."""
    metrics = {k: v for k, v in task.eval_metrics(rows, greedy).items()
               if k in ("map", "ap50", "ar", "oracle_score", "boxes")}
    if mle_greedy is not None:
        metrics["win_vs_mle"] = float(judgments(oracle, rows, greedy, mle_greedy, seed=0).mean())
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="", help="the MLE detector (default: the task's DEMO_POLICY)")
    parser.add_argument("--rewards", default="detection_reward", help="comma-separated metric rewards to tune with")
    parser.add_argument("--seeds", default="0", help="tuning seeds")
    parser.add_argument("--steps", type=int, default=0, help="tuning steps; 0: the demo's (demo_tune().steps)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a tuning field for every run (e.g. lr=3e-4)")
    parser.add_argument("--shapes", default=str(ROOT / "work/demo/shapes"), help="the demo's shapes dataset")
    parser.add_argument("--eval-images", type=int, default=300, help="test-split images judged")
    parser.add_argument("--out", default=str(ROOT / "runs/bench_detection_tuning"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    task = get_task("detection")
    oracle = get_oracle(task)
    shapes, out = ensure_shapes(Path(args.shapes)), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_rows(shapes / "test", limit=args.eval_images)
    policy_dir = args.policy or str(task.DEMO_POLICY)
    mle = task.load_policy(policy_dir)
    mle_greedy = policy_outputs(task, mle, rows, seed=0)["greedy"]
    ideal = task.ideal_outputs(mle, rows)
    print(json.dumps({"mle": measure(task, oracle, rows, mle_greedy, None),
                      "ideal_win_vs_mle": float(judgments(oracle, rows, ideal, mle_greedy, seed=0).mean())}),
          flush=True)
    if not args.rewards:
        return 0

    from loop.demo import demo_tune
    from tuner.train import tune

    results_file = out / "results.jsonl"
    done = [json.loads(line) for line in results_file.read_text().splitlines()] if results_file.exists() else []
    base = demo_tune()
    overrides = {key: type(getattr(base, key))(value) for key, value in (item.split("=", 1) for item in args.set)}
    base = replace(base, **overrides, steps=args.steps or base.steps, eval_size=0)
    for reward in args.rewards.split(","):
        for seed in map(int, args.seeds.split(",")):
            key = dict(policy=policy_dir, reward=reward, seed=seed, steps=base.steps, overrides=args.set)
            record = next((r for r in done if all(r.get(k) == v for k, v in key.items())), None)
            if record is None:
                cfg = replace(base, task="detection", policy=policy_dir, data=str(shapes), reward=[f"{reward}=1.0"],
                              out=str(out / f"{reward}-s{seed}-{base.steps}"), seed=seed, overwrite=True)
                start = time.perf_counter()
                tuned, _ = tune(cfg)
                greedy = policy_outputs(task, tuned, rows, seed=0)["greedy"]
                record = key | {"seconds": round(time.perf_counter() - start, 1),
                                **measure(task, oracle, rows, greedy, mle_greedy)}
                with results_file.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                done.append(record)
            print(json.dumps(record), flush=True)
    before = measure(task, oracle, rows, mle_greedy, None)
    print("\n| policy | seed | mAP | AP50 | AR@100 | oracle score | win vs MLE |\n|---|---|---|---|---|---|---|")
    print(f"| MLE | | {before['map']:.3f} | {before['ap50']:.3f} | {before['ar']:.3f} | "
          f"{before['oracle_score']:.3f} | |")
    for r in done:
        if r["policy"] == policy_dir and r["overrides"] == args.set:
            gain = 100 * (r["map"] / before["map"] - 1) if before["map"] > 0 else float("nan")
            print(f"| {r['reward']} ({r['steps']} steps) | {r['seed']} | {r['map']:.3f} ({gain:+.0f}%) | "
                  f"{r['ap50']:.3f} | {r['ar']:.3f} | {r['oracle_score']:.3f} | {r['win_vs_mle']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
