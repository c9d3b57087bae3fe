"""Simulated colorization annotator: prefers vivid shapes of one uniform colour each on a neutral background.

The latent utility of a colorized image for a shapes row (formula and calibration in docs/ORACLES.md), with
chroma C = sqrt(a^2 + b^2) in CIELAB and the shapes' masks from the row's hidden attributes:

    score = ( mean C inside the shapes
              - 2.0 * mean C of the background
              - 1.0 * mean over shapes of the ab spread sqrt(var a + var b) inside the shape ) / 100

A one-pixel band around every shape edge is left out of all three terms, so a slightly soft edge costs nothing.
Colourfulness alone would also reward a coloured background: that is what this annotator dislikes most.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.color import lab2rgb, rgb2lab

from vrlhf.shapes import shape_masks
from vrlhf.tasks.bradley_terry import TIE_MARGIN, agreement, draw, rank_with_ties, sigmoid
from vrlhf.tasks.mark_noise import GRID, MISPLACE, MISS, noisy_cells

DEFAULT_TEMPERATURE = 0.08  # self-agreement ~0.85 on model-like colorizations (docs/ORACLES.md)
BACKGROUND_WEIGHT, SPREAD_WEIGHT = 2.0, 1.0
# A cell is clearly bad when the image would lose this much score if every cell were like it (contribution × cells):
# a background tint of chroma ≈ 6 over the cell, or a shape cell whose colour strays far from the shape's own.
BAD_CELL = -0.15


def _lab(image: Image.Image, size: int) -> np.ndarray:
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return rgb2lab(np.asarray(image, dtype=np.float64) / 255.0)


def _terms(row: dict, output: Image.Image) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """What every term is computed from: ab (H, W, 2), chroma (H, W), the shapes' eroded cores, the background."""
    attributes = row.get("attributes") or {}
    if not attributes.get("shapes"):
        raise ValueError(f"colorization oracle: row {row.get('id')!r} has no shapes attributes to judge against")
    size = output.size[0]
    ab = _lab(output, size)[:, :, 1:]
    masks = shape_masks(attributes, size)
    cores = [core if core.any() else m for m in masks for core in [ndimage.binary_erosion(m)]]
    background = ~ndimage.binary_dilation(np.logical_or.reduce(masks))
    return ab, np.hypot(ab[:, :, 0], ab[:, :, 1]), cores, background


def components(row: dict, output: Image.Image) -> dict[str, float]:
    """The terms of `score` in chroma units: `inside`, `background`, `spread`."""
    ab, chroma, cores, background = _terms(row, output)
    return {
        "inside": float(chroma[np.logical_or.reduce(cores)].mean()),
        "background": float(chroma[background].mean()) if background.any() else 0.0,
        "spread": float(np.mean([math.sqrt(ab[core].var(axis=0).sum()) for core in cores])),
    }


def score(row: dict, output: Image.Image) -> float:
    """Latent utility of the RGB image `output` for the shapes `row` (higher is better; the truth is ~0.6-0.9)."""
    c = components(row, output)
    return (c["inside"] - BACKGROUND_WEIGHT * c["background"] - SPREAD_WEIGHT * c["spread"]) / 100.0


def pixel_contributions(row: dict, output: Image.Image) -> np.ndarray:
    """(H, W): what each pixel adds to `score`; the map sums to it. The two means split evenly over their pixels;
    a shape's spread sqrt(V), V the mean squared distance of its pixels' ab to their mean, is split in proportion to
    each pixel's squared distance (sqrt(V) = sum_p d_p^2 / (n sqrt(V))): an off-colour patch carries the blame."""
    ab, chroma, cores, background = _terms(row, output)
    inside = np.logical_or.reduce(cores)
    pixels = np.where(inside, chroma / inside.sum(), 0.0)
    if background.any():
        pixels -= BACKGROUND_WEIGHT * np.where(background, chroma / background.sum(), 0.0)
    for core in cores:
        squared = ((ab[core] - ab[core].mean(axis=0)) ** 2).sum(axis=1)  # (n,) d_p^2
        spread = math.sqrt(squared.mean())
        if spread > 0:
            pixels[core] -= SPREAD_WEIGHT * squared / (len(squared) * spread) / len(cores)
    return pixels / 100.0


