"""Simulated caption annotator: prefers captions that state only true attributes and mention every shape.

The latent utility of a caption for a shapes row (formula and calibration in docs/ORACLES.md):

    score = 0.25 * #true attributes stated about matched shapes
            - 1.0 * #false attributes (on matched shapes, or the nearest shape for an extra mention)
            - 0.5 * #shapes not mentioned - 0.5 * #mentions repeating a described shape
            - 0.1 * #immediately repeated words - 0.05 * #words beyond the longest grammar caption

A fully and truly described shape earns 1.0, so a perfect caption scores the number of shapes. A simulated
annotator picks a over b with the Bradley-Terry probability sigmoid((score(a) - score(b)) / temperature).
"""

from __future__ import annotations

import re

import numpy as np

from vrlhf.shapes import (
    COLOURS,
    KINDS,
    MAX_CAPTION_WORDS,
    POSITION_PHRASES,
    POSITIONS,
    PREFIXES,
    SIZES,
    SLOTS,
    caption,
)
from vrlhf.shapes_grammar import ARTICLES, LEXICON
from vrlhf.tasks.bradley_terry import TIE_MARGIN, agreement, draw, rank_with_ties, sigmoid
from vrlhf.tasks.mark_noise import MISPLACE, MISS, noisy_words

DEFAULT_TEMPERATURE = 0.6  # self-agreement ~0.87 on corrupted reference captions (docs/ORACLES.md)
TRUE, FALSE, MISSING, REPEAT, STUTTER, EXTRA = 0.25, 1.0, 0.5, 0.5, 0.1, 0.05


def _longest(n_shapes: int) -> int:
    # the longest caption the grammar writes for n shapes: prefix + phrases ("a red circle of large size" +
    # the longest position) + 2-word connectives; references never pay for length
    prefix = max(len(p.split()) for p in PREFIXES)
    longest_position = max(len(p.split()) for phrases in POSITION_PHRASES.values() for p in phrases)
    return min(MAX_CAPTION_WORDS, prefix + n_shapes * (6 + longest_position) + 2 * (n_shapes - 1))


def _compare(mention: dict, shape: dict) -> tuple[int, int]:
    """(true, false) attribute statements of `mention` about `shape`."""
    stated = [slot for slot in SLOTS if mention[slot] is not None]
    true = sum(mention[slot] == shape[slot] for slot in stated)
    return true, len(stated) - true


def words(output: str) -> list[str]:
    """The words of a caption as the oracle reads them (lower-case runs of letters): what `contributions`,
    `false_spans` and the word indices refer to."""
    return re.findall(r"[a-z]+", str(output or "").lower())


def _mentions(words: list[str]) -> list[tuple[dict, dict[str, int]]]:
    """`parse_caption` over words, keeping where each stated attribute is: [(mention, {slot: word index})]."""
    mentions: list[tuple[dict, dict[str, int]]] = []
    where: dict[str, int] = {}
    values: dict[str, str] = {}

    def close():
        if "kind" in values:
            mentions.append(({slot: values.get(slot) for slot in SLOTS}, dict(where)))
        values.clear()
        where.clear()

    for i, word in enumerate(words):
        if word in ARTICLES:
            close()
        elif word in LEXICON:
            slot, value = LEXICON[word]
            if slot in values:
                close()
            values[slot], where[slot] = value, i
    close()
    return mentions


