"""Candidate edits (`vrlhf sample --edits N`): does a reward model learn more when some candidates are edits?

    .venv/bin/python bench/bench_edits.py [--tasks colorization captioning] [--edits 0 1] [--seeds 0 1]

At the same number of comparisons (400 rankings of 4, as the demo's first round labels them: samples of the demo
policy at temperature 1.5, ranked by the simulated annotator, 6 pairs a ranking), N of the 4 candidates of each
ranking are edits of the policy's other samples (labeler.sampling.edited_candidates, the code `vrlhf sample` runs)
instead of policy samples. The same policy samples are drawn either way (the edits replace the last N). The reward
model is the demo's (today's scalar model, 8 epochs). Evaluation is on the policy's OWN samples of other images
(shapes seed 99), as bench/bench_dense_reward.py does it:
  * pair accuracy: 200 rankings of 4 temperature-1.5 samples, their pairs;
  * within-image Spearman: 8 temperature-1 samples for each of 200 images, the reward model's ranking against the
    oracle's, averaged over images.
It also prints what each edit does to the oracle's score of the sample it edits (the direction it shows).
Writes bench/results/edits.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_dense_reward import within_image_spearman  # noqa: E402

from labeler.sampling import edited_candidates  # noqa: E402
from reward_model import load_reward_model  # noqa: E402
from reward_model.evaluate import evaluate_reward  # noqa: E402
from reward_model.simulate import policy_rankings, save_export  # noqa: E402
from reward_model.train import TrainRewardConfig, train_reward  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TEST_SEED = 99
HEADER = ("Candidate edits (`.venv/bin/python bench/bench_edits.py`): 400 oracle rankings of 4 demo-policy samples "
          "(temperature 1.5), N of the 4 replaced by edits of the others; the demo's reward model (scalar, 8 epochs); "
          "evaluated on the policy's own samples of 200 held-out shapes images (seed 99). docs/DEMO.md, "
          "\"Candidate edits\". 2 shared CPU cores, one torch thread.\n\n")


def edited_rankings(task_name: str, n_images: int, seed: int, k: int = 4, n_edits: int = 0,
                    temperature: float = 1.5, batch_size: int = 50) -> dict[str, list]:
    """Columns of an export of `n_images` oracle rankings of k candidates: k samples of the demo policy, the last
    `n_edits` replaced by edits of the others (fewer where no new-looking edit exists). As policy_rankings."""
    from vrlhf.shapes import make_shapes
    from vrlhf.tasks import get_oracle, get_task

    task, oracle = get_task(task_name), get_oracle(task_name)
    policy = task.load_policy(task.DEMO_POLICY)
    rows = make_shapes(n_images, seed=seed)
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    edit_rng = np.random.default_rng([seed, 1])  # the edits' own stream: the rankings' draws stay comparable
    cols: dict[str, list] = {key: [] for key in ("task", "image", "chosen", "rejected", "label", "annotator",
                                                 "item_id", "comparison_id", "created_at", "row")}
    for start in range(0, n_images, batch_size):
        batch = rows[start : start + batch_size]
        with torch.no_grad():
            tokens = policy.sample(task.pixel_values(policy, [r["image"] for r in batch]), k, temperature=temperature,
                                   generator=generator).tokens
        outputs = task.decode(policy, batch, tokens, k=k)
        for i, row in enumerate(batch):
            samples = outputs[i * k : (i + 1) * k]
            kept = samples[: k - n_edits]
            edits = edited_candidates(task, row | {"attributes": None}, kept, n_edits, edit_rng) if n_edits else []
            candidates = kept + edits + samples[len(kept) + len(edits):]  # short of edits: the policy's samples
            ranking = oracle.rank(row, candidates, rng)
            image = row["image"].convert("L").convert("RGB") if task.OUTPUT == "image" else row["image"]
            for a, b in combinations(ranking, 2):
                values = {"task": task_name, "image": image, "chosen": candidates[a], "rejected": candidates[b],
                          "label": 1.0, "annotator": "oracle", "item_id": row["id"], "comparison_id": start + i,
                          "created_at": "2026-01-01T00:00:00", "row": row}
                for key, value in values.items():
                    cols[key].append(value)
    return cols


def edit_effects(task_name: str, n_images: int = 200, seed: int = 7, k: int = 4,
                 temperature: float = 1.5) -> list[dict]:
    """Per edit: the mean change of the oracle's score from the sample to its edit, and how often it rises / falls."""
    from vrlhf.shapes import make_shapes
    from vrlhf.tasks import get_oracle, get_task

    task, oracle = get_task(task_name), get_oracle(task_name)
    policy = task.load_policy(task.DEMO_POLICY)
    rows, rng = make_shapes(n_images, seed=seed), np.random.default_rng(seed)
    with torch.no_grad():
        tokens = policy.sample(task.pixel_values(policy, [r["image"] for r in rows]), k, temperature=temperature,
                               generator=torch.Generator().manual_seed(seed)).tokens
    outputs = task.decode(policy, rows, tokens, k=k)
    changes: dict[str, list[float]] = {}
    for i, row in enumerate(rows):
        samples = outputs[i * k : (i + 1) * k]
        for j, sample in enumerate(samples):
            before = oracle.score(row, sample)
            blind = row | {"attributes": None}  # the edits never see the ground truth
            for name, edited in task.edits(blind, sample, rng, samples[:j] + samples[j + 1:]).items():
                changes.setdefault(name, []).append(oracle.score(row, edited) - before)
    return [{"task": task_name, "edit": name, "n": len(d), "mean_change": float(np.mean(d)),
             "rises": float(np.mean(np.array(d) > 1e-9)), "falls": float(np.mean(np.array(d) < -1e-9))}
            for name, d in changes.items()]


