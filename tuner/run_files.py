"""What every way of tuning a policy reads and writes the same way: its training and held-out rows (`split_data`)
and its final policy directory (`save_final`). Shared by tuner/train.py (ours), tuner/trl_backend.py (TRL's RLOO /
GRPO) and tuner/dpo.py, so none of them imports another for these."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from tuner.config import TuneConfig
from vrlhf.run_config import PolicyRunConfig


def split_data(cfg: TuneConfig, task: ModuleType) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows): DATA/train and DATA/test, or the split every stage uses
    (`vrlhf.data.split_rows`: pretraining with the same `test_fraction` held out the same rows); `--eval_data`
    replaces the held-out rows. At most `eval_size` held-out rows are evaluated. `task`: the module of `cfg.task`,
    as the command resolved it."""
    from vrlhf.data import load_rows, load_split

    check = task.row_problem  # a row the task cannot use fails here, before any model is loaded
    columns = dict(image_column=cfg.image_column, caption_column=cfg.caption_column)
    if cfg.eval_data:  # every row of --data (or DATA/train) trains
        root = Path(cfg.data)
        split = (root / "train").is_dir() and (root / "test").is_dir()
        train_rows = load_rows(root / "train" if split else cfg.data, check=check, **columns)
        return train_rows, load_rows(cfg.eval_data, check=check, **columns)[: cfg.eval_size]
    train_rows, held_out = load_split(cfg.data, cfg.test_fraction, check=check, **columns)
    return train_rows, held_out[: cfg.eval_size]


def save_final(cfg: PolicyRunConfig, policy, path: Path) -> None:
    """A standard model directory (SequencePolicy.from_pretrained); with LoRA, merged or the adapter alone."""
    if cfg.lora_r and not cfg.merge_lora:
        policy.model.save_pretrained(path)  # PEFT adapter: PeftModel.from_pretrained(base_policy.model, path)
        return
    if cfg.lora_r:
        policy.model = policy.model.merge_and_unload()
    policy.save(path)
