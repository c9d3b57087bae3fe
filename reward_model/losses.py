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
