"""Best-of-n: draw n samples per input and keep the one a reward scores highest (no training).

It shows what a reward model knows before any tuning, and it is a strong, cheap baseline: with a good reward the
best of n samples beats the policy's own greedy output, at n times the sampling cost.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


@torch.no_grad()
def best_of_n(task, policy, rows: list[dict], reward, n: int, seed: int = 0, temperature: float = 1.0,
              batch_size: int = 32, progress: bool = False) -> tuple[list, torch.Tensor]:
    """For each row, the highest-scoring of `n` samples under `reward(rows, outputs)` (a RewardFn, or a RewardMix
    returning (total, components)). Returns (one output per row, the n scores per row: (len(rows), n))."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    policy.eval()
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    chosen, scores = [], []
    for start in tqdm(range(0, len(rows), batch_size), desc=f"best of {n}", disable=not progress):
        batch = rows[start : start + batch_size]
        pixels = task.pixel_values(policy, [r["image"] for r in batch])
        samples = policy.sample(pixels, n, temperature, generator=generator)
        outputs = task.decode(policy, batch, samples.tokens, n)  # image-major: n per row
        value = reward(batch, outputs)
        value = torch.as_tensor(value[0] if isinstance(value, tuple) else value, dtype=torch.float32)
        grid = value.reshape(len(batch), n)  # (b, n)
        best = grid.argmax(dim=1)
        chosen += [outputs[i * n + int(j)] for i, j in enumerate(best)]
        scores.append(grid)
    return chosen, torch.cat(scores)
