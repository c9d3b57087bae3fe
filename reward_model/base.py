"""The reward model contract: a scorer `score(rows, outputs) -> Tensor[len(outputs)]`, saved as a directory.

A directory holds `reward_config.json` (task, architecture, backbone configs), `model.safetensors` and,
for captions, the tokenizer files. `load_reward_model(path)` (reward_model/models.py, with `build_reward_model`)
rebuilds the model from the config and loads the weights; nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import ModuleType

import torch
from safetensors.torch import save_file
from torch import nn

from reward_model import backbones
from reward_model.config import RewardModelConfig  # noqa: F401  (re-exported: the config lives light)
from vrlhf.errors import ModelError

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
        """`outputs` (k per row, image-major) as this model reads them (text for the image + text model, an image
        for the image model): what people see, the task's `render(row, output)`, or with `cfg.reads` "view" its
        `model_view(row, output)` where it has one."""
        k = len(outputs) // max(len(rows), 1)
        view = self.task_module.render
        if self.cfg.reads == "view":
            view = getattr(self.task_module, "model_view", view)
        return [view(rows[i // k], o) for i, o in enumerate(outputs)]

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
