"""SequencePolicy: exact log-probs, full-distribution sampling, encode-once and save/load, for every model family."""

import math

import pytest
import torch
from tiny_models import FAMILIES, IMAGE, VOCAB

from vrlhf.policy import SequencePolicy


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_log_probs_match_teacher_forcing(family, temperature):
    policy = FAMILIES[family]()
    pixels = torch.randn(3, 3, IMAGE, IMAGE)
    s = policy.sample(pixels, k=4, temperature=temperature, generator=torch.Generator().manual_seed(1))
    assert s.tokens.shape[0] == 12 and s.mask[:, 0].all()
    tf = policy.token_log_probs(pixels, s.tokens, s.mask, k=4, temperature=temperature)
    assert torch.allclose(tf, s.token_log_probs, atol=1e-5, rtol=0)
    seq = policy.log_prob(pixels, s.tokens, s.mask, k=4, temperature=temperature)
    assert torch.allclose(seq, s.log_probs, atol=1e-5, rtol=0)
    # padding after EOS is masked: nothing after the first EOS counts
    for row, m in zip(s.tokens.tolist(), s.mask.tolist()):
        if policy.eos_token_id in row:
            end = row.index(policy.eos_token_id)
            assert all(m[: end + 1]) and not any(m[end + 1 :])


@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_has_gradients_and_ignores_padding(family):
    policy = FAMILIES[family]()
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    s = policy.sample(pixels, k=2, generator=torch.Generator().manual_seed(0))
    lp = policy.log_prob(pixels, s.tokens, s.mask, k=2)
    lp.sum().backward()
    assert sum(p.grad.abs().sum().item() for p in policy.parameters() if p.grad is not None) > 0
    scrambled = torch.where(s.mask, s.tokens, torch.randint(0, VOCAB, s.tokens.shape))
    assert torch.allclose(policy.log_prob(pixels, scrambled, s.mask, k=2), lp, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_first_token_frequencies_follow_the_full_distribution(family):
    """Sample 4000 first tokens of one image; compare to softmax over the *whole* vocabulary (no top-k)."""
    policy = FAMILIES[family]()
    with torch.no_grad():  # make the distribution flat-ish so a hidden top-k would be visible
        for p in policy.parameters():
            p.mul_(0.3)
    pixels = torch.randn(1, 3, IMAGE, IMAGE)
    s = policy.sample(pixels, k=4000, max_new_tokens=1, generator=torch.Generator().manual_seed(0))
    probs = s.token_log_probs[:, 0].exp()
    expected = torch.zeros(VOCAB)
    expected[s.tokens[:, 0]] = probs  # the model's probability of each sampled token
    observed = torch.bincount(s.tokens[:, 0], minlength=VOCAB).float() / 4000
    assert (observed > 0).sum() > 60  # more distinct tokens than a top-k 50 cut would allow
    support = expected > 0
    assert math.isclose(expected.sum().item(), 1.0, abs_tol=0.05)  # what was drawn covers ~all probability mass
    # chi-square-like bound on the frequencies: 4 standard errors per token
    se = (expected[support] * (1 - expected[support]) / 4000).sqrt()
    assert ((observed[support] - expected[support]).abs() <= 4 * se + 1e-3).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_k_samples_of_an_image_share_one_encoding(family, monkeypatch):
    policy = FAMILIES[family]()
    calls = []
    encode = policy._encode
    monkeypatch.setattr(policy, "_encode", lambda pv: calls.append(pv.shape[0]) or encode(pv))
    policy.sample(torch.randn(2, 3, IMAGE, IMAGE), k=8)
    assert calls == [2]  # one encoder pass over the 2 images, not 16


def test_greedy_is_deterministic_and_most_likely_first_token():
    policy = FAMILIES["ved"]()
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    a, b = policy.greedy(pixels), policy.greedy(pixels)
    assert torch.equal(a.tokens, b.tokens)
    s = policy.sample(pixels, k=200, max_new_tokens=1, generator=torch.Generator().manual_seed(0))
    assert (a.token_log_probs[:, 0] >= s.token_log_probs[:, 0].view(2, 200).max(1).values - 1e-6).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip_gives_identical_log_probs(family, tmp_path):
    policy = FAMILIES[family]()
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    s = policy.sample(pixels, k=3, generator=torch.Generator().manual_seed(0))
    policy.save(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    loaded = SequencePolicy.from_pretrained(tmp_path).eval()
    assert type(loaded.model) is type(policy.model)
    assert torch.equal(loaded.log_prob(pixels, s.tokens, s.mask, k=3), policy.log_prob(pixels, s.tokens, s.mask, k=3))


def test_unsupported_model_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(TypeError, match="unsupported model class GPT2LMHeadModel"):
        SequencePolicy(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2)), start_token_id=0,
                       eos_token_id=1, pad_token_id=2, max_new_tokens=4)
