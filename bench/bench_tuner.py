"""Tuner benchmark: MLE vs tuned captioner, baselines compared, colourfulness with and without fidelity, step times.

    .venv/bin/python bench/bench_tuner.py                       # everything, from the committed demo checkpoints
    .venv/bin/python bench/bench_tuner.py --only captioning     # MLE vs `vrlhf tune` defaults only
    .venv/bin/python bench/bench_tuner.py --steps 40 --only baselines,colorization   # shorter comparisons

Prints markdown tables (also written to OUT/results.md and OUT/results.json):
1. held-out CIDEr-D of the MLE captioner vs the captioner tuned with the default config of `vrlhf tune`
   (the reward is CIDEr-D alone; BLEU-4 and the simulated annotator's score are not in the reward),
2. baselines `loo` vs `greedy` vs `group_norm` (same steps, same seed),
3. colorization tuned on colourfulness alone vs colourfulness + fidelity (over-saturation shows in the first),
4. the step-time breakdown of the default run: sampling / rewards / forward-backward / other.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuner.config import TuneConfig  # noqa: E402
from tuner.train import split_data, tune  # noqa: E402
from vrlhf.rundir import read_metrics  # noqa: E402
from vrlhf.tasks import get_task  # noqa: E402

PARTS = ("captioning", "baselines", "colorization", "timing")


def ensure_shapes(path: Path, n: int = 10000) -> Path:
    """The demo's shapes dataset (`vrlhf data shapes --n 10000 --out PATH`: train/ + test/), made if missing. Its test
    rows are the ones the demo captioner never trained on (a smaller --n would hold out rows it trained on)."""
    if not (path / "train").is_dir():
        from vrlhf.shapes import main as shapes_main

        shapes_main(["shapes", "--n", str(n), "--out", str(path)])
    return path


def run(cfg: TuneConfig) -> dict:
    """One tuning run -> its held-out metrics before/after, the wall time and the mean step-time breakdown."""
    start = time.perf_counter()
    tune(cfg)
    seconds = time.perf_counter() - start
    records = [record for _, record in read_metrics(Path(cfg.out) / "metrics.jsonl")]
    evals = [r for r in records if "eval/cider_d" in r or "eval/colorfulness" in r]
    steps = [r for r in records if "reward" in r]
    phases = ("sample", "reward", "forward_backward", "other", "step")
    timing = {k: sum(r[f"time/{k}"] for r in steps) / len(steps) for k in phases}
    strip = lambda r: {k[5:]: v for k, v in r.items() if k.startswith("eval/")}  # noqa: E731
    return {"before": strip(evals[0]), "after": strip(evals[-1]), "seconds": seconds, "timing": timing,
            "reward_first": steps[0]["reward"],
            "reward_last10": sum(r["reward"] for r in steps[-10:]) / len(steps[-10:])}


def style_ceiling(train_rows: list[dict], eval_rows: list[dict]) -> dict:
    """Held-out CIDEr-D of captions written from the ground truth by a fixed style: how many shapes (in salience
    order), which word order, size word, position phrase, connective and prefix, and whether size or position is
    left out. The style is chosen per shape count by coordinate ascent on the training images (what a captioner with
    perfect perception could learn from the references) or on the held-out images themselves (an optimistic bound: it
    peeks at the evaluation set). Also the complete, true caption in the plain wording (what annotators want)."""
    import numpy as np

    from vrlhf.metrics import CiderD, tokenize
    from vrlhf.shapes import POSITION_PHRASES, SIZE_WORDS, SYNONYMS
    from vrlhf.tasks.caption_writers import TEMPLATES

    options = {"count": (1, 2, 3), "template": range(len(TEMPLATES)), "size_word": (0, 1, 2),
               "position": (0, 1, 2, 3, 4), "omit": ("", "size", "position"),
               "connective": ("and", "with", "next to"), "prefix": ("", "there is", "a picture of", "we see")}
    plain = {"count": 3, "template": 0, "size_word": 0, "position": 0, "omit": "", "connective": "and", "prefix": ""}

    def phrase(shape: dict, style: dict) -> str:
        words = {"{s}": [*SIZE_WORDS[shape["size"]], *SYNONYMS[shape["size"]]][style["size_word"]],
                 "{c}": shape["colour"], "{k}": shape["kind"]}
        positions = [*POSITION_PHRASES[shape["position"]], *SYNONYMS[shape["position"]]]
        words["{p}"] = positions[min(style["position"], len(positions) - 1)]
        dropped = {"size": "{s}", "position": "{p}"}.get(style["omit"])
        template = TEMPLATES[style["template"]]
        parts = [next(part.replace(m, w) for m, w in words.items() if m in part) for part in template
                 if dropped is None or dropped not in part]
        text = " ".join(parts)
        return ("an " if text[0] in "aeiou" else "a ") + text

    def write(shapes: list[dict], style: dict) -> str:
        salient = sorted(shapes, key=lambda s: (-(2 * (s["size"] == "large") + (s["position"] == "center")), s["cx"]))
        body = f" {style['connective']} ".join(phrase(s, style) for s in salient[: style["count"]])
        return tokenize(f"{style['prefix']} {body}".strip())

    def best_styles(rows: list[dict]) -> dict[int, dict]:
        references = [[tokenize(c) for c in r["captions"]] for r in rows]
        cider = CiderD(references)
        chosen = {}
        for n in sorted({len(r["attributes"]["shapes"]) for r in rows}):
            keep = [i for i, r in enumerate(rows) if len(r["attributes"]["shapes"]) == n]
            refs, shapes = [references[i] for i in keep], [rows[i]["attributes"]["shapes"] for i in keep]

            def score(style, refs=refs, shapes=shapes) -> float:
                return float(np.mean(cider.score([write(s, style) for s in shapes], refs)))

            style = dict(plain)
            for _ in range(3):  # coordinate ascent: each choice in turn, the others held
                for key, values in options.items():
                    style[key] = max(values, key=lambda v: score(style | {key: v}))
            chosen[n] = style
        return chosen

    def held_out(styles: dict[int, dict] | None) -> float:
        references = [[tokenize(c) for c in r["captions"]] for r in eval_rows]
        captions = [write(r["attributes"]["shapes"], styles[len(r["attributes"]["shapes"])] if styles else plain)
                    for r in eval_rows]
        return float(np.mean(CiderD(references).score(captions, references)))

    from_train = best_styles(train_rows)
    return {"truth_plain": held_out(None), "truth_style_from_train": held_out(from_train),
            "truth_style_from_eval": held_out(best_styles(eval_rows)),
            "styles_from_train": {str(n): style for n, style in from_train.items()}}


def ceiling_text(ceiling: dict, mle: float, tuned: float) -> str:
    gain = lambda v: f"{v:.3f} ({100 * (v / mle - 1):+.1f}% over MLE)"  # noqa: E731
    return ("For scale, captions written from the ground truth score: complete and in the plain wording (\"a large "
            f"red circle on the left and ...\", what annotators want) {gain(ceiling['truth_plain'])}; in the best "
            f"fixed style per shape count (how many shapes, wording, what to leave out) chosen on the training images "
            f"{gain(ceiling['truth_style_from_train'])}; chosen on these held-out images themselves, an optimistic "
            f"bound, {gain(ceiling['truth_style_from_eval'])}. The tuned policy: "
            f"{gain(tuned)}.")


def table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--captioner", default=str(ROOT / "data/demo/captioner"), help="MLE captioner directory")
    parser.add_argument("--colorizer", default=str(ROOT / "data/demo/colorizer"), help="MLE colorizer directory")
    parser.add_argument("--shapes", default=str(ROOT / "work/demo/shapes"),
                        help="shapes dataset, the demo's 10000 rows (made if missing)")
    parser.add_argument("--out", default=str(ROOT / "runs/bench_tuner"), help="run directories and results")
    parser.add_argument("--steps", type=int, default=0, help="steps for the comparison runs; 0: the default config's")
    parser.add_argument("--color-steps", type=int, default=100, help="steps for each colorization run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a TuneConfig field in every run (e.g. --set lr=1e-4 --set k=4)")
    parser.add_argument("--eval-size", type=int, default=200, help="held-out images evaluated (greedy)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {','.join(PARTS)}")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    out = Path(args.out)
    shapes = ensure_shapes(Path(args.shapes))
    base = TuneConfig(task="captioning", policy=args.captioner, data=str(shapes), log_with="none", save_every=0,
                      eval_size=args.eval_size, overwrite=True)  # a rerun of the bench replaces its runs
    for item in args.set:  # typed like the field's default
        key, value = item.split("=", 1)
        base = replace(base, **{key: type(getattr(base, key))(value)})
    results, report = {}, []

    if parts & {"captioning", "timing"}:
        results["default"] = run(replace(base, out=str(out / "caption_default")))
        r = results["default"]
        ceiling = results["ceiling"] = style_ceiling(*split_data(base, get_task(base.task)))
        keys = ["cider_d", "bleu4", "oracle_score", "words", "distinct_2"]
        report.append("### Captioning: MLE vs tuned (`vrlhf tune` defaults, reward = CIDEr-D)\n\n" + table(
            ["model", *keys, "minutes"],
            [["MLE (data/demo/captioner)", *[r["before"].get(k, float("nan")) for k in keys], "-"],
             ["tuned", *[r["after"].get(k, float("nan")) for k in keys], r["seconds"] / 60]])
            + f"\n\nheld-out CIDEr-D {r['before']['cider_d']:.3f} -> {r['after']['cider_d']:.3f} "
              f"({100 * (r['after']['cider_d'] / r['before']['cider_d'] - 1):+.1f}% relative); "
              "BLEU-4 and oracle_score are not part of the reward.\n\n"
              + ceiling_text(ceiling, r["before"]["cider_d"], r["after"]["cider_d"]))

    if "baselines" in parts:
        rows = []
        for baseline in ("loo", "greedy", "group_norm"):
            cfg = replace(base, baseline=baseline, out=str(out / f"caption_{baseline}"), steps=args.steps or base.steps)
            res = results[f"baseline_{baseline}"] = run(cfg)
            rows.append([baseline, res["before"]["cider_d"], res["after"]["cider_d"], res["after"]["bleu4"],
                         res["reward_last10"], res["seconds"] / 60])
        report.append("### Baselines (same steps and seed)\n\n" + table(
            ["baseline", "CIDEr-D before", "CIDEr-D after", "BLEU-4 after", "train reward (last 10 steps)",
             "minutes"], rows))

    if "timing" in parts:
        t = results["default"]["timing"]
        neither = (t["reward"] + t["other"]) / t["step"]  # the target: <= 15% of a step
        report.append("### Step time (default captioning run, mean seconds per step)\n\n" + table(
            ["sampling", "rewards", "forward-backward", "other", "step", "neither sampling nor fwd-bwd"],
            [[t["sample"], t["reward"], t["forward_backward"], t["other"], t["step"], f"{100 * neither:.1f}%"]]))

    if "colorization" in parts:
        rows = []
        color = replace(base, task="colorization", policy=args.colorizer, steps=args.color_steps,
                        eval_every=args.color_steps)
        from vrlhf.tasks import colorization

        anchored = list(colorization.DEFAULT_REWARDS)  # the tuner's default mix: colourfulness + fidelity
        for name, rewards in (("colourfulness", ["colorfulness=1.0"]), ("colourfulness + fidelity", anchored)):
            run_dir = out / f"color_{name.replace(' + ', '_')}"
            res = results[f"color_{name}"] = run(replace(color, reward=rewards, out=str(run_dir)))
            if not rows:
                b = res["before"]
                rows.append(["MLE", b["colorfulness"], b["saturation"], b["ab_error"], b["truth_colorfulness"]])
            a = res["after"]
            rows.append([f"tuned: {' + '.join(rewards)}", a["colorfulness"], a["saturation"], a["ab_error"],
                         a["truth_colorfulness"]])
        report.append("### Colorization: colourfulness alone vs with fidelity (held-out shapes)\n\n" + table(
            ["model", "colourfulness", "saturation", "ab error", "ground-truth colourfulness"], rows))

    text = "\n\n".join(report)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
