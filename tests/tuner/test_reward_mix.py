"""Reward specs and mixing: parsing, errors, weights, per-reward normalisation."""

import numpy as np
import pytest
import torch

from tuner.rewards import RewardMix, RewardSpecError, RunningMeanStd, parse_reward_spec, parse_reward_specs


def test_reward_specs_parse_names_weights_and_learned_directories(tmp_path):
    (tmp_path / "rm").mkdir()
    specs = parse_reward_specs(["cider_d=1.0", f"learned:{tmp_path / 'rm'}=0.5", "fidelity"])
    assert [(s.name, s.weight, s.path) for s in specs] == [
        ("cider_d", 1.0, None), ("learned:rm", 0.5, str(tmp_path / "rm")), ("fidelity", 1.0, None)]


@pytest.mark.parametrize("text, message", [
    ("cider_d=", "not a number"), ("=1", "empty name"), ("learned:=1", "needs a directory"),
    ("learned:/no/such/dir=1", "does not exist"), ("cider_d=inf", "finite")])
def test_bad_reward_spec_raises_a_clear_error(text, message):
    with pytest.raises(RewardSpecError, match=message):
        parse_reward_spec(text)


def test_no_reward_is_an_error():
    with pytest.raises(RewardSpecError, match="no reward"):
        parse_reward_specs([])


def test_mix_is_the_weighted_sum_and_keeps_raw_components():
    mix = RewardMix({"a": lambda rows, outs: torch.tensor([1.0, 2.0]),
                     "b": lambda rows, outs: torch.tensor([10.0, 0.0])}, {"a": 2.0, "b": 0.5})
    total, components = mix([{}], ["x", "y"])
    torch.testing.assert_close(total, torch.tensor([7.0, 4.0]))
    torch.testing.assert_close(components["b"], torch.tensor([10.0, 0.0]))


def test_batch_normalisation_whitens_each_component_before_the_sum():
    mix = RewardMix({"a": lambda r, o: torch.tensor([1.0, 3.0]), "b": lambda r, o: torch.tensor([100.0, 300.0])},
                    {"a": 1.0, "b": 1.0}, normalize="batch")
    total, _ = mix([{}], ["x", "y"])
    torch.testing.assert_close(total, torch.tensor([-2.0, 2.0]), atol=1e-4, rtol=0)  # each component -> [-1, 1]


def test_running_statistics_match_the_statistics_of_everything_seen():
    stats, seen = RunningMeanStd(), []
    for chunk in torch.randn(5, 7).mul(3).add(2):
        stats.update(chunk)
        seen.append(chunk)
    everything = torch.cat(seen)
    assert stats.count == 35
    assert stats.mean == pytest.approx(everything.mean().item(), abs=1e-5)
    assert stats.var == pytest.approx(everything.var(unbiased=False).item(), rel=1e-5)


def test_unknown_normalisation_is_an_error():
    with pytest.raises(RewardSpecError, match="normalisation"):
        RewardMix({}, {}, normalize="zscore")


def test_oracle_reward_is_the_simulated_annotators_score():
    from tuner.rewards import RewardSpecError, build_reward, parse_reward_specs
    from vrlhf.shapes import caption, make_shapes
    from vrlhf.tasks import caption_oracle, get_task

    rows = make_shapes(4, seed=5)
    task = get_task("captioning")
    mix = build_reward(task, parse_reward_specs(["oracle=2.0"]), rows)
    truth = [caption(r["attributes"]["shapes"], np.random.default_rng(0)) for r in rows]
    outputs = [o for t in truth for o in (t, "a big red triangle")]  # k = 2: the truth, then a guess
    total, parts = mix(rows, outputs)
    expected = torch.tensor([caption_oracle.score(rows[i // 2], o) for i, o in enumerate(outputs)])
    assert torch.allclose(parts["oracle"], expected) and torch.allclose(total, 2.0 * expected)
    assert (parts["oracle"][0::2] == torch.tensor([float(len(r["attributes"]["shapes"])) for r in rows])).all()
    with pytest.raises(RewardSpecError, match="ground truth"):
        build_reward(task, parse_reward_specs(["oracle"]), [dict(r, attributes=None) for r in rows])
