"""Reward model benchmark: held-out pair accuracy against the number of training pairs, for both tasks.

    .venv/bin/python bench/bench_reward_model.py [--sizes 100 200 400 800] [--epochs 8]

Pairs are simulated on the shapes dataset and labelled by each task's oracle annotator (reward_model/simulate.py);
evaluation uses 400 pairs on other images. Writes bench/results/reward_model.md (table) and .png (plot), and
prints the table. The ceiling is the oracle's self-agreement on the evaluation pairs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reward_model.evaluate import evaluate_reward  # noqa: E402
from reward_model.simulate import oracle_self_agreement, save_export, simulated_pairs  # noqa: E402
from reward_model.train import TrainRewardConfig, train_reward  # noqa: E402
from vrlhf.tasks import get_task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def run(task: str, sizes: list[int], epochs: int, work: Path, batch_size: int = 32) -> list[dict]:
    module = get_task(task)  # the task's name, resolved once
    full = simulated_pairs(module, max(sizes), seed=0)
    held = simulated_pairs(module, 400, seed=99)
    save_export(held, work / f"{task}-eval")
    ceiling = oracle_self_agreement(module, held)
    out = []
    for n in sizes:
        save_export({k: v[:n] for k, v in full.items()}, work / f"{task}-{n}")
        steps = max(epochs * math.ceil(n / batch_size), 60)  # small sets get enough steps to converge
        cfg = TrainRewardConfig(task=task, data=str(work / f"{task}-{n}"), out=str(work / f"{task}-{n}-rm"),
                                eval_fraction=0.0, max_steps=steps, eval_every=steps, batch_size=batch_size,
                                progress=False)
        t0 = time.perf_counter()
        summary = train_reward(cfg)
        metrics = evaluate_reward(cfg.out, work / f"{task}-eval")
        out.append({"task": task, "pairs": n, "steps": steps, "accuracy": metrics["accuracy"], "ece": metrics["ece"],
                    "ceiling": ceiling, "share_of_ceiling": metrics["accuracy"] / ceiling,
                    "pairs_per_sec": summary["pairs_per_sec"], "seconds": time.perf_counter() - t0})
        print(json.dumps(out[-1]), flush=True)
    return out


def table(results: list[dict]) -> str:
    lines = ["| task | training pairs | held-out accuracy | oracle self-agreement | share | ECE | train pairs/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['task']} | {r['pairs']} | {r['accuracy']:.3f} | {r['ceiling']:.3f} | {r['share_of_ceiling']:.0%} "
              f"| {r['ece']:.3f} | {r['pairs_per_sec']:.0f} |" for r in results]
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, task in enumerate(dict.fromkeys(r["task"] for r in results)):
        rs = [r for r in results if r["task"] == task]
        ax.plot([r["pairs"] for r in rs], [r["accuracy"] for r in rs], "o-", color=f"C{i}", label=task)
        ax.axhline(rs[0]["ceiling"], color=f"C{i}", ls="--", lw=0.8)
    ax.set(xscale="log", xlabel="training pairs", ylabel="held-out pair accuracy",
           title="Reward model accuracy (dashed: oracle ceiling)")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    sizes = sorted({r["pairs"] for r in results})
    ax.set_xticks(sizes, labels=[str(n) for n in sizes])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400, 800])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--tasks", nargs="+", default=["captioning", "colorization"])
    parser.add_argument("--plot-only", action="store_true", help="redraw table and plot from reward_model.json")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.plot_only:
        args.tasks = []
    results = []
    with tempfile.TemporaryDirectory() as work:
        for task in args.tasks:
            results += run(task, args.sizes, args.epochs, Path(work))
    previous = RESULTS / "reward_model.json"  # keep the other tasks' rows when only some tasks are rerun
    if previous.is_file():
        kept = [r for r in json.loads(previous.read_text()) if r["task"] not in args.tasks]
        results = sorted(kept + results, key=lambda r: (r["task"], r["pairs"]))
    md = table(results)
    (RESULTS / "reward_model.md").write_text(f"{md}\n")
    (RESULTS / "reward_model.json").write_text(json.dumps(results, indent=1))
    plot(results, RESULTS / "reward_model.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
