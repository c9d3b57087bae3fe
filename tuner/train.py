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
import math
import os
import sys
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from tuner.advantages import (
    BASELINES,
    KL_PLACES,
    TOKEN_CREDITS,
    clipped_token_loss,
    compute_advantages,
    kl_penalty_loss,
    reinforce_loss,
    token_advantages,
    token_reinforce_loss,
)
from tuner.checkpoint import TrainState, latest_checkpoint, save_checkpoint
from tuner.config import TuneConfig
from tuner.monitor import evaluate, output_stats, save_samples
from tuner.rewards import NORMALIZATIONS, RewardMix, build_reward, parse_reward_specs
from tuner.run_files import save_final, split_data
from vrlhf import collectives
from vrlhf.errors import ConfigError
from vrlhf.hub import is_hub_id
from vrlhf.policy import Samples, SequencePolicy
from vrlhf.rundir import RunDir, check_out, removed_on_failure
from vrlhf.training import resolve_mixed_precision


def main(argv: list[str] | None = None) -> int:
    from vrlhf.config import parse_config

    tune(parse_config(TuneConfig, argv, prog="vrlhf tune"))
    return 0


def tune(cfg: TuneConfig, task: ModuleType | None = None):
    """Run the tuning described by `cfg`; returns (tuned policy, final held-out metrics on the main process).
    `task`: the module of `cfg.task` when the caller has it (the demo), else resolved here, once.
    A tune that fails before its run holds a checkpoint or final/ leaves no new run directory behind."""
    from tuner.trl_backend import tune_with_trl, uses_trl

    task = check_config(cfg, task)
    with removed_on_failure(cfg.out, enabled=int(os.environ.get("RANK", "0")) == 0):
        if uses_trl(cfg):  # a decoder-only VLM: TRL's RLOO / GRPO with our rewards (tuner/trl_backend.py)
            return tune_with_trl(cfg, task)
        return tune_with_reinforce(cfg, task)


