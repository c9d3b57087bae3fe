"""Sampling throughput with k = 8: one encoder pass per image (SequencePolicy.sample) vs re-encoding it k times.

    python bench/bench_sampling.py [--images 32] [--k 8] [--repeats 3]
Prints a markdown table (sequences per second) for the committed demo captioner and colorizer.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from vrlhf.shapes import make_shapes
from vrlhf.tasks import get_task


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images per batch")
    parser.add_argument("--k", type=int, default=8, help="samples per image")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    args = parser.parse_args()
    rows = make_shapes(args.images, seed=11)
    print("| policy | shared encoding (seq/s) | re-encode k times (seq/s) | speed-up |\n|---|---|---|---|")
    for name, path in [("captioning", "data/demo/captioner"), ("colorization", "data/demo/colorizer")]:
        task = get_task(name)
        policy = task.load_policy(path)
        pixels = task.pixel_values(policy, [r["image"] for r in rows])
        n = args.images * args.k
        shared = best_time(partial(policy.sample, pixels, k=args.k), args.repeats)
        repeated = best_time(partial(policy.sample, pixels.repeat_interleave(args.k, 0), k=1), args.repeats)
        print(f"| {name} | {n / shared:.0f} | {n / repeated:.0f} | {repeated / shared:.2f}× |")


if __name__ == "__main__":
    with torch.inference_mode():
        main()
