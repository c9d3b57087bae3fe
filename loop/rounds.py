"""Rounds of feedback on the improving policy, for one task: the loop of docs/ARCHITECTURE.md, run headless.

    round 1:  pairs of the MLE policy's samples
    round r:  comparisons from the policies the loop has made so far (the latest learned-reward policy against MLE
              and against its predecessor, its own samples at a hotter temperature, the metric-only policy's
              against it), added to the same database
    each round: label (through the running app) → export every label so far → train the reward model on all of
              them → tune each learned-reward track again, KL-anchored to the MLE policy → evaluate against MLE

Beside the rounds, three rows that do not depend on them: the metric-only policy, the policy tuned on the oracle
itself (what a perfect reward model would reach with the same tuning budget: the bound) and the ideal output.
People run the same round with the public commands (README: "A round in commands").
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from labeler.export import export
from labeler.sampling import sample_round
from loop.compare import policy_outputs, versus_mle
from reward_model import load_reward_model
from reward_model.train import TrainRewardConfig, train_reward
from tuner.best_of_n import best_of_n
from tuner.train import tune
from vrlhf.data import load_rows
from vrlhf.tasks import get_oracle

TRACKS = {"learned": "learned reward", "both": "metric + learned reward"}


def say(msg: str) -> None:
    print(f"[loop {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@contextmanager
def timed(seconds: dict, stage: str):
    """Add the wall time of one stage to seconds[stage]."""
    start = time.time()
    yield
    seconds[stage] = round(seconds.get(stage, 0.0) + time.time() - start, 1)


def comparison_plan(r: int, tracks: dict[str, list[str]], metric: str | None, n: int, hot: float,
                    k: int = 2) -> list[dict]:
    """What round `r` (≥ 2) labels: n comparisons split over policies the loop has produced. Each entry is a
    `sample_round` call: policy, against (None: k samples of the policy, ranked when k > 2), temperature, k."""
    learned = tracks["learned"]
    latest, mle = learned[-1], learned[0]
    parts = [dict(name="learned vs MLE", policy=latest, against=mle, temperature=1.0, k=2),
             dict(name="learned, hot samples", policy=latest, against=None, temperature=hot, k=k)]
    if len(learned) > 2:
        parts.append(dict(name="learned vs its predecessor", policy=latest, against=learned[-2], temperature=1.0, k=2))
    if metric:
        parts.append(dict(name="metric-only vs learned", policy=metric, against=latest, temperature=1.0, k=2))
    sizes = [n // len(parts) + (i < n % len(parts)) for i in range(len(parts))]
    return [p | {"n": size} for p, size in zip(parts, sizes) if size]


def run_rounds(task, cfg, workdir: Path, data: Path, store, label, mle: str) -> dict:
    """Run `cfg.rounds` rounds for one task (its module, resolved once by the demo); `label(store, task)` labels
    everything open in the store. Returns the task's summary: per round its labels, reward model and evaluation, plus
    the fixed rows."""
    task_name = task.NAME
    run = TaskRun(task_name=task_name, cfg=cfg, out=workdir / task_name, data=data, mle=mle,
                  task=task, oracle=get_oracle(task), train_rows=load_rows(data / "train"),
                  test_rows=load_rows(data / "test", limit=cfg.eval_images))
    summary: dict = {"task": task_name, "rounds": [], "seconds": run.seconds, "dirs": run.dirs}
    metric_rewards = [spec.split(":", 1)[1] for spec in cfg.metric_rewards if spec.split(":", 1)[0] == task_name]
    metric_rewards = metric_rewards or default_rewards(task)
    total_steps = cfg.tune.steps * (cfg.rounds if cfg.continue_tracks else 1)

    mle_policy = run.task.load_policy(mle)
    with run.timed("evaluation"):
        mle_out = policy_outputs(run.task, mle_policy, run.test_rows, cfg.seed)
    tracks = {name: [mle] for name in TRACKS if name in cfg.tracks.split(",")}
    metric_policy, latest_outputs = None, {}
    for r in range(1, cfg.rounds + 1):
        record: dict = {"round": r}
        record["comparisons"] = sample_comparisons(run, store, r, tracks, metric_policy)
        with run.timed("labeling"):
            record["labeling"] = label(store, task)
        record["export"], record["reward_model"] = train_round_reward_model(run, store, r)
        # the round-independent rows, once the first reward model exists (the tracks need its budget)
        if r == 1 and metric_rewards and cfg.metric_row:
            say(f"{task_name}: tuning the metric-only policy ({', '.join(metric_rewards)}), {total_steps} steps")
            metric_policy = run.tuned("metric", mle, metric_rewards, total_steps, cfg.seed, 0.0)
        tune_tracks(run, r, tracks, metric_rewards)
        record["evaluation"], latest_outputs = evaluate_round(run, r, tracks, mle_policy, mle_out)
        summary["rounds"].append(record)

    # the oracle bound and the fixed rows
    oracle_policy = None
    if cfg.oracle_row:
        say(f"{task_name}: tuning on the oracle itself (the bound), {total_steps} steps")
        # the same tuner as every track: the oracle says where its score comes from, so with --tune.token_credit
        # auto (the default) each token is credited as the task says (colorization: its cells; captions: to go)
        oracle_policy = run.tuned("oracle", mle, ["oracle=1.0"], total_steps, cfg.seed, 0.0)
    summary["fixed"] = evaluate_fixed_rows(run, mle_policy, mle_out, {"metric": metric_policy, "oracle": oracle_policy})
    summary["_samples"] = (run.test_rows[:8], {"mle": mle_out["sample"][:8]} | {
        name: outs["sample"][:8] for name, outs in latest_outputs.items()})
    return summary


@dataclass
class TaskRun:
    """What every step of one task's rounds shares: the task and its oracle, the data, the MLE policy, where the
    runs go, and the wall time per stage and run directories that end up in the summary."""

    task_name: str
    cfg: Any  # loop.demo.DemoConfig
    out: Path  # this task's directory under the demo's workdir
    data: Path
    mle: str  # the MLE policy every track starts from and is KL-anchored to
    task: Any
    oracle: Any
    train_rows: list
    test_rows: list
    seconds: dict = field(default_factory=dict)
    dirs: dict = field(default_factory=dict)

    def timed(self, stage: str):
        return timed(self.seconds, stage)

    def reward_model_dir(self, r: int) -> Path:
        return self.out / f"round-{r}" / "reward-model"

    def tuned(self, name: str, start: str, reward: list[str], steps: int, seed: int, kl: float) -> str:
        """Tune `start` on `reward` into out/name; returns the tuned policy's path."""
        cfg = self.cfg
        run = replace(cfg.tune, task=self.task_name, policy=start, data=str(self.data), out=str(self.out / name),
                      reward=reward, reward_norm="batch" if len(reward) > 1 else "none", steps=steps, seed=seed,
                      kl_coef=kl, kl_reference=self.mle if kl else "",
                      overwrite=True)  # the demo's workdir: a rerun replaces it
        with self.timed("tuning"):
            tune(run, self.task)
        self.dirs[name] = str(self.out / name)
        return str(self.out / name / "final")


