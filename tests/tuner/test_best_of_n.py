"""Best-of-n keeps, for every input, the sample a reward scores highest, among exactly the samples it drew."""

import pytest
import torch

from tuner.best_of_n import best_of_n
from vrlhf.data import load_rows
from vrlhf.tasks import get_task


def words_reward(rows, outputs):
    """A toy reward model: longer captions score higher, captions naming "red" get a bonus."""
    return torch.tensor([len(o.split()) + 5.0 * ("red" in o.split()) for o in outputs])


def test_best_of_n_picks_the_highest_scoring_sample(shapes_dir, captioner_dir):
    task = get_task("captioning")
    policy = task.load_policy(captioner_dir)
    rows = load_rows(shapes_dir / "test", limit=6)
    chosen, scores = best_of_n(task, policy, rows, words_reward, n=5, seed=3, batch_size=4)
    assert len(chosen) == 6 and scores.shape == (6, 5)

    # the same draws, redone by hand: batch by batch with one generator, as best_of_n draws them
    generator = torch.Generator().manual_seed(3)
    drawn = []
    for start in range(0, 6, 4):
        batch = rows[start : start + 4]
        samples = policy.sample(task.pixel_values(policy, [r["image"] for r in batch]), 5, generator=generator)
        drawn += task.decode(policy, batch, samples.tokens, 5)
    for i, output in enumerate(chosen):
        mine = drawn[i * 5 : (i + 1) * 5]
        values = words_reward(None, mine)
        assert output in mine and words_reward(None, [output])[0] == values.max()
        assert torch.equal(scores[i], values)
    assert (scores.max(dim=1).values > scores.min(dim=1).values).sum() >= 3  # the choice mattered on most rows


def test_best_of_one_is_a_plain_sample_and_zero_is_refused(shapes_dir, captioner_dir):
    task = get_task("captioning")
    policy = task.load_policy(captioner_dir)
    rows = load_rows(shapes_dir / "test", limit=3)
    chosen, scores = best_of_n(task, policy, rows, words_reward, n=1, seed=0)
    generator = torch.Generator().manual_seed(0)
    sample = task.decode(policy, rows, policy.sample(task.pixel_values(policy, [r["image"] for r in rows]), 1,
                                                     generator=generator).tokens)
    assert chosen == sample and scores.shape == (3, 1)
    with pytest.raises(ValueError, match="n >= 1"):
        best_of_n(task, policy, rows, words_reward, n=0)


def test_eval_command_reports_greedy_and_best_of_n_side_by_side(shapes_dir, captioner_dir, capsys):
    import json

    from vrlhf.cli import main as cli

    args = ["eval", "--task", "captioning", "--policy", str(captioner_dir), "--data", str(shapes_dir / "test"),
            "--limit", "8"]
    assert cli(args + ["--best_of", "4", "--reward", "oracle", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"greedy", "best_of_4"}
    chosen = result["best_of_4"]
    # the reward was the oracle itself: the chosen captions' oracle score is the best-of-4 reward, above a sample's
    assert chosen["oracle_score"] == pytest.approx(chosen["reward_of_chosen"], abs=1e-5)
    assert chosen["reward_of_chosen"] >= chosen["reward_of_a_sample"]
    assert cli(args + ["--best_of", "3"]) == 2
    assert "needs N >= 1 and a --reward" in capsys.readouterr().err
    assert cli(args + ["--best_of", "3", "--reward", "learned:/no/such/dir"]) == 2
    assert "does not exist" in capsys.readouterr().err
