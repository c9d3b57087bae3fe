"""Marks: where an annotator says a candidate is wrong; the data that travels with a vote to the reward model.

One candidate's marks are a JSON object; every key is optional and `{}` (or an empty cell in an export) means none:

    image outputs:  {"grid": 8, "cells": [[row, col], ...], "points": [[x, y], ...]}
                    cells of a grid × grid raster over the output (row 0 at the top, col 0 at the left; the colorizer's
                    colour grid, one cell per token) and/or clicked points, normalised: x, y in [0, 1] from the top left
    text outputs:   {"words": [i, ...]}
                    0-based indices into the caption's whitespace-split words (a span i..j is every index in it)

Exports carry them per pair as `chosen_marks` and `rejected_marks`: the JSON text of the chosen and the rejected
candidate's marks ("" when none). A vote's marks are `{candidate_id: marks}` (candidates not marked left out).
`problem(marks, output)` says in one sentence what is wrong with marks (outside the image, a word index past the
caption's end, ...), `parse(value, output, where)` reads them from JSON (raising DataError with `where` first),
and `cell_mask` / `word_mask` turn them into the per-region targets the dense reward models train on.
"""

from __future__ import annotations

import json
import math

import numpy as np

from vrlhf.errors import DataError

IMAGE_KEYS, TEXT_KEYS = ("grid", "cells", "points"), ("words",)
MAX_GRID = 64  # a raster finer than this is not something a person clicks on


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


IMAGE = object()  # `output` for marks on an image that is not at hand: checks that they are image marks


def problem(marks, output=None) -> str | None:
    """Why `marks` (a decoded JSON object) are not valid marks of `output` (a caption str, an image or `IMAGE`, or None
    when unknown), in one sentence; None when they are fine."""
    if marks is None:
        return None
    if not isinstance(marks, dict):
        return f"marks must be a JSON object like {{\"cells\": [[2, 3]]}}, got {type(marks).__name__}"
    unknown = sorted(set(marks) - set(IMAGE_KEYS) - set(TEXT_KEYS))
    if unknown:
        return f"unknown marks key(s) {', '.join(map(repr, unknown))} (known: {', '.join(IMAGE_KEYS + TEXT_KEYS)})"
    image_keys, text_keys = [k for k in IMAGE_KEYS if k in marks], [k for k in TEXT_KEYS if k in marks]
    if image_keys and text_keys:
        return "marks mix image regions (grid, cells, points) and caption words"
    if output is not None:
        text_output = isinstance(output, str)
        if text_output and image_keys:
            return f"marks on a caption are word indices, not {image_keys[0]!r}"
        if not text_output and text_keys:
            return "marks on an image are cells or points, not words"
    if "grid" in marks and not (_integer(marks["grid"]) and 1 <= marks["grid"] <= MAX_GRID):
        return f"marks grid must be a whole number from 1 to {MAX_GRID}, got {marks['grid']!r}"
    if "cells" in marks:
        if "grid" not in marks:
            return "marked cells need the grid they are cells of (\"grid\": 8)"
        grid = marks["grid"]
        if not isinstance(marks["cells"], list):
            return "marks cells must be a list of [row, col]"
        for cell in marks["cells"]:
            if not (isinstance(cell, list) and len(cell) == 2 and all(map(_integer, cell))):
                return f"marked cell {cell!r} is not [row, col]"
            if not all(0 <= v < grid for v in cell):
                return f"marked cell {cell} is outside the {grid}x{grid} grid"
    if "points" in marks:
        if not isinstance(marks["points"], list):
            return "marks points must be a list of [x, y]"
        for point in marks["points"]:
            if not (isinstance(point, list) and len(point) == 2 and all(map(_number, point))):
                return f"marked point {point!r} is not [x, y]"
            if not all(0.0 <= v <= 1.0 for v in point):
                return f"marked point {point} is outside the image (x and y go from 0 to 1)"
    if "words" in marks:
        if not isinstance(marks["words"], list) or not all(map(_integer, marks["words"])):
            return "marks words must be a list of word indices"
        n_words = len(output.split()) if isinstance(output, str) else None
        for i in marks["words"]:
            if i < 0 or (n_words is not None and i >= n_words):
                return f"marked word {i} is not a word of the caption (it has {n_words} words, 0 to {n_words - 1})" \
                    if n_words is not None else f"marked word {i} is not a word index"
    return None