def _analyse(row: dict, output: str) -> tuple[dict, np.ndarray, list[tuple[int, int]], list[int]]:
    """(the counts behind `score`, per-word values and one for the end, false attribute word spans, the indices of
    the shapes no mention matches)."""
    shapes = (row.get("attributes") or {}).get("shapes")
    if not shapes:
        raise ValueError(f"caption oracle: row {row.get('id')!r} has no shapes attributes to judge against")
    said = words(output)
    mentions = _mentions(said)
    # greedy matching of mentions to shapes by what the pair adds to the score (0.25 true - false), earlier first
    pairs = sorted(
        ((true - 4 * false, m, s) for m, (mention, _) in enumerate(mentions) for s, shape in enumerate(shapes)
         for true, false in [_compare(mention, shape)]),
        key=lambda p: (-p[0], p[1], p[2]),
    )
    matched: dict[int, int] = {}
    for _, m, s in pairs:
        if m not in matched and s not in matched.values():
            matched[m] = s
    missing = [s for s in range(len(shapes)) if s not in matched.values()]
    counts = dict(true=0, false=0, missing=len(missing), repeats=0)
    values = np.zeros(len(said) + 1)  # one per word, then the end of the caption
    false_spans = []
    for m, (mention, where) in enumerate(mentions):
        # a matched mention against its shape; an extra one against the nearest shape (fewest false attributes)
        shape = shapes[matched[m]] if m in matched else min(shapes, key=lambda s: _compare(mention, s)[1])
        for slot, i in where.items():
            if mention[slot] != shape[slot]:
                counts["false"] += 1
                values[i] -= FALSE
                false_spans.append((i, i + 1))
            elif m in matched:  # an extra mention earns nothing for what it repeats truly
                counts["true"] += 1
                values[i] += TRUE
        if m not in matched and _compare(mention, shape)[1] == 0:  # it describes a shape already described
            counts["repeats"] += 1
            values[where["kind"]] -= REPEAT
    values[-1] -= MISSING * len(missing)  # the caption ended without them
    stutters = [i + 1 for i, (a, b) in enumerate(zip(said, said[1:])) if a == b]
    counts["stutters"] = len(stutters)
    values[stutters] -= STUTTER
    longest = _longest(len(shapes))
    counts["extra_words"] = max(0, len(said) - longest)
    values[longest : len(said)] -= EXTRA
    return counts, values, sorted(false_spans), missing


def components(row: dict, output: str) -> dict[str, float]:
    """The counts behind `score` (for debugging and docs)."""
    return _analyse(row, output)[0]


def score(row: dict, output: str) -> float:
    """Latent utility of caption `output` for the shapes `row` (higher is better; a perfect caption = #shapes)."""
    c = components(row, output)
    return (TRUE * c["true"] - FALSE * c["false"] - MISSING * c["missing"] - REPEAT * c["repeats"]
            - STUTTER * c["stutters"] - EXTRA * c["extra_words"])


def contributions(row: dict, output: str) -> np.ndarray:
    """(len(words(output)) + 1,): what each word adds to `score`, then what the end of the caption adds; they sum to
    the score. A stated attribute carries its +0.25 or -1.0, the kind word of a repeated mention its -0.5, a stutter
    or a word past the longest grammar caption its penalty on that word; the shapes left out cost their -0.5 at the
    end, where the caption stopped without them."""
    return _analyse(row, output)[1]


# The dense form the tuner reads (tuner/rewards.py oracle_reward): per word, then the end (captioning.token_rewards).
regions = contributions


def false_spans(row: dict, output: str) -> list[tuple[int, int]]:
    """Word spans [start, end) of `words(output)` that state a false attribute: what an annotator would mark."""
    return _analyse(row, output)[2]


def missing_shapes(row: dict, output: str) -> list[dict]:
    """The row's shapes that no mention of the caption describes."""
    shapes = row["attributes"]["shapes"]
    return [shapes[s] for s in _analyse(row, output)[3]]


def prefer(row: dict, output_a: str, output_b: str, temperature: float = DEFAULT_TEMPERATURE) -> float:
    """Bradley-Terry probability that an annotator prefers a over b."""
    return sigmoid((score(row, output_a) - score(row, output_b)) / temperature)


def judge(row: dict, output_a: str, output_b: str, rng: np.random.Generator,
          temperature: float = DEFAULT_TEMPERATURE) -> float:
    """One simulated annotation: 1.0 (a wins), 0.0 (b wins) or 0.5 (a tie: the scores are within TIE_MARGIN)."""
    return draw(score(row, output_a) - score(row, output_b), rng, temperature)


def mark(row: dict, output: str, rng: np.random.Generator) -> dict:
    """Where one simulated annotator marks `output` wrong (its false words, some missed, a few misplaced), in the
    marks format of vrlhf/marks.py: vrlhf/tasks/mark_noise.py, docs/ORACLES.md."""
    return mark_caption(row, output, rng)


def false_words(row: dict, output: str) -> list[int]:
    """Indices of the words of `output` (split on whitespace, as the marks count them) that state something false about
    the image: `false_spans`, which count this module's words (letter runs), mapped back."""
    owner = [i for i, word in enumerate(str(output).split()) for _ in words(word)]  # oracle word -> ours
    return sorted({owner[j] for start, end in false_spans(row, output) for j in range(start, end)})