def contributions(row: dict, output: Image.Image, grid: int = 8) -> np.ndarray:
    """(grid * grid,): what each cell of the colorization policy's colour grid adds to `score`, in raster order
    (the order of the policy's tokens: token t colours cell t); the cells sum to `score(row, output)`. A pixel
    belongs to the cell its centre lies in."""
    pixels = pixel_contributions(row, output)
    rows, cols = [((np.arange(n) + 0.5) * grid / n).astype(int) for n in pixels.shape]
    cells = np.zeros((grid, grid))
    np.add.at(cells, (rows[:, None], cols[None, :]), pixels)
    return cells.reshape(-1)


# The dense form the tuner reads (tuner/rewards.py oracle_reward): a map the colorization task pools onto its grid.
regions = pixel_contributions


def prefer(row: dict, output_a: Image.Image, output_b: Image.Image,
           temperature: float = DEFAULT_TEMPERATURE) -> float:
    """Bradley-Terry probability that an annotator prefers a over b."""
    return sigmoid((score(row, output_a) - score(row, output_b)) / temperature)


def judge(row: dict, output_a: Image.Image, output_b: Image.Image, rng: np.random.Generator,
          temperature: float = DEFAULT_TEMPERATURE) -> float:
    """One simulated annotation: 1.0 (a wins), 0.0 (b wins) or 0.5 (a tie: the scores are within TIE_MARGIN)."""
    return draw(score(row, output_a) - score(row, output_b), rng, temperature)


def mark(row: dict, output: Image.Image, rng: np.random.Generator) -> dict:
    """Where one simulated annotator marks `output` wrong (its clearly bad cells of the 8x8 colour grid, some missed,
    a few misplaced), in the marks format of vrlhf/marks.py: vrlhf/tasks/mark_noise.py, docs/ORACLES.md."""
    return mark_colorization(row, output, rng)


def cell_contributions(row: dict, output, grid: int = GRID) -> np.ndarray:
    """(grid, grid) shares of the score, one per cell of the output (they sum to the score)."""
    return np.asarray(contributions(row, output, grid=grid), dtype=np.float64).reshape(grid, grid)


def bad_cells(row: dict, output, grid: int = GRID, threshold: float = BAD_CELL) -> np.ndarray:
    """Bool (grid, grid): the cells a careful annotator would call clearly wrong (no noise)."""
    return cell_contributions(row, output, grid) * grid * grid < threshold


def mark_colorization(row: dict, output, rng: np.random.Generator, grid: int = GRID, miss: float = MISS,
                      misplace: float = MISPLACE) -> dict:
    """One simulated annotator's marks on a colorization: its clearly bad cells, each missed with probability `miss`,
    else moved to a neighbouring cell with probability `misplace`. `{"grid", "cells"}` or {} (nothing marked)."""
    return noisy_cells(bad_cells(row, output, grid), rng, miss, misplace)


def rank(row: dict, outputs: list, rng: np.random.Generator, temperature: float = DEFAULT_TEMPERATURE) -> list[int]:
    """One simulated ranking of k outputs (indices, best first), Plackett–Luce over the same scores as `judge`;
    identical colorizations tie (`rank_with_ties`), as `judge` ties them."""
    same = [(o.size, o.convert("RGB").tobytes()) for o in outputs]
    return rank_with_ties([score(row, o) for o in outputs], same, rng, temperature)


def self_agreement(rows: list[dict], outputs_a: list[Image.Image], outputs_b: list[Image.Image],
                   seed: int = 0, temperature: float = DEFAULT_TEMPERATURE) -> float:
    """How often two independent judgements of the same pair agree: the accuracy ceiling of any reward model
    evaluated against this annotator on these pairs."""
    differences = [score(r, a) - score(r, b) for r, a, b in zip(rows, outputs_a, outputs_b, strict=True)]
    return agreement(differences, seed, temperature)


EDITS = ("mute", "tint", "hue", "noise", "coarse", "gray")


