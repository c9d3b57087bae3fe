"""`vrlhf demo`: the loop on the embedded default, for people (the labeling app) or headless (`--simulate`).

    vrlhf demo                  # shapes data + demo checkpoints -> candidates in SQLite -> labeling app on 127.0.0.1
    vrlhf demo --simulate       # rounds of simulated labels through the app's HTTP API, reward models, tunings,
                                # evaluation against MLE per round: work/demo/summary.json and report.html
    vrlhf demo --simulate --policy DIR      # the rounds from your own captioner (its task alone) instead

`--policy` replaces the task's demo checkpoint as the starting ("MLE") policy: what round 1 samples, what every
track tunes from and is KL-anchored to, and what the win rates are measured against. It must be able to caption the
shapes (any supported captioner or VLM does; the simulated annotators judge what it writes).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

from tuner.config import TuneConfig
from vrlhf.config import parse_config
from vrlhf.errors import ConfigError
from vrlhf.tasks import DEFAULT_TASK, get_task
from vrlhf.tasks import task_names as every_task


def demo_tune() -> TuneConfig:
    """The budget of one tuning run in the demo (per round and track); task, policy, data, reward are set per run."""
    return TuneConfig(steps=40, batch_size=8, k=4, lr=1e-4, kl_coef=0.2, eval_every=0, save_every=0, eval_size=50,
                      num_show=0, log_with="none")


@dataclass
class DemoConfig:
    simulate: bool = field(default=False, metadata={"help": "run the rounds headless with simulated annotators"})
    workdir: str = field(default="work/demo", metadata={"help": "where data, database, runs and the report go"})
    data: str = field(default="", metadata={"help": "shapes dataset dir with train/ and test/ (empty: WORKDIR/shapes, "
                                                     "generated as the demo checkpoints were trained on)"})
    tasks: str = field(default="", metadata={"help": "comma-separated tasks to run (empty: every task of "
                                                     "vrlhf/tasks)"})
    policy: str = field(default="", metadata={
        "help": "the starting policy instead of the demo checkpoint (a directory or hub id): the rounds of its task "
                "alone; every track tunes from it and is compared with it"})
    rounds: int = field(default=2, metadata={"help": "labeling rounds (--simulate); round 1 labels MLE samples"})
    labels: int = field(default=400, metadata={"help": "comparisons labelled in round 1, per task (--simulate)"})
    labels_later: int = field(default=200, metadata={"help": "comparisons added in each later round, per task"})
    # Rankings give 6 pairs a vote: 400 ranked comparisons teach a reward model more than 1500 pairs (docs/DEMO.md).
    comparison_k: int = field(default=4, metadata={"help": "outputs per comparison from one policy: 2 (a pair) or "
                                                         "3-4 (ranked best first: k(k-1)/2 pairs per vote)"})
    overlap: int = field(default=1, metadata={"help": "distinct annotators per comparison (> 1: agreement, "
                                                      "Krippendorff's alpha, can be measured)"})
    candidates: int = field(default=60, metadata={"help": "comparisons sampled per task for people (no --simulate)"})
    annotators: int = field(default=4, metadata={"help": "simulated annotators labelling concurrently"})
    marks: str = field(default="on", metadata={
        "help": "on: simulated annotators also mark where a candidate is wrong (the oracle's cells or words), stored "
                "with their votes and exported; a dense reward model trains on them, the default one ignores them; "
                "off: votes only"})
    dense: str = field(default="auto", metadata={
        "help": "the rounds' reward model: on: dense (colorization: a score per cell of the 8x8 colour grid, 64-px "
                "input; captions: a score per word), trained on the marks too, so the tuner credits each token with "
                "its own part (--tune.token_credit); off: one score per output (marks unused); auto: per task as "
                "measured (docs/DEMO.md, 'The levers')"})
    marks_coef: float = field(default=1.0, metadata={
        "help": "dense reward model: weight of the term that scores marked cells / words below unmarked ones "
                "(train-reward --marks_coef; 0: marks unused)"})
    edits: str = field(default="off", metadata={
        "help": "on: one candidate of each ranking of one policy's samples is an edit of its other samples (more or "
                "less colour, a neutral background, one colour per region; a shape added, an attribute dropped: "
                "`vrlhf sample --edits 1`); "
                "off: the policy's samples only (bench/results/edits.md)"})
    label_efficiency: str = field(default="", metadata={
        "help": "comma-separated comparison budgets (e.g. 100,200,400,800): after the rounds, per task, one round "
                "per budget with marks on and off (the learned track alone, each in its own database); report.html "
                "plots the final win rate against MLE per budget"})
    host: str = field(default="127.0.0.1", metadata={"help": "labeling app host (loopback only without logins)"})
    port: int = field(default=0, metadata={"help": "labeling app port (0: 7860 for people, any free port for "
                                                   "--simulate)"})
    # Two temperature-1 samples of a converged policy are often equally good (a tie teaches nothing).
    label_temperature: float = field(default=1.5, metadata={"help": "temperature of the MLE samples labelled in "
                                                                    "round 1"})
    hot_temperature: float = field(default=1.5, metadata={"help": "temperature of the latest policy's own samples "
                                                                  "in later rounds"})
    continue_tracks: bool = field(default=False, metadata={"help": "each round tunes on from the previous round's "
                                                                   "policy (KL still to MLE); else from MLE"})
    rm_epochs: int = field(default=8, metadata={"help": "reward-model epochs each round (on all labels so far)"})
    metric_rewards: list[str] = field(default_factory=list, metadata={
        "help": "TASK:NAME=WEIGHT, repeatable: the metric rewards of the metric-only row and the metric + learned "
                "track (e.g. colorization:colorfulness=1.0); a task not named: its DEFAULT_REWARDS, as `vrlhf tune`"})
    tracks: str = field(default="learned,both", metadata={
        "help": "learned-reward tracks tuned each round: learned (the learned reward alone), both (+ metric rewards)"})
    metric_row: bool = field(default=True, metadata={"help": "tune the metric-only policy (a row, and a source of "
                                                              "comparisons in later rounds)"})
    oracle_row: bool = field(default=True, metadata={"help": "tune on the oracle itself with the same budget: "
                                                             "the bound"})
    best_of: int = field(default=8, metadata={"help": "n of the best-of-n row (samples scored by the reward "
                                                          "model; 0: no such row)"})
    eval_images: int = field(default=300, metadata={"help": "held-out images judged (win-rate standard error ≈ 0.03)"})
    seed: int = field(default=0, metadata={"help": "seed of every stage"})
    tune: TuneConfig = field(default_factory=demo_tune, metadata={
        "help": "one tuning run's settings (--tune.steps ...); kl_coef anchors the learned tracks to MLE"})


# What the demo sets for each of its tuning runs (loop/rounds.py), and the demo's own flag for it, if any: given as
# --tune.NAME it would be silently replaced, so it is refused.
SET_PER_RUN = {"policy": "--policy", "task": "--tasks", "data": "--data", "out": "--workdir",
               "reward": "--metric_rewards", "seed": "--seed", "reward_norm": "", "kl_reference": ""}


def say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check_config(cfg: DemoConfig) -> dict:
    """One line naming each flag the demo would ignore or cannot use, before anything is generated or loaded;
    returns --tasks resolved ({name: task module}, `resolve_tasks`)."""
    problems, defaults = [], demo_tune()
    for name, instead in SET_PER_RUN.items():
        if getattr(cfg.tune, name) != getattr(defaults, name):
            problems.append(f"--tune.{name} is set by the demo for each tuning run"
                            + (f" (use {instead})" if instead else ""))
    tasks, resolved = task_names(cfg), {}
    try:
        resolved = resolve_tasks(cfg)
    except ConfigError as error:
        problems.append(f"--tasks: {error}")
    if cfg.marks not in ("on", "off"):
        problems.append(f"--marks takes on or off, not {cfg.marks!r}")
    if cfg.edits not in ("on", "off"):
        problems.append(f"--edits takes on or off, not {cfg.edits!r}")
    if cfg.dense not in ("on", "off", "auto"):
        problems.append(f"--dense takes on, off or auto, not {cfg.dense!r}")
    try:
        budgets(cfg)
    except ValueError:
        problems.append(f"--label_efficiency takes comparison budgets above 0 separated by commas (e.g. "
                        f"100,200,400,800), not {cfg.label_efficiency!r}")
    if cfg.policy and len(tasks) != 1:
        problems.append(f"--policy {cfg.policy} starts one task's rounds: name that task alone with --tasks "
                        f"(not {cfg.tasks!r})")
    if problems:
        raise ConfigError("; ".join(problems))
    return resolved


def task_of(policy: str) -> str:
    """The task a policy is for: ours say so in policy.json; any other checkpoint here is a captioner."""
    from vrlhf.policy import saved_meta

    return ((saved_meta(policy) if Path(policy).is_dir() else None) or {}).get("task", DEFAULT_TASK)


def start_policy(cfg: DemoConfig, task) -> str:
    """The rounds' starting policy for `task` (its module): --policy, or the task's demo checkpoint."""
    return cfg.policy or str(task.DEMO_POLICY)


def ensure_shapes(cfg: DemoConfig, workdir: Path) -> Path:
    """--data, or the embedded default data exactly as the demo checkpoints were trained on (made if missing)."""
    from vrlhf.shapes import ShapesConfig, write_shapes

    if cfg.data:
        return Path(cfg.data).resolve()
    out = workdir / "shapes"
    if not (out / "test" / "metadata.jsonl").is_file():
        say(f"generating the shapes dataset in {out}")
        say(write_shapes(ShapesConfig(out=str(out), n=10000, seed=0)))
    return out


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def task_names(cfg: DemoConfig) -> list[str]:
    return [t.strip() for t in cfg.tasks.split(",") if t.strip()] or list(every_task())


def resolve_tasks(cfg: DemoConfig) -> dict:
    """{name: task module} of --tasks: the demo's one resolution of its tasks, passed down to every stage."""
    return {name: get_task(name) for name in task_names(cfg)}


