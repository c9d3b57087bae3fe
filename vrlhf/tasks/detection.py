"""Object detection: RGB image -> a set of boxes, each written as tokens `y0 x0 y1 x1 class confidence` (Pix2Seq's
layout with the paper's confidence token, vrlhf/tasks/detection_boxes.py), sampled autoregressively up to EOS.

The policy is our ViT + GPT2 (`vrlhf.models.vit_gpt2`) over a fixed vocabulary of coordinate bins, classes and
confidence levels, so k samples of an image are k box sets with exact log-probs, as for colorization. An output is
a `Detections` list of boxes `{"box": [x0, y0, x1, y1], "label", "score"}` in pixels of the row's image.
Metrics are COCO's (vrlhf/tasks/detection_metrics.py); the paper's reward is in vrlhf/tasks/detection_reward.py.
"""

from __future__ import annotations

import json
import random
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageColor, ImageDraw, ImageFont

from vrlhf import REPO
from vrlhf.errors import DataError, ModelError
from vrlhf.models import vit_gpt2
from vrlhf.policy import SequencePolicy, saved_meta
from vrlhf.tasks.box_annotators import annotated_boxes
from vrlhf.tasks.detection_boxes import (
    SHAPE_CLASSES,
    SLOTS,
    box_tokens,
    image_extent,
    tokens_to_boxes,
    true_boxes,
    vocabulary,
)

# ---- what this task is (the task contract, docs/ARCHITECTURE.md) ----------------------------------------------
NAME = "detection"
STORED = "text"  # a box set is stored (samples, exports) as JSON text (`to_stored` / `from_stored`)
SHOWN = "image"  # people, and the reward models, see the boxes drawn over the input (`render`; or `model_view`)
# The demo report's columns (loop/report.py): held-out COCO metrics, then the annotators' judgment against MLE
REPORT_METRICS = ("map", "ap50", "ar", "oracle_score", "win_rate_vs_mle_greedy", "win_rate_vs_mle_sampled",
                  "ties_vs_mle_greedy")
METRIC_REWARDS = ("map", "detection_reward", "detection_reward_conf")
DEFAULT_REWARDS = ("detection_reward=1.0",)  # the paper's recall-oriented reward (`vrlhf tune` without --reward)
DEMO_POLICY = REPO / "data/demo/detector"  # the committed demo checkpoint (data/demo/README.md)
ORACLE = "detection_oracle"  # vrlhf.tasks.detection_oracle: the simulated annotator
REWARD_IMAGE_ENCODER = ""  # a reward model reading the drawn boxes (`--reads render`) has the tiny image encoder
# `vrlhf train-reward` (and the demo) reads the boxes themselves by default: a box-set model, one value per box
# (reward_model/box_set_model.py); it ranks and tunes better than the image model on the drawing (docs/DEMO.md)
REWARD_READS = "boxes"
FLIPS_KEEP_PREFERENCES = False  # a flip moves the boxes: both outputs would have to be flipped with the input
# With a dense reward (one value per box, then the missed shapes' cost: detection_oracle.regions) a token is credited
# with what follows it (`vrlhf tune --token_credit auto`): a box's value depends on the boxes before it (a second box
# on a found shape is a duplicate only after the first), as a word's does in a caption (captioning: to_go too).
TOKEN_CREDIT = "to_go"


class Detections(list):
    """A decoded box set that remembers whether the model ended it (emitted EOS) within the token budget."""

    finished: bool = True

    def __init__(self, boxes=(), finished: bool = True):
        super().__init__(boxes)
        self.finished = finished


def row_problem(row: dict) -> str | None:
    """Detection needs true boxes: shapes attributes, or COCO-style `attributes["boxes"]`."""
    attributes = row.get("attributes") or {}
    if "shapes" in attributes or "boxes" in attributes or isinstance(row.get("objects"), dict):
        return None
    return ("no boxes (detection needs attributes with 'shapes', or 'boxes': [{'bbox': [x, y, w, h], "
            "'category': name}, ...], or a datasets 'objects' column with 'bbox' and 'category')")


