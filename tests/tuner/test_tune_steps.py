"""The pieces of one tuning step, called directly on a tiny captioner: rollout-and-score and the REINFORCE loss;
and the KL anchor a later round keeps (`kl_reference`)."""

import copy
import json
from pathlib import Path

import pytest
import torch

from tuner.rewards import build_reward, parse_reward_specs
from tuner.train import policy_loss, rollout, tune
from vrlhf.data import load_rows
from vrlhf.errors import ConfigError
from vrlhf.tasks import get_task

TASK = get_task("captioning")


@pytest.fixture(scope="module")
def pieces(shapes_dir, captioner_dir):
    rows = load_rows(shapes_dir / "train")
    policy = TASK.load_policy(captioner_dir)
    batch = rows[:4]
    reward = build_reward(TASK, parse_reward_specs(["cider_d=1"]), rows)
    return policy, batch, TASK.pixel_values(policy, [r["image"] for r in batch]), reward


def scored(cfg, pieces, seed=0):
    policy, batch, pixels, reward = pieces
    return rollout(cfg, TASK, policy, reward, batch, pixels, torch.Generator().manual_seed(seed))


def test_rollout_scores_k_samples_per_image_and_splits_off_the_greedy_decode(tiny_config, pieces):
    policy, batch, pixels, reward = pieces
    tiny_config.k, tiny_config.baseline = 3, "greedy"
    out = scored(tiny_config, pieces)
    assert len(out.outputs) == 12 and out.samples.tokens.shape[0] == 12 and out.rewards.shape == (4, 3)
    alone, _ = reward(batch, out.outputs)  # CIDEr-D scores each caption on its own: the same numbers
    torch.testing.assert_close(out.rewards.reshape(-1), alone)
    torch.testing.assert_close(out.components["cider_d"], alone)  # the greedy column is not a component value
    greedy = TASK.decode(policy, batch, policy.greedy(pixels).tokens)
    torch.testing.assert_close(out.greedy_rewards, reward(batch, greedy)[0])
    tiny_config.baseline = "loo"
    assert scored(tiny_config, pieces).greedy_rewards is None


def test_policy_loss_is_reinforce_with_per_sample_leave_one_out_advantages(tiny_config, pieces):
    policy, batch, pixels, _ = pieces
    tiny_config.k = 4
    out = scored(tiny_config, pieces)
    loss, logs, finite = policy_loss(tiny_config, TASK, policy, None, batch, pixels, out)
    r = out.rewards
    advantages = r - (r.sum(1, keepdim=True) - r) / 3  # by hand: each sample against the mean of the other three
    log_probs = policy.log_prob(pixels, out.samples.tokens, out.samples.mask, 4)
    torch.testing.assert_close(loss, -(advantages.reshape(-1) * log_probs).mean())
    assert finite and logs["adv_abs"] == pytest.approx(advantages.abs().mean().item())
    loss.backward()
    assert policy.model.decoder.lm_head.weight.grad.abs().sum() > 0
    policy.model.zero_grad(set_to_none=True)


def test_policy_loss_folds_the_kl_to_its_anchor_into_the_reward(tiny_config, pieces):
    policy, batch, pixels, _ = pieces
    tiny_config.k, tiny_config.kl_coef = 4, 0.5
    out = scored(tiny_config, pieces)
    plain = copy.deepcopy(tiny_config)
    plain.kl_coef = 0.0
    no_kl, _, _ = policy_loss(plain, TASK, policy, None, batch, pixels, out)
    same, logs, _ = policy_loss(tiny_config, TASK, policy, copy.deepcopy(policy), batch, pixels, out)
    assert abs(logs["kl"]) < 1e-5
    torch.testing.assert_close(same, no_kl)  # an anchor equal to the policy changes nothing

    anchor = copy.deepcopy(policy)
    with torch.no_grad():
        anchor.model.decoder.lm_head.weight.add_(0.3 * torch.randn_like(anchor.model.decoder.lm_head.weight))
    loss, logs, finite = policy_loss(tiny_config, TASK, policy, anchor, batch, pixels, out)
    kl = (out.samples.log_probs - anchor.log_prob(pixels, out.samples.tokens, out.samples.mask, 4)).view(4, 4)
    assert finite and logs["kl"] == pytest.approx(kl.mean().item(), rel=1e-4) and logs["kl"] > 0.05
    r = out.rewards - 0.5 * kl
    advantages = r - (r.sum(1, keepdim=True) - r) / 3
    log_probs = policy.log_prob(pixels, out.samples.tokens, out.samples.mask, 4)
    torch.testing.assert_close(loss, -(advantages.reshape(-1) * log_probs).mean())


