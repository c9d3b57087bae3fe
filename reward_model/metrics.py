"""Pairwise metrics of a reward model: accuracy, mean margin and calibration (ECE) of σ(Δr)."""

from __future__ import annotations

import torch


def pair_metrics(delta: torch.Tensor, label: torch.Tensor, bins: int = 10) -> dict[str, float]:
    """Metrics of reward differences Δ = r_chosen − r_rejected against labels (1.0 preference, 0.5 tie).

    - `accuracy`: share of strict pairs with Δ > 0 (Δ = 0 counts half); ties are left out.
    - `margin`: mean Δ over strict pairs.
    - `ece`: expected calibration error of p = σ(Δ) as the probability that chosen ≻ rejected, over all
      pairs. Each pair enters twice, as (p, y) and (1 − p, 1 − y), so both halves of [0, 1] are populated
      even though every label is ≥ 0.5; bins are equal-width.
    - `tie_mae`: mean |p − 0.5| over ties (how far the model is from calling them even), when there are ties.
    """
    delta, label = delta.detach().float().cpu(), label.detach().float().cpu()
    strict = label != 0.5
    out: dict[str, float] = {"pairs": int(len(delta)), "ties": int((~strict).sum())}
    if strict.any():
        d, y = delta[strict], label[strict]
        # A strict label may be 1.0 (chosen wins) or 0.0 (rejected wins): orient Δ towards the winner.
        d = torch.where(y > 0.5, d, -d)
        out["accuracy"] = float(((d > 0).float() + 0.5 * (d == 0).float()).mean())
        out["margin"] = float(d.mean())
    p = torch.sigmoid(delta)
    out["ece"] = expected_calibration_error(torch.cat([p, 1 - p]), torch.cat([label, 1 - label]), bins)
    if (~strict).any():
        out["tie_mae"] = float((p[~strict] - 0.5).abs().mean())
    return out


def expected_calibration_error(prob: torch.Tensor, target: torch.Tensor, bins: int = 10) -> float:
    """Σ_b (n_b / N) · |mean(target in b) − mean(prob in b)| over `bins` equal-width bins of `prob`."""
    if len(prob) == 0:
        return float("nan")
    idx = (prob * bins).long().clamp(0, bins - 1)
    ece = 0.0
    for b in range(bins):
        inside = idx == b
        if inside.any():
            ece += float(inside.float().mean()) * abs(float(target[inside].mean() - prob[inside].mean()))
    return ece
