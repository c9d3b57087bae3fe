"""Captioning: image -> text with any HF image-to-text model; CIDEr-D (EOS-aware) as the metric reward."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from vrlhf import REPO
from vrlhf.errors import ConfigError, ModelError
from vrlhf.metrics import CiderD, bleu4_corpus, cider_d, distinct_n, tokenize
from vrlhf.models import vit_gpt2
from vrlhf.policy import SequencePolicy, saved_meta
from vrlhf.tasks.caption_edits import edits as edits  # optional task member: vrlhf sample --edits

# ---- what this task is (the task contract, docs/ARCHITECTURE.md) ----------------------------------------------
NAME = "captioning"
# Outputs are captions (str): stored as text in the labeling DB and exports, shown as text (people read the caption;
# the reward model for shown text scores (image, text)).
STORED = "text"
SHOWN = "text"
METRIC_REWARDS = ("cider_d",)
DEFAULT_REWARDS = ("cider_d=1.0",)  # `vrlhf tune` without --reward
DEMO_POLICY = REPO / "data/demo/captioner"  # the committed demo checkpoint (scripts/make_demo_checkpoints.sh)
ORACLE = "caption_oracle"  # vrlhf.tasks.caption_oracle: the simulated annotator over the shapes ground truth
# With a dense reward each token is credited with the reward to go (`vrlhf tune --token_credit auto`): crediting a
# token with its own word only would charge the shapes left out to the EOS token alone, so captions learn to run on.
TOKEN_CREDIT = "to_go"
# Reward models (`vrlhf train-reward`). Starting the caption reward from the demo captioner's ViT (which already
# knows colours, kinds, sizes and positions) lifts held-out accuracy from 82% to 92% of the annotator's ceiling
# (bench/results/reward_model.md).
REWARD_IMAGE_ENCODER = DEMO_POLICY
FLIPS_KEEP_PREFERENCES = False  # a flipped image swaps left and right: "the circle on the left" becomes wrong
# The demo report's columns (loop/report.py): held-out metrics, then the annotators' judgment against MLE
REPORT_METRICS = ("cider_d", "bleu4", "oracle_score", "win_rate_vs_mle_greedy", "win_rate_vs_mle_sampled",
                  "ties_vs_mle_greedy", "eos_rate", "words")

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
        return (f"no non-empty caption (captioning needs at least one reference caption per row; "
                f"got {row.get('captions')!r})")
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
    model = vit_gpt2(
        channels=3, vocab_size=len(tokenizer), max_positions=max_new_tokens + 2,
        start_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
        encoder_layers=encoder_layers, decoder_layers=decoder_layers, heads=heads, dropout=dropout, seed=seed,
    )
    return SequencePolicy(
        model, tokenizer,
        start_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, max_new_tokens=max_new_tokens,
        meta={"task": NAME, "image_size": image_size, "image_mean": 0.5, "image_std": 0.5},
    )


def new_policy(train_rows: list[dict], **sizes) -> SequencePolicy:
    """A fresh policy for these training rows: a word-level tokenizer over their captions, then the model."""
    return build_policy(build_tokenizer([c for row in train_rows for c in row["captions"]]), **sizes)


def load_policy(path: str | Path) -> SequencePolicy:
    """A captioning policy from a local model directory or a hub id: one we saved, or any supported checkpoint
    (VisionEncoderDecoder, BLIP, GIT, LLaVA, Idefics3/SmolVLM, PaliGemma) with its own processor. ModelError (one
    line) for anything else: another task's policy is told from its policy.json, before any weights load."""
    task = (saved_meta(path) or {}).get("task", NAME) if Path(path).is_dir() else NAME
    if task != NAME:
        raise ModelError(f"{path}: this policy is for the {task} task; the captioning task needs a captioner (a "
                         f"model with a tokenizer: ours, or a supported Hugging Face captioner or VLM)")
    try:
        policy = SequencePolicy.from_pretrained(path)
    except ModelError:
        raise
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: cannot load a policy ({str(error).splitlines()[0]})") from None
    if policy.tokenizer is None:
        raise ModelError(f"{path}: a captioning policy needs a tokenizer in its directory")
    if policy.image_processor is None and "image_size" not in policy.meta:
        raise ModelError(f"{path}: no image processor (processor_config.json or preprocessor_config.json) to prepare "
                         f"its images with")
    return policy.eval()


def pixel_values(policy: SequencePolicy, images: list[Image.Image]) -> torch.Tensor:
    """The policy's input, (B, ...) with B first: the model's own image processor when it has one (any checkpoint),
    else (B, 3, S, S) RGB normalised with the numbers in policy.json (our own policies)."""
    if policy.image_processor is not None:
        return policy.adapter.pixel_values(policy, [im.convert("RGB") for im in images]).to(policy.device)
    size, mean, std = policy.meta["image_size"], policy.meta["image_mean"], policy.meta["image_std"]
    arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
              for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return ((x - mean) / std).to(policy.device)


# ---- tokens <-> text --------------------------------------------------------------------------------------------