def mark_caption(row: dict, output: str, rng: np.random.Generator, miss: float = MISS,
                 misplace: float = MISPLACE) -> dict:
    """One simulated annotator's marks on a caption: its false words, each missed with probability `miss`, else moved
    to the word before or after with probability `misplace`. `{"words": [...]}` or {}."""
    return noisy_words(false_words(row, output), len(str(output).split()), rng, miss, misplace)


def rank(row: dict, outputs: list, rng: np.random.Generator, temperature: float = DEFAULT_TEMPERATURE) -> list[int]:
    """One simulated ranking of k outputs (indices, best first), Plackett–Luce over the same scores as `judge`;
    identical captions tie (`rank_with_ties`), as `judge` ties them."""
    return rank_with_ties([score(row, o) for o in outputs], [" ".join(o.split()) for o in outputs], rng, temperature)


def self_agreement(rows: list[dict], outputs_a: list[str], outputs_b: list[str], seed: int = 0,
                   temperature: float = DEFAULT_TEMPERATURE) -> float:
    """How often two independent judgements of the same pair agree: the accuracy ceiling of any reward model
    evaluated against this annotator on these pairs."""
    differences = [score(r, a) - score(r, b) for r, a, b in zip(rows, outputs_a, outputs_b, strict=True)]
    return agreement(differences, seed, temperature)


EDITS = ("attribute", "drop", "invent", "truncate")


def corrupt(row: dict, rng: np.random.Generator, edits: tuple[str, ...] | None = None) -> str:
    """A model-like caption: the grammar's wording of the truth after `edits` (default: 0-2 random errors among
    a wrong attribute, a dropped shape, an invented shape, and a truncation 15% of the time). For calibration."""
    if edits is None:
        edits = tuple(EDITS[i] for i in rng.integers(0, 3, size=rng.integers(0, 3))) + (
            ("truncate",) if rng.random() < 0.15 else ())
    values = {"kind": KINDS, "colour": COLOURS, "size": SIZES, "position": POSITIONS}
    shapes = [dict(s) for s in row["attributes"]["shapes"]]
    for edit in edits:
        if edit == "attribute" or (edit == "drop" and len(shapes) == 1):
            shape, slot = shapes[rng.integers(len(shapes))], SLOTS[rng.integers(4)]
            shape[slot] = str(rng.choice([v for v in values[slot] if v != shape[slot]]))
        elif edit == "drop":
            shapes.pop(int(rng.integers(len(shapes))))
        elif edit == "invent":
            shapes.append({slot: str(rng.choice(values[slot])) for slot in SLOTS})
    words = caption(shapes, rng).split()
    if "truncate" in edits:
        words = words[: int(rng.integers(1, len(words)))]
    return " ".join(words)


def main(argv: list[str] | None = None) -> None:
    """Print this oracle's self-agreement on typical pairs (the table in docs/ORACLES.md)."""
    from vrlhf.config import parse_no_arguments
    from vrlhf.shapes import make_shapes

    parse_no_arguments(argv, main.__doc__)
    rows = make_shapes(1000, seed=1, references="complete")  # the references state the whole truth
    rng = np.random.default_rng(0)
    print("pair (a vs b)                          P(a wins)  ties  self-agreement")
    for name, edits in [("reference vs reference", ()), ("reference vs wrong attribute", ("attribute",)),
                        ("reference vs shape dropped", ("drop",)), ("reference vs invented shape", ("invent",)),
                        ("reference vs truncated", ("truncate",)), ("model-like vs model-like", None)]:
        a = [r["captions"][0] if edits is not None else corrupt(r, rng) for r in rows]
        b = [corrupt(r, rng, edits) if edits is not None else corrupt(r, rng) for r in rows]
        p = np.mean([prefer(r, x, y) for r, x, y in zip(rows, a, b)])
        ties = np.mean([abs(score(r, x) - score(r, y)) < TIE_MARGIN for r, x, y in zip(rows, a, b)])
        print(f"{name:<38} {p:9.3f} {ties:5.2f} {self_agreement(rows, a, b, seed=0):15.3f}")


if __name__ == "__main__":
    import sys

    from vrlhf.errors import run_command

    sys.exit(run_command("python -m vrlhf.tasks.caption_oracle", main))