def build_policy(
    classes: tuple[str, ...] | list[str] = SHAPE_CLASSES,
    image_size: int = 48,
    coord_bins: int | None = None,
    conf_levels: int = 10,
    max_boxes: int = 5,
    patch_size: int = 8,
    hidden_size: int = 128,
    encoder_layers: int = 3,
    decoder_layers: int = 3,
    heads: int = 4,
    dropout: float = 0.0,
    seed: int = 0,
) -> SequencePolicy:
    """A small ViT (RGB) + GPT2 over box tokens. `coord_bins` defaults to image_size + 1: every pixel edge is a bin,
    so a shape's tight box is exactly representable. `max_boxes` bounds a sample (room for duplicates to be seen)."""
    meta = {"task": NAME, "image_size": image_size, "coord_bins": coord_bins or image_size + 1,
            "classes": list(classes), "conf_levels": conf_levels, "max_boxes": max_boxes}
    vocab = vocabulary(meta)
    model = vit_gpt2(
        channels=3, vocab_size=vocab["size"], max_positions=SLOTS * max_boxes + 2, start_token_id=vocab["start"],
        pad_token_id=vocab["pad"], eos_token_id=vocab["eos"], image_size=image_size, patch_size=patch_size,
        hidden_size=hidden_size, encoder_layers=encoder_layers, decoder_layers=decoder_layers, heads=heads,
        dropout=dropout, seed=seed,
    )
    return SequencePolicy(model, None, start_token_id=vocab["start"], eos_token_id=vocab["eos"],
                          pad_token_id=vocab["pad"], max_new_tokens=SLOTS * max_boxes + 1, meta=meta)


def new_policy(train_rows: list[dict], **sizes) -> SequencePolicy:
    """A fresh policy: the shapes' 18 classes, or the classes the training rows' boxes name (sorted)."""
    names = sorted({b["label"] for row in train_rows for b in true_boxes(row)})
    classes = SHAPE_CLASSES if set(names) <= set(SHAPE_CLASSES) else names
    most = max((len(true_boxes(row)) for row in train_rows), default=3)
    return build_policy(classes, max_boxes=max(5, most + 2), **sizes)


DETECTOR_META = ("image_size", "coord_bins", "classes", "conf_levels", "max_boxes")  # policy.json (build_policy)


def load_policy(path: str | Path) -> SequencePolicy:
    """A detector: ours, its policy.json holding DETECTOR_META; anything else is one ModelError line, told from a local
    directory's files before any weights load."""
    if Path(path).is_dir():
        meta = saved_meta(path)
        if meta is None:
            from vrlhf.families import model_type

            model_type(path)  # ModelError (one line) for a folder that is no model of a supported family
        check_detector(path, meta or {})
    try:
        policy = SequencePolicy.from_pretrained(path).eval()
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: cannot load a policy ({str(error).splitlines()[0]})") from None
    check_detector(path, policy.meta)
    return policy


def check_detector(path: str | Path, meta: dict) -> None:
    if all(key in meta for key in DETECTOR_META):
        return
    task = meta.get("task") or "captioning"
    what = "a captioner" if task == "captioning" else f"a {task} policy"
    raise ModelError(f"{path}: this policy is {what}; the detection task needs a detector (a policy.json with "
                     f"{', '.join(DETECTOR_META)}, as `vrlhf pretrain --task detection` writes)")


