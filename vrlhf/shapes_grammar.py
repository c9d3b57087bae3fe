"""How the shapes dataset puts shapes into words and reads them back: the vocabulary, the complete caption of a
set of shapes, and `parse_caption`.

Every shape is one noun phrase that starts with an article and states its attributes before the next article,
in any order and with any filler words: that is what lets `parse_caption` read back every caption the grammar
or a reference writer (`vrlhf/tasks/caption_writers.py`) produces.
"""

from __future__ import annotations

import re

import numpy as np

KINDS = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
POSITIONS = ("left", "center", "right")
SLOTS = ("size", "colour", "kind", "position")
MAX_CAPTION_WORDS = 24

ARTICLES = ("a", "an", "one")
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
POSITION_PHRASES = {
    "left": ("on the left", "on the left side", "at the left", "to the left"),
    "center": ("in the center", "in the middle", "at the center"),
    "right": ("on the right", "on the right side", "at the right", "to the right"),
}
PHRASES = (  # s: size word, c: colour, k: kind, p: position phrase; the plain order twice as often
    "{s} {c} {k} {p}", "{s} {c} {k} {p}", "{s} {k} in {c} {p}", "{c} {k} of {s} size {p}", "{c} {k} {p} that is {s}",
)
PREFIXES = ("", "", "there is", "an image of", "a picture of", "we see")
CONNECTIVES = ("and", "and", "next to", "with")
# Words some reference writers use instead of the plain ones (the complete grammar never does).
SYNONYMS = {"small": ("tiny",), "large": ("huge",), "purple": ("violet",), "center": ("at the centre",),
            "left": ("on the far left",), "right": ("on the far right",)}

# parse_caption's lexicon: word -> (slot, value); every other word is filler.
LEXICON = {
    **{w: ("size", size) for size, words in SIZE_WORDS.items() for w in words},
    "tiny": ("size", "small"), "huge": ("size", "large"),
    **{c: ("colour", c) for c in COLOURS},
    "violet": ("colour", "purple"),
    **{k: ("kind", k) for k in KINDS},
    "left": ("position", "left"), "right": ("position", "right"),
    "center": ("position", "center"), "middle": ("position", "center"), "centre": ("position", "center"),
}
VOCABULARY = sorted(
    set(ARTICLES)
    | {w for words in SIZE_WORDS.values() for w in words}
    | set(COLOURS) | set(KINDS)
    | {w for text in (*PHRASES, *PREFIXES, *CONNECTIVES) for w in text.split() if not w.startswith("{")}
    | {w for phrases in POSITION_PHRASES.values() for p in phrases for w in p.split()}
    | {w for words in SYNONYMS.values() for text in words for w in text.split()}
    | {"of", "size", "that", "is", "in"}  # the writers' templates (vrlhf/tasks/caption_writers.py)
)


def article(text: str, rng: np.random.Generator) -> str:
    return "one" if rng.random() < 0.15 else "an" if text[0] in "aeiou" else "a"


def _phrase(shape: dict, rng: np.random.Generator) -> str:
    text = PHRASES[rng.integers(len(PHRASES))].format(
        s=SIZE_WORDS[shape["size"]][rng.integers(2)],
        c=shape["colour"],
        k=shape["kind"],
        p=POSITION_PHRASES[shape["position"]][rng.integers(len(POSITION_PHRASES[shape["position"]]))],
    )
    return f"{article(text, rng)} {text}"


def _shortest(shape: dict) -> list[str]:
    return f"a {shape['size']} {shape['colour']} {shape['kind']} {POSITION_PHRASES[shape['position']][0]}".split()


SHORTEST = 8  # words a shape needs at least: a 7-word phrase plus a 1-word connective


def caption(shapes: list[dict], rng: np.random.Generator, max_words: int = MAX_CAPTION_WORDS) -> str:
    """The complete caption: every attribute of every shape stated truly, in a random order and wording, in at
    most `max_words` words (each phrase is redrawn until the shapes still to come fit). What the annotators want."""
    order = range(len(shapes)) if rng.random() < 0.5 else rng.permutation(len(shapes))
    words = PREFIXES[rng.integers(len(PREFIXES))].split()
    if len(words) + SHORTEST * len(shapes) - 1 > max_words:
        words = []
    for j, index in enumerate(order):
        reserve = SHORTEST * (len(shapes) - j - 1)
        for _ in range(20):
            joint = CONNECTIVES[rng.integers(len(CONNECTIVES))].split() if j else []
            phrase = _phrase(shapes[index], rng).split()
            if len(words) + len(joint) + len(phrase) + reserve <= max_words:
                break
        else:
            joint, phrase = (["and"] if j else []), _shortest(shapes[index])
        words += joint + phrase
    return " ".join(words)


def parse_caption(text: str) -> list[dict]:
    """The shapes a caption mentions: dicts with `kind` and the stated `size`, `colour`, `position` (or None).

    Reads every grammar caption exactly. Any other text (truncated, repeated, garbage) still parses: words
    are split at articles into noun phrases, a slot stated twice starts a new mention, and attribute words
    with no kind are dropped.
    """
    mentions: list[dict] = []
    current: dict = {}

    def close():
        if "kind" in current:
            mentions.append({slot: current.get(slot) for slot in SLOTS})
        current.clear()

    for word in re.findall(r"[a-z]+", str(text or "").lower()):
        if word in ARTICLES:
            close()
        elif word in LEXICON:
            slot, value = LEXICON[word]
            if slot in current:
                close()
            current[slot] = value
    close()
    return mentions
