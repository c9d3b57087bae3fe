"""Which reward model a task gets, fresh or trained: `model_class(task)` (the architecture for what people see of its
outputs), `build_reward_model(task, cfg)` and `load_reward_model(path)` (rebuilt from its directory's config, then
its weights; nothing is pickled). Apart from reward_model/base.py, which the models themselves import."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from reward_model.base import CONFIG_NAME, WEIGHTS_NAME, RewardModel
from reward_model.box_set_model import BoxSetRewardModel
from reward_model.caption_model import CaptionRewardModel
from reward_model.colorization_model import ColorizationRewardModel
from reward_model.config import RewardModelConfig
from vrlhf.errors import ConfigError, ModelError
from vrlhf.tasks import get_task


def model_class(task: ModuleType, reads: str = "render"):
    """The architecture for what people see of a task's outputs (its `SHOWN`): text gets the image + text model,
    images the image model; with `reads` "boxes" the box-set model, which reads box outputs themselves."""
    if reads == "boxes":
        return BoxSetRewardModel
    if task.SHOWN == "text":
        return CaptionRewardModel
    if task.SHOWN == "image":
        return ColorizationRewardModel
    raise ConfigError(f"no reward model for shown {task.SHOWN} outputs (task {task.NAME!r})")


READS = ("view", "render", "boxes")  # RewardModelConfig.reads


def build_reward_model(task: ModuleType, cfg: RewardModelConfig | None = None, **options) -> RewardModel:
    """A fresh reward model for `task` (a task module): from `cfg`, or with RewardModelConfig fields as `options`."""
    cfg = cfg if cfg is not None else RewardModelConfig(task=task.NAME, **options)
    cfg.task = task.NAME
    if cfg.reads not in READS:
        raise ConfigError(f"--reads {cfg.reads!r}: choose one of {', '.join(READS)}")
    model = model_class(task, cfg.reads).build(cfg)
    model.task_module = task
    return model


def load_reward_model(path: str | Path, device: str | torch.device = "cpu", task: ModuleType | None = None
                      ) -> RewardModel:
    """Load a trained reward model directory; returns it in eval mode, ready for `score(rows, outputs)`.

    `task` is the task module its outputs come from (the caller's, resolved once); without it, the task its config
    names. A directory that is not a complete reward model (or one of another task) raises `ModelError` naming it
    and what is wrong."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        raise ModelError(f"{path} is not a reward model directory (no {CONFIG_NAME})")
    try:
        cfg = RewardModelConfig(**json.loads((path / CONFIG_NAME).read_text()))
    except (OSError, ValueError, TypeError) as error:  # bad JSON, fields
        raise ModelError(f"{path}: not a loadable reward model ({str(error).splitlines()[0]})") from None
    if task is not None and cfg.task != task.NAME:
        raise ModelError(f"{path} is a reward model of {cfg.task} outputs, not {task.NAME}")
    try:
        task = task if task is not None else get_task(cfg.task)  # a saved model names its task: resolved here, once
    except ConfigError as error:
        raise ModelError(f"{path}: {error}") from None
    try:
        model = model_class(task, cfg.reads).from_config(cfg, tokenizer_dir=path)
        model.task_module = task
        state = load_file(str(path / WEIGHTS_NAME))
    except (OSError, ValueError, TypeError, KeyError, SafetensorError) as error:  # bad JSON, fields, files
        raise ModelError(f"{path}: not a loadable reward model ({str(error).splitlines()[0]})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    expected_missing = set(model.state_dict()) - set(model.state_to_save())
    if unexpected or set(missing) - expected_missing:
        raise ModelError(f"{path / WEIGHTS_NAME} does not match its config: missing "
                         f"{sorted(set(missing) - expected_missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return model.to(device).eval()
