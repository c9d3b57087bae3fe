"""Bradley–Terry draws shared by the simulated annotators: a score difference -> a sampled judgement."""

from __future__ import annotations

import math

import numpy as np

TIE_MARGIN = 0.02  # score differences below this are ties: the annotator sees no difference


def sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))  # = 1 / (1 + exp(-x)), without overflow


def draw(difference: float, rng: np.random.Generator, temperature: float) -> float:
    """One judgement of a pair whose scores differ by `difference`: 1.0 (a wins), 0.0 (b wins) or 0.5 (tie)."""
    if abs(difference) < TIE_MARGIN:
        return 0.5
    return float(rng.random() < sigmoid(difference / temperature))


def agreement(differences: list[float], seed: int, temperature: float) -> float:
    """How often two independent judgements of the same pair agree: the accuracy ceiling of any reward model."""
    rng = np.random.default_rng(seed)
    return float(np.mean([draw(d, rng, temperature) == draw(d, rng, temperature) for d in differences]))


def plackett_luce(scores: list[float], rng: np.random.Generator, temperature: float) -> list[int]:
    """One ranking of k outputs, best first: pick the best with probability softmax(score / temperature), then the
    best of the rest, and so on (Plackett–Luce). For two outputs a strict win has the Bradley–Terry probability."""
    left, order = list(range(len(scores))), []
    while left:
        logits = np.array([scores[i] for i in left]) / temperature
        p = np.exp(logits - logits.max())
        order.append(left.pop(int(rng.choice(len(left), p=p / p.sum()))))
    return order


def rank_with_ties(scores: list[float], same: list, rng: np.random.Generator, temperature: float) -> list[int]:
    """`plackett_luce` over the distinct outputs (equal `same` keys: identical outputs). Identical outputs tie, which
    a ranking cannot say: each follows the first of its kind, in the given order, with no drawn preference (the
    export leaves out pairs of identical outputs). Without identical outputs, exactly `plackett_luce`'s draw."""
    groups: dict = {}
    for i, key in enumerate(same):
        groups.setdefault(key, []).append(i)
    kinds = list(groups.values())
    return [i for j in plackett_luce([scores[kind[0]] for kind in kinds], rng, temperature) for i in kinds[j]]
