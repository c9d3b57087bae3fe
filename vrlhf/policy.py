"""A sequence policy over any Hugging Face image-to-sequence model: exact sampling and teacher-forced log-probs.

Supported families: `VisionEncoderDecoderModel` (e.g. ViT + GPT2), `BlipForConditionalGeneration` and
`GitForCausalLM`. We run our own ancestral-sampling loop instead of `generate()` so that

- samples come from the full distribution at the given temperature (no hidden top-k 50, no processors),
- each image is encoded once and its encoder states / KV cache are shared by its k samples,
- the log-probabilities we return are exactly those that `log_prob` recomputes by teacher forcing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoTokenizer,
    BlipForConditionalGeneration,
    GitForCausalLM,
    PreTrainedModel,
    VisionEncoderDecoderModel,
)
from transformers.modeling_outputs import BaseModelOutput

POLICY_FILE = "policy.json"
FAMILIES = {
    "vision-encoder-decoder": VisionEncoderDecoderModel,
    "blip": BlipForConditionalGeneration,
    "git": GitForCausalLM,
}


@dataclass
class Samples:
    """k sequences per image, image-major: row i*k + j is sample j of image i."""

    tokens: torch.Tensor  # (B*k, T) long, start token excluded, pad after EOS
    mask: torch.Tensor  # (B*k, T) bool, True on generated tokens up to and including EOS
    token_log_probs: torch.Tensor  # (B*k, T) float, 0 where mask is False
    finished: torch.Tensor  # (B*k,) bool, the sequence emitted EOS
    log_probs: torch.Tensor = field(init=False)  # (B*k,) sum over the mask

    def __post_init__(self):
        self.log_probs = self.token_log_probs.sum(dim=1)


def family_of(model: PreTrainedModel) -> str:
    for name, cls in FAMILIES.items():
        if isinstance(model, cls):
            return name
    raise TypeError(f"unsupported model class {type(model).__name__}; supported: {[c.__name__ for c in FAMILIES.values()]}")


class SequencePolicy:
    """Wraps an HF image-to-sequence model; `meta` holds what the task needs to pre/post-process (saved as policy.json)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer=None,
        *,
        start_token_id: int,
        eos_token_id: int | None,
        pad_token_id: int,
        max_new_tokens: int,
        meta: dict | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.family = family_of(model)
        self.start_token_id = start_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.max_new_tokens = max_new_tokens
        self.meta = dict(meta or {})

    # ---- persistence -------------------------------------------------------------------------------------------

    def save(self, out_dir: str | Path) -> Path:
        """Write a standard model directory: config + safetensors (+ tokenizer) + policy.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(out)
        spec = dict(
            family=self.family,
            start_token_id=self.start_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            max_new_tokens=self.max_new_tokens,
            meta=self.meta,
        )
        (out / POLICY_FILE).write_text(json.dumps(spec, indent=2))
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path, **model_kwargs) -> "SequencePolicy":
        path = Path(path)
        spec_file = path / POLICY_FILE
        if not spec_file.is_file():
            raise FileNotFoundError(f"{path}: not a policy directory (no {POLICY_FILE})")
        spec = json.loads(spec_file.read_text())
        config = AutoConfig.from_pretrained(path)
        model_cls = FAMILIES.get(config.model_type)
        if model_cls is None:
            raise ValueError(f"{path}: unsupported model_type {config.model_type!r}")
        model = model_cls.from_pretrained(path, **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").is_file() else None
        spec.pop("family", None)
        return cls(model, tokenizer, **spec)

    # ---- the family-specific pieces: encode once, one decoding step, teacher-forced logits ----------------------

    def _encode(self, pixel_values: torch.Tensor):
        """Image -> what the decoder attends to, once per image: (B, S, H) states (GIT keeps pixels; see _prefill)."""
        if self.family == "vision-encoder-decoder":
            return self.model.encoder(pixel_values=pixel_values).last_hidden_state
        if self.family == "blip":
            return self.model.vision_model(pixel_values=pixel_values).last_hidden_state
        return pixel_values

    def _decode(self, context: torch.Tensor, input_ids: torch.Tensor, cache=None, position: int = 0):
        """One decoder pass over `input_ids` (N, t) given context rows aligned with them. Returns logits, cache."""
        use_cache = cache is not None or input_ids.shape[1] == 1
        if self.family == "vision-encoder-decoder":
            out = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=context),
                decoder_input_ids=input_ids,
                cache=cache,
                use_cache=use_cache,
            )
            return out.logits, out.cache
        if self.family == "blip":
            out = self.model.text_decoder(
                input_ids=input_ids, encoder_hidden_states=context, cache=cache, use_cache=use_cache
            )
            return out.logits, out.cache
        # GIT: image tokens live in the cache after the first pass; text positions count from 0 after them.
        positions = torch.arange(position, position + input_ids.shape[1], device=input_ids.device)
        positions = positions.unsqueeze(0).expand(input_ids.shape[0], -1)
        out = self.model(
            input_ids=input_ids,
            pixel_values=context if cache is None else None,
            position_ids=positions,
            cache=cache,
            use_cache=use_cache,
        )
        return out.logits[:, -input_ids.shape[1] :], out.cache

    # ---- sampling ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        pixel_values: torch.Tensor,
        k: int = 1,
        temperature: float = 1.0,
        max_new_tokens: int | None = None,
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> Samples:
        """Ancestral sampling of k sequences per image from the full distribution at `temperature`."""
        max_new_tokens = max_new_tokens or self.max_new_tokens
        batch = pixel_values.shape[0]
        n = batch * k
        device = pixel_values.device
        context = self._encode(pixel_values)  # (B, S, H): each image encoded once
        start = torch.full((batch, 1), self.start_token_id, dtype=torch.long, device=device)
        logits, cache = self._decode(context, start)
        # Share the prefix with the k samples: repeat the cache and context rows, image-major.
        cache.batch_repeat_interleave(k)
        context = context.repeat_interleave(k, dim=0) if self.family != "git" else None
        logits = logits[:, -1].repeat_interleave(k, dim=0)  # (N, V)

        tokens = torch.full((n, max_new_tokens), self.pad_token_id, dtype=torch.long, device=device)
        token_log_probs = torch.zeros((n, max_new_tokens), device=device)
        mask = torch.zeros((n, max_new_tokens), dtype=torch.bool, device=device)
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        steps = 0
        for t in range(max_new_tokens):
            log_p = F.log_softmax(logits.float() / temperature, dim=-1)  # (N, V)
            if greedy:
                next_token = log_p.argmax(dim=-1)
            else:
                next_token = torch.multinomial(log_p.exp(), 1, generator=generator).squeeze(1)
            next_token = torch.where(finished, self.pad_token_id, next_token)
            tokens[:, t] = next_token
            mask[:, t] = ~finished
            token_log_probs[:, t] = torch.where(finished, 0.0, log_p.gather(1, next_token[:, None]).squeeze(1))
            if self.eos_token_id is not None:
                finished |= next_token == self.eos_token_id
            steps = t + 1
            if finished.all() or steps == max_new_tokens:
                break
            logits, cache = self._decode(context, next_token[:, None], cache, position=t + 1)
            logits = logits[:, -1]
        return Samples(tokens[:, :steps], mask[:, :steps], token_log_probs[:, :steps], finished)

    def greedy(self, pixel_values: torch.Tensor, max_new_tokens: int | None = None) -> Samples:
        """The mode, token by token (for evaluation and the SCST baseline)."""
        return self.sample(pixel_values, k=1, max_new_tokens=max_new_tokens, greedy=True)

    # ---- teacher forcing ---------------------------------------------------------------------------------------

    def token_log_probs(
        self, pixel_values: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, k: int = 1, temperature: float = 1.0
    ) -> torch.Tensor:
        """Per-token log-probs (B*k, T) of given sequences, with gradients; zero where mask is False."""
        batch = pixel_values.shape[0]
        n, length = tokens.shape
        if n != batch * k:
            raise ValueError(f"tokens has {n} rows, expected images × k = {batch} × {k}")
        start = torch.full((n, 1), self.start_token_id, dtype=torch.long, device=tokens.device)
        inputs = torch.cat([start, tokens[:, :-1]], dim=1)  # (N, T): shifted right
        context = self._encode(pixel_values)
        if self.family == "git":
            # GIT tiles image features over the batch (row r sees image r % B): feed sample-major, then undo.
            order = torch.arange(n, device=tokens.device).view(batch, k).t().reshape(-1)
            logits, _ = self._decode(context, inputs[order])
            logits = logits[torch.argsort(order)]
        else:
            logits, _ = self._decode(context.repeat_interleave(k, dim=0), inputs)
        log_p = F.log_softmax(logits.float() / temperature, dim=-1)  # (N, T, V)
        picked = log_p.gather(2, tokens[:, :, None]).squeeze(2)
        return picked * mask

    def log_prob(
        self, pixel_values: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, k: int = 1, temperature: float = 1.0
    ) -> torch.Tensor:
        """Sequence log-probs (B*k,) of given sequences by teacher forcing, differentiable."""
        return self.token_log_probs(pixel_values, tokens, mask, k, temperature).sum(dim=1)

    # ---- conveniences ------------------------------------------------------------------------------------------

    def parameters(self):
        return self.model.parameters()

    def eval(self) -> "SequencePolicy":
        self.model.eval()
        return self

    def train(self, mode: bool = True) -> "SequencePolicy":
        self.model.train(mode)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device
