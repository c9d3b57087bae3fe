"""A sequence policy over any Hugging Face image-to-text model: exact sampling and teacher-forced log-probs.

Supported families (one small adapter each, in `vrlhf/families/`): `VisionEncoderDecoderModel` (e.g. ViT + GPT2),
`BlipForConditionalGeneration`, `GitForCausalLM`, and the decoder-only VLMs LLaVA, Idefics3 (SmolVLM) and PaliGemma,
which answer a fixed prompt. We run our own ancestral-sampling loop instead of `generate()` so that

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
from transformers import PreTrainedModel

from vrlhf.errors import ModelError
from vrlhf.families import adapter_of

POLICY_FILE = "policy.json"  # written on save; read when present (our own policies), never required
DEFAULT_MAX_NEW_TOKENS = 32  # a caption's budget when neither policy.json nor the generation config sets one


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
    """The model's family (its `config.model_type`); TypeError for a model class no adapter serves."""
    adapter_of(model)
    return getattr(model, "get_base_model", lambda: model)().config.model_type


class SequencePolicy:
    """Wraps an HF image-to-text model; `meta` holds what the task needs to pre/post-process (saved in policy.json).

    `processor` / `image_processor`: the model's own preprocessing (a VLM needs its processor); a policy without an
    image processor normalises with `meta` (our own older policies). `eos_token_id` may be a list: every id in it
    ends a sequence (`stop_token_ids`), the first is the one appended to training targets. `start_token_id` is None
    for a VLM, whose prompt starts the answer (`prompt_ids`, computed by its adapter)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer=None,
        *,
        start_token_id: int | None,
        eos_token_id: int | list[int] | None,
        pad_token_id: int,
        max_new_tokens: int,
        meta: dict | None = None,
        processor=None,
        image_processor=None,
    ):
        self.model = model
        self.family = family_of(model)  # TypeError for a model no adapter serves
        self.processor = processor
        self.tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
        self.image_processor = image_processor if image_processor is not None else getattr(
            processor, "image_processor", None)
        self.start_token_id = start_token_id
        stops = eos_token_id if isinstance(eos_token_id, (list, tuple)) else [] if eos_token_id is None else [
            eos_token_id]
        self.stop_token_ids = tuple(int(t) for t in stops)
        self.eos_token_id = self.stop_token_ids[0] if self.stop_token_ids else None
        self.pad_token_id = pad_token_id
        self.max_new_tokens = max_new_tokens
        self.meta = dict(meta or {})
        self.prompt_ids = None  # (1, P) for a VLM
        self.adapter.prepare(self)
        self.banned_token_ids = tuple(self.adapter.banned_token_ids(self))

    @property
    def adapter(self):
        """The family's adapter module (vrlhf/families/), looked up from the model (so a policy deep-copies)."""
        return adapter_of(self.model)

    # ---- persistence -------------------------------------------------------------------------------------------

    def save(self, out_dir: str | Path) -> Path:
        """Write a standard model directory: config + safetensors + processor or tokenizer (+ image processor) +
        policy.json (our ids, budget and meta: what `from_pretrained` would otherwise derive from the config)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True)
        if self.processor is not None:
            self.processor.save_pretrained(out)
        else:
            for part in (self.tokenizer, self.image_processor):
                if part is not None:
                    part.save_pretrained(out)
        stops = list(self.stop_token_ids)
        spec = dict(
            family=self.family,
            start_token_id=self.start_token_id,
            eos_token_id=stops[0] if len(stops) == 1 else (stops or None),
            pad_token_id=self.pad_token_id,
            max_new_tokens=self.max_new_tokens,
            meta=self.meta,
        )
        (out / POLICY_FILE).write_text(json.dumps(spec, indent=2))
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path, **model_kwargs) -> "SequencePolicy":
        """A policy from a local model directory or a hub id of a supported family (ModelError, one line, if not).

        The model's own processor, tokenizer and image processor come with it; start/stop/pad ids come from its
        config and generation config, unless a policy.json (written by `save`) is there to say them."""
        from vrlhf import families

        model, adapter = families.load_model(path, **model_kwargs)
        processor, tokenizer, image_processor = families.load_processing(path, adapter)
        spec_file = Path(path) / POLICY_FILE
        if spec_file.is_file():
            try:
                spec = json.loads(spec_file.read_text())
                spec.pop("family", None)
                return cls(model, tokenizer, processor=processor, image_processor=image_processor, **spec)
            except (ValueError, TypeError) as error:
                raise ModelError(f"{spec_file}: not a policy file this code reads ({error})") from None
        start, stops, pad = adapter.special_ids(model, tokenizer)
        if start is None and adapter is not families.vlm:
            raise ModelError(f"{path}: no start token in its config or generation config (decoder_start_token_id "
                             f"or bos_token_id)")
        if not stops or pad is None:
            raise ModelError(f"{path}: no end-of-sequence or pad token id in its config, generation config or "
                             f"tokenizer")
        policy = cls(model, tokenizer, start_token_id=start, eos_token_id=stops, pad_token_id=pad,
                     max_new_tokens=DEFAULT_MAX_NEW_TOKENS, processor=processor, image_processor=image_processor)
        policy.max_new_tokens = default_budget(policy)
        return policy

    # ---- the family-specific pieces live in the adapter (vrlhf/families/) ---------------------------------------

    def _encode(self, pixel_values: torch.Tensor):
        """Image -> what the decoder needs of it, once per image (B rows)."""
        return self.adapter.encode(self, pixel_values)

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
        context = self._encode(pixel_values)  # each image encoded once
        logits, cache, context = self.adapter.first_step(self, context)  # (B, V)
        # Share the prefix with the k samples: repeat the cache and context rows, image-major.
        cache.batch_repeat_interleave(k)
        context = context.repeat_interleave(k, dim=0) if context is not None else None
        logits = logits.repeat_interleave(k, dim=0)  # (N, V)
        stops = torch.tensor(self.stop_token_ids, dtype=torch.long, device=device)

        tokens = torch.full((n, max_new_tokens), self.pad_token_id, dtype=torch.long, device=device)
        token_log_probs = torch.zeros((n, max_new_tokens), device=device)
        mask = torch.zeros((n, max_new_tokens), dtype=torch.bool, device=device)
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        steps = 0
        for t in range(max_new_tokens):
            log_p = F.log_softmax(self._allowed(logits.float()) / temperature, dim=-1)  # (N, V)
            if greedy:
                next_token = log_p.argmax(dim=-1)
            else:
                next_token = torch.multinomial(log_p.exp(), 1, generator=generator).squeeze(1)
            next_token = torch.where(finished, self.pad_token_id, next_token)
            tokens[:, t] = next_token
            mask[:, t] = ~finished
            token_log_probs[:, t] = torch.where(finished, 0.0, log_p.gather(1, next_token[:, None]).squeeze(1))
            finished |= torch.isin(next_token, stops)
            steps = t + 1
            if finished.all() or steps == max_new_tokens:
                break
            logits, cache = self.adapter.next_step(self, context, next_token[:, None], cache, t + 1)
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
        logits = self.adapter.teacher_forced_logits(self, pixel_values, tokens, k)  # (N, T, V)
        log_p = F.log_softmax(self._allowed(logits.float()) / temperature, dim=-1)  # (N, T, V)
        picked = log_p.gather(2, tokens[:, :, None]).squeeze(2)
        return torch.where(mask, picked, 0.0)

    def log_prob(
        self, pixel_values: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, k: int = 1, temperature: float = 1.0
    ) -> torch.Tensor:
        """Sequence log-probs (B*k,) of given sequences by teacher forcing, differentiable."""
        return self.token_log_probs(pixel_values, tokens, mask, k, temperature).sum(dim=1)

    def _allowed(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits with the banned ids (a VLM's image placeholder) at -inf: never sampled, no probability."""
        if not self.banned_token_ids:
            return logits
        return logits.index_fill(-1, torch.tensor(self.banned_token_ids, device=logits.device), float("-inf"))

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


def default_budget(policy: SequencePolicy) -> int:
    """Tokens a caption may take when nothing says: the generation config's max_new_tokens, else
    DEFAULT_MAX_NEW_TOKENS, within the positions the text model has left after the start token or prompt."""
    model = policy.model
    wanted = getattr(model.generation_config, "max_new_tokens", None) or DEFAULT_MAX_NEW_TOKENS
    config = model.config
    text = getattr(config, "decoder", None) or getattr(config, "text_config", None) or config
    limit = getattr(text, "n_positions", None) or getattr(text, "max_position_embeddings", None)
    if limit is None:
        return wanted
    used = policy.prompt_ids.shape[1] if policy.prompt_ids is not None else 1
    return max(1, min(wanted, limit - used))