def parse(value, output=None, where: str = "marks") -> dict:
    """Marks from an export cell or a request: JSON text, a dict, or empty ("" / None / {}) -> a dict ({} for none).
    Invalid marks raise DataError: "{where}: <the problem>"."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise DataError(f"{where}: marks are not valid JSON ({error})") from None
    why = problem(value, output)
    if why:
        raise DataError(f"{where}: {why}")
    return value or {}


def dumps(marks: dict | None) -> str:
    """The export cell of one candidate's marks: compact JSON, "" when there are none."""
    marks = {k: v for k, v in (marks or {}).items() if v not in (None, [], {})}
    if "grid" in marks and not marks.keys() & {"cells"}:
        marks.pop("grid")
    return json.dumps(marks, separators=(",", ":")) if marks else ""


def is_empty(marks: dict | None) -> bool:
    return not (marks and (marks.get("cells") or marks.get("points") or marks.get("words")))


def cell_mask(marks: dict | None, grid: int) -> np.ndarray:
    """Bool (grid, grid): the cells of a `grid` raster that the image marks touch. A marked cell of another grid marks
    every cell it overlaps; a point marks the cell it falls in."""
    mask = np.zeros((grid, grid), dtype=bool)
    if not marks:
        return mask
    own = marks.get("grid", grid)
    for row, col in marks.get("cells", []):
        # the marked cell spans [row/own, (row+1)/own) of the image; every cell of ours that overlaps it
        top, bottom = row * grid // own, -(-(row + 1) * grid // own)
        left, right = col * grid // own, -(-(col + 1) * grid // own)
        mask[top:bottom, left:right] = True
    for x, y in marks.get("points", []):
        mask[min(int(y * grid), grid - 1), min(int(x * grid), grid - 1)] = True
    return mask


def box_mask(marks: dict | None, boxes: list[dict], width: float, height: float) -> np.ndarray:
    """Bool (len(boxes),): the boxes (`{"box": [x0, y0, x1, y1]}` in pixels of a `width` × `height` image) that the
    image marks point at. A point, or a marked cell's centre, marks the box holding it whose centre is nearest; one in
    no box marks none (an object nobody boxed)."""
    mask = np.zeros(len(boxes), dtype=bool)
    if not marks or not boxes:
        return mask
    own = marks.get("grid", 1)
    points = [(x * width, y * height) for x, y in marks.get("points", [])]
    points += [((col + 0.5) / own * width, (row + 0.5) / own * height) for row, col in marks.get("cells", [])]
    xy = np.array([b["box"] for b in boxes], dtype=float)
    centres = (xy[:, :2] + xy[:, 2:]) / 2
    for x, y in points:
        holds = (xy[:, 0] <= x) & (x <= xy[:, 2]) & (xy[:, 1] <= y) & (y <= xy[:, 3])
        if holds.any():
            distance = np.where(holds, np.hypot(centres[:, 0] - x, centres[:, 1] - y), np.inf)
            mask[int(np.argmin(distance))] = True
    return mask


def word_mask(marks: dict | None, n_words: int) -> np.ndarray:
    """Bool (n_words,): the marked words of a caption of `n_words` words (indices past the end are ignored)."""
    mask = np.zeros(n_words, dtype=bool)
    for i in (marks or {}).get("words", []):
        if 0 <= i < n_words:
            mask[i] = True
    return mask


def cells_of(mask: np.ndarray) -> dict:
    """The marks of a bool (grid, grid) mask of cells: {"grid": G, "cells": [[row, col], ...]} ({} when empty)."""
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return {}
    return {"grid": int(mask.shape[0]), "cells": [[int(r), int(c)] for r, c in zip(rows, cols)]}
