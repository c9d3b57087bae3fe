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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from vrlhf.errors import ModelError
from vrlhf.families import adapter_of

POLICY_FILE = "policy.json"  # written on save; read when present (our own policies), never required
DEFAULT_MAX_NEW_TOKENS = 32  # a caption's budget when neither policy.json nor the generation config sets one
# Teacher forcing turns logits into log-probs this many logits at a time (128 MB in fp32; 1k tokens at V = 32k):
# the whole (N, T, V) tensor is 2 GB per copy at N = 512, T = 32, V = 32k, and 17 GB with PaliGemma's vocabulary.
LOGITS_PER_CHUNK = 1 << 25


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


def saved_meta(path: str | Path) -> dict | None:
    """The `meta` a local directory's policy.json holds, read without loading the model (a task tells another
    task's policy from it before any weights load); None without a policy.json (a hub id, a checkpoint we did not
    save)."""
    spec_file = Path(path) / POLICY_FILE
    if not spec_file.is_file():
        return None
    try:
        meta = json.loads(spec_file.read_text()).get("meta") or {}
    except (ValueError, AttributeError) as error:
        raise ModelError(f"{spec_file}: not a policy file this code reads ({error})") from None
    return meta if isinstance(meta, dict) else {}


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
        banned = self._banned(device)  # on the device once, not a host-to-device copy per token

        tokens = torch.full((n, max_new_tokens), self.pad_token_id, dtype=torch.long, device=device)
        token_log_probs = torch.zeros((n, max_new_tokens), device=device)
        mask = torch.zeros((n, max_new_tokens), dtype=torch.bool, device=device)
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        # "Every sequence has ended" after the previous step, on its way to the host. On a GPU it is read only once
        # this step's forward is queued, so the host never waits for the device (a sync per token stalls the queue);
        # when all had ended that forward was spare: nothing of it is kept and no random number is drawn for it.
        all_finished, late = None, reads_flag_late(device)
        steps = max_new_tokens
        for t in range(max_new_tokens):
            if t and not late and all_finished.wait():
                steps = t
                break
            if t:
                logits, cache = self.adapter.next_step(self, context, tokens[:, t - 1 : t], cache, t)
                if late and all_finished.wait():
                    steps = t
                    break
            log_p = F.log_softmax(self._allowed(logits.float(), banned) / temperature, dim=-1)  # (N, V)
            if greedy:
                next_token = log_p.argmax(dim=-1)
            else:
                next_token = torch.multinomial(log_p.exp(), 1, generator=generator).squeeze(1)
            next_token = torch.where(finished, self.pad_token_id, next_token)
            tokens[:, t] = next_token
            mask[:, t] = ~finished
            token_log_probs[:, t] = torch.where(finished, 0.0, log_p.gather(1, next_token[:, None]).squeeze(1))
            finished |= torch.isin(next_token, stops)
            all_finished = HostFlag(finished.all())
        return Samples(tokens[:, :steps], mask[:, :steps], token_log_probs[:, :steps], finished)

    def greedy(self, pixel_values: torch.Tensor, max_new_tokens: int | None = None) -> Samples:
        """The mode, token by token (for evaluation and the SCST baseline)."""
        return self.sample(pixel_values, k=1, max_new_tokens=max_new_tokens, greedy=True)

    # ---- teacher forcing ---------------------------------------------------------------------------------------

    def token_log_probs(
        self, pixel_values: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, k: int = 1, temperature: float = 1.0
    ) -> torch.Tensor:
        """Per-token log-probs (B*k, T) of given sequences, with gradients; zero where mask is False.

        No (N, T, V) tensor is ever built: the model runs with its output head deferred and returns the head's inputs
        (N, T, H); the head then runs on a few rows at a time (LOGITS_PER_CHUNK logits), each chunk reduced at once
        to its targets' log-probs (log_softmax in fp32, as the sampler computes them). With gradients and several
        chunks each chunk is checkpointed: its logits are recomputed in the backward pass instead of kept."""
        batch = pixel_values.shape[0]
        n, length = tokens.shape
        if n != batch * k:
            raise ValueError(f"tokens has {n} rows, expected images × k = {batch} × {k}")
        with deferred_head(self.model) as (head, vocab_size):
            states = self.adapter.teacher_forced_logits(self, pixel_values, tokens, k)  # (N, T, H): the head's inputs
        banned = self._banned(states.device)

        def target_log_probs(states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # (rows, T)
            logits = self._allowed(head(states).float(), banned)  # (rows, T, V)
            if temperature != 1.0:  # (dividing by 1 is exact: skipping it only saves a copy)
                logits = logits / temperature
            return F.log_softmax(logits, dim=-1).gather(2, targets[:, :, None]).squeeze(2)

        rows = max(1, LOGITS_PER_CHUNK // (length * vocab_size))
        # One chunk keeps its log-softmax for the backward pass (at most LOGITS_PER_CHUNK floats); several are
        # checkpointed, so that each chunk's logits exist only while it is computed, in either pass.
        checkpointed = torch.is_grad_enabled() and states.requires_grad and n > rows
        picked = torch.cat([
            checkpoint(target_log_probs, states[i : i + rows], tokens[i : i + rows], use_reentrant=False,
                       preserve_rng_state=False) if checkpointed else target_log_probs(states[i : i + rows],
                                                                                        tokens[i : i + rows])
            for i in range(0, n, rows)])  # (N, T)
        return torch.where(mask, picked, 0.0)

    def log_prob(
        self, pixel_values: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, k: int = 1, temperature: float = 1.0
    ) -> torch.Tensor:
        """Sequence log-probs (B*k,) of given sequences by teacher forcing, differentiable."""
        return self.token_log_probs(pixel_values, tokens, mask, k, temperature).sum(dim=1)

    def _banned(self, device: torch.device) -> torch.Tensor | None:
        """The banned ids (a VLM's image placeholder) as a tensor on `device`, or None when there are none."""
        return torch.tensor(self.banned_token_ids, device=device) if self.banned_token_ids else None

    @staticmethod
    def _allowed(logits: torch.Tensor, banned: torch.Tensor | None) -> torch.Tensor:
        """Logits with the banned ids at -inf: never sampled, no probability."""
        return logits if banned is None else logits.index_fill(-1, banned, float("-inf"))

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


def reads_flag_late(device: torch.device) -> bool:
    """Whether the sampler reads "all ended" one step late: on a GPU, where reading it at once is a sync."""
    return device.type == "cuda"


class HostFlag:
    """A bool tensor copied to the host without blocking; `wait()` blocks only until that copy has landed (on a GPU
    an event recorded behind it, not a sync of everything queued since)."""

    def __init__(self, flag: torch.Tensor):
        self.value = flag.to("cpu", non_blocking=flag.is_cuda)  # lands in pinned memory; the event says when
        self.event = torch.cuda.Event() if flag.is_cuda else None
        if self.event is not None:
            self.event.record()

    def wait(self) -> bool:
        if self.event is not None:
            self.event.synchronize()
        return bool(self.value)


@contextmanager
def deferred_head(model):
    """Within: the model's forward returns its output head's inputs (N, T, H) where it returned logits (N, T, V).
    Yields (head, vocabulary size), head: inputs -> logits for any slice of them, as the model computes them
    (PaliGemma 2's soft-capping included). The head module is swapped for an identity and back, nothing else."""
    base = getattr(model, "get_base_model", lambda: model)()  # PEFT: the wrapped model, LoRA layers in place
    head = next(module.get_output_embeddings() for module in base.modules()  # BLIP: its text decoder's
                if isinstance(module, PreTrainedModel) and module.get_output_embeddings() is not None)
    name = next(name for name, module in base.named_modules() if module is head)
    parent_name, _, attribute = name.rpartition(".")
    parent = base.get_submodule(parent_name)
    text_config = base.config.get_text_config()
    cap = getattr(text_config, "final_logit_softcapping", None)  # applied to what the head returns: ours now

    def logits(states: torch.Tensor) -> torch.Tensor:
        out = head(states)
        return out if cap is None else torch.tanh(out / cap) * cap

    setattr(parent, attribute, torch.nn.Identity())
    if cap is not None:
        text_config.final_logit_softcapping = None
    try:
        yield logits, head.weight.shape[0]
    finally:
        setattr(parent, attribute, head)
        if cap is not None:
            text_config.final_logit_softcapping = cap


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
