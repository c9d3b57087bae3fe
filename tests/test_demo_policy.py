"""`vrlhf demo --simulate --policy DIR`: the rounds start from the user's own captioner (issue 21, row 14), and what the
demo sets for each tuning run (`--tune.policy`, `--tune.data`, ...) is refused in one line instead of being ignored."""

import json
from pathlib import Path

import pytest

from vrlhf import REPO
from vrlhf.cli import main

# One round, one learned track, a few labels and steps: minutes of the real demo in seconds.
SMALL = ["--simulate", "--rounds", "1", "--labels", "8", "--annotators", "2", "--eval_images", "4", "--best_of", "2",
         "--rm_epochs", "1", "--tracks", "learned", "--no_metric_row", "--no_oracle_row", "--tune.steps", "1",
         "--tune.batch_size", "2", "--tune.k", "2", "--tune.eval_size", "4"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small shapes dataset and a tiny Hugging Face captioner (no policy.json) whose tokenizer knows its words."""
    from vrlhf.data import load_rows
    from vrlhf.models import tiny_checkpoint
    from vrlhf.shapes import ShapesConfig, write_shapes

    root = tmp_path_factory.mktemp("demo-policy")
    write_shapes(ShapesConfig(out=str(root / "shapes"), n=40, test_fraction=0.2))
    texts = [c for r in load_rows(root / "shapes" / "train") for c in r["captions"]]
    tiny_checkpoint("vision-encoder-decoder", root / "captioner", texts=texts)
    return root


def test_the_rounds_start_from_the_given_policy(world, tmp_path):
    policy = world / "captioner"
    assert main(["demo", *SMALL, "--policy", str(policy), "--workdir", str(tmp_path / "work"),
                 "--data", str(world / "shapes")]) == 0
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert set(summary["tasks"]) == {"captioning"}  # --policy alone: the rounds of its task
    from labeler.store import Store

    rounds = Store(str(tmp_path / "work" / "labels.sqlite")).rounds()
    assert {r["policy_path"] for r in rounds if r["policy_path"]} == {str(policy.resolve())}  # round 1 samples it
    import yaml

    tuned = yaml.safe_load((tmp_path / "work" / "captioning" / "round-1" / "learned" / "config.yaml").read_text())
    assert tuned["policy"] == str(policy) and tuned["kl_reference"] == str(policy)  # tuned from it, anchored to it
    from vrlhf.tasks import get_task

    final = get_task("captioning").load_policy(tmp_path / "work" / "captioning" / "round-1" / "learned" / "final")
    assert final.model.config.encoder.hidden_size == 32  # the tiny captioner's shape, not the demo captioner's


@pytest.mark.parametrize("flags, says", [
    (["--tune.policy", "DIR"], "--tune.policy is set by the demo for each tuning run (use --policy)"),
    (["--tune.data", "DIR"], "--tune.data is set by the demo for each tuning run (use --data)"),
    (["--policy", "CAPTIONER", "--tasks", "colorization,captioning"], "starts one task's rounds"),
    (["--policy", "COLORIZER", "--tasks", "captioning"], "this policy is for the colorization task"),
    (["--policy", "MISSING"], "no such model directory"),
])
def test_what_the_demo_cannot_use_is_refused_in_one_line(world, tmp_path, capsys, flags, says):
    names = {"DIR": str(world / "captioner"), "CAPTIONER": str(world / "captioner"),
             "COLORIZER": str(REPO / "data/demo/colorizer"), "MISSING": str(tmp_path / "missing")}
    flags = [names.get(flag, flag) for flag in flags]
    assert main(["demo", *SMALL, *flags, "--workdir", str(tmp_path / "work"), "--data", str(world / "shapes")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and says in error, error
    assert not Path(tmp_path / "work").exists()  # refused before anything is written
