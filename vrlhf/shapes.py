"""The embedded default dataset: procedural coloured shapes with varied captions and hidden ground truth.

`make_shapes(n, seed)` returns Rows (see docs/ARCHITECTURE.md) whose `attributes` say exactly what is drawn:

    {"image_size": 48, "background": 143,            # gray level of the neutral background (R = G = B)
     "shapes": [{"kind": "circle", "colour": "red", "size": "large", "position": "left",
                 "cx": 12, "cy": 30, "r": 9.6}, ...]}  # sorted left to right; centre and radius in pixels

Each image has five reference captions written by simulated people with human habits
(`vrlhf/tasks/caption_writers.py`: salient shapes first, often only one, details left out, a few mistakes), or
with `references="complete"` every attribute of every shape in the grammar's wording (`vrlhf/shapes_grammar.py`).
`shape_masks` redraws the geometry (for the colorization oracle), `parse_caption` reads any caption back (for the
caption oracle), and `vrlhf data shapes` writes train/test image folders.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from vrlhf.errors import ConfigError
from vrlhf.shapes_grammar import (  # noqa: F401  (the caption language, re-exported for callers of this module)
    ARTICLES,
    COLOURS,
    CONNECTIVES,
    KINDS,
    LEXICON,
    MAX_CAPTION_WORDS,
    PHRASES,
    POSITION_PHRASES,
    POSITIONS,
    PREFIXES,
    SHORTEST,
    SIZE_WORDS,
    SIZES,
    SLOTS,
    SYNONYMS,
    VOCABULARY,
    caption,
    parse_caption,
)
from vrlhf.tasks import caption_writers

PALETTE = {
    "red": (220, 30, 30),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 210, 30),
    "purple": (150, 50, 200),
    "orange": (250, 130, 20),
}
assert tuple(PALETTE) == COLOURS  # the drawing and the words name the same colours, in the same order
RADIUS = {"small": 0.1, "large": 0.2}  # fraction of the image side
SQUARE_HALF, TRIANGLE_R = 0.9, 1.5  # times r, so the three kinds of one size have about the same area
BACKGROUND = (90, 200)  # gray levels, inclusive
NOISE = 2.0  # std of the gray background noise
N_CAPTIONS = 5
MIN_SIZE = 24  # below this a small shape is under 5 px across and a large triangle no longer fits in a third

# ---------------------------------------------------------------------------------------------- geometry
def _extent(kind: str, r: float) -> tuple[float, float, float]:
    """(half width, height above centre, height below centre) of a shape."""
    if kind == "circle":
        return r, r, r
    if kind == "square":
        return SQUARE_HALF * r, SQUARE_HALF * r, SQUARE_HALF * r
    R = TRIANGLE_R * r  # circumradius of an upward equilateral triangle centred on its centroid
    return R * math.sqrt(3) / 2, R, R / 2


def _mask(shape: dict, size: int, scale: float = 1.0) -> np.ndarray:
    # pixel centres mapped back to the frame the attributes were drawn in, so any output size works
    coords = (np.arange(size) + 0.5) / scale - 0.5
    dx, dy = coords[None, :] - shape["cx"], coords[:, None] - shape["cy"]
    r = shape["r"]
    if shape["kind"] == "circle":
        return dx**2 + dy**2 <= r**2
    if shape["kind"] == "square":
        return (np.abs(dx) <= SQUARE_HALF * r) & (np.abs(dy) <= SQUARE_HALF * r)
    R = TRIANGLE_R * r
    return (dy <= R / 2) & (np.abs(dx) <= (dy + R) / math.sqrt(3))


def shape_masks(attributes: dict, size: int | None = None) -> list[np.ndarray]:
    """One boolean (size, size) mask per shape, with the geometry the image was drawn with (scaled to `size`)."""
    native = attributes["image_size"]
    size = native if size is None else size
    return [_mask(shape, size, size / native) for shape in attributes["shapes"]]


def shape_mask(attributes: dict, size: int | None = None) -> np.ndarray:
    """Union of `shape_masks`: True on every shape pixel."""
    size = attributes["image_size"] if size is None else size
    return np.logical_or.reduce([np.zeros((size, size), bool), *shape_masks(attributes, size)])


def _grow(mask: np.ndarray) -> np.ndarray:
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def _centre_range(position: str, half_width: float, size: int) -> tuple[int, int]:
    """Inclusive range of centre x for a shape in `position`'s third, kept clear of the thirds' borders
    (so the position word is never a judgement call) and fully inside the image."""
    third, margin, edge = POSITIONS.index(position), size / 24, math.ceil(half_width)
    lo = edge if third == 0 else max(edge, math.ceil(third * size / 3 + margin))
    hi = size - 1 - edge if third == 2 else min(size - 1 - edge, math.floor((third + 1) * size / 3 - margin))
    return lo, hi


def _layout(rng: np.random.Generator, size: int) -> list[dict]:
    """1-3 shapes, fully inside the image and at least one pixel apart (rejection sampling).

    Attributes are drawn first and then placed, so crowded images do not bias sizes or positions much.
    """
    wanted = int(rng.integers(1, 4))
    shapes, occupied = [], np.zeros((size, size), bool)
    for _ in range(30 * wanted):
        if len(shapes) == wanted:
            break
        kind, colour = KINDS[rng.integers(3)], COLOURS[rng.integers(6)]
        size_word, position = SIZES[rng.integers(2)], POSITIONS[rng.integers(3)]
        r = round(RADIUS[size_word] * size, 3)
        half_width, above, below = _extent(kind, r)
        lo, hi = _centre_range(position, half_width, size)
        if lo > hi:
            continue
        for _ in range(10):
            cx = int(rng.integers(lo, hi + 1))
            cy = int(rng.integers(math.ceil(above), size - math.ceil(below)))
            shape = {"kind": kind, "colour": colour, "size": size_word, "position": position,
                     "cx": cx, "cy": cy, "r": r}
            mask = _mask(shape, size)
            if not (mask & occupied).any():
                occupied |= _grow(mask)
                shapes.append(shape)
                break
    return sorted(shapes, key=lambda s: (s["cx"], s["cy"]))


def _draw(attributes: dict, rng: np.random.Generator) -> Image.Image:
    size = attributes["image_size"]
    # gray noise with R = G = B keeps the background exactly neutral (a = b = 0 in Lab)
    gray = np.clip(np.rint(attributes["background"] + rng.normal(0, NOISE, (size, size))), 0, 255)
    pixels = np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)
    for shape, mask in zip(attributes["shapes"], shape_masks(attributes)):
        pixels[mask] = PALETTE[shape["colour"]]
    return Image.fromarray(pixels, "RGB")


# ---------------------------------------------------------------------------------------------- captions
REFERENCES = ("writers", "complete")


def _complete_captions(shapes: list[dict], rng: np.random.Generator) -> list[str]:
    found: list[str] = []
    for _ in range(50):  # distinct captions; tiny images have few wordings, so repeats are allowed at the end
        text = caption(shapes, rng)
        if text not in found:
            found.append(text)
            if len(found) == N_CAPTIONS:
                break
    return (found * N_CAPTIONS)[:N_CAPTIONS]


@lru_cache(maxsize=8)
def _writers(seed: int):
    return caption_writers.writer_pool(seed)


def reference_captions(shapes: list[dict], rng: np.random.Generator, seed: int, references: str) -> list[str]:
    """The image's N_CAPTIONS references: by simulated writers (default; human habits, docs/ORACLES.md), or
    `complete`: every attribute of every shape stated truly in the grammar's wording (what the annotators want)."""
    if references == "writers":
        return caption_writers.references(shapes, _writers(seed), rng, N_CAPTIONS)
    if references == "complete":
        return _complete_captions(shapes, rng)
    raise ValueError(f"unknown references {references!r}; choose one of {', '.join(REFERENCES)}")


