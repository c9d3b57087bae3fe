"""The reward model contract: a scorer `score(rows, outputs) -> Tensor[len(outputs)]`, saved as a directory.

A directory holds `reward_config.json` (task, architecture, backbone configs), `model.safetensors` and,
for captions, the tokenizer files. `load_reward_model(path)` rebuilds the model from the config and loads
the weights; nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import ModuleType

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from reward_model import backbones
from reward_model.config import RewardModelConfig  # noqa: F401  (re-exported: the config lives light)
from vrlhf.errors import ConfigError, ModelError
from vrlhf.tasks import get_task

CONFIG_NAME = "reward_config.json"
WEIGHTS_NAME = "model.safetensors"


class RewardModel(nn.Module):
    """Base class: subclasses define `inputs(rows, shown) -> dict` (`shown`: the outputs as the task's `render`
    shows them) and `forward(**inputs) -> Tensor[N]`. `task_module` is the task whose outputs it scores."""

    task_module: ModuleType  # set by build_reward_model / load_reward_model

    def __init__(self, cfg: RewardModelConfig):
        super().__init__()
        self.cfg = cfg

    @property
    def task(self) -> str:
        return self.cfg.task

    def shown(self, rows: list[dict], outputs: list) -> list:
        """`outputs` (k per row, image-major) as people see them: the task's `render(row, output)`, what this model
        reads (text for the image + text model, an image for the image model)."""
        k = len(outputs) // max(len(rows), 1)
        return [self.task_module.render(rows[i // k], o) for i, o in enumerate(outputs)]

    def pixels(self, images) -> torch.Tensor:
        c = self.cfg
        return backbones.to_pixels(images, c.image_size, 3 if c.image_channels == 4 else c.image_channels,
                                   c.image_mean, c.image_std)

    def inputs(self, rows: list[dict], outputs: list) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def score(self, rows: list[dict], outputs: list, batch_rows: int = 64) -> torch.Tensor:
        """Rewards of `outputs` (image-major, k per row) as float32 on the model's device, without gradients (no copy
        to the CPU per chunk: the tuner normalises and gathers them on its accelerator's device)."""
        return torch.cat(self.in_chunks(rows, outputs, self, batch_rows, "score"))

    def in_chunks(self, rows: list[dict], outputs: list, forward, batch_rows: int, caller: str) -> list:
        """`forward(**inputs)` in eval mode on the model's device, `batch_rows` rows (and their k outputs) at a time."""
        if len(rows) == 0 or len(outputs) % len(rows):
            raise ValueError(f"{caller}: {len(outputs)} outputs is not a multiple of {len(rows)} rows")
        k = len(outputs) // len(rows)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        chunks = []
        for i in range(0, len(rows), batch_rows):
            chunk = rows[i : i + batch_rows]
            batch = self.inputs(chunk, self.shown(chunk, outputs[i * k : (i + batch_rows) * k]))
            batch = {n: v.to(device) if torch.is_tensor(v) else v for n, v in batch.items()}
            chunks.append(forward(**batch).float())
        self.train(was_training)
        return chunks

    @property
    def regions(self):
        """The reward's dense form for per-token credit (tuner/rewards.py `RewardMix.regions`), as the oracles give
        theirs: `regions(rows, outputs)` -> per output an array of what each region adds (they sum to `score`); None
        for a scalar model (its reward has no per-region form)."""
        return self.output_regions if self.cfg.dense else None

    def output_regions(self, rows: list[dict], outputs: list) -> list:
        """Per output, its regions' values as an array summing to its reward (subclasses shape them per task)."""
        return list(self.score_dense(rows, outputs).numpy())

    @torch.no_grad()
    def score_dense(self, rows: list[dict], outputs: list, batch_rows: int = 64) -> torch.Tensor:
        """Per-region rewards [len(outputs), R] of a dense model, float32 on CPU, that sum to `score`: for image
        outputs R = map_grid² cells in raster order (the colorizer's tokens), each its share of the map's mean; for
        captions R = 1 + the longest caption's words: the caption as a whole (what no word carries) first, then each
        word, zero past a caption's end. The tuner credits each token with these (`regions`)."""
        if not self.cfg.dense:
            raise ModelError("score_dense: this reward model is not dense (trained without --dense): use score()")
        chunks = [c.cpu() for c in self.in_chunks(rows, outputs, self.dense_scores, batch_rows, "score_dense")]
        width = max(c.shape[1] for c in chunks)
        return torch.cat([torch.nn.functional.pad(c, (0, width - c.shape[1])) for c in chunks])

    # -- persistence -------------------------------------------------------------------------------
    def state_to_save(self) -> dict[str, torch.Tensor]:
        """All weights, except the frozen bundled MiniLM (rebuilt from its package on load)."""
        skip = self.cfg.text_encoder == backbones.MINILM and not self.cfg.clip and not self.cfg.train_text_encoder
        return {n: t.detach().cpu().contiguous() for n, t in self.state_dict().items()
                if not (skip and n.startswith("text.") and "lora_" not in n)}

    def save_pretrained(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(self.cfg), indent=1))
        save_file(self.state_to_save(), str(out / WEIGHTS_NAME), metadata={"task": self.cfg.task})
        if getattr(self, "tokenizer", None) is not None:
            self.tokenizer.save_pretrained(out)
        return out


def model_class(task: ModuleType):
    """The architecture for what people see of a task's outputs (its `SHOWN`): text gets the image + text model,
    images the image model."""
    if task.SHOWN == "text":
        from reward_model.caption_model import CaptionRewardModel

        return CaptionRewardModel
    if task.SHOWN == "image":
        from reward_model.colorization_model import ColorizationRewardModel

        return ColorizationRewardModel
    raise ConfigError(f"no reward model for shown {task.SHOWN} outputs (task {task.NAME!r})")


def build_reward_model(task: ModuleType, cfg: RewardModelConfig | None = None, **options) -> RewardModel:
    """A fresh reward model for `task` (a task module): from `cfg`, or with RewardModelConfig fields as `options`."""
    cfg = cfg if cfg is not None else RewardModelConfig(task=task.NAME, **options)
    cfg.task = task.NAME
    model = model_class(task).build(cfg)
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
        model = model_class(task).from_config(cfg, tokenizer_dir=path)
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
