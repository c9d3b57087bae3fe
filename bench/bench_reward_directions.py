"""Does a reward model prefer the changes the annotators prefer? Its direction, edit by edit, against the oracle's.

    .venv/bin/python bench/bench_reward_directions.py RM_DIR [RM_DIR ...] [--names A,B] [--images 200] [--out NAME]

A reward model can rank a policy's samples as well as the annotators' own noise allows and still not know which way
is better: the samples of one image differ in many ways at once, and what they share tells a Bradley–Terry model
nothing. Tuning moves the policy off its samples, where only the direction counts. This asks each model, on held-out
shapes images (`make_shapes(seed)`, never a demo's evaluation images), about the task's candidate edits (the task's
`edits`: for colorization more and less colour, a neutral background; for captions a shape added, an attribute
dropped) of one temperature-1 sample of the demo policy: per edit, how often the oracle's score rises, how often the
reward model's does, and how often the two agree on the direction (ties in the oracle, rare, count as agreement
when the reward model's change is below 1e-6).

Writes bench/results/reward_directions_NAME.{md,json}; docs/DEMO.md reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def edited_pairs(task, rows: list[dict], seed: int, k: int = 4) -> dict[str, list[tuple[int, object, object]]]:
    """Per edit name: (row index, sample, its edit) for one temperature-1 sample of each row (the others of its k
    samples are what a caption edit reads to say what the policy thinks is there). The edits never see the truth."""
    policy = task.load_policy(task.DEMO_POLICY).eval()
    generator, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    with torch.no_grad():
        tokens = policy.sample(task.pixel_values(policy, [r["image"] for r in rows]), k, generator=generator).tokens
    outputs = task.decode(policy, rows, tokens, k=k)
    pairs: dict[str, list] = {}
    for i, row in enumerate(rows):
        sample, others = outputs[i * k], outputs[i * k + 1 : (i + 1) * k]
        for name, edited in task.edits(row | {"attributes": None}, sample, rng, others).items():
            pairs.setdefault(name, []).append((i, sample, edited))
    return pairs


def directions(model, oracle, rows: list[dict], pairs: dict[str, list]) -> list[dict]:
    """Per edit: n, the share where the oracle's score rises, the share where the model's does, their agreement."""
    out = []
    for name, triples in pairs.items():
        batch = [rows[i] for i, _, _ in triples]
        before = model.score(batch, [s for _, s, _ in triples]).numpy()
        after = model.score(batch, [e for _, _, e in triples]).numpy()
        truth = np.array([oracle.score(rows[i], e) - oracle.score(rows[i], s) for i, s, e in triples])
        learned = after - before
        agree = np.where(np.abs(truth) < 1e-9, np.abs(learned) < 1e-6, np.sign(truth) == np.sign(learned))
        out.append({"edit": name, "n": len(triples), "oracle_rises": float(np.mean(truth > 0)),
                    "model_rises": float(np.mean(learned > 0)), "agreement": float(np.mean(agree))})
    return out


def table(results: list[dict]) -> str:
    lines = ["| reward model | edit | n | oracle's score rises | model's score rises | same direction |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['model']} | {r['edit']} | {r['n']} | {r['oracle_rises']:.2f} | {r['model_rises']:.2f} "
                     f"| **{r['agreement']:.2f}** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from reward_model import load_reward_model
    from vrlhf.shapes import make_shapes
    from vrlhf.tasks import get_oracle

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="reward-model directories (`vrlhf train-reward` outputs)")
    p.add_argument("--images", type=int, default=200, help="held-out shapes images")
    p.add_argument("--seed", type=int, default=99, help="shapes seed of the held-out images (and of the samples)")
    p.add_argument("--out", default="", help="results name: bench/results/reward_directions_NAME.{md,json}")
    p.add_argument("--names", default="", help="comma-separated names of the models for the table (default: paths)")
    args = p.parse_args(argv)
    names = args.names.split(",") if args.names else args.models
    if len(names) != len(args.models):
        p.error(f"--names gives {len(names)} names for {len(args.models)} models")

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = make_shapes(args.images, seed=args.seed)
    results, edits = [], {}
    for path, name in zip(args.models, names, strict=True):
        model = load_reward_model(path)
        task = model.task_module
        if task.NAME not in edits:  # every model of a task is asked about the same edits
            edits[task.NAME] = edited_pairs(task, rows, args.seed)
        for r in directions(model, get_oracle(task), rows, edits[task.NAME]):
            results.append({"model": name, "task": task.NAME} | r)
            print(json.dumps(results[-1]), flush=True)
    if args.out:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"reward_directions_{args.out}.json").write_text(json.dumps(results, indent=1) + "\n")
        (RESULTS / f"reward_directions_{args.out}.md").write_text(
            f"Reward-model directions (`bench/bench_reward_directions.py`, {args.images} shapes images, seed "
            f"{args.seed}): per candidate edit of a demo-policy sample, how often the oracle's and the reward "
            "model's scores rise, and how often they move the same way.\n\n" + table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
