"""Every lever of issue 19 off and on in `vrlhf demo --simulate`, at the same number of comparisons, and the label
efficiency curve (final win rate against MLE per comparison budget, marks on and off).

    .venv/bin/python bench/bench_levers.py --seed 3                      # both tasks, every lever, 3 runs at a time
    .venv/bin/python bench/bench_levers.py --seed 2 --choose             # --dense auto's choice: one round, on / off
    .venv/bin/python bench/bench_levers.py --seed 3 --collect            # only rewrite the tables from finished runs

Each run is a `vrlhf demo --simulate` subprocess for one task (OMP_NUM_THREADS=1: deterministic, and the machine is
shared) in WORK/seed-S/TASK-NAME; a run whose summary.json exists is not run again. Per task:
* `full`: the demo's defaults with every row (metric-only, best-of-n, the oracle bound, the ideal output). It is also
  the lever runs' default setting: its learned track is what a lever run at the defaults would be.
* the lever runs: each lever off and on, everything else at the demo's defaults, without the rows a lever does not
  change (`--tracks learned --no_oracle_row --best_of 0`; the metric-only policy stays: round 2 compares it with the
  learned one). A lever that acts only through a dense reward model (marks; per-token credit, but for image
  outputs, whose scalar model has a dense form too: its attribution) is switched with `--dense on`. Runs with the
  same settings are one run (`dense on` is `marks on` when the default is dense).
* label efficiency: one round (`--rounds 1 --labels N`, the learned track alone) per budget, marks on and off, with
  `--dense on` (marks reach no other model); 400 is the first round of the marks lever's runs. The same curve as
  `vrlhf demo --simulate --label_efficiency 100,200,400,800` (which plots it in report.html), run in parallel.
* `--choose`: one round per task with `--dense on` and `--dense off`: the seed that chose --dense auto
  (the task module's DEMO_DENSE), which is then not reported. Every demo seed judges the same test images (the demo's
  shapes data is seed 0's), so without `--data` the choice runs on a shapes dataset of their own (seed 100 + --seed,
  3000 images, WORK/choose-shapes-S): a default is never chosen on the images the demo reports.
Writes OUT.md, OUT.json (bench/results/levers.*) and the curve's picture (bench/results/label_efficiency.png; with
another --out, OUT-label_efficiency.png).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LEVER_RUN = ["--tracks", "learned", "--no_oracle_row", "--best_of", "0"]
ONE_ROUND = ["--rounds", "1", "--tracks", "learned", "--no_metric_row", "--no_oracle_row", "--best_of", "0"]
# lever -> (flags off, flags on, flags both need): the demo's own switches (loop/demo.py DemoConfig)
LEVERS = {
    "dense": ({"dense": "off"}, {"dense": "on"}, {}),
    "marks": ({"marks": "off"}, {"marks": "on"}, {"dense": "on"}),
    "token_credit": ({"tune.token_credit": "sequence"}, {"tune.token_credit": "auto"}, {"dense": "on"}),
    "reuse": ({"tune.num_iterations": "1"}, {"tune.num_iterations": "2"}, {}),
    "edits": ({"edits": "off"}, {"edits": "on"}, {}),
}


def defaults(task: str) -> dict:
    """The demo's default of every lever flag for `task` (--dense auto resolved)."""
    from loop.demo import DemoConfig
    from tuner.config import TuneConfig
    from vrlhf.tasks import get_task

    out = {"dense": "on" if getattr(get_task(task), "DEMO_DENSE", False) else "off", "marks": DemoConfig.marks,
           "tune.token_credit": TuneConfig.token_credit, "tune.num_iterations": str(TuneConfig.num_iterations)}
    if hasattr(DemoConfig, "edits"):
        out["edits"] = DemoConfig.edits
    return out


# Run names say how a run differs from these (the demo's settings before issue 19 item 7); every lever flag is
# passed explicitly, so a run means the same whatever --dense auto later chose.
BASE = {"dense": "off", "marks": "on", "tune.token_credit": "auto", "tune.num_iterations": "1", "edits": "off"}


def flag_args(flags: dict) -> list[str]:
    return [a for k, v in sorted(flags.items()) for a in (f"--{k}", v)]


def named(task: str, prefix: str, flags: dict, args: list[str]) -> dict:
    diff = {k: v for k, v in flags.items() if BASE.get(k) != v}
    name = prefix + ("-".join(f"{k.replace('tune.', '')}={v}" for k, v in sorted(diff.items())) or "base")
    return {"task": task, "name": name, "args": args + flag_args(flags)}