def budgets(cfg: DemoConfig) -> list[int]:
    """--label_efficiency as numbers (ValueError when one is not a positive integer)."""
    values = [int(b) for b in cfg.label_efficiency.split(",") if b.strip()]
    if any(v <= 0 for v in values):
        raise ValueError(cfg.label_efficiency)
    return values


def simulate(cfg: DemoConfig, tasks: dict | None = None) -> dict:
    from labeler.store import Store
    from loop.report import print_tables, write_report
    from loop.rounds import run_rounds
    from vrlhf.data import load_rows

    workdir = Path(cfg.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    shapes = ensure_shapes(cfg, workdir)
    store = Store(str(workdir / "labels.sqlite"), overlap=cfg.overlap)
    rows_by_id = {r["id"]: r for r in load_rows(shapes / "train")}
    label = partial(_label, rows_by_id=rows_by_id, cfg=cfg)
    results, samples, tasks = {}, {}, tasks or resolve_tasks(cfg)
    for task_name, task in tasks.items():
        say(f"{task_name}: the rounds start from {start_policy(cfg, task)}")
        result = run_rounds(task, cfg, workdir, shapes, store, label, start_policy(cfg, task))
        samples[task_name] = result.pop("_samples")
        results[task_name] = result
        if budgets(cfg):
            result["label_efficiency"] = label_efficiency(cfg, task, workdir, shapes, rows_by_id, result)
    summary = {"config": asdict(cfg), "seconds": time.time() - start, "machine": machine(), "tasks": results}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    write_report(workdir, summary, samples, tasks)
    print_tables(summary, tasks)
    say(f"done in {summary['seconds'] / 60:.1f} min: {workdir / 'summary.json'}, {workdir / 'report.html'}")
    return summary


def label_efficiency(cfg: DemoConfig, task, workdir: Path, shapes: Path, rows_by_id: dict,
                     main: dict) -> dict:
    """{"on"|"off": {budget: the learned policy's win rates against MLE}}: one round per comparison budget, with
    marks and without, the learned track alone, each in its own database (WORKDIR/TASK/label-efficiency/). The
    rounds' own first round is one of these points when its budget and marks match: it is reused, not rerun."""
    from labeler.store import Store
    from loop.rounds import run_rounds

    curves: dict[str, dict[int, dict]] = {"on": {}, "off": {}}
    task_name = task.NAME
    for marks, curve in curves.items():
        for n in budgets(cfg):
            first = main["rounds"][0]
            if n == cfg.labels and marks == cfg.marks and "learned" in first["evaluation"]:
                result = main
            else:
                one = replace(cfg, rounds=1, labels=n, marks=marks, tracks="learned", metric_row=False,
                              oracle_row=False, best_of=0, label_efficiency="")
                out = workdir / task_name / "label-efficiency" / f"marks-{marks}-{n}"
                out.mkdir(parents=True, exist_ok=True)
                say(f"{task_name}: label efficiency, {n} comparisons, marks {marks}")
                store = Store(str(out / "labels.sqlite"), overlap=cfg.overlap)
                try:
                    label = partial(_label, rows_by_id=rows_by_id, cfg=one)
                    result = run_rounds(task, one, out, shapes, store, label, start_policy(cfg, task))
                finally:
                    store.close()
            record = result["rounds"][0]
            curve[n] = {"comparisons": n, "pairs": record["export"]["pairs"]} | {
                key: record["evaluation"]["learned"][key]
                for key in ("win_rate_vs_mle_greedy", "win_rate_vs_mle_sampled")}
    return curves


def _label(store, task, rows_by_id: dict, cfg: DemoConfig) -> dict:
    from loop.simulated import label_all

    return label_all(store, task, rows_by_id, cfg.annotators, cfg.seed, cfg.host, cfg.port, say=say,
                     marks=cfg.marks == "on")


def serve_for_people(cfg: DemoConfig, tasks: dict | None = None) -> None:
    from labeler.app import load_guidelines, serve
    from labeler.sampling import sample_round
    from labeler.store import Store
    from vrlhf.data import load_rows

    workdir = Path(cfg.workdir).resolve()
    shapes = ensure_shapes(cfg, workdir)
    db = workdir / "labels.sqlite"
    store = Store(str(db), overlap=cfg.overlap)  # --overlap N: agreement (alpha) can be measured
    guides = Path(__file__).resolve().parents[1] / "data" / "demo" / "guidelines"  # what "better" means, per task
    guidelines = load_guidelines([f"{t}={guides / t}.md" for t in task_names(cfg) if (guides / f"{t}.md").is_file()])
    rows = load_rows(shapes / "test")
    tasks = tasks or resolve_tasks(cfg)
    for task_name, task in tasks.items():
        if not any(r["task"] == task_name for r in store.rounds()):
            policy = start_policy(cfg, task)
            say(f"sampling {cfg.candidates} {task_name} comparisons from {policy}")
            sample_round(store, task, str(policy), str(shapes / "test"), k=cfg.comparison_k,
                         n=cfg.candidates, seed=cfg.seed, name="mle", rows=rows)  # people rank as --simulate does
    port = cfg.port or 7860
    name, first = next(iter(tasks.items()))  # the printed round uses the first task; any other works the same way
    policy = start_policy(cfg, first)
    print(f"""
The labeling app is starting on http://{cfg.host}:{port}  (Ctrl+C to stop)
Rank the candidates best first (--comparison_k 2: pick the better one) with the keys shown on the
buttons; the guidelines (G) say what better means. You are the admin (no logins on 127.0.0.1): Stats & export
shows agreement and exports. Or, one round:

  vrlhf export --db {db} --out {workdir}/export-{name} --task {name}
  vrlhf train-reward --task {name} --data {workdir}/export-{name} --out {workdir}/rm-{name}
  vrlhf tune --task {name} --policy {policy} --data {shapes} --out {workdir}/tune-{name} \\
      --reward learned:{workdir}/rm-{name}=1.0 --kl_coef 0.2
  vrlhf sample --task {name} --policy {workdir}/tune-{name}/final --against {policy} \\
      --data {shapes}/train --n 100 --db {db}        # the next round: the tuned policy against the old one

Or the rounds headless, with simulated annotators: vrlhf demo --simulate
""", flush=True)
    serve(store, cfg.host, port, guidelines=guidelines)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(DemoConfig, argv, prog="vrlhf demo")
    if cfg.policy and cfg.tasks == DemoConfig.tasks:  # --tasks not given: the one task --policy is for
        cfg.tasks = task_of(cfg.policy)
    tasks = check_config(cfg)  # the demo's one resolution of its tasks
    if cfg.policy:  # the wrong task's policy, or no policy at all: one line now, not after the data is generated
        next(iter(tasks.values())).load_policy(cfg.policy)
    if cfg.simulate:
        simulate(cfg, tasks)
    else:
        serve_for_people(cfg, tasks)
    return 0


if __name__ == "__main__":
    from vrlhf.errors import run_command

    sys.exit(run_command("vrlhf demo", main))