# ---------------------------------------------------------------------------------------------- rows
def shapes_row(i: int, seed: int = 0, size: int = 48, references: str = "writers") -> dict:
    """Row `i` of the dataset for `seed`: it depends only on (seed, i, size, references)."""
    if size < MIN_SIZE:
        raise ValueError(f"shapes images need size >= {MIN_SIZE}, got {size}")
    layout_rng, caption_rng = (np.random.default_rng([seed, i, stream]) for stream in (0, 1))
    attributes = {"image_size": size, "background": int(layout_rng.integers(BACKGROUND[0], BACKGROUND[1] + 1))}
    attributes["shapes"] = _layout(layout_rng, size)
    return {
        "id": f"shapes-{seed}-{i}",
        "image": _draw(attributes, layout_rng),
        "captions": reference_captions(attributes["shapes"], caption_rng, seed, references),
        "attributes": attributes,
    }


def make_shapes(n: int, seed: int = 0, size: int = 48, references: str = "writers") -> list[dict]:
    """`n` deterministic shapes rows (see the module docstring for the attributes and `reference_captions`)."""
    return [shapes_row(i, seed, size, references) for i in range(n)]


def write_imagefolder(rows: list[dict], out_dir: str | Path, progress: bool = False) -> Path:
    """Write rows as a Hugging Face image folder: `images/<id>.png` and `metadata.jsonl`."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, desc=f"writing {out}", unit="img")
    with open(out / "metadata.jsonl", "w") as meta:
        for row in rows:
            file_name = f"images/{row['id']}.png"
            row["image"].save(out / file_name, format="PNG")
            record = {"file_name": file_name, "id": row["id"], "captions": row["captions"],
                      "attributes": row["attributes"]}
            meta.write(json.dumps(record) + "\n")
    return out


# ---------------------------------------------------------------------------------------------- CLI
@dataclass
class ShapesConfig:
    out: str = field(default="", metadata={"help": "output directory; gets train/ and test/ subfolders (required)"})
    n: int = field(default=2000, metadata={"help": "total number of images (train + test)"})
    seed: int = field(default=0, metadata={"help": "random seed; the same seed writes byte-identical files"})
    size: int = field(default=48, metadata={"help": f"image side in pixels (at least {MIN_SIZE})"})
    test_fraction: float = field(default=0.1, metadata={"help": "fraction of the images (the last ones) written to "
                                                                "test/"})
    references: str = field(default="writers", metadata={
        "help": "writers: captions by simulated people (salient shapes first, often incomplete, a few mistakes); "
                "complete: every attribute of every shape, all true"})


@dataclass
class PhotosConfig:
    out: str = field(default="", metadata={"help": "output directory: images/*.png + metadata.jsonl (required)"})
    size: int = field(default=48, metadata={"help": "crop side in pixels after resizing"})
    crops: int = field(default=4, metadata={"help": "crops per photo"})


def write_shapes(cfg: ShapesConfig) -> str:
    """Write cfg.out/train and cfg.out/test image folders; returns the summary line."""
    problems = [text for bad, text in (
        (not cfg.out, "--out DIR is required"), (cfg.n < 1, "--n must be >= 1"),
        (cfg.size < MIN_SIZE, f"--size must be >= {MIN_SIZE}"), (cfg.seed < 0, "--seed must be >= 0"),
        (not 0 <= cfg.test_fraction < 1, "--test_fraction must be in [0, 1)"),
        (cfg.references not in REFERENCES, f"--references must be one of {', '.join(REFERENCES)}")) if bad]
    if problems:
        raise ConfigError("vrlhf data shapes: " + "; ".join(problems))
    from tqdm import tqdm

    indices = tqdm(range(cfg.n), desc="generating", unit="img")
    rows = [shapes_row(i, cfg.seed, cfg.size, cfg.references) for i in indices]
    n_test = min(cfg.n - 1, round(cfg.n * cfg.test_fraction))
    out = Path(cfg.out)
    write_imagefolder(rows[: cfg.n - n_test], out / "train", progress=True)
    if n_test:
        write_imagefolder(rows[cfg.n - n_test :], out / "test", progress=True)
    counts = Counter(len(row["attributes"]["shapes"]) for row in rows)
    return (f"wrote {cfg.n - n_test} train + {n_test} test images ({cfg.size}x{cfg.size}, seed {cfg.seed}, "
            f"{cfg.references} references) to {out}; images with 1/2/3 shapes: {counts[1]}/{counts[2]}/{counts[3]}; "
            f"caption vocabulary: {len(VOCABULARY)} words")


def write_photos(cfg: PhotosConfig) -> str:
    if not cfg.out or cfg.size < 8 or cfg.crops < 1:
        raise ConfigError("vrlhf data photos: needs --out DIR, --size >= 8 and --crops >= 1")
    from vrlhf.photos import photo_rows

    rows = photo_rows(size=cfg.size, crops_per_photo=cfg.crops)
    write_imagefolder(rows, cfg.out)
    return f"wrote {len(rows)} photo crops ({cfg.size}x{cfg.size}) to {cfg.out}"


DATASETS = {"shapes": (ShapesConfig, write_shapes, "procedural coloured shapes with reference captions and hidden "
                                                  "attributes: OUT/train and OUT/test image folders"),
            "photos": (PhotosConfig, write_photos, "crops of scikit-image's colour photos: a real-photo colorization "
                                                  "eval set (no captions)")}


def main(argv: list[str] | None = None) -> int:
    """`vrlhf data shapes --out DIR [--n N ...]` or `vrlhf data photos --out DIR`."""
    from vrlhf.config import parse_config

    argv = list(argv or [])
    if not argv or argv[0] not in DATASETS:
        listed = "; ".join(f"{name}: {help_}" for name, (_, _, help_) in DATASETS.items())
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: vrlhf data DATASET [options]   (vrlhf data DATASET --help)\n{listed}")
            return 0
        raise ConfigError(f"vrlhf data: name a dataset first ({', '.join(DATASETS)}): {listed}")
    config_class, write, _ = DATASETS[argv[0]]
    print(write(parse_config(config_class, argv[1:], prog=f"vrlhf data {argv[0]}")))
    return 0
