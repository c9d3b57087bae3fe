"""Per-token credit: per-position leave-one-out advantages (own region / reward-to-go), checked by hand, against the
exact gradient of a toy two-token policy, and against today's sequence-level update where they must agree."""

import pytest
import torch

from tuner.advantages import (
    clipped_token_loss,
    compute_advantages,
    per_position_loo_baseline,
    reinforce_loss,
    token_advantages,
    token_reinforce_loss,
)


def test_per_position_baseline_averages_only_the_other_samples_that_reach_the_position():
    values = torch.tensor([[[1.0, 2.0, 5.0], [3.0, 4.0, 0.0], [5.0, 0.0, 0.0]]])  # (1 image, k 3, T 3)
    mask = torch.tensor([[[1, 1, 1], [1, 1, 0], [1, 0, 0]]], dtype=torch.bool)
    expected = torch.tensor([[[4.0, 4.0, 0.0], [3.0, 2.0, 5.0], [2.0, 3.0, 5.0]]])  # 0 where no other sample is
    torch.testing.assert_close(per_position_loo_baseline(values, mask), expected)


def test_own_and_to_go_advantages_match_hand_computed():
    rewards = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # (1, k 2, T 2)
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    torch.testing.assert_close(token_advantages(rewards, mask, "own"), torch.tensor([[[1.0, -2.0], [-1.0, 2.0]]]))
    # to-go: sample 0 has (1, 0), sample 1 has (2, 2)
    torch.testing.assert_close(token_advantages(rewards, mask, "to_go"), torch.tensor([[[-1.0, -2.0], [1.0, 2.0]]]))
    # a sequence-level part adds its leave-one-out advantage to every token of the sample
    with_rest = token_advantages(rewards, mask, "own", sequence_rewards=torch.tensor([[3.0, 1.0]]))
    torch.testing.assert_close(with_rest, torch.tensor([[[3.0, 0.0], [-3.0, 0.0]]]))
    with pytest.raises(ValueError, match="own or to_go"):
        token_advantages(rewards, mask, "sequence")


def test_the_same_reward_at_every_position_gives_todays_sequence_update():
    """`own` credit with every token's reward equal to its sequence's reward R, or `to_go` credit with R on the
    last token, gives every token the sequence-level leave-one-out advantage: exactly today's update."""
    torch.manual_seed(0)
    B, k, T = 3, 4, 5
    R = torch.randn(B, k)
    mask = torch.ones(B, k, T, dtype=torch.bool)
    today = compute_advantages(R, "loo")[..., None].expand(B, k, T)
    torch.testing.assert_close(token_advantages(R[..., None].expand(B, k, T), mask, "own"), today)
    last = torch.zeros(B, k, T)
    last[..., -1] = R
    torch.testing.assert_close(token_advantages(last, mask, "to_go"), today)
    # the per-token loss with those advantages is today's loss, value and gradient
    token_log_probs = torch.randn(B * k, T, requires_grad=True)
    ours = token_reinforce_loss(token_log_probs, today.reshape(B * k, T), mask.reshape(B * k, T))
    (grad_ours,) = torch.autograd.grad(ours, token_log_probs)
    theirs = reinforce_loss(token_log_probs.sum(1), compute_advantages(R, "loo").reshape(-1))
    (grad_theirs,) = torch.autograd.grad(theirs, token_log_probs)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad_ours, grad_theirs)


def test_clipped_loss_is_reinforce_on_fresh_samples_and_stops_pushing_past_the_clip():
    torch.manual_seed(1)
    log_probs = torch.randn(6, 4, requires_grad=True)
    advantages, mask = torch.randn(6, 4), torch.rand(6, 4) > 0.2
    (fresh,) = torch.autograd.grad(clipped_token_loss(log_probs, log_probs.detach(), advantages, mask, 0.2),
                                   log_probs)
    (plain,) = torch.autograd.grad(token_reinforce_loss(log_probs, advantages, mask), log_probs)
    torch.testing.assert_close(fresh, plain)
    # a token already made 1.5x likelier with a positive advantage (or 0.5x with a negative one) gets no more push
    old = log_probs.detach() - torch.where(advantages > 0, 0.405, -0.693)
    (moved,) = torch.autograd.grad(clipped_token_loss(log_probs, old, advantages, mask, 0.2), log_probs)
    assert moved.abs().max() == 0


