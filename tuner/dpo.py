"""`vrlhf dpo`: a vision-language model trained directly on people's clicks with TRL's DPOTrainer (no reward model).

    vrlhf export --db work/labels.db --out work/export --task captioning
    vrlhf dpo --policy runs/smolvlm --data work/export --out runs/dpo [--eval_data work/shapes/test]

`--data` is a caption export of `vrlhf export` (any format; ties, which have no chosen side, are left out; `--format
trl` writes TRL's format directly), or a preference dataset already in TRL's vision format (a saved dataset or a hub
id: `images`, conversational `prompt`, `chosen`, `rejected`). Exports are converted by
`vrlhf.exports.to_trl_preferences`, asking each image the policy's own prompt (the question it was sampled with).
The run directory is the tuner's: config.yaml, metrics.jsonl (TRL's DPO logs: loss, rewards/margins,
rewards/accuracies, ...; `eval/...` lines before and after when --eval_data is given), progress.json, final/ (a
policy directory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vrlhf.config import parse_config
from vrlhf.errors import ConfigError, DataError
from vrlhf.run_config import PolicyRunConfig, override
from vrlhf.tasks import DEFAULT_TASK


@dataclass
class DPOTuneConfig(PolicyRunConfig):
    """`vrlhf dpo`'s flags: the shared ones (vrlhf.run_config), with DPO's own defaults and meanings, and DPO's β."""

    task: str = override(PolicyRunConfig, "task", DEFAULT_TASK, help="the export's task (text outputs)")
    policy: str = override(PolicyRunConfig, "policy", "", help="the VLM to train: a model directory or a hub id "
                                                               "(LLaVA, Idefics3/SmolVLM; needs a chat template)")
    data: str = override(PolicyRunConfig, "data", "", help="caption preference pairs: an export of `vrlhf export`, "
                                                           "or a TRL vision preference dataset (saved, or a hub id)")
    out: str = override(PolicyRunConfig, "out", "runs/dpo")
    steps: int = override(PolicyRunConfig, "steps", 100)
    batch_size: int = override(PolicyRunConfig, "batch_size", 8,
                               help="preference pairs per optimiser step, over all processes and accumulation steps")
    lr: float = override(PolicyRunConfig, "lr", 5e-6)
    eval_data: str = override(PolicyRunConfig, "eval_data", "", help="held-out rows with references: greedy "
                                                                     "metrics before and after (empty: none)")
    save_every: int = override(PolicyRunConfig, "save_every", 0)
    log_with: str = override(PolicyRunConfig, "log_with", "none", help="TRL report_to: none | tensorboard | wandb")
    beta: float = field(default=0.1, metadata={"help": "DPO's β: how far the policy may move from the reference"})
    loss_type: str = field(default="sigmoid", metadata={"help": "TRL DPO loss: sigmoid (DPO) | ipo | hinge | ..."})


def main(argv: list[str] | None = None) -> int:
    dpo(parse_config(DPOTuneConfig, argv, prog="vrlhf dpo"))
    return 0


def dpo(cfg: DPOTuneConfig):
    """Train `cfg.policy` with DPO on `cfg.data`; returns (policy, final held-out metrics or {})."""
    from tuner.monitor import evaluate
    from tuner.trl_backend import TRL_FAMILIES, log_eval
    from vrlhf.data import load_rows
    from vrlhf.families import model_type, vlm
    from vrlhf.rundir import RunDir
    from vrlhf.tasks import get_task

    check_config(cfg)
    family = model_type(cfg.policy)  # from its config alone: refused before any weights are loaded
    if family not in TRL_FAMILIES:  # PaliGemma too: TRL's DPOTrainer does not run it (tuner/trl_backend.py)
        raise ConfigError(f"--policy {cfg.policy}: DPO through TRL runs {' or '.join(TRL_FAMILIES)} models, not "
                          f"{family}; tune it on the clicks with a reward model instead (vrlhf train-reward, "
                          f"then vrlhf tune --reward learned:DIR=1)")
    task = get_task(cfg.task)
    eval_rows = []
    if cfg.eval_data:
        eval_rows = load_rows(cfg.eval_data, check=task.row_problem, image_column=cfg.image_column,
                              caption_column=cfg.caption_column)[: cfg.eval_size]
    policy = task.load_policy(cfg.policy)
    if not getattr(policy.processor, "chat_template", None):
        raise ConfigError(f"--policy {cfg.policy}: DPO through TRL needs a chat template (this {policy.family} "
                          f"model has none)")
    if cfg.prompt:
        vlm.set_prompt(policy, cfg.prompt)
    pairs = preference_pairs(cfg.data, task, policy.meta["prompt"])

    out = Path(cfg.out)
    main_process = int(os.environ.get("RANK", "0")) == 0
    rundir = RunDir(out, enabled=main_process, overwrite=cfg.overwrite)
    rundir.save_config(cfg)
    max_new_tokens = policy.max_new_tokens
    trainer = build_trainer(cfg, policy, pairs, out)
    if main_process:  # once the Trainer has put the model on its device (on the CPU this would take minutes)
        log_eval(rundir, evaluate, task, policy, eval_rows, max_new_tokens, step=0)
    trainer.accelerator.wait_for_everyone()
    trainer.add_callback(_log_callback(rundir, cfg.steps))
    trainer.train()
    policy.model = trainer.model
    if not main_process:
        return policy, {}
    final = log_eval(rundir, evaluate, task, policy, eval_rows, max_new_tokens, step=trainer.state.global_step)
    from tuner.run_files import save_final

    save_final(cfg, policy, out / "final")
    print(f"done: {trainer.state.global_step} DPO steps on {len(pairs)} pairs; final policy in {out / 'final'}")
    return policy, final


