"""Bradley–Terry loss on reward differences: ties as 0.5 targets, optional margin and reward centring."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    label: torch.Tensor | float = 1.0,
    margin: torch.Tensor | float = 0.0,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Mean of −[y·log σ(Δ − m) + (1 − y)·log σ(−(Δ − m))] with Δ = r_chosen − r_rejected.

    `label` y is the probability that chosen ≻ rejected: 1.0 gives TRL's −log σ(r_c − r_r − m); a tie (0.5)
    pulls Δ towards 0. The margin m applies to strict preferences only (a tie has no winner to push ahead).
    `center_coef` adds TRL's `center_rewards_coefficient · mean((r_c + r_r)²)`, which keeps rewards near zero
    (BT only sees differences, so their level is otherwise free).
    """
    delta = r_chosen.float() - r_rejected.float()
    label = torch.as_tensor(label, dtype=delta.dtype, device=delta.device).expand_as(delta)
    margin = torch.as_tensor(margin, dtype=delta.dtype, device=delta.device).expand_as(delta)
    margin = torch.where(label == 0.5, torch.zeros_like(margin), margin)
    loss = F.binary_cross_entropy_with_logits(delta - margin, label)
    if center_coef:
        loss = loss + center_coef * ((r_chosen.float() + r_rejected.float()) ** 2).mean()
    return loss


def marks_loss(regions: torch.Tensor, marked: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Marked regions score lower than the unmarked ones of the same output: per output with both, the mean over
    every (marked m, unmarked u) of −log σ(s_u − s_m), a Bradley–Terry preference for u; averaged over those outputs.

    `regions` [N, R] are a dense reward model's region scores (cells of an image, words of a caption), `marked`
    [N, R'] the annotators' marks (padded or cut to R), `valid` [N, R] the regions that exist (a caption's words)."""
    width = regions.shape[1]
    marked = torch.nn.functional.pad(marked.bool(), (0, max(0, width - marked.shape[1])))[:, :width]
    valid = torch.ones_like(marked) if valid is None else valid.bool()
    marked, unmarked = marked & valid, ~marked & valid
    pairs = marked[:, :, None] & unmarked[:, None, :]  # [N, R, R]: (m, u)
    counts = pairs.sum(dim=(1, 2))
    if not (counts > 0).any():
        return regions.sum() * 0.0  # no output has both: no term (and a graph for every process's backward)
    s = regions.float()
    per_output = (F.softplus(s[:, :, None] - s[:, None, :]) * pairs).sum(dim=(1, 2)) / counts.clamp(min=1)
    return per_output[counts > 0].mean()
