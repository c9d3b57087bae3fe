"""One dataclass parser for every command: flags, YAML, nested configs, help lines, and every recipe in configs/."""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from reward_model.base import RewardModelConfig
from reward_model.evaluate import EvalRewardConfig
from reward_model.train import TrainRewardConfig
from tuner.config import TuneConfig
from tuner.evaluate import EvalConfig
from vrlhf.config import parse_config
from vrlhf.errors import ConfigError
from vrlhf.pretrain import PretrainConfig
from vrlhf.rundir import save_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
COMMANDS = {"tune": TuneConfig, "train-reward": TrainRewardConfig, "pretrain": PretrainConfig, "eval": EvalConfig,
            "eval-reward": EvalRewardConfig}


@dataclass
class Round:
    """A config holding a tuning config it overrides (as the demo's loop does)."""

    rounds: int = field(default=2, metadata={"help": "labelling rounds"})
    tune: TuneConfig = field(default_factory=lambda: TuneConfig(steps=40, k=4), metadata={"help": "tuning"})


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_recipe_in_configs_parses_into_its_command_s_config(path):
    command = path.read_text().splitlines()[0].split()[2]  # "# vrlhf tune ...": each file starts with its command
    cfg = parse_config(COMMANDS[command], ["--config", str(path)])
    for key, value in yaml.safe_load(path.read_text()).items():
        assert getattr(cfg, key) == value, key


def test_flags_override_yaml_in_every_syntax(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("k: 8\nlr: 1e-4\nreward: cider_d=2\nmerge_lora: false\n")  # YAML reads 1e-4 as a string
    cfg = parse_config(TuneConfig, ["--config", str(recipe), "--steps", "7", "--batch-size=8", "--resume",
                                    "--merge_lora", "true", "--reward", "cider_d=1", "--reward=learned:rm=0.5"])
    assert (cfg.k, cfg.lr, cfg.steps, cfg.batch_size, cfg.resume, cfg.merge_lora) == (8, 1e-4, 7, 8, True, True)
    assert cfg.reward == ["cider_d=1", "learned:rm=0.5"]  # a repeated list flag adds; the first replaces the file's
    assert parse_config(TuneConfig, ["--config", str(recipe)]).reward == ["cider_d=2"]
    assert parse_config(TrainRewardConfig, ["--no_progress"]).progress is False
    assert parse_config(TrainRewardConfig, ["--progress", "false"]).progress is False
    assert parse_config(TrainRewardConfig, ["--lora-targets", "query", "key"]).lora_targets == ["query", "key"]
    assert parse_config(TrainRewardConfig, []).lora_targets == RewardModelConfig(task="").lora_targets


def test_nested_config_from_flags_and_yaml(tmp_path):
    assert parse_config(Round, []) == Round()  # the nested default (steps 40, k 4) is kept
    for argv in (["--tune.lr=1e-4"], ["--tune.lr", "1e-4"]):
        cfg = parse_config(Round, argv + ["--tune.reward", "a", "--tune.reward", "b", "--rounds", "3"])
        assert (cfg.rounds, cfg.tune.lr, cfg.tune.reward, cfg.tune.steps, cfg.tune.k) == (3, 1e-4, ["a", "b"], 40, 4)
    recipe = tmp_path / "round.yaml"
    recipe.write_text("rounds: 4\ntune:\n  lr: 3.0e-5\n  kl_coef: 0.2\n")
    cfg = parse_config(Round, ["--config", str(recipe), "--tune.kl_coef", "0.1"])
    assert (cfg.rounds, cfg.tune.lr, cfg.tune.kl_coef, cfg.tune.steps) == (4, 3e-5, 0.1, 40)
    recipe.write_text("tune:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match="unknown field.*tune.lrr"):
        parse_config(Round, ["--config", str(recipe)])


def test_help_lists_every_field_with_its_help_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_config(Round, ["--help"])
    assert exit_.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "--config FILE" in shown and "--rounds ROUNDS labelling rounds (default: 2)" in shown
    unwrapped = "".join(shown.replace("%%", "%").split())  # argparse may wrap a line after a hyphen
    for f in dataclasses.fields(TuneConfig):
        assert f"--tune.{f.name}" in shown and "".join(f.metadata["help"].split()) in unwrapped


def test_bad_input_is_one_config_error_naming_it(tmp_path):
    recipe = tmp_path / "bad.yaml"
    for text, message in (("stepz: 7\n", "unknown field.*stepz"), ("steps: many\n", "steps: 'many' is not a valid int"),
                          ("- 1\n", "expected a mapping")):
        recipe.write_text(text)
        with pytest.raises(ConfigError, match=message):
            parse_config(TuneConfig, ["--config", str(recipe)])
    for argv, message in ((["--stepz", "7"], "unrecognized arguments: --stepz"), (["--k", "x"], "--k: invalid int"),
                          (["--resume", "maybe"], "invalid bool value"),
                          (["--config", str(tmp_path / "none.yaml")], "does not exist")):
        with pytest.raises(ConfigError, match=message):
            parse_config(TuneConfig, argv)


def test_train_reward_config_is_a_reward_model_config_and_round_trips_through_its_run_directory(tmp_path):
    assert issubclass(TrainRewardConfig, RewardModelConfig)
    cfg = parse_config(TrainRewardConfig, ["--task", "colorization", "--hidden_size", "16", "--data", "x"])
    assert RewardModelConfig.of(cfg) == RewardModelConfig(task="colorization", image_encoder="default",
                                                          reads="auto", hidden_size=16)  # train-reward's defaults
    with pytest.raises(ConfigError, match="unrecognized arguments: --vision_config"):
        parse_config(TrainRewardConfig, ["--vision_config", "{}"])  # filled in by the code: not a flag
    cfg.vision_config = {"model_type": "vit", "hidden_size": 16}
    save_config(cfg, tmp_path)  # the resolved config of a run, fields filled in by the code included
    assert parse_config(TrainRewardConfig, ["--config", str(tmp_path / "config.yaml")]) == cfg


def test_help_of_a_nested_config_shows_the_enclosing_defaults(capsys):
    """The demo holds a TuneConfig with its own budget: --help must show the demo's numbers, not TuneConfig's."""
    from loop.demo import DemoConfig, demo_tune

    with pytest.raises(SystemExit):
        parse_config(DemoConfig, ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {demo_tune().steps})" in text.rsplit("--tune.steps", 1)[1].split("--tune.")[0]
    assert demo_tune().steps != TuneConfig().steps
