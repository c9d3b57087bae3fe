"""GIT (`GitForCausalLM`): one decoder over image tokens followed by text tokens.

The image tokens enter the cache in the first pass; text positions count from 0 after them. The model tiles image
features over the batch (row r sees image r % B), so teacher forcing feeds rows sample-major and undoes the order.
"""

from __future__ import annotations

import torch
from transformers import GitForCausalLM

from vrlhf.families import encoder_decoder

MODEL_CLASSES = {"git": GitForCausalLM}
# As for an encoder-decoder: nothing to prepare, no banned tokens, images through the model's own image processor.
prepare, banned_token_ids = encoder_decoder.prepare, encoder_decoder.banned_token_ids
pixel_values = encoder_decoder.pixel_values


def special_ids(model, tokenizer) -> tuple[int | None, list[int], int]:
    """GitForCausalLM.generate starts from bos ([CLS] in the released checkpoints) and stops at eos ([SEP])."""
    config = model.config
    eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    return config.bos_token_id, eos, config.pad_token_id if config.pad_token_id is not None else eos[0]


def encode(policy, pixel_values: torch.Tensor) -> torch.Tensor:
    """GIT embeds the image inside its first decoder pass: the context is the pixels themselves."""
    return pixel_values


def _decode(policy, pixel_values, input_ids: torch.Tensor, cache=None, position: int = 0):
    positions = torch.arange(position, position + input_ids.shape[1], device=input_ids.device)
    positions = positions.unsqueeze(0).expand(input_ids.shape[0], -1)
    out = policy.model(input_ids=input_ids, pixel_values=pixel_values if cache is None else None,
                       position_ids=positions, cache=cache, use_cache=cache is not None or input_ids.shape[1] == 1)
    return out.logits[:, -input_ids.shape[1]:], out.cache


def first_step(policy, pixel_values: torch.Tensor):
    start = torch.full((pixel_values.shape[0], 1), policy.start_token_id, dtype=torch.long,
                       device=pixel_values.device)
    logits, cache = _decode(policy, pixel_values, start)
    return logits[:, -1], cache, None  # the image lives in the cache from now on


def next_step(policy, context, tokens: torch.Tensor, cache, position: int):
    logits, cache = _decode(policy, None, tokens, cache, position)
    return logits[:, -1], cache


def teacher_forced_logits(policy, pixel_values: torch.Tensor, tokens: torch.Tensor, k: int) -> torch.Tensor:
    n, batch = tokens.shape[0], pixel_values.shape[0]
    start = torch.full((n, 1), policy.start_token_id, dtype=torch.long, device=tokens.device)
    inputs = torch.cat([start, tokens[:, :-1]], dim=1)  # (N, T): shifted right
    order = torch.arange(n, device=tokens.device).view(batch, k).t().reshape(-1)  # sample-major
    logits, _ = _decode(policy, policy._encode(pixel_values), inputs[order])
    return logits[torch.argsort(order)]
