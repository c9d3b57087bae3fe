"""The small image-to-sequence model both demo policies use: a ViT encoder and a GPT2 decoder, built from configs."""

from __future__ import annotations

import torch
from transformers import GPT2Config, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig


def vit_gpt2(
    *,
    channels: int,
    vocab_size: int,
    max_positions: int,
    start_token_id: int,
    pad_token_id: int,
    eos_token_id: int | None,
    image_size: int = 48,
    patch_size: int = 8,
    hidden_size: int = 128,
    encoder_layers: int = 3,
    decoder_layers: int = 3,
    heads: int = 4,
    dropout: float = 0.0,
    seed: int = 0,
) -> VisionEncoderDecoderModel:
    """A `VisionEncoderDecoderModel`: ViT over `channels`-channel images + GPT2 over `vocab_size` tokens.

    The decoder starts from `start_token_id` (also GPT2's BOS), pads with `pad_token_id`, and stops at `eos_token_id`
    (None: fixed-length outputs, e.g. a grid of colour tokens). Weights are initialised from `seed`.
    """
    torch.manual_seed(seed)
    encoder = ViTConfig(
        image_size=image_size, patch_size=patch_size, num_channels=channels, hidden_size=hidden_size,
        num_hidden_layers=encoder_layers, num_attention_heads=heads, intermediate_size=4 * hidden_size,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    decoder = GPT2Config(
        vocab_size=vocab_size, n_positions=max_positions, n_embd=hidden_size, n_layer=decoder_layers, n_head=heads,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=start_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    model = VisionEncoderDecoderModel(VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder))
    model.config.decoder_start_token_id = start_token_id
    model.config.pad_token_id = pad_token_id
    if eos_token_id is not None:
        model.config.eos_token_id = eos_token_id
    return model
