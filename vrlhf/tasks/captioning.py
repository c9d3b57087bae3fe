"""Captioning: image -> text with any HF image-to-text model; CIDEr-D (EOS-aware) as the metric reward."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, PreTrainedTokenizerFast, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

from vrlhf.metrics import CiderD, bleu4_corpus, cider_d, distinct_n, tokenize
from vrlhf.policy import SequencePolicy

NAME = "captioning"
SPECIAL = {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "unk": "<unk>"}
EOS_WORD = "eos"  # EOS counted as a word for CIDEr (Rennie et al.): fragments that stop early lose n-grams


class Caption(str):
    """A decoded caption that remembers whether the model ended it (emitted EOS) within the token budget."""

    finished: bool = True

    def __new__(cls, text: str, finished: bool = True):
        obj = super().__new__(cls, text)
        obj.finished = finished
        return obj


def row_problem(row: dict) -> str | None:
    """What makes `row` unusable for captioning, or None: it needs at least one non-empty reference caption."""
    if not any(caption.strip() for caption in row.get("captions") or []):
        return f"no non-empty caption (captioning needs at least one reference caption per row; got {row.get('captions')!r})"
    return None


# ---- policy ----------------------------------------------------------------------------------------------------


def build_tokenizer(captions: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the words of `captions` (saved and loaded as a standard HF tokenizer)."""
    words = sorted({w for c in captions for w in tokenize(c).split()})
    vocab = {tok: i for i, tok in enumerate([SPECIAL["bos"], SPECIAL["eos"], SPECIAL["pad"], SPECIAL["unk"], *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk"]))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"],
        pad_token=SPECIAL["pad"],
        unk_token=SPECIAL["unk"],
    )


def build_policy(
    tokenizer: PreTrainedTokenizerFast,
    image_size: int = 48,
    patch_size: int = 8,
    hidden_size: int = 128,
    encoder_layers: int = 3,
    decoder_layers: int = 3,
    heads: int = 4,
    max_new_tokens: int = 28,
    dropout: float = 0.0,
    seed: int = 0,
) -> SequencePolicy:
    """A small ViT + GPT2 `VisionEncoderDecoderModel` built from configs (the demo captioner's architecture)."""
    torch.manual_seed(seed)
    encoder = ViTConfig(
        image_size=image_size, patch_size=patch_size, num_channels=3, hidden_size=hidden_size,
        num_hidden_layers=encoder_layers, num_attention_heads=heads, intermediate_size=4 * hidden_size,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    decoder = GPT2Config(
        vocab_size=len(tokenizer), n_positions=max_new_tokens + 2, n_embd=hidden_size, n_layer=decoder_layers,
        n_head=heads, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = VisionEncoderDecoderModel(VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder))
    model.config.decoder_start_token_id = tokenizer.bos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    return SequencePolicy(
        model, tokenizer,
        start_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, max_new_tokens=max_new_tokens,
        meta={"task": NAME, "image_size": image_size, "image_mean": 0.5, "image_std": 0.5},
    )


def load_policy(path: str | Path) -> SequencePolicy:
    policy = SequencePolicy.from_pretrained(path)
    if policy.tokenizer is None:
        raise ValueError(f"{path}: a captioning policy needs a tokenizer in its directory")
    return policy.eval()


def pixel_values(policy: SequencePolicy, images: list[Image.Image]) -> torch.Tensor:
    """(B, 3, S, S) normalised RGB at the policy's input size."""
    size, mean, std = policy.meta["image_size"], policy.meta["image_mean"], policy.meta["image_std"]
    arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0 for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return ((x - mean) / std).to(policy.device)


# ---- tokens <-> text --------------------------------------------------------------------------------------------


def decode(policy: SequencePolicy, rows: list[dict], tokens: torch.Tensor, k: int = 1) -> list[Caption]:
    """Tokens (B*k, T) -> captions, cut at the first EOS; `Caption.finished` records whether EOS came."""
    eos = policy.eos_token_id
    special = set(policy.tokenizer.all_special_ids)
    captions = []
    for row in tokens.tolist():
        finished = eos in row
        words = row[: row.index(eos)] if finished else row
        captions.append(Caption(policy.tokenizer.decode([t for t in words if t not in special]).strip(), finished))
    return captions


def encode_captions(policy: SequencePolicy, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> (tokens, mask) with EOS appended, padded: the teacher-forcing targets."""
    ids = [policy.tokenizer(tokenize(c), add_special_tokens=False)["input_ids"][: policy.max_new_tokens - 1] for c in captions]
    ids = [seq + [policy.eos_token_id] for seq in ids]
    length = max(map(len, ids))
    tokens = torch.full((len(ids), length), policy.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.bool)
    for i, seq in enumerate(ids):
        tokens[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = True
    return tokens.to(policy.device), mask.to(policy.device)


def reference_tokens(policy: SequencePolicy, rows: list[dict], rng: random.Random | None = None):
    """One reference caption per row (random when `rng` is given, else the first) as (tokens, mask)."""
    pick = (lambda caps: rng.choice(caps)) if rng else (lambda caps: caps[0])
    return encode_captions(policy, [pick(row["captions"]) for row in rows])


# ---- rewards and metrics ----------------------------------------------------------------------------------------


def _with_eos(text: str) -> str:
    return f"{tokenize(text)} {EOS_WORD}".strip()


def metric_reward(name: str, train_rows: list[dict], unfinished: str | float = "zero", eos_as_word: bool = True):
    """CIDEr-D reward with document frequencies computed once from the training references.

    `unfinished`: what a sample that never emitted EOS within `max_new_tokens` gets: "zero" (default: a run-on
    caption earns nothing), "score" (scored like any other), or a number (a fixed penalty).
    `eos_as_word`: append an EOS word to finished candidates and to every reference, so stopping right counts.
    """
    if name != "cider_d":
        raise ValueError(f"unknown captioning metric reward {name!r}; available: cider_d")
    if isinstance(unfinished, str) and unfinished not in {"zero", "score"}:
        unfinished = float(unfinished)
    prep = _with_eos if eos_as_word else tokenize
    refs_of = lambda row: [prep(c) for c in row["captions"]]  # noqa: E731
    scorer = CiderD([refs_of(row) for row in train_rows])

    def cider_d_reward(rows: list[dict], outputs: list[str]) -> torch.Tensor:
        k = len(outputs) // len(rows)
        finished = [getattr(o, "finished", True) for o in outputs]
        candidates = [prep(o) if f or not eos_as_word else tokenize(o) for o, f in zip(outputs, finished)]
        references = [refs_of(rows[i // k]) for i in range(len(outputs))]
        scores = scorer.score(candidates, references)
        if unfinished != "score":
            fill = 0.0 if unfinished == "zero" else float(unfinished)
            scores = np.where(finished, scores, fill)
        return torch.as_tensor(scores, dtype=torch.float32)

    cider_d_reward.__name__ = "cider_d"
    return cider_d_reward


METRIC_REWARDS = ("cider_d",)


def eval_metrics(rows: list[dict], outputs: list[str]) -> dict[str, float]:
    """Held-out caption metrics: CIDEr-D (df from these references), BLEU-4, length, EOS rate, distinct-2, oracle."""
    candidates = [tokenize(o) for o in outputs]
    references = [[tokenize(c) for c in row["captions"]] for row in rows]
    metrics = {
        "cider_d": float(np.mean(cider_d(candidates, references))),
        "bleu4": float(bleu4_corpus(candidates, references)),
        "words": float(np.mean([len(c.split()) for c in candidates])),
        "eos_rate": float(np.mean([getattr(o, "finished", True) for o in outputs])),
        "distinct_2": float(distinct_n(candidates, 2)),
    }
    if all(row.get("attributes") for row in rows):
        from vrlhf.tasks import caption_oracle

        metrics["oracle_score"] = float(np.mean([caption_oracle.score(r, o) for r, o in zip(rows, outputs)]))
    return metrics


def render(output: str) -> str:
    """What an annotator sees for one output."""
    return str(output)
