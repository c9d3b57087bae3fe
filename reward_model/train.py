"""`vrlhf train-reward`: Bradley–Terry training of a reward model on a preference export, on Accelerate.

    vrlhf train-reward --task captioning --data EXPORT --out DIR [--lora_r 8] [--mixed_precision bf16]

Holds out whole input images (`--eval_fraction`), evaluates every `--eval_every` steps (pairwise accuracy,
mean margin, ECE of σ(Δr)), keeps the best checkpoint in DIR (reward_config.json + model.safetensors +
tokenizer) and logs every evaluation to DIR/metrics.jsonl. Multi-process runs (`accelerate launch` or
`torchrun`) shard the batches; only the main process writes.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from types import ModuleType

import torch

from reward_model.config import RewardModelConfig, TrainRewardConfig  # flags checked (vrlhf.cli) before torch loads
from reward_model.data import PairDataset, collate_pairs, column, load_export, split_by_item, validate
from reward_model.losses import bradley_terry_loss, marks_loss
from reward_model.metrics import pair_metrics
from reward_model.models import build_reward_model
from vrlhf import collectives
from vrlhf.errors import ConfigError, DataError
from vrlhf.training import resolve_mixed_precision


def resolve_image_encoder(value: str, task: ModuleType) -> tuple[str, str | None]:
    """('default' | '' | DIR, task) -> (the directory to use or '', a note when the default is missing).

    'default' is the task's `REWARD_IMAGE_ENCODER` (captioning: the demo captioner's ViT; '': the tiny encoder)."""
    if value != "default":
        return value, None
    path = task.REWARD_IMAGE_ENCODER
    if not path:
        return "", None
    if not Path(path).is_dir():
        return "", f"the default image encoder {path} is missing (not a source checkout?): using the tiny encoder"
    return str(path), None


PER_OUTPUT = ("captions", "pixel_values", "boxes")  # the model inputs with one entry per output (text, image, box set)


def resolve_reads(value: str, task: ModuleType) -> str:
    """--reads with `auto` resolved: the task's `REWARD_READS` where it has one, else what people see (render)."""
    return getattr(task, "REWARD_READS", "render") if value == "auto" else value