# ---- the analytic check: a two-token autoregressive policy whose first token can end the sequence -----------------
V, STOP = 3, 2  # token 2 as the first token ends the sequence (the second position is then masked)


def toy(theta1, theta2):
    return torch.log_softmax(theta1, 0), torch.log_softmax(theta2, 1)  # log p(y1) (V,), log p(y2 | y1) (V, V)


def exact_objective(theta1, theta2, r1, r2):
    """E[r1(y1) + r2(y1, y2)] summed over every sequence."""
    logp1, logp2 = toy(theta1, theta2)
    p1, p2 = logp1.exp(), logp2.exp()
    go_on = torch.arange(V) != STOP
    return (p1 * (r1 + go_on * (p2 * r2).sum(1))).sum()


def sampled_gradient(theta1, theta2, r1, r2, credit, groups=40_000, k=4):
    """The gradient the tuner's estimator takes: per-token rewards, per-position leave-one-out advantages."""
    logp1, logp2 = toy(theta1, theta2)
    g = torch.Generator().manual_seed(0)
    y1 = torch.multinomial(logp1.exp().detach(), groups * k, replacement=True, generator=g)
    y2 = torch.multinomial(logp2.exp().detach()[y1], 1, generator=g)[:, 0]
    mask = torch.stack([torch.ones_like(y1, dtype=torch.bool), y1 != STOP], 1)  # (N, 2)
    rewards = torch.stack([r1[y1], r2[y1, y2]], 1) * mask
    advantages = token_advantages(rewards.view(groups, k, 2), mask.view(groups, k, 2), credit).view(-1, 2)
    token_log_probs = torch.stack([logp1[y1], logp2[y1, y2]], 1) * mask
    return torch.autograd.grad(-token_reinforce_loss(token_log_probs, advantages, mask), (theta1, theta2))