def run(task: str, n_edits: int, seed: int, work: Path, rankings: int, epochs: int, eval_images: int,
        say=print) -> dict:
    data = work / f"{task}-{rankings}-e{n_edits}-s{seed}"
    if not data.exists():
        save_export(edited_rankings(task, rankings, seed=seed, n_edits=n_edits), data)
    held = work / f"{task}-held-{TEST_SEED}"
    if not held.exists():
        save_export(policy_rankings(task, eval_images, seed=TEST_SEED), held)
    cfg = TrainRewardConfig(task=task, data=str(data), out=str(work / f"rm-{data.name}"), eval_fraction=0.0,
                            epochs=epochs, eval_every=10**9, seed=seed, progress=False)
    done = Path(cfg.out) / "bench.json"  # a model trained earlier in this --work: only evaluated again
    if done.is_file():
        summary, seconds = json.loads(done.read_text()).values()
    else:
        start = time.perf_counter()
        summary = train_reward(cfg)
        seconds = time.perf_counter() - start
        done.write_text(json.dumps({"summary": summary, "seconds": seconds}))
    model = load_reward_model(cfg.out)
    result = {"task": task, "edits": n_edits, "seed": seed, "rankings": rankings, "pairs": summary["train_pairs"],
              "epochs": epochs, "accuracy": evaluate_reward(model, held)["accuracy"],
              "spearman": within_image_spearman(task, model, eval_images, TEST_SEED), "seconds": seconds}
    say(json.dumps(result))
    return result


def tables(results: list[dict], effects: list[dict]) -> str:
    lines = ["| task | edits per ranking of 4 | seed | pairs | held-out pair accuracy (policy samples) | "
             "within-image Spearman | train s |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['task']} | {r['edits']} | {r['seed']} | {r['pairs']} | {r['accuracy']:.3f} | "
                     f"{r['spearman']:.3f} | {r['seconds']:.0f} |")
    lines += ["", "| task | edits | seeds | mean pair accuracy | mean within-image Spearman |",
              "| --- | ---: | --- | ---: | ---: |"]
    for key in sorted({(r["task"], r["edits"]) for r in results}):
        same = [r for r in results if (r["task"], r["edits"]) == key]
        lines.append(f"| {key[0]} | {key[1]} | {', '.join(str(r['seed']) for r in same)} | "
                     f"{np.mean([r['accuracy'] for r in same]):.3f} | {np.mean([r['spearman'] for r in same]):.3f} |")
    if effects:
        lines += ["", "| task | edit | edited samples | mean change of the oracle's score | rises | falls |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {e['task']} | {e['edit']} | {e['n']} | {e['mean_change']:+.3f} | {e['rises']:.2f} | "
                  f"{e['falls']:.2f} |" for e in effects]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["colorization", "captioning"])
    parser.add_argument("--edits", type=int, nargs="+", default=[0, 1], help="edits among the 4 candidates")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training-data and reward-model seeds")
    parser.add_argument("--rankings", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=8, help="the demo's reward-model epochs")
    parser.add_argument("--eval-images", type=int, default=200)
    parser.add_argument("--work", default="", help="keep the generated exports and models here (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--effects-only", action="store_true", help="only the table of what each edit does")
    parser.add_argument("--table-only", action="store_true", help="print the tables of edits.json")
    args = parser.parse_args(argv)
    if args.table_only:
        saved = json.loads((RESULTS / "edits.json").read_text())
        print(tables(saved["results"], saved["effects"]))
        return 0
    torch.set_num_threads(args.threads)
    effects = [e for task in args.tasks for e in edit_effects(task)]
    print(tables([], effects))
    results = []
    if not args.effects_only:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(args.work or tmp)
            work.mkdir(parents=True, exist_ok=True)
            for seed in args.seeds:  # one seed of every task first: the machine is shared and slow
                for task in args.tasks:
                    for n_edits in args.edits:
                        results.append(run(task, n_edits, seed, work, args.rankings, args.epochs, args.eval_images))
        RESULTS.mkdir(parents=True, exist_ok=True)
        previous = RESULTS / "edits.json"  # keep the rows of other settings: each run may cover a part of the table
        key = lambda r: (r["task"], r["edits"], r["seed"], r["rankings"], r["epochs"])  # noqa: E731
        if previous.is_file():
            new, saved = {key(r) for r in results}, json.loads(previous.read_text())
            results = [r for r in saved["results"] if key(r) not in new] + results
            effects = [e for e in saved["effects"] if e["task"] not in args.tasks] + effects
        results = sorted(results, key=lambda r: (r["task"] != "colorization", r["task"], r["seed"], r["edits"]))
        (RESULTS / "edits.json").write_text(json.dumps({"results": results, "effects": effects}, indent=1))
        (RESULTS / "edits.md").write_text(HEADER + tables(results, effects) + "\n")
    print(tables(results, effects))
    return 0


if __name__ == "__main__":
    sys.exit(main())
