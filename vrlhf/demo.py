"""`vrlhf demo`: the whole loop on the embedded default, for people (labeling app) or headless (`--simulate`).

    vrlhf demo                      # shapes data + demo checkpoints -> candidates in SQLite -> labeling app on 127.0.0.1
    vrlhf demo --simulate           # simulated annotators label through the app's HTTP API, then export,
                                    # train-reward, tune (metric / learned / both), evaluate, report.html
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vrlhf.config import parse_config

POLICIES = {"captioning": "data/demo/captioner", "colorization": "data/demo/colorizer"}
METRIC_REWARDS = {"captioning": ["cider_d=1.0"], "colorization": ["colorfulness=1.0"]}
REPO = Path(__file__).resolve().parent.parent


@dataclass
class DemoConfig:
    simulate: bool = field(default=False, metadata={"help": "run the whole loop headless with simulated annotators"})
    workdir: str = field(default="work/demo", metadata={"help": "where data, database, runs and the report go"})
    tasks: str = field(default="captioning,colorization", metadata={"help": "comma-separated tasks to run"})
    labels: int = field(default=400, metadata={"help": "comparisons labelled per task (--simulate)"})
    candidates: int = field(default=60, metadata={"help": "comparisons sampled per task for people (no --simulate)"})
    annotators: int = field(default=4, metadata={"help": "simulated annotators labelling concurrently"})
    host: str = field(default="127.0.0.1", metadata={"help": "labeling app host (loopback only without logins)"})
    port: int = field(default=0, metadata={"help": "labeling app port (0: 7860 for people, any free port for --simulate)"})
    tune_steps: int = field(default=40, metadata={"help": "REINFORCE steps per tuning run (--simulate)"})
    tune_batch: int = field(default=8, metadata={"help": "images per tuning step"})
    tune_k: int = field(default=4, metadata={"help": "samples per image while tuning"})
    tune_lr: float = field(default=1e-4, metadata={"help": "tuning learning rate"})
    # Two samples of a converged captioner are usually both right (ties teach nothing): label hotter samples.
    label_temperature: float = field(default=1.5, metadata={"help": "sampling temperature of the candidates to label"})
    # Without it the policy finds what a reward model learned from a few hundred labels gets wrong (docs/DEMO.md).
    learned_kl: float = field(default=0.2, metadata={"help": "KL penalty to the MLE policy in runs with a learned reward"})
    eval_images: int = field(default=300, metadata={"help": "held-out images for the final comparison (win-rate standard error ≈ 0.03)"})
    seed: int = field(default=0, metadata={"help": "seed of every stage"})


@contextmanager
def timed(summary: dict, stage: str):
    """Record the wall time of one stage in summary["seconds"][stage] (where the demo's minutes go)."""
    start = time.time()
    yield
    summary.setdefault("seconds", {})[stage] = round(time.time() - start, 1)


def say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_shapes(workdir: Path) -> Path:
    """The embedded default data, exactly as the demo checkpoints were trained on (deterministic)."""
    from vrlhf.shapes import main as shapes_main

    out = workdir / "shapes"
    if not (out / "test" / "metadata.jsonl").is_file():
        say(f"generating the shapes dataset in {out}")
        shapes_main(["shapes", "--n", "10000", "--seed", "0", "--out", str(out)])
    return out


# ---- labeling through the real HTTP path ---------------------------------------------------------------------


def simulated_annotator(url: str, name: str, rows_by_id: dict, store, seed: int, counts: dict) -> None:
    """One annotator: ask the app for the next comparison, judge it with its task's oracle, vote; until none left.
    Each judgment draws from (seed, comparison) on the candidates in sampling order, so the labels do not depend on
    which annotator got which comparison or in which order it was shown."""
    from gradio_client import Client

    from vrlhf.tasks import get_oracle

    client = Client(url, verbose=False)
    reply = client.predict(annotator=name, api_name="/next")
    while reply.get("view"):
        view = reply["view"]
        row = rows_by_id[view["item_id"]]
        shown = view["candidates"][:2]
        first, second = sorted(shown, key=lambda c: c["candidate_id"])  # judged in sampling order, not as shown
        verdict = get_oracle(view["task"]).judge(row, candidate_output(store, first), candidate_output(store, second),
                                                 np.random.default_rng([seed, view["comparison_id"]]))
        choice = "tie" if verdict == 0.5 else "ab"[shown.index(first if verdict == 1.0 else second)]
        reply = client.predict(comparison_id=view["comparison_id"], token=view["token"], choice=choice, ranking="",
                               annotator=name, api_name="/vote")
        counts[name] = counts.get(name, 0) + 1
    client.close()


def candidate_output(store, candidate: dict):
    from PIL import Image

    if candidate["text"] is not None:
        return candidate["text"]
    return Image.open(store.media_path(candidate["image"])).convert("RGB")


def label_round(store, task: str, rows_by_id: dict, cfg: DemoConfig) -> dict:
    from labeler.app import free_port, serve

    app, url = serve(store, cfg.host, cfg.port or free_port(cfg.host), block=False, quiet=True)
    say(f"labeling app serving on {url}; {cfg.annotators} simulated annotators labelling {task} through its API")
    counts: dict[str, int] = {}
    threads = [threading.Thread(target=simulated_annotator,
                                args=(url, f"sim-{task}-{i + 1}", rows_by_id, store, cfg.seed, counts))
               for i in range(cfg.annotators)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    app.close()
    seconds = time.time() - start
    say(f"{sum(counts.values())} votes in {seconds:.0f}s ({sum(counts.values()) / seconds:.1f}/s): {counts}")
    return {"votes": sum(counts.values()), "seconds": seconds, "annotators": counts}


# ---- evaluation against the MLE policy ----------------------------------------------------------------------


def outputs_of(task, policy, rows: list[dict], greedy: bool, seed: int) -> list:
    import torch

    outs = []
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i in range(0, len(rows), 50):
            batch = rows[i : i + 50]
            pixels = task.pixel_values(policy, [r["image"] for r in batch])
            s = policy.greedy(pixels) if greedy else policy.sample(pixels, 1, generator=generator)
            outs += task.decode(policy, batch, s.tokens)
    return outs


def judgments(oracle, rows, ours, theirs, seed: int) -> np.ndarray:
    """One oracle judgment per row: 1 (ours wins), 0 (theirs wins) or 0.5 (no difference: a tie)."""
    rng = np.random.default_rng(seed)
    return np.array([oracle.judge(r, a, b, rng) for r, a, b in zip(rows, ours, theirs)])


def win_rate(oracle, rows, ours, theirs, seed: int) -> float:
    """Share of oracle judgments (Bradley–Terry draws, ties as half) that prefer `ours`."""
    return float(judgments(oracle, rows, ours, theirs, seed).mean())


def reference_outputs(task, mle_policy, rows: list[dict]) -> list:
    """What the references themselves would output: the first human caption (every attribute true, so for
    captions no policy can score higher with the oracle), or the MLE colorizer's training target (each grid
    cell's true mean colour, snapped to its bins). Their win rate against MLE shows how much room there is."""
    if task.NAME == "captioning":
        return [row["captions"][0] for row in rows]
    tokens, _ = task.reference_tokens(mle_policy, rows)
    return task.decode(mle_policy, rows, tokens)


def evaluate_against_mle(task_name: str, policies: dict[str, str], rows: list[dict], seed: int) -> dict:
    from vrlhf.tasks import get_oracle, get_task

    task, oracle = get_task(task_name), get_oracle(task_name)
    outputs = {}
    for name, path in policies.items():
        policy = task.load_policy(path)
        outputs[name] = {"greedy": outputs_of(task, policy, rows, True, seed),
                         "sample": outputs_of(task, policy, rows, False, seed)}
        if name == "mle":
            references = reference_outputs(task, policy, rows)
    outputs["references"] = {"greedy": references, "sample": references}  # last: a row for scale, not a policy
    results = {}
    for name, outs in outputs.items():
        metrics = task.eval_metrics(rows, outs["greedy"])
        if name != "mle":
            metrics["win_rate_vs_mle_greedy"] = win_rate(oracle, rows, outs["greedy"], outputs["mle"]["greedy"], seed)
            sampled = judgments(oracle, rows, outs["sample"], outputs["mle"]["sample"], seed)
            metrics["win_rate_vs_mle_sampled"] = float(sampled.mean())
            metrics["ties_vs_mle_sampled"] = float(np.mean(sampled == 0.5))
        metrics["oracle_score_sampled"] = float(np.mean([oracle.score(r, o) for r, o in zip(rows, outs["sample"])]))
        results[name] = metrics
    return results, outputs


# ---- the loop -----------------------------------------------------------------------------------------------


def run_task(task_name: str, cfg: DemoConfig, workdir: Path, shapes: Path, store) -> dict:
    from labeler.export import export
    from labeler.sampling import sample_round
    from reward_model.train import TrainRewardConfig, train_reward
    from tuner.config import TuneConfig
    from tuner.train import tune
    from vrlhf.data import load_rows

    summary: dict = {"task": task_name}
    train_rows = load_rows(shapes / "train")
    rows_by_id = {r["id"]: r for r in train_rows}

    say(f"{task_name}: sampling {cfg.labels} comparisons (k=2) from {POLICIES[task_name]} into the store")
    with timed(summary, "sampling"):
        summary["round"] = sample_round(store, task_name, str(REPO / POLICIES[task_name]), str(shapes / "train"),
                                        k=2, n=cfg.labels, seed=cfg.seed, name="mle", progress=False,
                                        rows=train_rows, temperature=cfg.label_temperature)
    with timed(summary, "labeling"):
        summary["labeling"] = label_round(store, task_name, rows_by_id, cfg)

    export_dir = workdir / f"export-{task_name}"
    with timed(summary, "export"):
        counts = export(store, export_dir, "hf", task=task_name)
    summary["export"] = {"dir": str(export_dir), **counts}
    say(f"{task_name}: exported {counts} to {export_dir}")

    rm_dir = workdir / f"rm-{task_name}"
    say(f"{task_name}: training the reward model in {rm_dir}")
    with timed(summary, "reward_model"):
        summary["reward_model"] = train_reward(TrainRewardConfig(data=str(export_dir), out=str(rm_dir),
                                                                 task=task_name, seed=cfg.seed, progress=False,
                                                                 **RM_SETTINGS))

    runs = {"metric": METRIC_REWARDS[task_name], "learned": [f"learned:{rm_dir}=1.0"],
            "both": METRIC_REWARDS[task_name] + [f"learned:{rm_dir}=1.0"]}
    policies = {"mle": str(REPO / POLICIES[task_name])}
    summary["tuning"] = {}
    for run, reward in runs.items():
        out = workdir / f"tune-{task_name}-{run}"
        say(f"{task_name}: tuning with {run} reward {reward} -> {out}")
        tcfg = TuneConfig(task=task_name, policy=str(REPO / POLICIES[task_name]), data=str(shapes), out=str(out),
                          reward=reward, reward_norm="batch" if run == "both" else "none", steps=cfg.tune_steps,
                          batch_size=cfg.tune_batch, k=cfg.tune_k, lr=cfg.tune_lr, eval_every=0, save_every=0,
                          eval_size=50, num_show=8, log_with="none", seed=cfg.seed,
                          kl_coef=cfg.learned_kl if run != "metric" else 0.0)
        with timed(summary, f"tune_{run}"):
            tune(tcfg)
        summary["tuning"][run] = {"dir": str(out), "reward": reward}  # its wall time: summary["seconds"]
        policies[run] = str(out / "final")

    test_rows = load_rows(shapes / "test", limit=cfg.eval_images)
    say(f"{task_name}: evaluating every policy on {len(test_rows)} held-out images")
    with timed(summary, "evaluation"):
        summary["evaluation"], outputs = evaluate_against_mle(task_name, policies, test_rows, cfg.seed)

    summary["_outputs"] = (test_rows, outputs)
    summary["_next_round"] = (policies["learned"], train_rows)
    return summary


def second_round(store, task_name: str, tuned: str, rows: list[dict], shapes: Path, cfg: DemoConfig) -> int:
    """Labeling continues on the improved model: the tuned policy against the one it started from."""
    from labeler.sampling import sample_round

    say(f"{task_name}: second round: {tuned} against {POLICIES[task_name]}, into the same database")
    return sample_round(store, task_name, tuned, str(shapes / "train"), k=2, n=20, seed=cfg.seed + 1,
                        name=f"tuned-{task_name}", progress=False, against=str(REPO / POLICIES[task_name]), rows=rows)


# `vrlhf train-reward`'s embedded defaults (the caption model starts from the demo captioner's ViT), 8 epochs.
RM_SETTINGS = dict(epochs=8, eval_every=25)


def simulate(cfg: DemoConfig) -> dict:
    from labeler.store import Store
    from vrlhf.report import print_tables, write_report

    workdir = Path(cfg.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    shapes = ensure_shapes(workdir)
    store = Store(str(workdir / "labels.sqlite"))
    results = {}
    for task_name in [t.strip() for t in cfg.tasks.split(",") if t.strip()]:
        results[task_name] = run_task(task_name, cfg, workdir, shapes, store)
    for task_name, result in results.items():  # left unlabeled: for people to carry on in `vrlhf label`
        with timed(result, "second_round"):
            result["second_round"] = second_round(store, task_name, *result["_next_round"], shapes, cfg)
    summary = {"config": asdict(cfg), "seconds": time.time() - start, "machine": machine(),
               "tasks": {t: {k: v for k, v in r.items() if not k.startswith("_")} for t, r in results.items()}}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    write_report(workdir, summary, {t: r["_outputs"] for t, r in results.items()})
    print_tables(summary)
    say(f"done in {summary['seconds'] / 60:.1f} min: {workdir / 'summary.json'}, {workdir / 'report.html'}")
    return summary


def machine() -> str:
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def serve_for_people(cfg: DemoConfig) -> None:
    from labeler.app import serve
    from labeler.sampling import sample_round
    from labeler.store import Store
    from vrlhf.data import load_rows

    workdir = Path(cfg.workdir).resolve()
    shapes = ensure_shapes(workdir)
    db = workdir / "labels.sqlite"
    store = Store(str(db))
    rows = load_rows(shapes / "test")
    for task_name in [t.strip() for t in cfg.tasks.split(",") if t.strip()]:
        if not any(r["task"] == task_name for r in store.rounds()):
            say(f"sampling {cfg.candidates} {task_name} comparisons from {POLICIES[task_name]}")
            sample_round(store, task_name, str(REPO / POLICIES[task_name]), str(shapes / "test"), k=2,
                         n=cfg.candidates, seed=cfg.seed, name="mle", rows=rows)
    port = cfg.port or 7860
    print(f"""
The labeling app is starting on http://{cfg.host}:{port}  (Ctrl+C to stop)
Pick the better caption / colorization with the keys shown on the buttons. Then, in another terminal:

  vrlhf export --db {db} --out {workdir}/export-captioning --task captioning
  vrlhf train-reward --task captioning --data {workdir}/export-captioning --out {workdir}/rm-captioning
  vrlhf tune --task captioning --policy data/demo/captioner --data {shapes} --out {workdir}/tune-captioning \\
      --reward cider_d=1.0 --reward learned:{workdir}/rm-captioning=1.0
  vrlhf sample --task captioning --policy {workdir}/tune-captioning/final --against data/demo/captioner \\
      --data {shapes}/test --n 20 --db {db}        # label the tuned policy against the old one

Or the whole loop headless, with simulated annotators: vrlhf demo --simulate
""", flush=True)
    serve(store, cfg.host, port)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(DemoConfig, argv, prog="vrlhf demo")
    if cfg.simulate:
        simulate(cfg)
    else:
        serve_for_people(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