def decode(policy: SequencePolicy, rows: list[dict], tokens: torch.Tensor, k: int = 1) -> list[Caption]:
    """Tokens (B*k, T) -> captions, cut at the first EOS (any stop id); `Caption.finished` records whether it came."""
    stops = set(policy.stop_token_ids)
    special = set(policy.tokenizer.all_special_ids)
    captions = []
    for row in tokens.tolist():
        end = next((i for i, t in enumerate(row) if t in stops), None)
        words = row if end is None else row[:end]
        text = policy.tokenizer.decode([t for t in words if t not in special], skip_special_tokens=True)
        captions.append(Caption(text.strip(), end is not None))
    return captions


def _target_text(policy: SequencePolicy, caption: str) -> str:
    """A caption as the tokenizer should read it: normalised words for our word-level vocabulary (it knows no
    punctuation or capitals), the caption as written for a subword tokenizer (a pretrained model's)."""
    core = getattr(policy.tokenizer, "backend_tokenizer", None)
    word_level = core is not None and type(core.model).__name__ == "WordLevel"
    return tokenize(caption) if word_level else caption.strip()


def encode_captions(policy: SequencePolicy, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> (tokens, mask) with EOS appended, padded: the teacher-forcing targets."""
    ids = [policy.tokenizer(_target_text(policy, c), add_special_tokens=False)["input_ids"][: policy.max_new_tokens - 1]
           for c in captions]
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


def heldout_targets(policy: SequencePolicy, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Teacher-forcing targets of the held-out loss: the first k references of every row, k the smallest count
    in `rows` -> (tokens (B*k, T), mask, k), image-major."""
    k = min(len(row["captions"]) for row in rows)
    tokens, mask = encode_captions(policy, [row["captions"][j] for row in rows for j in range(k)])
    return tokens, mask, k


def ideal_outputs(policy: SequencePolicy, rows: list[dict], rng: np.random.Generator) -> list[str] | None:
    """What the annotators want, where it can be written down: every attribute of every shape, stated truly (no
    caption scores higher with the oracle). None unless every row has its shapes ground truth."""
    if not all(row.get("attributes") for row in rows):
        return None
    from vrlhf.shapes_grammar import caption

    return [caption(row["attributes"]["shapes"], rng) for row in rows]


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
        raise ConfigError(f"unknown captioning metric reward {name!r}; available: cider_d")
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



def token_rewards(policy: SequencePolicy, tokens: torch.Tensor, outputs: list, regions: list) -> torch.Tensor:
    """Each sampled token's share of a dense reward -> (N, T): `regions[i]` holds one value per word of caption i
    (`caption_oracle.words`: lower-case runs of letters) and one for its end. A word's value is split evenly over the
    tokens that spell it; the end's goes to the EOS token (the last token when the caption ran out of budget). Each
    row sums to its values' sum."""
    from vrlhf.tasks.caption_oracle import words

    stops, special = set(policy.stop_token_ids), set(policy.tokenizer.all_special_ids)
    out = torch.zeros(tokens.shape, dtype=torch.float32)
    for i, (row, caption, values) in enumerate(zip(tokens.tolist(), outputs, regions, strict=True)):
        values = np.asarray(values, dtype=np.float64)
        if len(values) != len(words(caption)) + 1:
            raise ValueError(f"captioning: {len(values)} dense reward values for a caption of {len(words(caption))} "
                             f"words (one per word and one for the end expected): {caption!r}")
        end = next((t for t, token in enumerate(row) if token in stops), None)
        owner = _word_of_each_token(policy, row[:end], special)
        last = end if end is not None else len(row) - 1
        share = np.zeros(len(row))
        share[last] += values[-1]
        for w, value in enumerate(values[:-1]):
            spelled = [t for t, o in enumerate(owner) if o == w]
            if spelled:
                share[spelled] += value / len(spelled)
            else:  # a word no single token spells (cannot happen with our word-level tokenizer): keep the sum
                share[last] += value
        out[i] = torch.from_numpy(share)
    return out


def _word_of_each_token(policy: SequencePolicy, row: list[int], special: set) -> list[int]:
    """For each token of `row` (up to EOS), the index of the word (`caption_oracle.words` of the decoded caption) whose
    letters it ends in, or -1 (a special token, a space, punctuation). Decoding each prefix finds where a token ends,
    for a word-level or a subword tokenizer alike."""
    text = policy.tokenizer.decode([token for token in row if token not in special], skip_special_tokens=True)
    word_at = np.full(len(text) + 1, -1)
    for w, match in enumerate(re.finditer(r"[a-z]+", text.lower())):
        word_at[match.start() : match.end()] = w
    owner, prefix = [], []
    for token in row:
        if token in special:
            owner.append(-1)
            continue
        prefix.append(token)
        ends = len(policy.tokenizer.decode(prefix, skip_special_tokens=True)) - 1
        owner.append(int(word_at[ends]) if 0 <= ends < len(text) else -1)
    return owner


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


def render(row: dict, output: str) -> str:
    """What an annotator (and the reward model) sees of one output for `row`: the caption."""
    return str(output)


def to_stored(output: str) -> str:
    """An output as the labeling DB and exports keep it (STORED: text): the caption."""
    return str(output)


def from_stored(value: str, row: dict) -> str:
    """An output back from what `to_stored` kept (for the input `row`)."""
    return str(value)


def transplant(output: str, row: dict) -> str:
    """An output made for another input, carried onto `row`: a caption stays as written (almost surely wrong here)."""
    return output


def show_input(image: Image.Image) -> Image.Image:
    """What an annotator sees of the input: the image itself."""
    return image