def sample_comparisons(run: TaskRun, store, r: int, tracks: dict[str, list[str]], metric_policy: str | None) -> list:
    """Step 1 of round r: its comparisons into the store (round 1: MLE samples; later: `comparison_plan`)."""
    cfg = run.cfg
    with run.timed("sampling"):
        if r == 1:
            plan = [dict(name="MLE samples", policy=run.mle, against=None, temperature=cfg.label_temperature,
                         n=cfg.labels, k=cfg.comparison_k)]
        else:
            plan = comparison_plan(r, tracks, metric_policy, cfg.labels_later, cfg.hot_temperature, cfg.comparison_k)
        comparisons = []
        for j, part in enumerate(plan):
            round_id = sample_round(store, run.task, part["policy"], str(run.data / "train"), k=part["k"],
                                    n=part["n"], seed=cfg.seed + 1000 * r + j, temperature=part["temperature"],
                                    name=f"r{r}: {part['name']}", progress=False, against=part["against"],
                                    rows=run.train_rows, edits=candidate_edits(cfg, run.task, part))
            comparisons.append({"name": part["name"], "n": part["n"], "k": part["k"], "round_id": round_id,
                                "edits": candidate_edits(cfg, run.task, part)})
        say(f"{run.task_name} round {r}: {sum(p['n'] for p in plan)} comparisons: "
            + ", ".join(f"{p['name']} {p['n']}" for p in plan))
    return comparisons


def candidate_edits(cfg, task, part: dict) -> int:
    """Candidate edits per comparison of one plan entry (--edits on): one, in comparisons of one policy's samples."""
    return int(cfg.edits == "on" and part["against"] is None and hasattr(task, "edits"))


def reward_model_settings(cfg, task) -> dict:
    """The round's `train-reward` settings that the demo's levers decide: --dense on (or auto where the task's
    `DEMO_DENSE` says so, measured in docs/DEMO.md) trains a dense model on the marks with --marks_coef and the task's
    `DENSE_REWARD_SETTINGS`; else the scalar model."""
    if not (cfg.dense == "on" or cfg.dense == "auto" and getattr(task, "DEMO_DENSE", False)):
        return {"dense": False}
    return {"dense": True, "marks_coef": cfg.marks_coef} | getattr(task, "DENSE_REWARD_SETTINGS", {})