def tune_with_reinforce(cfg: TuneConfig, task: ModuleType | None = None):
    """Our REINFORCE loop (every family), as `tune` runs it once `cfg` is checked."""
    t = setup(cfg, task)
    accelerator, task, policy, state, out = t.accelerator, t.task, t.policy, t.state, Path(cfg.out)
    show_rows = t.eval_rows[: cfg.num_show]
    if state.step == 0:
        evaluate_and_log(cfg, task, policy, t.eval_rows, t.log, accelerator, step=0)
        if accelerator.is_main_process and show_rows:
            save_samples(task, policy, show_rows, out / "samples_before", seed=cfg.seed)

    bar = tqdm(range(state.step, cfg.steps), initial=state.step, total=cfg.steps,
               disable=not accelerator.is_main_process)
    for step in bar:
        timer, step_start = Timer(), time.perf_counter()
        logs, finite, kept = defaultdict(list), True, []
        for m, batch in micro_batches(cfg, t, step):
            # the sampling seed of micro-batch m is a function of (seed, step, m) only: resumable, rank-independent
            generator = torch.Generator(device=accelerator.device).manual_seed(cfg.seed * 1_000_003 + step * 1_009 + m)
            pixel_values = task.pixel_values(policy, [r["image"] for r in batch]).to(accelerator.device)  # (b, C, H, W)
            # 1-2. k samples per image, decoded and scored (every reward component beside the weighted total)
            scored = rollout(cfg, task, policy, t.reward, batch, pixel_values, generator,
                             partial(collectives.gather, accelerator), timer, accelerator.autocast)
            logs["reward"].append(scored.rewards.mean().item())
            for name, values in scored.components.items():
                logs[f"reward/{name}"].append(values.mean().item())
            for name, value in output_stats(task, scored.outputs, scored.samples).items():
                logs[name].append(value)
            # 3-4. KL folded into the reward, advantages, −mean(adv · log P) [+ MLE], backward
            with timer("forward_backward"):
                loss, loss_logs, ok = policy_loss(cfg, task, policy, t.reference, batch, pixel_values, scored,
                                                  generator, accelerator.autocast)
                finite &= ok
                if finite:  # never let a NaN into the gradient buffers
                    accelerator.backward(loss / cfg.grad_accum)
            for name, value in (loss_logs | {"loss": loss.item()}).items():
                logs[name].append(value)
            if cfg.num_iterations > 1:
                kept.append((batch, pixel_values, scored))

        # 5. one optimiser step for the global batch, or a skipped step on every rank if any rank saw NaN/inf
        optimizer_step(cfg, t, finite, logs, step)
        # 5b. --num_iterations: more steps on the same samples, importance ratios clipped (every rank takes part)
        for _ in range(cfg.num_iterations - 1):
            for batch, pixel_values, scored in kept:
                with timer("forward_backward"):
                    loss, loss_logs, ok = reuse_loss(cfg, task, policy, batch, pixel_values, scored,
                                                     accelerator.autocast)
                    finite &= ok
                    if finite:
                        accelerator.backward(loss / cfg.grad_accum)
                for name, value in loss_logs.items():
                    logs[name].append(value)
            optimizer_step(cfg, t, finite, logs, step)
        state.step = step + 1

        # 6. logging (means over processes), evaluation, checkpoint
        record = step_record(t, logs, timer, time.perf_counter() - step_start)
        t.log.write(state.step, record)
        t.rundir.progress(state.step, cfg.steps)
        bar.set_postfix(reward=f"{record['reward']:.3f}")
        if cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < cfg.steps:
            evaluate_and_log(cfg, task, policy, t.eval_rows, t.log, accelerator, step=state.step)
        if cfg.save_every and (state.step % cfg.save_every == 0 or state.step == cfg.steps):
            assert_finite(t.params)
            save_checkpoint(accelerator, out / "checkpoints", state.step)

    # ---- the end: held-out evaluation, the tuned policy as a standard model directory, samples after ----
    final_metrics = evaluate_and_log(cfg, task, policy, t.eval_rows, t.log, accelerator, step=state.step)
    if accelerator.is_main_process:
        assert_finite(t.params)  # nothing poisoned is saved
        if show_rows:
            save_samples(task, policy, show_rows, out / "samples_after", seed=cfg.seed)
        save_final(cfg, policy, out / "final")
        accelerator.print(f"done: {state.step} steps ({state.skipped} skipped); final policy in {out / 'final'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return policy, final_metrics


# ---- setup ---------------------------------------------------------------------------------------------------


@dataclass
class Tuning:
    """What `setup` builds once and every step uses."""

    accelerator: Accelerator
    task: ModuleType
    policy: SequencePolicy
    reference: SequencePolicy | None  # the KL anchor when it is a separate model (else: policy, adapters off)
    reward: RewardMix
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    params: list[torch.nn.Parameter]
    state: TrainState
    train_rows: list[dict]
    eval_rows: list[dict]
    rundir: RunDir
    log: MetricsLog
    micro: int  # images per micro-batch on each process


def setup(cfg: TuneConfig, task: ModuleType | None = None) -> Tuning:
    """Check everything that can be wrong before any model is loaded, then load data, rewards, the policy, its
    KL anchor and the optimiser; resume from the newest complete checkpoint when asked. `task`: as `tune`'s."""
    task = check_config(cfg, task)
    specs = parse_reward_specs(cfg.reward or list(task.DEFAULT_REWARDS))
    # mixed_precision None (no flag): Accelerate takes the launcher's (`accelerate launch --mixed_precision bf16`)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=resolve_mixed_precision(
        cfg.mixed_precision), log_with=tracker(cfg.log_with), project_dir=cfg.out)
    world = accelerator.num_processes
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by processes × grad_accum = "
                          f"{world} × {cfg.grad_accum}")
    train_rows, eval_rows = split_data(cfg, task)
    reward = build_reward(task, specs, train_rows, cfg.reward_norm, accelerator.device)  # bad metric / RM dir: here

    torch.manual_seed(cfg.seed)
    policy = task.load_policy(cfg.policy)
    if cfg.prompt:
        from vrlhf.families.vlm import set_prompt

        set_prompt(policy, cfg.prompt)
    policy.model.to(accelerator.device)
    reference = kl_anchor(cfg, task, policy)
    if cfg.lora_r:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear")
        policy.model = get_peft_model(policy.model, lora)  # without kl_reference the anchor is: adapters off
    policy.eval()  # dropout off for sampling AND re-scoring: both must be the same distribution
    params = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (cfg.warmup_steps + 1)))
    # Only the optimiser goes through prepare(): gradients are averaged by hand (optimizer_step), which works for
    # any model family and for PEFT, and the plain scheduler steps once per optimiser step on every process count.
    optimizer = accelerator.prepare(optimizer)
    state = TrainState(reward=reward)
    accelerator.register_for_checkpointing(policy.model, scheduler, state)
    out = Path(cfg.out)
    # the main process hashes the checkpoints and picks one; every rank resumes from that one (ranks never disagree)
    checkpoint = latest_checkpoint(out / "checkpoints", say=print) if cfg.resume and accelerator.is_main_process \
        else None
    checkpoint = collectives.broadcast_object(accelerator, checkpoint) if cfg.resume else None
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        accelerator.print(f"resumed from {checkpoint} at step {state.step}")
    elif cfg.resume:
        accelerator.print(f"no checkpoint under {out / 'checkpoints'}; starting from step 0")

    rundir = RunDir(out, resume_step=state.step, enabled=accelerator.is_main_process,  # the log up to state.step
                    overwrite=cfg.overwrite, resume=cfg.resume)
    rundir.save_config(cfg)
    if accelerator.is_main_process:
        accelerator.init_trackers("vrlhf-tune", config={k: str(v) for k, v in vars(cfg).items()})
    if cfg.temperature != 1.0:
        accelerator.print(f"warning: temperature {cfg.temperature}: the gradient is then that of a different policy")
    return Tuning(accelerator, task, policy, reference, reward, optimizer, scheduler, params, state, train_rows,
                  eval_rows, rundir, MetricsLog(rundir, accelerator), cfg.batch_size // (world * cfg.grad_accum))


def kl_anchor(cfg: TuneConfig, task, policy) -> SequencePolicy | None:
    """The frozen policy the KL penalty anchors to, when it is a separate model: `kl_reference`, or a copy of the
    starting policy. None when there is no penalty, or with LoRA (the anchor is then the policy, adapters off)."""
    if not cfg.kl_coef:
        return None
    if cfg.kl_reference:
        reference = task.load_policy(cfg.kl_reference)
        check_same_vocabulary(policy, reference, cfg.kl_reference)
        reference.model.to(policy.device)
    elif cfg.lora_r:
        return None
    else:
        reference = copy.deepcopy(policy)
    reference.model.requires_grad_(False)
    return reference.eval()


def check_same_vocabulary(policy, reference, where: str) -> None:
    """A KL between two policies only means something over the same tokens."""
    def tokens(p):
        vocabulary = p.tokenizer.get_vocab() if p.tokenizer is not None else None
        vocab_size = p.model.get_output_embeddings().weight.shape[0]
        return p.start_token_id, p.eos_token_id, p.pad_token_id, vocab_size, vocabulary

    if tokens(policy) != tokens(reference):
        raise ConfigError(f"--kl_reference {where}: its tokens differ from the policy's (another vocabulary)")


def micro_batches(cfg: TuneConfig, t: Tuning, step: int):
    """(global micro-batch index m, rows) of this process at `step`: rank r owns micro-batches r·A to r·A + A − 1
    (A = grad_accum)."""
    indices = batch_indices(len(t.train_rows), cfg.batch_size, step, cfg.seed)  # (batch_size,), same on every rank
    for a in range(cfg.grad_accum):
        m = t.accelerator.process_index * cfg.grad_accum + a
        yield m, [t.train_rows[i] for i in indices[m * t.micro : (m + 1) * t.micro]]


# ---- one step: rollout and score, loss, optimiser step -------------------------------------------------------


@dataclass
class Rollout:
    """k samples per image, decoded and scored."""

    samples: Samples  # tokens (b·k, T), mask, log_probs (b·k,): image-major
    outputs: list  # b·k decoded outputs, image-major
    rewards: torch.Tensor  # (b, k) the weighted total of the normalised components
    greedy_rewards: torch.Tensor | None  # (b,) the greedy decode's total (the SCST baseline), else None
    components: dict[str, torch.Tensor]  # raw value of each component for the samples: name -> (b·k,)
    # (b·k, T) the share of `rewards` that dense components earned, per token (--token_credit own | to_go), else None
    token_rewards: torch.Tensor | None = None
    reuse: Reuse | None = None  # what later passes over these samples need (--num_iterations > 1), set by policy_loss


@dataclass
class Reuse:
    """The first pass's view of a rollout, kept for the later passes over it (PPO-style clipped ratios)."""

    tokens: torch.Tensor  # (n, T) the trained samples (all b·k, or one per image with --train_on one)
    mask: torch.Tensor  # (n, T)
    k: int  # samples per image among them
    advantages: torch.Tensor  # (n, T) each token's advantage
    old_log_probs: torch.Tensor  # (n, T) log P of each token under the policy that sampled it
    ref_log_probs: torch.Tensor | None = None  # (n, T) under the anchor, with --kl_in loss


def rollout(cfg: TuneConfig, task, policy, reward, batch: list[dict], pixel_values: torch.Tensor,
            generator: torch.Generator | None = None, gather=lambda x: x, timer=None, autocast=nullcontext) -> Rollout:
    """Sample k outputs per image from the full distribution at `cfg.temperature` and score them with `reward`
    (a RewardMix). With the greedy baseline the greedy decode of each image is scored in the same call, as a
    (k+1)-th output (so batch normalisation sees it), and split off again."""
    timer = timer or Timer()
    b, k, max_new_tokens = len(batch), cfg.k, cfg.max_new_tokens or None
    with timer("sample"), torch.no_grad(), autocast():
        samples = policy.sample(pixel_values, k, cfg.temperature, max_new_tokens, generator=generator)
        greedy = policy.greedy(pixel_values, max_new_tokens) if cfg.baseline == "greedy" else None
    with timer("reward"):
        outputs = task.decode(policy, batch, samples.tokens, k)  # b·k, image-major
        if dense_credit(cfg, task, reward):  # each token's share of the dense components (token_credit own | to_go)
            spread = partial(task.token_rewards, policy, samples.tokens.cpu(), outputs)
            total, token_rewards, components = reward.dense(batch, outputs, spread, gather=gather)
            return Rollout(samples, outputs, total.view(b, k).to(pixel_values.device), None, components,
                           token_rewards.to(pixel_values.device))
        if greedy is None:
            total, components = reward(batch, outputs, gather=gather)
            return Rollout(samples, outputs, total.view(b, k).to(pixel_values.device), None, components)
        extra = task.decode(policy, batch, greedy.tokens, 1)
        with_greedy = [o for i in range(b) for o in outputs[i * k : (i + 1) * k] + [extra[i]]]  # b·(k+1)
        total, components = reward(batch, with_greedy, gather=gather)
        total = total.view(b, k + 1).to(pixel_values.device)
        components = {name: v.view(b, k + 1)[:, :k].reshape(-1) for name, v in components.items()}
        return Rollout(samples, outputs, total[:, :k], total[:, k], components)


def token_credit(cfg: TuneConfig, task) -> str:
    """--token_credit with `auto` resolved: the task's TOKEN_CREDIT under the loo baseline, else sequence."""
    if cfg.token_credit != "auto":
        return cfg.token_credit
    return getattr(task, "TOKEN_CREDIT", "sequence") if cfg.baseline == "loo" else "sequence"


def dense_credit(cfg: TuneConfig, task, reward) -> bool:
    """Whether tokens get their own credit: own | to_go credit and a reward component with a dense form."""
    return (token_credit(cfg, task) != "sequence" and bool(getattr(reward, "regions", None))
            and hasattr(task, "token_rewards"))


def policy_loss(cfg: TuneConfig, task, policy, reference, batch: list[dict], pixel_values: torch.Tensor,
                scored: Rollout, generator: torch.Generator | None = None, autocast=nullcontext
                ) -> tuple[torch.Tensor, dict[str, float], bool]:
    """The REINFORCE loss of one micro-batch -> (loss, logged values, whether rewards and loss are finite).

    KL to the anchor is folded into the reward (as in RLOO: r − β (log π − log π_ref), on the sampled sequences;
    `--kl_in loss`: a loss term of its own instead, β · `kl_penalty_loss`, as in TRL's GRPO),
    advantages come from `cfg.baseline`, and loss = −mean(adv · log P(sample)) with log P recomputed by teacher
    forcing (differentiable), plus `mle_coef` × the MLE loss on a reference output of each row.

    With per-token rewards (`scored.token_rewards`: a dense reward under --token_credit own | to_go) each token
    pays its own KL term instead (as TRL does), each token gets its own advantage (`token_advantages`: own region
    or reward-to-go, leave-one-out per position; the reward's part without a dense form per sequence), and
    loss = −Σ_t adv_t · log P(token t), averaged over samples."""
    b, k = scored.rewards.shape
    samples, rewards, logs = scored.samples, scored.rewards, {}
    dense = scored.token_rewards is not None
    token_rewards = scored.token_rewards
    if cfg.kl_coef:
        anchor = reference or policy
        with torch.no_grad(), autocast():
            # the policy's log P by teacher forcing, the anchor's own path: the sampler's (KV-cached, rounded in
            # bf16 token by token) differ from it, which reads as a KL at step 0 against an identical anchor
            log_probs_now = policy.token_log_probs(pixel_values, samples.tokens, samples.mask, k, cfg.temperature)
            with reference_mode(anchor):
                ref_log_probs = anchor.token_log_probs(pixel_values, samples.tokens, samples.mask, k, cfg.temperature)
        token_kl = log_probs_now - ref_log_probs  # (b·k, T), 0 off the mask
        kl = token_kl.sum(dim=1).view(b, k)  # (b, k)
        if cfg.kl_in == "reward":  # RLOO's way (`loss`: a term of its own, added to the loss below)
            if dense:  # each token pays for its own departure from the anchor
                token_rewards = token_rewards - cfg.kl_coef * token_kl
            else:
                rewards = rewards - cfg.kl_coef * kl
        logs["kl"] = kl.mean().item()
    kl_loss_on = bool(cfg.kl_coef) and cfg.kl_in == "loss"
    finite = bool(torch.isfinite(rewards).all())

    tokens, mask, kk = samples.tokens, samples.mask, k
    if dense:
        shape = (b, k, tokens.shape[1])
        rest = scored.rewards - scored.token_rewards.sum(dim=1).view(b, k)  # the components with no dense form
        advantages = token_advantages(token_rewards.view(shape), mask.view(shape), token_credit(cfg, task), rest)
        advantages = advantages.view(b * k, -1)  # (b·k, T)
        finite &= bool(torch.isfinite(token_rewards).all())
    else:
        advantages = compute_advantages(rewards, cfg.baseline, scored.greedy_rewards)  # (b, k)
    if cfg.train_on == "one":  # one random sample per image, as in the paper's released code
        device = pixel_values.device
        pick = torch.arange(b, device=device) * k + torch.randint(k, (b,), generator=generator, device=device)
        tokens, mask, kk = tokens[pick], mask[pick], 1
        advantages = advantages[pick] if dense else advantages.reshape(-1)[pick]
        ref_log_probs = ref_log_probs[pick] if kl_loss_on else None
    logs["adv_abs"] = (advantages[mask] if dense else advantages).abs().mean().item()

    with autocast():
        token_log_probs = policy.token_log_probs(pixel_values, tokens, mask, kk, cfg.temperature)  # (b·kk, T)
        if dense:
            loss = token_reinforce_loss(token_log_probs, advantages, mask)
        else:
            loss = reinforce_loss(token_log_probs.sum(dim=1), advantages.reshape(-1))
        if kl_loss_on:
            loss = loss + cfg.kl_coef * kl_penalty_loss(token_log_probs, ref_log_probs, mask)
        loss = loss + mle_term(cfg, task, policy, batch, pixel_values, logs)
    if cfg.num_iterations > 1:  # the later passes reuse these advantages and the sampling policy's log-probs
        per_token = advantages if dense else advantages.reshape(-1, 1) * mask
        scored.reuse = Reuse(tokens, mask, kk, per_token.detach(), token_log_probs.detach(),
                             ref_log_probs if kl_loss_on else None)
    return loss, logs, finite and bool(torch.isfinite(loss))


def reuse_loss(cfg: TuneConfig, task, policy, batch: list[dict], pixel_values: torch.Tensor, scored: Rollout,
               autocast=nullcontext) -> tuple[torch.Tensor, dict[str, float], bool]:
    """A later pass over a rollout the policy has already stepped on (--num_iterations): PPO's clipped surrogate,
    as TRL's GRPO, with the first pass's advantages and the sampling policy's log-probs -> (loss, logs, finite)."""
    reuse, logs = scored.reuse, {}
    with autocast():
        token_log_probs = policy.token_log_probs(pixel_values, reuse.tokens, reuse.mask, reuse.k, cfg.temperature)
        loss = clipped_token_loss(token_log_probs, reuse.old_log_probs, reuse.advantages, reuse.mask, cfg.epsilon)
        if reuse.ref_log_probs is not None:  # --kl_in loss: the anchor pulls in every pass
            loss = loss + cfg.kl_coef * kl_penalty_loss(token_log_probs, reuse.ref_log_probs, reuse.mask)
        loss = loss + mle_term(cfg, task, policy, batch, pixel_values, logs)
    ratio = (token_log_probs.detach() - reuse.old_log_probs)[reuse.mask].exp()
    logs["clip_frac"] = ((ratio - 1).abs() > cfg.epsilon).float().mean().item()
    return loss, logs, bool(torch.isfinite(loss))


def mle_term(cfg: TuneConfig, task, policy, batch: list[dict], pixel_values: torch.Tensor, logs: dict):
    """`mle_coef` × the MLE loss on a reference output of each row (logged as `mle`); 0 when off. MLE on the
    references keeps the policy near fluent outputs."""
    if not cfg.mle_coef:
        return 0.0
    ref_tokens, ref_mask = task.reference_tokens(policy, batch)
    ref_tokens, ref_mask = ref_tokens.to(pixel_values.device), ref_mask.to(pixel_values.device)
    mle = -policy.log_prob(pixel_values, ref_tokens, ref_mask).sum() / ref_mask.sum()
    logs["mle"] = mle.item()
    return cfg.mle_coef * mle


def optimizer_step(cfg: TuneConfig, t: Tuning, finite: bool, logs: dict, step: int) -> None:
    """Average gradients over processes, clip, step; or skip the step on every rank if any rank saw NaN/inf."""
    from vrlhf.training import average_gradients

    accelerator = t.accelerator
    skip = collectives.reduce(accelerator, torch.tensor(float(not finite), device=accelerator.device), "sum")
    if skip.item() == 0:
        average_gradients(accelerator, t.params)
        if cfg.max_grad_norm:  # Accelerate's: under fp16 it unscales first, so the clip and the logged norm are true
            logs["grad_norm"].append(float(accelerator.clip_grad_norm_(t.params, cfg.max_grad_norm)))
        t.optimizer.step()
        t.scheduler.step()
    else:
        t.state.skipped += 1
        if accelerator.is_main_process:
            tqdm.write(f"warning: step {step}: non-finite reward or loss, step skipped ({t.state.skipped} so far)")
    t.optimizer.zero_grad(set_to_none=True)  # free the gradients now: nothing needs them until the next backward


def step_record(t: Tuning, logs: dict, timer: Timer, step_time: float) -> dict:
    """The step's metrics.jsonl line: each logged value's mean over micro-batches and processes, and timings."""
    record = {name: sum(v) / len(v) for name, v in logs.items()}
    means = collectives.reduce(t.accelerator, torch.tensor(list(record.values()), device=t.accelerator.device))
    record = dict(zip(record, means.tolist()))
    record.update({f"time/{name}": seconds for name, seconds in timer.totals.items()})
    record["time/other"] = step_time - sum(timer.totals.values())
    record.update({"time/step": step_time, "lr": t.scheduler.get_last_lr()[0], "skipped": t.state.skipped})
    return record


# ---- helpers -------------------------------------------------------------------------------------------------


def check_config(cfg: TuneConfig, task: ModuleType | None = None) -> ModuleType:
    """Fail fast, with a message naming the field, before any data or model is loaded; returns the task module
    (`task`, or `cfg.task` resolved: the command's one resolution)."""
    from vrlhf.tasks import get_task

    problems = []
    try:
        task = task if task is not None else get_task(cfg.task)
    except ConfigError as error:
        problems.append(str(error))
    for name in ("policy", "data") + tuple(name for name in ("eval_data", "kl_reference") if getattr(cfg, name)):
        path = getattr(cfg, name)
        if not path or not (Path(path).exists() or is_hub_id(path)):  # a hub id is checked when it is loaded
            problems.append(f"--{name} {path!r} does not exist")
    if cfg.baseline not in BASELINES:
        problems.append(f"baseline {cfg.baseline!r} is not one of {', '.join(BASELINES)}")
    if cfg.baseline in ("loo", "group_norm") and cfg.k < 2:
        problems.append(f"baseline {cfg.baseline} needs k >= 2 samples per image")
    if cfg.train_on not in ("all", "one"):
        problems.append(f"train_on {cfg.train_on!r} is not all or one")
    if cfg.token_credit not in TOKEN_CREDITS + ("auto",):
        problems.append(f"token_credit {cfg.token_credit!r} is not one of {', '.join(TOKEN_CREDITS)}, auto")
    elif cfg.token_credit in ("own", "to_go") and cfg.baseline != "loo":
        problems.append(f"token_credit {cfg.token_credit} needs baseline loo (a leave-one-out baseline per position)")
    if cfg.kl_in not in KL_PLACES:
        problems.append(f"kl_in {cfg.kl_in!r} is not one of {', '.join(KL_PLACES)}")
    if cfg.num_iterations < 1 or not 0 < cfg.epsilon < 1:
        problems.append("num_iterations must be >= 1 and epsilon in (0, 1)")
    if cfg.reward_norm not in NORMALIZATIONS:
        problems.append(f"reward_norm {cfg.reward_norm!r} is not one of {', '.join(NORMALIZATIONS)}")
    if cfg.temperature <= 0 or cfg.k < 1 or cfg.steps < 0 or cfg.grad_accum < 1:
        problems.append("temperature must be > 0, k >= 1, steps >= 0, grad_accum >= 1")
    try:
        check_out(cfg.out, cfg.overwrite, cfg.resume)  # an earlier run in --out: replaced only on purpose
    except ConfigError as error:
        problems.append(str(error))
    if cfg.kl_reference and not cfg.kl_coef:
        print(f"note: --kl_reference {cfg.kl_reference} has no effect without --kl_coef", file=sys.stderr)
    if problems:
        raise ConfigError("; ".join(problems))
    return task


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


def assert_finite(params) -> None:
    if not all(torch.isfinite(p).all() for p in params):
        raise RuntimeError("non-finite parameters: refusing to save a poisoned model")


def tracker(name: str):
    if name == "auto":
        installed = importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
        return "tensorboard" if installed else None
    return None if name in ("", "none") else name


class Timer:
    """Accumulates wall-clock seconds per named phase of a step. On a GPU each phase ends with a synchronize: CUDA
    runs asynchronously, and without it a phase's kernels would be billed to whichever later phase waits for them."""

    def __init__(self):
        self.totals = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
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
    from vrlhf.errors import run_command

    sys.exit(run_command("tuner.train", main))
