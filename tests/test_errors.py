"""One error hierarchy: library code raises VrlhfError subclasses; only the command line turns them into one line."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vrlhf.errors import ConfigError, ModelError
from vrlhf.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]


def test_library_code_never_exits_the_process():
    offenders = []
    for package in ("vrlhf", "labeler", "reward_model", "tuner", "loop"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"raise SystemExit|except .*SystemExit", line):
                    offenders.append(f"{relative}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_a_damaged_reward_model_directory_is_a_model_error(tmp_path):
    from reward_model import build_reward_model, load_reward_model

    directory = build_reward_model(get_task("colorization"), image_size=24, vit_hidden=24, vit_layers=1,
                                   hidden_size=16).save_pretrained(tmp_path / "rm")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError, match="not a loadable reward model"):
        load_reward_model(directory)
    (directory / "reward_config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not a loadable reward model"):
        load_reward_model(directory)
    with pytest.raises(ModelError, match="no reward_config.json"):
        load_reward_model(tmp_path)


@pytest.mark.parametrize("task", ["captioning", "colorization"])
def test_a_directory_that_is_not_a_policy_is_a_model_error(task, tmp_path):
    from vrlhf.tasks import get_task

    with pytest.raises(ModelError, match=str(tmp_path)):
        get_task(task).load_policy(tmp_path)


def test_torchrun_entry_point_reports_a_config_error_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "tuner.train", "--policy", str(tmp_path), "--data", str(tmp_path),
                          "--baseline", "critic"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("tuner.train: baseline 'critic'") and run.stderr.count("\n") == 1


def test_unknown_task_is_a_config_error():
    from vrlhf.tasks import get_task

    with pytest.raises(ConfigError, match="unknown task 'segmentation'; choose one of: captioning, colorization"):
        get_task("segmentation")
