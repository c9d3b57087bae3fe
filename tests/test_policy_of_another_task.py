"""A policy given to a task it does not do (a captioner to colorization, a colorizer to captioning) is one line saying
what it is and what the task needs, from every command, before anything is written (issue 21, row 11)."""

import pytest

from vrlhf import REPO
from vrlhf.cli import main

CAPTIONER = REPO / "data/demo/captioner"  # ours: a policy.json saying task: captioning
COLORIZER = REPO / "data/demo/colorizer"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A few shapes (train/ and test/) and a tiny BLIP: a Hugging Face captioner with no policy.json."""
    from vrlhf.models import tiny_checkpoint
    from vrlhf.shapes import make_shapes, write_imagefolder

    root = tmp_path_factory.mktemp("other-task")
    rows = make_shapes(12, seed=0, size=24)
    write_imagefolder(rows[:8], root / "data" / "train")
    write_imagefolder(rows[8:], root / "data" / "test")
    tiny_checkpoint("blip", root / "blip")
    return root


def command(name: str, task: str, policy, world, out):
    data = world / "data"
    return {
        "eval": ["eval", "--task", task, "--policy", str(policy), "--data", str(data / "test")],
        "sample": ["sample", "--task", task, "--policy", str(policy), "--data", str(data / "test"), "--db",
                   str(out / "labels.db"), "--k", "2", "--n", "2"],
        "tune": ["tune", "--task", task, "--policy", str(policy), "--data", str(data), "--out", str(out / "run"),
                 "--steps", "1", "--k", "2", "--batch_size", "2", "--log_with", "none"],
    }[name]


@pytest.mark.parametrize("name", ["eval", "sample", "tune"])
@pytest.mark.parametrize("captioner", ["ours", "blip"])
def test_a_captioner_is_refused_by_colorization_in_one_line(world, tmp_path, capsys, name, captioner):
    policy = CAPTIONER if captioner == "ours" else world / "blip"
    assert main(command(name, "colorization", policy, world, tmp_path)) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0, error  # one line: no traceback, not even a weight-loading progress bar
    assert f"{policy}: this policy is a captioner; the colorization task needs a colorizer" in error
    assert not (tmp_path / "run").exists()  # the failed tune leaves no run directory


def test_a_colorizer_is_refused_by_captioning_in_one_line(world, tmp_path, capsys):
    assert main(command("tune", "captioning", COLORIZER, world, tmp_path)) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "this policy is for the colorization task; the captioning task needs a " \
                                      "captioner" in error
    assert not (tmp_path / "run").exists()


def test_a_colorizer_still_loads(world):
    from vrlhf.tasks import get_task

    policy = get_task("colorization").load_policy(COLORIZER)
    assert policy.meta["grid"] == 8 and policy.tokenizer is None
