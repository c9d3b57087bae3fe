"""Simulated detection annotator: prefers complete, tight, non-duplicated, correctly classed boxes.

Each predicted box is matched to at most one true shape (the assignment of highest total IoU among pairs that
overlap at least MIN_IOU: the box is "aimed at" that shape); then, in shape units (a perfect box earns 1):

    score =   sum over matched boxes ( 1 - LOOSE·(1 - IoU) - WRONG·[wrong colour] - WRONG·[wrong kind] )
            - MISSED    · (shapes no box is aimed at)
            - DUPLICATE · (unmatched boxes overlapping a shape at least MIN_IOU: a second box on a found shape)
            - SPURIOUS  · (unmatched boxes on the background)

The true boxes score exactly the number of shapes, and no box set scores higher. A box's confidence is not judged:
people look at where the boxes are and what they say. Constants and self-agreement: docs/ORACLES.md.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from vrlhf.tasks.bradley_terry import agreement, draw, rank_with_ties, sigmoid
from vrlhf.tasks.detection_boxes import true_boxes
from vrlhf.tasks.detection_metrics import box_iou

DEFAULT_TEMPERATURE = 0.3  # self-agreement ~0.85 on model-like box sets (docs/ORACLES.md)
MIN_IOU = 0.1  # a box overlapping a shape this much is aimed at it
LOOSE, WRONG, MISSED, DUPLICATE, SPURIOUS = 2.0, 0.75, 1.0, 0.75, 0.5


def _truth(row: dict) -> list[dict]:
    attributes = row.get("attributes") or {}
    if "shapes" not in attributes and "boxes" not in attributes:
        raise ValueError(f"detection oracle: row {row.get('id')!r} has no true boxes to judge against")
    return true_boxes(row)


def assignment(row: dict, output: list[dict]) -> tuple[dict[int, int], np.ndarray]:
    """({predicted box index: true box index}, IoU matrix (predicted, true)): the matches `score` judges."""
    truth = _truth(row)
    ious = box_iou([b["box"] for b in output], [b["box"] for b in truth])
    if not len(output) or not truth:
        return {}, ious
    rows, cols = linear_sum_assignment(-ious)
    return {int(p): int(t) for p, t in zip(rows, cols) if ious[p, t] >= MIN_IOU}, ious


def box_values(row: dict, output: list[dict]) -> tuple[np.ndarray, float]:
    """(what each predicted box adds to `score`, what the shapes nobody boxed cost): they sum to `score`."""
    truth = _truth(row)
    matches, ious = assignment(row, output)
    values = np.zeros(len(output))
    for p, b in enumerate(output):
        if p in matches:
            t = matches[p]
            (colour, kind), (true_colour, true_kind) = (_split(b["label"]), _split(truth[t]["label"]))
            values[p] = 1.0 - LOOSE * (1.0 - ious[p, t]) - WRONG * (colour != true_colour) - WRONG * (kind != true_kind)
        elif truth and ious[p].max() >= MIN_IOU:
            values[p] = -DUPLICATE
        else:
            values[p] = -SPURIOUS
    return values, -MISSED * (len(truth) - len(matches))


def _split(label: str) -> tuple[str, str]:
    """("red", "circle") from "red circle"; a class of one word (COCO's) is all kind."""
    colour, _, kind = label.rpartition(" ")
    return colour, kind


def components(row: dict, output: list[dict]) -> dict[str, float]:
    """The terms of `score`: matched boxes' mean IoU, wrong attributes, missed shapes, duplicates, spurious boxes."""
    truth = _truth(row)
    matches, ious = assignment(row, output)
    wrong = sum(a != b for p, t in matches.items()
                for a, b in zip(_split(output[p]["label"]), _split(truth[t]["label"])))
    unmatched = [p for p in range(len(output)) if p not in matches]
    duplicates = sum(bool(truth) and ious[p].max() >= MIN_IOU for p in unmatched)
    return {"matched": len(matches), "mean_iou": float(np.mean([ious[p, t] for p, t in matches.items()]))
            if matches else 0.0, "wrong_attributes": wrong, "missed": len(truth) - len(matches),
            "duplicates": duplicates, "spurious": len(unmatched) - duplicates}


def score(row: dict, output: list[dict]) -> float:
    """Latent utility of the box set `output` for `row` (higher is better; the true boxes score the shape count)."""
    values, missed = box_values(row, output)
    return float(values.sum() + missed)


def regions(row: dict, output: list[dict]) -> np.ndarray:
    """The dense form: one value per predicted box (in order), then the missed shapes' cost; sums to `score`."""
    values, missed = box_values(row, output)
    return np.append(values, missed)


def prefer(row: dict, output_a: list[dict], output_b: list[dict], temperature: float = DEFAULT_TEMPERATURE) -> float:
    """Bradley-Terry probability that an annotator prefers a over b."""
    return sigmoid((score(row, output_a) - score(row, output_b)) / temperature)


def judge(row: dict, output_a: list[dict], output_b: list[dict], rng: np.random.Generator,
          temperature: float = DEFAULT_TEMPERATURE) -> float:
    """One simulated annotation: 1.0 (a wins), 0.0 (b wins) or 0.5 (a tie: the scores are within TIE_MARGIN)."""
    return draw(score(row, output_a) - score(row, output_b), rng, temperature)


def rank(row: dict, outputs: list, rng: np.random.Generator, temperature: float = DEFAULT_TEMPERATURE) -> list[int]:
    """One simulated ranking of k box sets (indices, best first), Plackett–Luce over `score`; identical sets tie."""
    same = [tuple((tuple(b["box"]), b["label"]) for b in o) for o in outputs]
    return rank_with_ties([score(row, o) for o in outputs], same, rng, temperature)


def self_agreement(rows: list[dict], outputs_a: list, outputs_b: list, seed: int = 0,
                   temperature: float = DEFAULT_TEMPERATURE) -> float:
    """How often two independent judgements of the same pair agree: the ceiling of any reward model's accuracy."""
    differences = [score(r, a) - score(r, b) for r, a, b in zip(rows, outputs_a, outputs_b, strict=True)]
    return agreement(differences, seed, temperature)


BAD_BOX = 0.5  # a box adding less than this (of a perfect box's 1.0) is one an annotator marks
MISS_MARK = 0.2  # the chance an annotator leaves a bad box or a missed shape unmarked


def mark(row: dict, output: list[dict], rng: np.random.Generator) -> dict:
    """Where one simulated annotator marks `output` wrong, as clicked points of the drawn image (vrlhf/marks.py,
    x and y in [0, 1] from the top left): the centre of each bad box (loose, misclassed, duplicate, on nothing) and
    of each shape no box is aimed at, each left out with probability MISS_MARK."""
    from vrlhf.tasks.detection_boxes import image_extent

    width, height = image_extent(row)
    values, _ = box_values(row, output)
    matches, _ = assignment(row, output)
    found = set(matches.values())
    centres = [b["box"] for b, v in zip(output, values) if v < BAD_BOX]
    centres += [t["box"] for i, t in enumerate(_truth(row)) if i not in found]
    clip = lambda v: round(min(max(v, 0.0), 1.0), 4)  # noqa: E731
    points = [[clip((x0 + x1) / 2 / width), clip((y0 + y1) / 2 / height)]
              for x0, y0, x1, y1 in centres if rng.random() >= MISS_MARK]
    return {"points": points} if points else {}


EDITS = ("loose", "shift", "colour", "kind", "drop", "duplicate", "spurious")


def corrupt(row: dict, rng: np.random.Generator, edits: tuple[str, ...] | None = None) -> list[dict]:
    """A model-like box set for a shapes row: the true boxes after `edits` (default: each box loose with probability
    0.5 (1-3 px per side), shifted 0.3 (1-3 px), another colour 0.1, another kind 0.1, dropped 0.15, duplicated 0.15
    (the copy shifted 1-4 px); one box on the background 0.15). With `edits` given, each named edit hits every box."""
    from vrlhf.shapes import COLOURS, KINDS

    chance = {"loose": 0.5, "shift": 0.3, "colour": 0.1, "kind": 0.1, "drop": 0.15, "duplicate": 0.15, "spurious": 0.15}
    hit = (lambda e: e in edits) if edits is not None else (lambda e: rng.random() < chance[e])
    size = row["image"].size[0]
    out = []
    for b in _truth(row):
        x0, y0, x1, y1 = b["box"]
        colour, kind = _split(b["label"])
        if hit("drop"):
            continue
        if hit("loose"):
            x0, y0, x1, y1 = (v + s * rng.integers(1, 4) for v, s in zip((x0, y0, x1, y1), (-1, -1, 1, 1)))
        if hit("shift"):
            dx, dy = rng.integers(-3, 4, 2)
            x0, x1, y0, y1 = x0 + dx, x1 + dx, y0 + dy, y1 + dy
        if hit("colour"):
            colour = rng.choice([c for c in COLOURS if c != colour])
        if hit("kind"):
            kind = rng.choice([k for k in KINDS if k != kind])
        box = {"box": [float(v) for v in (x0, y0, x1, y1)], "label": f"{colour} {kind}".strip(), "score": 1.0}
        out.append(box)
        if hit("duplicate"):
            dx, dy = rng.integers(1, 5, 2) * rng.choice([-1, 1], 2)
            out.append({**box, "box": [box["box"][0] + dx, box["box"][1] + dy, box["box"][2] + dx, box["box"][3] + dy]})
    if hit("spurious"):
        x0, y0 = rng.integers(0, size - 8, 2)
        w, h = rng.integers(5, 12, 2)
        out.append({"box": [float(x0), float(y0), float(x0 + w), float(y0 + h)],
                    "label": f"{rng.choice(COLOURS)} {rng.choice(KINDS)}", "score": 1.0})
    return out


def main(argv: list[str] | None = None) -> None:
    """Print this oracle's self-agreement on typical pairs (the table in docs/ORACLES.md)."""
    from vrlhf.config import parse_no_arguments
    from vrlhf.shapes import make_shapes
    from vrlhf.tasks.bradley_terry import TIE_MARGIN

    parse_no_arguments(argv, main.__doc__)

    rows = make_shapes(400, seed=1)
    rng = np.random.default_rng(0)
    print("pair (a vs b)                          P(a wins)  ties  self-agreement")
    for name, edits in [("truth vs truth", ()), ("truth vs loose boxes", ("loose",)),
                        ("truth vs shifted boxes", ("shift",)), ("truth vs wrong colours", ("colour",)),
                        ("truth vs wrong kinds", ("kind",)), ("truth vs every box dropped", ("drop",)),
                        ("truth vs every box duplicated", ("duplicate",)), ("truth vs a box on nothing", ("spurious",)),
                        ("model-like vs model-like", None)]:
        a = [true_boxes(r) if edits is not None else corrupt(r, rng) for r in rows]
        b = [corrupt(r, rng, edits) for r in rows]
        scores = [(score(r, x), score(r, y)) for r, x, y in zip(rows, a, b)]
        p = np.mean([sigmoid((x - y) / DEFAULT_TEMPERATURE) for x, y in scores])
        ties = np.mean([abs(x - y) < TIE_MARGIN for x, y in scores])
        print(f"{name:<38} {p:9.3f} {ties:5.2f} {self_agreement(rows, a, b, seed=0):15.3f}")
    print(f"mean score of the truth: {np.mean([score(r, true_boxes(r)) for r in rows]):.3f}")


if __name__ == "__main__":
    import sys

    from vrlhf.errors import run_command

    sys.exit(run_command("python -m vrlhf.tasks.detection_oracle", main))