def train_round_reward_model(run: TaskRun, store, r: int) -> tuple[dict, dict]:
    """Step 3 of round r (after labeling): export every label so far and train the round's reward model on them.
    Returns the export's and the training's summaries."""
    export_dir, rm_dir = run.out / f"round-{r}" / "export", run.reward_model_dir(r)
    with run.timed("export"):
        exported = export(store, export_dir, "hf", task=run.task)
    say(f"{run.task_name} round {r}: training the reward model on {exported['pairs']} pairs")
    with run.timed("reward_model"):  # --dense / --marks_coef: a dense model trained on the marks, or the scalar one
        trained = train_reward(TrainRewardConfig(
            data=str(export_dir), out=str(rm_dir), task=run.task_name, seed=run.cfg.seed, progress=False,
            epochs=run.cfg.rm_epochs, eval_every=25, overwrite=True, **reward_model_settings(run.cfg, run.task)),
            run.task)
    return exported, trained


def tune_tracks(run: TaskRun, r: int, tracks: dict[str, list[str]], metric_rewards: list[str]) -> None:
    """Step 4 of round r: tune each learned-reward track again on the round's reward model (from its previous
    policy with --continue_tracks, else from MLE); appends the tuned policy to tracks[track]."""
    learned = f"learned:{run.reward_model_dir(r)}=1.0"
    for track in tracks:
        reward = [learned] if track == "learned" else metric_rewards + [learned]
        start = tracks[track][-1] if run.cfg.continue_tracks else run.mle
        say(f"{run.task_name} round {r}: tuning '{track}' from {Path(start).parent.name or 'MLE'} with {reward}")
        tracks[track].append(run.tuned(f"round-{r}/{track}", start, reward, run.cfg.tune.steps, run.cfg.seed + r,
                                       run.cfg.tune.kl_coef))


def evaluate_round(run: TaskRun, r: int, tracks: dict[str, list[str]], mle_policy, mle_out: dict) -> tuple[dict, dict]:
    """Step 5 of round r: each track's latest policy and best-of-n under the round's reward model, against MLE in
    the oracle's judgment. Returns the evaluation and each track's outputs."""
    task, cfg = run.task, run.cfg
    with run.timed("evaluation"):
        rm = load_reward_model(run.reward_model_dir(r), task=task)
        evaluation, outputs = {}, {}
        for name, path in {track: tracks[track][-1] for track in tracks}.items():
            outputs[name] = outs = policy_outputs(task, task.load_policy(path), run.test_rows, cfg.seed)
            evaluation[name] = versus_mle(task, run.oracle, run.test_rows, outs, mle_out, cfg.seed)
        if cfg.best_of > 0:  # --best_of 0: no best-of row (the lever runs)
            best, _ = best_of_n(task, mle_policy, run.test_rows, rm.score, cfg.best_of, seed=cfg.seed)
            evaluation["best_of_n"] = versus_mle(task, run.oracle, run.test_rows, {"greedy": best, "sample": best},
                                                 mle_out, cfg.seed)
    say(f"{run.task_name} round {r}: win rate vs MLE (greedy) " + ", ".join(
        f"{k} {v['win_rate_vs_mle_greedy']:.3f}" for k, v in evaluation.items()))
    return evaluation, outputs


def evaluate_fixed_rows(run: TaskRun, mle_policy, mle_out: dict, policies: dict[str, str | None]) -> dict:
    """The rows that do not depend on the rounds, against MLE: MLE itself, the given policies (metric-only, the
    oracle bound; None: not run) and the ideal output."""
    task, seed = run.task, run.cfg.seed
    with run.timed("evaluation"):
        fixed = {"mle": versus_mle(task, run.oracle, run.test_rows, mle_out, None, seed)}
        for name, path in policies.items():
            if path:
                outs = policy_outputs(task, task.load_policy(path), run.test_rows, seed)
                fixed[name] = versus_mle(task, run.oracle, run.test_rows, outs, mle_out, seed)
        ideal = task.ideal_outputs(mle_policy, run.test_rows, np.random.default_rng(seed))
        fixed["ideal"] = versus_mle(task, run.oracle, run.test_rows, {"greedy": ideal, "sample": ideal}, mle_out, seed)
    return fixed


def default_rewards(task) -> list[str]:
    """The metric rewards `vrlhf tune` uses by default for the task (its module): the metric-only row and the metric
    half of the metric + learned track."""
    return list(task.DEFAULT_REWARDS)
