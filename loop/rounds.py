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
from dataclasses import replace
from pathlib import Path

import numpy as np

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


def run_rounds(task_name: str, cfg, workdir: Path, data: Path, store, label, mle: str) -> dict:
    """Run `cfg.rounds` rounds for one task; `label(store, task_name)` labels everything open in the store.
    Returns the task's summary: per round its labels, reward model and evaluation, plus the fixed rows."""
    from labeler.export import export
    from labeler.sampling import sample_round
    from loop.compare import policy_outputs, versus_mle
    from reward_model.train import TrainRewardConfig, train_reward
    from tuner.best_of_n import best_of_n
    from tuner.train import tune
    from vrlhf.data import load_rows
    from vrlhf.tasks import get_oracle, get_task

    task, oracle = get_task(task_name), get_oracle(task_name)
    out = workdir / task_name
    train_rows = load_rows(data / "train")
    test_rows = load_rows(data / "test", limit=cfg.eval_images)
    seconds: dict[str, float] = {}
    summary: dict = {"task": task_name, "rounds": [], "seconds": seconds, "dirs": {}}
    metric_rewards = [spec.split(":", 1)[1] for spec in cfg.metric_rewards if spec.split(":", 1)[0] == task_name]
    metric_rewards = metric_rewards or default_rewards(task_name)
    total_steps = cfg.tune.steps * (cfg.rounds if cfg.continue_tracks else 1)

    def tuned(name: str, start: str, reward: list[str], steps: int, seed: int, kl: float) -> str:
        run = replace(cfg.tune, task=task_name, policy=start, data=str(data), out=str(out / name), reward=reward,
                      reward_norm="batch" if len(reward) > 1 else "none", steps=steps, seed=seed, kl_coef=kl,
                      kl_reference=mle if kl else "", overwrite=True)  # the demo's workdir: a rerun replaces it
        with timed(seconds, "tuning"):
            tune(run)
        summary["dirs"][name] = str(out / name)
        return str(out / name / "final")

    mle_policy = task.load_policy(mle)
    with timed(seconds, "evaluation"):
        mle_out = policy_outputs(task, mle_policy, test_rows, cfg.seed)
    fixed: dict[str, dict] = {}
    tracks = {name: [mle] for name in TRACKS if name in cfg.tracks.split(",")}
    metric_policy, latest_outputs = None, {}
    for r in range(1, cfg.rounds + 1):
        record: dict = {"round": r}
        # 1. comparisons into the store
        with timed(seconds, "sampling"):
            if r == 1:
                plan = [dict(name="MLE samples", policy=mle, against=None, temperature=cfg.label_temperature,
                             n=cfg.labels, k=cfg.comparison_k)]
            else:
                plan = comparison_plan(r, tracks, metric_policy, cfg.labels_later, cfg.hot_temperature,
                                       cfg.comparison_k)
            record["comparisons"] = []
            for j, part in enumerate(plan):
                round_id = sample_round(store, task_name, part["policy"], str(data / "train"), k=part["k"], n=part["n"],
                                        seed=cfg.seed + 1000 * r + j, temperature=part["temperature"],
                                        name=f"r{r}: {part['name']}", progress=False, against=part["against"],
                                        rows=train_rows)
                record["comparisons"].append(
                    {"name": part["name"], "n": part["n"], "k": part["k"], "round_id": round_id})
            say(f"{task_name} round {r}: {sum(p['n'] for p in plan)} comparisons: "
                + ", ".join(f"{p['name']} {p['n']}" for p in plan))
        # 2. labels, through the app
        with timed(seconds, "labeling"):
            record["labeling"] = label(store, task_name)
        # 3. every label so far -> a reward model
        export_dir, rm_dir = out / f"round-{r}" / "export", out / f"round-{r}" / "reward-model"
        with timed(seconds, "export"):
            record["export"] = export(store, export_dir, "hf", task=task_name)
        say(f"{task_name} round {r}: training the reward model on {record['export']['pairs']} pairs")
        with timed(seconds, "reward_model"):
            record["reward_model"] = train_reward(TrainRewardConfig(
                data=str(export_dir), out=str(rm_dir), task=task_name, seed=cfg.seed, progress=False,
                epochs=cfg.rm_epochs, eval_every=25, overwrite=True))
        learned = f"learned:{rm_dir}=1.0"
        # 4. the round-independent rows, once the first reward model exists (the tracks need its budget)
        if r == 1 and metric_rewards and cfg.metric_row:
            say(f"{task_name}: tuning the metric-only policy ({', '.join(metric_rewards)}), {total_steps} steps")
            metric_policy = tuned("metric", mle, metric_rewards, total_steps, cfg.seed, 0.0)
        # 5. tune each learned track again
        for track in tracks:
            reward = [learned] if track == "learned" else metric_rewards + [learned]
            start = tracks[track][-1] if cfg.continue_tracks else mle
            say(f"{task_name} round {r}: tuning '{track}' from {Path(start).parent.name or 'MLE'} with {reward}")
            tracks[track].append(tuned(f"round-{r}/{track}", start, reward, cfg.tune.steps, cfg.seed + r,
                                       cfg.tune.kl_coef))
        # 6. evaluate this round against MLE
        with timed(seconds, "evaluation"):
            from reward_model import load_reward_model

            rm = load_reward_model(rm_dir)
            policies = {track: tracks[track][-1] for track in tracks}
            record["evaluation"], latest_outputs = {}, {}
            for name, path in policies.items():
                latest_outputs[name] = outs = policy_outputs(task, task.load_policy(path), test_rows, cfg.seed)
                record["evaluation"][name] = versus_mle(task, oracle, test_rows, outs, mle_out, cfg.seed)
            best, _ = best_of_n(task, mle_policy, test_rows, rm.score, cfg.best_of, seed=cfg.seed)
            record["evaluation"]["best_of_n"] = versus_mle(task, oracle, test_rows, {"greedy": best, "sample": best},
                                                           mle_out, cfg.seed)
        say(f"{task_name} round {r}: win rate vs MLE (greedy) " + ", ".join(
            f"{k} {v['win_rate_vs_mle_greedy']:.3f}" for k, v in record["evaluation"].items()))
        summary["rounds"].append(record)

    # the oracle bound and the fixed rows
    oracle_policy = None
    if cfg.oracle_row:
        say(f"{task_name}: tuning on the oracle itself (the bound), {total_steps} steps")
        # the same tuner as every track: the oracle says where its score comes from, so with --tune.token_credit
        # auto (the default) each token is credited as the task says (colorization: its cells; captions: to go)
        oracle_policy = tuned("oracle", mle, ["oracle=1.0"], total_steps, cfg.seed, 0.0)
    with timed(seconds, "evaluation"):
        fixed["mle"] = versus_mle(task, oracle, test_rows, mle_out, None, cfg.seed)
        for name, path in (("metric", metric_policy), ("oracle", oracle_policy)):
            if path:
                outs = policy_outputs(task, task.load_policy(path), test_rows, cfg.seed)
                fixed[name] = versus_mle(task, oracle, test_rows, outs, mle_out, cfg.seed)
        ideal = task.ideal_outputs(mle_policy, test_rows, np.random.default_rng(cfg.seed))
        fixed["ideal"] = versus_mle(task, oracle, test_rows, {"greedy": ideal, "sample": ideal}, mle_out, cfg.seed)
    summary["fixed"] = fixed
    summary["_samples"] = (test_rows[:8], {"mle": mle_out["sample"][:8]} | {
        name: outs["sample"][:8] for name, outs in latest_outputs.items()})
    return summary


def default_rewards(task_name: str) -> list[str]:
    """The metric rewards `vrlhf tune` uses by default for the task: the metric-only row and the metric half of
    the metric + learned track."""
    from vrlhf.tasks import get_task

    return list(get_task(task_name).DEFAULT_REWARDS)
