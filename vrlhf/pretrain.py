"""MLE pretraining (the paper's Algorithm 1): maximise log P(y | x) on labelled data, on Accelerate.

    vrlhf pretrain --task captioning --data data/shapes --out runs/captioner

`--data` is a directory with `train/` and `test/` image folders (as `vrlhf data shapes` writes), or any dataset
`vrlhf.data.load_rows` reads (then `--test_fraction` of it is held out, by `vrlhf.data.split_rows`). The best
checkpoint by held-out loss is kept in `--out` as a standard model directory (beside config.yaml, metrics.jsonl,
progress.json and summary.json); training stops early once the held-out loss stops falling.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from vrlhf.config import parse_config
from vrlhf.data import load_split
from vrlhf.pretrain_config import PretrainConfig  # in a light module: `vrlhf pretrain` checks flags before torch
from vrlhf.rundir import RunDir, check_out
from vrlhf.tasks import get_task
from vrlhf.training import average_gradients, resolve_mixed_precision, save_files_atomically


def split_data(cfg: PretrainConfig, task) -> tuple[list[dict], list[dict]]:
    """(train, held-out) rows: DATA/train and DATA/test, or the split every stage uses (`vrlhf.data.split_rows`)."""
    return load_split(cfg.data, cfg.test_fraction, strict=cfg.strict, check=task.row_problem,
                      image_column=cfg.image_column, caption_column=cfg.caption_column)


def build(cfg: PretrainConfig, task, train_rows: list[dict]):
    """The policy to pretrain: `--init`, or a new one for these training rows."""
    if cfg.init:
        return task.load_policy(cfg.init)
    return task.new_policy(train_rows, image_size=cfg.image_size, patch_size=cfg.patch_size,
                                 hidden_size=cfg.hidden_size, encoder_layers=cfg.layers, decoder_layers=cfg.layers,
                                 seed=cfg.seed)


def mle_loss(policy, pixels, tokens, mask) -> torch.Tensor:
    """Mean negative log-likelihood per target token (teacher forcing, the same log-probs REINFORCE uses)."""
    return -policy.token_log_probs(pixels, tokens, mask).sum() / mask.sum()


@torch.no_grad()
def evaluate(task, policy, rows: list[dict], batch_size: int = 100) -> dict[str, float]:
    """Held-out loss (every reference for captions) and greedy-decode metrics."""
    policy.eval()
    nll, count, outputs = 0.0, 0, []
    for i in range(0, len(rows), batch_size):
        batch = rows[i : i + batch_size]
        pixels = task.pixel_values(policy, [r["image"] for r in batch]).to(policy.device)
        tokens, mask, k = task.heldout_targets(policy, batch)  # (B*k, T): k targets per image
        tokens, mask = tokens.to(policy.device), mask.to(policy.device)
        nll -= policy.token_log_probs(pixels, tokens, mask, k=k).sum().item()
        count += mask.sum().item()
        outputs += task.decode(policy, batch, policy.greedy(pixels).tokens)
    return {"loss": nll / count, **task.eval_metrics(rows, outputs)}


def pretrain(cfg: PretrainConfig) -> dict:
    check_out(cfg.out, cfg.overwrite)  # before anything loads: an earlier run is replaced only on purpose
    # cpu=True on a CPU machine: without it a torchrun launch silently trains one process per rank, unsynchronised
    # mixed_precision None (no flag): Accelerate takes the launcher's (`accelerate launch --mixed_precision bf16`)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              mixed_precision=resolve_mixed_precision(cfg.mixed_precision))
    torch.manual_seed(cfg.seed + accelerator.process_index)
    rng = random.Random(cfg.seed + accelerator.process_index)
    task = get_task(cfg.task)  # the command's one resolution of its task
    train_rows, test_rows = split_data(cfg, task)
    test_rows = test_rows[: cfg.eval_images]
    policy = build(cfg, task, train_rows)
    policy.model.to(accelerator.device)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, cfg.steps // 20), cfg.steps)
    optimizer = accelerator.prepare(optimizer)  # not the scheduler: Accelerate would step it once per process

    # Inputs are small: preprocess every training image once instead of every step; they stay in host memory and
    # each step's batch goes to the device (the whole set on every GPU would cost N × C × S × S floats each).
    pixels = task.pixel_values(policy, [r["image"] for r in train_rows])  # (N, C, S, S) on the CPU
    out = Path(cfg.out)
    run = RunDir(out, enabled=accelerator.is_main_process, overwrite=cfg.overwrite)
    run.save_config(cfg)
    best, best_metrics, stale, start = math.inf, {}, 0, time.time()
    if accelerator.is_main_process:  # the starting point, so every curve shows where it began
        run.log({"step": 0, **{f"heldout_{k}": v for k, v in evaluate(task, policy, test_rows).items()}})
    bar = tqdm(range(1, cfg.steps + 1), desc=f"pretrain {cfg.task}", disable=not accelerator.is_main_process)
    for step in bar:
        policy.train()
        idx = rng.sample(range(len(train_rows)), min(cfg.batch_size, len(train_rows)))
        tokens, mask = task.reference_tokens(policy, [train_rows[i] for i in idx], rng)
        device = accelerator.device
        with accelerator.autocast():
            loss = mle_loss(policy, pixels[idx].to(device, non_blocking=True), tokens.to(device), mask.to(device))
        accelerator.backward(loss)
        average_gradients(accelerator, params)
        accelerator.clip_grad_norm_(params, 1.0)  # under fp16 Accelerate unscales first: the clip sees true norms
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)  # free the gradients now, we do not need them until next backward
        bar.set_postfix(loss=f"{loss.item():.3f}")
        run.progress(step, cfg.steps)

        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics = evaluate(task, policy, test_rows)
            record = {"step": step, "train_loss": loss.item(), "seconds": round(time.time() - start, 1),
                      **{f"heldout_{k}": v for k, v in metrics.items()}}
            run.log(record)
            if accelerator.is_main_process:
                tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            if metrics["loss"] < best - 1e-4:
                best, best_metrics, stale = metrics["loss"], record, 0
                if accelerator.is_main_process:
                    save_files_atomically(out, policy.save)
            else:
                stale += 1
                if stale >= cfg.patience:
                    tqdm.write(f"held-out loss has not improved for {stale} evaluations: converged, stopping")
                    break
    summary = {"command": "vrlhf pretrain " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "",
               "config": asdict(cfg), "best": best_metrics, "stopped_at_step": step,
               "converged": stale >= cfg.patience, "train_images": len(train_rows), "heldout_images": len(test_rows)}
    if accelerator.is_main_process:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(PretrainConfig, argv, prog="vrlhf pretrain")
    summary = pretrain(cfg)
    print(json.dumps(summary["best"], indent=2))
    print(f"best model: {cfg.out}")
    return 0


if __name__ == "__main__":
    from vrlhf.errors import run_command

    sys.exit(run_command("vrlhf pretrain", main))
