"""Baselines, advantages and the REINFORCE loss: small pure functions over a (batch, k) grid of rewards.

REINFORCE (Williams 1992) estimates  ∇ E_y[R(y)] = E_y[(R(y) − b) ∇ log P(y)]  for any baseline b that does not
depend on y. The baseline only lowers the variance; which one is a flag:

- `loo` (default, the paper's code; "new SCST", RLOO): b = mean reward of the *other* k−1 samples of the image,
- `greedy` (SCST): b = reward of the greedy decode of the image,
- `group_norm` (GRPO): (R − mean) / std over the image's k samples (rescales the gradient per image),
- `none`: b = 0.

The KL penalty to an anchor policy goes into the reward (RLOO's way) or, with `--kl_in loss`, into the loss as its
own term (`kl_penalty_loss`, TRL's GRPO way).

A reward with a per-token form (a dense reward: which region of the output earned what) can instead give each token
its own advantage, with a leave-one-out baseline per position (`token_advantages`; `--token_credit own | to_go`).
"""

from __future__ import annotations

import torch

BASELINES = ("loo", "greedy", "group_norm", "none")
KL_PLACES = ("reward", "loss")  # --kl_in


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


# ---- per-token credit: a reward that says which tokens earned it (docs/TUNER.md, "Per-token credit") --------------
TOKEN_CREDITS = ("sequence", "own", "to_go")


def per_position_loo_baseline(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, k, T) -> (B, k, T): at each position, the mean value of the image's *other* samples that reach that
    position (0 where none does). It never looks at the sample itself: subtracting it keeps an estimator unbiased."""
    present = mask.to(values.dtype)
    total, count = (values * present).sum(1, keepdim=True), present.sum(1, keepdim=True)
    others = count - present
    return torch.where(others > 0, (total - values * present) / others.clamp(min=1), torch.zeros_like(values))


def token_advantages(token_rewards: torch.Tensor, mask: torch.Tensor, credit: str,
                     sequence_rewards: torch.Tensor | None = None) -> torch.Tensor:
    """(B, k, T) per-token rewards -> (B, k, T) advantages, 0 off the mask.

    `own`: each token is credited with its own reward (the value of the region it made): biased (it ignores how a
    token steers the ones after it), far lower variance. `to_go`: the reward-to-go Σ_{s≥t} r_s, the unbiased
    estimator. Either way the baseline is leave-one-out per position. `sequence_rewards` (B, k), the part of the reward
    that has no per-token form, adds its leave-one-out advantage to every token of the sample (today's credit).
    """
    rewards = token_rewards * mask
    if credit == "to_go":
        values = rewards.flip(-1).cumsum(-1).flip(-1)
    elif credit == "own":
        values = rewards
    else:
        raise ValueError(f"token credit {credit!r} needs per-token rewards; choose own or to_go")
    advantages = (values - per_position_loo_baseline(values, mask)) * mask
    if sequence_rewards is not None:
        advantages = advantages + compute_advantages(sequence_rewards, "loo")[..., None] * mask
    return advantages


def token_reinforce_loss(token_log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """−Σ_t adv_t · log P(token t), summed over each sample's tokens and averaged over samples: (N, T) each.
    With the same advantage at every token of a sample this is `reinforce_loss` exactly."""
    return -(advantages.detach() * token_log_probs * mask).sum() / token_log_probs.shape[0]


def clipped_token_loss(token_log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                       mask: torch.Tensor, epsilon: float) -> torch.Tensor:
    """PPO's clipped surrogate per token (as TRL's GRPO with num_iterations > 1), normalised as
    `token_reinforce_loss`: −Σ_t min(ρ_t A_t, clip(ρ_t, 1 − ε, 1 + ε) A_t) / N with ρ_t = P_new(token) / P_old(token).
    At ρ = 1 (the first pass over fresh samples) its gradient is REINFORCE's."""
    ratio = torch.exp(token_log_probs - old_log_probs.detach())
    advantages = advantages.detach()
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - epsilon, 1 + epsilon) * advantages)
    return -(surrogate * mask).sum() / token_log_probs.shape[0]


def kl_penalty_loss(token_log_probs: torch.Tensor, ref_log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_t k3_t over each sample's tokens, averaged over samples: (N, T) each, ref_log_probs without gradient.

    k3 = exp(ref − logp) − (ref − logp) − 1 (Schulman's low-variance estimator of KL(π‖π_ref), ≥ 0, as TRL's GRPO):
    differentiated directly, its gradient pulls each sampled token towards the anchor without the penalty entering
    the REINFORCE advantages, where its noise can drown a small reward (docs/TUNER.md, "Where the KL goes")."""
    delta = ref_log_probs.detach() - token_log_probs
    return ((torch.exp(delta) - delta - 1) * mask).sum() / token_log_probs.shape[0]