def lever_run(task: str, lever: str, label: str) -> dict:
    """Lever `lever` off or on, every other lever at the demo's default for `task`."""
    from vrlhf.tasks import get_task

    off, on, both = LEVERS[lever]
    if lever == "token_credit" and get_task(task).STORED == "image":
        both = {}  # its scalar model has a dense form too, its attribution (docs/REWARD_MODEL.md): credit acts on it
    return named(task, "lever-", defaults(task) | both | (off if label == "off" else on), LEVER_RUN)


def efficiency_run(task: str, n: int, marks: str) -> dict:
    if n == 400:  # the demo's first round: the marks lever's runs
        return lever_run(task, "marks", marks)
    return named(task, f"efficiency-{n}-", defaults(task) | {"dense": "on", "marks": marks},
                 ONE_ROUND + ["--labels", str(n)])


def plan(tasks: list[str], levers: list[str], budgets: list[int], choose: bool, full: bool) -> list[dict]:
    """Every run to make, in the order they start: {task, name, args} (one run per name)."""
    runs: dict[str, dict] = {}

    def add(run: dict) -> None:
        runs.setdefault(f"{run['task']}/{run['name']}", run)

    for task in tasks:
        if choose:
            for dense in ("on", "off"):
                add({"task": task, "name": f"choose-dense={dense}", "args": ONE_ROUND + ["--dense", dense]})
    if choose:
        return list(runs.values())
    for lever in levers:
        for task in tasks:
            if lever == "edits" and "edits" not in defaults(task):
                continue  # the demo has no --edits yet: reported missing
            for label in ("off", "on"):
                add(lever_run(task, lever, label))
        if lever == "marks":  # the label-efficiency curve right after the marks lever it extends
            for n in budgets:
                for task in tasks:
                    for marks in ("on", "off"):
                        add(efficiency_run(task, n, marks))
    if full:  # last: its extra rows (best-of-n, the oracle bound) are measured elsewhere too
        for task in tasks:
            add({"task": task, "name": "full", "args": []})
    return list(runs.values())


def start(run: dict, seed: int, work: Path, data: str, extra: list[str]) -> subprocess.Popen:
    out = work / f"seed-{seed}" / f"{run['task']}-{run['name']}"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "vrlhf.cli", "demo", "--simulate", "--tasks", run["task"], "--seed", str(seed),
           "--workdir", str(out), *(["--data", data] if data else []), *run["args"], *extra]
    # PYTHONPATH: this checkout's code even when it is a snapshot beside the editable install (a measurement
    # that runs for an hour should not pick up files half-edited in the working tree)
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                        "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    (out / "command.txt").write_text(" ".join(cmd) + "\n")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(out / "log.txt", "w"), stderr=subprocess.STDOUT)
    (out / "pid").write_text(str(proc.pid))
    return proc