def test_reward_to_go_is_unbiased_and_own_credit_is_its_documented_biased_cousin():
    torch.manual_seed(0)
    theta1 = torch.tensor([0.3, -0.2, 0.1], requires_grad=True)
    theta2 = (0.5 * torch.randn(V, V)).requires_grad_()
    r1 = torch.tensor([0.5, -1.0, 0.2])
    r2 = torch.tensor([[2.0, 0.0, -1.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # what y1 makes possible later
    analytic = torch.autograd.grad(exact_objective(theta1, theta2, r1, r2), (theta1, theta2))

    to_go = sampled_gradient(theta1, theta2, r1, r2, "to_go")
    for estimate, exact in zip(to_go, analytic):
        torch.testing.assert_close(estimate, exact, atol=0.03, rtol=0)

    # own credit: each token is pushed by its own reward only, E[Σ_t r_t ∇ log p(y_t | y_<t)], computed exactly
    logp1, logp2 = toy(theta1, theta2)
    p1, p2 = logp1.exp().detach(), logp2.exp().detach()
    go_on = torch.arange(V) != STOP
    surrogate = (p1 * r1 * logp1).sum() + (p1[:, None] * go_on[:, None] * p2 * r2 * logp2).sum()
    own_expected = torch.autograd.grad(surrogate, (theta1, theta2))
    own = sampled_gradient(theta1, theta2, r1, r2, "own")
    for estimate, exact in zip(own, own_expected):
        torch.testing.assert_close(estimate, exact, atol=0.03, rtol=0)
    # ... which misses how the first token steers the second one's reward: biased on the first token's logits
    assert (own[0] - analytic[0]).abs().max() > 0.1
    torch.testing.assert_close(own[1], analytic[1], atol=0.03, rtol=0)  # the last token has nothing after it


# ---- through the tuner: rollout, policy_loss and tune on tiny policies -------------------------------------------
@pytest.fixture(scope="module")
def colorizer(shapes_dir, tmp_path_factory):
    from vrlhf.tasks import colorization

    path = tmp_path_factory.mktemp("colorizer")
    colorization.build_policy(image_size=24, grid=8, patch_size=6, hidden_size=32, encoder_layers=1, decoder_layers=1,
                              heads=2).save(path)
    return path


def colour_pieces(shapes_dir, colorizer, tiny_config, credit, reward=None, kl_coef=0.0):
    from tuner.rewards import build_reward, parse_reward_specs
    from vrlhf.data import load_rows
    from vrlhf.tasks import get_task

    task = get_task("colorization")
    rows = load_rows(shapes_dir / "train")[:3]
    policy = task.load_policy(colorizer)
    cfg = tiny_config
    cfg.task, cfg.policy, cfg.k, cfg.token_credit, cfg.kl_coef = "colorization", str(colorizer), 4, credit, kl_coef
    reward = reward or build_reward(task, parse_reward_specs(["oracle=2.0"]), rows, normalize="batch")
    return task, policy, rows, task.pixel_values(policy, [r["image"] for r in rows]), reward


def test_a_dense_oracle_gives_each_token_the_pixels_it_colours_scaled_as_the_reward(shapes_dir, colorizer,
                                                                                   tiny_config):
    from tuner.train import rollout
    from vrlhf.tasks import colorization_oracle

    task, policy, rows, pixels, reward = colour_pieces(shapes_dir, colorizer, tiny_config, "own")
    out = rollout(tiny_config, task, policy, reward, rows, pixels, torch.Generator().manual_seed(0))
    assert out.token_rewards.shape == (12, 64)
    # rows sum to the normalised, weighted total
    torch.testing.assert_close(out.token_rewards.sum(1), out.rewards.reshape(-1), atol=1e-4, rtol=0)
    # token t gets what the pixels it colours add, split by decode's bilinear weights: the adjoint of the upsampling,
    # here by autograd through the same F.interpolate call decode makes
    raw = out.components["oracle"]
    scale = 2.0 / (raw.std(unbiased=False) + 1e-6)
    for i, output in enumerate(out.outputs):
        pixel_map = torch.tensor(colorization_oracle.pixel_contributions(rows[i // 4], output))
        cells = torch.zeros(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
        upsampled = torch.nn.functional.interpolate(cells, size=pixel_map.shape, mode="bilinear", align_corners=False)
        (upsampled[0, 0] * pixel_map).sum().backward()
        torch.testing.assert_close(out.token_rewards[i, 1:], (scale * cells.grad.flatten()[1:]).float(),
                                   atol=1e-4, rtol=0)
    tiny_config.token_credit = "sequence"  # today's path: no per-token rewards at all
    assert rollout(tiny_config, task, policy, reward, rows, pixels, torch.Generator().manual_seed(0)
                   ).token_rewards is None


def gradient(policy, loss):
    policy.model.zero_grad(set_to_none=True)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.grad is not None])
    policy.model.zero_grad(set_to_none=True)
    return grads


def test_to_go_with_the_reward_on_the_last_token_and_own_with_it_on_every_token_are_todays_update(
        shapes_dir, colorizer, tiny_config):
    """The precise sense in which the sequence-level update is a special case: `to_go` credit of a dense reward
    that sits wholly on the last token, or `own` credit with each token rewarded the sequence's reward, give every
    token the sequence's leave-one-out advantage: the same loss and gradient as `--token_credit sequence`."""
    import numpy as np

    from tuner.rewards import RewardMix
    from tuner.train import Rollout, policy_loss, rollout
    from vrlhf.tasks import colorization_oracle

    def oracle(rows, outputs):
        return torch.tensor([colorization_oracle.score(rows[i // 4], o) for i, o in enumerate(outputs)])

    def at_the_end(rows, outputs):  # the whole score in the bottom-right pixel: the last cell, the last token
        maps = [np.zeros((24, 24)) for _ in outputs]
        for m, value in zip(maps, oracle(rows, outputs).tolist()):
            m[-1, -1] = value
        return maps

    mix = RewardMix({"oracle": oracle}, {"oracle": 1.0})
    mix.regions = {"oracle": at_the_end}
    task, policy, rows, pixels, _ = colour_pieces(shapes_dir, colorizer, tiny_config, "to_go", mix)
    dense = rollout(tiny_config, task, policy, mix, rows, pixels, torch.Generator().manual_seed(0))
    assert dense.token_rewards[:, :-1].abs().max() == 0
    sequence = Rollout(dense.samples, dense.outputs, dense.rewards, None, dense.components)
    today, _, _ = policy_loss(tiny_config, task, policy, None, rows, pixels, sequence)
    expected = gradient(policy, today)
    ours, logs, finite = policy_loss(tiny_config, task, policy, None, rows, pixels, dense)
    torch.testing.assert_close(ours, today)
    torch.testing.assert_close(gradient(policy, ours), expected)

    tiny_config.token_credit = "own"
    everywhere = dense.rewards.reshape(-1, 1).expand(-1, 64)
    own = Rollout(dense.samples, dense.outputs, 64 * dense.rewards, None, dense.components, everywhere)
    ours, _, _ = policy_loss(tiny_config, task, policy, None, rows, pixels, own)
    torch.testing.assert_close(ours, today)  # float32 sums in another order: equal to rounding
    torch.testing.assert_close(gradient(policy, ours), expected, atol=1e-4 * expected.abs().max().item(), rtol=0)


def test_own_credit_pays_the_kl_per_token_and_the_sequence_part_per_sample(shapes_dir, colorizer, tiny_config):
    from tuner.train import Rollout, policy_loss

    task, policy, rows, pixels, reward = colour_pieces(shapes_dir, colorizer, tiny_config, "own", kl_coef=0.5)
    reference = task.load_policy(colorizer)
    with torch.no_grad():  # an anchor that differs from the policy, so the KL is not zero
        for p in reference.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    samples = policy.sample(pixels, 4, generator=torch.Generator().manual_seed(1))
    token_rewards = torch.randn(12, 64)
    rest = torch.randn(3, 4)  # a component without a dense form
    scored = Rollout(samples, [None] * 12, rest + token_rewards.sum(1).view(3, 4), None, {}, token_rewards)
    loss, logs, finite = policy_loss(tiny_config, task, policy, reference, rows, pixels, scored)

    with torch.no_grad():
        now = policy.token_log_probs(pixels, samples.tokens, samples.mask, 4)
        token_kl = now - reference.token_log_probs(pixels, samples.tokens, samples.mask, 4)
    own = token_rewards - 0.5 * token_kl
    baseline = (own.view(3, 4, 64).sum(1, keepdim=True) - own.view(3, 4, 64)) / 3
    advantages = (own.view(3, 4, 64) - baseline) + compute_advantages(rest, "loo")[..., None]
    log_probs = policy.token_log_probs(pixels, samples.tokens, samples.mask, 4)
    expected = -(advantages.reshape(12, 64) * log_probs).sum() / 12
    torch.testing.assert_close(loss, expected)
    assert finite and logs["kl"] == pytest.approx(token_kl.sum(1).mean().item(), abs=1e-5) and logs["kl"] != 0


def test_dense_caption_oracle_rewards_each_word_on_its_token_and_the_end_on_eos(shapes_dir, captioner_dir,
                                                                                tiny_config):
    from tuner.rewards import build_reward, parse_reward_specs
    from tuner.train import rollout
    from vrlhf.data import load_rows
    from vrlhf.tasks import caption_oracle, get_task

    task = get_task("captioning")
    rows = load_rows(shapes_dir / "train")[:4]
    policy = task.load_policy(captioner_dir)
    reward = build_reward(task, parse_reward_specs(["oracle"]), rows)
    tiny_config.token_credit, tiny_config.k = "to_go", 3
    pixels = task.pixel_values(policy, [r["image"] for r in rows])
    out = rollout(tiny_config, task, policy, reward, rows, pixels, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.token_rewards.sum(1), out.rewards.reshape(-1), atol=1e-5, rtol=0)
    for i, caption in enumerate(out.outputs):
        values = caption_oracle.contributions(rows[i // 3], caption)
        tokens = out.samples.tokens[i][out.samples.mask[i]].tolist()
        expected = list(values[:-1]) + ([values[-1]] if caption.finished else [])  # word-level: a token per word
        if not caption.finished:
            expected[-1] += values[-1]
        if len(tokens) == len(expected):  # no unknown or special word in the middle
            torch.testing.assert_close(out.token_rewards[i][: len(tokens)], torch.tensor(expected, dtype=torch.float32))
    assert not out.token_rewards[~out.samples.mask].any()  # nothing after EOS


@pytest.mark.parametrize("kl_in", ["reward", "loss"])  # loss: every pass adds the KL term itself (reuse_loss)
def test_tune_with_two_passes_per_rollout_and_own_credit_moves_every_weight(shapes_dir, colorizer, tiny_config, kl_in):
    import json

    from tuner.train import tune
    from vrlhf.tasks import colorization

    cfg = tiny_config
    cfg.task, cfg.policy, cfg.k, cfg.steps = "colorization", str(colorizer), 4, 2
    cfg.reward, cfg.token_credit, cfg.num_iterations, cfg.kl_coef = ["oracle"], "own", 2, 0.1
    cfg.epsilon, cfg.kl_in = 0.001, kl_in  # epsilon: so that one step moves some token's probability past the clip
    before = dict(colorization.load_policy(colorizer).model.named_parameters())
    policy, _ = tune(cfg)
    unchanged = [n for n, p in policy.model.named_parameters() if torch.equal(p, before[n]) and "pooler" not in n]
    assert not unchanged  # the ViT's pooler is unused
    records = [json.loads(line) for line in open(f"{cfg.out}/metrics.jsonl") if '"loss"' in line]
    assert len(records) == 2 and all(0 <= r["clip_frac"] <= 1 for r in records)
    assert records[-1]["clip_frac"] > 0  # the second pass sees the first one's step


def test_bad_token_credit_settings_are_refused_before_any_work(tiny_config):
    from tuner.train import check_config
    from vrlhf.errors import ConfigError

    tiny_config.token_credit = "future"
    with pytest.raises(ConfigError, match="token_credit 'future'"):
        check_config(tiny_config)
    tiny_config.token_credit, tiny_config.baseline = "own", "greedy"
    with pytest.raises(ConfigError, match="needs baseline loo"):
        check_config(tiny_config)
    tiny_config.token_credit, tiny_config.baseline, tiny_config.num_iterations = "own", "loo", 0
    with pytest.raises(ConfigError, match="num_iterations"):
        check_config(tiny_config)


def test_auto_credit_is_each_tasks_own_choice_and_sequence_off_the_loo_baseline(tiny_config):
    from tuner.train import token_credit
    from vrlhf.tasks import get_task

    colorization, captioning = get_task("colorization"), get_task("captioning")
    assert tiny_config.token_credit == "auto"  # the default
    assert token_credit(tiny_config, colorization) == "own" and token_credit(tiny_config, captioning) == "to_go"
    tiny_config.baseline = "greedy"
    assert token_credit(tiny_config, colorization) == "sequence"
    tiny_config.token_credit = "to_go"  # an explicit choice is kept
    assert token_credit(tiny_config, colorization) == "to_go"
