"""Colorization reward: (colorized image, grayscale input) → scalar, from a vision backbone and an MLP head.

Default: a tiny ViT from scratch on 4 channels, the colorization's RGB plus the input's gray level (so a
colorization that alters the luminance can be told apart). Any HF vision backbone directory can replace it
(`image_encoder=DIR`); a 3-channel backbone sees the colorization's RGB only.
"""

from __future__ import annotations

import torch
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

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Rewards [N] of N colorizations (each stacked with its gray input when the encoder has 4 channels)."""
        return self.head(backbones.pool_image(self.vision, pixel_values)).squeeze(-1)