def test_kl_in_loss_keeps_the_penalty_out_of_the_advantages_and_adds_its_k3_term(tiny_config, pieces):
    from tuner.train import check_config

    policy, batch, pixels, _ = pieces
    tiny_config.k, tiny_config.kl_coef, tiny_config.kl_in = 4, 0.5, "loss"
    out = scored(tiny_config, pieces)
    anchor = copy.deepcopy(policy)
    with torch.no_grad():
        anchor.model.decoder.lm_head.weight.add_(0.3 * torch.randn_like(anchor.model.decoder.lm_head.weight))
    loss, logs, finite = policy_loss(tiny_config, TASK, policy, anchor, batch, pixels, out)
    tokens, mask = out.samples.tokens, out.samples.mask
    log_probs = policy.token_log_probs(pixels, tokens, mask, 4)
    with torch.no_grad():
        ref = anchor.token_log_probs(pixels, tokens, mask, 4)
    r = out.rewards  # the rewards alone: no −β·KL in them, unlike --kl_in reward
    advantages = r - (r.sum(1, keepdim=True) - r) / 3
    delta = ref - log_probs
    k3 = ((delta.exp() - delta - 1) * mask).sum() / 16
    expected = -(advantages.reshape(-1) * log_probs.sum(1)).mean() + 0.5 * k3
    torch.testing.assert_close(loss, expected)
    assert finite and k3 > 0.01 and logs["kl"] > 0.05
    tiny_config.kl_in = "advantage"
    with pytest.raises(ConfigError, match="kl_in 'advantage'"):
        check_config(tiny_config)


def test_policy_loss_reports_a_non_finite_reward(tiny_config, pieces):
    policy, batch, pixels, _ = pieces
    out = scored(tiny_config, pieces)
    out.rewards = out.rewards.clone()
    out.rewards[1, 0] = float("nan")
    _, _, finite = policy_loss(tiny_config, TASK, policy, None, batch, pixels, out)
    assert not finite


def first_kl(run_dir):
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return next(r["kl"] for r in records if "kl" in r)


def test_kl_reference_anchors_a_later_round_to_another_policy(tiny_config, captioner_dir, tmp_path):
    first = copy.deepcopy(tiny_config)
    first.steps, first.lr, first.out = 4, 3e-3, str(tmp_path / "round1")
    tune(first)  # a first round moves the policy away from the MLE captioner

    second = copy.deepcopy(tiny_config)
    second.policy, second.steps, second.kl_coef = str(tmp_path / "round1" / "final"), 1, 0.1
    second.out = str(tmp_path / "anchored_to_start")
    tune(second)
    assert abs(first_kl(second.out)) < 1e-3  # by default the anchor is the starting policy: no KL at step 1
    second.kl_reference, second.out = str(captioner_dir), str(tmp_path / "anchored_to_mle")
    tune(second)
    assert first_kl(second.out) > 0.01  # anchored to the MLE captioner: the first round's distance shows

    second.kl_reference, second.out = str(tmp_path / "missing"), str(tmp_path / "missing_anchor")
    with pytest.raises(ConfigError, match="--kl_reference .*missing.* does not exist"):
        tune(second)
    other_vocabulary = TASK.build_policy(TASK.build_tokenizer(["a red circle"]), image_size=24, patch_size=6,
                                         hidden_size=32, encoder_layers=1, decoder_layers=1, heads=2)
    other_vocabulary.save(tmp_path / "other")
    second.kl_reference, second.out = str(tmp_path / "other"), str(tmp_path / "other_anchor")
    with pytest.raises(ConfigError, match="tokens differ"):
        tune(second)
