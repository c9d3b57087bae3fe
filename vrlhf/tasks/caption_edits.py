"""Candidate edits of a caption: copies of a policy sample moved in the directions annotators reward.

`vrlhf sample --edits N` puts such copies into the labeling queue beside the policy's own samples (docs/DEMO.md,
"Candidate edits"). Annotators reward captions that mention every shape and state no false word; without the hidden
ground truth (real users have none) which shape is missing and which word is false is unknown, so the edits ask the
policy instead, through its other samples of the same input (`others`):

    shape added        a shape of a kind that another sample mentions more often than this one does (of those, the
                       mention most of the other samples share), in the grammar's words (vrlhf/shapes_grammar.py),
                       after a connective ("and ...")
    attribute dropped  one size, colour or position of one mention removed with its clause words ("in red",
                       "of big size", "on the left side"): the one the other samples contradict most (a random one
                       when none does)
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from vrlhf.shapes_grammar import CONNECTIVES, POSITION_PHRASES, SIZE_WORDS, article, parse_caption
from vrlhf.tasks.caption_oracle import _mentions, words

DROPPABLE = ("size", "colour", "position")
POSITION_LEAD = {"on", "in", "at", "to", "the", "far"}  # the words of a position phrase before its position word


def same_shape(a: dict, b: dict) -> bool:
    """Whether two mentions can describe one shape: the same kind and no attribute both state differently."""
    return a["kind"] == b["kind"] and all(a[s] is None or b[s] is None or a[s] == b[s] for s in DROPPABLE)


def phrase(mention: dict, rng: np.random.Generator) -> str:
    """A mention in the grammar's words: article, size, colour, kind, position phrase (the attributes it states)."""
    parts = [SIZE_WORDS[mention["size"]][rng.integers(2)] if mention["size"] else "", mention["colour"] or "",
             mention["kind"]]
    if mention["position"]:
        choices = POSITION_PHRASES[mention["position"]]
        parts.append(choices[rng.integers(len(choices))])
    text = " ".join(p for p in parts if p)
    return f"{article(text, rng)} {text}"


def add_shape(output: str, others: list[str], rng: np.random.Generator) -> str | None:
    """`output` with one more shape: of a kind that another sample mentions more often than `output` does, its
    mention that most of the other samples share; None when none mentions more of any kind."""
    own = parse_caption(output)
    counts = Counter(m["kind"] for m in own)
    candidates = []  # mentions of a kind that another sample mentions more often than `output` does
    for other in others:
        theirs = parse_caption(other)
        more = {kind for kind, n in Counter(m["kind"] for m in theirs).items() if n > counts[kind]}
        candidates += [m for m in theirs if m["kind"] in more and not any(same_shape(m, o) for o in own)]
    if not candidates:
        return None
    support = np.array([sum(same_shape(m, c) for c in candidates) for m in candidates]) + rng.random(len(candidates))
    chosen = dict(candidates[int(np.argmax(support))])  # the most shared, ties broken at random
    alike = [m for m in candidates if m["kind"] == chosen["kind"]]
    for slot in DROPPABLE:  # state only what most of the samples that mention this kind agree on: a guess is costly
        stated = [m[slot] for m in alike if m[slot] is not None]
        if chosen[slot] is not None and 2 * stated.count(chosen[slot]) <= len(stated):
            chosen[slot] = None
    text = phrase(chosen, rng)
    said = " ".join(words(output))
    return f"{said} {CONNECTIVES[rng.integers(len(CONNECTIVES))]} {text}" if said else text


def clause(said: list[str], index: int, slot: str) -> list[int]:
    """The word indices to remove with the attribute word `said[index]`: its preposition or helper words."""
    span = [index]
    if slot == "position":
        j = index - 1
        while j >= 0 and said[j] in POSITION_LEAD:
            span.append(j)
            j -= 1
        if index + 1 < len(said) and said[index + 1] == "side":
            span.append(index + 1)
    elif slot == "colour" and index > 0 and said[index - 1] == "in":  # "a circle in red"
        span.append(index - 1)
    elif slot == "size":
        if index + 1 < len(said) and said[index + 1] == "size":  # "of big size", "huge size"
            span += [index + 1] + ([index - 1] if index > 0 and said[index - 1] == "of" else [])
        elif index > 1 and said[index - 2:index] == ["that", "is"]:  # "that is small"
            span += [index - 2, index - 1]
    return span


def drop_attribute(output: str, others: list[str], rng: np.random.Generator) -> str | None:
    """`output` without one stated size, colour or position: the one the other samples contradict most (their
    mentions of the same shape that state another value, less those that state the same); None if it states none."""
    said = words(output)
    other_mentions = [m for other in others for m in parse_caption(other)]
    stated = []  # (how much the others contradict it, word index, slot)
    for mention, where in _mentions(said):
        for slot in DROPPABLE:
            if slot in where:
                alike = [m for m in other_mentions if m["kind"] == mention["kind"] and m[slot] is not None]
                contradiction = sum(m[slot] != mention[slot] for m in alike) - sum(m[slot] == mention[slot]
                                                                                    for m in alike)
                stated.append((contradiction + rng.random() * 0.5, where[slot], slot))
    if not stated:
        return None
    _, index, slot = max(stated)
    gone = set(clause(said, index, slot))
    return with_articles([w for i, w in enumerate(said) if i not in gone])


def with_articles(said: list[str]) -> str:
    """The words joined, each "a" / "an" agreeing with the word after it again ("an orange square" -> "a square")."""
    return " ".join("an" if w in ("a", "an") and i + 1 < len(said) and said[i + 1][0] in "aeiou"
                    else "a" if w in ("a", "an") and i + 1 < len(said) else w for i, w in enumerate(said))


def edits(row: dict, output: str, rng: np.random.Generator, others: list | tuple = ()) -> dict[str, str]:
    """The edits of one caption that apply, by name. `others`: the policy's other samples of the same input, which
    say what it thinks is there; `row` is not read (the edits never see the hidden ground truth)."""
    others = [str(o) for o in others]
    made = {"shape added": add_shape(str(output), others, rng),
            "attribute dropped": drop_attribute(str(output), others, rng)}
    return {name: text for name, text in made.items() if text is not None}
