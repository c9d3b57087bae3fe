"""Benchmark: vrlhf.metrics CIDEr-D against pycocoevalcap's Cider on a tuner-sized batch; prints a markdown table.

Batch: 64 images x 4 samples = 256 candidates, 5 references per image, ~10-word captions. "cold" is the
functional `cider_d` (document frequencies and reference vectors built on the call, the same work as
pycocoevalcap); "cached" is `CiderD.score` once the images' reference vectors are cached (every tuner step
after the first epoch). Both use pycocoevalcap's df (from the batch's own reference lists) so scores agree.

    .venv/bin/python bench/bench_cider.py [--images 64] [--k 4]
"""

import argparse
import random
import time
from collections.abc import Callable

import numpy as np
from pycocoevalcap.cider.cider import Cider

from vrlhf.metrics import CiderD, cider_d

WORDS = {
    "det": ["a", "the", "one", "two"],
    "adj": ["red", "green", "blue", "small", "large", "old", "young", "white", "black", "wooden"],
    "noun": ["dog", "cat", "man", "woman", "bus", "ball", "table", "horse", "train", "bench", "kite", "boy"],
    "verb": ["sitting on", "standing near", "running across", "looking at", "next to", "riding", "holding"],
    "place": ["the grass", "a busy street", "the beach", "a kitchen table", "the snow", "a field", "the water"],
}


def caption(rng: random.Random, noun: str) -> str:
    w = [rng.choice(WORDS["det"]), rng.choice(WORDS["adj"]), noun]
    w += [rng.choice(WORDS["verb"]), rng.choice(WORDS["place"])]
    if rng.random() < 0.5:
        w += ["with", rng.choice(WORDS["det"]), rng.choice(WORDS["adj"]), rng.choice(WORDS["noun"])]
    return " ".join(w)


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--k", type=int, default=4, help="samples per image")
    args = ap.parse_args()

    rng = random.Random(0)
    nouns = [rng.choice(WORDS["noun"]) for _ in range(args.images)]
    image_refs = [[caption(rng, noun) for _ in range(5)] for noun in nouns]
    refs = [r for r in image_refs for _ in range(args.k)]  # image-major, as the tuner's outputs
    cands = [caption(rng, rng.choice(WORDS["noun"])) for _ in refs]

    gts, res = {i: r for i, r in enumerate(refs)}, {i: [c] for i, c in enumerate(cands)}
    coco = np.asarray(Cider().compute_score(gts, res)[1])
    scorer = CiderD(refs)  # pycocoevalcap's df, computed once
    scorer.score(cands, refs)  # warm the reference cache
    diff = max(np.abs(cider_d(cands, refs) - coco).max(), np.abs(scorer.score(cands, refs) - coco).max())

    t_coco = best_of(lambda: Cider().compute_score(gts, res), 5)
    t_cold = best_of(lambda: cider_d(cands, refs), 20)
    t_cached = best_of(lambda: scorer.score(cands, refs), 50)

    print(f"CIDEr-D, {len(cands)} candidates ({args.images} images x {args.k} samples, 5 refs), "
          f"max |ours - pycocoevalcap| = {diff:.1e}\n")
    print("| implementation | seconds | speed-up vs pycocoevalcap |")
    print("| --- | ---: | ---: |")
    print(f"| pycocoevalcap `Cider().compute_score` | {t_coco:.4f} | 1.0x |")
    print(f"| ours, cold (`cider_d`) | {t_cold:.4f} | {t_coco / t_cold:.1f}x |")
    print(f"| ours, cached (`CiderD.score`) | {t_cached:.4f} | {t_coco / t_cached:.1f}x |")


if __name__ == "__main__":
    main()
