"""What the tuner watches besides the reward: output statistics, held-out evaluation, samples before and after.

Reward hacking shows up here first: captions that stop ending with EOS or collapse to a few phrases
(distinct-n falls), colorizations that drift to saturated colours, a held-out metric that is not in the reward
falling while the reward rises.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def output_stats(task, outputs: list, samples) -> dict[str, float]:
    """Tokens per sequence, fraction ending with EOS, and what the task contract says its outputs are: distinct-n of
    texts (STORED and SHOWN text: captions), the mean saturation of images (STORED image: colorizations); other
    outputs (a box set, stored as text, shown drawn) add nothing."""
    from vrlhf.metrics import distinct_n, saturation

    stats = {
        "tokens_per_seq": samples.mask.sum(dim=1).float().mean().item(),
        "eos_frac": samples.finished.float().mean().item(),
    }
    if outputs and task.STORED == "text" and task.SHOWN == "text":
        texts = [task.to_stored(o) for o in outputs]
        stats["distinct_1"] = float(distinct_n(texts, 1))
        stats["distinct_2"] = float(distinct_n(texts, 2))
    elif outputs and task.STORED == "image":
        stats["saturation"] = float(np.mean(saturation([task.to_stored(o) for o in outputs])))
    return stats


@torch.no_grad()
def evaluate(task, policy, rows: list[dict], batch_size: int = 32,
             max_new_tokens: int | None = None) -> dict[str, float]:
    """Greedy decoding on held-out rows -> the task's metrics plus the output statistics."""
    outputs, sums, count = [], {}, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        pixel_values = task.pixel_values(policy, [r["image"] for r in chunk]).to(policy.device)
        greedy = policy.greedy(pixel_values, max_new_tokens=max_new_tokens)
        decoded = task.decode(policy, chunk, greedy.tokens, 1)
        outputs += decoded
        for name, value in output_stats(task, decoded, greedy).items():
            sums[name] = sums.get(name, 0.0) + value * len(chunk)
        count += len(chunk)
    metrics = {name: float(v) for name, v in task.eval_metrics(rows, outputs).items()}
    metrics.update({name: total / count for name, total in sums.items()})
    return metrics


@torch.no_grad()
def save_samples(task, policy, rows: list[dict], path_stem: Path, k: int = 4, seed: int = 0) -> Path:
    """Greedy output and k samples for each row: JSON for outputs people read (SHOWN text: captions), else a PNG grid
    of what people see (the task's `render`)."""
    pixel_values = task.pixel_values(policy, [r["image"] for r in rows]).to(policy.device)
    generator = torch.Generator(device=pixel_values.device).manual_seed(seed)
    greedy = task.decode(policy, rows, policy.greedy(pixel_values).tokens, 1)
    sampled = task.decode(policy, rows, policy.sample(pixel_values, k, generator=generator).tokens, k)
    if task.SHOWN == "text":
        records = [
            {"id": r["id"], "references": r.get("captions", []), "greedy": greedy[i],
             "samples": sampled[i * k : (i + 1) * k]}
            for i, r in enumerate(rows)
        ]
        path = path_stem.with_suffix(".json")
        path.write_text(json.dumps(records, indent=2))
        return path
    # one line per row: the input as people see it (gray for colorization) | greedy | k samples | ground truth
    renders = [[task.render(r, o) for o in [greedy[i], *sampled[i * k : (i + 1) * k]]] for i, r in enumerate(rows)]
    columns = [[task.show_input(r["image"]), *drawn, r["image"]] for r, drawn in zip(rows, renders, strict=True)]
    # cells as large as the largest render (a render may be larger than its input: detection draws its boxes and
    # labels at 8x), every image fitted into one (aspect kept), so the outputs keep their drawn size
    w = max(image.width for drawn in renders for image in drawn)
    h = max(image.height for drawn in renders for image in drawn)
    grid = Image.new("RGB", (w * len(columns[0]), h * len(columns)), "white")
    for y, line in enumerate(columns):
        for x, image in enumerate(line):
            grid.paste(fit(image.convert("RGB"), (w, h)), (x * w, y * h))
    path = path_stem.with_suffix(".png")
    grid.save(path)
    return path


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` scaled to fit in `size` with its aspect kept: nearest when enlarging (a small input's pixels stay
    sharp, as the labeling app shows them), Lanczos when shrinking; unchanged when it is that size already."""
    if image.size == size:
        return image
    scale = min(size[0] / image.width, size[1] / image.height)
    new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(new, Image.NEAREST if scale >= 1 else Image.LANCZOS)
