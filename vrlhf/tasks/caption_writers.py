"""Simulated reference writers: the people who wrote the shapes dataset's captions, with human habits.

Real reference captions are not what the people who judge a captioner want. Writers mention what strikes them
(large, central shapes first), often stop after that one, leave out details, use their own words, and now and then
get something wrong, while judges want every shape described and every attribute true. That gap is what RLHF
exists to close and what a metric computed against the references (CIDEr-D) cannot see.

Each dataset seed has a pool of `WRITERS` writers whose habits are drawn once (`writer_pool`); every image gets
`N_REFERENCES` captions from as many different writers (`references`), each caption drawn with that writer's
habits. Every caption parses back with `vrlhf.shapes_grammar.parse_caption`. Measured statistics: docs/ORACLES.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vrlhf.shapes_grammar import CONNECTIVES, KINDS, MAX_CAPTION_WORDS, POSITION_PHRASES, SIZE_WORDS, SYNONYMS, article

WRITERS = 40  # writers per dataset seed
N_REFERENCES = 5  # captions per image, each by a different writer
# Word orders of one shape's noun phrase; a part whose attribute the writer leaves out is dropped whole.
TEMPLATES = (
    ("{s}", "{c}", "{k}", "{p}"),
    ("{s}", "{k}", "in {c}", "{p}"),
    ("{c}", "{k}", "of {s} size", "{p}"),
    ("{c}", "{k}", "{p}", "that is {s}"),
    ("{s}", "{k}", "{p}", "in {c}"),
)
PREFIXES = ("there is", "an image of", "a picture of", "we see")
# Mistakes people make: neighbouring hues, the neighbouring third, the other size, another kind.
CONFUSIONS = {
    "colour": {"red": ("orange", "purple"), "orange": ("yellow", "red"), "yellow": ("orange", "green"),
               "green": ("blue", "yellow"), "blue": ("purple", "green"), "purple": ("blue", "red")},
    "position": {"left": ("center",), "center": ("left", "right"), "right": ("center",)},
    "size": {"small": ("large",), "large": ("small",)},
    "kind": {k: tuple(o for o in KINDS if o != k) for k in KINDS},
}


@dataclass(frozen=True)
class Writer:
    """One simulated person's habits; every probability is per caption or per shape mentioned."""

    stop: float  # after each shape mentioned, the chance of ending the caption there
    salience_order: bool  # True: the most striking shape first; False: left to right
    omit_size: float  # chance of leaving out a shape's size
    omit_position: float  # chance of leaving out a shape's position
    error: float  # chance that a stated colour, size or position is wrong (a kind: a third of it)
    synonym: float  # chance of "tiny", "huge", "violet", "on the far left", ... instead of the plain word
    prefix: float  # chance of starting with "there is", "a picture of", ...
    templates: tuple[float, ...]  # preference over TEMPLATES
    connective: int  # index of the favourite connective in CONNECTIVES


def draw_writer(rng: np.random.Generator) -> Writer:
    """Habits of one writer: most stop early and go by salience; some are terse about size or position."""
    terse = lambda: float(rng.uniform(0.4, 0.9)) if rng.random() < 0.4 else 0.05  # noqa: E731
    return Writer(
        stop=float(rng.uniform(0.3, 0.7)),
        salience_order=bool(rng.random() < 0.85),
        omit_size=terse(),
        omit_position=terse(),
        error=float(rng.uniform(0.0, 0.06)),
        synonym=float(rng.uniform(0.0, 0.5)),
        prefix=float(rng.uniform(0.0, 0.5)),
        templates=tuple(float(w) for w in rng.dirichlet(np.ones(len(TEMPLATES)))),
        connective=int(rng.integers(len(CONNECTIVES))),
    )


def writer_pool(seed: int, n: int = WRITERS) -> list[Writer]:
    """The writers of dataset `seed` (the same for every image of that seed)."""
    rng = np.random.default_rng([seed, 7_777])
    return [draw_writer(rng) for _ in range(n)]


def salience(shape: dict, rng: np.random.Generator) -> float:
    """How much a shape strikes a viewer: large beats small, the centre beats the sides, and people differ."""
    return 2.0 * (shape["size"] == "large") + 1.0 * (shape["position"] == "center") + rng.normal(0.0, 0.7)


def mentioned(shapes: list[dict], writer: Writer, rng: np.random.Generator) -> list[dict]:
    """The shapes a writer mentions, in the order written: at least one, then each next one unless they stop."""
    order = sorted(shapes, key=lambda s: -salience(s, rng)) if writer.salience_order else list(shapes)
    chosen = [order[0]]
    for shape in order[1:]:
        if rng.random() < writer.stop:
            break
        chosen.append(shape)
    return chosen


def stated(shape: dict, writer: Writer, rng: np.random.Generator) -> dict:
    """What a writer states about one shape: kind and colour always, size and position unless left out, each
    stated attribute possibly wrong (a confusion people make)."""
    facts = {"kind": shape["kind"], "colour": shape["colour"]}
    if rng.random() >= writer.omit_size:
        facts["size"] = shape["size"]
    if rng.random() >= writer.omit_position:
        facts["position"] = shape["position"]
    for slot, value in facts.items():
        if rng.random() < writer.error / (3.0 if slot == "kind" else 1.0):
            options = CONFUSIONS[slot][value]
            facts[slot] = options[rng.integers(len(options))]
    return facts


def phrase(facts: dict, writer: Writer, rng: np.random.Generator) -> str:
    """One noun phrase in the writer's wording ("a huge red circle on the far left", "a circle in blue", ...)."""
    def word(slot: str) -> str:
        value = facts[slot]
        if value in SYNONYMS and rng.random() < writer.synonym:
            return SYNONYMS[value][rng.integers(len(SYNONYMS[value]))]
        if slot == "size":
            return SIZE_WORDS[value][rng.integers(2)]
        if slot == "position":
            options = POSITION_PHRASES[value]
            return options[rng.integers(len(options))]
        return value

    fill = {"{s}": "size", "{c}": "colour", "{k}": "kind", "{p}": "position"}
    template = TEMPLATES[rng.choice(len(TEMPLATES), p=writer.templates)]
    parts = []
    for part in template:
        slot = next(fill[m] for m in fill if m in part)
        if slot in facts:
            parts.append(part.replace(next(m for m in fill if m in part), word(slot)))
    text = " ".join(parts)
    return f"{article(text, rng)} {text}"


def write_reference(shapes: list[dict], writer: Writer, rng: np.random.Generator,
                    max_words: int = MAX_CAPTION_WORDS) -> str:
    """One reference caption of `shapes` as `writer` would write it (at most `max_words` words)."""
    words = PREFIXES[rng.integers(len(PREFIXES))].split() if rng.random() < writer.prefix else []
    for j, shape in enumerate(mentioned(shapes, writer, rng)):
        joint = (CONNECTIVES[writer.connective] if rng.random() < 0.7 else
                 CONNECTIVES[rng.integers(len(CONNECTIVES))]).split() if j else []
        more = joint + phrase(stated(shape, writer, rng), writer, rng).split()
        if j and len(words) + len(more) > max_words:
            break
        words += more
    return " ".join(words[:max_words])


def references(shapes: list[dict], pool: list[Writer], rng: np.random.Generator,
               n: int = N_REFERENCES) -> list[str]:
    """`n` reference captions of one image, each by a different writer of `pool`."""
    return [write_reference(shapes, pool[w], rng) for w in rng.choice(len(pool), size=n, replace=False)]
