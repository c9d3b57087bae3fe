"""The oracle bound with per-token credit: the policy tuned on the simulated annotator itself at the demo's budget.

    .venv/bin/python bench/bench_token_credit.py                                 # both tasks, seeds 0 and 1
    .venv/bin/python bench/bench_token_credit.py --tasks colorization --seeds 0 --runs sequence:1,own:1,own:2

Each run is the demo's bound row (`loop/rounds.py`): `vrlhf tune` from the demo checkpoint with the demo's tuning
budget (`loop.demo.demo_tune`: 40 steps × 8 images × k 4, lr 1e-4), reward `oracle=1.0`, no KL, and the given
`--token_credit` and `--num_iterations`. Each tuned policy is judged against MLE by the oracle, as the demo judges:
* on `--select-images` rows of the *training* split (what the defaults are chosen on: the tuner draws 320 of ~9000
  training rows, so most of these it never saw), and
* on `--eval-images` rows of the test split (the demo's held-out images: reported, never used to choose).
"win" is the demo's number (one Bradley–Terry draw per image, a tie counts half); "exp." is its expectation (the mean
P(tuned ≻ MLE), ties half): the same quantity without the draw's noise. `--equal-time` adds, for every credit run
with --num_iterations 2, a single-pass run with as many more steps as the second pass cost in wall-clock.

Prints a markdown table per task; every finished run is appended to OUT/results.jsonl (a rerun skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# One thread: on a 2-core machine shared with other jobs, torch's default (one thread per core) made sampling 20x
# slower (33 s vs 1.4 s for 8 images x k 4 of the demo colorizer) by oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from bench.bench_tuner import ensure_shapes  # noqa: E402
from loop.compare import policy_outputs, versus_mle  # noqa: E402
from loop.demo import demo_tune  # noqa: E402
from tuner.train import tune  # noqa: E402
from vrlhf.data import load_rows  # noqa: E402
from vrlhf.tasks import get_oracle, get_task  # noqa: E402
from vrlhf.tasks.bradley_terry import TIE_MARGIN, sigmoid  # noqa: E402


def expected_win_rate(oracle, rows: list[dict], ours: list, theirs: list) -> float:
    """Mean P(ours ≻ theirs) under the oracle's Bradley–Terry model, a tie (|Δ| < TIE_MARGIN) counting half."""
    wins = []
    for row, a, b in zip(rows, ours, theirs, strict=True):
        delta = oracle.score(row, a) - oracle.score(row, b)
        wins.append(0.5 if abs(delta) < TIE_MARGIN else sigmoid(delta / oracle.DEFAULT_TEMPERATURE))
    return float(np.mean(wins))


def judge(task, oracle, rows: list[dict], policy, mle_out: dict, seed: int) -> dict:
    outs = policy_outputs(task, policy, rows, seed)
    drawn = versus_mle(task, oracle, rows, outs, mle_out, seed)
    return {"win": drawn["win_rate_vs_mle_greedy"], "exp": expected_win_rate(oracle, rows, outs["greedy"],
                                                                             mle_out["greedy"]),
            "oracle_score": drawn["oracle_score"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="colorization,captioning")
    parser.add_argument("--seeds", default="0,1", help="tuning seeds (the demo's default is 0)")
    parser.add_argument("--runs", default="sequence:1,own:1,to_go:1,sequence:2,own:2,to_go:2",
                        help="CREDIT:PASSES, comma-separated: --token_credit and --num_iterations of each run")
    parser.add_argument("--equal-time", action="store_true",
                        help="also run one pass with the steps that match each 2-pass run's tuning time")
    parser.add_argument("--steps", type=int, default=0, help="tuning steps; 0: the demo's (demo_tune().steps)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a tuning field for every run (e.g. lr=3e-4)")
    parser.add_argument("--shapes", default=str(ROOT / "work/demo/shapes"), help="the demo's shapes dataset")
    parser.add_argument("--eval-images", type=int, default=300, help="test-split images judged (the demo's 300)")
    parser.add_argument("--select-images", type=int, default=200, help="training-split images judged (selection)")
    parser.add_argument("--out", default=str(ROOT / "runs/bench_token_credit"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    shapes, out = ensure_shapes(Path(args.shapes)), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.jsonl"
    done = [json.loads(line) for line in results_file.read_text().splitlines()] if results_file.exists() else []
    base = demo_tune()
    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = type(getattr(base, key))(value)
    # the tuner's own held-out evaluation is left out (the bench judges each policy itself): it does not touch training
    base = replace(base, **overrides, steps=args.steps or base.steps, eval_size=0)
    train_rows = load_rows(shapes / "train")
    select_rows = train_rows[-args.select_images :]
    test_rows = load_rows(shapes / "test", limit=args.eval_images)

    for task_name in args.tasks.split(","):
        task, oracle = get_task(task_name), get_oracle(task_name)
        mle = task.load_policy(task.DEMO_POLICY)
        mle_eval = {name: policy_outputs(task, mle, rows, seed=0) for name, rows in
                    (("select", select_rows), ("test", test_rows))}
        plan = [(seed, credit, int(n), base.steps) for seed in map(int, args.seeds.split(","))
                for credit, n in (run.split(":") for run in args.runs.split(","))]
        for seed, credit, n, steps in plan:
            key = dict(task=task_name, seed=seed, credit=credit, num_iterations=n, steps=steps,
                       overrides=args.set)
            found = [r for r in done if all(r.get(k) == v for k, v in key.items())]
            if found:
                record = found[0]
            else:
                cfg = replace(base, task=task_name, policy=str(task.DEMO_POLICY), data=str(shapes),
                              out=str(out / f"{task_name}-s{seed}-{credit}-n{n}-{steps}"), reward=["oracle=1.0"],
                              reward_norm="none", kl_coef=0.0, kl_reference="", seed=seed, token_credit=credit,
                              num_iterations=n, overwrite=True)  # a run cut short leaves its directory
                start = time.perf_counter()
                policy, _ = tune(cfg)
                record = key | {"seconds": round(time.perf_counter() - start, 1)}
                for name, rows in (("select", select_rows), ("test", test_rows)):
                    record[name] = judge(task, oracle, rows, policy, mle_eval[name], seed=0)
                with results_file.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                done.append(record)
            print(json.dumps(record), flush=True)
            if args.equal_time and n == 2 and steps == base.steps:  # the single pass given the same wall-clock
                single = [r for r in done if r["task"] == task_name and r["seed"] == seed and r["credit"] == credit
                          and r["num_iterations"] == 1 and r["steps"] == base.steps]
                if single:
                    matched = round(base.steps * record["seconds"] / single[0]["seconds"])
                    if (seed, credit, 1, matched) not in plan:
                        plan.append((seed, credit, 1, matched))
        print(f"\n{task_name}: oracle-tuned vs MLE (train-side selection rows | test rows)\n")
        print("| seed | credit | passes | steps | tuning s | win (train) | exp. (train) | win (test) | exp. (test) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in done:
            if r["task"] == task_name and r.get("overrides") == args.set:
                print(f"| {r['seed']} | {r['credit']} | {r['num_iterations']} | {r['steps']} | {r['seconds']:.0f} | "
                      f"{r['select']['win']:.3f} | {r['select']['exp']:.3f} | {r['test']['win']:.3f} | "
                      f"{r['test']['exp']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
