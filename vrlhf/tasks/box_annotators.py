"""Simulated box annotators: the people who drew the shapes dataset's training boxes, with human habits.

Boxes drawn by people are not the exact geometry the judges want (detection_oracle.py). Annotators drag a box a
pixel or two loose (more often too big than too small: nobody wants to cut the object), leave out small shapes,
confuse neighbouring hues (orange for red), and now and then draw a box twice. A detector trained on such boxes
learns their habits, so its greedy boxes are loose: the room that tuning with the paper's reward (against the exact
boxes) and people's preferences can close, as the caption writers (caption_writers.py) leave room for captioning.

Each dataset seed has a pool of `ANNOTATORS` annotators whose habits are drawn once (`annotator_pool`); each row is
boxed by one of them, drawn from its id, so a row's annotation is the same on every call (`annotated_boxes`).
Rows without shapes (COCO-style or `datasets` boxes) keep their boxes: those were drawn by people already.
Measured statistics: docs/ORACLES.md ("Box annotators").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from vrlhf.tasks.caption_writers import CONFUSIONS
from vrlhf.tasks.detection_boxes import image_extent, true_boxes

ANNOTATORS = 20  # annotators per dataset seed


@dataclass(frozen=True)
class Annotator:
    """One simulated person's habits; every probability is per box edge or per shape."""

    loose: float  # chance that an edge lands outside the shape (then 1 px, or 2 px a quarter of the time)
    tight: float  # chance that an edge cuts 1 px into the shape
    miss_small: float  # chance of leaving out a small shape
    miss_large: float  # chance of leaving out a large shape
    hue: float  # chance of naming a neighbouring colour (caption_writers.CONFUSIONS)
    duplicate: float  # chance of drawing a shape's box a second time (a fresh drag, right after the first)


def draw_annotator(rng: np.random.Generator) -> Annotator:
    """Habits of one annotator: most drag boxes loose; some skip small shapes far more often than others."""
    return Annotator(
        loose=float(rng.uniform(0.55, 0.85)),
        tight=float(rng.uniform(0.03, 0.12)),
        miss_small=float(rng.uniform(0.05, 0.35)),
        miss_large=float(rng.uniform(0.0, 0.03)),
        hue=float(rng.uniform(0.02, 0.10)),
        duplicate=float(rng.uniform(0.0, 0.06)),
    )


def annotator_pool(seed: int, n: int = ANNOTATORS) -> list[Annotator]:
    """The annotators of dataset `seed` (the same for every row of that seed)."""
    rng = np.random.default_rng([seed, 8_888])
    return [draw_annotator(rng) for _ in range(n)]


def _row_seed(row: dict) -> tuple[int, int]:
    """(dataset seed, a number from the row's id): `shapes-SEED-I` ids give their seed; any id its CRC."""
    row_id = str(row.get("id", ""))
    parts = row_id.split("-")
    seed = int(parts[1]) if len(parts) == 3 and parts[0] == "shapes" and parts[1].isdigit() else 0
    return seed, zlib.crc32(row_id.encode())


def _drag(box: list[float], who: Annotator, rng: np.random.Generator, width: int, height: int) -> list[float]:
    """One drawn box around the exact one: each edge loose by 1-2 px, 1 px tight, or exact; kept in the image and
    at least 1 px wide and high."""
    moves = []
    for _ in range(4):
        u = rng.random()
        moves.append((1 + (rng.random() < 0.25)) if u < who.loose else -1 if u < who.loose + who.tight else 0)
    x0, y0, x1, y1 = box
    x0, y0 = max(0.0, x0 - moves[0]), max(0.0, y0 - moves[1])
    x1, y1 = min(float(width), x1 + moves[2]), min(float(height), y1 + moves[3])
    if x1 - x0 < 1:
        x0, x1 = box[0], box[2]
    if y1 - y0 < 1:
        y0, y1 = box[1], box[3]
    return [x0, y0, x1, y1]


def annotated_boxes(row: dict) -> list[dict]:
    """The row's boxes as its annotator drew them (score 1), in the exact boxes' order; deterministic per row id."""
    attributes = row.get("attributes") or {}
    if "shapes" not in attributes:
        return true_boxes(row)
    seed, key = _row_seed(row)
    pool = annotator_pool(seed)
    rng = np.random.default_rng([seed, key, 4_444])
    who = pool[int(rng.integers(len(pool)))]
    width, height = image_extent(row)
    drawn = []
    for shape, exact in zip(attributes["shapes"], true_boxes(row), strict=True):
        if rng.random() < (who.miss_small if shape["size"] == "small" else who.miss_large):
            continue
        colour = shape["colour"]
        if rng.random() < who.hue:
            colour = str(rng.choice(CONFUSIONS["colour"][colour]))
        label = f"{colour} {shape['kind']}"
        drawn.append({"box": _drag(exact["box"], who, rng, width, height), "label": label, "score": 1.0})
        if rng.random() < who.duplicate:
            drawn.append({"box": _drag(exact["box"], who, rng, width, height), "label": label, "score": 1.0})
    return drawn