def corrupt(row: dict, rng: np.random.Generator, edits: tuple[str, ...] | None = None) -> Image.Image:
    """A model-like colorization of a shapes row: the true colours after `edits` (default: muted or boosted
    always, each of tint / hue / noise / coarse with probability 1/2, 0.3, 1/2, 1/2). For calibration:
    mute: chroma x U(0.2, 1.2); tint: background tinted (chroma 3-25, any hue); hue: part of one shape in another
    hue; noise: blotchy ab noise; coarse: ab from an 8x8 grid, as the policy emits (colour bleeds); gray: no colour."""
    if edits is None:
        edits = ("mute",) + tuple(e for e, p in [("tint", 0.5), ("hue", 0.3), ("noise", 0.5), ("coarse", 0.5)]
                                  if rng.random() < p)
    lab = rgb2lab(np.asarray(row["image"].convert("RGB"), dtype=np.float64) / 255.0)
    size = lab.shape[0]
    ab = lab[:, :, 1:] * (rng.uniform(0.2, 1.2) if "mute" in edits else 1.0) * ("gray" not in edits)
    masks = shape_masks(row["attributes"], size)
    if "tint" in edits:
        angle, strength = rng.uniform(0, 2 * math.pi), rng.uniform(3, 25)
        ab[~np.logical_or.reduce(masks)] += strength * np.array([math.cos(angle), math.sin(angle)])
    if "hue" in edits:  # the part of one shape left of a random line turns another hue
        mask = masks[rng.integers(len(masks))]
        lo, hi = np.nonzero(mask)[1].min(), np.nonzero(mask)[1].max()
        mask = mask & (np.arange(size)[None, :] < rng.integers(lo + (hi - lo) // 3, hi - (hi - lo) // 3 + 1))
        angle = rng.uniform(math.pi / 4, 7 * math.pi / 4)
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        ab[mask] = ab[mask] @ rotation.T
    if "noise" in edits:
        ab += rng.normal(0, rng.uniform(2, 12), ab.shape)
    if "coarse" in edits:
        ab = np.stack([_resize(_resize(ab[:, :, c], 8, Image.Resampling.BOX), size, Image.Resampling.BILINEAR)
                       for c in range(2)], axis=-1)
    with warnings.catch_warnings():  # out-of-gamut colours are clipped, as intended
        warnings.simplefilter("ignore")
        rgb = lab2rgb(np.concatenate([lab[:, :, :1], ab], axis=2))
    return Image.fromarray(np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8), "RGB")


def _resize(channel: np.ndarray, size: int, method: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(channel.astype(np.float32)).resize((size, size), method), dtype=np.float64)


def main(argv: list[str] | None = None) -> None:
    """Print this oracle's self-agreement on typical pairs (the table in docs/ORACLES.md)."""
    from vrlhf.config import parse_no_arguments
    from vrlhf.shapes import make_shapes

    parse_no_arguments(argv, main.__doc__)
    rows = make_shapes(400, seed=1)
    rng = np.random.default_rng(0)
    print("pair (a vs b)                          P(a wins)  ties  self-agreement")
    for name, edits in [("truth vs truth", ()), ("truth vs tinted background", ("tint",)),
                        ("truth vs grayscale", ("gray",)), ("truth vs shape partly in another hue", ("hue",)),
                        ("truth vs ab noise", ("noise",)), ("truth vs coarse 8x8 ab", ("coarse",)),
                        ("truth vs muted or boosted", ("mute",)), ("model-like vs model-like", None)]:
        a = [r["image"] if edits is not None else corrupt(r, rng) for r in rows]
        b = [corrupt(r, rng, edits) for r in rows]
        scores = [(score(r, x), score(r, y)) for r, x, y in zip(rows, a, b)]
        p = np.mean([sigmoid((x - y) / DEFAULT_TEMPERATURE) for x, y in scores])
        ties = np.mean([abs(x - y) < TIE_MARGIN for x, y in scores])
        print(f"{name:<38} {p:9.3f} {ties:5.2f} {self_agreement(rows, a, b, seed=0):15.3f}")
    print(f"mean score of the truth: {np.mean([score(r, r['image']) for r in rows]):.3f}")


if __name__ == "__main__":
    import sys

    from vrlhf.errors import run_command

    sys.exit(run_command("python -m vrlhf.tasks.colorization_oracle", main))
