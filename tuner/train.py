"""`vrlhf tune`: REINFORCE tuning of a sequence policy against metric and learned rewards (the paper's Algorithm 2).

    vrlhf tune --task captioning --policy data/demo/captioner --data work/shapes --out runs/tune \
        --reward cider_d=1.0 [--reward learned:runs/rm=0.5] [--config configs/tune_captioning.yaml] [--key=value ...]

    torchrun --nproc_per_node 2 -m tuner.train ...      # several processes: data sharded, gradients averaged

Each step: sample k outputs per image at temperature 1, score them, subtract a baseline, and take a gradient step on
−mean(advantage · log P(sample)), with log P recomputed by teacher forcing (dropout off in both passes).

Determinism: the rows of step s and the sampling seed of each micro-batch are functions of (seed, s, micro-batch
index) only. So a resumed run repeats the uninterrupted one exactly, and 2 processes × 1 micro-batch equal
1 process × 2 accumulated micro-batches (the same global batch).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import sys
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from tuner.advantages import BASELINES, compute_advantages, reinforce_loss
from tuner.checkpoint import TrainState, latest_checkpoint, save_checkpoint
from tuner.config import TuneConfig
from tuner.monitor import evaluate, output_stats, save_samples
from tuner.rewards import NORMALIZATIONS, build_reward, parse_reward_specs
from vrlhf.errors import ConfigError
from vrlhf.rundir import RunDir

def main(argv: list[str] | None = None) -> int:
    from vrlhf.config import parse_config

    tune(parse_config(TuneConfig, argv, prog="vrlhf tune"))
    return 0


def tune(cfg: TuneConfig):
    """Run the tuning described by `cfg`; returns (tuned policy, final held-out metrics on the main process)."""
    from vrlhf.tasks import get_task
    from vrlhf.training import average_gradients

    # ---- everything that can be wrong is checked before any model is loaded ----
    check_config(cfg)
    task = get_task(cfg.task)
    specs = parse_reward_specs(cfg.reward or list(task.DEFAULT_REWARDS))
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.mixed_precision,
        log_with=tracker(cfg.log_with),
        project_dir=cfg.out,
    )
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by processes × grad_accum = "
                          f"{world} × {cfg.grad_accum}")
    micro = cfg.batch_size // (world * cfg.grad_accum)  # images per micro-batch on each process
    train_rows, eval_rows = split_data(cfg)
    reward = build_reward(task, specs, train_rows, cfg.reward_norm, device)  # unknown metric / bad RM dir fail here
    out = Path(cfg.out)

    # ---- the policy, the frozen reference, the optimiser ----
    torch.manual_seed(cfg.seed)
    policy = task.load_policy(cfg.policy)
    policy.model.to(device)
    reference = None
    if cfg.lora_r:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear")
        policy.model = get_peft_model(policy.model, lora)  # the KL reference is then the base with adapters off
    elif cfg.kl_coef:
        reference = copy.deepcopy(policy)
        reference.model.requires_grad_(False)
    policy.eval()  # dropout off for sampling AND re-scoring: both must be the same distribution
    params = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (cfg.warmup_steps + 1)))
    # Only the optimiser goes through prepare(): gradients are averaged by hand below, which works for any
    # model family and for PEFT, and the plain scheduler steps once per optimiser step on every process count.
    optimizer = accelerator.prepare(optimizer)
    state = TrainState(reward=reward)
    accelerator.register_for_checkpointing(policy.model, scheduler, state)
    ckpt = latest_checkpoint(out / "checkpoints", say=accelerator.print) if cfg.resume else None
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        accelerator.print(f"resumed from {ckpt} at step {state.step}")
    elif cfg.resume:
        accelerator.print(f"no checkpoint under {out / 'checkpoints'}; starting from step 0")

    run = RunDir(out, resume_step=state.step, enabled=accelerator.is_main_process)  # keeps the log up to state.step
    run.save_config(cfg)
    log = MetricsLog(run, accelerator)
    if accelerator.is_main_process:
        accelerator.init_trackers("vrlhf-tune", config={k: str(v) for k, v in vars(cfg).items()})
    show_rows = eval_rows[: cfg.num_show]
    if state.step == 0:
        evaluate_and_log(cfg, task, policy, eval_rows, log, accelerator, step=0)
        if accelerator.is_main_process and show_rows:
            save_samples(task, policy, show_rows, out / "samples_before", seed=cfg.seed)

    if cfg.temperature != 1.0:
        accelerator.print(f"warning: temperature {cfg.temperature}: the gradient is then that of a different policy")

    # ---- the loop ----
    max_new_tokens = cfg.max_new_tokens or None
    bar = tqdm(range(state.step, cfg.steps), initial=state.step, total=cfg.steps, disable=not accelerator.is_main_process)
    for step in bar:
        timer = Timer()
        step_start = time.perf_counter()
        indices = batch_indices(len(train_rows), cfg.batch_size, step, cfg.seed)  # (batch_size,), same on every rank
        logs, finite = defaultdict(list), True
        for a in range(cfg.grad_accum):
            m = rank * cfg.grad_accum + a  # global micro-batch index: rank r owns micro-batches r*A .. r*A+A-1
            batch = [train_rows[i] for i in indices[m * micro : (m + 1) * micro]]
            generator = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + step * 1_009 + m)
            pixel_values = task.pixel_values(policy, [r["image"] for r in batch]).to(device)  # (b, C, H, W)
            b, k = len(batch), cfg.k

            # 1. k samples per image from the full distribution (and the greedy decode for SCST)
            with timer("sample"), torch.no_grad(), accelerator.autocast():
                samples = policy.sample(pixel_values, k, cfg.temperature, max_new_tokens, generator=generator)
                greedy = policy.greedy(pixel_values, max_new_tokens) if cfg.baseline == "greedy" else None

            # 2. rewards: every component beside the weighted total
            with timer("reward"):
                outputs = task.decode(policy, batch, samples.tokens, k)  # b*k, image-major
                if greedy is not None:  # score the greedy decode as a (k+1)-th output of each image, in the same call
                    extra = task.decode(policy, batch, greedy.tokens, 1)
                    outputs_all = [o for i in range(b) for o in outputs[i * k : (i + 1) * k] + [extra[i]]]
                    total, components = reward(batch, outputs_all, gather=accelerator.gather)
                    total = total.view(b, k + 1).to(device)
                    rewards, greedy_rewards = total[:, :k], total[:, k]  # (b, k), (b,)
                    components = {n: v.view(b, k + 1)[:, :k].reshape(-1) for n, v in components.items()}
                else:
                    total, components = reward(batch, outputs, gather=accelerator.gather)
                    rewards, greedy_rewards = total.view(b, k).to(device), None  # (b, k)
                logs["reward"].append(rewards.mean().item())
                for name, values in components.items():
                    logs[f"reward/{name}"].append(values.mean().item())
                for name, value in output_stats(outputs, samples).items():
                    logs[name].append(value)

            with timer("forward_backward"):
                # KL to the starting policy, folded into the reward (as in RLOO): r − β (log π − log π_ref)
                if cfg.kl_coef:
                    with torch.no_grad(), accelerator.autocast(), reference_mode(policy):
                        ref_model = reference or policy
                        ref_log_probs = ref_model.log_prob(pixel_values, samples.tokens, samples.mask, k, cfg.temperature)
                    kl = (samples.log_probs - ref_log_probs).view(b, k)  # (b, k)
                    rewards = rewards - cfg.kl_coef * kl
                    logs["kl"].append(kl.mean().item())
                finite &= bool(torch.isfinite(rewards).all())

                # 3. advantages, per sample; which samples get a gradient
                advantages = compute_advantages(rewards, cfg.baseline, greedy_rewards)  # (b, k)
                tokens, mask, kk = samples.tokens, samples.mask, k
                if cfg.train_on == "one":  # one random sample per image, as in the paper's released code
                    pick = torch.arange(b, device=device) * k + torch.randint(k, (b,), generator=generator, device=device)
                    tokens, mask, kk, advantages = tokens[pick], mask[pick], 1, advantages.reshape(-1)[pick]
                logs["adv_abs"].append(advantages.abs().mean().item())

                # 4. loss = −mean(adv · log P(sample)), log P recomputed by teacher forcing with gradients
                with accelerator.autocast():
                    log_probs = policy.log_prob(pixel_values, tokens, mask, kk, cfg.temperature)  # (b*kk,)
                    loss = reinforce_loss(log_probs, advantages.reshape(-1))
                    if cfg.mle_coef:  # MLE on the references keeps the policy near fluent outputs
                        ref_tokens, ref_mask = task.reference_tokens(policy, batch)
                        ref_tokens, ref_mask = ref_tokens.to(device), ref_mask.to(device)
                        mle = -policy.log_prob(pixel_values, ref_tokens, ref_mask).sum() / ref_mask.sum()
                        loss = loss + cfg.mle_coef * mle
                        logs["mle"].append(mle.item())
                finite &= bool(torch.isfinite(loss))
                if finite:  # never let a NaN into the gradient buffers
                    accelerator.backward(loss / cfg.grad_accum)
                logs["loss"].append(loss.item())

        # 5. one optimiser step for the global batch, or a skipped step on every rank if any rank saw NaN/inf
        finite = accelerator.reduce(torch.tensor(float(not finite), device=device), "sum").item() == 0
        if finite:
            average_gradients(accelerator, params)
            if cfg.max_grad_norm:
                logs["grad_norm"].append(float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)))
            optimizer.step()
            scheduler.step()
        else:
            state.skipped += 1
            if accelerator.is_main_process:
                bar.write(f"warning: step {step}: non-finite reward or loss, step skipped ({state.skipped} so far)")
        optimizer.zero_grad(set_to_none=True)
        state.step = step + 1

        # 6. logging (means over processes), evaluation, checkpoint
        record = {name: sum(v) / len(v) for name, v in logs.items()}
        record = {k: v for k, v in zip(record, accelerator.reduce(torch.tensor(list(record.values()), device=device), "mean").tolist())}
        step_time = time.perf_counter() - step_start
        record.update({f"time/{name}": t for name, t in timer.totals.items()})
        record["time/other"] = step_time - sum(timer.totals.values())
        record.update({"time/step": step_time, "lr": scheduler.get_last_lr()[0], "skipped": state.skipped})
        log.write(state.step, record)
        run.progress(state.step, cfg.steps)
        bar.set_postfix(reward=f"{record['reward']:.3f}")
        if cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < cfg.steps:
            evaluate_and_log(cfg, task, policy, eval_rows, log, accelerator, step=state.step)
        if cfg.save_every and (state.step % cfg.save_every == 0 or state.step == cfg.steps):
            assert_finite(params)
            save_checkpoint(accelerator, out / "checkpoints", state.step)

    # ---- the end: held-out evaluation, the tuned policy as a standard model directory, samples after ----
    final_metrics = evaluate_and_log(cfg, task, policy, eval_rows, log, accelerator, step=state.step)
    if accelerator.is_main_process:
        assert_finite(params)  # nothing poisoned is saved
        if show_rows:
            save_samples(task, policy, show_rows, out / "samples_after", seed=cfg.seed)
        save_final(cfg, policy, out / "final")
        accelerator.print(f"done: {state.step} steps ({state.skipped} skipped); final policy in {out / 'final'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return policy, final_metrics


# ---- helpers -------------------------------------------------------------------------------------------------


def check_config(cfg: TuneConfig) -> None:
    """Fail fast, with a message naming the field, before any data or model is loaded."""
    from vrlhf.tasks import get_task

    problems = []
    try:
        get_task(cfg.task)
    except ConfigError as error:
        problems.append(str(error))
    for name in ("policy", "data") + (("eval_data",) if cfg.eval_data else ()):
        path = getattr(cfg, name)
        if not path or not Path(path).exists():
            problems.append(f"--{name} {path!r} does not exist")
    if cfg.baseline not in BASELINES:
        problems.append(f"baseline {cfg.baseline!r} is not one of {', '.join(BASELINES)}")
    if cfg.baseline in ("loo", "group_norm") and cfg.k < 2:
        problems.append(f"baseline {cfg.baseline} needs k >= 2 samples per image")
    if cfg.train_on not in ("all", "one"):
        problems.append(f"train_on {cfg.train_on!r} is not all or one")
    if cfg.reward_norm not in NORMALIZATIONS:
        problems.append(f"reward_norm {cfg.reward_norm!r} is not one of {', '.join(NORMALIZATIONS)}")
    if cfg.temperature <= 0 or cfg.k < 1 or cfg.steps < 0 or cfg.grad_accum < 1:
        problems.append("temperature must be > 0, k >= 1, steps >= 0, grad_accum >= 1")
    if problems:
        raise ConfigError("; ".join(problems))


def split_data(cfg: TuneConfig) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows): DATA/train and DATA/test, or the split every stage uses
    (`vrlhf.data.split_rows`: pretraining with the same `test_fraction` held out the same rows); `--eval_data`
    replaces the held-out rows. At most `eval_size` held-out rows are evaluated."""
    from vrlhf.data import load_rows, load_split
    from vrlhf.tasks import get_task

    check = get_task(cfg.task).row_problem  # a row the task cannot use fails here, before any model is loaded
    if cfg.eval_data:  # every row of --data (or DATA/train) trains
        root = Path(cfg.data)
        split = (root / "train").is_dir() and (root / "test").is_dir()
        train_rows = load_rows(root / "train" if split else root, check=check)
        return train_rows, load_rows(cfg.eval_data, check=check)[: cfg.eval_size]
    train_rows, held_out = load_split(cfg.data, cfg.test_fraction, check=check)
    return train_rows, held_out[: cfg.eval_size]


