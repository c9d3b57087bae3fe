"""MLE pretraining end to end on a tiny model; `vrlhf eval`; configs from YAML with overrides."""

import json
import subprocess
import sys

import pytest

from vrlhf.config import parse_config
from vrlhf.errors import ConfigError
from vrlhf.pretrain import PretrainConfig, pretrain
from vrlhf.shapes import main as shapes_main
from vrlhf.tasks import get_task


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    shapes_main(["shapes", "--n", "240", "--out", str(out), "--seed", "5"])
    return out


@pytest.mark.parametrize("task", ["captioning", "colorization"])
def test_pretraining_lowers_held_out_loss_and_saves_a_loadable_model(task, shapes_dir, tmp_path):
    cfg = PretrainConfig(task=task, data=str(shapes_dir), out=str(tmp_path), steps=40, batch_size=16, lr=2e-3,
                         eval_every=20, eval_images=24, hidden_size=32, layers=1, patience=10)
    summary = pretrain(cfg)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and [r["step"] for r in records[1:]] == [20, 40]
    start, best = records[0]["heldout_loss"], summary["best"]["heldout_loss"]
    assert best < start - 0.3, (start, best)  # the held-out loss falls well below the untrained model's
    assert records[-1]["heldout_loss"] < records[1]["heldout_loss"]  # and keeps falling
    get_task(task).load_policy(tmp_path)  # the output directory is a loadable policy
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.yaml").is_file()


def test_config_yaml_then_overrides(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("task: colorization\nsteps: 7\nlr: 0.5\n")
    cfg = parse_config(PretrainConfig, ["--config", str(yaml_file), "--steps", "9"])
    assert (cfg.task, cfg.steps, cfg.lr) == ("colorization", 9, 0.5)
    yaml_file.write_text("stepz: 7\n")
    with pytest.raises(ConfigError, match="unknown field.*stepz"):
        parse_config(PretrainConfig, ["--config", str(yaml_file)])


def test_eval_cli_prints_one_json_object(shapes_dir):
    out = subprocess.run(
        [sys.executable, "-m", "vrlhf.cli", "eval", "--task", "captioning", "--policy", "data/demo/captioner",
         "--data", str(shapes_dir / "test"), "--limit", "12", "--json"],
        capture_output=True, text=True, check=True,
    )
    metrics = json.loads(out.stdout)
    assert {"cider_d", "bleu4", "oracle_score"} <= set(metrics)
    assert metrics["cider_d"] > 1.0  # the demo captioner describes unseen shapes images well


def test_eval_cli_names_a_missing_image_in_one_line_under_strict(shapes_dir, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shapes_dir / "test", data)
    missing = sorted((data / "images").iterdir())[0]
    missing.unlink()
    args = [sys.executable, "-m", "vrlhf.cli", "eval", "--task", "captioning", "--policy", "data/demo/captioner",
            "--data", str(data), "--json"]
    strict = subprocess.run(args + ["--strict"], capture_output=True, text=True)
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert f"images/{missing.name} missing" in strict.stderr
    lenient = subprocess.run(args, capture_output=True, text=True, check=True)  # skip and count, with a summary
    assert "skipped 1 of" in lenient.stderr and missing.name in lenient.stderr
    assert "cider_d" in json.loads(lenient.stdout)