def pixel_values(policy: SequencePolicy, images: list[Image.Image]) -> torch.Tensor:
    """(B, 3, S, S): RGB resized to the policy's side, scaled to [-1, 1]."""
    size = policy.meta["image_size"]
    x = np.stack([np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), np.float32) for im in images])
    return torch.from_numpy(x / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous().to(policy.device)


def encode_boxes(policy: SequencePolicy, rows: list[dict], box_sets: list[list[dict]]):
    """Box sets (one per row, in order) -> (tokens, mask) with EOS appended, padded: the teacher-forcing targets."""
    meta = policy.meta
    ids = [box_tokens(boxes[: meta["max_boxes"]], meta, *image_extent(row)) + [policy.eos_token_id]
           for row, boxes in zip(rows, box_sets, strict=True)]
    tokens = torch.full((len(ids), max(map(len, ids))), policy.pad_token_id, dtype=torch.long)
    mask = torch.zeros(tokens.shape, dtype=torch.bool)
    for i, seq in enumerate(ids):
        tokens[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), True
    return tokens.to(policy.device), mask.to(policy.device)


def _reading_order(boxes: list[dict]) -> list[dict]:
    return sorted(boxes, key=lambda b: (b["box"][0], b["box"][1]))


def reference_tokens(policy: SequencePolicy, rows: list[dict], rng: random.Random | None = None):
    """The annotated boxes (box_annotators.py: drawn by simulated people, a pixel or two loose, small shapes now and
    then left out) left to right (then top to bottom), confidence 1, EOS: (tokens, mask). The MLE target is what
    people drew, as a captioner's is what writers wrote; metrics and the oracle judge against the exact boxes. A fixed
    order is easier for a small model than Pix2Seq's random one, and greedy decoding then reads the image left to
    right."""
    return encode_boxes(policy, rows, [_reading_order(annotated_boxes(row)) for row in rows])


def heldout_targets(policy: SequencePolicy, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Teacher-forcing targets of the held-out loss: the held-out rows' annotated boxes, the distribution the model
    is fitted to (its convergence) -> (tokens (B, T), mask, 1)."""
    tokens, mask = reference_tokens(policy, rows)
    return tokens, mask, 1


def decode(policy: SequencePolicy, rows: list[dict], tokens: torch.Tensor, k: int = 1) -> list[Detections]:
    """Tokens (B*k, T) -> B*k box sets in pixels of each row's image (detection_boxes.tokens_to_boxes)."""
    outputs = []
    for i, seq in enumerate(tokens.tolist()):
        boxes, finished = tokens_to_boxes(seq, policy.meta, *image_extent(rows[i // k]))
        outputs.append(Detections(boxes, finished))
    return outputs


def ideal_outputs(policy: SequencePolicy, rows: list[dict], rng: np.random.Generator | None = None) -> list | None:
    """The exact boxes (not the annotated ones), as this policy's bins can write them (None unless every row has
    boxes)."""
    if any(row_problem(row) for row in rows):
        return None
    tokens, _ = encode_boxes(policy, rows, [_reading_order(true_boxes(row)) for row in rows])
    return decode(policy, rows, tokens)


def transplant(output: list[dict], row: dict) -> Detections:
    """Another input's boxes carried onto `row`: the same boxes, scaled from their frame to this row's (they land
    where the other image had its shapes: almost surely a worse detection here)."""
    return Detections([dict(b) for b in output], getattr(output, "finished", True))


def to_stored(output: list[dict]) -> str:
    """A box set as the JSON text samples and exports keep: [{"box": [...], "label": ..., "score": ...}, ...]."""
    return json.dumps([{"box": [float(v) for v in b["box"]], "label": b["label"], "score": float(b["score"])}
                       for b in output])  # full precision: the stored boxes draw exactly as the decoded ones


def from_stored(text: str, row: dict | None = None) -> Detections:
    """The box set `to_stored` wrote (DataError, one line, when the text is not one)."""
    try:
        boxes = json.loads(text)
        boxes = [{"box": [float(v) for v in b["box"]], "label": str(b["label"]), "score": float(b.get("score", 1.0))}
                 for b in boxes]
        if any(len(b["box"]) != 4 for b in boxes):
            raise ValueError("a box needs 4 numbers")
    except (ValueError, TypeError, KeyError) as error:
        raise DataError(f"not a stored box set ({error}): {str(text)[:80]!r}") from None
    return Detections(boxes)


# ---- rewards and metrics ----------------------------------------------------------------------------------------
def metric_reward(name: str, train_rows: list[dict] | None = None):
    """`map` (each output's own COCO mAP@[.5:.95] against its row's boxes), `detection_reward` (the paper's, class
    weights from `train_rows`) or `detection_reward_conf` (with its confidence target): detection_reward.py."""
    from vrlhf.tasks import detection_reward

    return detection_reward.metric_reward(name, train_rows)


def token_rewards(policy: SequencePolicy, tokens: torch.Tensor, outputs: list, regions: list) -> torch.Tensor:
    """Each sampled token's share of a dense reward -> (N, T): `regions[i]` holds one value per box of output i (in
    order) and one for its end (e.g. the shapes it missed). A box's value is split evenly over its six tokens; the
    end's goes to the EOS token (the last token when the budget ran out). Each row sums to its values' sum."""
    out = torch.zeros(tokens.shape, dtype=torch.float32)
    eos = policy.eos_token_id
    for i, (row, boxes, values) in enumerate(zip(tokens.tolist(), outputs, regions, strict=True)):
        values = np.asarray(values, dtype=np.float64)
        if len(values) != len(boxes) + 1:
            raise ValueError(f"detection: {len(values)} dense reward values for {len(boxes)} boxes (one per box and "
                             "one for the end expected)")
        end = next((t for t, token in enumerate(row) if token in (eos, policy.pad_token_id)), len(row) - 1)
        share = np.zeros(len(row))
        share[: SLOTS * len(boxes)] = np.repeat(values[:-1] / SLOTS, SLOTS)
        share[end] += values[-1]
        out[i] = torch.from_numpy(share)
    return out


def eval_metrics(rows: list[dict], outputs: list[list[dict]]) -> dict[str, float]:
    """COCO mAP, AP50 and AR@100 of the outputs over the rows, the mean box count (and `oracle_score` on shapes)."""
    from vrlhf.tasks.detection_metrics import coco_metrics

    metrics = coco_metrics([true_boxes(row) for row in rows], [list(o) for o in outputs])
    metrics["boxes"] = float(np.mean([len(o) for o in outputs])) if outputs else 0.0
    metrics["truth_boxes"] = float(np.mean([len(true_boxes(row)) for row in rows])) if rows else 0.0
    if rows and all("shapes" in (row.get("attributes") or {}) for row in rows):
        from vrlhf.tasks import detection_oracle

        metrics["oracle_score"] = float(np.mean([detection_oracle.score(r, o) for r, o in zip(rows, outputs)]))
    return metrics


# ---- what people see ----------------------------------------------------------------------------------------------
UPSCALE = 8  # a 48 px input is drawn at 384 px: labels readable on a phone, boxes on exact pixel edges
BOX_COLOURS = ("#ff00ff", "#00e5ff", "#ffffff", "#000000", "#ff8c00", "#7fff00")


def render(row: dict, output: list[dict]) -> Image.Image:
    """The boxes and their class labels drawn over the input, upscaled (nearest) so both read on a phone."""
    width, height = image_extent(row)
    scale = UPSCALE * max(1, round(48 / max(width, height)))
    canvas = row["image"].convert("RGB").resize((width * scale, height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    font_size = max(12, 2 * scale)
    for i, b in enumerate(output):
        x0, y0, x1, y1 = (v * scale for v in b["box"])
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        # the last pixel inside is x1 - 1; a box of zero width or height (a sampled x0 = x1) is a line
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=max(2, scale // 3))
        tx, ty = x0, y0 - font_size - 4  # above the box, or below it at the image's top edge
        ty = ty if ty >= 0 else y1 + 2
        patch, (left, top) = _label(f"{b['label']} {b.get('score', 1.0):.1f}", font_size, colour)
        canvas.paste(patch, (round(tx) + left, round(ty) + top))
    return canvas


@lru_cache(maxsize=4096)
def _label(text: str, font_size: int, colour: str) -> tuple[Image.Image, tuple[int, int]]:
    """A box's label as a patch (the text on a black plate, 2 px of margin) and its offset from the text's anchor.
    Drawn once per (text, size, colour): the reward models render every sample they score, and a font's rasteriser
    took most of that time."""
    font = ImageFont.load_default(size=font_size)
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    patch = Image.new("RGB", (x1 - x0 + 5, y1 - y0 + 5), "black")
    ImageDraw.Draw(patch).text((2 - x0, 2 - y0), text, fill=colour if colour != "#000000" else "white", font=font)
    return patch, (x0 - 2, y0 - 2)


# What a reward model reads with `--reads view` (`model_view`): the drawing people see is 384 px with text labels, which
# a 48 px model reads as a blur (the class is unreadable) and which costs most of a reward model's time to draw. The
# view ranks better and trains 35% faster, yet its tuned detectors won less: not the default (docs/DEMO.md, "What the
# detection reward model reads").
KIND_COLOURS = {"circle": (255, 255, 255), "square": (0, 0, 0), "triangle": (0, 255, 255)}  # the shapes data's kinds


def model_view(row: dict, output: list[dict]) -> Image.Image:
    """The boxes over the input at the input's own resolution, for a reward model: each box a 1-px outline on its
    edge pixels, its label as colours (pixels alternate between the label's colour word, "red" of "red circle", and its
    kind, the last word; other words get a colour of their own), each box blended in at half strength so that a
    duplicate box shows stronger. The confidence is not drawn (the annotators do not judge it)."""
    image = np.asarray(row["image"].convert("RGB"), dtype=np.float32).copy()
    height, width = image.shape[:2]
    odd = (np.add.outer(np.arange(height), np.arange(width)) % 2).astype(bool)
    for b in output:
        x0, y0, x1, y1 = (int(round(v)) for v in b["box"])
        x0, x1 = sorted((min(max(x0, 0), width - 1), min(max(x1 - 1, 0), width - 1)))  # the last pixel inside
        y0, y1 = sorted((min(max(y0, 0), height - 1), min(max(y1 - 1, 0), height - 1)))
        edge = np.zeros((height, width), dtype=bool)
        edge[[y0, y1], x0 : x1 + 1] = True
        edge[y0 : y1 + 1, [x0, x1]] = True
        first, _, kind = b["label"].rpartition(" ")
        for where, colour in ((edge & ~odd, _label_colour(first or kind)), (edge & odd, _kind_colour(kind))):
            image[where] = 0.5 * image[where] + 0.5 * np.asarray(colour, dtype=np.float32)
    return Image.fromarray(image.round().astype(np.uint8))


@lru_cache(maxsize=1024)
def _label_colour(word: str) -> tuple[int, int, int]:
    """The colour a word names ("red"), or one of its own: a hue from its CRC-32, full saturation."""
    try:
        return ImageColor.getrgb(word)[:3]
    except ValueError:
        hue = (zlib.crc32(word.encode()) * 0.618033988749895) % 1.0
        return ImageColor.getrgb(f"hsv({round(hue * 360)}, 100%, 100%)")[:3]


def _kind_colour(kind: str) -> tuple[int, int, int]:
    return KIND_COLOURS.get(kind) or _label_colour(kind)


def show_input(image: Image.Image) -> Image.Image:
    """What an annotator sees of the input: the image itself."""
    return image