def running_elsewhere(run: dict, seed: int, work: Path) -> bool:
    """Whether another bench process is making this run right now (its pid file names a live process)."""
    pid = work / f"seed-{seed}" / f"{run['task']}-{run['name']}" / "pid"
    try:
        os.kill(int(pid.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def summary_of(run: dict, seed: int, work: Path) -> dict | None:
    path = work / f"seed-{seed}" / f"{run['task']}-{run['name']}" / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_all(runs: list[dict], seed: int, work: Path, data: str, jobs: int, extra: list[str]) -> None:
    todo = [r for r in runs if summary_of(r, seed, work) is None and not running_elsewhere(r, seed, work)]
    running: list[tuple[dict, subprocess.Popen, float]] = []
    while todo or running:
        while todo and len(running) < jobs:
            run = todo.pop(0)
            if summary_of(run, seed, work) is not None or running_elsewhere(run, seed, work):
                continue  # another bench process made or is making it since this one planned
            print(f"[levers {time.strftime('%H:%M:%S')}] start {run['task']} {run['name']}", flush=True)
            running.append((run, start(run, seed, work, data, extra), time.time()))
        time.sleep(5)
        for item in list(running):
            run, proc, began = item
            if proc.poll() is not None:
                running.remove(item)
                print(f"[levers {time.strftime('%H:%M:%S')}] {run['task']} {run['name']}: exit {proc.returncode} "
                      f"after {(time.time() - began) / 60:.1f} min", flush=True)


def win(e: dict | None) -> str:
    return f"{e['win_rate_vs_mle_greedy']:.3f} / {e['win_rate_vs_mle_sampled']:.3f}" if e else "–"


def collect(seed: int, work: Path, tasks: list[str], levers: list[str], budgets: list[int], choose: bool) -> dict:
    """{task: {defaults, levers: {lever: {off|on: {run, rounds, pairs, minutes}}}, full, label_efficiency,
    choose, missing}} from the finished runs."""
    out: dict = {}
    for task in tasks:
        entry: dict = {"defaults": defaults(task), "levers": {}, "missing": []}

        def learned(run: dict, what: str, task: str = task, entry: dict = entry) -> dict | None:
            summary = summary_of(run, seed, work)
            if summary is None:
                entry["missing"].append(f"{what}: run {run['name']} did not finish")
                return None
            result = summary["tasks"][task]
            return {"run": run["name"], "minutes": round(summary["seconds"] / 60, 1),
                    "rounds": [r["evaluation"]["learned"] for r in result["rounds"]],
                    "pairs": [r["export"]["pairs"] for r in result["rounds"]],
                    "reward_model_accuracy": [r["reward_model"].get("best", {}).get("accuracy")
                                              for r in result["rounds"]], "fixed": result.get("fixed", {})}

        if choose:
            entry["choose"] = {d: learned({"task": task, "name": f"choose-dense={d}"}, f"choose dense {d}")
                               for d in ("on", "off")}
            out[task] = entry
            continue
        full = summary_of({"task": task, "name": "full"}, seed, work)
        if full:
            result = full["tasks"][task]
            entry["full"] = {"minutes": round(full["seconds"] / 60, 1), "seconds": result["seconds"],
                             "fixed": result["fixed"], "rounds": [r["evaluation"] for r in result["rounds"]]}
        for lever in levers:
            if lever == "edits" and "edits" not in defaults(task):
                entry["missing"].append("edits: the demo has no --edits switch yet")
                continue
            entry["levers"][lever] = {label: learned(lever_run(task, lever, label), f"{lever} {label}")
                                      for label in ("off", "on")}
        # every lever run tunes the metric-only policy the same way (its comparisons in round 2 need it)
        metric = [run["fixed"]["metric"] for runs in entry["levers"].values() for run in runs.values()
                  if run and "metric" in run["fixed"]]
        if metric:
            entry["metric_only"] = metric[0]
        curves: dict = {"on": {}, "off": {}}
        for n in budgets:
            for marks in ("on", "off"):
                got = learned(efficiency_run(task, n, marks), f"label efficiency {n} marks {marks}")
                if got:
                    curves[marks][n] = {"comparisons": n, "pairs": got["pairs"][0]} | {
                        k: got["rounds"][0][k] for k in ("win_rate_vs_mle_greedy", "win_rate_vs_mle_sampled")}
        if any(curves.values()):
            entry["label_efficiency"] = curves
        out[task] = entry
    return out


def markdown(results: dict, seed: int, choose: bool, demo_args: str = "") -> str:
    lines = [f"# The levers of issue 19, off and on (`vrlhf demo --simulate`, seed {seed})", "",
             "Win rate of the learned-reward policy against MLE, greedy / temperature-1 samples, on the demo's 300 "
             "held-out images (standard error ≈ 0.03). One torch thread per run (deterministic); "
             "`bench/bench_levers.py`" + (" --choose: one round, the seed that chose --dense auto." if choose
                                          else "; round 1: 400 ranked comparisons, round 2: +200.")
             + (f" Every run also had `{demo_args}`." if demo_args else ""), ""]
    for task, entry in results.items():
        lines += [f"## {task}", "", "Defaults: " + ", ".join(f"--{k} {v}" for k, v in entry["defaults"].items())
                  + ".", ""]
        if choose:
            lines += ["| --dense | round 1 | reward-model accuracy | minutes |", "| --- | --- | ---: | ---: |"]
            for dense, run in entry["choose"].items():
                if run:
                    lines.append(f"| {dense} | {win(run['rounds'][0])} | {run['reward_model_accuracy'][0]:.3f} "
                                 f"| {run['minutes']} |")
        if entry["levers"]:
            lines += ["| lever | setting | run | round 1 | round 2 | minutes |",
                      "| --- | --- | --- | --- | --- | ---: |"]
            for lever, settings in entry["levers"].items():
                for label, run in settings.items():
                    if run:
                        cells = [win(e) for e in run["rounds"]] + ["–"] * (2 - len(run["rounds"]))
                        lines.append(f"| {lever} | {label} | {run['run']} | {' | '.join(cells)} | {run['minutes']} |")
                    else:
                        lines.append(f"| {lever} | {label} | not run | | | |")
        if "metric_only" in entry:
            lines += ["", f"The metric-only policy (the task's `vrlhf tune` default rewards, 40 steps): "
                      f"{win(entry['metric_only'])}."]
        if "full" in entry:
            full = entry["full"]
            lines += ["", f"The full default run ({full['minutes']} min, one thread, shared machine; seconds per "
                      "stage: "
                      + ", ".join(f"{k} {v:.0f}" for k, v in full["seconds"].items()) + "):", "",
                      "| row | round 1 | round 2 |", "| --- | --- | --- |"]
            for name in ("learned", "both", "best_of_n"):
                cells = [win(r.get(name)) for r in full["rounds"]]
                lines.append(f"| {name} | {' | '.join(cells)} |")
            for name in ("metric", "oracle", "ideal"):
                if name in full["fixed"]:
                    lines.append(f"| {name} | {win(full['fixed'][name])} | |")
        if entry.get("label_efficiency"):
            curves = entry["label_efficiency"]
            lines += ["", "Label efficiency (one round, `--dense on`; final win rate vs MLE):", "",
                      "| comparisons | marks on | marks off |", "| ---: | --- | --- |"]
            for n in sorted({int(n) for c in curves.values() for n in c}):
                lines.append(f"| {n} | {win(curves['on'].get(n))} | {win(curves['off'].get(n))} |")
        if entry["missing"]:
            lines += ["", "Missing: " + "; ".join(entry["missing"]) + "."]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--tasks", default="captioning,colorization")
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--budgets", default="100,200,400,800", help="label-efficiency budgets ('': none)")
    parser.add_argument("--choose", action="store_true", help="only the runs that choose --dense auto")
    parser.add_argument("--full", action="store_true", help="also the full default run per task (every row), last")
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--work", default=str(ROOT / "work" / "levers"))
    parser.add_argument("--data", default="", help="shapes dir (empty: each run generates WORKDIR/shapes)")
    parser.add_argument("--collect", action="store_true", help="only write the tables from finished runs")
    parser.add_argument("--demo_args", default="", help="more `vrlhf demo` flags for every run, e.g. a smaller budget "
                                                        "'--rounds 1 --rm_epochs 2' (use another --work for them)")
    parser.add_argument("--out", default="", help="OUT.md and OUT.json (default bench/results/levers, "
                                                  "levers-choose with --choose)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    tasks, levers = args.tasks.split(","), [lv for lv in args.levers.split(",") if lv]
    budgets = [int(b) for b in args.budgets.split(",") if b]
    work, out = Path(args.work), Path(args.out or RESULTS / ("levers-choose" if args.choose else "levers"))
    if args.choose and not args.data:  # not the demo's test images: another dataset chooses
        from vrlhf.shapes import ShapesConfig, write_shapes

        args.data = str(work / f"choose-shapes-{args.seed}")
        if not (Path(args.data) / "test").is_dir():
            print(write_shapes(ShapesConfig(out=args.data, n=3000, seed=100 + args.seed)))
    if not args.collect:
        run_all(plan(tasks, levers, budgets, args.choose, args.full), args.seed, work, args.data, args.jobs,
                args.demo_args.split())
    results = collect(args.seed, work, tasks, levers, budgets, args.choose)
    out.with_suffix(".json").write_text(json.dumps({"seed": args.seed, "demo_args": args.demo_args, "tasks": results},
                                                   indent=2, default=str))
    out.with_suffix(".md").write_text(markdown(results, args.seed, args.choose, args.demo_args))
    curves = {t: e["label_efficiency"] for t, e in results.items() if e.get("label_efficiency")}
    if curves:
        from loop.report import label_efficiency_plot

        # the default --out keeps its old picture's name; another --out gets its own picture beside its tables
        png = "label_efficiency.png" if out.resolve() == RESULTS / "levers" else f"{out.stem}-label_efficiency.png"
        label_efficiency_plot(curves).savefig(out.with_name(png), dpi=110, bbox_inches="tight")
    print(markdown(results, args.seed, args.choose, args.demo_args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
