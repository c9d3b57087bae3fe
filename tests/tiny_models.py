"""Tiny Hugging Face image-to-sequence models built from configs, one per supported family (no downloads)."""

from __future__ import annotations

import torch
from transformers import (
    BlipConfig,
    BlipForConditionalGeneration,
    GitConfig,
    GitForCausalLM,
    GPT2Config,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
)

from vrlhf.policy import SequencePolicy

VOCAB = 120  # above 50, so a hidden top-k 50 would show
IMAGE = 16


def tiny_ved(seed: int = 0) -> SequencePolicy:
    torch.manual_seed(seed)
    enc = ViTConfig(image_size=IMAGE, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64)
    dec = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=24, n_layer=2, n_head=2, bos_token_id=0,
                     eos_token_id=1, pad_token_id=2)
    model = VisionEncoderDecoderModel(VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec))
    model.config.decoder_start_token_id, model.config.pad_token_id = 0, 2
    return SequencePolicy(model.eval(), start_token_id=0, eos_token_id=1, pad_token_id=2, max_new_tokens=12)


def tiny_blip(seed: int = 0) -> SequencePolicy:
    torch.manual_seed(seed)
    config = BlipConfig(
        vision_config=dict(image_size=IMAGE, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64),
        text_config=dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32, bos_token_id=3, sep_token_id=1,
                         pad_token_id=2, encoder_hidden_size=32),
    )
    model = BlipForConditionalGeneration(config)
    return SequencePolicy(model.eval(), start_token_id=3, eos_token_id=1, pad_token_id=2, max_new_tokens=12)


def tiny_git(seed: int = 0) -> SequencePolicy:
    torch.manual_seed(seed)
    config = GitConfig(
        vision_config=dict(image_size=IMAGE, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64),
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, bos_token_id=3, eos_token_id=1, pad_token_id=2,
    )
    model = GitForCausalLM(config)
    return SequencePolicy(model.eval(), start_token_id=3, eos_token_id=1, pad_token_id=2, max_new_tokens=12)


FAMILIES = {"ved": tiny_ved, "blip": tiny_blip, "git": tiny_git}
