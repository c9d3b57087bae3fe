"""Encoder-decoder captioners: `VisionEncoderDecoderModel` (e.g. ViT + GPT2) and BLIP.

The vision encoder runs once per image; the text decoder attends to its states (cross-attention), starting from the
start token. Sampling repeats the states and the decoder's cache k times per image.
"""

from __future__ import annotations

import torch
from transformers import BlipForConditionalGeneration, VisionEncoderDecoderModel
from transformers.modeling_outputs import BaseModelOutput

MODEL_CLASSES = {"vision-encoder-decoder": VisionEncoderDecoderModel, "blip": BlipForConditionalGeneration}


def first(*values):
    """The first value that is set (a list of ids counts as set)."""
    return next((v for v in values if v is not None), None)


def special_ids(model, tokenizer) -> tuple[int | None, list[int], int]:
    """(start, stop ids, pad) as the family's own `generate` uses them (a config may lack any of the attributes)."""
    config, generation = model.config, model.generation_config
    if config.model_type == "blip":  # BlipForConditionalGeneration.generate: bos starts, sep ends
        text = config.text_config
        return text.bos_token_id, [text.sep_token_id], first(text.pad_token_id, text.sep_token_id)
    places = (generation, config, config.decoder)
    start = first(*(getattr(c, "decoder_start_token_id", None) for c in places), config.decoder.bos_token_id)
    eos = first(*(getattr(c, "eos_token_id", None) for c in places))
    stops = list(eos) if isinstance(eos, (list, tuple)) else [] if eos is None else [eos]
    pad = first(*(getattr(c, "pad_token_id", None) for c in places), *stops[:1], start)
    return start, stops, pad


def prepare(policy) -> None:
    """Nothing to compute once per policy."""


def banned_token_ids(policy) -> list[int]:
    """Every token of the vocabulary may be sampled."""
    return []


def pixel_values(policy, images: list) -> torch.Tensor:
    """RGB images -> (B, C, H, W) through the model's own image processor."""
    return policy.image_processor(images, return_tensors="pt")["pixel_values"]


def encode(policy, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, S, H) encoder states."""
    model = policy.model
    if model.config.model_type == "blip":
        return model.vision_model(pixel_values=pixel_values).last_hidden_state
    return model.encoder(pixel_values=pixel_values).last_hidden_state


def _decoder(policy, context: torch.Tensor, input_ids: torch.Tensor, cache=None):
    """One decoder pass over `input_ids` (N, t) attending to context rows aligned with them -> (logits, cache)."""
    model, use_cache = policy.model, cache is not None or input_ids.shape[1] == 1
    if model.config.model_type == "blip":
        out = model.text_decoder(input_ids=input_ids, encoder_hidden_states=context, cache=cache, use_cache=use_cache)
    else:
        out = model(encoder_outputs=BaseModelOutput(last_hidden_state=context), decoder_input_ids=input_ids,
                    cache=cache, use_cache=use_cache)
    return out.logits, out.cache


def first_step(policy, context: torch.Tensor):
    start = torch.full((context.shape[0], 1), policy.start_token_id, dtype=torch.long, device=context.device)
    logits, cache = _decoder(policy, context, start)
    return logits[:, -1], cache, context


def next_step(policy, context: torch.Tensor, tokens: torch.Tensor, cache, position: int):
    logits, cache = _decoder(policy, context, tokens, cache)
    return logits[:, -1], cache


def teacher_forced_logits(policy, pixel_values: torch.Tensor, tokens: torch.Tensor, k: int) -> torch.Tensor:
    """Logits (N, T, V) predicting each of `tokens` (N, T) from the start token and the tokens before it."""
    start = torch.full((tokens.shape[0], 1), policy.start_token_id, dtype=torch.long, device=tokens.device)
    inputs = torch.cat([start, tokens[:, :-1]], dim=1)  # (N, T): shifted right
    context = policy._encode(pixel_values).repeat_interleave(k, dim=0)  # encoder once per image
    return _decoder(policy, context, inputs)[0]
