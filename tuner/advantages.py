"""Baselines, advantages and the REINFORCE loss: small pure functions over a (batch, k) grid of rewards.

REINFORCE (Williams 1992) estimates  ∇ E_y[R(y)] = E_y[(R(y) − b) ∇ log P(y)]  for any baseline b that does not
depend on y. The baseline only lowers the variance; which one is a flag:

- `loo` (default, the paper's code; "new SCST", RLOO): b = mean reward of the *other* k−1 samples of the image,
- `greedy` (SCST): b = reward of the greedy decode of the image,
- `group_norm` (GRPO): (R − mean) / std over the image's k samples (rescales the gradient per image),
- `none`: b = 0.
"""

from __future__ import annotations

import torch

BASELINES = ("loo", "greedy", "group_norm", "none")


def leave_one_out_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """(B, k) -> (B, k): for each sample, the mean reward of the other k−1 samples of the same image."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError("the leave-one-out baseline needs k >= 2 samples per image")
    return (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)


def compute_advantages(
    rewards: torch.Tensor, baseline: str = "loo", greedy_rewards: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """(B, k) rewards -> (B, k) advantages. `greedy_rewards` (B,) is needed by the `greedy` baseline."""
    if baseline == "loo":
        return rewards - leave_one_out_baseline(rewards)
    if baseline == "greedy":
        if greedy_rewards is None:
            raise ValueError("the greedy baseline needs the rewards of the greedy decodes")
        return rewards - greedy_rewards[:, None]
    if baseline == "group_norm":
        # torch.std is the unbiased estimate, as in TRL's GRPO; eps keeps all-equal groups at zero, not NaN.
        mean, std = rewards.mean(dim=1, keepdim=True), rewards.std(dim=1, keepdim=True)
        return (rewards - mean) / (std + eps)
    if baseline == "none":
        return rewards.clone()
    raise ValueError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")


def reinforce_loss(log_probs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """−mean(advantage · log P(sample)) over every sample: each sequence carries its *own* weight.

    log_probs: (N,) differentiable sequence log-probs; advantages: (N,) constants.
    Do not average the advantages over a group first: leave-one-out advantages sum to zero per group,
    so mean(adv) · sum(log P) would give exactly zero gradient.
    """
    return -(advantages.detach() * log_probs).mean()