def check_config(cfg: DPOTuneConfig) -> None:
    from vrlhf.hub import is_hub_id
    from vrlhf.rundir import check_out

    problems = []
    for name in ("policy", "data") + (("eval_data",) if cfg.eval_data else ()):
        value = getattr(cfg, name)
        if not value or not (Path(value).exists() or is_hub_id(value)):
            problems.append(f"--{name} {value!r} does not exist")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.batch_size % (world * cfg.grad_accum):
        problems.append(f"batch_size {cfg.batch_size} is not divisible by processes × grad_accum = "
                        f"{world} × {cfg.grad_accum}")
    if cfg.steps < 1 or cfg.beta <= 0:
        problems.append("steps must be >= 1 and beta > 0")
    try:
        check_out(cfg.out, cfg.overwrite)  # an earlier run in --out: replaced only on purpose
    except ConfigError as error:
        problems.append(str(error))
    if problems:
        raise ConfigError("; ".join(problems))


def preference_pairs(path: str, task, prompt: str):
    """TRL's vision preference dataset from an export of ours of `task` (its module; checked as the reward model checks
    it) or from a dataset already in TRL's format."""
    import datasets

    from vrlhf.exports import MANIFEST, is_trl_preferences, to_trl_preferences
    from vrlhf.hub import is_hub_id, unreachable

    local = Path(path)
    if (local if local.is_dir() else local.parent).joinpath(MANIFEST).is_file():  # our export
        from reward_model.data import load_export, validate

        export = load_export(local)
        if is_trl_preferences(export):
            return export
        _, keep, notes = validate(export, local, task)
        for note in notes:
            print(f"{local}: {note}")
        pairs = to_trl_preferences(export.select(keep), prompt)
    else:
        try:
            if local.exists():
                pairs = datasets.load_from_disk(str(local))
            elif is_hub_id(path):
                pairs = datasets.load_dataset(path.partition(":")[0], split=path.partition(":")[2] or "train")
            else:
                raise DataError(f"--data {path}: no such export or dataset")
        except (OSError, ValueError, ConnectionError) as error:
            if isinstance(error, DataError):
                raise
            if local.exists():
                raise DataError(f"--data {path}: not an export (no {MANIFEST}) nor a saved dataset "
                                f"({str(error).strip().splitlines()[0]})") from None
            raise DataError(unreachable("dataset", path, error)) from None
        if isinstance(pairs, datasets.DatasetDict):
            pairs = pairs["train"] if "train" in pairs else next(iter(pairs.values()))
        if not is_trl_preferences(pairs):
            pairs = to_trl_preferences(pairs, prompt)
    if len(pairs) == 0:
        raise DataError(f"--data {path}: no preference pairs left (ties have no chosen side)")
    if "image" in pairs.column_names and "images" not in pairs.column_names:
        pairs = pairs.rename_column("image", "images").map(lambda row: {"images": [row["images"]]})
    return pairs.select_columns(["images", "prompt", "chosen", "rejected"])  # TRL's collator takes no other key


def build_trainer(cfg: DPOTuneConfig, policy, pairs, out: Path):
    import torch  # here, not at the top: `vrlhf dpo` checks its flags (DPOTuneConfig) before torch loads
    from trl import DPOConfig, DPOTrainer

    from tuner.trl_backend import precision_args

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cpu = not torch.cuda.is_available()
    args = DPOConfig(
        output_dir=str(out / "checkpoints"), max_steps=cfg.steps, seed=cfg.seed, data_seed=cfg.seed,
        per_device_train_batch_size=cfg.batch_size // (world * cfg.grad_accum),
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, lr_scheduler_type="constant_with_warmup",
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm or 0.0,
        beta=cfg.beta, loss_type=[cfg.loss_type], max_length=None,  # cutting would cut image tokens
        **precision_args(cfg.mixed_precision, cpu), use_cpu=cpu, logging_steps=1,
        report_to=cfg.log_with or "none", save_strategy="steps" if cfg.save_every else "no",
        save_steps=cfg.save_every or 500, save_total_limit=2, dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    peft_config = None
    if cfg.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                 target_modules="all-linear")
    return DPOTrainer(model=policy.model, args=args, train_dataset=pairs, processing_class=policy.processor,
                      peft_config=peft_config)


def _log_callback(rundir, total: int):
    from transformers import TrainerCallback

    class DPOLog(TrainerCallback):
        """TRL's DPO logs, one metrics.jsonl line per step (`learning_rate` as `lr`), and progress.json."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                record = {("lr" if k == "learning_rate" else k): v for k, v in logs.items()
                          if isinstance(v, (int, float))}
                rundir.log({"step": state.global_step, **record})

        def on_step_end(self, args, state, control, **kwargs):
            rundir.progress(state.global_step, total)

    return DPOLog()
