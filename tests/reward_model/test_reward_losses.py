"""Bradley–Terry loss and pair metrics against hand-computed numbers."""

import math

import pytest
import torch

from reward_model.losses import bradley_terry_loss
from reward_model.metrics import pair_metrics

R_C = torch.tensor([2.0, 0.0, 1.0])
R_R = torch.tensor([0.0, 0.0, 3.0])
LABEL = torch.tensor([1.0, 0.5, 1.0])  # Δ = [2, 0, −2]; the middle pair is a tie


def nll(x):  # −log σ(x)
    return math.log1p(math.exp(-x))


def test_plain_bradley_terry():
    assert bradley_terry_loss(R_C[:1], R_R[:1]).item() == pytest.approx(0.126928, abs=1e-6)
    expected = (nll(2) + math.log(2) + nll(-2)) / 3  # 0.982334
    assert expected == pytest.approx(0.982334, abs=1e-6)
    assert bradley_terry_loss(R_C, R_R, LABEL).item() == pytest.approx(expected, abs=1e-6)


def test_tie_is_a_half_target():
    # a tie at Δ = 1: ½(−log σ(1)) + ½(−log σ(−1)) = 0.813262
    loss = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.5]))
    assert loss.item() == pytest.approx(0.813262, abs=1e-6)


def test_margin_applies_to_strict_pairs_only():
    expected = (nll(1) + math.log(2) + nll(-3)) / 3  # 1.351665: the tie keeps Δ − 0
    assert bradley_terry_loss(R_C, R_R, LABEL, margin=1.0).item() == pytest.approx(expected, abs=1e-6)


def test_reward_centring_matches_trl():
    # + 0.1 · mean((r_c + r_r)²) = 0.1 · (4 + 0 + 16) / 3
    expected = (nll(2) + math.log(2) + nll(-2)) / 3 + 0.1 * 20 / 3  # 1.649001
    loss = bradley_terry_loss(R_C, R_R, LABEL, center_coef=0.1)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_pair_metrics():
    m = pair_metrics(R_C - R_R, LABEL)
    assert m["accuracy"] == 0.5 and m["margin"] == 0.0 and m["ties"] == 1
    # p = σ(±2) = 0.8808 / 0.1192 and 0.5; each bin mixes targets 1 and 0 → |0.5 − 0.8808| on 4 of 6 entries
    assert m["ece"] == pytest.approx(4 / 6 * (torch.sigmoid(torch.tensor(2.0)).item() - 0.5), abs=1e-6)
    assert m["tie_mae"] == 0.0