def evaluate_pairs(model, loader, accelerator=None, cfg=None) -> dict[str, float]:
    """Pair metrics (+ mean BT loss) of `model` over a loader of collated pairs, gathered across processes."""
    deltas, labels = [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            label = batch.pop("label")
            r = model(**batch).float()
            delta = r[0::2] - r[1::2]
            if accelerator is not None:
                delta, label = collectives.gather_for_metrics(accelerator, (delta, label))
            deltas.append(delta.cpu())
            labels.append(label.cpu())
    model.train()
    delta, label = torch.cat(deltas), torch.cat(labels)
    out = pair_metrics(delta, label)
    out["loss"] = float(bradley_terry_loss(delta, torch.zeros_like(delta), label))
    return out


def with_other_captions(captions: list[str]) -> list[str]:
    """[c0, r0, c1, r1, ...] → per image [c_i, r_i, c_0, c_1, ...]: one forward pass scores the pairs and every
    image against every chosen caption of the batch (a caption of another image is almost surely worse: an
    in-batch contrastive signal that teaches the image encoder the attributes captions talk about)."""
    chosen = captions[0::2]
    return [c for i in range(len(chosen)) for c in (captions[2 * i], captions[2 * i + 1], *chosen)]


def _better(new: dict, best: dict | None) -> bool:
    key = lambda m: (m.get("accuracy", 0.0), -m["loss"])  # noqa: E731
    return best is None or key(new) > key(best)


def resolve_augment(value: str, task: ModuleType) -> bool:
    """Whether pairs are augmented with flips and quarter turns (`augment`: auto | flips | none); auto: flips for
    tasks whose preferences survive them (`FLIPS_KEEP_PREFERENCES`: colorization, not captioning)."""
    if value not in ("auto", "flips", "none"):
        raise ConfigError(f"--augment must be auto, flips or none, got {value!r}")
    keeps = task.FLIPS_KEEP_PREFERENCES
    if value == "flips" and not keeps:
        raise ConfigError(f"--augment flips changes {task.NAME} preferences: flipping an image swaps its left and "
                          "right")
    return keeps and value in ("auto", "flips")


def train_reward(cfg: TrainRewardConfig, task: ModuleType | None = None) -> dict:
    """Train, keep the best checkpoint in `cfg.out`; returns the best evaluation plus throughput. `task`: the pairs'
    task module when the caller has it (the demo); else `--task` or the export's own, resolved from the export."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from vrlhf.rundir import RunDir, check_out

    if not cfg.data or not cfg.out:
        raise ConfigError("train-reward needs --data EXPORT and --out DIR")
    check_out(cfg.out, cfg.overwrite)  # before anything loads: an earlier run is replaced only on purpose
    # cpu=True on a CPU machine: without it a torchrun launch silently trains one process per rank, unsynchronised
    # mixed_precision None (no flag): Accelerate takes the launcher's (`accelerate launch --mixed_precision bf16`)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              mixed_precision=resolve_mixed_precision(cfg.mixed_precision))
    set_seed(cfg.seed)
    ds = load_export(cfg.data)
    task, keep, notes = validate(ds, cfg.data, task or cfg.task)
    train_idx, eval_idx = split_by_item(ds, keep, cfg.eval_fraction, cfg.seed)
    if not train_idx:
        raise DataError(f"export {cfg.data}: no training pairs left after holding out {cfg.eval_fraction}")
    labels = column(ds, "label")
    if eval_idx and all(float(labels[i]) == 0.5 for i in eval_idx):  # no accuracy to pick a best model by
        raise DataError(f"export {cfg.data}: the {len(eval_idx)} held-out pairs (--eval_fraction {cfg.eval_fraction}, "
                        f"--seed {cfg.seed}) are all ties, so nothing measures which model is best: choose another "
                        "--seed or --eval_fraction (0: keep the last model)")
    cfg.task = task.NAME
    augment = resolve_augment(cfg.augment, task)  # a bad value fails before any work
    cfg.image_encoder, missing = resolve_image_encoder(cfg.image_encoder, task)
    cfg.reads = resolve_reads(cfg.reads, task)
    notes = [*notes, missing] if missing else notes
    log = accelerator.print
    for note in notes:
        log(f"note: {note}")
    log(f"{task.NAME}: {len(train_idx)} training pairs, {len(eval_idx)} held out")

    text_outputs = task.SHOWN == "text"  # the in-batch contrastive term compares captions
    model = build_reward_model(task, RewardModelConfig.of(cfg))
    collate = partial(collate_pairs, model)  # model.inputs only preprocesses: safe to bind before wrapping
    transplanted = not text_outputs and cfg.contrastive_coef > 0  # image outputs: a carried-over negative per pair
    train_collate = partial(collate_pairs, model, transplant=task.transplant) if transplanted else collate
    gen = torch.Generator().manual_seed(cfg.seed)
    collate([PairDataset(ds, train_idx[:1], task)[0]])  # outputs the model cannot read fail here, in one line
    boxes = cfg.reads == "boxes"  # the box-set model is dense by construction: marks train its boxes' values
    train_set = PairDataset(ds, train_idx, task, augment=augment, seed=cfg.seed,
                            marks=(cfg.dense or boxes) and cfg.marks_coef > 0, mark_grid=cfg.map_grid, mark_boxes=boxes)
    # Workers are forked afresh each epoch (not persistent), so each sees the dataset's `epoch` (augment) of its pass;
    # the batches and their order are the main thread's. collate only preprocesses on the CPU: no CUDA in a worker.
    workers = cfg.num_workers if cfg.num_workers >= 0 else 4 if accelerator.device.type == "cuda" else 0
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                               collate_fn=train_collate, generator=gen, num_workers=workers)
    eval_loader = torch.utils.data.DataLoader(PairDataset(ds, eval_idx, task), batch_size=2 * cfg.batch_size,
                                              collate_fn=collate, num_workers=workers)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    warmup = max(1, int(cfg.warmup_ratio * total))
    schedule = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    # The scheduler stays unprepared: Accelerate's wrapper steps it once per process per step, which would run
    # the schedule num_processes times too fast; ours counts optimiser steps on any number of processes.
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)

    out = Path(cfg.out)
    run = RunDir(out, enabled=accelerator.is_main_process, overwrite=cfg.overwrite)
    run.save_config(cfg)
    best, step, seen, train_time, losses = None, 0, 0, 0.0, []
    bar = tqdm(total=total, disable=not (cfg.progress and accelerator.is_local_main_process), desc="reward")
    model.train()
    while step < total:
        train_set.epoch = step // steps_per_epoch  # the orientations of this pass (augment)
        for batch in train_loader:
            start, pairs = time.perf_counter(), len(batch["label"])
            losses.append(train_step(model, batch, cfg, text_outputs, optimizer, scheduler, accelerator.backward,
                                     accelerator.autocast))
            train_time += time.perf_counter() - start
            seen += pairs * accelerator.num_processes
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            run.progress(step, total)
            if step % cfg.eval_every == 0 or step == total:
                record, best = evaluate_and_checkpoint(model, eval_loader if eval_idx else None, accelerator, out,
                                                       step, losses, best)
                run.log(record)
                losses = []
                bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record.get('eval_accuracy', 0):.3f}")
            if step >= total:
                break
    bar.close()
    summary = {"task": task.NAME, "train_pairs": len(train_idx), "eval_pairs": len(eval_idx),
               "pairs_per_sec": seen / max(train_time, 1e-9), "best": best}
    run.log({"summary": summary})
    return summary


def pair_loss(model, batch: dict, cfg: TrainRewardConfig, text_outputs: bool, autocast=nullcontext) -> torch.Tensor:
    """The Bradley–Terry loss of a batch of collated pairs (its `label` popped), plus the in-batch contrastive term:
    text outputs, each image's chosen caption must outscore the other images' chosen captions; image outputs (collated
    with a transplanted third output per pair), each chosen output must outscore the one carried over from another."""
    label = batch.pop("label")
    marks = batch.pop("marks", None)  # [outputs, regions] where annotators marked, with a dense model
    n_outputs = len(next(batch[key] for key in PER_OUTPUT if key in batch))
    contrast = cfg.contrastive_coef if len(label) > 1 and (text_outputs or n_outputs == 3 * len(label)) else 0.0
    if contrast and text_outputs:
        batch["captions"] = with_other_captions(batch["captions"])
    with autocast():
        r, regions, valid = model(**batch, dense=True) if marks is not None else (model(**batch), None, None)
        r = r.float()
    if marks is not None:  # the marked outputs are each pair's chosen and rejected (not the in-batch extras)
        two = lambda x: x.view(len(label), -1, x.shape[-1])[:, :2].flatten(0, 1) if x is not None else None  # noqa: E731
        marked = marks_loss(two(regions), two(marks), two(valid))
    if contrast:
        r = r.view(len(label), -1)  # per image: chosen, rejected, then the outputs made for other images
        if text_outputs:  # one chosen caption per image of the batch: which one is this image's?
            others = torch.nn.functional.cross_entropy(r[:, 2:], torch.arange(len(label), device=r.device))
        else:  # chosen ≻ transplanted, as a Bradley–Terry preference
            others = bradley_terry_loss(r[:, 0], r[:, 2])
        r = r[:, :2].reshape(-1)
    loss = bradley_terry_loss(r[0::2], r[1::2], label, cfg.margin, cfg.center_rewards_coefficient)
    if marks is not None:
        loss = loss + cfg.marks_coef * marked
    return loss + contrast * others if contrast else loss


def train_step(model, batch: dict, cfg: TrainRewardConfig, text_outputs: bool, optimizer, scheduler,
               backward=torch.Tensor.backward, autocast=nullcontext) -> float:
    """One optimiser step on a batch of collated pairs; returns its loss. `backward` is the Accelerator's with
    several processes (it all-reduces the gradients of the prepared model)."""
    loss = pair_loss(model, batch, cfg, text_outputs, autocast)
    backward(loss)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return loss.item()


def evaluate_and_checkpoint(model, eval_loader, accelerator, out: Path, step: int, train_losses: list[float],
                            best: dict | None) -> tuple[dict, dict | None]:
    """Evaluate on the held-out pairs and save the model into `out` when it beats `best` (without held-out pairs:
    always, the latest is the best we know). Returns (the metrics.jsonl record, the best evaluation so far)."""
    metrics = evaluate_pairs(model, eval_loader, accelerator) if eval_loader is not None else {"loss": float("nan")}
    record = {"step": step, "train_loss": sum(train_losses) / max(1, len(train_losses)),
              **{f"eval_{k}": v for k, v in metrics.items()}}
    if eval_loader is None or _better(metrics, best):
        best = {"step": step, **metrics}
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            accelerator.unwrap_model(model).save_pretrained(out)
    return record, best


def main(argv: list[str] | None = None) -> int:
    from vrlhf.config import parse_config

    cfg = parse_config(TrainRewardConfig, argv, prog="vrlhf train-reward")
    summary = train_reward(cfg)
    best = summary["best"] or {}
    if "accuracy" in best:
        print(f"best step {best['step']}: accuracy {best['accuracy']:.3f}, margin {best['margin']:.3f}, "
              f"ECE {best['ece']:.3f}; {summary['pairs_per_sec']:.0f} pairs/s; saved to {cfg.out}")
    else:  # nothing held out: the last step's model, with no held-out number to show
        print(f"no held-out pairs (--eval_fraction {cfg.eval_fraction}): saved the model of step {best.get('step')} "
              f"to {cfg.out}; {summary['pairs_per_sec']:.0f} pairs/s")
    return 0
