"""Decoder-only vision-language models (`AutoModelForImageTextToText`): LLaVA, Idefics3 (SmolVLM's architecture),
PaliGemma. A caption is the model's answer to a fixed prompt about the image ("Describe the image.").

The prompt, with its image placeholder tokens, is the same for every image: its token ids are computed once per
policy (`prepare`) through the model's own processor and chat template, exactly as TRL tokenises a conversational
prompt. So the policy's input stays one pixel tensor per image, and sampling, teacher forcing and TRL all see the
same tokens. That needs a fixed number of image tokens per image: Idefics3 is run on one tile per image (image
splitting off, the image resized to the vision encoder's square), LLaVA and PaliGemma have a fixed size anyway.

"Encode once" is the prefill: prompt + image run once per image, and its cache is repeated for the k samples,
in sampling and teacher forcing alike.
"""

from __future__ import annotations

import torch
from PIL import Image
from transformers import (
    Idefics3ForConditionalGeneration,
    LlavaForConditionalGeneration,
    PaliGemmaForConditionalGeneration,
)

MODEL_CLASSES = {
    "llava": LlavaForConditionalGeneration,
    "idefics3": Idefics3ForConditionalGeneration,
    "paligemma": PaliGemmaForConditionalGeneration,
}
DEFAULT_PROMPT = "Describe the image."


def special_ids(model, tokenizer) -> tuple[int | None, list[int], int]:
    """(None: the prompt starts the answer, stop ids, pad). The generation config's end-of-sequence ids first (the
    first is appended to training targets), then the tokenizer's own if the generation config left it out (a chat
    model's generation config may name another end token than the one its tokenizer ends a turn with)."""
    eos = model.generation_config.eos_token_id
    stops = list(eos) if isinstance(eos, (list, tuple)) else [] if eos is None else [eos]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stops:
        stops.append(tokenizer.eos_token_id)
    pad = next((p for p in (model.generation_config.pad_token_id, tokenizer.pad_token_id) if p is not None),
               stops[0] if stops else None)
    return None, stops, pad


def banned_token_ids(policy) -> list[int]:
    """The image placeholder: not a word of a caption, and a sampled one would be taken for an image slot."""
    image = getattr(policy.model.config, "image_token_id", None)
    return [] if image is None else [int(image)]


def messages(prompt: str, image=None) -> list[dict]:
    """The conversational prompt TRL and chat templates expect: one user turn, the image, then the question."""
    picture = {"type": "image"} if image is None else {"type": "image", "image": image}
    return [{"role": "user", "content": [picture, {"type": "text", "text": prompt}]}]


def prepare(policy) -> None:
    """The prompt's token ids (1, P), through the processor (and its chat template, when the model has one)."""
    processor = policy.processor
    if getattr(processor.image_processor, "do_image_splitting", False):
        processor.image_processor.do_image_splitting = False  # one tile per image: the same prompt for every image
    prompt = policy.meta.setdefault("prompt", DEFAULT_PROMPT)
    blank = Image.new("RGB", (64, 64))
    if getattr(processor, "chat_template", None):
        batch = processor.apply_chat_template([messages(prompt, blank)], add_generation_prompt=True, tokenize=True,
                                              return_dict=True, return_tensors="pt")
    else:  # PaliGemma: no chat template; its processor expands "<image>" + prompt to image tokens + BOS + prompt + "\n"
        batch = processor(text=[processor.image_token + prompt], images=[blank], return_tensors="pt")
    policy.prompt_ids = batch["input_ids"][:1].long()  # (1, P)


def set_prompt(policy, prompt: str) -> None:
    """Ask the VLM another question about each image (saved with the policy in policy.json)."""
    policy.meta["prompt"] = prompt
    prepare(policy)


def _extras(policy, rows: int, prompt: int, answer: int, device: torch.device) -> dict:
    """PaliGemma attends bidirectionally over the prefix (token type 0) and causally over the answer (1); built on
    `device`, the inputs' (policy.prompt_ids stay on the CPU)."""
    if policy.family != "paligemma":
        return {}
    return {"token_type_ids": torch.cat([torch.zeros(rows, prompt, dtype=torch.long, device=device),
                                         torch.ones(rows, answer, dtype=torch.long, device=device)], dim=1)}


def pixel_values(policy, images: list) -> torch.Tensor:
    """RGB images -> (B, ...) through the model's image processor, one image per row (Idefics3: (B, 1, C, H, W))."""
    nested = hasattr(policy.image_processor, "do_image_splitting")  # Idefics3 reads a list of images per row
    return policy.image_processor([[im] for im in images] if nested else images, return_tensors="pt")["pixel_values"]


def encode(policy, pixel_values: torch.Tensor) -> torch.Tensor:
    """The image enters with the prompt in the first pass: the context is the pixels themselves."""
    return pixel_values


def first_step(policy, pixel_values: torch.Tensor):
    """Prefill prompt + image, once per image -> (logits of the first answer token (B, V), cache, None)."""
    prompt = policy.prompt_ids.to(pixel_values.device)
    rows, length = pixel_values.shape[0], prompt.shape[1]
    out = policy.model(input_ids=prompt.expand(rows, -1), pixel_values=pixel_values, use_cache=True,
                       logits_to_keep=1, **_extras(policy, rows, length, 0, prompt.device))
    return out.logits[:, -1], out.cache, None


def next_step(policy, context, tokens: torch.Tensor, cache, position: int):
    out = policy.model(input_ids=tokens, cache=cache, use_cache=True)
    return out.logits[:, -1], out.cache


def teacher_forced_logits(policy, pixel_values: torch.Tensor, tokens: torch.Tensor, k: int) -> torch.Tensor:
    """Logits (N, T, V) predicting `tokens` (N, T), as sampling computes them: prompt + image prefilled once per image
    (the vision tower and the prompt run B times, not B·k), the cache repeated for the k samples, then the answer
    tokens in one pass over it (the last is predicted, never fed)."""
    first, cache, _ = first_step(policy, pixel_values)  # (B, V): predicts each sample's first token
    first = first.repeat_interleave(k, dim=0)[:, None]  # (N, 1, V)
    if tokens.shape[1] == 1:
        return first
    cache.batch_repeat_interleave(k)
    out = policy.model(input_ids=tokens[:, :-1], cache=cache, use_cache=True)
    return torch.cat([first, out.logits], dim=1)  # (N, T, V)
