"""Baselines and the REINFORCE loss: hand-computed numbers, and unbiasedness on a toy categorical policy."""

import pytest
import torch

from tuner.advantages import compute_advantages, leave_one_out_baseline, reinforce_loss


def test_leave_one_out_baseline_matches_hand_computed():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]])
    expected = torch.tensor([[2.5, 2.0, 1.5], [2.0, 2.0, 0.0]])
    torch.testing.assert_close(leave_one_out_baseline(rewards), expected)


def test_leave_one_out_advantages_of_a_group_sum_to_zero():
    rewards = torch.randn(5, 8)
    advantages = compute_advantages(rewards, "loo")
    torch.testing.assert_close(advantages.sum(dim=1), torch.zeros(5), atol=1e-5, rtol=0)
    # adv = k/(k-1) (r - mean): the leave-one-out advantage is the centred reward, slightly stretched
    torch.testing.assert_close(advantages, 8 / 7 * (rewards - rewards.mean(1, keepdim=True)))


def test_each_baseline_matches_hand_computed():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    torch.testing.assert_close(compute_advantages(rewards, "loo"), torch.tensor([[-1.5, 0.0, 1.5]]))
    torch.testing.assert_close(compute_advantages(rewards, "greedy", torch.tensor([2.5])),
                               torch.tensor([[-1.5, -0.5, 0.5]]))
    torch.testing.assert_close(compute_advantages(rewards, "group_norm"), torch.tensor([[-1.0, 0.0, 1.0]]),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(compute_advantages(rewards, "none"), rewards)
    # all-equal rewards: no signal, and no NaN from a zero std
    assert compute_advantages(torch.ones(2, 4), "group_norm").abs().max() == 0


def test_bad_baseline_arguments_raise():
    with pytest.raises(ValueError, match="unknown baseline"):
        compute_advantages(torch.ones(1, 2), "critic")
    with pytest.raises(ValueError, match="greedy"):
        compute_advantages(torch.ones(1, 2), "greedy")
    with pytest.raises(ValueError, match="k >= 2"):
        leave_one_out_baseline(torch.ones(3, 1))


def test_per_sample_weighting_is_not_averaged_away():
    log_probs = torch.tensor([-1.0, -2.0, -0.5, -3.0], requires_grad=True)  # 2 images x k=2
    advantages = compute_advantages(torch.tensor([[1.0, 0.0], [5.0, 4.0]]), "loo").reshape(-1)  # [1,-1,1,-1]
    reinforce_loss(log_probs, advantages).backward()
    # d/dlogp of -mean(adv * logp) = -adv / N: every sample keeps its own sign
    torch.testing.assert_close(log_probs.grad, torch.tensor([-0.25, 0.25, -0.25, 0.25]))
    # the pitfall, for contrast: averaging the group's advantages first gives exactly zero gradient
    pitfall = torch.tensor([-1.0, -2.0, -0.5, -3.0], requires_grad=True)
    (-(advantages.view(2, 2).mean(1) * pitfall.view(2, 2).sum(1)).mean()).backward()
    assert pitfall.grad.abs().max() == 0


def test_advantages_do_not_carry_gradients_into_the_reward():
    log_probs = torch.zeros(2, requires_grad=True)
    advantages = torch.tensor([1.0, -1.0], requires_grad=True)
    reinforce_loss(log_probs, advantages).backward()
    assert advantages.grad is None


@pytest.mark.parametrize("baseline", ["loo", "greedy", "group_norm", "none"])
def test_reinforce_gradient_matches_the_analytic_gradient_on_a_toy_policy(baseline):
    """A categorical policy over 5 outputs: E[R] = Σ p_i R_i, so ∇θ E[R] = p ⊙ (R − p·R) exactly."""
    torch.manual_seed(0)
    theta = torch.tensor([0.5, -0.3, 0.0, 1.0, -1.0], requires_grad=True)
    reward_of = torch.tensor([1.0, 3.0, 0.0, 2.0, 5.0])
    probs = torch.softmax(theta, 0).detach()
    analytic = probs * (reward_of - probs @ reward_of)

    groups, k = 40_000, 4
    samples = torch.multinomial(probs, groups * k, replacement=True).view(groups, k)  # (B, k)
    rewards = reward_of[samples]
    greedy = reward_of[probs.argmax()].expand(groups)  # the mode's reward, for SCST
    advantages = compute_advantages(rewards, baseline, greedy)
    log_probs = torch.log_softmax(theta, 0)[samples]  # (B, k), differentiable in theta
    (grad,) = torch.autograd.grad(-reinforce_loss(log_probs.reshape(-1), advantages.reshape(-1)), theta)

    if baseline == "group_norm":
        # dividing by each group's own std weights groups unequally: biased, but still an ascent direction
        # close to ∇E[R]
        assert torch.nn.functional.cosine_similarity(grad, analytic, dim=0) > 0.9
    else:  # unbiased: within sampling noise (a few 1e-3 here; the gradient entries are ~0.1 to 1)
        torch.testing.assert_close(grad, analytic, atol=0.03, rtol=0)
