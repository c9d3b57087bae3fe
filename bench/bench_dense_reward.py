"""Dense reward models and marks: held-out pair accuracy and within-image Spearman against the oracle.

    .venv/bin/python bench/bench_dense_reward.py [--rankings 400 1500] [--variants today dense dense+marks]

Training data is what the demo's first round labels (loop/rounds.py): 4 samples of the demo colorizer per shapes image
at temperature 1.5, ranked by the simulated annotator (6 pairs a ranking), and with marks, each candidate's clearly bad
cells marked by it (vrlhf/tasks/simulated_marks.py). Evaluation is on other images (another shapes seed):
  * pair accuracy: rankings made the same way on 200 held-out images, their 1200 pairs;
  * within-image Spearman: 8 samples of the demo colorizer at temperature 1 for each of 200 held-out images, the
    reward model's ranking of an image's samples against the oracle's score, averaged over images (what the tuner's
    leave-one-out baseline sees).
Hyperparameters were chosen on a validation seed (`--validate`), never on these held-out images.
Writes bench/results/dense_reward.{md,json} and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from reward_model import load_reward_model  # noqa: E402
from reward_model.evaluate import evaluate_reward  # noqa: E402
from reward_model.simulate import policy_rankings, save_export  # noqa: E402
from reward_model.train import TrainRewardConfig, train_reward  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TRAIN_SEED, VALIDATION_SEED, TEST_SEED = 0, 5, 99
# variant -> (TrainRewardConfig overrides, whether the export carries marks)
VARIANTS = {
    "today": ({}, False),
    "dense": ({"dense": True, "image_size": 64}, False),
    "dense+marks": ({"dense": True, "image_size": 64}, True),
    "today+marks": ({}, True),  # the scalar model ignores marks: a control
}


def within_image_spearman(task_name: str, model, n_images: int, seed: int, k: int = 8) -> float:
    """Mean over images of Spearman(reward, oracle score) of k temperature-1 samples of the demo policy."""
    from vrlhf.shapes import make_shapes
    from vrlhf.tasks import get_oracle, get_task

    task, oracle = get_task(task_name), get_oracle(task_name)
    policy = task.load_policy(task.DEMO_POLICY)
    rows, generator = make_shapes(n_images, seed=seed), torch.Generator().manual_seed(seed)
    rhos = []
    for start in range(0, n_images, 50):
        batch = rows[start : start + 50]
        pixels = task.pixel_values(policy, [r["image"] for r in batch])
        with torch.no_grad():
            tokens = policy.sample(pixels, k, generator=generator).tokens
        outputs = task.decode(policy, batch, tokens, k=k)
        rewards = model.score(batch, outputs).view(len(batch), k).numpy()
        for i, row in enumerate(batch):
            truth = [oracle.score(row, o) for o in outputs[i * k : (i + 1) * k]]
            if np.ptp(truth) > 0 and np.ptp(rewards[i]) > 0:
                rhos.append(spearmanr(rewards[i], truth).statistic)
    return float(np.mean(rhos))


def run(task: str, rankings: list[int], variants: list[str], work: Path, epochs: int, eval_images: int,
        evaluation_seed: int, k: int = 4, say=print) -> list[dict]:
    marked = {}  # export with marks per size (every variant reads the same rankings; marks are extra columns)
    for n in rankings:
        path = work / f"{task}-{n}-k{k}"
        if not path.exists():
            save_export(policy_rankings(task, n, seed=TRAIN_SEED, k=k, marks=True), path)
        marked[n] = path
    held = work / f"{task}-held-{evaluation_seed}"
    if not held.exists():
        save_export(policy_rankings(task, eval_images, seed=evaluation_seed), held)
    out = []
    for n in rankings:
        for variant in variants:
            overrides, with_marks = VARIANTS[variant]
            cfg = TrainRewardConfig(task=task, data=str(marked[n]), out=str(work / f"rm-{task}-{n}-k{k}-{variant}"),
                                    eval_fraction=0.0, epochs=epochs, eval_every=10**9, seed=0, progress=False,
                                    marks_coef=1.0 if with_marks else 0.0, **overrides)
            done = Path(cfg.out) / "bench.json"  # a model trained earlier in this --work: only evaluated again
            if done.is_file():
                summary, seconds = json.loads(done.read_text()).values()
            else:
                start = time.perf_counter()
                summary = train_reward(cfg)
                seconds = time.perf_counter() - start
                done.write_text(json.dumps({"summary": summary, "seconds": seconds}))
            model = load_reward_model(cfg.out)
            accuracy = evaluate_reward(model, held)["accuracy"]
            rho = within_image_spearman(task, model, eval_images, evaluation_seed)
            out.append({"task": task, "rankings": n, "k": k, "pairs": summary["train_pairs"], "epochs": epochs,
                        "variant": variant,
                        "accuracy": accuracy, "spearman": rho, "seconds": seconds})
            say(json.dumps(out[-1]))
    return out


def table(results: list[dict]) -> str:
    lines = ["| task | comparisons (pairs) | epochs | reward model | marks | held-out pair accuracy | "
             "within-image Spearman | train s |", "| --- | --- | ---: | --- | --- | ---: | ---: | ---: |"]
    for r in results:
        model = "dense (8×8 map)" if r["variant"].startswith("dense") else "today's (scalar)"
        what = f"{r['rankings']} rankings of {r['k']}" if r.get("k", 4) > 2 else f"{r['rankings']} pairs"
        lines.append(f"| {r['task']} | {what} ({r['pairs']}) | {r.get('epochs', 8)} | {model} | "
                     f"{'yes' if r['variant'].endswith('+marks') else 'no'} | {r['accuracy']:.3f} | "
                     f"{r['spearman']:.3f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rankings", type=int, nargs="+", default=[400, 1500])
    parser.add_argument("--variants", nargs="+", default=["today", "dense", "dense+marks"], choices=list(VARIANTS))
    parser.add_argument("--k", type=int, default=4, help="candidates per comparison (4: ranked, as the demo; 2: pairs)")
    parser.add_argument("--epochs", type=int, default=8, help="the demo's reward-model epochs")
    parser.add_argument("--epochs-1500", type=int, default=2, help="epochs for 1500 rankings and more (2: about the "
                        "steps of 400 rankings x 8 epochs; the machine is shared)")
    parser.add_argument("--eval-images", type=int, default=200)
    parser.add_argument("--validate", action="store_true", help="evaluate on the validation seed (choosing settings)")
    parser.add_argument("--work", default="", help="keep the generated exports and models here (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--table-only", action="store_true", help="print the table of dense_reward.json")
    args = parser.parse_args(argv)
    if args.table_only:
        print(table(json.loads((RESULTS / "dense_reward.json").read_text())))
        return 0
    torch.set_num_threads(args.threads)
    seed = VALIDATION_SEED if args.validate else TEST_SEED
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = []
        for n in args.rankings:
            epochs = args.epochs if n < 1500 else args.epochs_1500
            results += run("colorization", [n], args.variants, work, epochs, args.eval_images, seed, args.k)
    if not args.validate:  # keep the rows of other settings (each run may cover a part of the table)
        RESULTS.mkdir(parents=True, exist_ok=True)
        previous = RESULTS / "dense_reward.json"
        key = lambda r: (r["task"], r.get("k", 4), r["rankings"], r["variant"])  # noqa: E731
        if previous.is_file():
            new = {key(r) for r in results}
            results = [r for r in json.loads(previous.read_text()) if key(r) not in new] + results
        results = sorted(results, key=lambda r: (r["task"], -r.get("k", 4), r["rankings"], list(VARIANTS).index(
            r["variant"])))
    md = table(results)
    if not args.validate:
        (RESULTS / "dense_reward.md").write_text(f"{md}\n")
        (RESULTS / "dense_reward.json").write_text(json.dumps(results, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
