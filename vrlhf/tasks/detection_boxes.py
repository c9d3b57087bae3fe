"""Boxes of the detection task: the true boxes of a row, and boxes as tokens in the paper's layout.

A box is a dict `{"box": [x0, y0, x1, y1], "label": str, "score": float}` in pixels of the row's image, edges
included (a box covering pixels 3..7 of a row is x0 = 3, x1 = 8: COCO's `[x, y, w, h]` is `[x0, y0, x1-x0, y1-y0]`).

Classes of the shapes data are colour + kind ("red circle"): both are what a person checks at a glance, a box of
the right shape in the wrong colour is then a misclassed box (as people judge it), and 18 classes make mAP's mean
over classes less of a coin toss than 3 would.

Tokens, per box, as Pix2Seq and big_vision's `detection_reward.py` (Pinto et al. 2023) lay them out:
`y0 x0 y1 x1 class confidence`, coordinates quantised to `coord_bins` levels over the image's side, then EOS.
The vocabulary is [coordinate bins][classes][confidence levels 1..L][EOS][start][pad]; confidence level l reads
as the score l / L (the paper's confidence tokens, with more levels so that one sampled token is a usable score).
"""

from __future__ import annotations

import math

import numpy as np

from vrlhf.shapes import COLOURS, KINDS, SQUARE_HALF, TRIANGLE_R

SHAPE_CLASSES = tuple(f"{colour} {kind}" for colour in COLOURS for kind in KINDS)
SLOTS = 6  # tokens per box: y0 x0 y1 x1 class confidence


# ---------------------------------------------------------------------------------------------- true boxes
def _row_half_widths(kind: str, r: float, dy: np.ndarray) -> np.ndarray:
    """Half width of the shape on each pixel row `dy` (offset of the row's centre from the shape's centre); NaN where
    the row misses the shape. The same inequalities `vrlhf.shapes` draws with."""
    with np.errstate(invalid="ignore"):
        if kind == "circle":
            return np.where(np.abs(dy) <= r, np.sqrt(r * r - dy * dy), np.nan)
        if kind == "square":
            return np.where(np.abs(dy) <= SQUARE_HALF * r, SQUARE_HALF * r, np.nan)
        big_r = TRIANGLE_R * r  # an upward triangle: apex at dy = -R, base at dy = R/2, widening downwards
        return np.where((dy <= big_r / 2) & (dy >= -big_r), (dy + big_r) / math.sqrt(3), np.nan)


def shape_box(shape: dict) -> list[float]:
    """The tight box [x0, y0, x1, y1] of the pixels a shape covers (pixel i spans [i, i+1]), from its geometry."""
    cx, cy, r = shape["cx"], shape["cy"], shape["r"]
    reach = 2 * r + 2  # every kind fits within this many pixels of its centre
    rows = np.arange(math.floor(cy - reach), math.ceil(cy + reach) + 1)
    half = _row_half_widths(shape["kind"], r, rows - cy)
    lo, hi = np.ceil(cx - half), np.floor(cx + half)  # the first and last pixel column on each row
    hit = ~np.isnan(half) & (lo <= hi)
    return [float(lo[hit].min()), float(rows[hit].min()), float(hi[hit].max() + 1), float(rows[hit].max() + 1)]


def true_boxes(row: dict) -> list[dict]:
    """The row's true boxes (score 1): its shapes' tight boxes classed by colour + kind, or COCO-style boxes that the
    row's attributes hold (`{"boxes": [{"bbox": [x, y, w, h], "category": name}, ...]}`), or a Hugging Face
    detection dataset's `objects` column as the row carries it (`{"bbox": [[x, y, w, h], ...], "category": [...]}`,
    COCO's box format; `vrlhf.data` gives a ClassLabel category as its name)."""
    attributes = row.get("attributes") or {}
    if "shapes" in attributes:
        return [{"box": shape_box(s), "label": f"{s['colour']} {s['kind']}", "score": 1.0}
                for s in attributes["shapes"]]
    if "boxes" not in attributes and isinstance(row.get("objects"), dict):
        objects = row["objects"]
        boxes = [{"bbox": b, "category": c} for b, c in zip(objects["bbox"], objects["category"], strict=True)]
    else:
        boxes = attributes.get("boxes", [])
    return [{"box": [x, y, x + w, y + h], "label": str(b["category"]), "score": 1.0}
            for b in boxes for x, y, w, h in [b["bbox"]]]


def image_extent(row: dict) -> tuple[int, int]:
    """(width, height) of the frame the row's boxes are in: the shapes' drawing size, else the image's."""
    attributes = row.get("attributes") or {}
    if "image_size" in attributes:
        return attributes["image_size"], attributes["image_size"]
    return row["image"].size


# ---------------------------------------------------------------------------------------------- tokens
def vocabulary(meta: dict) -> dict[str, int]:
    """Where each kind of token starts, and the three special ids."""
    bins, classes, levels = meta["coord_bins"], len(meta["classes"]), meta["conf_levels"]
    eos = bins + classes + levels
    return {"class": bins, "conf": bins + classes, "eos": eos, "start": eos + 1, "pad": eos + 2, "size": eos + 3}


def box_tokens(boxes: list[dict], meta: dict, width: int, height: int) -> list[int]:
    """Boxes -> tokens (without EOS), in the order given; each box's score is its confidence level (score 1: L)."""
    vocab, bins, levels = vocabulary(meta), meta["coord_bins"], meta["conf_levels"]
    tokens = []
    for b in boxes:
        x0, y0, x1, y1 = b["box"]
        coords = [y0 / height, x0 / width, y1 / height, x1 / width]
        tokens += [min(bins - 1, max(0, round(c * (bins - 1)))) for c in coords]
        tokens.append(vocab["class"] + meta["classes"].index(b["label"]))
        tokens.append(vocab["conf"] + min(levels, max(1, round(b.get("score", 1.0) * levels))) - 1)
    return tokens


def tokens_to_boxes(tokens, meta: dict, width: int, height: int) -> tuple[list[dict], bool]:
    """Tokens -> (boxes, finished). Read six at a time up to EOS (or pad); a box cut short by EOS is dropped. A token
    of the wrong kind in a slot is clipped into that slot's range, as big_vision's `seq2box` does (a class token where
    a coordinate belongs reads as the last bin), and a box's two edges are put in order."""
    vocab, bins = vocabulary(meta), meta["coord_bins"]
    classes, levels = meta["classes"], meta["conf_levels"]
    ids = [int(t) for t in tokens]
    end = next((i for i, t in enumerate(ids) if t in (vocab["eos"], vocab["pad"])), len(ids))
    finished = end < len(ids) and ids[end] == vocab["eos"]
    boxes = []
    for i in range(0, end - end % SLOTS, SLOTS):
        y0, x0, y1, x1 = (min(max(t, 0), bins - 1) / (bins - 1) for t in ids[i : i + 4])
        label = min(max(ids[i + 4] - vocab["class"], 0), len(classes) - 1)
        level = min(max(ids[i + 5] - vocab["conf"] + 1, 1), levels)
        boxes.append({"box": [min(x0, x1) * width, min(y0, y1) * height, max(x0, x1) * width, max(y0, y1) * height],
                      "label": classes[label], "score": level / levels})
    return boxes, finished