def batch_indices(n_rows: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Rows of step `step`: consecutive slices of a fresh permutation per epoch, a pure function of (seed, step)."""
    out, position = [], step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(position, n_rows)
        order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 7_919 + epoch)).tolist()
        take = order[offset : offset + batch_size - len(out)]
        out += take
        position += len(take)
    return out


@contextmanager
def reference_mode(policy):
    """With LoRA the starting policy is the base model with the adapters switched off."""
    disable = getattr(policy.model, "disable_adapter", None)
    with disable() if disable is not None else nullcontext():
        yield


def evaluate_and_log(cfg, task, policy, eval_rows, log, accelerator, step: int) -> dict:
    """Greedy held-out evaluation on the main process (it is small); the others wait."""
    metrics = {}
    if accelerator.is_main_process and eval_rows:
        start = time.perf_counter()
        metrics = evaluate(task, policy, eval_rows, max_new_tokens=cfg.max_new_tokens or None)
        log.write(step, {f"eval/{k}": v for k, v in metrics.items()} | {"time/eval": time.perf_counter() - start})
    accelerator.wait_for_everyone()
    return metrics


def save_final(cfg: TuneConfig, policy, path: Path) -> None:
    """A standard model directory (SequencePolicy.from_pretrained); with LoRA, merged or the adapter alone."""
    if cfg.lora_r and not cfg.merge_lora:
        policy.model.save_pretrained(path)  # PEFT adapter: PeftModel.from_pretrained(base_policy.model, path)
        return
    if cfg.lora_r:
        policy.model = policy.model.merge_and_unload()
    policy.save(path)


def assert_finite(params) -> None:
    if not all(torch.isfinite(p).all() for p in params):
        raise RuntimeError("non-finite parameters: refusing to save a poisoned model")


def tracker(name: str):
    if name == "auto":
        return "tensorboard" if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX") else None
    return None if name in ("", "none") else name


class Timer:
    """Accumulates wall-clock seconds per named phase of a step."""

    def __init__(self):
        self.totals = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.totals[name] += time.perf_counter() - start


class MetricsLog:
    """Step records into the run directory's metrics.jsonl and the Accelerate trackers (main process only)."""

    def __init__(self, run: RunDir, accelerator):
        self.run, self.accelerator = run, accelerator

    def write(self, step: int, values: dict) -> None:
        self.run.log({"step": step, **values})
        if self.accelerator.is_main_process:
            self.accelerator.log({k: v for k, v in values.items() if math.isfinite(v)}, step=step)


if __name__ == "__main__":  # torchrun -m tuner.train ...
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vrlhf.errors import run_command

    sys.exit(run_command("tuner.train", main))
