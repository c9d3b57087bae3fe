"""Colorization reward: (colorized image, grayscale input) → scalar, from a vision backbone and an MLP head.

Default: a tiny ViT from scratch on 4 channels, the colorization's RGB plus the input's gray level (so a
colorization that alters the luminance can be told apart). Any HF vision backbone directory can replace it
(`image_encoder=DIR`); a 3-channel backbone sees the colorization's RGB only.

Dense (`dense=True`): a score map over a `map_grid` × `map_grid` raster of the output's cells (the colorizer's colour
grid: one cell per token), whose mean is the Bradley–Terry score. Each cell reads the backbone's feature maps at
every stage resampled to the grid plus the image's pooled features (is this cell's colour right *here*, in this
picture?), through 1×1 convolutions. Marks train it cell by cell (reward_model/losses.py `marks_loss`).

Scalar, for outputs that are the images it reads (colorization, not drawn boxes): its dense form is a first-order
attribution (`attribution`), so the tuner can credit each colour token with its own cells (docs/DEMO.md, "Which way is
better").
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from reward_model import backbones
from reward_model.base import RewardModel, RewardModelConfig
from vrlhf.errors import ConfigError


class ColorizationRewardModel(RewardModel):
    """Scores colorizations: the reward model of tasks whose outputs are images."""

    def __init__(self, cfg: RewardModelConfig, pretrained: bool):
        super().__init__(cfg)
        c = cfg
        if c.clip:
            raise ConfigError("--clip is for captioning; give a vision backbone with --image-encoder")
        if pretrained:
            c.vision_config = (backbones.config_dict(c.image_encoder) if c.image_encoder else
                               backbones.tiny_config(c.encoder, c.image_size, c.patch_size, 4, c.vit_hidden,
                                                     c.vit_layers))
            c.image_mean, c.image_std = backbones.image_stats(c.image_encoder or None)
            c.image_size = c.vision_config.get("image_size", c.image_size)
        c.image_channels = c.vision_config.get("num_channels", 3)
        if c.image_channels not in (3, 4):
            raise ConfigError(f"a colorization reward needs a 3- or 4-channel image encoder, "
                             f"got num_channels={c.image_channels}")
        self.vision = backbones.build(c.vision_config, weights_from=c.image_encoder if pretrained and
                                      c.image_encoder else None)
        if c.lora_r:
            backbones.add_lora(self.vision, c.lora_r, c.lora_alpha, c.lora_dropout, c.lora_targets)
        width = getattr(self.vision.config, "hidden_size", None) or self.vision.config.hidden_sizes[-1]
        if c.dense:
            with torch.no_grad():  # the widths of the backbone's feature maps, whatever the backbone
                maps = self.feature_maps(torch.zeros(1, c.image_channels, c.image_size, c.image_size))
            width = sum(m.shape[1] for m in maps) + maps[-1].shape[1]  # every stage + the pooled last stage
            self.head = nn.Sequential(nn.Conv2d(width, c.hidden_size, 1), nn.GELU(),
                                      nn.Conv2d(c.hidden_size, c.hidden_size, 1), nn.GELU(),
                                      nn.Conv2d(c.hidden_size, 1, 1))
        else:
            self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, c.hidden_size), nn.GELU(),
                                      nn.Linear(c.hidden_size, 1))

    @classmethod
    def build(cls, cfg: RewardModelConfig) -> ColorizationRewardModel:
        return cls(cfg, pretrained=True)

    @classmethod
    def from_config(cls, cfg: RewardModelConfig, tokenizer_dir=None) -> ColorizationRewardModel:
        return cls(cfg, pretrained=False)

    def inputs(self, rows: list[dict], outputs: list) -> dict:
        rgb = self.pixels(outputs)
        if self.cfg.image_channels == 4:
            k = len(outputs) // len(rows)
            c = self.cfg
            gray = backbones.to_pixels([r["image"] for r in rows], c.image_size, 1, c.image_mean, c.image_std)
            rgb = torch.cat([rgb, gray.repeat_interleave(k, dim=0)], dim=1)
        return {"pixel_values": rgb}

    def forward(self, pixel_values: torch.Tensor, dense: bool = False):
        """Rewards [N] of N colorizations (each stacked with its gray input when the encoder has 4 channels). With
        `dense` (a dense model only): (rewards [N], cell scores [N, map_grid²] in raster order, None), the rewards
        being the cells' mean (the None: every cell exists; a caption's padding does not)."""
        if not self.cfg.dense:
            if dense:
                raise ValueError("this reward model is not dense: it has no score map (train it with --dense)")
            return self.head(backbones.pool_image(self.vision, pixel_values)).squeeze(-1)
        cells = self.score_map(pixel_values).flatten(1)
        return (cells.mean(dim=1), cells, None) if dense else cells.mean(dim=1)

    def feature_maps(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's feature maps [N, D_i, H_i, W_i], finest first: a CNN's stages, a ViT's patch tokens."""
        out = self.vision(pixel_values=pixel_values, output_hidden_states=True)
        if out.last_hidden_state.dim() == 4:  # conv net: the embedding and every stage
            return [h for h in out.hidden_states if h.dim() == 4]
        tokens = out.last_hidden_state
        side = int(round((tokens.shape[1] - 1) ** 0.5))
        tokens = tokens[:, -side * side:]  # drop the class token
        return [tokens.transpose(1, 2).reshape(len(tokens), -1, side, side)]

    def score_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, G, G]: one score per cell of the G × G raster (G = map_grid), row 0 at the top."""
        grid = self.cfg.map_grid
        maps = self.feature_maps(pixel_values)
        on_grid = [F.adaptive_avg_pool2d(m, grid) if m.shape[-1] >= grid else
                   F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False) for m in maps]
        pooled = maps[-1].mean(dim=(2, 3), keepdim=True).expand(-1, -1, grid, grid)
        return self.head(torch.cat([*on_grid, pooled], dim=1)).squeeze(1)

    @property
    def regions(self):
        """The dense form the tuner credits tokens with (tuner/rewards.py): a dense model's score map; a scalar model's
        `attribution` where the task's outputs are the images it reads (not boxes drawn over the input: their tokens
        are boxes, not cells); else None."""
        if self.cfg.dense:
            return self.output_regions
        task = getattr(self, "task_module", None)
        return self.attribution if task is not None and task.STORED == "image" else None

    def attribution(self, rows: list[dict], outputs: list) -> list:
        """Per output an (S, S) map over the model's input pixels that sums to its score: the gradient of the score
        times (the output − the mean of its image's k outputs), each pixel's first-order share in how this output
        scores against the mean one, plus the rest (the mean output's score, the higher orders) spread evenly.

        A scalar score says how good a colorization is, not which of its 64 cells made it so; this says which, to
        first order (gradient × input against a reference: its siblings' mean), at one backward pass per batch.
        Outputs that differ only in some cells differ only there, so with own-cell credit the others' tokens get the
        same credit, which the per-position leave-one-out baseline then removes."""
        k = len(outputs) // len(rows) if rows else 1
        maps = self.in_chunks(rows, outputs, partial(self._attribution, k=k), 64, "attribution")
        return list(torch.cat(maps).cpu().numpy())

    def _attribution(self, pixel_values: torch.Tensor, k: int) -> torch.Tensor:
        x = pixel_values.detach().requires_grad_(True)
        with torch.enable_grad():
            scores = self(pixel_values=x)
            (grad,) = torch.autograd.grad(scores.sum(), x)  # the inputs' gradient only: no weight gets a .grad
        n, c, s, _ = x.shape
        group = x.detach().view(-1, k, c, s, s)
        maps = (grad.view(-1, k, c, s, s) * (group - group.mean(dim=1, keepdim=True))).sum(dim=2).reshape(n, s, s)
        rest = scores.detach() - maps.sum(dim=(1, 2))
        return maps + rest[:, None, None] / (s * s)

    def output_regions(self, rows: list[dict], outputs: list) -> list:
        """Per output a (map_grid, map_grid) array of each cell's share of the reward (the oracle's `regions` is the
        same kind of map, per pixel): the tuner pools it onto the colorizer's grid, one value per token."""
        grid = self.cfg.map_grid
        return list(self.score_dense(rows, outputs).view(-1, grid, grid).numpy())

    def dense_scores(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, G*G] in raster order (the colorizer's token order): each cell's share of the reward (they sum to it)."""
        grid = self.cfg.map_grid
        return self.score_map(pixel_values).flatten(1) / (grid * grid)
