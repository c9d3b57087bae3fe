"""Reward model on detections: held-out pair accuracy and within-image Spearman against the detection oracle.

    .venv/bin/python bench/bench_detection_reward_model.py [--rankings 400] [--epochs 8] [--seeds 0]

The reward model is the scalar image reward model reading what people see, the boxes drawn over the input at 384 px
(`detection.render`, `--reads render`, the bench's default), or the boxes at the input's resolution
(`detection.model_view`, `--reads view`), or the box-set model reading the boxes themselves (`--reads boxes`, the
task's and the demo's default since it was measured here). Training data is what the demo's first round labels
(loop/rounds.py): 4 samples of the demo detector per shapes image at temperature 1.5, ranked by the simulated annotator
(6 pairs a ranking; reward_model/simulate.policy_rankings). Evaluation is on other images (shapes seed 99), as
bench/bench_dense_reward.py does it:
  * pair accuracy: 200 rankings of 4 temperature-1.5 samples made the same way, their pairs (beside the oracle's
    self-agreement on them, the ceiling);
  * within-image Spearman: 8 temperature-1 samples of the detector for each of 200 images, the reward model's ranking
    of an image's samples against the oracle's score, averaged over images (what the tuner's baseline sees).
The detector is copied first (data/demo/detector may be replaced meanwhile) and named in each result by its last
commit and its weights' hash (which tells an uncommitted retraining apart).
Writes bench/results/detection_reward_model.{md,json} and prints the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
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
from reward_model.simulate import oracle_self_agreement, policy_rankings, save_export  # noqa: E402
from reward_model.train import TrainRewardConfig, train_reward  # noqa: E402
from vrlhf import REPO  # noqa: E402
from vrlhf.shapes import make_shapes  # noqa: E402
from vrlhf.tasks import get_oracle, get_task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TEST_SEED = 99


def within_image_spearman(task, policy_path: Path, model, n_images: int, seed: int, k: int = 8) -> tuple[float, int]:
    """(mean over images of Spearman(reward, oracle score) of k temperature-1 samples of the detector, the number of
    images it averages): images whose samples all score the same, by the oracle or the model, have no ranking."""
    oracle, policy = get_oracle(task), task.load_policy(policy_path)
    rows, generator = make_shapes(n_images, seed=seed), torch.Generator().manual_seed(seed)
    rhos = []
    for start in range(0, n_images, 50):
        batch = rows[start : start + 50]
        with torch.no_grad():
            pixels = task.pixel_values(policy, [r["image"] for r in batch])
            tokens = policy.sample(pixels, k, generator=generator).tokens
        outputs = task.decode(policy, batch, tokens, k=k)
        rewards = model.score(batch, outputs).view(len(batch), k).numpy()
        for i, row in enumerate(batch):
            truth = [oracle.score(row, o) for o in outputs[i * k : (i + 1) * k]]
            if np.ptp(truth) > 0 and np.ptp(rewards[i]) > 0:
                rhos.append(spearmanr(rewards[i], truth).statistic)
    return float(np.mean(rhos)), len(rhos)


def distinct(cols: dict[str, list]) -> dict[str, list]:
    """The pairs whose two candidates differ (the ones a reward model is trained and evaluated on)."""
    keep = [i for i, (a, b) in enumerate(zip(cols["chosen"], cols["rejected"], strict=True)) if a != b]
    return {key: [values[i] for i in keep] for key, values in cols.items()}


def run(rankings: int, seed: int, epochs: int, eval_images: int, work: Path, policy: Path, image_size: int = 48,
        reads: str = "render", say=print) -> dict:
    task = get_task("detection")
    train = policy_rankings(task, rankings, seed=seed, policy=str(policy))
    save_export(train, work / f"train-{seed}")
    held_path = work / "held"
    held = policy_rankings(task, eval_images, seed=TEST_SEED, policy=str(policy))
    save_export(held, held_path)
    cfg = TrainRewardConfig(task="detection", data=str(work / f"train-{seed}"),
                            out=str(work / f"rm-{seed}-{image_size}-{reads}"), reads=reads,
                            eval_fraction=0.0, epochs=epochs, eval_every=10**9, seed=seed, progress=False,
                            image_size=image_size)
    start = time.perf_counter()
    summary = train_reward(cfg)
    seconds = time.perf_counter() - start
    model = load_reward_model(cfg.out)
    rho, ranked_images = within_image_spearman(task, policy, model, eval_images, TEST_SEED)
    result = {"task": "detection", "rankings": rankings, "k": 4, "seed": seed, "image_size": image_size, "reads": reads,
              "pairs": summary["train_pairs"],
              "epochs": epochs, "accuracy": evaluate_reward(model, held_path)["accuracy"],
              "ceiling": oracle_self_agreement(task, distinct(held)),
              "rankings_pairs": len(train["label"]), "held_pairs": len(held["label"]),
              "spearman": rho, "spearman_images": ranked_images, "seconds": seconds}
    say(json.dumps(result), flush=True)
    return result


def detector_name(path: Path) -> str:
    """The detector's last commit and the first 8 hex digits of its weights' sha256."""
    git = lambda *args: subprocess.run(["git", *args, "--", str(path)], cwd=REPO, capture_output=True,  # noqa: E731
                                       text=True).stdout.strip()
    commit = git("log", "-1", "--format=%h") or "none"
    commit = f"uncommitted over {commit}" if git("status", "--porcelain") else commit
    return f"{commit} (weights {hashlib.sha256((path / 'model.safetensors').read_bytes()).hexdigest()[:8]})"


def table(results: list[dict]) -> str:
    lines = ["Reward model on detections (`.venv/bin/python bench/bench_detection_reward_model.py`): a reward "
             "model on the boxes (reads: view, the image model on the boxes at the input's 48 px; render, the image "
             "model on the 384 px drawing people see; boxes, the box-set model on the boxes themselves), trained on "
             "oracle rankings of 4 samples of the demo detector (temperature 1.5; data/demo/detector, as the detector "
             "column names it); evaluated on 200 "
             "held-out shapes images (seed 99): pair accuracy on rankings made the same way (ceiling: the oracle's "
             "self-agreement), within-image Spearman of 8 temperature-1 samples against the oracle's score. 2 shared "
             "CPU cores, one torch thread.", "",
             "| detector | comparisons (distinct pairs / all) | epochs | seed | reward model's image px | held-out "
             "pair accuracy | oracle self-agreement | within-image Spearman (images ranked) | train s | reads |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    lines += [f"| {r['detector']} | {r['rankings']} rankings of {r['k']} ({r['pairs']} / {r['rankings_pairs']}) | "
              f"{r['epochs']} | {r['seed']} | {r.get('image_size', 48)} | {r['accuracy']:.3f} | {r['ceiling']:.3f} | "
              f"{r['spearman']:.3f} ({r['spearman_images']}) | {r['seconds']:.0f} | {r.get('reads', 'render')} |"
              for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rankings", type=int, default=400, help="training rankings of 4 (the demo's first round)")
    parser.add_argument("--epochs", type=int, default=8, help="the demo's reward-model epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (images and model)")
    parser.add_argument("--eval-images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=48, help="the reward model's image side (48: the demo's; "
                        "the drawing is 384 px)")
    parser.add_argument("--reads", default="render", choices=("render", "view", "boxes"),
                        help="what the reward model reads (render: the drawing people see; view: detection.model_view; "
                        "boxes: the box sets, detection's default)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        policy = Path(shutil.copytree(get_task("detection").DEMO_POLICY, work / "detector"))
        detector = detector_name(Path(get_task("detection").DEMO_POLICY))
        if hashlib.sha256((policy / "model.safetensors").read_bytes()).hexdigest()[:8] not in detector:
            raise SystemExit("data/demo/detector changed while it was copied; run again")
        results = [{"detector": detector, **run(args.rankings, seed, args.epochs, args.eval_images, work, policy,
                                                 args.image_size, args.reads)} for seed in args.seeds]
    previous = RESULTS / "detection_reward_model.json"  # keep the rows of other settings and detectors
    key = lambda r: (r["detector"], r["rankings"], r["epochs"], r["seed"], r["image_size"],  # noqa: E731
                     r.get("reads", "render"))
    if previous.is_file():
        new = {key(r) for r in results}
        results = [r for r in json.loads(previous.read_text()) if key(r) not in new] + results
    results = sorted(results, key=lambda r: (r["detector"], r.get("reads", "render"), r["image_size"], r["seed"]))
    md = table(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "detection_reward_model.md").write_text(f"{md}\n")
    (RESULTS / "detection_reward_model.json").write_text(json.dumps(results, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
