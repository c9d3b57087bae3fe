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


# ---- tiny random checkpoints of every supported family, as a user's own model directory would look ---------------
# Built from configs with a byte-level BPE tokenizer trained on the spot and the family's own processor, saved with
# save_pretrained and nothing else (no policy.json): what the tests load through `--policy DIR`, and what the
# backends benchmark runs. Random weights: they say nothing about quality, only that every path works.

TINY_TEXTS = (
    "a red circle on the left", "a small blue square in the middle", "two green triangles at the top right",
    "a big yellow star next to a purple circle", "describe the image", "what is in the picture",
)
CHAT_TEMPLATE = (  # a minimal chat template: image placeholders and text of each turn, the assistant turn closed
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' }}{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% if m['role'] == 'assistant' %}{{ END }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TINY_FAMILIES = ("vision-encoder-decoder", "blip", "git", "llava", "idefics3", "paligemma")


def bpe_tokenizer(texts, specials: list[str], bos: str = "<s>", eos: str = "</s>", pad: str = "<pad>",
                  vocab_size: int = 320):
    """A byte-level BPE tokenizer trained on `texts` (any string can be encoded), as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    first = list(dict.fromkeys([pad, bos, eos, "<unk>", *specials]))
    core.train_from_iterator(list(texts) * 4, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=first, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=bos, eos_token=eos, pad_token=pad,
                                   unk_token="<unk>")


def tiny_checkpoint(family: str, out, texts=TINY_TEXTS, image_size: int = 16, hidden: int = 32, seed: int = 0):
    """Save a tiny random checkpoint of `family` (one of TINY_FAMILIES) with its processor to `out`; returns it.

    Vision: `image_size` pixels, patches of 8; text: 1 layer of width `hidden`. The VLMs get a chat template (LLaVA,
    Idefics3) or none (PaliGemma, like the released ones); Idefics3 runs one tile per image (no splitting)."""
    from pathlib import Path

    import transformers as tf

    torch.manual_seed(seed)
    out = Path(out)
    vision = dict(image_size=image_size, patch_size=8, hidden_size=hidden, intermediate_size=2 * hidden,
                  num_hidden_layers=1, num_attention_heads=2)
    text = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=128)
    square = {"height": image_size, "width": image_size}
    if family == "vision-encoder-decoder":
        tok = bpe_tokenizer(texts, [])
        decoder = tf.GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=hidden, n_layer=1, n_head=2,
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id)
        config = tf.VisionEncoderDecoderConfig.from_encoder_decoder_configs(tf.ViTConfig(**vision), decoder)
        config.decoder_start_token_id, config.pad_token_id = tok.bos_token_id, tok.pad_token_id
        config.eos_token_id = tok.eos_token_id
        model = tf.VisionEncoderDecoderModel(config)
        parts = [tok, tf.ViTImageProcessorPil(size=square)]  # like nlpconnect/vit-gpt2: no processor class
    elif family == "blip":
        tok = bpe_tokenizer(texts, ["[DEC]"], bos="[CLS]", eos="[SEP]")
        dec = tok.convert_tokens_to_ids("[DEC]")
        model = tf.BlipForConditionalGeneration(tf.BlipConfig(vision_config=vision, text_config=dict(
            text, vocab_size=len(tok), bos_token_id=dec, sep_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id, encoder_hidden_size=hidden)))
        parts = [tf.BlipProcessor(image_processor=tf.BlipImageProcessorPil(size=square), tokenizer=tok)]
    elif family == "git":
        tok = bpe_tokenizer(texts, [], bos="[CLS]", eos="[SEP]")
        model = tf.GitForCausalLM(tf.GitConfig(vision_config=vision, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **text))
        image = tf.CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size=square)
        parts = [tf.GitProcessor(image_processor=image, tokenizer=tok)]
    elif family == "llava":
        tok = bpe_tokenizer(texts, ["<image>", "<|user|>", "<|assistant|>"])
        image_id = tok.convert_tokens_to_ids("<image>")
        model = tf.LlavaForConditionalGeneration(tf.LlavaConfig(
            vision_config=tf.CLIPVisionConfig(**vision),
            text_config=tf.LlamaConfig(vocab_size=len(tok), num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **text),
            image_token_index=image_id, vision_feature_select_strategy="default", vision_feature_layer=-1))
        image = tf.CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size=square)
        parts = [tf.LlavaProcessor(image_processor=image, tokenizer=tok, patch_size=8, num_additional_image_tokens=1,
                                   vision_feature_select_strategy="default",
                                   chat_template=CHAT_TEMPLATE.replace("{{ END }}", "</s>"))]
        model.generation_config.eos_token_id = tok.eos_token_id
    elif family == "idefics3":
        ends = "<end_of_utterance>"
        tok = bpe_tokenizer(texts, ["<image>", "<fake_token_around_image>", "<global-img>", ends, "<|user|>",
                                    "<|assistant|>"])
        model = tf.Idefics3ForConditionalGeneration(tf.Idefics3Config(
            vision_config=vision, scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"),
            pad_token_id=tok.pad_token_id,
            text_config=dict(text, model_type="llama", vocab_size=len(tok), num_key_value_heads=2,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)))
        image = tf.Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": image_size},
                                            max_image_size={"longest_edge": image_size})
        parts = [tf.Idefics3Processor(image_processor=image, tokenizer=tok, image_seq_len=(image_size // 8) ** 2 // 4,
                                      chat_template=CHAT_TEMPLATE.replace("{{ END }}", ends))]
        model.generation_config.eos_token_id = tok.convert_tokens_to_ids(ends)  # SmolVLM ends its turn so
    elif family == "paligemma":
        tok = bpe_tokenizer(texts, ["<image>"], bos="<bos>", eos="<eos>")
        image = tf.SiglipImageProcessorPil(size=square, image_seq_length=(image_size // 8) ** 2)
        parts = [tf.PaliGemmaProcessor(image_processor=image, tokenizer=tok)]  # adds its <loc>/<seg> tokens
        model = tf.PaliGemmaForConditionalGeneration(tf.PaliGemmaConfig(
            vision_config=dict(vision, model_type="siglip_vision_model", vision_use_head=False),
            text_config=dict(text, model_type="gemma", vocab_size=len(tok), num_key_value_heads=1, head_dim=16,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id),
            vocab_size=len(tok), image_token_index=tok.convert_tokens_to_ids("<image>"), projection_dim=hidden))
        model.generation_config.eos_token_id = tok.eos_token_id
    else:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(TINY_FAMILIES)}")
    model.generation_config.pad_token_id = tok.pad_token_id
    model.eval().save_pretrained(out)
    for part in parts:
        part.save_pretrained(out)
    return out
